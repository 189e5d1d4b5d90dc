"""Old home of :mod:`features.log.schema`, kept so MLflow models logged before the move load.

A logged model carries the ``pyfunc_model.py`` of its time, which imported this path;
in a process that already imported retain the import resolves here, to the moved
module itself. Nothing in retain imports this path."""

# retain: alias of a moved module
import sys

from features.log import schema

sys.modules[__name__] = schema
