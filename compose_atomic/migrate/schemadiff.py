"""What a migration added, and how to take exactly that away again.

``describe`` reads the user schema as a set of named objects (schemas, tables, views,
sequences, columns, constraints, indexes, types, functions, triggers), each with its
definition; the snapshot stores it in its manifest, read in the very snapshot pg_dump
used. ``bookkeeping`` reads the migration tools' own tables (the built-in runner's,
``django_migrations``, ``alembic_version``...), which are small.

After a failed migration (or the rollback of a release), ``diff`` says what changed:

- nothing (and the bookkeeping is the same): the migration changed nothing; the
  database is left as it is, no session is touched;
- only objects that were not there before: ``undo_plan`` drops exactly those, in
  reverse dependency order, and puts the bookkeeping rows back; rows written since
  the snapshot stay (see ``compose_atomic.migrate.undo``);
- anything removed or changed (a drop, a type change, a new enum label): only a
  restore of the snapshot can undo it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .introspect import USER_SCHEMAS

#: Tables migration tools keep their own records in (matched by name, in any user schema).
BOOKKEEPING_TABLES = ("compose_atomic_migrations", "django_migrations", "alembic_version",
                      "schema_migrations", "flyway_schema_history", "goose_db_version",
                      "knex_migrations", "__EFMigrationsHistory")

_NOT_EXTENSION = "NOT EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.objid = {oid} AND dep.deptype = 'e')"

QUERIES = {
    "schema": f"""SELECT n.nspname FROM pg_namespace n
        WHERE {USER_SCHEMAS} AND n.nspname <> 'public' AND {_NOT_EXTENSION.format(oid='n.oid')}""",
    "relation": f"""SELECT n.nspname, c.relname, c.relkind::text,
               CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND {_NOT_EXTENSION.format(oid='c.oid')}""",
    "column": f"""SELECT n.nspname, c.relname, a.attname,
               format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
               || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
               || CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END
               || CASE WHEN a.attgenerated <> '' THEN ' generated' ELSE '' END
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
        WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'f') AND a.attnum > 0 AND NOT a.attisdropped
          AND {_NOT_EXTENSION.format(oid='c.oid')}""",
    "constraint": f"""SELECT n.nspname, c.relname, co.conname, co.contype::text, pg_get_constraintdef(co.oid)
        FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS}""",
    "index": f"""SELECT n.nspname, ci.relname, ct.relname, pg_get_indexdef(ci.oid), i.indisvalid,
               EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conindid = ci.oid
                       AND co.conrelid = ct.oid AND co.contype IN ('p', 'u', 'x'))
        FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_class ct ON ct.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = ci.relnamespace
        WHERE {USER_SCHEMAS} AND {_NOT_EXTENSION.format(oid='ct.oid')}""",
    "type": f"""SELECT n.nspname, t.typname, t.typtype::text,
               coalesce((SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                         FROM pg_enum e WHERE e.enumtypid = t.oid), '')
               || CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) ELSE '' END
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE {USER_SCHEMAS} AND t.typtype IN ('e', 'd', 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
          AND {_NOT_EXTENSION.format(oid='t.oid')}""",
    "function": f"""SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
               p.prokind::text, md5(p.prosrc)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {USER_SCHEMAS} AND {_NOT_EXTENSION.format(oid='p.oid')}""",
    "trigger": f"""SELECT n.nspname, c.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS} AND NOT t.tgisinternal""",
}


def describe(conn) -> dict[str, dict[str, Any]]:
    """Every user-schema object, keyed ``"kind schema.name"``, with what defines it."""
    objects: dict[str, dict[str, Any]] = {}
    for row in conn.execute(QUERIES["schema"]).fetchall():
        objects[f"schema {row[0]}"] = {"kind": "schema", "schema": row[0]}
    for s, name, relkind, viewdef in conn.execute(QUERIES["relation"]).fetchall():
        objects[f"relation {s}.{name}"] = {"kind": "relation", "schema": s, "name": name,
                                           "relkind": relkind, "def": viewdef}
    for s, table, col, definition in conn.execute(QUERIES["column"]).fetchall():
        objects[f"column {s}.{table}.{col}"] = {"kind": "column", "schema": s, "table": table,
                                                "name": col, "def": definition}
    for s, table, con, contype, definition in conn.execute(QUERIES["constraint"]).fetchall():
        objects[f"constraint {s}.{table}.{con}"] = {"kind": "constraint", "schema": s, "table": table,
                                                    "name": con, "contype": contype, "def": definition}
    for s, name, table, definition, valid, backs in conn.execute(QUERIES["index"]).fetchall():
        objects[f"index {s}.{name}"] = {"kind": "index", "schema": s, "name": name, "table": table,
                                        "def": definition, "valid": bool(valid), "constraint": bool(backs)}
    for s, name, typtype, definition in conn.execute(QUERIES["type"]).fetchall():
        objects[f"type {s}.{name}"] = {"kind": "type", "schema": s, "name": name, "typtype": typtype,
                                       "def": definition}
    for s, name, args, prokind, digest in conn.execute(QUERIES["function"]).fetchall():
        objects[f"function {s}.{name}({args})"] = {"kind": "function", "schema": s, "name": name,
                                                   "args": args, "prokind": prokind, "def": digest}
    for s, table, name, definition in conn.execute(QUERIES["trigger"]).fetchall():
        objects[f"trigger {s}.{table}.{name}"] = {"kind": "trigger", "schema": s, "table": table,
                                                  "name": name, "def": definition}
    return objects


def bookkeeping(conn) -> dict[str, list[str]]:
    """The rows (as JSON text, sorted) of every migration tool's table that exists."""
    from psycopg import sql

    found = conn.execute(f"""SELECT n.nspname, c.relname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_SCHEMAS.replace('%', '%%')} AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)""",
                         (list(BOOKKEEPING_TABLES),)).fetchall()
    tables = {}
    for schema, name in sorted(found):
        rows = conn.execute(sql.SQL("SELECT row_to_json(t)::text FROM {} t").format(
            sql.Identifier(schema, name))).fetchall()
        tables[f"{schema}.{name}"] = sorted(r[0] for r in rows)
    return tables


