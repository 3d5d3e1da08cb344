"""Run the rules over a file, statement by statement, simulating what PostgreSQL sees.

The context tracks what a migration runner cannot forget: whether a transaction
is open (explicit ``BEGIN``/``COMMIT`` blocks, or the runner's own wrapper with
--assume-in-transaction), which tables and indexes the file created (operations on
them are harmless: nobody else can be using them), constraints added ``NOT VALID``
and in which transaction, and whether ``lock_timeout`` is set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields as dataclass_fields
from operator import attrgetter
from typing import Iterable

from .effects import AE, statement_effect
from .ignores import find_ignores
from .knowledge import Knowledge, Recorder, replay
from .model import SQUAWK_ONLY_RULES, Finding, Hit, Rule
from .parser import SourceFile, Statement, parse_file
from .pgfacts import LOCK_ORDER, binary_compatible, column_type, relname  # noqa: F401 - re-exported

DEFAULT_PG_VERSION = (15, 0)  # squawk's default too


@dataclass
class LintConfig:
    """What to check and how hard: from the command line, x-atomic.lint, or the deploy gate."""

    pg_version: tuple[int, int] = DEFAULT_PG_VERSION
    exclude: frozenset[str] = frozenset()
    severity: dict[str, str] = field(default_factory=dict)
    assume_in_transaction: bool = False


def parse_pg_version(value) -> tuple[int, int]:
    """``15``, ``"15"``, ``"15.0"``, ``"9.6"`` -> (major, minor). Raises ValueError."""
    text = str(value).strip()
    parts = text.split(".")
    if not parts[0].isdigit() or len(parts) > 3 or any(not p.isdigit() for p in parts[1:]):
        raise ValueError(f"not a PostgreSQL version: {value!r} (expected e.g. 15 or 9.6)")
    major = int(parts[0])
    minor = int(parts[1]) if len(parts) > 1 else 0
    if not 9 <= major <= 30:
        raise ValueError(f"not a PostgreSQL version: {value!r} (9 to 30)")
    return major, minor


# The statement kinds LintContext.after() learns from.
_AFTER_KINDS = frozenset({"TransactionStmt", "AlterTableStmt", "RenameStmt", "TruncateStmt", "ClusterStmt", "LockStmt",
                          "ReindexStmt", "DropStmt", "CreateStmt", "CreateTableAsStmt", "IndexStmt",
                          "VariableSetStmt"})


class LintContext:
    """The state of the simulated session while the rules run over a file."""

    def __init__(self, source: SourceFile, config: LintConfig, assume_in_transaction: bool) -> None:
        self.source = source
        self.config = config
        self.pg_version = config.pg_version
        self.assume_in_transaction = assume_in_transaction
        self.in_transaction = assume_in_transaction
        self.explicit_transaction = False
        self.tx_id = 0
        self.created_tables: set[str] = set()
        self.created_indexes: set[str] = set()
        self.not_valid: dict[tuple[str, str], int] = {}
        self.use(Knowledge())  # the Linter's, shared across files
        self.lock_timeout = False
        self.lock_timeout_local = False
        self.once: set[str] = set()  # for rules that report once per file
        self.access_exclusive: dict[str, int] = {}  # existing table -> line where the open transaction locked it
        self.has_transaction_statements = assume_in_transaction
        self.in_function = False  # inside a DO block's body
        self.dropped_constraints: set[tuple[str, str]] = set()  # DROP CONSTRAINT IF EXISTS seen in the file

    def use(self, knowledge: Knowledge) -> None:
        """Read and extend ``knowledge`` (what earlier files told): the rules read its parts as
        ``ctx.schema``, ``ctx.not_null``, ``ctx.proven_not_null`` and ``ctx.index_columns``."""
        self.knowledge = knowledge
        self.schema = knowledge.schema
        self.not_null = knowledge.not_null
        self.proven_not_null = knowledge.proven_not_null
        self.not_null_checks = knowledge.not_null_checks
        self.index_columns = knowledge.index_columns

    # ---- questions the rules ask -------------------------------------------------

    def is_new(self, rangevar_or_name) -> bool:
        """True when the file created this table earlier (so nobody else uses it yet)."""
        if isinstance(rangevar_or_name, dict):
            name = rangevar_or_name.get("relname")
        else:
            name = str(rangevar_or_name).rsplit(".", 1)[-1]
        return name in self.created_tables

    def version_at_least(self, major: int, minor: int = 0) -> bool:
        return self.pg_version >= (major, minor)

    # ---- state changes after each statement ------------------------------------

    def after(self, stmt: Statement) -> None:
        kind = stmt.kind
        if kind not in _AFTER_KINDS:  # nothing to remember: do not build the tree
            if not self.in_transaction:
                self.tx_id += 1
            return
        node = stmt.node
        if kind == "TransactionStmt":
            self.has_transaction_statements = True
            tkind = node.get("kind", "")
            if tkind in ("TRANS_STMT_BEGIN", "TRANS_STMT_START"):
                if not self.in_transaction:
                    self.tx_id += 1
                self.in_transaction = True
                self.explicit_transaction = True
            elif tkind in ("TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK", "TRANS_STMT_PREPARE"):
                self.access_exclusive.clear()
                chained = bool(node.get("chain")) and self.in_transaction
                # COMMIT AND CHAIN starts a new transaction at once (same characteristics)
                self.in_transaction = chained
                self.explicit_transaction = chained and self.explicit_transaction
                self.lock_timeout_local = False
                self.tx_id += 1
            return
        if self.in_transaction and kind in ("AlterTableStmt", "RenameStmt", "TruncateStmt", "ClusterStmt",
                                            "LockStmt", "ReindexStmt", "DropStmt"):
            effect = statement_effect(stmt, self.pg_version)
            if effect.lock == AE:
                line = self.source.position(stmt.start)[0]
                for table in effect.tables:
                    if " " not in table and not self.is_new(table):
                        self.access_exclusive.setdefault(table, line)
        knowledge = self.knowledge
        if kind == "CreateStmt":
            name = node.get("relation", {}).get("relname")
            self.created_tables.add(name)
            not_null = []
            for elt in node.get("tableElts") or []:
                if "ColumnDef" in elt and _declares_not_null(elt["ColumnDef"]):
                    not_null.append(elt["ColumnDef"].get("colname"))
                con = elt.get("Constraint", {})
                if con.get("contype") == "CONSTR_PRIMARY":
                    not_null.extend(key.get("String", {}).get("sval") for key in con.get("keys") or [])
            knowledge.create_table(name, {e["ColumnDef"].get("colname"): column_type(e["ColumnDef"])
                                          for e in node.get("tableElts") or [] if "ColumnDef" in e}, not_null)
        elif kind == "CreateTableAsStmt":
            rel = (node.get("into") or {}).get("IntoClause", node.get("into", {})).get("rel", {})
            self.created_tables.add(rel.get("relname"))
        elif kind == "IndexStmt" and node.get("idxname"):
            self.created_indexes.add(node["idxname"])
            knowledge.create_index(
                node["idxname"], node.get("relation", {}).get("relname", ""),
                [p.get("IndexElem", {}).get("name") or "(expression)" for p in node.get("indexParams") or []])
        elif kind == "VariableSetStmt" and node.get("name") == "lock_timeout":
            value = _set_value(node)
            on = node.get("kind") == "VAR_SET_VALUE" and value not in ("0", "")
            if node.get("is_local"):
                self.lock_timeout_local = on and self.in_transaction
            else:
                self.lock_timeout = on
        elif kind == "AlterTableStmt":
            table = node.get("relation", {}).get("relname", "")
            for cmd in node.get("cmds", []):
                self._after_cmd(table, cmd.get("AlterTableCmd", {}))
        elif kind == "RenameStmt" and node.get("renameType") == "OBJECT_TABLE":
            if self.is_new(node.get("relation")):
                self.created_tables.add(node.get("newname"))
            knowledge.rename_table(node.get("relation", {}).get("relname"), node.get("newname"))
        elif kind == "RenameStmt" and node.get("renameType") == "OBJECT_COLUMN":
            knowledge.rename_column(node.get("relation", {}).get("relname"), node.get("subname"),
                                    node.get("newname"))
        elif kind == "DropStmt" and node.get("removeType") == "OBJECT_TABLE":
            for obj in node.get("objects") or []:
                items = obj.get("List", {}).get("items") or []
                if items:
                    knowledge.drop_table(items[-1].get("String", {}).get("sval"))
        if not self.in_transaction:
            self.tx_id += 1

    def _after_cmd(self, table: str, cmd: dict) -> None:
        knowledge = self.knowledge
        subtype = cmd.get("subtype")
        if subtype == "AT_AddColumn":
            coldef = cmd.get("def", {}).get("ColumnDef", {})
            if _declares_not_null(coldef):
                knowledge.set_not_null(table, coldef.get("colname"), True)
        elif subtype in ("AT_SetNotNull", "AT_DropNotNull"):
            knowledge.set_not_null(table, cmd.get("name"), subtype == "AT_SetNotNull")
        elif subtype == "AT_DropConstraint" and cmd.get("missing_ok"):
            self.dropped_constraints.add((table, cmd.get("name")))
        if subtype in ("AT_AddColumn", "AT_AlterColumnType"):
            coldef = cmd.get("def", {}).get("ColumnDef", {})
            knowledge.set_column(table, coldef.get("colname") or cmd.get("name"), column_type(coldef))
        elif subtype == "AT_DropColumn":
            knowledge.drop_column(table, cmd.get("name"))
        if subtype == "AT_AddConstraint":
            con = cmd.get("def", {}).get("Constraint", {})
            name = con.get("conname")
            if con.get("contype") == "CONSTR_CHECK":
                column = _is_not_null_check(con.get("raw_expr"))
                if column:
                    knowledge.add_not_null_check(name, table, column, not con.get("skip_validation"))
            if name and con.get("skip_validation"):
                self.not_valid[(table, name)] = self.tx_id
        elif subtype == "AT_ValidateConstraint":
            knowledge.validate_check(cmd.get("name"))

    @property
    def has_lock_timeout(self) -> bool:
        return self.lock_timeout or self.lock_timeout_local


def _declares_not_null(coldef: dict) -> bool:
    return bool(coldef.get("is_not_null")) or any(
        c.get("Constraint", {}).get("contype") in ("CONSTR_NOTNULL", "CONSTR_PRIMARY")
        for c in coldef.get("constraints") or [])


def _set_value(node: dict) -> str:
    args = node.get("args") or []
    if not args:
        return ""
    const = args[0].get("A_Const", {})
    for key in ("sval", "ival", "fval"):
        if key in const:
            inner = const[key]
            return str(next(iter(inner.values()), "0")) if inner else "0"
    return "0" if "ival" in const or not const else "?"


def _is_not_null_check(expr: dict | None) -> str | None:
    """The column of ``CHECK (col IS NOT NULL)``, else None."""
    test = (expr or {}).get("NullTest")
    if not test or test.get("nulltesttype") != "IS_NOT_NULL":
        return None
    fields = test.get("arg", {}).get("ColumnRef", {}).get("fields", [])
    if len(fields) == 1 and "String" in fields[0]:
        return fields[0]["String"]["sval"]
    return None


END_OF_FILE = "EndOfFile"
# A statement that starts with one of these is a TransactionStmt (BEGIN ATOMIC only occurs inside one).
TRANSACTION_WORD = re.compile(r"(BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT)\b", re.I)


class Linter:
    """Rules resolved against a config: call ``lint_text`` for each file."""

    def __init__(self, rules: dict[str, Rule], config: LintConfig) -> None:
        self.rules = rules
        self.config = config
        self.aliases = {alias: r.id for r in rules.values() for alias in r.aliases}
        self.knowledge = Knowledge()  # what the files linted so far (in order) tell the next ones
        self.by_kind: dict[str, list[Rule]] = {}
        self.every: list[Rule] = []
        self._rules_for: dict[str | tuple, tuple[Rule, ...]] = {}  # by kind (ALTER TABLE: and actions)
        for rule in rules.values():
            if self.severity(rule.id) == "off" or rule.check is None:
                continue
            if rule.kinds:
                for kind in rule.kinds:
                    self.by_kind.setdefault(kind, []).append(rule)
            else:
                self.every.append(rule)

    def resolve(self, name: str) -> str | None:
        name = name.strip().lower()
        if name in self.rules:
            return name
        return self.aliases.get(name)

    def severity(self, rule_id: str) -> str:
        if rule_id in self.config.exclude:
            return "off"
        override = self.config.severity.get(rule_id)
        if override:
            return override
        rule = self.rules.get(rule_id)
        return rule.severity if rule else "error"

    def lint_text(self, path: str, text: str) -> list[Finding]:
        """Parse and lint one file. The cyclic GC is paused meanwhile: the run allocates
        many small acyclic objects, and the collections they trigger cost more than the
        rules on large files (bench/lint)."""
        import gc

        enabled = gc.isenabled()
        gc.disable()
        try:
            return self.lint_source(parse_file(path, text))
        finally:
            if enabled:
                gc.enable()

    def lint_texts(self, texts: dict[str, str]) -> list[Finding]:
        """Lint ``texts`` (path -> text) in order. A large set (a migration history) is split in two
        halves by size when the process may use two CPUs: a forked child lints the second half
        and sends its findings back through a pipe, so that the files take the time of one half
        (bench/lint: 342 files, 609 KB). Anything wrong with the child: its half is linted here.

        The child does not know what the first half told (``knowledge``): it records what its
        files changed and read there, and a file whose reads the first half would have answered
        otherwise is linted again here, with the knowledge it would have had."""
        paths = list(texts)
        cut = _halfway(paths, texts)
        if cut is None:
            return [f for path in paths for f in self.lint_text(path, texts[path])]
        import marshal
        import os

        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # the child: lint the second half, send it, leave without Python's exit path
            code = 1
            try:
                os.close(read_end)
                self.knowledge = recorder = Recorder()
                found = [([_fields(f) for f in self.lint_text(path, texts[path])], recorder.take())
                         for path in paths[cut:]]
                with os.fdopen(write_end, "wb") as pipe:
                    marshal.dump(found, pipe)  # ValueError on a value it cannot write: exit 1
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        findings = [f for path in paths[:cut] for f in self.lint_text(path, texts[path])]
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        try:  # read before reaping the child: it has left by the time this is done
            second = [([Finding(*f) for f in found], events) for found, events in marshal.loads(data)]
        except Exception:  # noqa: BLE001 - a child that died half way: do its half here
            second = None
        if os.waitpid(child, 0)[1] != 0:
            second = None
        if second is None or len(second) != len(paths) - cut:
            return findings + [f for path in paths[cut:] for f in self.lint_text(path, texts[path])]
        # Which of the child's files saw what this process knows at their turn? The changes do not
        # depend on what is known, so replaying them gives that knowledge file by file.
        trial = self.knowledge.copy()
        agrees = [replay(trial, events) for _, events in second]
        if all(agrees):
            self.knowledge = trial
            return findings + [f for found, _ in second for f in found]
        for path, (found, events), agree in zip(paths[cut:], second, agrees):
            if agree:
                replay(self.knowledge, events)
                findings.extend(found)
            else:
                findings.extend(self.lint_text(path, texts[path]))
        return findings

    def lint_source(self, source: SourceFile) -> list[Finding]:
        ignores = find_ignores(source)
        read = source.read
        assume = self.config.assume_in_transaction
        if read is not None and read.transaction is not None:
            assume = read.transaction  # a runner marker in the file says how it runs
        assume = assume and not ignores.disable_assume_in_transaction
        ctx = LintContext(source, self.config, assume)
        ctx.use(self.knowledge)
        ctx.has_transaction_statements = assume or any(TRANSACTION_WORD.match(s.text) for s in source.statements)
        raw: list[tuple[str, Hit, Statement]] = []
        if read is not None:
            for note in read.notes:
                at = Statement(-1, note.start, note.end, source.original[note.start:note.end], "", {},
                               source=source)
                raw.append((note.rule, Hit(note.message, note.help), at))
        for stmt in source.statements:
            self._check(stmt, ctx, raw)
            if stmt.kind == "DoStmt":
                self._check_do(stmt, ctx, raw)
            ctx.after(stmt)
            stmt.release()
        end = Statement(len(source.statements), len(source.text.rstrip()), len(source.text.rstrip()), "",
                        END_OF_FILE, {}, source=source)
        for rule in self.by_kind.get(END_OF_FILE, ()):
            for hit in rule.check(end, ctx):
                raw.append((rule.id, hit, end))
        findings = [self._finding(source, rule_id, hit, stmt) for rule_id, hit, stmt in raw]
        findings = [f for f in findings if f.severity != "off"]
        findings = self._apply_ignores(source, ignores, findings)
        findings.sort(key=lambda f: (f.start, f.end))
        return findings

    def _check(self, stmt: Statement, ctx: LintContext, raw: list) -> None:
        """Run the rules that apply to one statement, appending (rule id, hit, stmt) to ``raw``."""
        if stmt.error is not None:
            raw.append(("syntax-error", Hit(f"PostgreSQL's grammar rejects this statement: {stmt.error}",
                                           "Fix the syntax; the checks below it only saw its tokens."),
                        stmt))
            from .fallback import token_hits

            raw.extend((rule, hit, stmt) for rule, hit in token_hits(stmt, ctx))
            return
        kind = stmt.kind
        key = (kind, *dict.fromkeys(cmd.get("subtype") for cmd in stmt.cmds)) if kind == "AlterTableStmt" else kind
        rules = self._rules_for.get(key)
        if rules is None:
            rules = self._rules_for[key] = self._rules_of(key)
        for rule in rules:
            try:
                for hit in rule.check(stmt, ctx):
                    raw.append((rule.id, hit, stmt))
            except Exception as exc:  # noqa: BLE001 - one broken (plugin) rule must not hide the others
                raw.append(("rule-failed", Hit(f"Rule {rule.id} failed on this statement: "
                                               f"{type(exc).__name__}: {exc}",
                                               "Report it to the rule's author; the other rules ran."), stmt))

    def _rules_of(self, key: str | tuple) -> tuple[Rule, ...]:
        """The rules for a statement kind, or for an ALTER TABLE given as (kind, subtype...): the
        kind's, then each action's in the order of the statement's actions (each rule once), then
        those of every statement."""
        by_kind = self.by_kind
        if isinstance(key, str):
            return (*by_kind.get(key, ()), *self.every)
        kind, *subtypes = key
        wanted = {id(rule): rule for rule in by_kind.get(kind, ())}
        for subtype in subtypes:
            for rule in by_kind.get(f"{kind}:{subtype}", ()):
                wanted.setdefault(id(rule), rule)
        return (*wanted.values(), *self.every)

    def _check_do(self, stmt: Statement, ctx: LintContext, raw: list) -> None:
        """The statements of a DO block run as one function call: inside a transaction (the
        open one, or their own), where CONCURRENTLY and VACUUM fail with SQLSTATE 25001."""
        from .plpgsql import do_statements

        inner, skipped = do_statements(stmt, ctx.source)
        if skipped:
            raw.append(("not-analysed", Hit(
                "Part of this DO block is not analysed: " + "; ".join(skipped) + ". Its locks and rewrites "
                "are unknown to the linter.",
                "Write the statements out as plain SQL where you can, or check the block with --trace."), stmt))
        if not inner:
            return
        was_in, was_explicit = ctx.in_transaction, ctx.explicit_transaction
        if not was_in:
            ctx.tx_id += 1
        ctx.in_transaction, ctx.in_function = True, True
        try:
            for sub in inner:
                if sub.kind == "TransactionStmt":
                    continue
                self._check(sub, ctx, raw)
                ctx.after(sub)
                sub.release()
        finally:
            ctx.in_transaction, ctx.explicit_transaction, ctx.in_function = was_in, was_explicit, False
            if not was_in:
                ctx.access_exclusive.clear()
                ctx.lock_timeout_local = False

    def _finding(self, source: SourceFile, rule_id: str, hit: Hit, stmt: Statement) -> Finding:
        start, end = hit.span or (stmt.start, stmt.end)
        line, column = source.position(start)
        end_line, end_column = source.position(max(start, end))
        stmt_line = source.position(stmt.start)[0] if stmt.text else line
        text = stmt.text
        if stmt.text and source.original is not source.text and 0 <= stmt.index:
            text = source.original[stmt.start:stmt.end]  # as written (placeholders, meta-commands)
        return Finding(source.path, line, column, end_line, end_column, rule_id, self.severity(rule_id),
                       hit.message, hit.help, hit.lock, text, start, end, stmt_line)

    def _apply_ignores(self, source: SourceFile, ignores, findings: list[Finding]) -> list[Finding]:
        if not ignores.directives:
            return findings
        extra: list[Finding] = []
        file_all = False
        file_rules: set[str] = set()
        lines: dict[int, set[str] | None] = {}
        for d in ignores.directives:
            known: set[str] = set()
            for name in d.rules:
                resolved = self.resolve(name)
                if resolved is None and name.strip().lower() in SQUAWK_ONLY_RULES:
                    continue
                if resolved is None:
                    if self.severity("unused-ignore") != "off":
                        line, col = source.position(d.start)
                        end_line, end_col = source.position(d.end)
                        extra.append(Finding(
                            source.path, line, col, end_line, end_col, "unused-ignore",
                            self.severity("unused-ignore"), f"unknown rule {name!r} in an ignore comment",
                            "Use a rule id from `compose-atomic lint --list-rules` (squawk's ids work too).",
                            None, source.text[d.start:d.end], d.start, d.end, line))
                else:
                    known.add(resolved)
            if d.whole_file:
                if not d.rules:
                    file_all = True
                file_rules |= known
            else:
                for line in (d.line, d.line + 1):
                    if not d.rules:
                        lines[line] = None
                    elif lines.get(line, set()) is not None:
                        lines[line] = lines.get(line, set()) | known

        def ignored(f: Finding) -> bool:
            if file_all or f.rule in file_rules:
                return True
            for line in {f.line, f.stmt_line}:
                if line in lines and (lines[line] is None or f.rule in lines[line]):
                    return True
            return False

        return [f for f in findings if not ignored(f)] + extra


def lint_files(paths: Iterable[str], rules: dict[str, Rule], config: LintConfig) -> list[Finding]:
    import gc

    texts = {}
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as fh:
            texts[path] = fh.read()
    enabled = gc.isenabled()
    gc.disable()  # for the whole run, not file by file: collections between files cost as much
    try:
        return Linter(rules, config).lint_texts(texts)
    finally:
        if enabled:
            gc.enable()


#: Finding's fields as a tuple, in order: what the forked child sends with marshal, which takes
#: only built-in types and writes and reads them about three times as fast as pickle (bench/lint).
_fields = attrgetter(*(f.name for f in dataclass_fields(Finding)))

#: A set of files worth a second process (bench/lint): the fork and the transfer cost a few milliseconds.
PARALLEL_MIN_FILES, PARALLEL_MIN_BYTES = 8, 128 * 1024
#: The share of the text this process lints: a little more than half, as the child also sends its
#: findings back (about 5 ms for half of bench/lint's history, which the parent otherwise waits).
FIRST_SHARE = 0.52


def _halfway(paths: list[str], texts: dict[str, str]) -> int | None:
    """Where to split ``paths`` so that the first part holds FIRST_SHARE of the text; None: do not
    split (a small set, one CPU, other threads running, or no fork on this system)."""
    import os
    import threading

    total = sum(len(texts[p]) for p in paths)
    if len(paths) < PARALLEL_MIN_FILES or total < PARALLEL_MIN_BYTES or not hasattr(os, "fork"):
        return None
    if threading.active_count() > 1:  # a fork copies one thread: another's locks would stay held
        return None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cpus = os.cpu_count() or 1
    if cpus < 2:
        return None
    seen = 0
    for index, path in enumerate(paths):
        seen += len(texts[path])
        if seen >= total * FIRST_SHARE:
            return max(1, min(index + 1, len(paths) - 1))
    return None
