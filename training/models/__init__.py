"""The fitted models: ``RetainModels`` (``bundle``) and the models it holds (``churn``,
``timing``, ``spend``, ``calibration``, ``uplift``), the LightGBM plumbing they share
(``boosters``, ``compiled``, ``model_text``, ``paths``), the BTYD inputs
(``btyd_features``) and the blend with BG/NBD (``shadow``, ``combine``).
"""
