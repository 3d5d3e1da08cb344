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
import re
from typing import Any

__all__ = ["Statement", "SourceFile", "parse_file"]

_parse_sql_json = None  # pglast.parser.parse_sql_json, imported on first use


def tree_loads(text: str) -> Any:
    """Decode libpg_query's JSON: with orjson (4x json.loads on bench/lint's history, where
    decoding was the largest single cost), json.loads if orjson is missing or refuses it."""
    try:
        return _orjson_loads(text)
    except ValueError:  # orjson.JSONDecodeError: e.g. a lone surrogate json accepts
        return json.loads(text)


try:
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it
    _orjson_loads = json.loads


def parse_json(text: str) -> Any:
    """libpg_query's parse tree of ``text``, decoded (pglast's parser imported on first use);
    raises pglast's ParseError when the grammar rejects it."""
    global _parse_sql_json
    if _parse_sql_json is None:
        from pglast.parser import parse_sql_json as _parse_sql_json
    return tree_loads(_parse_sql_json(text))


def _defer_pglast_nodes() -> None:
    """Import pglast with its ``ast`` and ``enums`` modules deferred (importlib's LazyLoader).

    The linter reads libpg_query's JSON and never touches pglast's node classes or enums,
    yet ``import pglast`` builds them all: hundreds of classes and IntEnums, about a third of
    the start-up of ``compose-atomic lint`` on a small file (bench/lint). With this, the two
    modules run on their first attribute access (``--plan``, ``Statement.ast``, plugins) and
    behave exactly as imported normally. Any surprise (another pglast layout) means a plain
    import."""
    import importlib.machinery
    import importlib.util
    import sys

    if "pglast" in sys.modules:
        return
    try:
        top = importlib.util.find_spec("pglast")
        if top is None or top.loader is None or not top.submodule_search_locations:
            return
        package = importlib.util.module_from_spec(top)
        lazy = {}
        for sub in ("ast", "enums"):
            spec = importlib.machinery.PathFinder.find_spec("pglast." + sub, list(top.submodule_search_locations))
            if spec is None or spec.loader is None:
                return
            spec.loader = importlib.util.LazyLoader(spec.loader)
            lazy[sub] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(lazy[sub])
        # The parent holds them already, so `from . import ast, enums` (in pglast and in its
        # parser) binds the lazy modules without looking inside them.
        for sub, module in lazy.items():
            sys.modules["pglast." + sub] = module
            setattr(package, sub, module)
        sys.modules["pglast"] = package
        top.loader.exec_module(package)
    except Exception:  # noqa: BLE001 - fall back to the plain import
        for name in [n for n in sys.modules if n == "pglast" or n.startswith("pglast.")]:
            del sys.modules[name]


_defer_pglast_nodes()

_NAME = r'(?:"(?:[^"]|"")*"|[^\s."(;,*]+)'
# ALTER TABLE [IF EXISTS] [ONLY] name [*]: what precedes the first action (no comments inside).
_ALTER_HEAD = re.compile(r"\s*ALTER\s+(?:TABLE|INDEX|VIEW|MATERIALIZED\s+VIEW|FOREIGN\s+TABLE|SEQUENCE)\s+"
                         r"(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?" + _NAME + r"(?:\s*\.\s*" + _NAME + r")*(?:\s*\*)?\s+",
                         re.I)
_ACTION_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|[(),]")
# Leading words whose statement kind needs no parse (the whole file parsed already, so each
# statement is valid SQL): rules and plugins that need the tree still get it from .node.
_KIND_BY_WORDS = re.compile(
    r"\s*(?:(INSERT|UPDATE|DELETE|COMMENT)\s|(SELECT)\b"
    r"|CREATE\s+(?:OR\s+REPLACE\s+)?(?:(FUNCTION|PROCEDURE)|(?:(?:TEMP|TEMPORARY)\s+)?(?:RECURSIVE\s+)?(VIEW))\s"
    r"|CREATE\s+(EXTENSION|SEQUENCE)\s|ALTER\s+(SEQUENCE)\s"
    r"|CREATE\s+TYPE\s+(?:\"(?:[^\"]|\"\")*\"|[\w.]+)\s+AS\s+(ENUM)\b)", re.I)
_GUESSED = {"INSERT": "InsertStmt", "UPDATE": "UpdateStmt", "DELETE": "DeleteStmt", "COMMENT": "CommentStmt",
            "SELECT": "SelectStmt", "FUNCTION": "CreateFunctionStmt", "PROCEDURE": "CreateFunctionStmt",
            "VIEW": "ViewStmt", "EXTENSION": "CreateExtensionStmt", "SEQUENCE": "CreateSeqStmt",
            "ENUM": "CreateEnumStmt"}


class cached_property:  # noqa: N801 - functools.cached_property without its lock
    """Computed on first access, then an instance attribute (as functools.cached_property).

    Python 3.11's functools version takes a lock on every first access: a fifth of the cost
    of the statements' attributes on a long history (bench/lint); statements are per thread."""

    def __init__(self, func) -> None:
        self.func, self.__doc__ = func, func.__doc__

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)
        return value


