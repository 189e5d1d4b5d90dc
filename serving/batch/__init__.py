"""Batch scoring: customer chunks (``chunks``), the run (``run``), its atomic publication
(``publish``), scoring on Dask (``dask``) and the ``retain score`` / ``retain report``
commands (``commands``)."""