@dataclass
class Diff:
    """How the schema now differs from the snapshot's."""

    added: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    bookkeeping: list[str] = field(default_factory=list)  # tool tables whose rows differ

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.bookkeeping)

    @property
    def only_additions(self) -> bool:
        return not (self.removed or self.changed)

    def describe_restore_reasons(self, limit: int = 6) -> str:
        """``column public.items.qty was removed, ...`` for a message."""
        parts = [f"{k} was removed" for k in self.removed] + [f"{k} was changed" for k in self.changed]
        more = f" and {len(parts) - limit} more" if len(parts) > limit else ""
        return ", ".join(parts[:limit]) + more

    def describe_added(self, limit: int = 8) -> str:
        names = [label(obj) for obj in self.added.values() if not _covered(obj, self.added)]
        more = f" and {len(names) - limit} more" if len(names) > limit else ""
        return ", ".join(names[:limit]) + more


def diff(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
         books_before: dict[str, list[str]] | None = None,
         books_after: dict[str, list[str]] | None = None) -> Diff:
    result = Diff()
    for key, obj in after.items():
        if key not in before:
            result.added[key] = obj
        elif before[key] != obj:
            result.changed.append(key)
    result.removed = sorted(k for k in before if k not in after)
    result.changed.sort()
    books_before, books_after = books_before or {}, books_after or {}
    result.bookkeeping = sorted(t for t in books_after
                                if t in books_before and books_before[t] != books_after[t])
    return result


