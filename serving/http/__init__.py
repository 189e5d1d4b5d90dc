"""The HTTP scoring service (BentoML) and the commands that start and package it.

``service.py`` is the BentoML service; the modules beside it hold one concern each:
settings from the environment, start-up loading, the ASGI guard in front of every request,
the micro-batcher, request histories as arrays, response building, the feature snapshot
behind ``/score/ids``, and the log filter for refused requests. ``serve.py`` and
``bento.py`` are the ``retain serve`` and ``retain bento`` commands.
"""
