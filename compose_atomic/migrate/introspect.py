"""What psycopg reads from PostgreSQL to prove a snapshot and a restore equal.

- ``row_counts``: exact ``count(*)`` of every user table.
- ``schema_fingerprint``: sha256 over the user schema's tables, columns, defaults,
  constraints, indexes, views, sequences, types and functions, written so that a
  dump-and-restore of an unchanged schema gives the same value.
- ``write_counters``: ``pg_stat_user_tables`` insert/update/delete totals per table;
  a delta since the snapshot is a write the restore would discard.
- ``other_sessions`` / ``end_sessions``: sessions on a database, cancelled or
  terminated on the server.
"""

from __future__ import annotations

import hashlib
import time
from typing import Iterable

USER_SCHEMAS = """n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"""

SCHEMA_QUERIES = [
    # tables, views, sequences, with their columns in order (attnum itself differs
    # after a restore when columns were dropped, so only the order counts)
    f"""SELECT 'rel', n.nspname, c.relname, c.relkind::text,
               coalesce(string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                   || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                   || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''), ', '
                   ORDER BY a.attnum), '')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
        WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
        GROUP BY n.nspname, c.relname, c.relkind""",
    f"""SELECT 'con', n.nspname, c.relname, co.conname, pg_get_constraintdef(co.oid)
        FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS}""",
    f"""SELECT 'idx', n.nspname, c.relname, pg_get_indexdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_SCHEMAS} AND c.relkind IN ('i', 'I')""",
    f"""SELECT 'view', n.nspname, c.relname, pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_SCHEMAS} AND c.relkind IN ('v', 'm')""",
    f"""SELECT 'type', n.nspname, t.typname, t.typtype::text,
               coalesce((SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                         FROM pg_enum e WHERE e.enumtypid = t.oid), '')
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE {USER_SCHEMAS} AND t.typtype IN ('e', 'd', 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')""",
    f"""SELECT 'func', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), md5(p.prosrc)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {USER_SCHEMAS}""",
    f"""SELECT 'trg', n.nspname, c.relname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS} AND NOT t.tgisinternal""",
]


def user_tables(conn) -> list[str]:
    """Qualified names (``schema.table``) of ordinary user tables, sorted."""
    rows = conn.execute(f"""SELECT n.nspname, c.relname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_SCHEMAS} AND c.relkind = 'r' ORDER BY 1, 2""").fetchall()
    return [f"{s}.{t}" for s, t in rows]


def _ident(qualified: str):
    from psycopg import sql

    schema, _, table = qualified.partition(".")
    return sql.Identifier(schema, table)


def row_counts(conn, tables: Iterable[str] | None = None) -> dict[str, int]:
    """Exact row counts per table."""
    from psycopg import sql

    counts = {}
    for table in tables if tables is not None else user_tables(conn):
        query = sql.SQL("SELECT count(*) FROM ONLY {}").format(_ident(table))
        counts[table] = conn.execute(query).fetchone()[0]
    return counts


def schema_fingerprint(conn) -> str:
    """sha256 of the user schema, stable across pg_dump/pg_restore."""
    lines = []
    for query in SCHEMA_QUERIES:
        for row in conn.execute(query).fetchall():
            lines.append("\t".join("" if v is None else str(v) for v in row))
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


CATALOGS = ("pg_namespace", "pg_class", "pg_attribute", "pg_attrdef", "pg_constraint", "pg_index",
            "pg_type", "pg_enum", "pg_proc", "pg_trigger", "pg_rewrite", "pg_sequence")


def catalog_version(conn) -> str:
    """sha256 of the row versions (ctid, xmin) of the system catalogs that hold a schema.

    Any committed DDL writes new catalog row versions, and a rolled-back one leaves
    none visible, so equal values before and after a migration mean its DDL did
    not stick. Unlike ``schema_fingerprint`` it takes no lock on user tables (the
    deparsing functions do), so it answers even while a migration's victim is
    still locked. Only comparable within one database, never across a restore.
    """
    parts = []
    for catalog in CATALOGS:
        parts.append(conn.execute(
            f"SELECT md5(coalesce(string_agg(ctid::text || ':' || xmin::text, ',' ORDER BY ctid), '')) "
            f"FROM pg_catalog.{catalog}").fetchone()[0])
    return hashlib.sha256(",".join(parts).encode()).hexdigest()


def write_counters(conn) -> dict[str, list[int]]:
    """``[inserted, updated, deleted]`` rows per table since the statistics began."""
    rows = conn.execute("""SELECT schemaname, relname, n_tup_ins, n_tup_upd, n_tup_del
        FROM pg_stat_user_tables""").fetchall()
    return {f"{s}.{t}": [int(i), int(u), int(d)] for s, t, i, u, d in rows}


def writes_between(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, int]:
    """Rows written per table between two ``write_counters`` readings (only non-zero).

    A table that appears only in ``after`` counts all its writes; a counter that
    went down (statistics reset, table recreated) counts its current value, which
    errs on the side of protecting data.
    """
    found = {}
    for table, now in after.items():
        then = before.get(table)
        if then is None or any(n < t for n, t in zip(now, then)):
            delta = sum(now)
        else:
            delta = sum(n - t for n, t in zip(now, then))
        if delta:
            found[table] = delta
    return found


def wal_lsn(conn) -> str:
    return conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]


def server_version(conn) -> str:
    return conn.execute("SHOW server_version").fetchone()[0]


def other_sessions(conn, dbname: str) -> list[int]:
    """Backend pids connected to ``dbname``, other than ``conn`` itself."""
    rows = conn.execute("""SELECT pid FROM pg_stat_activity
        WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'""",
                        (dbname,)).fetchall()
    return [r[0] for r in rows]


def end_sessions(conn, pids: list[int], *, grace: float = 3.0) -> list[int]:
    """Cancel the backends' queries, then terminate those still there after ``grace``.

    Cancelling first lets a blocked statement roll back cleanly and release its
    locks; terminating then closes the session. Returns the pids still alive
    (normally none).
    """
    if not pids:
        return []
    conn.execute("SELECT pg_cancel_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
    alive = _wait_gone(conn, pids, min(grace, 1.0))
    if alive:
        conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (alive,))
        alive = _wait_gone(conn, alive, grace)
    return alive


def terminate(conn, pids: list[int], *, wait: float = 5.0) -> list[int]:
    """Terminate backends and wait until they are gone; returns those left."""
    if not pids:
        return []
    conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
    return _wait_gone(conn, pids, wait)


def _wait_gone(conn, pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchall()]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def locks_held_by(conn, pids: list[int]) -> int:
    """How many granted locks the given backends still hold."""
    if not pids:
        return 0
    return conn.execute("SELECT count(*) FROM pg_locks WHERE granted AND pid = ANY(%s)",
                        (pids,)).fetchone()[0]
