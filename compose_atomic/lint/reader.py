"""Read a migration file the way its runner does, before PostgreSQL's grammar sees it.

What a runner strips or interprets never reaches the server, so it must not reach the
parser either; what it sends must. ``read_sql`` returns the text the server would be
sent, **with every character at the same offset** (removed parts become spaces, newlines
stay), so positions in findings are positions in the file:

- psql meta-commands (``\\set``, ``\\if``/``\\elif``/``\\else``/``\\endif``, ``\\echo``, ``\\i``,
  ``\\connect``...) are blanked up to the end of their line. ``\\g``, ``\\gx``, ``\\gset``,
  ``\\gexec``, ``\\gdesc``, ``\\crosstabview`` and ``\\watch`` also *send* the query typed so far,
  as a semicolon does, so they end the statement (the next one is never swallowed).
  ``\\;`` is a semicolon that psql does not send on its own: the server still sees two statements.
- ``COPY ... FROM stdin`` (and psql's ``\\copy ... from stdin``) is followed by data rows up to
  a line ``\\.``: the rows are data, blanked.
- A UTF-8 byte-order mark is blanked; a NUL byte is blanked and reported (PostgreSQL rejects it
  in text, SQLSTATE 22021, and C-string based tools stop reading there).
- Template placeholders keep the statement readable: psql's ``:var`` ``:'var'`` ``:"var"``
  (outside quotes, as psql substitutes them) become ``var`` ``'var'`` ``"var"``; ``${var}``
  and ``{{ expr }}`` become an identifier made of the name (``__var_``); ``{% ... %}`` and
  ``{# ... #}`` are blanked.
- Runner markers set the transaction mode (``transaction``) and the section that runs
  "up"; see ``MARKERS`` and docs/lint.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["ReadResult", "read_sql", "MARKERS"]

# psql meta-commands that send the query buffer, like a semicolon.
SENDS = frozenset({"g", "gx", "gset", "gexec", "gdesc", "crosstabview", "watch"})

# (regex on a line comment's body, what it means). transaction: True the runner wraps the
# file in a transaction, False it does not; "down" starts a section that runs on rollback
# only, "up" ends it.
MARKERS: list[tuple[str, re.Pattern, dict]] = [
    ("postgres-migrations", re.compile(r"postgres-migrations\s+disable-transaction\b", re.I),
     {"transaction": False}),
    ("goose", re.compile(r"\+goose\s+NO\s+TRANSACTION\b", re.I), {"transaction": False, "final": True}),
    ("goose", re.compile(r"\+goose\s+Up\b", re.I), {"transaction": True, "section": "up"}),
    ("goose", re.compile(r"\+goose\s+Down\b", re.I), {"section": "down"}),
    ("dbmate", re.compile(r"migrate:up\b.*\btransaction:\s*false\b", re.I),
     {"transaction": False, "final": True, "section": "up"}),
    ("dbmate", re.compile(r"migrate:up\b", re.I), {"transaction": True, "section": "up"}),
    ("dbmate", re.compile(r"migrate:down\b", re.I), {"section": "down"}),
    ("sql-migrate", re.compile(r"\+migrate\s+Up\s+notransaction\b", re.I),
     {"transaction": False, "final": True, "section": "up"}),
    ("sql-migrate", re.compile(r"\+migrate\s+Up\b", re.I), {"transaction": True, "section": "up"}),
    ("sql-migrate", re.compile(r"\+migrate\s+Down\b", re.I), {"section": "down"}),
    ("graphile-migrate", re.compile(r"^!\s*no-transaction\b", re.I), {"transaction": False, "final": True}),
]
_MARKER_HINT = re.compile(r"postgres-migrations|\+goose|migrate:|\+migrate|--!", re.I)
_LINE_COMMENT = re.compile(r"^[ \t]*--([^\n]*)", re.M)

# Anything that needs the full scan. Without any of these, the file is sent as it is.
_NEEDS_SCAN = re.compile(r"\\|(?<![:\w\]\)]):['\"A-Za-z_]|\$\{|\{\{|\{%|\{#|\x00|\ufeff|\bcopy\b", re.I)
_TOKEN = re.compile(r"""(?P<e>(?<![\w$])[eE]')|(?P<sq>')|(?P<dq>")|(?P<lc>--)|(?P<bc>/\*)
    |(?P<dollar>(?<![\w$])\$(?:[A-Za-z_\x80-\uffff][\w\x80-\uffff]*)?\$)|(?P<bs>\\)
    |(?P<var>(?<![:\w\]\)]):(?:'[A-Za-z_]\w*'|"[A-Za-z_]\w*"|[A-Za-z_]\w*))
    |(?P<tpl>\$\{[^}\n]*\}|\{\{.*?\}\}|\{%.*?%\}|\{\#.*?\#\})|(?P<semi>;)|(?P<nul>\x00)|(?P<bom>\ufeff)""",
                    re.X | re.S)
