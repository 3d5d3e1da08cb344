"""Turn a SQL file into statements with exact positions.

PostgreSQL's own grammar (libpg_query, through pglast) is the main parser: it is
what tells a ``CONCURRENTLY`` keyword from the same word in a comment, a string or
a dollar-quoted function body, and it separates the actions of an ``ALTER TABLE``.
We ask libpg_query for its JSON parse tree rather than pglast's Python node
objects: it carries the same information and is four times faster to build, which
matters on large files (``bench/lint``).

When the grammar rejects the file, sqlparse's lexer splits it at top-level
semicolons (it keeps string, comment and dollar-quote boundaries) and each piece
is parsed on its own, so one bad statement does not hide the findings of the
others; a piece the grammar still rejects keeps only its sqlparse tokens, for the
token-level fallback checks.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

__all__ = ["Statement", "SourceFile", "parse_file"]


@dataclass(eq=False)
class Statement:
    """One SQL statement of a file.

    ``kind`` is the parse-tree node name (``AlterTableStmt``, ``IndexStmt``...) and
    ``node`` its body as libpg_query's JSON (defaults omitted); both are empty when
    the grammar rejected the statement, and ``error`` says why.
    """

    index: int
    start: int
    end: int
    text: str
    kind: str = ""
    node: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    source: "SourceFile | None" = field(default=None, repr=False)

    @cached_property
    def ast(self):
        """pglast's Python node for this statement (built on demand, for plugins and --plan)."""
        import pglast

        if self.error:
            return None
        return pglast.parse_sql(self.text)[0].stmt

    @cached_property
    def cmds(self) -> list[dict]:
        """The AlterTableCmd bodies of an ALTER TABLE (empty otherwise)."""
        return [item.get("AlterTableCmd", {}) for item in self.node.get("cmds") or ()]

    @cached_property
    def action_spans(self) -> list[tuple[int, int]]:
        """File offsets of each action of an ALTER TABLE, in the order of ``node['cmds']``.

        Found with libpg_query's scanner: the actions are the comma-separated parts
        at parenthesis depth 0 after the table name. Falls back to the whole
        statement for each action when the count does not match.
        """
        cmds = self.node.get("cmds") or []
        whole = [(self.start, self.end)] * len(cmds)
        if self.kind != "AlterTableStmt" or not cmds:
            return whole
        from pglast import parser

        try:
            tokens = parser.scan(self.text)
        except Exception:  # noqa: BLE001 - positions are a nicety, never a failure
            return whole
        tokens = [t for t in tokens if t.name not in ("SQL_COMMENT", "C_COMMENT")]
        i = 1  # after ALTER
        skip = {"TABLE", "INDEX", "VIEW", "MATERIALIZED", "FOREIGN", "SEQUENCE", "IF_P", "EXISTS",
                "ONLY"}
        while i < len(tokens) and tokens[i].name in skip:
            i += 1
        # the (possibly qualified) name, then an optional '*'
        i += 1
        while i + 1 < len(tokens) and tokens[i].name == "ASCII_46":
            i += 2
        if i < len(tokens) and tokens[i].name == "ASCII_42":
            i += 1
        spans: list[tuple[int, int]] = []
        depth = 0
        begin = None
        last_end = None
        for tok in tokens[i:]:
            if tok.name == "ASCII_59":
                break
            if begin is None:
                begin = tok.start
            if tok.name == "ASCII_40":
                depth += 1
            elif tok.name == "ASCII_41":
                depth -= 1
            elif tok.name == "ASCII_44" and depth == 0:
                spans.append((begin, last_end))
                begin = None
                continue
            last_end = tok.end + 1
        if begin is not None:
            spans.append((begin, last_end))
        if len(spans) != len(cmds):
            return whole
        return [(self.start + a, self.start + b) for a, b in spans]


class SourceFile:
    """A file's text, its statements and a line index for 1-based positions."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        self.statements: list[Statement] = []
        self.degraded = False
        self._line_starts: list[int] | None = None

    @property
    def line_starts(self) -> list[int]:
        if self._line_starts is None:
            starts = [0]
            find = self.text.find
            pos = find("\n")
            while pos != -1:
                starts.append(pos + 1)
                pos = find("\n", pos + 1)
            self._line_starts = starts
        return self._line_starts

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset."""
        starts = self.line_starts
        line = bisect.bisect_right(starts, offset) - 1
        return line + 1, offset - starts[line] + 1


def _parse_json(text: str) -> list[dict]:
    """libpg_query's JSON tree. The cyclic GC is paused while the many small dicts are
    built: they hold no cycles, and gen-2 collections triggered by the allocation burst
    otherwise cost more than the parse itself on large files."""
    import gc

    from pglast import parser

    enabled = gc.isenabled()
    gc.disable()
    try:
        return json.loads(parser.parse_sql_json(text)).get("stmts", [])
    finally:
        if enabled:
            gc.enable()


def _statements_from_tree(source: SourceFile, text: str, base: int, raw: list[dict],
                          first_index: int) -> list[Statement]:
    """Build statements from libpg_query's (byte-offset) locations."""
    out: list[Statement] = []
    if text.isascii():
        for n, item in enumerate(raw):
            loc = item.get("stmt_location", 0)
            length = item.get("stmt_len") or (len(text) - loc)
            body = text[loc:loc + length]
            stripped = body.rstrip()
            (kind, node), = item["stmt"].items()
            out.append(Statement(first_index + n, base + loc, base + loc + len(stripped), stripped,
                                 kind, node, source=source))
        return out
    data = text.encode("utf-8")
    char_pos = 0
    byte_pos = 0
    for n, item in enumerate(raw):
        loc = item.get("stmt_location", 0)
        length = item.get("stmt_len") or (len(data) - loc)
        char_pos += len(data[byte_pos:loc].decode("utf-8", "replace"))
        byte_pos = loc
        body = data[loc:loc + length].decode("utf-8", "replace")
        stripped = body.rstrip()
        (kind, node), = item["stmt"].items()
        out.append(Statement(first_index + n, base + char_pos, base + char_pos + len(stripped),
                             stripped, kind, node, source=source))
    return out


def split_with_sqlparse(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of top-level statements, from sqlparse's lexer.

    The lexer knows strings, quoted identifiers, comments and dollar quotes; we
    only cut at semicolons outside parentheses and ``BEGIN ... END`` bodies it
    reports as single tokens anyway.
    """
    from sqlparse import lexer, tokens as T

    spans: list[tuple[int, int]] = []
    pos = 0
    start = None
    for ttype, value in lexer.tokenize(text):
        if start is None and ttype not in T.Whitespace and ttype not in T.Comment \
                and ttype is not T.Newline:
            start = pos
        pos += len(value)
        if ttype is T.Punctuation and value == ";" and start is not None:
            spans.append((start, pos))
            start = None
    if start is not None and text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def parse_file(path: str, text: str) -> SourceFile:
    """Parse ``text`` into a SourceFile; never raises on bad SQL."""
    from pglast.parser import ParseError

    source = SourceFile(path, text)
    try:
        source.statements = _statements_from_tree(source, text, 0, _parse_json(text), 0)
        return source
    except ParseError:
        pass
    source.degraded = True
    for start, end in split_with_sqlparse(text):
        piece = text[start:end]
        try:
            raw = _parse_json(piece)
        except ParseError as exc:
            source.statements.append(Statement(len(source.statements), start, start + len(piece.rstrip()),
                                               piece.rstrip(), error=str(exc), source=source))
            continue
        source.statements.extend(_statements_from_tree(source, piece, start, raw, len(source.statements)))
    return source
