"""Reading a file the way its runner does (compose_atomic/lint/reader.py, plpgsql.py).

Each test names the runner's (psql's, PostgreSQL's) behaviour it encodes. Offsets never move:
a finding after a blanked part points at the same line and column as in the file.
"""

from __future__ import annotations

from compose_atomic.lint import LintConfig, lint_text
from compose_atomic.lint.reader import read_sql


def found(sql: str, **config) -> list[tuple[int, str]]:
    return [(f.line, f.rule) for f in lint_text(sql, config=LintConfig(**config))
            if f.rule not in ("require-lock-timeout", "prefer-robust-stmts")]


def test_reading_keeps_every_offset():
    sql = "\ufeff\\set x 1\nCOPY t FROM stdin;\n1\t2\n\\.\nSELECT :'x', ${y}, {{ z }};\x00\n"
    assert len(read_sql(sql).text) == len(sql)
    assert read_sql(sql).text.count("\n") == sql.count("\n")


def test_psql_meta_commands_are_not_sql_and_do_not_swallow_the_next_statement():
    # psql reads a backslash command up to the end of the line and never sends it to the server.
    sql = ("\\set ON_ERROR_STOP on\n\\if :{?schema}\n\\echo has schema\n\\else\n\\endif\n"
           "BEGIN;\nALTER TABLE t DROP COLUMN c;\nCOMMIT;\n")
    assert found(sql) == [(7, "ban-drop-column")]


def test_psql_gset_and_gexec_send_the_query_like_a_semicolon():
    # \g, \gset, \gexec... send the query buffer: the statement ends there even without ';'.
    sql = "SELECT count(*) AS n FROM t \\gset\nALTER TABLE t DROP COLUMN c;\n"
    assert found(sql) == [(2, "ban-drop-column")]
    gexec = "SELECT 'CREATE DATABASE x' WHERE NOT EXISTS (SELECT 1)\\gexec\nDROP TABLE t;\n"
    assert found(gexec) == [(1, "not-analysed"), (2, "ban-drop-table")]
    info = [f for f in lint_text(gexec) if f.rule == "not-analysed"][0]
    assert info.severity == "info" and "\\gexec" in info.message


def test_psql_backslash_semicolon_is_a_statement_boundary():
    assert found("SELECT 1 \\; ALTER TABLE t DROP COLUMN c;\n") == [(1, "ban-drop-column")]


def test_psql_include_is_reported_as_not_analysed():
    assert found("\\i other.sql\nSELECT 1;\n") == [(1, "not-analysed")]


def test_copy_from_stdin_rows_are_data_up_to_backslash_dot():
    # COPY ... FROM STDIN: the rows follow the statement, up to a line "\.".
    sql = "COPY t (a, b) FROM stdin;\n1\tDROP TABLE x;\n2\tCREATE INDEX i ON t (a);\n\\.\nALTER TABLE t DROP COLUMN c;\n"
    assert found(sql) == [(5, "ban-drop-column")]
    meta = "\\copy t from stdin with csv\n1,DROP TABLE x;\n\\.\nDROP TABLE y;\n"
    assert found(meta) == [(4, "ban-drop-table")]
    # COPY FROM a file has no inline data
    assert found("COPY t FROM '/tmp/x.csv';\nDROP TABLE y;\n") == [(2, "ban-drop-table")]


def test_a_byte_order_mark_is_not_a_syntax_error():
    findings = lint_text("\ufeffALTER TABLE t DROP COLUMN c;\n")
    assert [(f.rule, f.line, f.column) for f in findings if f.rule == "ban-drop-column"] == \
        [("ban-drop-column", 1, 16)]
    assert "syntax-error" not in [f.rule for f in findings]


def test_a_nul_byte_is_reported_and_the_rest_is_still_linted():
    # PostgreSQL rejects 0x00 in text (22021); C-string readers stop there. We report it and read on.
    assert found("SELECT 1;\x00\nALTER TABLE t DROP COLUMN c;\n") == [(1, "invalid-character"),
                                                                       (2, "ban-drop-column")]


def test_template_placeholders_keep_the_statement_readable():
    # psql substitutes :var, :'var', :"var" outside quotes; ${var} and {{ var }} are textual templates.
    sql = ("CREATE INDEX i ON :schema.t (a);\nALTER TABLE ${schema}.t DROP COLUMN c;\n"
           "ALTER TABLE {{ schema }}.t ALTER COLUMN a SET NOT NULL;\n{% if x %}\nSELECT :'v', :\"col\", a::text, '{{keep}}';\n")
    assert found(sql) == [(1, "require-concurrent-index-creation"), (2, "ban-drop-column"),
                          (3, "adding-not-nullable-field")]
    statement = [f.statement for f in lint_text(sql) if f.rule == "ban-drop-column"][0]
    assert statement == "ALTER TABLE ${schema}.t DROP COLUMN c"  # reported as written
    assert "'{{keep}}'" in read_sql(sql).text and "a::text" in read_sql(sql).text


