"""Where a purchase log comes from besides a plain file: the ``--data``/``--table``/
``--query`` options (``log_source``), databases (``database``, ``database_log``,
``database_parts``), customer-range partitioned files (``partition_log``) and the
public data sets (``cdnow``, ``completejourney``).
"""
