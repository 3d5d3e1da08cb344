"""Snapshot-guarded database migrations (see docs/migrations.md).

lint -> snapshot -> migrate (with a timeout) -> [deploy] -> restore on failure.
The modules, smallest first: ``errors``, ``settings``, ``database`` (finding and
talking to the PostgreSQL container), ``introspect`` (row counts, schema
fingerprint, write counters, sessions), ``snapshot``, ``restore``, ``sqlrunner``
(the built-in runner for plain SQL files), ``command`` (the user's migration
command in a one-off container), ``guard`` (the whole sequence) and ``plugin``
(hooks and the ``db`` commands).
"""
