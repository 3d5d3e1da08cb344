"""The built-in rules. Ids are squawk's where squawk has the rule, so ignores carry over.

Each rule is a ``Rule`` whose ``check(stmt, ctx)`` yields ``Hit`` objects; the
built-in plugin (``compose_atomic.lint.plugin``) registers them through the same
``register_lint_rules`` hook third-party plugins use. The texts here (why, lock,
recipe) are also the reference in docs/lint.md.
"""

from __future__ import annotations

from .effects import AE, SHARE, SRE, blocks, no_transaction_reason, statement_effect
from .engine import END_OF_FILE
from .pgfacts import binary_compatible, column_type, enabled_options, relname
from .model import Hit, Rule

# Built-in functions whose result does not change row to row (pg_proc.provolatile in 'i','s'):
# a DEFAULT made only of these is stored in the catalog on PG11+ and does not rewrite the table.
NON_VOLATILE = frozenset("""
now transaction_timestamp statement_timestamp current_timestamp current_date localtimestamp
lower upper btrim trim ltrim rtrim length char_length character_length octet_length concat concat_ws
substr substring replace coalesce nullif greatest least abs round floor ceil ceiling trunc mod power
sqrt sign date_trunc date_part extract make_date make_time make_interval make_timestamp
make_timestamptz to_char to_date to_timestamp to_number to_json to_jsonb json_build_object
jsonb_build_object json_build_array jsonb_build_array jsonb_object array_to_string string_to_array
array_length array_fill cardinality md5 sha256 encode decode format left right lpad rpad repeat
reverse split_part strpos position initcap quote_ident quote_literal timezone current_setting
current_schema current_database current_user session_user inet cidr numeric int2 int4 int8 float4
float8 text bool varchar bpchar date timestamp timestamptz interval jsonb json uuid pg_catalog
""".split())

SERIAL_TYPES = {"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"}


def _func_names(expr, out: list[str]) -> None:
    if isinstance(expr, dict):
        for key, value in expr.items():
            if key == "FuncCall":
                names = value.get("funcname") or []
                if names:
                    out.append(names[-1].get("String", {}).get("sval", "").lower())
            if key in ("SubLink",):
                out.append("(subquery)")
            _func_names(value, out)
    elif isinstance(expr, list):
        for item in expr:
            _func_names(item, out)


def volatile_calls(expr) -> list[str]:
    """Functions in an expression that are volatile or unknown (unknown counts as volatile)."""
    names: list[str] = []
    _func_names(expr, names)
    return [n for n in names if n not in NON_VOLATILE]


def _is_null_const(expr) -> bool:
    return bool(expr and expr.get("A_Const", {}).get("isnull"))


def _constraints(coldef: dict) -> list[dict]:
    return [c.get("Constraint", {}) for c in coldef.get("constraints") or []]


def _type_name(coldef: dict) -> str:
    names = coldef.get("typeName", {}).get("names") or []
    return names[-1].get("String", {}).get("sval", "").lower() if names else ""


def _cmds(stmt):
    """(index, AlterTableCmd body) of an ALTER TABLE."""
    return enumerate(stmt.cmds)


def _span(stmt, i):
    return stmt.action_spans[i]


def _lock(mode: str, *tables: str) -> str:
    return f"{mode} on {' and '.join(dict.fromkeys(tables))}"


def _table(stmt) -> str:
    return relname(stmt.node.get("relation"))


# ---- index rules ------------------------------------------------------------------


def check_index_creation(stmt, ctx):
    node = stmt.node
    if node.get("concurrent") or ctx.is_new(node.get("relation")):
        return
    table = _table(stmt)
    yield Hit(f"Creating an index without CONCURRENTLY takes a SHARE lock on {table} for the whole "
              "build, which blocks writes (INSERT, UPDATE, DELETE) until it finishes.",
              "Use CREATE INDEX CONCURRENTLY, outside a transaction block, then check that the index is valid "
              "(pg_index.indisvalid).", _lock(SHARE, table))


def check_index_deletion(stmt, ctx):
    node = stmt.node
    if node.get("removeType") != "OBJECT_INDEX" or node.get("concurrent"):
        return
    names = [".".join(p.get("String", {}).get("sval", "") for p in o.get("List", {}).get("items") or [])
             for o in node.get("objects") or []]
    if all(n.rsplit(".", 1)[-1] in ctx.created_indexes for n in names):
        return
    yield Hit("Dropping an index without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on its table, which "
              "blocks reads and writes, and waits behind every running query on it.",
              "Use DROP INDEX CONCURRENTLY (one index per statement, outside a transaction block). "
              "It cannot drop an index that backs a constraint: drop the constraint instead.",
              f"ACCESS EXCLUSIVE on the table of {', '.join(names)}")


def check_reindex(stmt, ctx):
    node = stmt.node
    if "concurrently" in enabled_options(node, "params"):  # (CONCURRENTLY false) is a plain REINDEX
        return
    if node.get("relation") and ctx.is_new(node.get("relation")):
        return
    target = relname(node.get("relation")) if node.get("relation") else node.get("name", "the database")
    if node.get("kind") == "REINDEX_OBJECT_SYSTEM":
        help_ = ("PostgreSQL cannot reindex system catalogs concurrently (REINDEX SYSTEM has no CONCURRENTLY): "
                 "run it in a maintenance window, outside a migration.")
    elif ctx.version_at_least(12):
        help_ = "Use REINDEX ... CONCURRENTLY (outside a transaction block)."
    else:
        help_ = ("PostgreSQL before 12 has no REINDEX CONCURRENTLY: build a new index CONCURRENTLY, then drop "
                 "the old one CONCURRENTLY.")
    yield Hit(f"REINDEX without CONCURRENTLY locks {target} against writes and takes ACCESS EXCLUSIVE on "
              "each index, so queries that would use them (reads too) wait until it finishes.",
              help_, f"SHARE on {target}, ACCESS EXCLUSIVE on its indexes")


def check_no_transaction(stmt, ctx):
    if not ctx.in_transaction:
        return
    reason = no_transaction_reason(stmt, ctx.pg_version)
    if not reason:
        return
    if ctx.in_function:
        yield Hit(f"{reason} cannot be executed from a function, and a DO block is one: PostgreSQL fails it "
                  "with SQLSTATE 25001.",
                  "Take the statement out of the DO block, into its own non-transactional migration step.", None)
        return
    where = "an explicit BEGIN block" if ctx.explicit_transaction else \
        "the transaction the migration runner wraps the file in (--assume-in-transaction)"
    yield Hit(f"{reason} cannot run inside a transaction block (SQLSTATE 25001), and this runs inside "
              f"{where}.",
              "Move it to its own migration step that runs outside a transaction (e.g. a separate file "
              "marked non-transactional; `compose-atomic lint --plan` splits it out).", None)


# ---- column rules ------------------------------------------------------------------