class Statement:
    """One SQL statement of a file.

    ``kind`` is the parse-tree node name (``AlterTableStmt``, ``IndexStmt``...) and
    ``node`` its body as libpg_query's JSON (defaults omitted); both are empty when
    the grammar rejected the statement, and ``error`` says why. The tree's ``location``
    fields count from ``origin``, an offset in the file: the statement's start, or the
    start of the text it was parsed with. The tree is built on first use (unless the
    whole file was parsed at once) and can be dropped with ``release()`` (it is rebuilt
    if asked again), so a large file never holds every tree at once.
    """

    def __init__(self, index: int, start: int, end: int, text: str, kind: str | None = None,
                 node: dict[str, Any] | None = None, error: str | None = None,
                 source: "SourceFile | None" = None, origin: int | None = None) -> None:
        self.index = index
        self.start = start
        self.end = end
        self.text = text
        self.error = error
        self.source = source
        self.origin = start if origin is None else origin
        if error is not None:
            kind, node = "", {}
        if kind is not None:
            self.__dict__["kind"] = kind
            self.__dict__["node"] = node if node is not None else {}

    def __repr__(self) -> str:
        return f"<Statement {self.index} {self.kind} at {self.start}>"

    def _load(self) -> None:
        tree = parse_json(self.text).get("stmts") or [{"stmt": {"": {}}}]
        (kind, node), = tree[0]["stmt"].items()
        self.__dict__["kind"] = kind
        self.__dict__["node"] = node
        self.origin = self.start

    @cached_property
    def kind(self) -> str:
        words = _KIND_BY_WORDS.match(self.text)
        if words and self.error is None:
            if words.group(6):
                return "AlterSeqStmt"
            return _GUESSED[next(g for g in words.groups() if g).upper()]
        self._load()
        return self.__dict__["kind"]

    @cached_property
    def node(self) -> dict[str, Any]:
        self._load()
        return self.__dict__["node"]

    def release(self) -> None:
        """Forget the parse tree (and what was derived from it); ``kind`` stays."""
        for key in ("node", "cmds", "action_spans", "ast"):
            self.__dict__.pop(key, None)

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
        text = self.text
        if "--" not in text and "/*" not in text and "$" not in text and "\\" not in text:
            head = _ALTER_HEAD.match(text)  # the common case, without libpg_query's scanner
            if head and head.end() < len(text):
                if len(cmds) == 1:
                    return [(self.start + head.end(), self.end)]
                spans, depth, begin = [], 0, head.end()
                for tok in _ACTION_TOKENS.finditer(text, begin):
                    char = tok.group()
                    if char == "(":
                        depth += 1
                    elif char == ")":
                        depth -= 1
                    elif char == "," and depth == 0:
                        spans.append((begin, len(text[:tok.start()].rstrip())))
                        begin = tok.end() + (len(text[tok.end():]) - len(text[tok.end():].lstrip()))
                spans.append((begin, len(text)))
                if len(spans) == len(cmds):
                    return [(self.start + a, self.start + b) for a, b in spans]
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

    def __init__(self, path: str, text: str, original: str | None = None, read=None) -> None:
        self.path = path
        self.text = text  # what the server is sent (reader.read_sql), offsets as in the file
        self.original = text if original is None else original  # the file as written
        self.read = read
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


#: Texts up to this size are parsed in one call, every statement's tree at once: the files of
#: bench/lint's history take 30% less time so than cut first and parsed statement by statement.
#: Larger ones (a whole history in one file) are faster, and flat in memory, statement by statement.
WHOLE_PARSE_MAX = 128 * 1024


def _split(source: SourceFile, text: str, base: int, first_index: int) -> list[Statement]:
    """Statements of ``text`` (at offset ``base`` in the file), cut by libpg_query's parser.

    Raises pglast's ParseError when the grammar rejects the text. A small ASCII text is
    parsed whole (libpg_query's offsets are in bytes: in ASCII, characters too); otherwise
    each statement is parsed on its own, on demand.
    """
    if len(text) <= WHOLE_PARSE_MAX and text.isascii():
        out = []
        for n, raw in enumerate(parse_json(text).get("stmts") or ()):
            # as pglast.split cuts: from the statement's location, less the white space around it
            at, length = raw.get("stmt_location", 0), raw.get("stmt_len", 0)
            piece = text[at:at + length] if length else text[at:]
            body = piece.lstrip()
            at += len(piece) - len(body)
            body = body.rstrip()
            (kind, node), = raw["stmt"].items()
            out.append(Statement(first_index + n, base + at, base + at + len(body), body, kind, node,
                                 source=source, origin=base))
        return out
    import pglast

    out = []
    for n, piece in enumerate(pglast.split(text, with_parser=True, only_slices=True)):
        body = text[piece].rstrip()
        out.append(Statement(first_index + n, base + piece.start, base + piece.start + len(body), body,
                             source=source))
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
    """Read ``text`` as its runner does (reader.read_sql), then parse it into a SourceFile;
    never raises on bad SQL."""
    from pglast.parser import ParseError

    from .reader import read_sql

    read = read_sql(text)
    source = SourceFile(path, read.text, text, read)
    text = read.text
    try:
        source.statements = _split(source, text, 0, 0)
        return source
    except ParseError:
        pass
    source.degraded = True
    for start, end in split_with_sqlparse(text):
        piece = text[start:end]
        try:
            source.statements.extend(_split(source, piece, start, len(source.statements)))
        except ParseError as exc:
            source.statements.append(Statement(len(source.statements), start, start + len(piece.rstrip()),
                                               piece.rstrip(), error=str(exc), source=source))
    return source
