"""Campaign lift: the experiment read from assignments (``assignments``), the estimators
(``statistics``), the measurement per campaign, rule, offer and segment (``measure``), the
policy update from measured lifts (``policy_update``) and the ``retain lift`` command
(``commands``)."""