def check_field_with_default(stmt, ctx):
    if ctx.is_new(stmt.node.get("relation")):
        return
    table = _table(stmt)
    for i, cmd in _cmds(stmt):
        if cmd.get("subtype") != "AT_AddColumn":
            continue
        coldef = cmd.get("def", {}).get("ColumnDef", {})
        col = coldef.get("colname", "?")
        reason = None
        if _type_name(coldef) in SERIAL_TYPES:
            reason = f"a {_type_name(coldef)} column fills every existing row from a sequence (nextval() is volatile)"
        for con in _constraints(coldef):
            ctype = con.get("contype")
            if ctype == "CONSTR_DEFAULT" and not _is_null_const(con.get("raw_expr")):
                calls = volatile_calls(con.get("raw_expr"))
                if not ctx.version_at_least(11):
                    reason = "before PostgreSQL 11 any DEFAULT on a new column is written into every row"
                elif calls:
                    reason = f"the default calls {', '.join(sorted(set(calls)))}(), volatile (or unknown), " \
                             "so it is evaluated for every existing row"
            elif ctype == "CONSTR_GENERATED" and con.get("generated_kind", "s") != "v":
                reason = "a STORED generated column is computed for every existing row"
            elif ctype == "CONSTR_IDENTITY":
                reason = "an identity column fills every existing row from a sequence"
        if reason:
            yield Hit(f"Adding column {col} rewrites {table}: {reason}. The rewrite holds an ACCESS EXCLUSIVE "
                      "lock (reads and writes blocked) for as long as it takes to copy the table.",
                      "Add the column without a default (nullable), then ALTER COLUMN ... SET DEFAULT for new "
                      "rows, then backfill existing rows in small batches.",
                      _lock(AE, table), _span(stmt, i))


def check_required_field(stmt, ctx):
    if ctx.is_new(stmt.node.get("relation")):
        return
    table = _table(stmt)
    for i, cmd in _cmds(stmt):
        if cmd.get("subtype") != "AT_AddColumn":
            continue
        coldef = cmd.get("def", {}).get("ColumnDef", {})
        cons = _constraints(coldef)
        types = {c.get("contype") for c in cons}
        not_null = "CONSTR_NOTNULL" in types or "CONSTR_PRIMARY" in types or coldef.get("is_not_null")
        has_default = any(c.get("contype") == "CONSTR_DEFAULT" and not _is_null_const(c.get("raw_expr"))
                          for c in cons) or types & {"CONSTR_GENERATED", "CONSTR_IDENTITY"} \
            or _type_name(coldef) in SERIAL_TYPES
        if not_null and not has_default:
            yield Hit(f"Adding NOT NULL column {coldef.get('colname', '?')} without a default to {table} fails "
                      "as soon as the table has a row, and the application's INSERTs that do not set it fail too.",
                      "Add the column nullable (backfill, then make it NOT NULL safely), or give it a "
                      "non-volatile DEFAULT.", _lock(AE, table), _span(stmt, i))


def check_column_type(stmt, ctx):
    if ctx.is_new(stmt.node.get("relation")):
        return
    table = _table(stmt)
    columns = ctx.schema.get(stmt.node.get("relation", {}).get("relname"), {})
    for i, cmd in _cmds(stmt):
        if cmd.get("subtype") != "AT_AlterColumnType":
            continue
        coldef = cmd.get("def", {}).get("ColumnDef", {})
        old = columns.get(cmd.get("name"))
        new = column_type(coldef)
        if old is not None and coldef.get("raw_default") is None and binary_compatible(old, new):
            continue  # known from an earlier migration: no rewrite (the brief lock is require-lock-timeout's)
        change = f" from {_type_text(old)} to {_type_text(new)}" if old else ""
        yield Hit(f"Changing the type of {table}.{cmd.get('name', '?')}{change} rewrites the table and rebuilds its "
                  "indexes under an ACCESS EXCLUSIVE lock, which blocks reads and writes for the whole rewrite"
                  + ("." if old else ", unless it is binary-compatible (varchar -> text, a longer varchar, wider "
                     "numeric precision); the old type is not in the files linted, so `compose-atomic lint "
                     "--trace` or linting the whole migrations directory tells."),
                  "Add a new column of the new type, keep it in sync with a trigger, backfill in batches, then "
                  "switch reads and drop the old column.", _lock(AE, table), _span(stmt, i))


def _type_text(t) -> str:
    name, mods = t
    return f"{name}({', '.join(map(str, mods))})" if mods else name


def check_set_not_null(stmt, ctx):
    node = stmt.node
    if ctx.is_new(node.get("relation")):
        return
    table = _table(stmt)
    short = node.get("relation", {}).get("relname", "")
    for i, cmd in _cmds(stmt):
        if cmd.get("subtype") != "AT_SetNotNull":
            continue
        col = cmd.get("name", "?")
        if ctx.version_at_least(12) and (short, col) in ctx.proven_not_null:
            continue
        if ctx.version_at_least(18):
            recipe = (f"On PostgreSQL 18: ADD CONSTRAINT {short}_{col}_not_null NOT NULL {col} NOT VALID; "
                      f"then, in a later transaction, VALIDATE CONSTRAINT {short}_{col}_not_null.")
        elif ctx.version_at_least(12):
            recipe = (f"ADD CONSTRAINT {short}_{col}_not_null CHECK ({col} IS NOT NULL) NOT VALID; commit; "
                      f"VALIDATE CONSTRAINT {short}_{col}_not_null; then SET NOT NULL (no scan: the valid CHECK "
                      "proves it) and drop the CHECK.")
        else:
            recipe = ("Before PostgreSQL 12 SET NOT NULL always scans: keep a validated CHECK (col IS NOT NULL) "
                      "NOT VALID constraint instead of NOT NULL.")
        yield Hit(f"SET NOT NULL on {table}.{col} scans the whole table under an ACCESS EXCLUSIVE lock, which "
                  "blocks reads and writes until the scan ends.", recipe, _lock(AE, table), _span(stmt, i))


# ---- constraint rules --------------------------------------------------------------


def _new_constraints(stmt):
    """(index, Constraint body, via) for constraints added by ALTER TABLE, also inline in ADD COLUMN."""
    for i, cmd in _cmds(stmt):
        if cmd.get("subtype") == "AT_AddConstraint":
            yield i, cmd.get("def", {}).get("Constraint", {}), "constraint"
        elif cmd.get("subtype") == "AT_AddColumn":
            coldef = cmd.get("def", {}).get("ColumnDef", {})
            for con in _constraints(coldef):
                yield i, {**con, "_column": coldef.get("colname")}, "column"


