"""Ignore comments, compatible with squawk's.

- ``-- squawk-ignore rule-a, rule-b`` (or ``/* ... */``): the comment's line and the next.
- ``-- squawk-ignore-file [rules]``: the whole file; with no rule names, every rule.
- ``-- compose-atomic-ignore`` and ``-- compose-atomic-ignore-file``: the same forms.
- Text after a second ``--`` is the reason and is ignored.
- ``-- squawk-disable-assume-in-transaction`` turns --assume-in-transaction off for the file.

Comments are found with libpg_query's scanner, so a directive inside a string or a
dollar-quoted body is not one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DIRECTIVE = re.compile(r"^\s*(squawk|compose-atomic)-ignore(-file)?\b(.*)$", re.S | re.I)
NO_ASSUME = re.compile(r"^\s*(squawk|compose-atomic)-disable-assume-in-transaction\b", re.I)


@dataclass
class IgnoreDirective:
    line: int            # 1-based line of the comment
    rules: list[str]     # empty: every rule
    whole_file: bool
    start: int           # offsets, to report an unknown rule
    end: int


@dataclass
class Ignores:
    directives: list[IgnoreDirective] = field(default_factory=list)
    disable_assume_in_transaction: bool = False


def _comments(text: str):
    from pglast import parser

    try:
        tokens = parser.scan(text)
    except Exception:  # noqa: BLE001 - unterminated quote: fall back to sqlparse's lexer
        from sqlparse import lexer, tokens as T

        pos = 0
        for ttype, value in lexer.tokenize(text):
            if ttype in T.Comment:
                yield pos, pos + len(value), value
            pos += len(value)
        return
    for tok in tokens:
        if tok.name in ("SQL_COMMENT", "C_COMMENT"):
            yield tok.start, tok.end + 1, text[tok.start:tok.end + 1]


def find_ignores(source) -> Ignores:
    """Collect the directives of a SourceFile (cheap when there are none)."""
    found = Ignores()
    lowered = source.text.lower()
    if "ignore" not in lowered and "disable-assume" not in lowered:
        return found
    for start, end, comment in _comments(source.text):
        body = comment[2:-2] if comment.startswith("/*") else comment[2:]
        if NO_ASSUME.match(body):
            found.disable_assume_in_transaction = True
            continue
        match = DIRECTIVE.match(body)
        if not match:
            continue
        rest = match.group(3).split("--", 1)[0]
        rules = [r.strip() for r in rest.replace(",", " ").split() if r.strip()]
        line, _ = source.position(start)
        found.directives.append(IgnoreDirective(line, rules, bool(match.group(2)), start, end))
    return found
