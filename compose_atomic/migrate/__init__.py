"""Snapshot-guarded database migrations (see docs/migrations.md).

lint -> snapshot -> migrate (with a timeout) -> [deploy] -> settle on failure: leave the
database (the migration changed nothing), undo it in place (it only added objects, every
row written meanwhile kept), or restore the snapshot under the guard's rules.
The modules, smallest first: ``settings``, ``database`` (finding and talking to the
PostgreSQL container), ``introspect`` (row counts, schema fingerprint, write counters,
sessions), ``schemadiff`` (the schema as named objects, the tools' bookkeeping, what a
migration added and the DROPs that undo it), ``cases`` (which case a release is in, from its
SQL), ``snapshot``, ``restore``, ``undo`` (the in-place undo), ``sqlrunner`` (the built-in
runner for plain SQL files), ``command`` (the user's migration command in a one-off
container), ``guard`` (the whole sequence and the settling), ``checkrollback`` (``db
check-rollback``) and ``plugin`` (hooks and the ``db`` commands).
"""