def check_not_valid(stmt, ctx):
    node = stmt.node
    short = node.get("relation", {}).get("relname", "")
    table = _table(stmt)
    new_table = ctx.is_new(node.get("relation"))
    validated_here = set()
    for i, cmd in _cmds(stmt):
        if cmd.get("subtype") == "AT_ValidateConstraint":
            name = cmd.get("name")
            validated_here.add(name)
            added = ctx.not_valid.get((short, name))
            if ctx.in_transaction and added is not None and added == ctx.tx_id:
                yield Hit(f"VALIDATE CONSTRAINT {name} runs in the same transaction that added it NOT VALID, so "
                          f"the lock taken by the ADD (ACCESS EXCLUSIVE, or SHARE ROW EXCLUSIVE for a foreign "
                          f"key) is still held during the validating scan: NOT VALID gained nothing.",
                          "Commit after ADD ... NOT VALID and validate in a later transaction (VALIDATE only "
                          "takes SHARE UPDATE EXCLUSIVE).", _lock(AE, table), _span(stmt, i))
    if new_table:
        return
    for i, con, via in _new_constraints(stmt):
        if con.get("contype") != "CONSTR_CHECK" or con.get("skip_validation"):
            continue
        if via == "column":
            # ADD COLUMN ... CHECK: PostgreSQL checks the expression on every existing row (phase 3 scan)
            yield Hit(f"Adding column {con.get('_column')} with an inline CHECK validates every row of {table} "
                      "under the ADD COLUMN's ACCESS EXCLUSIVE lock, which blocks reads and writes during the scan.",
                      "Add the column without the CHECK, then ADD CONSTRAINT ... CHECK (...) NOT VALID, commit, "
                      "and VALIDATE CONSTRAINT in a later transaction.", _lock(AE, table), _span(stmt, i))
            continue
        yield Hit(f"Adding CHECK constraint {con.get('conname') or ''} validates every row of {table} under an "
                  "ACCESS EXCLUSIVE lock, which blocks reads and writes during the scan.".replace("  ", " "),
                  "Add it with NOT VALID (checks new rows only, brief lock), commit, then VALIDATE CONSTRAINT in a "
                  "later transaction (SHARE UPDATE EXCLUSIVE: reads and writes go on).",
                  _lock(AE, table), _span(stmt, i))
    # A NOT VALID added and validated within one statement is covered above via ctx state only for
    # separate statements; handle the single-statement form here.
    for i, con, via in _new_constraints(stmt):
        if con.get("skip_validation") and con.get("conname") in validated_here:
            yield Hit(f"Constraint {con.get('conname')} is added NOT VALID and validated in the same statement: "
                      "the validating scan runs under the ADD's lock.",
                      "Validate in a later transaction.", _lock(AE, table), _span(stmt, i))


def check_foreign_key(stmt, ctx):
    node = stmt.node
    if ctx.is_new(node.get("relation")):
        return
    table = _table(stmt)
    for i, con, via in _new_constraints(stmt):
        if con.get("contype") != "CONSTR_FOREIGN" or con.get("skip_validation"):
            continue
        if via == "column" and not _fills_rows(stmt, i):
            continue  # a new column of NULLs: PostgreSQL skips the validating scan
        ref = relname(con.get("pktable"))
        what = f"column {con['_column']} REFERENCES {ref}" if via == "column" else \
            f"foreign key {con.get('conname') or ''} to {ref}".replace("  ", " ")
        yield Hit(f"Adding {what} scans {table} to validate every row while holding SHARE ROW EXCLUSIVE on "
                  f"both {table} and {ref}, which blocks writes to both tables.",
                  "Add the constraint with NOT VALID, commit, then VALIDATE CONSTRAINT in a later transaction "
                  "(SHARE UPDATE EXCLUSIVE on the table, ROW SHARE on the referenced one)."
                  + (" For a column, add it first, then the constraint NOT VALID." if via == "column" else ""),
                  _lock(SRE, table, ref), _span(stmt, i))


def _fills_rows(stmt, i) -> bool:
    """True when ADD COLUMN gives existing rows a value (a non-NULL default, identity, serial, generated)."""
    coldef = stmt.cmds[i].get("def", {}).get("ColumnDef", {})
    if _type_name(coldef) in SERIAL_TYPES:
        return True
    return any((c.get("contype") == "CONSTR_DEFAULT" and not _is_null_const(c.get("raw_expr")))
               or c.get("contype") in ("CONSTR_GENERATED", "CONSTR_IDENTITY") for c in _constraints(coldef))


def check_unique(stmt, ctx):
    node = stmt.node
    if ctx.is_new(node.get("relation")):
        return
    table = _table(stmt)
    for i, con, via in _new_constraints(stmt):
        if con.get("contype") != "CONSTR_UNIQUE" or con.get("indexname"):
            continue
        yield Hit(f"Adding a UNIQUE constraint builds its index under an ACCESS EXCLUSIVE lock on {table}, "
                  "which blocks reads and writes for the whole build.",
                  "CREATE UNIQUE INDEX CONCURRENTLY name ON table (cols) outside a transaction, then "
                  "ALTER TABLE ... ADD CONSTRAINT name UNIQUE USING INDEX name (brief lock). There is no "
                  "NOT VALID for UNIQUE.", _lock(AE, table), _span(stmt, i))


def check_primary_key(stmt, ctx):
    node = stmt.node
    if ctx.is_new(node.get("relation")):
        return
    table = _table(stmt)
    short = node.get("relation", {}).get("relname", "")
    for i, con, via in _new_constraints(stmt):
        if con.get("contype") != "CONSTR_PRIMARY":
            continue
        if con.get("indexname"):
            known = ctx.index_columns.get(con["indexname"])
            if known is None or short not in ctx.schema:
                continue  # an index or a table from outside the linted files: nullability unknown
            nullable = [c for c in known[1] if (short, c) not in ctx.not_null and (short, c) not in ctx.proven_not_null]
            if nullable:
                yield Hit(f"ADD PRIMARY KEY USING INDEX {con['indexname']} makes {', '.join(nullable)} NOT NULL, "
                          f"which scans the whole of {table} for NULLs under an ACCESS EXCLUSIVE lock (blocks reads "
                          "and writes).",
                          "Make the columns NOT NULL first, without a scan: ADD CONSTRAINT c CHECK (col IS NOT NULL) "
                          "NOT VALID; commit; VALIDATE CONSTRAINT c; SET NOT NULL; then ADD PRIMARY KEY USING INDEX.",
                          _lock(AE, table), _span(stmt, i))
            continue
        yield Hit(f"Adding a primary key builds a unique index (and sets NOT NULL, scanning) under an ACCESS "
                  f"EXCLUSIVE lock on {table}, which blocks reads and writes throughout.",
                  "Make the columns NOT NULL safely first (CHECK ... NOT VALID, VALIDATE, SET NOT NULL), "
                  "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT name PRIMARY KEY USING INDEX name. "
                  "There is no NOT VALID for PRIMARY KEY.", _lock(AE, table), _span(stmt, i))


def check_exclusion(stmt, ctx):
    if ctx.is_new(stmt.node.get("relation")):
        return
    table = _table(stmt)
    for i, con, via in _new_constraints(stmt):
        if con.get("contype") == "CONSTR_EXCLUSION":
            yield Hit(f"Adding an EXCLUDE constraint builds its index and checks every row under an ACCESS EXCLUSIVE "
                      f"lock on {table}, which blocks reads and writes throughout; unlike UNIQUE there is no "
                      "USING INDEX or NOT VALID way around it.",
                      "Create a new table with the constraint, copy the rows in batches (keeping both in sync with "
                      "a trigger), then swap the tables in one short transaction.", _lock(AE, table), _span(stmt, i))


# ---- breaking changes ----------------------------------------------------------------


