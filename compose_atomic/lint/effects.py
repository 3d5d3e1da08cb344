"""Which lock each statement (or ALTER TABLE action) takes, and whether it rewrites.

One table for the whole capability: the rules put it in every finding, --plan uses
it to place statements, and trace mode checks it against ``pg_locks``. Sources:
PostgreSQL's ``alter_table.sgml`` and explicit-locking chapter (see
docs/lint.md); every ALTER TABLE action takes ACCESS EXCLUSIVE unless listed here,
and a multi-action statement takes the strongest lock of its actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .pgfacts import LOCK_ORDER, enabled_options, relname

SUE = "SHARE UPDATE EXCLUSIVE"
SRE = "SHARE ROW EXCLUSIVE"
AE = "ACCESS EXCLUSIVE"
SHARE = "SHARE"

CMD_LOCKS = {
    "AT_SetStatistics": SUE, "AT_SetOptions": SUE, "AT_ResetOptions": SUE, "AT_ClusterOn": SUE,
    "AT_DropCluster": SUE, "AT_SetRelOptions": SUE, "AT_ResetRelOptions": SUE,
    "AT_ValidateConstraint": SUE, "AT_AttachPartition": SUE,
    "AT_EnableTrig": SRE, "AT_EnableAlwaysTrig": SRE, "AT_EnableReplicaTrig": SRE,
    "AT_EnableTrigAll": SRE, "AT_EnableTrigUser": SRE, "AT_DisableTrig": SRE,
    "AT_DisableTrigAll": SRE, "AT_DisableTrigUser": SRE,
}
REWRITE_CMDS = {"AT_SetTableSpace", "AT_SetLogged", "AT_SetUnLogged", "AT_SetAccessMethod"}


def blocks(lock: str | None) -> str:
    """What ordinary traffic a lock stops."""
    if lock == AE:
        return "blocks reads and writes"
    if lock in (SHARE, SRE, "EXCLUSIVE"):
        return "blocks writes"
    return "blocks other schema changes"


def stronger(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if LOCK_ORDER.index(a) >= LOCK_ORDER.index(b) else b


def cmd_lock(cmd: dict) -> str:
    subtype = cmd.get("subtype", "")
    if subtype == "AT_AddConstraint":
        if cmd.get("def", {}).get("Constraint", {}).get("contype") == "CONSTR_FOREIGN":
            return SRE
        return AE
    if subtype == "AT_DetachPartition" and cmd.get("def", {}).get("PartitionCmd", {}).get("concurrent"):
        return SUE
    return CMD_LOCKS.get(subtype, AE)


@dataclass
class Effect:
    """The lock a statement takes on existing relations, and what else it does."""

    lock: str | None = None
    tables: list[str] = field(default_factory=list)
    rewrite: bool = False
    no_transaction: bool = False

    def describe(self) -> str | None:
        if not self.lock:
            return None
        return f"{self.lock} on {' and '.join(dict.fromkeys(self.tables)) or '?'}"


_options = enabled_options


def statement_effect(stmt, pg_version: tuple[int, int] = (15, 0)) -> Effect:
    """The Effect of a parsed statement (empty for reads and unknown kinds)."""
    kind, node = stmt.kind, stmt.node
    if kind == "AlterTableStmt":
        lock = None
        tables = [relname(node.get("relation"))]
        rewrite = False
        no_tx = False
        for item in node.get("cmds", []):
            cmd = item.get("AlterTableCmd", {})
            lock = stronger(lock, cmd_lock(cmd))
            subtype = cmd.get("subtype")
            if subtype in REWRITE_CMDS:
                rewrite = True
            if subtype == "AT_AddConstraint":
                con = cmd.get("def", {}).get("Constraint", {})
                if con.get("contype") == "CONSTR_FOREIGN":
                    tables.append(relname(con.get("pktable")))
            if subtype == "AT_DetachPartition" and cmd.get("def", {}).get("PartitionCmd", {}).get("concurrent"):
                no_tx = True
        return Effect(lock, tables, rewrite, no_tx)
    if kind == "IndexStmt":
        return Effect(SUE if node.get("concurrent") else SHARE, [relname(node.get("relation"))],
                      no_transaction=bool(node.get("concurrent")))
    if kind == "DropStmt":
        objects = [".".join(p.get("String", {}).get("sval", "?") for p in (o.get("List", {}).get("items") or []))
                   for o in node.get("objects") or []]
        remove = node.get("removeType")
        if remove == "OBJECT_INDEX":
            if node.get("concurrent"):
                return Effect(SUE, [f"the table of {o}" for o in objects], no_transaction=True)
            return Effect(AE, [f"{o} and its table" for o in objects])
        if remove in ("OBJECT_TABLE", "OBJECT_MATVIEW", "OBJECT_VIEW", "OBJECT_SEQUENCE"):
            return Effect(AE, objects)
        if remove == "OBJECT_TRIGGER":
            return Effect(AE, objects[:1])
        return Effect()
    if kind == "ReindexStmt":
        concurrent = "concurrently" in _options(node, "params")
        target = relname(node.get("relation")) if node.get("relation") else node.get("name", "?")
        if concurrent:
            return Effect(SUE, [target], no_transaction=True)
        db_wide = node.get("kind") in ("REINDEX_OBJECT_DATABASE", "REINDEX_OBJECT_SYSTEM")
        return Effect(AE, [f"{target}'s indexes"], no_transaction=db_wide)
    if kind == "VacuumStmt":
        options = _options(node, "options")
        tables = [relname(r.get("VacuumRelation", {}).get("relation")) for r in node.get("rels") or []] or ["every table"]
        if not node.get("is_vacuumcmd"):
            return Effect(SUE, tables)
        if "full" in options:
            return Effect(AE, tables, rewrite=True, no_transaction=True)
        return Effect(SUE, tables, no_transaction=True)
    if kind == "ClusterStmt":
        if not node.get("relation"):
            return Effect(AE, ["every clustered table"], rewrite=True, no_transaction=True)
        return Effect(AE, [relname(node.get("relation"))], rewrite=True)
    if kind == "TruncateStmt":
        tables = [relname(r.get("RangeVar")) for r in node.get("relations") or []]
        if node.get("behavior") == "DROP_CASCADE":
            tables.append("every table referencing them")
        return Effect(AE, tables)
    if kind == "RenameStmt":
        rtype = node.get("renameType")
        if rtype == "OBJECT_INDEX":
            return Effect(SUE, [relname(node.get("relation"))])
        if rtype == "OBJECT_SCHEMA":
            return Effect(None, [node.get("subname", "?")])
        if node.get("relation"):
            return Effect(AE, [relname(node.get("relation"))])
        return Effect()
    if kind == "CreateTrigStmt":
        return Effect(SRE, [relname(node.get("relation"))])
    if kind == "LockStmt":
        modes = {1: "ACCESS SHARE", 2: "ROW SHARE", 3: "ROW EXCLUSIVE", 4: SUE, 5: SHARE, 6: SRE,
                 7: "EXCLUSIVE", 8: AE}
        return Effect(modes.get(node.get("mode", 8), AE),
                      [relname(r.get("RangeVar")) for r in node.get("relations") or []])
    if kind in ("CreatedbStmt", "DropdbStmt", "CreateTableSpaceStmt", "DropTableSpaceStmt", "AlterSystemStmt"):
        return Effect(no_transaction=True)
    if kind == "AlterEnumStmt" and not node.get("oldVal") and pg_version < (12, 0):
        return Effect(no_transaction=True)
    return Effect()


def no_transaction_reason(stmt, pg_version: tuple[int, int]) -> str | None:
    """Why a statement cannot run inside a transaction block, or None."""
    kind, node = stmt.kind, stmt.node
    if kind == "IndexStmt" and node.get("concurrent"):
        return "CREATE INDEX CONCURRENTLY"
    if kind == "DropStmt" and node.get("concurrent"):
        return "DROP INDEX CONCURRENTLY"
    if kind == "ReindexStmt":
        if "concurrently" in _options(node, "params"):
            return "REINDEX CONCURRENTLY"
        if node.get("kind") in ("REINDEX_OBJECT_DATABASE", "REINDEX_OBJECT_SYSTEM"):
            return "REINDEX DATABASE/SYSTEM"
    if kind == "AlterTableStmt":
        for item in node.get("cmds", []):
            cmd = item.get("AlterTableCmd", {})
            if cmd.get("subtype") == "AT_DetachPartition" and cmd.get("def", {}).get("PartitionCmd", {}).get("concurrent"):
                return "DETACH PARTITION CONCURRENTLY"
    if kind == "VacuumStmt" and node.get("is_vacuumcmd"):
        return "VACUUM"
    if kind == "ClusterStmt" and not node.get("relation"):
        return "CLUSTER without a table"
    if kind == "CreatedbStmt":
        return "CREATE DATABASE"
    if kind == "DropdbStmt":
        return "DROP DATABASE"
    if kind == "CreateTableSpaceStmt":
        return "CREATE TABLESPACE"
    if kind == "DropTableSpaceStmt":
        return "DROP TABLESPACE"
    if kind == "AlterSystemStmt":
        return "ALTER SYSTEM"
    if kind == "AlterEnumStmt" and not node.get("oldVal") and pg_version < (12, 0):
        return "ALTER TYPE ... ADD VALUE before PostgreSQL 12"
    return None
