"""The purchase log's contract and loader: canonical columns and rules (``schema``,
``canonical``), files read into a raw frame (``reading``, ``column_map``), the steps
that make it canonical (``text_columns``, ``row_order``, ``returns``,
``purchase_log``), the same rules on typed rows (``log_arrays``, ``small_log``) and
the log's content digest (``fingerprint``).
"""
