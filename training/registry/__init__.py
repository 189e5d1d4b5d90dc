"""MLflow: which store (``tracking_store``), what a training run records (``tracking``),
registered versions and aliases (``versions``) under one writer (``registry_lock``),
the promotion gate (``gate``) and the pinned requirements (``pins``).
"""
