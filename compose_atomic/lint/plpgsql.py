"""The SQL a ``DO`` block runs, for the rules to see.

A ``DO`` body in PL/pgSQL is parsed by libpg_query's PL/pgSQL parser (the one PostgreSQL
uses). Every SQL statement of the body, at any depth (inside ``IF``, loops, nested blocks,
exception handlers), becomes a ``Statement`` the rules check like a top-level one; so does
``EXECUTE`` of a string literal (or of literals joined with ``||``). What cannot be known
before run time (``EXECUTE`` of a computed string, a body in another language, a body the
parser rejects) is listed, so the engine can say it was not analysed.
"""

from __future__ import annotations

from typing import Any

from .parser import Statement, parse_json, tree_loads

_WRAP = "CREATE FUNCTION __compose_atomic_do() RETURNS void LANGUAGE plpgsql AS "


def _do_body(stmt) -> tuple[str, str, int]:
    """(language, body, file offset of the body's first character)."""
    language, body, at = "plpgsql", "", stmt.start
    for arg in stmt.node.get("args") or []:
        d = arg.get("DefElem", {})
        if d.get("defname") == "language":
            language = d.get("arg", {}).get("String", {}).get("sval", language).lower()
        elif d.get("defname") == "as":
            body = d.get("arg", {}).get("String", {}).get("sval", "")
            loc = d.get("arg_location", d.get("location", 0)) - (stmt.start - stmt.origin)
            text = stmt.text
            if 0 <= loc < len(text) and text[loc] == "$":
                close = text.find("$", loc + 1)
                at = stmt.start + (close + 1 if close != -1 else loc)
            else:
                at = stmt.start + max(loc, 0) + 1
    return language, body, at


def _quote(body: str) -> str:
    tag = "$__do__$"
    while tag in body:
        tag = tag[:-1] + "_$"
    return f"{tag}{body}{tag}"


def _walk(node: Any, found: list[tuple[str, int, dict]]) -> None:
    """(statement type, lineno, body) for each execsql / dynexecute, depth first, in order."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("PLpgSQL_stmt_execsql", "PLpgSQL_stmt_dynexecute"):
                found.append((key, value.get("lineno", 1), value))
            _walk(value, found)
    elif isinstance(node, list):
        for item in node:
            _walk(item, found)


def _literal(expr: str) -> str | None:
    """The value of an expression made only of string literals (joined with ||), else None."""
    from pglast.parser import ParseError

    try:
        tree = parse_json("SELECT " + expr)
    except ParseError:
        return None
    target = tree["stmts"][0]["stmt"]["SelectStmt"]["targetList"][0]["ResTarget"]["val"]

    def value(node: dict) -> str | None:
        if "A_Const" in node:
            sval = node["A_Const"].get("sval")
            return sval.get("sval", "") if sval is not None else None
        if "A_Expr" in node:
            e = node["A_Expr"]
            names = [n.get("String", {}).get("sval") for n in e.get("name") or []]
            if names == ["||"] and e.get("lexpr") and e.get("rexpr"):
                left, right = value(e["lexpr"]), value(e["rexpr"])
                if left is not None and right is not None:
                    return left + right
        if "TypeCast" in node:
            return value(node["TypeCast"].get("arg", {}))
        return None

    return value(target)


def _parse(sql: str) -> tuple[str, dict] | None:
    """(kind, node) of one SQL statement, or None when the grammar rejects it."""
    from pglast.parser import ParseError

    try:
        stmts = parse_json(sql).get("stmts") or []
    except ParseError:
        return None
    if len(stmts) != 1:
        return None
    ((kind, node),) = stmts[0]["stmt"].items()
    return kind, node


def _line_offset(body: str, lineno: int) -> int:
    pos = 0
    for _ in range(max(lineno - 1, 0)):
        nxt = body.find("\n", pos)
        if nxt == -1:
            break
        pos = nxt + 1
    return pos


def do_statements(stmt, source) -> tuple[list[Statement], list[str]]:
    """The statements a DO block runs, positioned in the file, and what was not analysed."""
    from pglast.parser import ParseError, parse_plpgsql_json

    language, body, at = _do_body(stmt)
    if language != "plpgsql":
        return [], [f"the body is in {language}, not PL/pgSQL"]
    try:
        tree = tree_loads(parse_plpgsql_json(_WRAP + _quote(body)))
    except (ParseError, ValueError) as exc:
        return [], [f"PostgreSQL's PL/pgSQL parser rejects the body ({exc})"]
    found: list[tuple[str, int, dict]] = []
    _walk(tree, found)
    out: list[Statement] = []
    skipped: list[str] = []
    for key, lineno, value in found:
        line_at = _line_offset(body, lineno)
        if key == "PLpgSQL_stmt_execsql":
            sql = value.get("sqlstmt", {}).get("PLpgSQL_expr", {}).get("query", "")
            where = body.find(sql, line_at)
            start = at + (where if where != -1 else line_at)
            parsed = _parse(sql)
            if parsed is None:
                skipped.append(f"a statement PostgreSQL's grammar rejects outside PL/pgSQL on line "
                               f"{source.position(start)[0]}")
                continue
            out.append(Statement(len(out), start, start + len(sql), sql, *parsed, source=source))
            continue
        expr = value.get("query", {}).get("PLpgSQL_expr", {}).get("query", "")
        where = body.find(expr, line_at)
        start = at + (where if where != -1 else line_at)
        sql = _literal(expr)
        if sql is None or value.get("params"):
            line = source.position(start)[0]
            skipped.append(f"EXECUTE of a computed string on line {line}" if sql is None else
                           f"EXECUTE ... USING (values known at run time) on line {line}")
            continue
        import pglast

        try:
            pieces = list(pglast.split(sql, with_parser=True, only_slices=True))
        except ParseError as exc:
            skipped.append(f"EXECUTE of a string PostgreSQL's grammar rejects on line "
                           f"{source.position(start)[0]} ({exc})")
            continue
        for piece in pieces:
            text = sql[piece].strip()
            if text:
                out.append(Statement(len(out), start, start + len(expr), text, source=source))
    return out, skipped