def label(obj: dict[str, Any]) -> str:
    kind = obj["kind"]
    if kind == "relation":
        word = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "S": "sequence",
                "f": "foreign table"}[obj["relkind"]]
        return f"{word} {obj['schema']}.{obj['name']}"
    if kind in ("column", "constraint", "trigger"):
        return f"{kind} {obj['schema']}.{obj['table']}.{obj['name']}"
    if kind == "index":
        return f"{'INVALID ' if not obj['valid'] else ''}index {obj['schema']}.{obj['name']}"
    if kind == "function":
        return f"function {obj['schema']}.{obj['name']}({obj['args']})"
    if kind == "schema":
        return f"schema {obj['schema']}"
    return f"{kind} {obj['schema']}.{obj['name']}"


def _added_table(obj: dict[str, Any], added: dict[str, dict[str, Any]]) -> bool:
    return f"relation {obj['schema']}.{obj['table']}" in added


def _covered(obj: dict[str, Any], added: dict[str, dict[str, Any]]) -> bool:
    """Goes away with another added object (its table, its constraint, its schema)."""
    if obj["kind"] in ("column", "constraint", "trigger", "index") and _added_table(obj, added):
        return True
    if obj["kind"] == "index" and obj["constraint"]:
        return True
    if obj["kind"] != "schema" and f"schema {obj['schema']}" in added:
        return True
    return False


@dataclass
class Step:
    """One statement of an undo, and what it removes."""

    what: str
    statement: Any  # psycopg sql.Composed
    concurrently: bool = False


_ORDER = ["trigger", "view", "constraint-f", "constraint", "index", "column", "table", "sequence",
          "function", "type", "schema"]


def _order_key(obj: dict[str, Any]) -> int:
    kind = obj["kind"]
    if kind == "relation":
        kind = {"v": "view", "m": "view", "S": "sequence"}.get(obj["relkind"], "table")
    elif kind == "constraint" and obj["contype"] == "f":
        kind = "constraint-f"
    return _ORDER.index(kind)


def undo_plan(added: dict[str, dict[str, Any]]) -> list[Step]:
    """DROP statements for the added objects, dependents first (IF EXISTS: a later one may
    already be gone with an earlier one, such as a serial column's sequence)."""
    from psycopg import sql

    steps = []
    for obj in sorted(added.values(), key=lambda o: (_order_key(o), label(o))):
        if _covered(obj, added):
            continue
        kind, ident = obj["kind"], sql.Identifier
        if kind == "trigger":
            stmt = sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(ident(obj["name"]),
                                                                     ident(obj["schema"], obj["table"]))
        elif kind == "constraint":
            stmt = sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
                ident(obj["schema"], obj["table"]), ident(obj["name"]))
        elif kind == "index":
            stmt = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(ident(obj["schema"], obj["name"]))
        elif kind == "column":
            stmt = sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(
                ident(obj["schema"], obj["table"]), ident(obj["name"]))
        elif kind == "relation":
            word = {"v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE", "f": "FOREIGN TABLE"}.get(
                obj["relkind"], "TABLE")
            stmt = sql.SQL(f"DROP {word} IF EXISTS {{}}").format(ident(obj["schema"], obj["name"]))
        elif kind == "function":
            word = {"p": "PROCEDURE", "a": "AGGREGATE"}.get(obj["prokind"], "FUNCTION")
            stmt = sql.Composed([sql.SQL(f"DROP {word} IF EXISTS "), ident(obj["schema"], obj["name"]),
                                 sql.SQL("(" + obj["args"] + ")")])
        elif kind == "type":
            word = "DOMAIN" if obj["typtype"] == "d" else "TYPE"
            stmt = sql.SQL(f"DROP {word} IF EXISTS {{}}").format(ident(obj["schema"], obj["name"]))
        else:  # schema
            stmt = sql.SQL("DROP SCHEMA IF EXISTS {}").format(ident(obj["schema"]))
        steps.append(Step(label(obj), stmt, concurrently=kind == "index"))
    return steps
