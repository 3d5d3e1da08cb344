"""Token-level checks for statements PostgreSQL's grammar rejected.

A statement that does not parse (a typo, or syntax newer than the bundled grammar)
still gets the few checks that are safe on sqlparse's tokens, so a ``CREATE INDEX``
next to a syntax error is not silently accepted. Comments and strings are tokens of
their own, so their words never count.
"""

from __future__ import annotations

from .model import Hit


def _words(text: str) -> list[str]:
    from sqlparse import lexer, tokens as T

    return [value.upper() for ttype, value in lexer.tokenize(text)
            if ttype in T.Keyword or ttype in T.Name or ttype is T.Punctuation]


def token_hits(stmt, ctx):
    words = _words(stmt.text)
    note = " (token-level check: the statement did not parse)"
    if len(words) >= 2 and words[0] == "CREATE" and "INDEX" in words[1:3] and "CONCURRENTLY" not in words:
        yield "require-concurrent-index-creation", Hit(
            "CREATE INDEX without CONCURRENTLY blocks writes for the whole build" + note,
            "Use CREATE INDEX CONCURRENTLY outside a transaction block.", "SHARE on the table")
    if len(words) >= 2 and words[0] == "DROP" and words[1] == "INDEX" and "CONCURRENTLY" not in words:
        yield "require-concurrent-index-deletion", Hit(
            "DROP INDEX without CONCURRENTLY takes ACCESS EXCLUSIVE on the table" + note,
            "Use DROP INDEX CONCURRENTLY.", "ACCESS EXCLUSIVE on the table")
    if "CONCURRENTLY" in words and ctx.in_transaction:
        yield "ban-concurrent-index-creation-in-transaction", Hit(
            "A CONCURRENTLY statement cannot run inside a transaction block" + note,
            "Move it to its own non-transactional step.", None)
    if words[:2] == ["DROP", "TABLE"]:
        yield "ban-drop-table", Hit("Dropping a table loses its data" + note,
                                    "Stop using it first, then drop it later.", "ACCESS EXCLUSIVE")
