"""compose-atomic lint: the command's contract (exit codes, JSON fields, formats, config),
the rule engine on tricky SQL, ignores, third-party rules, --plan and the deploy gate."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from compose_atomic.lint import Hit, LintConfig, LintFailed, Rule, lint_text, parse_pg_version
from compose_atomic.lint.plpgsql import do_statements
from compose_atomic.lint.registry import get_rules
from compose_atomic.progress import Progress
from compose_atomic.project import ComposeOptions, Project

from conftest import run_cli

JSON_FIELDS = ["file", "line", "column", "end_line", "end_column", "rule", "severity", "message", "help",
               "lock", "statement"]


def rules_of(sql: str, **config) -> list[str]:
    return [f.rule for f in lint_text(sql, config=LintConfig(**config))]


def write(tmp_path: Path, name: str, sql: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sql)
    return path


# ---- the command line contract ----------------------------------------------------------


def test_json_output_has_exactly_the_documented_fields_with_1_based_positions(tmp_path):
    path = write(tmp_path, "m.sql", "SET lock_timeout = '1s';\n\nCREATE INDEX i ON users (email);\n")
    proc = run_cli("lint", "--format", "json", str(path), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    (finding,) = [f for f in json.loads(proc.stdout) if f["rule"] != "prefer-robust-stmts"]
    assert list(finding) == JSON_FIELDS
    assert finding["rule"] == "require-concurrent-index-creation"
    assert (finding["line"], finding["column"], finding["end_line"], finding["end_column"]) == (3, 1, 3, 32)
    assert finding["severity"] == "error"
    assert finding["lock"] == "SHARE on users"
    assert "CONCURRENTLY" in finding["help"]
    assert finding["statement"] == "CREATE INDEX i ON users (email)"


def test_exit_codes_0_1_2(tmp_path):
    safe = write(tmp_path, "safe.sql", "SET lock_timeout = '1s';\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);\n")
    warn_only = write(tmp_path, "warn.sql", "BEGIN;\nALTER TABLE users ADD COLUMN nickname text;\nCOMMIT;\n")
    bad = write(tmp_path, "bad.sql", "ALTER TABLE users DROP COLUMN legacy;\n")
    assert run_cli("lint", str(safe), cwd=tmp_path).returncode == 0
    assert run_cli("lint", str(warn_only), cwd=tmp_path).returncode == 0  # warnings do not fail
    assert run_cli("lint", str(bad), cwd=tmp_path).returncode == 1
    for args in (["lint"], ["lint", "nothing-here/*.sql"], ["lint", "--exclude", "ban-drop-colum", str(bad)],
                 ["lint", "--pg-version", "banana", str(bad)], ["lint", "--format", "xml", str(bad)],
                 ["lint", "--trace", str(bad)]):
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert "did you mean" in run_cli("lint", "--exclude", "ban-drop-colum", str(bad), cwd=tmp_path).stderr.lower()


def test_directories_globs_exclude_and_squawk_alias(tmp_path):
    write(tmp_path, "migrations/001.sql", "VACUUM FULL users;\n")
    write(tmp_path, "migrations/sub/002.sql", "ALTER TABLE users RENAME TO people;\n")
    proc = run_cli("lint", "--format", "json", "migrations", cwd=tmp_path)
    assert {f["rule"] for f in json.loads(proc.stdout)} >= {"table-rewrite", "renaming-table"}
    proc = run_cli("lint", "--format", "json", "--exclude", "prefer-repack,renaming-table,require-lock-timeout",
                   "migrations/**/*.sql", cwd=tmp_path)
    assert json.loads(proc.stdout) == [] and proc.returncode == 0


def test_a_large_directory_linted_in_two_processes_reports_what_one_process_does(tmp_path):
    """A history of at least PARALLEL_MIN_FILES files and PARALLEL_MIN_BYTES is split between the
    command and a forked child: the same findings, in the same order, as file by file here."""
    import sys

    from compose_atomic.lint import engine
    from compose_atomic.lint.engine import Linter

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench" / "lint"))
    from generate import history

    texts = {f"history/{i:04d}.sql": text
             for i, text in enumerate(history(files=40, target_bytes=2 * engine.PARALLEL_MIN_BYTES, seed=7))}
    for path, text in texts.items():
        write(tmp_path, path, text)
    assert len(texts) >= engine.PARALLEL_MIN_FILES and sum(map(len, texts.values())) >= engine.PARALLEL_MIN_BYTES
    linter = Linter(get_rules(), LintConfig())
    expected = [f.as_json() for path in sorted(texts) for f in linter.lint_text(path, texts[path])]
    proc = run_cli("lint", "--format", "json", "history", cwd=tmp_path)
    assert len(expected) > 100 and json.loads(proc.stdout) == expected


def test_the_second_process_knows_what_the_first_half_of_the_history_told(tmp_path):
    """The forked child lints the second half without the first: what an early migration told
    (a column's type, a validated NOT NULL check, an index's columns) must still decide the
    findings of a late one, as it does in one process."""
    from compose_atomic.lint import engine
    from compose_atomic.lint.engine import Linter

    write(tmp_path, "history/0000_create.sql",
          "CREATE TABLE t (id int, c varchar(10), d int, e int);\n"
          "ALTER TABLE t ADD CONSTRAINT t_d_nn CHECK (d IS NOT NULL) NOT VALID;\n"
          "CREATE UNIQUE INDEX t_e_key ON t (e);\n")
    write(tmp_path, "history/0001_validate.sql", "ALTER TABLE t VALIDATE CONSTRAINT t_d_nn;\n")
    for i in range(2, 10):  # the padding puts the last file in the child's half
        write(tmp_path, f"history/{i:04d}_data.sql", "SELECT 1;\n" * (engine.PARALLEL_MIN_BYTES // 70))
    write(tmp_path, "history/0010_late.sql",
          "ALTER TABLE t ALTER COLUMN c TYPE varchar(20);\n"  # binary-compatible: known from 0000
          "ALTER TABLE t ALTER COLUMN d SET NOT NULL;\n"  # proven by 0001's VALIDATE: no scan on 12+
          "ALTER TABLE t ADD CONSTRAINT t_pkey PRIMARY KEY USING INDEX t_e_key;\n")  # e is nullable: a scan
    paths = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "history").glob("*.sql"))
    texts = {path: (tmp_path / path).read_text() for path in paths}
    assert engine._halfway(paths, texts) is not None and engine._halfway(paths, texts) <= 9
    linter = Linter(get_rules(), LintConfig())
    expected = [f.as_json() for path in paths for f in linter.lint_text(path, texts[path])]
    late = {f["rule"] for f in expected if f["file"].endswith("0010_late.sql")}
    assert "adding-serial-primary-key-field" in late, late  # the index and the table are known
    assert not late & {"changing-column-type", "adding-not-nullable-field"}, late
    proc = run_cli("lint", "--format", "json", "history", cwd=tmp_path)
    assert json.loads(proc.stdout) == expected


@pytest.mark.parametrize("failure", ["killed", "unmarshallable"])
def test_a_child_that_fails_leaves_its_half_to_the_parent(failure):
    """The forked child killed half way (SIGKILL), or sending what marshal cannot write: the
    parent lints the child's files itself, and the findings are those of one process."""
    import os
    import signal
    import sys

    from compose_atomic.lint import engine
    from compose_atomic.lint.engine import Linter

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench" / "lint"))
    from generate import history

    texts = {f"history/{i:04d}.sql": text
             for i, text in enumerate(history(files=40, target_bytes=2 * engine.PARALLEL_MIN_BYTES, seed=5))}
    cut = engine._halfway(list(texts), texts)
    assert cut is not None
    last = list(texts)[-1]
    parent = os.getpid()

    def sabotage(stmt, ctx):
        if os.getpid() != parent and stmt.source.path == last:
            if failure == "killed":
                os.kill(os.getpid(), signal.SIGKILL)
            ctx.knowledge.create_table("t_" + str(stmt.index), {"c": object()}, [])  # marshal refuses it
        return ()

    rules = {**get_rules(), "sabotage": Rule("sabotage", "fails in the child", sabotage)}
    expected = [f for path in texts for f in Linter(rules, LintConfig()).lint_text(path, texts[path])]
    linter, linted_here = Linter(rules, LintConfig()), []
    lint_text = linter.lint_text
    linter.lint_text = lambda path, text: linted_here.append(path) or lint_text(path, text)
    assert linter.lint_texts(dict(texts)) == expected
    assert linted_here == list(texts)  # the first half, then the child's again


