"""``--plan``: split a migration into safe steps, the way django-pg-zero-downtime-migrations
rewrites Django's SQL, but for any SQL file.

- CONCURRENTLY statements (and anything else that cannot run in a transaction) get their
  own non-transactional step, after the DDL before them.
- CREATE/DROP INDEX and REINDEX become CONCURRENTLY.
- CHECK and FOREIGN KEY are added NOT VALID, and validated in a later step (SHARE UPDATE
  EXCLUSIVE, statement_timeout off: it may take long but blocks nobody).
- UNIQUE and PRIMARY KEY become a unique index built CONCURRENTLY plus ``USING INDEX``.
- SET NOT NULL goes through CHECK (col IS NOT NULL) NOT VALID -> VALIDATE -> SET NOT NULL
  -> DROP CONSTRAINT (PostgreSQL 12+, where the valid CHECK spares the scan).
- A column with a volatile default is added bare, then SET DEFAULT (backfill is left to you).
- Every step sets lock_timeout.
Operations on tables the file itself created stay as written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .effects import no_transaction_reason
from .engine import LintConfig, LintContext
from .parser import parse_file
from .rules import SERIAL_TYPES, volatile_calls


@dataclass
class Step:
    transactional: bool
    statements: list[str] = field(default_factory=list)
    why: str = ""
    long_running: bool = False  # statement_timeout = 0: builds/validations that block nobody


@dataclass
class Plan:
    file: str
    steps: list[Step]
    lock_timeout: str
    notes: list[str] = field(default_factory=list)


def _timeout_literal(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms" if seconds < 1 or seconds != int(seconds) else f"{int(seconds)}s"


def _deparse(node) -> str:
    from pglast.stream import RawStream

    return RawStream()(node)


def _alter(stmt_ast, *cmds):
    from pglast import ast

    return ast.AlterTableStmt(relation=stmt_ast.relation, cmds=tuple(cmds), objtype=stmt_ast.objtype,
                              missing_ok=stmt_ast.missing_ok)


def _cmd(subtype_name: str, **kw):
    from pglast import ast, enums

    return ast.AlterTableCmd(subtype=getattr(enums.AlterTableType, subtype_name), **kw)


class _Planner:
    def __init__(self, path: str, text: str, config: LintConfig, lock_timeout: float) -> None:
        self.source = parse_file(path, text)
        self.config = config
        self.ctx = LintContext(self.source, config, False)
        self.steps: list[Step] = []
        self.later: list[Step] = []
        self.current: Step | None = None
        self.notes: list[str] = []
        self.lock_timeout = _timeout_literal(lock_timeout)
        self.counter = 0

    # ---- step bookkeeping ----------------------------------------------------

    def tx(self, sql: str) -> None:
        if self.current is None:
            self.current = Step(True, why="transactional DDL, short locks")
            self.steps.append(self.current)
        self.current.statements.append(sql)

    def alone(self, sql: str, why: str) -> None:
        self.current = None
        self.steps.append(Step(False, [sql], why, long_running=True))

    def afterwards(self, statements: list[str], why: str, long_running: bool = False) -> None:
        self.later.append(Step(True, statements, why, long_running))

    def name(self, table: str, suffix: str) -> str:
        return f"{table}_{suffix}"[:63]

    # ---- statements ----------------------------------------------------------

    def run(self) -> Plan:
        for stmt in self.source.statements:
            if stmt.error:
                self.notes.append(f"line {self.source.position(stmt.start)[0]}: does not parse, copied as is")
                self.tx(stmt.text)
                continue
            try:
                self.statement(stmt)
            except Exception as exc:  # noqa: BLE001 - a statement we cannot rewrite is kept as written
                self.notes.append(f"line {self.source.position(stmt.start)[0]}: kept as written "
                                  f"({type(exc).__name__}: {exc})")
                self.tx(stmt.text)
            self.ctx.after(stmt)
        self.steps.extend(self.later)
        return Plan(self.source.path, [s for s in self.steps if s.statements], self.lock_timeout, self.notes)

    def statement(self, stmt) -> None:
        kind, node = stmt.kind, stmt.node
        if kind == "TransactionStmt":
            return
        if kind == "VariableSetStmt" and node.get("name") in ("lock_timeout", "statement_timeout"):
            return
        if kind == "IndexStmt" and not self.ctx.is_new(node.get("relation")):
            tree = stmt.ast
            tree.concurrent = True
            if tree.idxname:
                tree.if_not_exists = True
            self.alone(_deparse(tree), "CREATE INDEX CONCURRENTLY cannot run in a transaction")
            return
        if kind == "DropStmt" and node.get("removeType") == "OBJECT_INDEX" and node.get("behavior") == "DROP_CASCADE":
            self.notes.append(f"line {self.source.position(stmt.start)[0]}: DROP INDEX ... CASCADE kept as written "
                              "(CONCURRENTLY does not support CASCADE: drop the dependent objects first)")
            self.tx(stmt.text)
            return
        if kind == "DropStmt" and node.get("removeType") == "OBJECT_INDEX":
            tree = stmt.ast
            for obj in tree.objects:
                one = type(tree)(objects=(obj,), removeType=tree.removeType, behavior=tree.behavior,
                                 missing_ok=True, concurrent=True)
                self.alone(_deparse(one), "DROP INDEX CONCURRENTLY cannot run in a transaction")
            return
        if kind == "ReindexStmt" and self.ctx.version_at_least(12):
            tree = stmt.ast
            from pglast import ast

            if not any(getattr(p, "defname", None) == "concurrently" for p in tree.params or ()):
                tree.params = tuple(tree.params or ()) + (ast.DefElem(defname="concurrently"),)
            self.alone(_deparse(tree), "REINDEX CONCURRENTLY cannot run in a transaction")
            return
        reason = no_transaction_reason(stmt, self.config.pg_version)
        if reason:
            self.alone(stmt.text, f"{reason} cannot run in a transaction")
            return
        if kind == "AlterTableStmt" and not self.ctx.is_new(node.get("relation")) \
                and node.get("objtype", "OBJECT_TABLE") == "OBJECT_TABLE":
            self.alter_table(stmt)
            return
        self.tx(stmt.text)

    def alter_table(self, stmt) -> None:
        tree = stmt.ast
        table = tree.relation.relname
        for i, cmd in enumerate(tree.cmds):
            raw = stmt.node["cmds"][i]["AlterTableCmd"]
            subtype = raw.get("subtype")
            if subtype == "AT_AddConstraint":
                self.add_constraint(tree, table, cmd, cmd.def_)
            elif subtype == "AT_SetNotNull" and self.ctx.version_at_least(12) \
                    and (table, cmd.name) not in self.ctx.proven_not_null:
                self.set_not_null(tree, table, cmd.name)
            elif subtype == "AT_AddColumn":
                self.add_column(tree, table, cmd, raw)
            else:
                self.tx(_deparse(_alter(tree, cmd)))

    def add_constraint(self, tree, table: str, cmd, con) -> None:
        from pglast import enums

        ctype = con.contype
        if ctype in (enums.ConstrType.CONSTR_CHECK, enums.ConstrType.CONSTR_FOREIGN) and not con.skip_validation:
            if not con.conname:
                suffix = "fkey" if ctype == enums.ConstrType.CONSTR_FOREIGN else "check"
                cols = "_".join(a.sval for a in (con.fk_attrs or ())) or str(self.counter)
                self.counter += 1
                con.conname = self.name(table, f"{cols}_{suffix}")
            con.skip_validation = True
            con.initially_valid = False
            self.tx(_deparse(_alter(tree, cmd)))
            self.afterwards([_deparse(_alter(tree, _cmd("AT_ValidateConstraint", name=con.conname)))],
                            "VALIDATE takes SHARE UPDATE EXCLUSIVE: reads and writes go on", True)
            return
        if ctype in (enums.ConstrType.CONSTR_UNIQUE, enums.ConstrType.CONSTR_PRIMARY) and not con.indexname \
                and con.keys:
            kind = "pkey" if ctype == enums.ConstrType.CONSTR_PRIMARY else "key"
            cols = [k.sval for k in con.keys]
            name = con.conname or self.name(table, "_".join(cols) + "_" + kind if kind == "key" else kind)
            index = self._unique_index(tree, name, cols)
            self.alone(index, "build the unique index CONCURRENTLY (no NOT VALID exists for UNIQUE/PRIMARY KEY)")
            con.keys = None
            con.indexname = name
            con.conname = name
            if ctype == enums.ConstrType.CONSTR_PRIMARY:
                self.notes.append(f"{table}: PRIMARY KEY USING INDEX sets NOT NULL on {', '.join(cols)}; make "
                                  "them NOT NULL first through the CHECK recipe if they allow NULLs")
            self.tx(_deparse(_alter(tree, cmd)))
            return
        self.tx(_deparse(_alter(tree, cmd)))

    def _unique_index(self, tree, name: str, cols: list[str]) -> str:
        from pglast import ast, enums

        relation = ast.RangeVar(schemaname=tree.relation.schemaname, relname=tree.relation.relname, inh=True,
                                relpersistence="p")  # ALTER TABLE ONLY: the index is still for the whole table
        index = ast.IndexStmt(idxname=name, relation=relation, accessMethod="btree", unique=True,
                              concurrent=True, if_not_exists=True,
                              indexParams=tuple(ast.IndexElem(name=c, ordering=enums.SortByDir.SORTBY_DEFAULT,
                                                              nulls_ordering=enums.SortByNulls.SORTBY_NULLS_DEFAULT)
                                                for c in cols))
        return _deparse(index)

    def set_not_null(self, tree, table: str, column: str) -> None:
        from pglast import ast, enums

        name = self.name(table, f"{column}_not_null")
        check = ast.Constraint(contype=enums.ConstrType.CONSTR_CHECK, conname=name, skip_validation=True,
                               initially_valid=False, is_enforced=True,
                               raw_expr=ast.NullTest(arg=ast.ColumnRef(fields=(ast.String(sval=column),)),
                                                     nulltesttype=enums.NullTestType.IS_NOT_NULL))
        self.tx(_deparse(_alter(tree, _cmd("AT_AddConstraint", def_=check))))
        self.afterwards([_deparse(_alter(tree, _cmd("AT_ValidateConstraint", name=name)))],
                        "VALIDATE scans without blocking reads or writes", True)
        self.afterwards([_deparse(_alter(tree, _cmd("AT_SetNotNull", name=column))),
                         _deparse(_alter(tree, _cmd("AT_DropConstraint", name=name)))],
                        "SET NOT NULL skips the scan: the valid CHECK proves there is no NULL")

    def add_column(self, tree, table: str, cmd, raw) -> None:
        """ADD COLUMN, so that every step runs on a table with rows and the end schema is the original's.

        A default PostgreSQL must compute row by row (volatile; any default before 11) is split
        off: the column is added bare and nullable, SET DEFAULT covers new rows, a batched
        backfill (its own step, committing every batch) fills the old ones, and only then is a
        NOT NULL added, through the CHECK recipe (the Lemmy instance-actor case: keeping NOT NULL
        on the bare column fails with 23502). A foreign key stays inline when the column is
        added without values (PostgreSQL does not scan a column of NULLs), a CHECK does not (it
        is checked on every row either way), UNIQUE / PRIMARY KEY become an index built
        CONCURRENTLY, after the backfill.
        """
        from pglast import ast, enums

        coldef = cmd.def_
        column = coldef.colname
        raw_defaults = [c.get("Constraint", {}).get("raw_expr") for c in
                        raw.get("def", {}).get("ColumnDef", {}).get("constraints") or []
                        if c.get("Constraint", {}).get("contype") == "CONSTR_DEFAULT"]
        computed = bool(volatile_calls(raw_defaults)) or not self.ctx.version_at_least(11)
        keep, default, deferred = [], None, []
        has_default = any(c.contype == enums.ConstrType.CONSTR_DEFAULT and not _is_null(c.raw_expr)
                          for c in coldef.constraints or ())
        for con in coldef.constraints or ():
            if con.contype == enums.ConstrType.CONSTR_DEFAULT and computed and not _is_null(con.raw_expr):
                default = con.raw_expr
            elif con.contype == enums.ConstrType.CONSTR_FOREIGN and not con.skip_validation:
                if has_default and not computed:  # existing rows get a value: validating scan, split it
                    con.fk_attrs = (ast.String(sval=column),)
                    deferred.append(con)
                else:
                    keep.append(con)  # a column of NULLs is not scanned; the backfill is checked row by row
            elif con.contype == enums.ConstrType.CONSTR_CHECK and not con.skip_validation:
                deferred.append(con)  # checked on every row even for a new column
            elif con.contype in (enums.ConstrType.CONSTR_UNIQUE, enums.ConstrType.CONSTR_PRIMARY):
                con.keys = (ast.String(sval=column),)
                deferred.append(con)
            else:
                keep.append(con)
        not_null = False
        if default is not None:
            # NOT NULL on the bare column fails on every existing row (23502): it comes after the backfill
            not_null = bool(coldef.is_not_null) or any(c.contype == enums.ConstrType.CONSTR_NOTNULL for c in keep)
            keep = [c for c in keep if c.contype != enums.ConstrType.CONSTR_NOTNULL]
            coldef.is_not_null = False
        type_name = coldef.typeName.names[-1].sval if coldef.typeName else ""
        if default is None and not deferred:
            if type_name in SERIAL_TYPES:
                self.notes.append(f"{table}.{column}: a {type_name} column rewrites the table; prefer a nullable "
                                  "bigint filled in batches from a sequence")
            self.tx(_deparse(_alter(tree, cmd)))
            return
        coldef.constraints = tuple(keep) or None
        self.tx(_deparse(_alter(tree, cmd)))
        if default is not None:
            self.tx(_deparse(_alter(tree, _cmd("AT_ColumnDefault", name=column, def_=default))))
            self.alone(self._backfill(tree, column, _deparse(default)),
                       "backfill the existing rows in batches of 10000, committing each (new rows get the default)")
            if not_null:
                if self.ctx.version_at_least(12):
                    self.set_not_null(tree, table, column)
                else:
                    self.afterwards([_deparse(_alter(tree, _cmd("AT_SetNotNull", name=column)))],
                                    "SET NOT NULL scans the table (no CHECK shortcut before PostgreSQL 12)")
        for con in deferred:
            if con.contype == enums.ConstrType.CONSTR_CHECK and not con.conname:
                con.conname = self.name(table, f"{column}_check")
            self.add_constraint(tree, table, _cmd("AT_AddConstraint", def_=con), con)

    def _backfill(self, tree, column: str, expr: str) -> str:
        """A DO block that fills ``column`` in batches, committing after each (PostgreSQL 11+
        allows COMMIT in a DO block run outside a transaction)."""
        table = _deparse(tree.relation)
        return (f"DO $backfill$ DECLARE n bigint; BEGIN LOOP UPDATE {table} SET {column} = {expr} "
                f"WHERE ctid = ANY (ARRAY(SELECT ctid FROM {table} WHERE {column} IS NULL LIMIT 10000)); "
                "GET DIAGNOSTICS n = ROW_COUNT; EXIT WHEN n = 0; COMMIT; END LOOP; END $backfill$")


def _is_null(expr) -> bool:
    return getattr(expr, "isnull", False) is True


def plan_source(path: str, text: str, config: LintConfig, lock_timeout: float = 2.0) -> Plan:
    """The migration in ``text`` as ordered steps, each marked transactional or not."""
    return _Planner(path, text, config, lock_timeout).run()


def step_sql(step: Step, lock_timeout: str) -> list[str]:
    lines = []
    if step.transactional:
        lines.append("BEGIN;")
        lines.append(f"SET LOCAL lock_timeout = '{lock_timeout}';")
        if step.long_running:
            lines.append("SET LOCAL statement_timeout = 0;")
    else:
        lines.append(f"SET lock_timeout = '{lock_timeout}';")
        if step.long_running:
            lines.append("SET statement_timeout = 0;")
    lines.extend(s.rstrip(";") + ";" for s in step.statements)
    if step.transactional:
        lines.append("COMMIT;")
    elif step.long_running:
        lines.append("RESET statement_timeout;")  # the session goes on to the next step
    return lines


def _py(sql: str) -> str:
    return repr(sql)


def format_alembic(plans: list[Plan]) -> str:
    """An Alembic ``upgrade()``: transactional steps separated by commits, the others in
    ``autocommit_block()`` (Alembic runs a migration in a transaction by default)."""
    out = ['"""Generated by compose-atomic lint --plan --format alembic: one step per block, in order."""',
           "from alembic import op", "", "", "def upgrade():"]
    first = True
    for p in plans:
        out.append(f"    # {p.file}")
        for n, step in enumerate(p.steps, 1):
            out.append(f"    # step {n}: {step.why}")
            if step.transactional:
                if not first:
                    out.append("    with op.get_context().autocommit_block():  # commit the previous step")
                    out.append("        pass")
                for line in step_sql(step, p.lock_timeout)[1:-1]:  # BEGIN/COMMIT are Alembic's
                    out.append(f"    op.execute({_py(line.rstrip(';'))})")
            else:
                out.append("    with op.get_context().autocommit_block():")
                for line in step_sql(step, p.lock_timeout):
                    out.append(f"        op.execute({_py(line.rstrip(';'))})")
            first = False
    out += ["", "", "def downgrade():", "    raise NotImplementedError('write the reverse steps by hand')", ""]
    return "\n".join(out)


def format_django(plans: list[Plan]) -> str:
    """A Django migration with ``atomic = False``: each step is one RunSQL with its own
    BEGIN/COMMIT when it is transactional."""
    out = ['"""Generated by compose-atomic lint --plan --format django: set dependencies, keep the order."""',
           "from django.db import migrations", "", "", "class Migration(migrations.Migration):",
           "    atomic = False", "    dependencies = []  # fill in", "", "    operations = ["]
    for p in plans:
        out.append(f"        # {p.file}")
        for n, step in enumerate(p.steps, 1):
            out.append(f"        # step {n}: {step.why}")
            sql = "\n".join(step_sql(step, p.lock_timeout))
            out.append(f"        migrations.RunSQL({_py(sql)}),")
    out += ["    ]", ""]
    return "\n".join(out)


def format_plan(plans: list[Plan], fmt: str = "text") -> str:
    if fmt == "alembic":
        return format_alembic(plans)
    if fmt == "django":
        return format_django(plans)
    if fmt == "json":
        return json.dumps([{"file": p.file, "lock_timeout": p.lock_timeout, "notes": p.notes,
                            "steps": [{**asdict(s), "sql": step_sql(s, p.lock_timeout)} for s in p.steps]}
                           for p in plans], indent=2)
    out: list[str] = []
    for p in plans:
        out.append(f"-- {p.file}: {len(p.steps)} step(s); run them in order, each as its own migration")
        for note in p.notes:
            out.append(f"-- note: {note}")
        for n, step in enumerate(p.steps, 1):
            mode = "in a transaction" if step.transactional else "OUTSIDE a transaction"
            out.append("")
            out.append(f"-- step {n}: {mode}: {step.why}")
            out.extend(step_sql(step, p.lock_timeout))
        out.append("")
    return "\n".join(out)