def check_json_column(stmt, ctx):
    if ctx.is_new(stmt.node.get("relation")):
        return
    table = _table(stmt)
    for i, cmd in _cmds(stmt):
        if cmd.get("subtype") not in ("AT_AddColumn", "AT_AlterColumnType"):
            continue
        coldef = cmd.get("def", {}).get("ColumnDef", {})
        if column_type(coldef)[0] != "json":
            continue
        col = coldef.get("colname") or cmd.get("name", "?")
        yield Hit(f"Column {table}.{col} of type json: json has no equality operator, so queries the running "
                  f"application already makes on {table} with SELECT DISTINCT, UNION or GROUP BY over whole rows fail "
                  "(SQLSTATE 42883, could not identify an equality operator for type json).",
                  "Use jsonb (it has equality and indexes) unless the exact text of the document must be kept.",
                  None, _span(stmt, i))


def check_enum_rename(stmt, ctx):
    node = stmt.node
    if not node.get("oldVal") or not node.get("newVal"):
        return
    name = ".".join(n.get("String", {}).get("sval", "") for n in node.get("typeName") or [])
    yield Hit(f"Renaming value {node['oldVal']!r} of enum {name} to {node['newVal']!r} breaks every running client "
              f"that still writes or compares the old label (SQLSTATE 22P02, invalid input value for enum).",
              "Add the new value (ALTER TYPE ... ADD VALUE), deploy code that writes it, migrate the rows in batches, "
              "and leave the old value unused (PostgreSQL cannot drop an enum value).", None)


def check_rename(kinds_wanted: set[str], what: str):
    def check(stmt, ctx):
        node = stmt.node
        rtype = node.get("renameType")
        if rtype not in kinds_wanted:
            return
        if node.get("relation") and ctx.is_new(node.get("relation")):
            return
        if rtype == "OBJECT_COLUMN":
            old = f"{relname(node.get('relation'))}.{node.get('subname')}"
        elif rtype == "OBJECT_SCHEMA":
            old = node.get("subname", "?")
        else:
            old = relname(node.get("relation"))
        lock = _lock(AE, relname(node.get("relation"))) if node.get("relation") else None
        yield Hit(f"Renaming {what} {old} to {node.get('newname')} breaks every running client that still uses "
                  "the old name (the old application version keeps serving during a deploy).",
                  "Expand and contract: add the new name (a new column kept in sync, or a view for a table), "
                  "deploy code that uses it, then remove the old one in a later migration.", lock)
    return check


def check_drop_column(stmt, ctx):
    if ctx.is_new(stmt.node.get("relation")):
        return
    table = _table(stmt)
    for i, cmd in _cmds(stmt):
        if cmd.get("subtype") == "AT_DropColumn":
            yield Hit(f"Dropping column {table}.{cmd.get('name')} breaks the running version of the application "
                      "if it still reads or writes it, and the data is gone.",
                      "First deploy code that no longer uses the column (and ignores it in ORMs), then drop it in "
                      "a later migration.", _lock(AE, table), _span(stmt, i))


def check_drop_table(stmt, ctx):
    node = stmt.node
    if node.get("removeType") != "OBJECT_TABLE":
        return
    names = [".".join(p.get("String", {}).get("sval", "") for p in o.get("List", {}).get("items") or [])
             for o in node.get("objects") or []]
    kept = [n for n in names if not ctx.is_new(n)]
    if kept:
        yield Hit(f"Dropping table {', '.join(kept)} loses its data and breaks clients that still use it.",
                  "Stop using the table in a deploy first (and take a backup), then drop it in a later migration.",
                  _lock(AE, *kept))


def check_drop_database(stmt, ctx):
    yield Hit(f"Dropping database {stmt.node.get('dbname')} loses all of its data.",
              "Do it by hand, after a backup, never in a migration.", None)


def check_truncate_cascade(stmt, ctx):
    if stmt.node.get("behavior") != "DROP_CASCADE":
        return
    tables = [relname(r.get("RangeVar")) for r in stmt.node.get("relations") or []]
    yield Hit(f"TRUNCATE ... CASCADE also empties every table with a foreign key to {', '.join(tables)}, "
              "recursively, under ACCESS EXCLUSIVE locks on all of them.",
              "List the tables to truncate explicitly.", _lock(AE, *tables, "every table referencing them"))


def check_partition_detach(stmt, ctx):
    if ctx.is_new(stmt.node.get("relation")):
        return
    table = _table(stmt)
    for i, cmd in _cmds(stmt):
        if cmd.get("subtype") != "AT_DetachPartition":
            continue
        part = cmd.get("def", {}).get("PartitionCmd", {})
        if part.get("concurrent"):
            continue
        help_ = ("Use DETACH PARTITION ... CONCURRENTLY (PostgreSQL 14+, outside a transaction, not with a "
                 "default partition)." if ctx.version_at_least(14) else
                 "PostgreSQL before 14 has no DETACH CONCURRENTLY: run it in a quiet moment with a short "
                 "lock_timeout, or upgrade.")
        yield Hit(f"Detaching partition {relname(part.get('name'))} takes ACCESS EXCLUSIVE on {table} and the "
                  "partition, which blocks reads and writes on both.", help_,
                  _lock(AE, table, relname(part.get("name"))), _span(stmt, i))


# ---- rewrites (ours) ---------------------------------------------------------------


def check_table_rewrite(stmt, ctx):
    kind, node = stmt.kind, stmt.node
    help_ = ("Use pg_repack (online), or schedule a maintenance window; for SET TABLESPACE / SET LOGGED create "
             "a new table and copy in batches.")
    if kind == "VacuumStmt":
        if "full" in enabled_options(node, "options"):  # VACUUM (FULL false) is a plain VACUUM
            tables = [relname(r.get("VacuumRelation", {}).get("relation")) for r in node.get("rels") or []]
            yield Hit(f"VACUUM FULL rewrites {', '.join(tables) or 'every table'} under an ACCESS EXCLUSIVE lock, "
                      "which blocks reads and writes for the whole rewrite.", help_,
                      _lock(AE, *(tables or ["every table"])))
    elif kind == "ClusterStmt":
        table = relname(node.get("relation")) if node.get("relation") else "every clustered table"
        if node.get("relation") and ctx.is_new(node.get("relation")):
            return
        yield Hit(f"CLUSTER rewrites {table} in index order under an ACCESS EXCLUSIVE lock, which blocks reads "
                  "and writes for the whole rewrite.", help_, _lock(AE, table))
    elif kind == "AlterTableStmt":
        if ctx.is_new(node.get("relation")):
            return
        table = _table(stmt)
        labels = {"AT_SetTableSpace": "SET TABLESPACE", "AT_SetLogged": "SET LOGGED",
                  "AT_SetUnLogged": "SET UNLOGGED", "AT_SetAccessMethod": "SET ACCESS METHOD"}
        for i, cmd in _cmds(stmt):
            label = labels.get(cmd.get("subtype"))
            if label:
                yield Hit(f"{label} rewrites {table} under an ACCESS EXCLUSIVE lock, which blocks reads and writes "
                          "for the whole copy.", help_, _lock(AE, table), _span(stmt, i))


# ---- session settings and robustness -----------------------------------------------