_SQ_END = re.compile(r"(?:[^']|'')*'")
_E_END = re.compile(r"(?:[^'\\]|\\.|'')*'", re.S)
_DQ_END = re.compile(r'(?:[^"]|"")*"')
_COMMENT_OR_SPACE = r"(?:\s+|--[^\n]*|/\*.*?\*/)*"
_ONLY_COMMENTS = re.compile(_COMMENT_OR_SPACE, re.S)
_COPY_STDIN = re.compile(_COMMENT_OR_SPACE + r"copy\b[^;]*?\bfrom\s+stdin\b", re.I | re.S)
_META_COPY_STDIN = re.compile(r"\\copy\b[^\n]*?\bfrom\s+(?:stdin|pstdin)\b", re.I)
_COPY_END = re.compile(r"^\\\.[ \t\r]*$", re.M)
_META_NAME = re.compile(r"\\([A-Za-z]+|.)", re.S)


@dataclass
class ReadNote:
    """Something the reader found that a finding should report."""

    rule: str
    start: int
    end: int
    message: str
    help: str


@dataclass
class ReadResult:
    text: str                          # what the server is sent, offsets unchanged
    transaction: bool | None = None    # from a runner marker; None: no marker
    marker: str | None = None          # which runner's marker set it
    notes: list[ReadNote] = field(default_factory=list)
    meta_commands: int = 0


def _blank(segment: str) -> str:
    return re.sub(r"[^\n]", " ", segment)


def _ident(placeholder: str) -> str:
    """``${name}`` / ``{{ name }}`` -> an identifier of the same length: ``__name_``."""
    return re.sub(r"[^\w]", "_", placeholder)


def read_sql(text: str) -> ReadResult:
    result = ReadResult(text)
    if _MARKER_HINT.search(text):
        text = _markers(text, result)
    if not _NEEDS_SCAN.search(text):
        result.text = text
        return result
    result.text = _scan(text, result)
    return result


def _markers(text: str, result: ReadResult) -> str:
    down_from = None
    cuts: list[tuple[int, int]] = []
    final = False
    for match in _LINE_COMMENT.finditer(text):
        body = match.group(1).strip()
        for runner, pattern, meaning in MARKERS:
            if not pattern.search(body):
                continue
            if "transaction" in meaning and not final:
                result.transaction = meaning["transaction"]
                result.marker = f"-- {body}"
                final = bool(meaning.get("final"))
            section = meaning.get("section")
            if section == "down" and down_from is None:
                down_from = match.start()
            elif section == "up" and down_from is not None:
                cuts.append((down_from, match.start()))
                down_from = None
            break
    if down_from is not None:
        cuts.append((down_from, len(text)))
    if not cuts:
        return text
    out, pos = [], 0
    for a, b in cuts:
        out.append(text[pos:a])
        out.append(_blank(text[a:b]))
        pos = b
    out.append(text[pos:])
    return "".join(out)


