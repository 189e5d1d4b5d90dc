"""Offers: the YAML policy (``policy``), its scores contract (``inputs``), the holdout draw
(``holdout``) and the vectorised decision (``decide``)."""
