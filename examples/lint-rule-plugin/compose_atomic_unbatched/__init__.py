"""Example rule plugin: ``ban-unbatched-dml``.

``stmt.node`` is libpg_query's JSON parse tree of the statement (keys as in PostgreSQL's
parsenodes.h); ``stmt.kind`` its node name. Yield ``Hit`` objects to report.
"""

from compose_atomic import hookimpl
from compose_atomic.lint import Hit, Rule


def check(stmt, ctx):
    if stmt.node.get("whereClause") is not None or ctx.is_new(stmt.node.get("relation")):
        return
    table = stmt.node.get("relation", {}).get("relname", "?")
    verb = "UPDATE" if stmt.kind == "UpdateStmt" else "DELETE"
    yield Hit(f"{verb} of every row of {table} in one statement: one long transaction holding a lock on "
              "each row, and a table full of dead tuples afterwards.",
              f"Loop over key ranges: {verb} ... WHERE id >= $1 AND id < $1 + 1000, committing each batch.",
              f"ROW EXCLUSIVE on {table}, plus every row locked")


@hookimpl
def register_lint_rules(register):
    register(Rule("ban-unbatched-dml", "UPDATE or DELETE without WHERE", check,
                  kinds=("UpdateStmt", "DeleteStmt"), severity="warning",
                  why="A single statement over the whole table keeps every row locked until it commits.",
                  lock="ROW EXCLUSIVE, and a row lock on every row", recipe="Batch by key range.",
                  squawk=False))
