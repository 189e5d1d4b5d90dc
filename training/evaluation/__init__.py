"""The backtest: ``backtest`` (evaluate at a cutoff), ``backtest_result``,
``baseline_predictions`` (the BTYD baselines' predictions), ``metrics`` and the
figures (``plots``).
"""
