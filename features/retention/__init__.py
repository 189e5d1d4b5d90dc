"""What the business reads off a log: KPIs (``kpis``), rule-based segments
(``segments``) and an experiment's assignments, who was treated and who held out
(``assignments``).
"""