def test_runner_markers_set_the_transaction_mode():
    cic = "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);\n"
    # postgres-migrations runs each file in a transaction unless the file disables it
    assert found("-- postgres-migrations disable-transaction\n" + cic, assume_in_transaction=True) == []
    # goose, dbmate and sql-migrate wrap the up section in a transaction by default...
    assert found("-- +goose Up\n" + cic) == [(2, "ban-concurrent-index-creation-in-transaction")]
    assert found("-- migrate:up\n" + cic) == [(2, "ban-concurrent-index-creation-in-transaction")]
    assert found("-- +migrate Up\n" + cic) == [(2, "ban-concurrent-index-creation-in-transaction")]
    # ...unless told not to
    assert found("-- +goose NO TRANSACTION\n-- +goose Up\n" + cic) == []
    assert found("-- migrate:up transaction:false\n" + cic) == []
    assert found("-- +migrate Up notransaction\n" + cic) == []
    assert found("--! no-transaction\n" + cic, assume_in_transaction=True) == []


def test_the_down_section_of_a_runner_file_is_not_the_migration():
    # goose / dbmate / sql-migrate run the down section only on rollback
    sql = "-- +goose Up\nALTER TABLE t ADD COLUMN c int;\n-- +goose Down\nALTER TABLE t DROP COLUMN c;\n"
    assert found(sql) == []
    dbmate = "-- migrate:up\nCREATE TABLE t (id int);\n-- migrate:down\nDROP TABLE t;\n"
    assert found(dbmate) == []


def test_do_blocks_are_analysed_statement_by_statement():
    # A DO body is a function: its statements run in one transaction; CONCURRENTLY fails in a function.
    sql = """DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attname = 'c') THEN
    ALTER TABLE t ADD COLUMN c int NOT NULL;
  END IF;
  EXECUTE 'CREATE INDEX i ON t (' || 'a)';
  CREATE INDEX CONCURRENTLY j ON t (b);
END $$;
"""
    assert found(sql) == [(4, "adding-required-field"), (6, "require-concurrent-index-creation"),
                          (7, "ban-concurrent-index-creation-in-transaction")]
    message = [f for f in lint_text(sql) if f.line == 7][0].message
    assert "cannot be executed from a function" in message


def test_what_a_do_block_computes_at_run_time_is_an_info_finding():
    sql = "DO $$ BEGIN EXECUTE format('DROP TABLE %I', 'x'); END $$;\nDO LANGUAGE plpython3u 'pass';\n"
    findings = [f for f in lint_text(sql) if f.rule == "not-analysed"]
    assert [(f.line, f.severity) for f in findings] == [(1, "info"), (2, "info")]
    assert "EXECUTE of a computed string" in findings[0].message and "plpython3u" in findings[1].message
    # a fully analysed block has no such finding
    assert found("DO $$ BEGIN UPDATE t SET a = 1; END $$;\n") == []


def test_a_do_block_lock_counts_for_the_transaction_around_it():
    sql = ("BEGIN;\nDO $$ BEGIN ALTER TABLE t ADD COLUMN c int; END $$;\nUPDATE t SET c = 1;\nCOMMIT;\n")
    assert (3, "work-after-access-exclusive") in found(sql)


def test_the_lint_package_has_no_import_cycle_and_does_not_import_migrate():
    """Every import, top-level or inside a function (architecture issue #12)."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "compose_atomic" / "lint"
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        name = path.stem
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level == 1:
                    targets |= {module} if module else {a.name for a in node.names}
                elif node.level == 0 and module.startswith("compose_atomic.lint."):
                    targets.add(module.rsplit(".", 1)[1])
                assert not (node.level == 0 and module.startswith("compose_atomic.migrate")), path.name
                assert not (node.level == 2 and module.startswith("migrate")), path.name
        graph[name] = {t.split(".")[0] for t in targets} & {p.stem for p in package.glob("*.py")}
    graph["__init__"] = set()  # the package itself: imported by name only, lazily

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return seen + (nxt,)
            if nxt not in seen:
                found = cycle_from(start, nxt, seen + (nxt,))
                if found:
                    return found
        return None

    cycles = [c for c in (cycle_from(m, m, (m,)) for m in graph) if c]
    assert not cycles, cycles
