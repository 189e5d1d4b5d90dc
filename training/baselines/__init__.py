"""Classic customer-base baselines the LightGBM models must beat in the backtest.

Every model works on the RFM summary of :func:`training.baselines.summary.rfm_summary`:

- ``bgnbd.BetaGeoNBD``: BG/NBD (Fader, Hardie & Lee 2005).
- ``paretonbd.ParetoNBD``: Pareto/NBD (Schmittlein, Morrison & Colombo 1987).
- ``gammagamma.GammaGamma``: spend per transaction (Fader, Hardie & Lee 2005).
- ``recency.RecencyRule``: the rule of thumb marketers use (long silence = churned).

``count_model`` holds what BG/NBD and Pareto/NBD share (and their array API, which the
models' BTYD features call), ``likelihood`` the maximum-likelihood fit, ``degenerate`` the
check for a no-dropout collapse. Models persist as plain JSON dicts (``to_dict`` /
``from_dict``).
"""