def check_lock_timeout(stmt, ctx):
    if ctx.has_lock_timeout or "require-lock-timeout" in ctx.once:
        return
    effect = statement_effect(stmt, ctx.pg_version)
    if effect.lock not in (SHARE, SRE, "EXCLUSIVE", AE):
        return
    targets = [t for t in effect.tables if not ctx.is_new(t)]
    if not targets:
        return
    ctx.once.add("require-lock-timeout")
    yield Hit(f"This statement queues for {effect.lock} with no lock_timeout set: while it waits behind a "
              f"long query, every new query on {', '.join(targets)} queues behind it ({blocks(effect.lock)}).",
              "Start the migration with SET lock_timeout = '2s' (and retry the migration on SQLSTATE 55P03).",
              effect.describe())


def _robust_targets(stmt, ctx):
    kind, node = stmt.kind, stmt.node
    if kind == "CreateStmt" and not node.get("if_not_exists"):
        if node.get("relation", {}).get("relpersistence") == "t":
            return  # a temporary table dies with the failed session: the rerun creates it again
        yield None, "CREATE TABLE without IF NOT EXISTS"
    elif kind == "IndexStmt" and not node.get("if_not_exists"):
        if not node.get("idxname"):
            return  # IF NOT EXISTS needs a name; PostgreSQL picks a free name for an unnamed index
        yield None, "CREATE INDEX without IF NOT EXISTS"
    elif kind == "DropStmt" and not node.get("missing_ok"):
        yield None, "DROP without IF EXISTS"
    elif kind == "AlterTableStmt":
        short = node.get("relation", {}).get("relname", "")
        dropped = {cmd.get("name") for _, cmd in _cmds(stmt)
                   if cmd.get("subtype") == "AT_DropConstraint" and cmd.get("missing_ok")}
        dropped |= {name for table, name in ctx.dropped_constraints if table == short}
        for i, cmd in _cmds(stmt):
            subtype = cmd.get("subtype")
            if subtype == "AT_AddColumn" and not cmd.get("missing_ok"):
                yield i, "ADD COLUMN without IF NOT EXISTS"
            elif subtype in ("AT_DropColumn", "AT_DropConstraint") and not cmd.get("missing_ok"):
                yield i, "DROP without IF EXISTS"
            elif subtype == "AT_AddConstraint":
                name = cmd.get("def", {}).get("Constraint", {}).get("conname")
                if name not in dropped:
                    yield i, "ADD CONSTRAINT without a DROP CONSTRAINT IF EXISTS before it"


def check_robust(stmt, ctx):
    if ctx.in_transaction or ctx.has_transaction_statements:
        return
    for i, what in _robust_targets(stmt, ctx):
        yield Hit(f"{what}: this file runs without a transaction, so if it fails part way the rerun fails "
                  "on this statement.",
                  "Use IF [NOT] EXISTS (or DROP CONSTRAINT IF EXISTS first), or wrap the file in a transaction.",
                  None, _span(stmt, i) if i is not None else None)


DML = {"UpdateStmt": "UPDATE", "DeleteStmt": "DELETE", "InsertStmt": "INSERT", "CopyStmt": "COPY",
       "MergeStmt": "MERGE", "CreateTableAsStmt": "CREATE TABLE AS", "RefreshMatViewStmt": "REFRESH",
       "DoStmt": "DO block", "CallStmt": "CALL"}


def check_work_after_ae(stmt, ctx):
    if not ctx.in_transaction or not ctx.access_exclusive or stmt.kind == "TransactionStmt":
        return
    key = f"work-after-access-exclusive:{ctx.tx_id}"
    if key in ctx.once:
        return
    what = DML.get(stmt.kind)
    if stmt.kind == "SelectStmt" and (stmt.node.get("fromClause") or stmt.node.get("intoClause")):
        what = "a SELECT that reads tables"
    if what is None:
        effect = statement_effect(stmt, ctx.pg_version)
        others = [t for t in effect.tables if " " not in t and not ctx.is_new(t) and t not in ctx.access_exclusive]
        if effect.lock not in (SHARE, SRE, "EXCLUSIVE", AE) or not others:
            return
        what = f"a statement locking {', '.join(others)} ({effect.lock})"
    ctx.once.add(key)
    held = ", ".join(f"{t} (since line {line})" for t, line in ctx.access_exclusive.items())
    yield Hit(f"This transaction holds ACCESS EXCLUSIVE on {held}, so reads and writes on it are blocked until "
              f"COMMIT, and now runs {what}: the table stays blocked for as long as this takes (or waits).",
              "Commit right after each ACCESS EXCLUSIVE statement (short transactions), and run data changes in "
              "their own transactions, in batches.", "ACCESS EXCLUSIVE on " + ", ".join(ctx.access_exclusive))


def check_nesting(stmt, ctx):
    tkind = stmt.node.get("kind", "")
    if tkind in ("TRANS_STMT_BEGIN", "TRANS_STMT_START") and ctx.in_transaction:
        yield Hit("BEGIN inside a transaction that is already open: PostgreSQL only warns, and the first COMMIT "
                  "ends both." if ctx.explicit_transaction else
                  "BEGIN in a file that the migration runner already wraps in a transaction "
                  "(--assume-in-transaction): the file's COMMIT ends the runner's transaction early.",
                  "Remove the BEGIN/COMMIT, or mark the file non-transactional for the runner.", None)
    elif tkind in ("TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK") and ctx.in_transaction \
            and not ctx.explicit_transaction:
        yield Hit("COMMIT in a file that the migration runner wraps in a transaction: the statements after it "
                  "run outside any transaction.", "Remove it, or mark the file non-transactional.", None)


def check_uncommitted(stmt, ctx):
    if ctx.explicit_transaction:
        yield Hit("The file opens a transaction with BEGIN and never commits it: the runner's session ends "
                  "with the changes rolled back (or holds its locks until it does).",
                  "End the file with COMMIT.", None)