def _locations_from(node, delta: int):
    """``node`` with each known location moved back by ``delta`` and zeros dropped (libpg_query's
    JSON leaves a 0 out)."""
    if isinstance(node, list):
        return [_locations_from(item, delta) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key.endswith("location") and isinstance(value, int) and value >= 0:
            value -= delta
            if value == 0:
                continue
        out[key] = _locations_from(value, delta)
    return out


def test_a_file_parsed_in_one_call_has_the_statements_and_trees_of_one_parse_per_statement(monkeypatch):
    """A small ASCII file is parsed in one call (parser.WHOLE_PARSE_MAX): the same statements,
    positions, kinds and trees (their locations counted from ``origin``) as a file cut first
    and parsed statement by statement, and a DO block's statements found at the same places."""
    import sys

    from compose_atomic.lint import parser

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench" / "lint"))
    from generate import history

    tricky = ("-- leading comment\n\n  /* block */ SET lock_timeout = '1s';;\n"
              "DO $$ BEGIN EXECUTE 'ALTER TABLE t ADD COLUMN c int'; ALTER TABLE t DROP COLUMN d; END $$;\n"
              "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;\n"
              "ALTER TABLE t ADD COLUMN e int CHECK (e > 0), ALTER COLUMN f TYPE text\n")
    texts = [tricky, *history(files=12, target_bytes=60_000, seed=11)]
    for text in texts:
        whole = parser.parse_file("m.sql", text)
        with monkeypatch.context() as m:
            m.setattr(parser, "WHOLE_PARSE_MAX", -1)
            apart = parser.parse_file("m.sql", text)
            apart_nodes = [s.node for s in apart.statements]
        assert [(s.start, s.end, s.text, s.kind) for s in whole.statements] == \
            [(s.start, s.end, s.text, s.kind) for s in apart.statements]
        assert all(s.origin == 0 for s in whole.statements) and any(s.start > 0 for s in whole.statements)
        assert [_locations_from(s.node, s.start - s.origin) for s in whole.statements] == \
            [_locations_from(n, 0) for n in apart_nodes]
        assert [[(s.start, s.end) for s in do_statements(stmt, whole)[0]] for stmt in whole.statements
                if stmt.kind == "DoStmt"] == \
            [[(s.start, s.end) for s in do_statements(stmt, apart)[0]] for stmt in apart.statements
             if stmt.kind == "DoStmt"]
    assert parser.parse_file("m.sql", tricky).statements[1].kind == "DoStmt"


def test_defaults_come_from_x_atomic_lint_and_no_project_is_fine(tmp_path):
    sql = "ALTER TABLE users ADD COLUMN active boolean DEFAULT true;\nALTER TABLE users DROP COLUMN legacy;\n"
    write(tmp_path, "m.sql", sql)
    proc = run_cli("lint", "--format", "json", "m.sql", cwd=tmp_path)  # no compose file here
    assert {f["rule"] for f in json.loads(proc.stdout) if f["severity"] == "error"} == {"ban-drop-column"}
    write(tmp_path, "compose.yaml", "services:\n  db:\n    image: postgres\nx-atomic:\n  lint:\n    pg_version: 10\n"
                                    "    exclude: [require-lock-timeout]\n    severity:\n      ban-drop-column: warning\n")
    proc = run_cli("lint", "--format", "json", "m.sql", cwd=tmp_path)
    found = {f["rule"]: f["severity"] for f in json.loads(proc.stdout)}
    assert found["adding-field-with-default"] == "error"  # PostgreSQL 10: any default rewrites
    assert found["ban-drop-column"] == "warning" and "require-lock-timeout" not in found
    assert proc.returncode == 1
    assert run_cli("lint", "--pg-version", "15", "m.sql", cwd=tmp_path).returncode == 0  # flags win
    write(tmp_path, "compose.yaml", "services: {}\nx-atomic:\n  lint:\n    exclude: [no-such-rule]\n")
    proc = run_cli("lint", "m.sql", cwd=tmp_path)
    assert proc.returncode == 2 and "x-atomic.lint.exclude" in proc.stderr


def test_text_format_underlines_the_action_and_gives_the_recipe(tmp_path):
    path = write(tmp_path, "m.sql", "ALTER TABLE users\n  ADD COLUMN a int,\n  ALTER COLUMN email SET NOT NULL;\n")
    out = run_cli("lint", str(path), cwd=tmp_path).stdout
    assert "m.sql:3:3: error[adding-not-nullable-field]" in out
    assert "  3 |   ALTER COLUMN email SET NOT NULL;\n    |   " + "^" * 30 in out
    assert "lock: ACCESS EXCLUSIVE on users" in out
    assert "safe: ADD CONSTRAINT users_email_not_null CHECK (email IS NOT NULL) NOT VALID" in out


def test_sarif_and_github_formats(tmp_path):
    path = write(tmp_path, "m.sql", "CREATE INDEX i ON users (email);\n")
    sarif = json.loads(run_cli("lint", "--format", "sarif", str(path), cwd=tmp_path).stdout)
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    result = next(r for r in run["results"] if r["ruleId"] == "require-concurrent-index-creation")
    assert ids[result["ruleIndex"]] == result["ruleId"] and result["level"] == "error"
    assert result["locations"][0]["physicalLocation"]["region"] == \
        {"startLine": 1, "startColumn": 1, "endLine": 1, "endColumn": 32}
    # GitHub code scanning: a uri relative to the repository root (SRCROOT), percent-encoded;
    # partialFingerprints; helpUri at the rule's section of docs/lint.md
    assert result["locations"][0]["physicalLocation"]["artifactLocation"] == {"uri": "m.sql", "uriBaseId": "SRCROOT"}
    assert run["originalUriBaseIds"]["SRCROOT"]["uri"] == tmp_path.as_uri() + "/"
    assert len(result["partialFingerprints"]["compose-atomic/v1"]) == 32
    rule = run["tool"]["driver"]["rules"][result["ruleIndex"]]
    assert rule["helpUri"].endswith("docs/lint.md#require-concurrent-index-creation")
    assert "### require-concurrent-index-creation\n" in (Path(__file__).parents[1] / "docs" / "lint.md").read_text()
    (tmp_path / ".git").mkdir()
    odd = write(tmp_path, "db/migrations 2024/001 é%.sql", "CREATE INDEX i ON users (email);\n")
    nested = json.loads(run_cli("lint", "--format", "sarif", "001 é%.sql", cwd=odd.parent).stdout)["runs"][0]
    location = nested["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location == {"uri": "db/migrations%202024/001%20%C3%A9%25.sql", "uriBaseId": "SRCROOT"}
    assert nested["originalUriBaseIds"]["SRCROOT"]["uri"] == tmp_path.as_uri() + "/"
    # the fingerprint follows the statement, not its line
    moved = write(tmp_path, "m.sql", "\n\n-- moved down\nCREATE INDEX i ON users (email);\n")
    again = json.loads(run_cli("lint", "--format", "sarif", str(moved), cwd=tmp_path).stdout)["runs"][0]
    again_result = next(r for r in again["results"] if r["ruleId"] == "require-concurrent-index-creation")
    assert again_result["partialFingerprints"] == result["partialFingerprints"]
    assert again_result["locations"][0]["physicalLocation"]["region"]["startLine"] == 4
    path = write(tmp_path, "m.sql", "CREATE INDEX i ON users (email);\n")
    gh = run_cli("lint", "--format", "github", str(path), cwd=tmp_path).stdout.splitlines()
    assert any(line.startswith(f"::error file={path},line=1,col=1,endLine=1,endColumn=32,"
                               "title=require-concurrent-index-creation::") for line in gh)


# ---- the engine -----------------------------------------------------------------------------


def test_multi_action_alter_reports_each_action_with_its_own_span():
    sql = "ALTER TABLE users ADD COLUMN t uuid DEFAULT gen_random_uuid(), ALTER COLUMN e SET NOT NULL, DROP COLUMN x;"
    findings = [f for f in lint_text(sql) if f.rule not in ("require-lock-timeout", "prefer-robust-stmts")]
    spans = {f.rule: sql[f.start:f.end] for f in findings}
    assert spans == {"adding-field-with-default": "ADD COLUMN t uuid DEFAULT gen_random_uuid()",
                     "adding-not-nullable-field": "ALTER COLUMN e SET NOT NULL", "ban-drop-column": "DROP COLUMN x"}
    assert all(f.lock == "ACCESS EXCLUSIVE on users" for f in findings if f.severity == "error")


def test_foreign_key_lock_names_both_tables_and_strongest_lock_wins():
    (fk,) = [f for f in lint_text("ALTER TABLE orders ADD FOREIGN KEY (u) REFERENCES users (id) ;")
             if f.rule == "adding-foreign-key-constraint"]
    assert fk.lock == "SHARE ROW EXCLUSIVE on orders and users"
    (timeout,) = [f for f in lint_text("ALTER TABLE orders ADD FOREIGN KEY (u) REFERENCES users (id), "
                                       "ALTER COLUMN a SET NOT NULL;") if f.rule == "require-lock-timeout"]
    assert timeout.lock == "ACCESS EXCLUSIVE on orders and users"


def test_comments_strings_dollar_quotes_and_unicode_positions():
    sql = ("SELECT 'é -- not a comment; CREATE INDEX x ON y (z)';\n"
           "DO $$ BEGIN EXECUTE 'DROP TABLE users'; END $$;\n"
           "/* DROP INDEX a; */ -- VACUUM FULL b;\n"
           "SELECT $tag$ ; ALTER TABLE users DROP COLUMN a; $tag$;\n"
           "CREATE INDEX ünï ON users (email);\n")
    findings = [f for f in lint_text(sql) if f.rule == "require-concurrent-index-creation"]
    assert [(f.line, f.column, f.end_column) for f in findings] == [(5, 1, 34)]
    # the DO block's EXECUTE of a literal is analysed (tests/test_lint_reader.py): it really drops the table
    assert sorted(rules_of(sql)) == ["ban-drop-table", "prefer-robust-stmts", "require-concurrent-index-creation",
                                     "require-lock-timeout"]


def test_transactions_explicit_assumed_and_disabled_per_file():
    assert "ban-concurrent-index-creation-in-transaction" not in rules_of("CREATE INDEX CONCURRENTLY i ON t (a);")
    assert "ban-concurrent-index-creation-in-transaction" in rules_of(
        "CREATE INDEX CONCURRENTLY i ON t (a);", assume_in_transaction=True)
    assert "ban-concurrent-index-creation-in-transaction" not in rules_of(
        "-- squawk-disable-assume-in-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);", assume_in_transaction=True)
    # after COMMIT the next statement runs outside the transaction
    assert "ban-concurrent-index-creation-in-transaction" not in rules_of(
        "BEGIN; SELECT 1; COMMIT; CREATE INDEX CONCURRENTLY i ON t (a);")
    for stmt in ("REINDEX TABLE CONCURRENTLY t", "ALTER TABLE p DETACH PARTITION c CONCURRENTLY",
                 "VACUUM t", "CREATE DATABASE d", "DROP DATABASE d"):
        assert "ban-concurrent-index-creation-in-transaction" in rules_of(f"BEGIN; {stmt}; COMMIT;"), stmt
    assert "ban-uncommitted-transaction" in rules_of("BEGIN; SELECT 1;")
    # NOT VALID then VALIDATE: fine across transactions, flagged within one
    split = "BEGIN; ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID; COMMIT; ALTER TABLE t VALIDATE CONSTRAINT c;"
    assert "constraint-missing-not-valid" not in rules_of(split)
    assert "constraint-missing-not-valid" in rules_of(split.replace("COMMIT;", ""))


def test_pg_version_dependent_rules():
    add_default = "ALTER TABLE t ADD COLUMN a int DEFAULT 0;"
    assert "adding-field-with-default" in rules_of(add_default, pg_version=(10, 0))
    assert "adding-field-with-default" not in rules_of(add_default, pg_version=(11, 0))
    enum = "ALTER TYPE mood ADD VALUE 'meh';"
    assert "ban-concurrent-index-creation-in-transaction" in rules_of(enum, pg_version=(11, 0), assume_in_transaction=True)
    assert "ban-concurrent-index-creation-in-transaction" not in rules_of(enum, pg_version=(12, 0), assume_in_transaction=True)
    recipe = ("ALTER TABLE t ADD CONSTRAINT nn CHECK (a IS NOT NULL) NOT VALID;\nALTER TABLE t VALIDATE CONSTRAINT nn;\n"
              "ALTER TABLE t ALTER COLUMN a SET NOT NULL;")
    assert "adding-not-nullable-field" not in rules_of(recipe, pg_version=(12, 0))
    assert "adding-not-nullable-field" in rules_of(recipe, pg_version=(11, 0))
    (nn,) = [f for f in lint_text("ALTER TABLE t ALTER COLUMN a SET NOT NULL;", config=LintConfig(pg_version=(18, 0)))
             if f.rule == "adding-not-nullable-field"]
    assert "NOT NULL a NOT VALID" in nn.help
    assert parse_pg_version("9.6") == (9, 6) and parse_pg_version(17) == (17, 0)
    with pytest.raises(ValueError):
        parse_pg_version("x")


def test_a_check_validated_in_an_earlier_file_allows_set_not_null(tmp_path):
    write(tmp_path, "m/001.sql", "ALTER TABLE t ADD CONSTRAINT nn CHECK (a IS NOT NULL) NOT VALID;\n")
    write(tmp_path, "m/002.sql", "ALTER TABLE t VALIDATE CONSTRAINT nn;\n")
    write(tmp_path, "m/003.sql", "ALTER TABLE t ALTER COLUMN a SET NOT NULL;\n")
    found = json.loads(run_cli("lint", "--format", "json", "m", cwd=tmp_path).stdout)
    assert "adding-not-nullable-field" not in {f["rule"] for f in found}
    found = json.loads(run_cli("lint", "--format", "json", "m/003.sql", cwd=tmp_path).stdout)
    assert "adding-not-nullable-field" in {f["rule"] for f in found}


def test_ignores_line_file_reason_and_unknown_rule():
    sql = ("-- squawk-ignore ban-drop-column -- reason: unused since v41\nALTER TABLE t DROP COLUMN a;\n"
           "ALTER TABLE t DROP COLUMN b;\n")
    assert rules_of(sql).count("ban-drop-column") == 1
    assert "ban-drop-column" not in rules_of("-- compose-atomic-ignore-file ban-drop-column\n" + sql)
    assert rules_of("-- squawk-ignore-file\nDROP TABLE t; ALTER TABLE t DROP COLUMN a;") == []
    found = lint_text("-- squawk-ignore ban-drop-column, banana\nALTER TABLE t DROP COLUMN IF EXISTS a;")
    assert [(f.rule, f.line) for f in found if f.rule != "require-lock-timeout"] == [("unused-ignore", 1)]
    # squawk's own rules that we do not implement are not "unknown"
    assert rules_of("-- squawk-ignore prefer-bigint-over-int\nSELECT 1;") == []
    # a directive inside a string is not a directive
    assert "ban-drop-column" in rules_of("SELECT '-- squawk-ignore-file';\nALTER TABLE t DROP COLUMN a;")


def test_syntax_error_keeps_other_statements_and_token_fallback():
    found = lint_text("ALTER TABLE t DROP COLUMN a;\nCREATE INDEX i ON t (a) BOGUS;\nDROP TABLE x;\n")
    assert {(f.rule, f.line) for f in found} >= {("ban-drop-column", 1), ("syntax-error", 2),
                                                 ("require-concurrent-index-creation", 2), ("ban-drop-table", 3)}


def test_third_party_rules_register_through_the_hook():
    from compose_atomic import hookimpl
    from compose_atomic.plugins import pm

    def no_select_star(stmt, ctx):
        if "A_Star" in json.dumps(stmt.node):
            yield Hit("SELECT * in a migration", "Name the columns.")

    class Plugin:
        @hookimpl
        def register_lint_rules(self, register):
            register(Rule("no-select-star", "SELECT * in a migration", no_select_star, ("SelectStmt",),
                          severity="warning"))

    plugin = Plugin()
    pm.register(plugin, name="test-lint-rule")
    try:
        rules = get_rules(refresh=True)
        assert "no-select-star" in rules and "ban-drop-column" in rules
        found = lint_text("SELECT * FROM t;")
        assert [(f.rule, f.severity) for f in found] == [("no-select-star", "warning")]
    finally:
        pm.unregister(plugin)
        get_rules(refresh=True)


# ---- --plan -----------------------------------------------------------------------------------


def test_plan_splits_into_safe_steps(tmp_path):
    path = write(tmp_path, "m.sql", "BEGIN;\nCREATE INDEX i ON users (email);\n"
                 "ALTER TABLE users ADD CONSTRAINT u UNIQUE (email), ALTER COLUMN name SET NOT NULL;\n"
                 "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id);\nCOMMIT;\n")
    proc = run_cli("lint", "--plan", "--format", "json", "--lock-timeout", "3s", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (plan,) = json.loads(proc.stdout)
    steps = [(s["transactional"], s["statements"]) for s in plan["steps"]]
    assert steps[0] == (False, ["CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON users (email)"])
    assert steps[1] == (False, ["CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS u ON users (email)"])
    assert steps[2] == (True, ["ALTER TABLE users ADD CONSTRAINT u UNIQUE USING INDEX u",
                               "ALTER TABLE users ADD CONSTRAINT users_name_not_null CHECK (name IS NOT NULL) NOT VALID",
                               "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID"])
    assert steps[3:] == [(True, ["ALTER TABLE users VALIDATE CONSTRAINT users_name_not_null"]),
                         (True, ["ALTER TABLE users ALTER COLUMN name SET NOT NULL",
                                 "ALTER TABLE users DROP CONSTRAINT users_name_not_null"]),
                         (True, ["ALTER TABLE orders VALIDATE CONSTRAINT fk"])]
    assert all("SET lock_timeout = '3s';" in s["sql"] or "SET LOCAL lock_timeout = '3s';" in s["sql"]
               for s in plan["steps"])
    assert plan["steps"][3]["sql"][2] == "SET LOCAL statement_timeout = 0;"
    # the planned SQL lints clean of the rules it addresses
    planned = "\n".join(line for s in plan["steps"] for line in s["sql"])
    assert {"require-concurrent-index-creation", "disallowed-unique-constraint", "adding-not-nullable-field",
            "adding-foreign-key-constraint", "constraint-missing-not-valid"}.isdisjoint(rules_of(planned))


def test_plan_as_alembic_and_django_migrations(tmp_path):
    path = write(tmp_path, "m.sql", "CREATE INDEX i ON users (email);\nALTER TABLE users ALTER COLUMN a SET NOT NULL;\n")
    alembic = run_cli("lint", "--plan", "--format", "alembic", str(path), cwd=tmp_path).stdout
    compile(alembic, "alembic_migration.py", "exec")
    assert "with op.get_context().autocommit_block():\n        op.execute(\"SET lock_timeout = '2s'\")" in alembic
    assert "op.execute('CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON users (email)')" in alembic
    django = run_cli("lint", "--plan", "--format", "django", str(path), cwd=tmp_path).stdout
    compile(django, "django_migration.py", "exec")
    assert "atomic = False" in django and django.count("migrations.RunSQL(") == 4
    assert run_cli("lint", "--format", "django", str(path), cwd=tmp_path).returncode == 2


# ---- the deploy gate ------------------------------------------------------------------------------


def gate_project(tmp_path: Path, lint_globs, severity=None) -> Project:
    config = {"services": {"app": {"image": "app", "x-atomic": {"migrate": {
        "database": "db", "sql": "migrations/*.sql", "lint": lint_globs}}}, "db": {"image": "postgres"}},
        "x-atomic": {"lint": {"severity": severity or {}}}}
    return Project(name="gate", options=ComposeOptions(), config=config, working_dir=tmp_path)


def test_gate_stops_on_errors_prints_findings_and_can_be_lowered(tmp_path):
    from compose_atomic.lint.gate import check_migrations

    write(tmp_path, "migrations/001.sql", "SET lock_timeout = '1s';\nALTER TABLE users DROP COLUMN IF EXISTS legacy;\n")
    write(tmp_path, "migrations/002.sql", "SET lock_timeout = '1s';\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);\n")
    stream = io.StringIO()
    with pytest.raises(LintFailed) as info:
        check_migrations(gate_project(tmp_path, "migrations/*.sql"), "app", Progress("plain", stream))
    assert info.value.exit_code == 1
    assert [f.rule for f in info.value.findings] == ["ban-drop-column"]
    assert "migrations/001.sql:2" in stream.getvalue() and "ban-drop-column" in stream.getvalue()
    assert "service 'app'" in str(info.value)
    stream = io.StringIO()
    found = check_migrations(gate_project(tmp_path, ["migrations/*.sql"], {"ban-drop-column": "warning"}),
                             "app", Progress("plain", stream))
    assert [(f.rule, f.severity) for f in found] == [("ban-drop-column", "warning")]
    assert "Warning" in stream.getvalue()
    assert check_migrations(gate_project(tmp_path, "migrations/002.sql"), "app", Progress("quiet")) == []
    assert check_migrations(gate_project(tmp_path, "nothing/*.sql"), "app", Progress("quiet")) == []


def test_docs_describe_every_rule():
    from compose_atomic.lint.reference import rule_reference

    text = (Path(__file__).resolve().parent.parent / "docs" / "lint.md").read_text()
    for rule in get_rules().values():
        section = text.split(f"### {rule.id}\n", 1)
        assert len(section) == 2, f"docs/lint.md has no section for {rule.id}"
        body = section[1].split("\n### ", 1)[0]
        assert "**Why:**" in body and "**Lock:**" in body and "**Safe recipe:**" in body, rule.id
        assert rule.postgres, f"{rule.id} does not say which PostgreSQL behaviour it encodes"
    assert text.endswith(rule_reference(get_rules())), "run: python -m compose_atomic.lint.reference"


def test_example_rule_plugin_package():
    import importlib.util

    from compose_atomic.plugins import pm

    path = Path(__file__).resolve().parent.parent / "examples" / "lint-rule-plugin" / "compose_atomic_unbatched" / "__init__.py"
    spec = importlib.util.spec_from_file_location("compose_atomic_unbatched", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pm.register(module, name="unbatched")
    try:
        get_rules(refresh=True)
        assert rules_of("UPDATE users SET a = 1;") == ["ban-unbatched-dml"]
        assert rules_of("UPDATE users SET a = 1 WHERE id < 1000;") == []
    finally:
        pm.unregister(module)
        get_rules(refresh=True)


def test_squawk_toml_is_read_and_x_atomic_lint_wins(tmp_path):
    write(tmp_path, ".squawk.toml", 'excluded_rules = ["ban-drop-column", "prefer-text-field"]\npg_version = "10.0"\n'
                                    "assume_in_transaction = true\n")
    write(tmp_path, "m.sql", "ALTER TABLE t ADD COLUMN a int DEFAULT 0;\nALTER TABLE t DROP COLUMN b;\n"
                             "CREATE INDEX CONCURRENTLY i ON t (a);\n")
    found = {f["rule"] for f in json.loads(run_cli("lint", "--format", "json", "m.sql", cwd=tmp_path).stdout)}
    assert "ban-drop-column" not in found
    assert {"adding-field-with-default", "ban-concurrent-index-creation-in-transaction"} <= found
    write(tmp_path, "compose.yaml", "services: {}\nx-atomic:\n  lint:\n    pg_version: 15\n")
    found = {f["rule"] for f in json.loads(run_cli("lint", "--format", "json", "m.sql", cwd=tmp_path).stdout)}
    assert "adding-field-with-default" not in found and "ban-drop-column" not in found


def test_a_crashing_rule_is_reported_and_the_others_still_run():
    from compose_atomic import hookimpl
    from compose_atomic.plugins import pm

    def broken(stmt, ctx):
        raise KeyError("relname")
        yield  # pragma: no cover

    class Plugin:
        @hookimpl
        def register_lint_rules(self, register):
            register(Rule("broken-rule", "always crashes", broken, ("AlterTableStmt",)))

    plugin = Plugin()
    pm.register(plugin, name="test-broken-rule")
    try:
        get_rules(refresh=True)
        found = {f.rule: f for f in lint_text("ALTER TABLE t DROP COLUMN a;")}
        assert "ban-drop-column" in found and found["rule-failed"].severity == "warning"
        assert "broken-rule failed" in found["rule-failed"].message
    finally:
        pm.unregister(plugin)
        get_rules(refresh=True)


def test_column_types_from_earlier_files_tell_a_rewrite_from_a_catalog_change(tmp_path):
    write(tmp_path, "m/001.sql", "CREATE TABLE t (id int, email varchar(100), price numeric(10,2), code varchar(8));\n")
    write(tmp_path, "m/002.sql", "SET lock_timeout = '1s';\n"
                                 "ALTER TABLE t ALTER COLUMN email TYPE text;\n"          # no rewrite
                                 "ALTER TABLE t ALTER COLUMN code TYPE varchar(16);\n"    # no rewrite
                                 "ALTER TABLE t ALTER COLUMN price TYPE numeric(12,2);\n"  # no rewrite
                                 "ALTER TABLE t ALTER COLUMN id TYPE bigint;\n"            # rewrite
                                 "ALTER TABLE t ALTER COLUMN code TYPE varchar(4);\n")     # shorter: checks every row
    found = [f for f in json.loads(run_cli("lint", "--format", "json", "m", cwd=tmp_path).stdout)
             if f["rule"] == "changing-column-type"]
    assert [(f["line"], "from integer" in f["message"] or "from int4 to int8" in f["message"]) for f in found] == \
        [(5, True), (6, False)]
    alone = json.loads(run_cli("lint", "--format", "json", "m/002.sql", cwd=tmp_path).stdout)
    assert len([f for f in alone if f["rule"] == "changing-column-type"]) == 5  # old types unknown
