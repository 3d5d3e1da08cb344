"""The data the linter passes around: rules, what a rule reports, findings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

SEVERITIES = ("error", "warning", "info", "off")

# squawk rules compose-atomic does not implement: accepted (and ignored) in ignore comments and
# --exclude, so a team switching from squawk keeps its comments without unused-ignore noise.
SQUAWK_ONLY_RULES = frozenset("""
prefer-bigint-over-int prefer-bigint-over-smallint prefer-identity prefer-text-field prefer-timestamptz
ban-char-field require-statement-timeout require-timeout-settings ban-drop-not-null ban-drop-constraint
identifier-too-long ban-create-domain-with-constraint ban-alter-domain-with-add-constraint
require-enum-value-ordering require-table-schema ban-duplicate-column-assignments
""".split())


@dataclass(frozen=True)
class Hit:
    """What a rule's check yields: the problem, how to do it safely, the lock it takes.

    ``span`` is a (start, end) pair of character offsets in the file; the default is
    the whole statement (rules use ``stmt.action_spans[i]`` for one ALTER TABLE action).
    """

    message: str
    help: str | None = None
    lock: str | None = None
    span: tuple[int, int] | None = None


@dataclass(frozen=True)
class Rule:
    """A lint rule. Register instances through the ``register_lint_rules(register)`` hook.

    ``check(stmt, ctx)`` is called for each statement whose ``kind`` is in ``kinds``
    (every statement when ``kinds`` is empty) and yields ``Hit`` objects. For ALTER TABLE a
    kind may name the action too, ``"AlterTableStmt:AT_AddColumn"``: the rule then runs only
    on statements with such an action (once per statement). ``ctx`` is
    the LintContext: pg_version, whether a transaction is open, objects created
    earlier in the file. ``why``, ``lock``, ``recipe`` and ``postgres`` feed docs/lint.md
    (compose_atomic/lint/reference.py) and the text output.
    """

    id: str
    summary: str
    check: Callable[[Any, Any], Iterable[Hit]] | None
    kinds: tuple[str, ...] = ()
    severity: str = "error"
    why: str = ""
    lock: str = ""
    recipe: str = ""
    aliases: tuple[str, ...] = ()
    squawk: bool = True
    postgres: str = ""  # the PostgreSQL behaviour the rule encodes (docs/lint.md), and the test proving it


@dataclass
class Finding:
    """One reported problem. ``line`` and ``column`` are 1-based (squawk's JSON is 0-based);
    ``end_column`` is the column just after the last character, as in SARIF."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int
    rule: str
    severity: str
    message: str
    help: str | None = None
    lock: str | None = None
    statement: str = ""
    start: int = field(default=0, repr=False)
    end: int = field(default=0, repr=False)
    stmt_line: int = field(default=0, repr=False)

    def as_json(self) -> dict[str, Any]:
        data = {"file": self.file, "line": self.line, "column": self.column, "end_line": self.end_line,
                "end_column": self.end_column, "rule": self.rule, "severity": self.severity,
                "message": self.message, "help": self.help, "lock": self.lock, "statement": self.statement}
        trace = getattr(self, "trace", None)
        if trace is not None:
            data["trace"] = trace
        return data
