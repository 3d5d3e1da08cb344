"""Which of the three cases a release is in, said before the deploy.

- ``undoable in place``: every pending statement only adds (tables, columns, indexes,
  constraints, sequences, views, functions, types, triggers, schemas) or writes into
  what this release adds; a failure is undone by dropping those, keeping every row.
- ``restore needed``: a statement drops, changes or rewrites something that exists
  (DROP, ALTER COLUMN TYPE, RENAME, an UPDATE of an existing table...); only a restore
  of the snapshot undoes it, and the snapshot guard's rules apply.
- ``unknown``: the migration is a command (Django, Alembic...), or a statement's effect
  cannot be told (a DO block); the failure is judged from the database afterwards.

The built-in runner's statements are parsed with PostgreSQL's own grammar (pglast).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .schemadiff import BOOKKEEPING_TABLES

UNDOABLE = "undoable in place"
RESTORE = "restore needed"
UNKNOWN = "unknown"

ADDITIVE = {"CreateStmt", "CreateTableAsStmt", "IndexStmt", "CreateSeqStmt", "CreateEnumStmt",
            "CreateDomainStmt", "CompositeTypeStmt", "CreateSchemaStmt"}
REPLACEABLE = {"ViewStmt": "replace", "CreateFunctionStmt": "replace", "CreateTrigStmt": "replace"}
NEUTRAL = {"SelectStmt", "TransactionStmt", "VariableSetStmt", "VariableShowStmt", "VacuumStmt",
           "ExplainStmt", "CommentStmt", "CheckPointStmt"}
DML = {"InsertStmt": "INSERT INTO", "UpdateStmt": "UPDATE", "DeleteStmt": "DELETE FROM",
       "MergeStmt": "MERGE INTO", "CopyStmt": "COPY"}
ADD_CMDS = {"AT_AddColumn", "AT_AddConstraint", "AT_AddIndex", "AT_AddIndexConstraint"}


@dataclass
class Verdict:
    case: str
    reasons: list[str] = field(default_factory=list)  # why not "undoable in place"
    statements: int = 0

    def __str__(self) -> str:
        if self.case == UNDOABLE:
            return f"{UNDOABLE} ({self.statements} statement{'s' if self.statements != 1 else ''})" \
                if self.statements else f"{UNDOABLE} (nothing pending)"
        return f"{self.case}: {'; '.join(self.reasons[:3])}" + \
            (f" and {len(self.reasons) - 3} more" if len(self.reasons) > 3 else "")

    def as_dict(self) -> dict:
        return {"case": self.case, "reasons": self.reasons, "statements": self.statements}


def _name(rangevar: dict | None) -> str:
    rangevar = rangevar or {}
    return (rangevar.get("relname") or "?").lower()


def _kind_node(text: str) -> tuple[str, dict] | None:
    from pglast.parser import parse_sql_json

    try:
        stmts = json.loads(parse_sql_json(text)).get("stmts") or []
    except Exception:  # noqa: BLE001 - pglast raises ParseError; anything else is as unknown
        return None
    if not stmts:
        return "SelectStmt", {}
    (kind, node), = stmts[0]["stmt"].items()
    return kind, node


def classify(statements: list[tuple[str, str]]) -> Verdict:
    """The case of ``(where, sql)`` statements run in this order."""
    created: set[str] = set()
    restore: list[str] = []
    unknown: list[str] = []
    for where, text in statements:
        parsed = _kind_node(text)
        if parsed is None:
            unknown.append(f"{where}: the statement does not parse")
            continue
        kind, node = parsed
        if kind in ("CreateStmt", "CreateTableAsStmt"):
            target = node.get("relation") or (node.get("into") or {}).get("rel")
            created.add(_name(target))
        if kind in ADDITIVE or kind in NEUTRAL:
            continue
        if kind in REPLACEABLE:
            if node.get(REPLACEABLE[kind]):
                restore.append(f"{where}: CREATE OR REPLACE may change an existing object")
            continue
        if kind in DML:
            table = _name(node.get("relation"))
            if kind == "CopyStmt" and not node.get("is_from"):
                continue  # COPY ... TO reads
            if table in created or table in {t.lower() for t in BOOKKEEPING_TABLES}:
                continue
            restore.append(f"{where}: {DML[kind]} {table} changes rows of an existing table")
            continue
        if kind == "AlterTableStmt":
            table = _name(node.get("relation"))
            other = sorted({c.get("AlterTableCmd", {}).get("subtype", "?") for c in node.get("cmds") or []}
                           - ADD_CMDS - ({"AT_ValidateConstraint"} if table in created else set()))
            if other:
                restore.append(f"{where}: ALTER TABLE {table} {', '.join(o.removeprefix('AT_') for o in other)}")
            continue
        if kind == "DoStmt":
            unknown.append(f"{where}: a DO block (what it does cannot be told)")
            continue
        restore.append(f"{where}: {_describe_kind(kind, node)}")
    case = RESTORE if restore else UNKNOWN if unknown else UNDOABLE
    return Verdict(case, restore + unknown, len(statements))


def _describe_kind(kind: str, node: dict) -> str:
    if kind == "DropStmt":
        return f"DROP {node.get('removeType', 'OBJECT_?').removeprefix('OBJECT_')}"
    if kind == "RenameStmt":
        return f"RENAME {node.get('renameType', 'OBJECT_?').removeprefix('OBJECT_')}"
    if kind == "TruncateStmt":
        return "TRUNCATE"
    return kind.removesuffix("Stmt")


def command_verdict(command: tuple[str, ...] | None) -> Verdict:
    return Verdict(UNKNOWN, [f"the migration is a command ({' '.join(command or ())}); what it "
                             f"does is judged from the database after it ran"])