RULES: list[Rule] = [
    Rule("require-concurrent-index-creation", "CREATE INDEX without CONCURRENTLY on an existing table",
         check_index_creation, ("IndexStmt",), why="The build holds a lock that blocks writes for its whole duration.",
         lock="SHARE on the table (blocks INSERT/UPDATE/DELETE)",
         recipe="CREATE INDEX CONCURRENTLY IF NOT EXISTS ... in its own non-transactional step; then check "
                "pg_index.indisvalid and drop/retry an invalid index."),
    Rule("require-concurrent-index-deletion", "DROP INDEX without CONCURRENTLY", check_index_deletion,
         ("DropStmt",), why="Dropping takes ACCESS EXCLUSIVE on the table, queued behind every running query.",
         lock="ACCESS EXCLUSIVE on the table (brief, but queues everything behind it)",
         recipe="DROP INDEX CONCURRENTLY IF EXISTS ... (one per statement, not in a transaction)."),
    Rule("require-concurrent-reindex", "REINDEX without CONCURRENTLY", check_reindex, ("ReindexStmt",),
         why="REINDEX blocks writes to the table and any query that would use the index.",
         lock="SHARE on the table, ACCESS EXCLUSIVE on the index",
         recipe="REINDEX (CONCURRENTLY) ... / REINDEX ... CONCURRENTLY (PostgreSQL 12+), not in a transaction."),
    Rule("ban-concurrent-index-creation-in-transaction",
         "A statement that cannot run in a transaction block, inside one", check_no_transaction,
         why="CREATE/DROP/REINDEX ... CONCURRENTLY, DETACH ... CONCURRENTLY, VACUUM, CREATE/DROP DATABASE and "
             "(before PostgreSQL 12) ALTER TYPE ... ADD VALUE fail with SQLSTATE 25001 inside BEGIN ... COMMIT "
             "or a runner's wrapper transaction: the migration fails at deploy time.",
         lock="none: the statement errors out",
         recipe="Put each such statement in its own non-transactional step (`compose-atomic lint --plan`)."),
    Rule("adding-field-with-default", "ADD COLUMN that rewrites the table (volatile default, serial, "
         "identity, STORED generated; any default before PG 11)", check_field_with_default, ("AlterTableStmt:AT_AddColumn",),
         why="PostgreSQL 11+ stores a constant default in the catalog, but a volatile one (random(), "
             "gen_random_uuid(), clock_timestamp(), nextval() of serial/identity) and STORED generated columns "
             "are computed row by row: the whole table is rewritten.",
         lock="ACCESS EXCLUSIVE for the whole rewrite (blocks reads and writes)",
         recipe="ADD COLUMN nullable without default; ALTER COLUMN SET DEFAULT; backfill in batches; then add "
                "NOT NULL safely if needed."),
    Rule("adding-required-field", "ADD COLUMN NOT NULL without a default", check_required_field,
         ("AlterTableStmt:AT_AddColumn",), why="Fails on any non-empty table; old code inserting rows without it fails too.",
         lock="ACCESS EXCLUSIVE (brief; the statement errors on a non-empty table)",
         recipe="Add it nullable (or with a constant DEFAULT), backfill, then SET NOT NULL through a CHECK."),
    Rule("changing-column-type", "ALTER COLUMN TYPE", check_column_type, ("AlterTableStmt:AT_AlterColumnType",),
         why="Most type changes rewrite the table and rebuild its indexes; only binary-coercible ones do not. "
             "The old type comes from earlier migrations in the same run; when it is unknown the change is "
             "reported, and --trace measures it.",
         lock="ACCESS EXCLUSIVE for the rewrite (blocks reads and writes)",
         recipe="New column + sync trigger + batched backfill + switch + drop the old column."),
    Rule("adding-not-nullable-field", "SET NOT NULL without a validated CHECK proving it", check_set_not_null,
         ("AlterTableStmt:AT_SetNotNull",), why="SET NOT NULL scans the whole table under ACCESS EXCLUSIVE; on PostgreSQL 12+ "
                                  "a valid CHECK (col IS NOT NULL) lets it skip the scan.",
         lock="ACCESS EXCLUSIVE during a full scan",
         recipe="ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID; commit; VALIDATE CONSTRAINT c; "
                "SET NOT NULL; DROP CONSTRAINT c. (PostgreSQL 18: ADD CONSTRAINT c NOT NULL col NOT VALID.)"),
    Rule("constraint-missing-not-valid", "CHECK without NOT VALID; NOT VALID validated in the same transaction",
         check_not_valid, ("AlterTableStmt:AT_AddConstraint", "AlterTableStmt:AT_ValidateConstraint",
                          "AlterTableStmt:AT_AddColumn"),
         why="Adding a CHECK validates all rows under ACCESS EXCLUSIVE. Validating in the same transaction as "
             "the ADD keeps the ADD's lock through the scan. (squawk also asks for NOT VALID on UNIQUE and "
             "PRIMARY KEY, where PostgreSQL has no NOT VALID; we do not.)",
         lock="ACCESS EXCLUSIVE during the scan",
         recipe="ADD CONSTRAINT ... NOT VALID; COMMIT; ALTER TABLE ... VALIDATE CONSTRAINT ... (SHARE UPDATE "
                "EXCLUSIVE)."),
    Rule("adding-foreign-key-constraint", "FOREIGN KEY / REFERENCES without NOT VALID", check_foreign_key,
         ("AlterTableStmt:AT_AddConstraint", "AlterTableStmt:AT_AddColumn"), why="Validation scans the table while blocking writes on both tables.",
         lock="SHARE ROW EXCLUSIVE on the table and on the referenced table",
         recipe="ADD CONSTRAINT fk FOREIGN KEY ... NOT VALID; COMMIT; VALIDATE CONSTRAINT fk."),
    Rule("disallowed-unique-constraint", "ADD UNIQUE (or a UNIQUE column) on an existing table", check_unique,
         ("AlterTableStmt:AT_AddConstraint", "AlterTableStmt:AT_AddColumn"), why="The unique index is built under ACCESS EXCLUSIVE.",
         lock="ACCESS EXCLUSIVE for the index build",
         recipe="CREATE UNIQUE INDEX CONCURRENTLY i ...; ALTER TABLE ... ADD CONSTRAINT c UNIQUE USING INDEX i."),
    Rule("adding-serial-primary-key-field", "ADD PRIMARY KEY without USING INDEX", check_primary_key,
         ("AlterTableStmt:AT_AddConstraint", "AlterTableStmt:AT_AddColumn"), why="The primary key's index is built, and its columns scanned for NULLs, under "
                                  "ACCESS EXCLUSIVE.",
         lock="ACCESS EXCLUSIVE for the build and the scan",
         recipe="SET NOT NULL via the CHECK recipe; CREATE UNIQUE INDEX CONCURRENTLY i; ALTER TABLE ... ADD "
                "CONSTRAINT pk PRIMARY KEY USING INDEX i."),
    Rule("adding-exclusion-constraint", "ADD EXCLUDE on an existing table", check_exclusion,
         ("AlterTableStmt:AT_AddConstraint",), squawk=False,
         why="The exclusion index is built and every row checked under ACCESS EXCLUSIVE; PostgreSQL offers "
             "no online path (no CONCURRENTLY, no USING INDEX, no NOT VALID).",
         lock="ACCESS EXCLUSIVE for the build", recipe="New table with the constraint + batched copy + swap."),
    Rule("renaming-column", "RENAME COLUMN", check_rename({"OBJECT_COLUMN"}, "column"), ("RenameStmt",),
         why="The old version of the application keeps running during a deploy and still uses the old name.",
         lock="ACCESS EXCLUSIVE (brief)", recipe="Expand/contract: add, sync, switch, drop."),
    Rule("renaming-table", "RENAME a table or schema",
         check_rename({"OBJECT_TABLE", "OBJECT_SCHEMA"}, "table"), ("RenameStmt",),
         why="Running clients still use the old name.", lock="ACCESS EXCLUSIVE (brief)",
         recipe="Rename, and create a view with the old name until every client moved; or expand/contract."),
    Rule("renaming-enum-value", "ALTER TYPE ... RENAME VALUE", check_enum_rename, ("AlterEnumStmt",),
         squawk=False,
         why="RENAME VALUE changes the label in place (pg_enum): the version still serving writes and compares the "
             "old label, which now fails with SQLSTATE 22P02.",
         lock="ACCESS EXCLUSIVE on the type (brief)",
         recipe="ADD VALUE the new label, switch the code, update rows in batches, stop using the old label."),
    Rule("adding-json-column", "A json (not jsonb) column on an existing table", check_json_column,
         ("AlterTableStmt:AT_AddColumn", "AlterTableStmt:AT_AlterColumnType"), severity="warning", squawk=False,
         why="json has no equality operator: SELECT DISTINCT, UNION and GROUP BY over rows of the table fail with "
             "SQLSTATE 42883 once it has a json column (strong_migrations' rule).",
         lock="-", recipe="Use jsonb."),
    Rule("ban-drop-column", "DROP COLUMN", check_drop_column, ("AlterTableStmt:AT_DropColumn",),
         why="The running application may still read or write the column; the data is lost.",
         lock="ACCESS EXCLUSIVE (brief)", recipe="Stop using the column in a deploy, then drop it later."),
    Rule("ban-drop-table", "DROP TABLE", check_drop_table, ("DropStmt",),
         why="Data loss, and clients break.", lock="ACCESS EXCLUSIVE",
         recipe="Stop using the table, back it up, drop it in a later migration."),
    Rule("ban-drop-database", "DROP DATABASE", check_drop_database, ("DropdbStmt",),
         why="Loses every table of the database.", lock="exclusive access to the database",
         recipe="Never in a migration."),
    Rule("ban-truncate-cascade", "TRUNCATE ... CASCADE", check_truncate_cascade, ("TruncateStmt",),
         why="Silently empties every referencing table too.", lock="ACCESS EXCLUSIVE on every table involved",
         recipe="Name each table to truncate."),
    Rule("require-concurrent-partition-detach", "DETACH PARTITION without CONCURRENTLY", check_partition_detach,
         ("AlterTableStmt:AT_DetachPartition",), why="Blocks reads and writes on the parent and the partition.",
         lock="ACCESS EXCLUSIVE on the parent and the partition",
         recipe="ALTER TABLE parent DETACH PARTITION p CONCURRENTLY (PostgreSQL 14+, not in a transaction)."),
    Rule("require-lock-timeout", "A blocking lock requested with no lock_timeout set", check_lock_timeout,
         severity="warning",
         why="A DDL statement waiting for its lock blocks every query that arrives after it: a brief ALTER "
             "behind one long SELECT stalls the application.",
         lock="whatever the statement takes, plus the queue behind it",
         recipe="SET lock_timeout = '2s' at the top of the migration; retry on SQLSTATE 55P03."),
    Rule("prefer-robust-stmts", "Non-idempotent DDL in a file that runs without a transaction", check_robust,
         ("CreateStmt", "IndexStmt", "DropStmt", "AlterTableStmt"), severity="warning",
         why="Without a transaction a failure leaves the file half applied; the rerun must not fail on what "
             "already ran.", lock="-",
         recipe="IF NOT EXISTS / IF EXISTS, DROP CONSTRAINT IF EXISTS before ADD CONSTRAINT, or a transaction."),
    Rule("table-rewrite", "VACUUM FULL, CLUSTER, SET TABLESPACE, SET LOGGED/UNLOGGED, SET ACCESS METHOD",
         check_table_rewrite, ("VacuumStmt", "ClusterStmt", "AlterTableStmt:AT_SetTableSpace",
                              "AlterTableStmt:AT_SetLogged", "AlterTableStmt:AT_SetUnLogged",
                              "AlterTableStmt:AT_SetAccessMethod"), aliases=("prefer-repack",),
         squawk=False, why="Each copies the whole table while holding ACCESS EXCLUSIVE.",
         lock="ACCESS EXCLUSIVE for the whole copy",
         recipe="pg_repack (or REPACK CONCURRENTLY where available); a new table filled in batches."),
    Rule("work-after-access-exclusive", "More work in a transaction that already holds ACCESS EXCLUSIVE",
         check_work_after_ae, severity="warning", squawk=False,
         why="Locks are kept until COMMIT: a brief ALTER followed by a data backfill or another table's lock in the "
             "same transaction blocks the first table for the whole transaction (eugene's E4).",
         lock="ACCESS EXCLUSIVE kept until COMMIT",
         recipe="One short transaction per ACCESS EXCLUSIVE change; data changes in their own batched transactions."),
    Rule("transaction-nesting", "BEGIN inside a transaction, or COMMIT inside the runner's", check_nesting,
         ("TransactionStmt",), severity="warning",
         why="Nested BEGIN is only a warning in PostgreSQL; the first COMMIT ends the outer transaction.",
         lock="-", recipe="One transaction per file, owned by the file or by the runner, not both."),
    Rule("ban-uncommitted-transaction", "BEGIN without COMMIT", check_uncommitted, (END_OF_FILE,),
         severity="warning", why="An open transaction at the end of a file is rolled back or left holding "
                                 "locks.", lock="-", recipe="End with COMMIT."),
    Rule("syntax-error", "PostgreSQL's grammar rejects the statement", None,
         why="The statement will fail at deploy time; only token-level checks ran on it.", lock="-",
         recipe="Fix the syntax (or check --pg-version)."),
    Rule("invalid-character", "A NUL byte in the file", None, squawk=False,
         why="PostgreSQL rejects a NUL byte in SQL text (SQLSTATE 22021), and psql and libpq-based runners read "
             "C strings, which end at it: what follows may never run. The linter reads past it.", lock="-",
         recipe="Remove the byte; re-save the file as UTF-8."),
    Rule("not-analysed", "SQL made at run time (DO EXECUTE of a computed string, psql \\gexec, \\i)", None,
         severity="info", squawk=False,
         why="The linter sees text, not what a query will return: dynamic SQL's locks and rewrites are unknown. "
             "DO blocks in PL/pgSQL are analysed (every statement of the body, EXECUTE of string literals); "
             "this info finding names what was left out, so silence is not taken for safety.", lock="unknown",
         recipe="Write the statements out as plain SQL, or run the migration with --trace."),
    Rule("trace-failed", "--trace: the statement failed on a real PostgreSQL", None, squawk=False,
         why="The migration would fail at deploy time (missing object, 25001 outside a transaction, 55P03 "
             "lock timeout...).", lock="-", recipe="Fix the statement, or give --setup the schema it expects."),
    Rule("rule-failed", "A rule raised an exception on a statement", None, severity="warning", squawk=False,
         why="A bug in a rule (often a plugin's) must not stop the other rules or a deploy.", lock="-",
         recipe="Report it to the rule's author; exclude the rule meanwhile."),
    Rule("unused-ignore", "An ignore comment names an unknown rule", None, severity="warning",
         why="A typo in an ignore silently ignores nothing.", lock="-", recipe="Use a listed rule id."),
]