def _scan(text: str, result: ReadResult) -> str:
    out: list[str] = []
    pos = 0          # text[:pos] is copied or replaced in out
    i = 0            # scan position
    stmt_start = 0   # where the current statement began (after the last ';')
    n = len(text)

    def replace(a: int, b: int, new: str) -> None:
        nonlocal pos
        out.append(text[pos:a])
        out.append(new)
        pos = b

    def skip_copy_data(line_end: int) -> int:
        """Blank the data rows after a COPY FROM stdin whose statement ends at line_end."""
        data_start = text.find("\n", line_end)
        if data_start == -1:
            return n
        data_start += 1
        end = _COPY_END.search(text, data_start)
        stop = end.end() if end else n
        replace(data_start, stop, _blank(text[data_start:stop]))
        return stop

    while i < n:
        m = _TOKEN.search(text, i)
        if m is None:
            break
        kind = m.lastgroup
        start = m.start()
        i = m.end()
        if kind == "sq":
            end = _SQ_END.match(text, i)
            i = end.end() if end else n
        elif kind == "e":
            end = _E_END.match(text, i)
            i = end.end() if end else n
        elif kind == "dq":
            end = _DQ_END.match(text, i)
            i = end.end() if end else n
        elif kind == "lc":
            end = text.find("\n", i)
            i = n if end == -1 else end
        elif kind == "bc":
            depth = 1
            while depth and i < n:
                a, b = text.find("/*", i), text.find("*/", i)
                if b == -1:
                    i = n
                    break
                if a != -1 and a < b:
                    depth += 1
                    i = a + 2
                else:
                    depth -= 1
                    i = b + 2
        elif kind == "dollar":
            end = text.find(m.group(), i)
            i = n if end == -1 else end + len(m.group())
        elif kind == "semi":
            if _COPY_STDIN.match(text, stmt_start, start + 1):
                i = skip_copy_data(start)
            stmt_start = i
        elif kind == "var":
            replace(start, start + 1, " ")
        elif kind == "tpl":
            token = m.group()
            if token.startswith(("{%", "{#")):
                replace(start, i, _blank(token))
            else:
                replace(start, i, _ident(token))
        elif kind == "nul":
            replace(start, i, " ")
            result.notes.append(ReadNote(
                "invalid-character", start, i,
                "A NUL byte: PostgreSQL rejects it in SQL text (SQLSTATE 22021 invalid byte sequence), and "
                "tools reading C strings (psql, libpq-based runners) stop at it, so the rest of the file may "
                "never run. The statements after it are linted as if it were a space.",
                "Remove the NUL byte (the file was probably saved as UTF-16 or corrupted)."))
        elif kind == "bom":
            replace(start, i, " ")
        elif kind == "bs":
            name_match = _META_NAME.match(text, start)
            name = name_match.group(1) if name_match else ""
            if name == ";":  # a semicolon psql does not send by itself: still a statement boundary
                replace(start, start + 2, " ;")
                i = start + 2
                stmt_start = i
                continue
            if name == "\\":  # "\\" separates a meta-command from SQL on the same line
                replace(start, start + 2, "  ")
                i = start + 2
                continue
            line_end = text.find("\n", start)
            line_end = n if line_end == -1 else line_end
            meta_end = text.find("\\\\", start + 1, line_end)  # "\\" ends the meta-command early
            stop = line_end if meta_end == -1 else meta_end
            result.meta_commands += 1
            if name in SENDS:
                replace(start, stop, ";" + _blank(text[start + 1:stop]))
                if name == "gexec":
                    result.notes.append(ReadNote(
                        "not-analysed", start, stop,
                        "psql's \\gexec runs each value the query returns as a statement: that SQL is made at "
                        "run time and is not analysed.",
                        "Write the statements out (or analyse the generated SQL with --trace)."))
                i = stop
                stmt_start = i
            else:
                replace(start, stop, _blank(text[start:stop]))
                if _ONLY_COMMENTS.fullmatch(text, stmt_start, start):
                    stmt_start = stop  # nothing typed yet: the statement starts after the meta-command
                i = stop
                if name.lower() in ("i", "ir", "include", "include_relative"):
                    result.notes.append(ReadNote(
                        "not-analysed", start, stop,
                        f"psql's \\{name} runs another file here: it is not linted as part of this one.",
                        "Lint the included file too (give it on the command line, in the order psql runs it)."))
                elif name.lower() == "copy" and _META_COPY_STDIN.match(text, start, line_end):
                    i = skip_copy_data(line_end)
    out.append(text[pos:])
    return "".join(out)
