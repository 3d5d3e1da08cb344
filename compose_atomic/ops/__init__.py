"""The operator's view: ``status``, the disk pre-flight of ``up`` and ``prune`` (docs/operations.md).

Everything here reads what the deploy, the proxy and the migrations leave in the state
directory (never writing there, except ``prune``), and asks the engine through
:mod:`compose_atomic.docker` in as few calls as it can: one ``docker ps``, one container
``inspect`` and one image ``inspect`` for the whole project.
"""