# The PostgreSQL behaviour each rule encodes, and the test that shows it (on a real server where it
# can be observed: tests/test_lint_postgres.py checks relfilenode, scans, pg_locks and SQLSTATEs).
_PG = "tests/test_lint_postgres.py::"
POSTGRES = {
    "require-concurrent-index-creation":
        "CREATE INDEX takes SHARE on the table until the build ends; CONCURRENTLY takes SHARE UPDATE EXCLUSIVE "
        "and lets writes go on. " + _PG + "test_the_stated_lock_is_the_lock_postgresql_takes",
    "require-concurrent-index-deletion":
        "DROP INDEX takes ACCESS EXCLUSIVE on the index's table. " + _PG + "test_the_stated_lock_is_the_lock_postgresql_takes",
    "require-concurrent-reindex":
        "REINDEX takes SHARE on the table and ACCESS EXCLUSIVE on the indexes; `(CONCURRENTLY false)` is the "
        "plain REINDEX; system catalogs cannot be reindexed concurrently (0A000), so REINDEX SYSTEM is not told "
        "to. " + _PG + "test_reindex_concurrently_false_is_a_blocking_reindex, test_reindex_system_is_not_told_to_use_concurrently",
    "ban-concurrent-index-creation-in-transaction":
        "PreventInTransactionBlock: SQLSTATE 25001 inside BEGIN, after COMMIT AND CHAIN (a new transaction "
        "starts at once) and inside a DO block (\"cannot be executed from a function\"). "
        + _PG + "test_commit_and_chain_then_create_index_concurrently_fails; tests/test_lint_trace.py",
    "adding-field-with-default":
        "PostgreSQL 11+ stores a non-volatile default in pg_attribute (attmissingval): no rewrite; a volatile "
        "one, identity, serial or a STORED generated column rewrites (new relfilenode). tests/test_lint_trace.py",
    "adding-required-field":
        "ADD COLUMN ... NOT NULL without a default fails with 23502 on a table that has rows.",
    "changing-column-type":
        "ALTER COLUMN TYPE rewrites the table and its indexes unless the change is binary coercible with no "
        "tighter limit: varchar -> text, a longer varchar, wider numeric at the same scale, a higher "
        "timestamp/time precision, cidr -> inet. " + _PG + "test_widening_precision_or_length_is_no_rewrite",
    "adding-not-nullable-field":
        "SET NOT NULL scans the table under ACCESS EXCLUSIVE; from 12 a valid CHECK (col IS NOT NULL) lets it "
        "skip the scan. " + _PG + "test_the_stated_lock_is_the_lock_postgresql_takes",
    "constraint-missing-not-valid":
        "ADD CONSTRAINT CHECK, and a CHECK inline in ADD COLUMN, are checked against every row under ACCESS "
        "EXCLUSIVE; NOT VALID skips the scan and VALIDATE takes only SHARE UPDATE EXCLUSIVE. "
        + _PG + "test_inline_check_on_a_new_column_scans_the_table, test_validate_constraint_takes_share_update_exclusive",
    "adding-foreign-key-constraint":
        "ADD FOREIGN KEY takes SHARE ROW EXCLUSIVE on both tables and scans to validate; a new column with no "
        "default is all NULL and is not scanned. " + _PG + "test_add_column_references_without_default_does_not_scan",
    "disallowed-unique-constraint":
        "ADD UNIQUE builds its index under ACCESS EXCLUSIVE; USING INDEX adopts an index built CONCURRENTLY.",
    "adding-serial-primary-key-field":
        "ADD PRIMARY KEY builds its index and sets NOT NULL on its columns, a scan; USING INDEX still scans "
        "nullable columns. " + _PG + "test_primary_key_using_index_on_a_nullable_column_scans",
    "adding-exclusion-constraint":
        "EXCLUDE has no NOT VALID and no USING INDEX: the index is built and every row checked under ACCESS "
        "EXCLUSIVE.",
    "renaming-column": "RENAME takes ACCESS EXCLUSIVE briefly; the old name stops resolving at once (42703).",
    "renaming-table": "RENAME takes ACCESS EXCLUSIVE briefly; the old name stops resolving at once (42P01).",
    "renaming-enum-value":
        "RENAME VALUE updates pg_enum in place: the old label fails with 22P02. "
        + _PG + "test_renaming_an_enum_value_breaks_the_old_label",
    "adding-json-column":
        "json has no equality operator: SELECT DISTINCT * fails with 42883. "
        + _PG + "test_a_json_column_breaks_select_distinct",
    "ban-drop-column": "DROP COLUMN is catalog-only (brief ACCESS EXCLUSIVE); queries naming the column fail (42703).",
    "ban-drop-table": "DROP TABLE takes ACCESS EXCLUSIVE and removes the data files.",
    "ban-drop-database": "DROP DATABASE removes the database; it cannot run in a transaction block.",
    "ban-truncate-cascade": "TRUNCATE ... CASCADE also truncates every table with a foreign key to it, recursively.",
    "require-concurrent-partition-detach":
        "DETACH PARTITION takes ACCESS EXCLUSIVE on the parent; CONCURRENTLY (14+) takes SHARE UPDATE EXCLUSIVE.",
    "require-lock-timeout":
        "A lock request waits in the lock queue and every later conflicting request waits behind it; "
        "lock_timeout ends the wait with 55P03. " + _PG + "test_a_select_while_holding_access_exclusive_blocks_readers",
    "prefer-robust-stmts":
        "Outside a transaction each statement commits on its own: a rerun meets what already ran (42P07, "
        "42701). Temporary tables die with the session; an unnamed index gets a fresh name. "
        + _PG + "test_prefer_robust_stmts_false_positives",
    "table-rewrite":
        "VACUUM FULL, CLUSTER, SET TABLESPACE, SET LOGGED/UNLOGGED and SET ACCESS METHOD write a new relfilenode "
        "under ACCESS EXCLUSIVE; VACUUM (FULL false) is a plain VACUUM. "
        + _PG + "test_vacuum_full_false_is_a_plain_vacuum",
    "work-after-access-exclusive":
        "Locks are held until the transaction ends: a SELECT, a backfill or another lock after an ACCESS "
        "EXCLUSIVE keeps the table blocked meanwhile. " + _PG + "test_a_select_while_holding_access_exclusive_blocks_readers",
    "transaction-nesting": "BEGIN inside a transaction only warns (25001 WARNING); the first COMMIT ends it.",
    "ban-uncommitted-transaction": "A session that ends with an open transaction rolls it back.",
    "syntax-error": "The server's grammar (libpg_query is PostgreSQL's parser) rejects the statement: 42601.",
    "invalid-character":
        "0x00 is not valid in UTF-8 text for PostgreSQL (22021); libpq sends C strings. tests/test_lint_reader.py::"
        + "test_a_nul_byte_is_reported_and_the_rest_is_still_linted",
    "not-analysed": "EXECUTE and \\gexec run SQL built at run time. tests/test_lint_reader.py::"
        + "test_what_a_do_block_computes_at_run_time_is_an_info_finding",
    "trace-failed": "The statement failed on the server during --trace (its SQLSTATE is in the finding).",
    "rule-failed": "None: a linter problem.",
    "unused-ignore": "None: a linter problem.",
}


def _with_postgres(rules: list[Rule]) -> list[Rule]:
    from dataclasses import replace

    return [replace(rule, postgres=POSTGRES.get(rule.id, rule.postgres)) for rule in rules]


RULES = _with_postgres(RULES)
