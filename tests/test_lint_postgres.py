"""Each rule's PostgreSQL claim, checked on a real server where it can be observed.

One throwaway container for the module (the linter's own ThrowawayPostgres, as --trace uses
it), of compose-atomic-testbed/postgres:17 when the test bed has it, else :15. A test states
what the linter says and what PostgreSQL does: a relfilenode that changes or not (a rewrite),
the scans of the table in the transaction (pg_stat_get_xact_numscans), the locks the backend
holds (pg_locks), or the SQLSTATE a statement fails with.
"""

from __future__ import annotations

import subprocess

import pytest

from compose_atomic.lint import LintConfig, Linter
from compose_atomic.lint.effects import statement_effect
from compose_atomic.lint.parser import parse_file
from compose_atomic.lint.registry import get_rules

from conftest import IMAGE_POSTGRES

pytestmark = pytest.mark.docker

MODES = {"AccessShareLock": "ACCESS SHARE", "RowShareLock": "ROW SHARE", "RowExclusiveLock": "ROW EXCLUSIVE",
         "ShareUpdateExclusiveLock": "SHARE UPDATE EXCLUSIVE", "ShareLock": "SHARE",
         "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE", "ExclusiveLock": "EXCLUSIVE",
         "AccessExclusiveLock": "ACCESS EXCLUSIVE"}
ORDER = list(MODES.values())
ROWS = 20000


def _image() -> str:
    newer = "compose-atomic-testbed/postgres:17"
    found = subprocess.run(["docker", "image", "inspect", newer], capture_output=True, timeout=30).returncode == 0
    return newer if found else IMAGE_POSTGRES


@pytest.fixture(scope="module")
def pg(docker_engine):
    import psycopg

    from compose_atomic.lint.trace import ThrowawayPostgres

    with ThrowawayPostgres(_image(), "lint-pg-tests") as server:
        with psycopg.connect(**server.conninfo(), autocommit=True) as conn:
            # a throwaway server: durability off makes CREATE DATABASE (one per plan case) fast
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("ALTER SYSTEM SET synchronous_commit = off")
            conn.execute("ALTER SYSTEM SET full_page_writes = off")
            conn.execute("SELECT pg_reload_conf()")
            yield conn, server


@pytest.fixture()
def db(pg):
    """A fresh schema per test with table t (ROWS rows) and referenced table users."""
    conn, _ = pg
    conn.execute("DROP SCHEMA IF EXISTS s CASCADE; DROP TYPE IF EXISTS mood; CREATE SCHEMA s; SET search_path = s")
    conn.execute(f"""
        CREATE TABLE users (id int PRIMARY KEY);
        INSERT INTO users SELECT generate_series(1, 10);
        CREATE TABLE t (id int NOT NULL, n int, ts timestamp(3), name varchar(10), net cidr, user_id int,
                        note text);
        INSERT INTO t SELECT g, g, now(), 'x', '10.0.0.0/8', 1, NULL FROM generate_series(1, {ROWS}) g;
        CREATE INDEX t_n ON t (n);
    """)
    return conn


def lint(*files: str, **config) -> list[tuple[int, str]]:
    """(line, rule) of the last file, after linting the earlier ones (their schema carries over)."""
    linter = Linter(get_rules(), LintConfig(**config))
    for text in files[:-1]:
        linter.lint_text("earlier.sql", text)
    return [(f.line, f.rule) for f in linter.lint_text("m.sql", files[-1])
            if f.rule not in ("require-lock-timeout", "prefer-robust-stmts")]


SCHEMA = ("CREATE TABLE users (id int PRIMARY KEY);\nCREATE TABLE t (id int NOT NULL, n int, ts timestamp(3), "
          "name varchar(10), net cidr, user_id int, note text);\n")


def filenode(conn, table) -> int:
    query = "SELECT relfilenode FROM pg_class WHERE oid = %s" + ("" if isinstance(table, int) else "::regclass")
    return conn.execute(query, (table,)).fetchone()[0]


def observe(conn, sql: str, table: str = "t") -> dict:
    """Run ``sql`` in a transaction on ``table``: rewrite, scans and strongest lock; roll back."""
    table = conn.execute("SELECT %s::regclass::oid", (table,)).fetchone()[0]  # survives a rename
    before = filenode(conn, table)
    conn.execute("BEGIN")
    try:
        scans0 = conn.execute("SELECT pg_stat_get_xact_numscans(%s)", (table,)).fetchone()[0]
        conn.execute(sql)
        scans = conn.execute("SELECT pg_stat_get_xact_numscans(%s)", (table,)).fetchone()[0] - scans0
        modes = [MODES[m] for (m,) in conn.execute(
            "SELECT mode FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation' "
            "AND relation = %s AND granted", (table,)).fetchall()]
        after = filenode(conn, table)
    finally:
        conn.execute("ROLLBACK")
    return {"rewrite": after != before, "scans": scans, "lock": max(modes, key=ORDER.index) if modes else None}


def sqlstate(conn, sql: str) -> str | None:
    import psycopg

    try:
        conn.execute(sql)
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


# ---- false positives removed ---------------------------------------------------------------


def test_widening_precision_or_length_is_no_rewrite(db):
    # PostgreSQL: timestamp(3) -> timestamp(6), a longer varchar and cidr -> inet are binary coercible
    for change in ("ALTER COLUMN ts TYPE timestamp(6)", "ALTER COLUMN name TYPE varchar(20)",
                   "ALTER COLUMN net TYPE inet", "ALTER COLUMN ts TYPE timestamp"):
        assert observe(db, f"ALTER TABLE t {change}")["rewrite"] is False, change
        assert lint(SCHEMA, f"ALTER TABLE t {change};") == [], change
    # ...a lower precision rounds every value: a rewrite, reported
    assert observe(db, "ALTER TABLE t ALTER COLUMN ts TYPE timestamp(0)")["rewrite"] is True
    assert lint(SCHEMA, "ALTER TABLE t ALTER COLUMN ts TYPE timestamp(0);") == [(1, "changing-column-type")]


def test_vacuum_full_false_is_a_plain_vacuum(db):
    # PostgreSQL reads (FULL false) as off: no new relfilenode
    before = filenode(db, "t")
    db.execute("VACUUM (FULL false) t")
    assert filenode(db, "t") == before
    assert lint("VACUUM (FULL false) t;") == []
    db.execute("VACUUM (FULL) t")
    assert filenode(db, "t") != before
    assert lint("VACUUM (FULL) t;") == [(1, "table-rewrite")]


def test_reindex_system_is_not_told_to_use_concurrently(db):
    # PostgreSQL: "cannot reindex system catalogs concurrently" (0A000)
    dbname = db.execute("SELECT current_database()").fetchone()[0]
    assert sqlstate(db, f"REINDEX SYSTEM CONCURRENTLY {dbname}") == "0A000"
    (finding,) = [f for f in Linter(get_rules(), LintConfig()).lint_text("m.sql", f"REINDEX SYSTEM {dbname};")
                  if f.rule == "require-concurrent-reindex"]
    assert "cannot reindex system catalogs concurrently" in finding.help


def test_add_column_references_without_default_does_not_scan(db):
    # PostgreSQL skips validating a foreign key on a new column: every value is NULL
    assert observe(db, "ALTER TABLE t ADD COLUMN owner int REFERENCES users (id)")["scans"] == 0
    assert lint("ALTER TABLE t ADD COLUMN owner int REFERENCES users (id);") == []
    # with a default there are values to check: a scan, reported
    assert observe(db, "ALTER TABLE t ADD COLUMN owner int DEFAULT 1 REFERENCES users (id)")["scans"] >= 1
    assert lint("ALTER TABLE t ADD COLUMN owner int DEFAULT 1 REFERENCES users (id);") == \
        [(1, "adding-foreign-key-constraint")]
    # ADD CONSTRAINT FOREIGN KEY on an existing column scans, under SHARE ROW EXCLUSIVE on both tables
    seen = observe(db, "ALTER TABLE t ADD CONSTRAINT t_user_fk FOREIGN KEY (user_id) REFERENCES users (id)")
    assert seen["scans"] >= 1 and seen["lock"] == "SHARE ROW EXCLUSIVE"


def test_prefer_robust_stmts_false_positives():
    # DROP CONSTRAINT IF EXISTS in an earlier statement makes the ADD rerunnable
    assert [r for _, r in lint_all("ALTER TABLE t DROP CONSTRAINT IF EXISTS c;\n"
                                   "ALTER TABLE t ADD CONSTRAINT c CHECK (n > 0) NOT VALID;\n")
            if r == "prefer-robust-stmts"] == []
    # a temporary table dies with the failed session; an unnamed index cannot say IF NOT EXISTS
    assert lint_all("CREATE TEMP TABLE x (a int) ON COMMIT DROP;\nCREATE INDEX CONCURRENTLY ON t (n);\n") == []


def lint_all(sql: str) -> list[tuple[int, str]]:
    return [(f.line, f.rule) for f in Linter(get_rules(), LintConfig()).lint_text("m.sql", sql)]


# ---- misses added ---------------------------------------------------------------------------


def test_inline_check_on_a_new_column_scans_the_table(db):
    # PostgreSQL validates a CHECK added with ADD COLUMN against every existing row
    assert observe(db, "ALTER TABLE t ADD COLUMN score int CHECK (score > 0)")["scans"] >= 1
    assert sqlstate(db, "ALTER TABLE t ADD COLUMN score int DEFAULT 0 CHECK (score > 0)") == "23514"
    assert lint("ALTER TABLE t ADD COLUMN score int CHECK (score > 0);") == [(1, "constraint-missing-not-valid")]


def test_primary_key_using_index_on_a_nullable_column_scans(db):
    # ADD PRIMARY KEY USING INDEX sets NOT NULL on its columns: a scan for NULLs
    db.execute("CREATE UNIQUE INDEX t_n_key ON t (n); CREATE UNIQUE INDEX t_id_key ON t (id)")
    assert observe(db, "ALTER TABLE t ADD CONSTRAINT t_pkey PRIMARY KEY USING INDEX t_n_key")["scans"] >= 1
    db.execute("UPDATE t SET n = NULL WHERE id = 1")
    assert sqlstate(db, "ALTER TABLE t ADD CONSTRAINT t_pkey PRIMARY KEY USING INDEX t_n_key") == "23502"
    indexes = "CREATE UNIQUE INDEX CONCURRENTLY t_n_key ON t (n);\nCREATE UNIQUE INDEX CONCURRENTLY t_id_key ON t (id);\n"
    assert lint(SCHEMA, indexes + "ALTER TABLE t ADD CONSTRAINT t_pkey PRIMARY KEY USING INDEX t_n_key;") == \
        [(3, "adding-serial-primary-key-field")]
    # id is declared NOT NULL: nothing to scan, nothing reported
    assert lint(SCHEMA, indexes + "ALTER TABLE t ADD CONSTRAINT t_pkey PRIMARY KEY USING INDEX t_id_key;") == []


def test_reindex_concurrently_false_is_a_blocking_reindex(db):
    # (CONCURRENTLY false) is the plain REINDEX: it runs in a transaction block and takes SHARE on the table
    assert observe(db, "REINDEX (CONCURRENTLY false) TABLE t")["lock"] == "SHARE"
    assert lint("REINDEX (CONCURRENTLY false) TABLE t;") == [(1, "require-concurrent-reindex")]


def test_commit_and_chain_then_create_index_concurrently_fails(pg, db):
    # COMMIT AND CHAIN opens the next transaction at once: CONCURRENTLY fails with 25001
    db.execute("BEGIN")
    db.execute("COMMIT AND CHAIN")
    try:
        assert sqlstate(db, "CREATE INDEX CONCURRENTLY t_note ON t (note)") == "25001"
    finally:
        db.execute("ROLLBACK")
    sql = "BEGIN;\nSELECT 1;\nCOMMIT AND CHAIN;\nCREATE INDEX CONCURRENTLY t_note ON t (note);\nCOMMIT;\n"
    assert (4, "ban-concurrent-index-creation-in-transaction") in lint(sql)


def test_a_select_while_holding_access_exclusive_blocks_readers(pg, db):
    import psycopg

    _, server = pg
    db.execute("BEGIN")
    try:
        db.execute("ALTER TABLE t ADD COLUMN flag bool")
        db.execute("SELECT count(*) FROM t")
        with psycopg.connect(**server.conninfo(), autocommit=True) as other:
            other.execute("SET lock_timeout = '200ms'")
            assert sqlstate(other, "SELECT count(*) FROM s.t") == "55P03"
    finally:
        db.execute("ROLLBACK")
    sql = "BEGIN;\nALTER TABLE t ADD COLUMN flag bool;\nSELECT count(*) FROM t;\nCOMMIT;\n"
    assert (3, "work-after-access-exclusive") in lint(sql)


def test_a_json_column_breaks_select_distinct(db):
    # json has no equality operator (42883)
    db.execute("ALTER TABLE t ADD COLUMN doc json")
    assert sqlstate(db, "SELECT DISTINCT * FROM t") == "42883"
    assert lint("ALTER TABLE t ADD COLUMN doc json;") == [(1, "adding-json-column")]
    assert lint("ALTER TABLE t ADD COLUMN doc jsonb;") == []


def test_renaming_an_enum_value_breaks_the_old_label(db):
    db.execute("CREATE TYPE mood AS ENUM ('ok', 'sad')")
    db.execute("ALTER TYPE mood RENAME VALUE 'sad' TO 'unhappy'")
    assert sqlstate(db, "SELECT 'sad'::mood") == "22P02"
    assert lint("ALTER TYPE mood RENAME VALUE 'sad' TO 'unhappy';") == [(1, "renaming-enum-value")]


# ---- the lock levels the linter states ------------------------------------------------------

LOCK_CASES = [
    "CREATE INDEX t_note ON t (note)",
    "ALTER TABLE t ADD COLUMN extra int",
    "ALTER TABLE t ALTER COLUMN n SET STATISTICS 200",
    "ALTER TABLE t SET (fillfactor = 90)",
    "ALTER TABLE t ADD CONSTRAINT t_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID",
    "CREATE TRIGGER t_trg BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    "ALTER TABLE t ADD CONSTRAINT t_n_pos CHECK (n > 0) NOT VALID",
    "ALTER TABLE t ALTER COLUMN n SET NOT NULL",
    "DROP INDEX t_n",
    "TRUNCATE t",
    "LOCK TABLE t IN SHARE MODE",
]


@pytest.mark.parametrize("sql", LOCK_CASES)
def test_the_stated_lock_is_the_lock_postgresql_takes(db, sql):
    (stmt,) = parse_file("m.sql", sql + ";").statements
    assert statement_effect(stmt, (17, 0)).lock == observe(db, sql)["lock"], sql


def test_renaming_an_index_takes_share_update_exclusive_on_the_index(db):
    # PostgreSQL 12+: ALTER INDEX ... RENAME takes SHARE UPDATE EXCLUSIVE (on the index itself)
    (stmt,) = parse_file("m.sql", "ALTER INDEX t_n RENAME TO t_n2;").statements
    assert statement_effect(stmt).lock == observe(db, "ALTER INDEX t_n RENAME TO t_n2", "t_n")["lock"]


def test_validate_constraint_takes_share_update_exclusive(db):
    db.execute("ALTER TABLE t ADD CONSTRAINT t_n_pos CHECK (n > 0) NOT VALID")
    seen = observe(db, "ALTER TABLE t VALIDATE CONSTRAINT t_n_pos")
    (stmt,) = parse_file("m.sql", "ALTER TABLE t VALIDATE CONSTRAINT t_n_pos;").statements
    assert seen["lock"] == statement_effect(stmt).lock == "SHARE UPDATE EXCLUSIVE" and seen["scans"] >= 1


# ---- --plan: every plan runs, step by step, on tables with rows, and ends at the original schema --

from pathlib import Path  # noqa: E402

from compose_atomic.lint.plan import plan_source, step_sql  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "lint_corpus"
PLAN_SETUP = """
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE TYPE mood AS ENUM ('ok', 'sad');
CREATE TABLE accounts (id bigint PRIMARY KEY);
INSERT INTO accounts SELECT generate_series(1, 50);
CREATE TABLE users (id int PRIMARY KEY, email text, name text, legacy_flag bool, handle_seed int);
INSERT INTO users SELECT g, 'u' || g || '@example.com', 'n' || g, true, g FROM generate_series(1, 3000) g;
CREATE INDEX users_email_idx ON users (email);
CREATE TABLE orders (id int PRIMARY KEY, user_id int, amount int, created_at timestamptz, qty int, price_cents int);
INSERT INTO orders SELECT g, 1 + g % 3000, 1 + g % 7, now(), 1, 100 FROM generate_series(1, 3000) g;
CREATE TABLE audit_log (id int, body text);
INSERT INTO audit_log SELECT g, 'x' FROM generate_series(1, 3000) g;
CREATE TABLE events (id int);
INSERT INTO events SELECT generate_series(1, 3000);
CREATE TABLE sessions (id int);
CREATE TABLE bookings (room int, during tstzrange);
INSERT INTO bookings SELECT g, tstzrange(now(), now() + interval '1 hour') FROM generate_series(1, 100) g;
CREATE TABLE measurements (at date, v int) PARTITION BY RANGE (at);
CREATE TABLE measurements_2023 PARTITION OF measurements FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE p (k int) PARTITION BY LIST (k);
CREATE TABLE c PARTITION OF p FOR VALUES IN (1);
CREATE INDEX i ON users (name);
CREATE UNLOGGED TABLE import_rows (id int);
CREATE TABLE "Users" (email text);
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."My Table" ("Col" int);
CREATE FUNCTION generate_unique_changeme() RETURNS text LANGUAGE sql AS $$ SELECT md5(random()::text) $$;
CREATE TABLE site (id int PRIMARY KEY, name text);
INSERT INTO site SELECT g, 's' || g FROM generate_series(1, 3000) g;
"""
# Corpus files whose original cannot run on this server as written, and why (their plans still must run).
PLAN_SKIP = {
    "set_tablespace": "needs a tablespace fast_ssd, which a container does not have",
    "syntax_error_fallback": "does not parse: the plan copies it as is",
    "drop_database": "a cluster-level object",
    "required_field": "NOT NULL without a default fails on a table with rows (23502) and no plan can invent the "
                      "value: the plan keeps it and adding-required-field reports it",
}
# Per-case changes to the shared setup, applied to both databases.
PLAN_EXTRA = {"index_create": "DROP INDEX users_email_idx", "rename_table": "DROP TABLE accounts CASCADE"}
# Written for the plan (issue #14): the Lemmy instance-actor migration (LemmyNet/lemmy,
# migrations/2022-01-28-104106_instance-actor/up.sql) and the NOT VALID pairs that must not appear.
PLAN_CASES = {
    "lemmy_instance_actor": """ALTER TABLE site
    ADD COLUMN actor_id varchar(255) NOT NULL UNIQUE DEFAULT generate_unique_changeme (),
    ADD COLUMN last_refreshed_at timestamp NOT NULL DEFAULT now(),
    ADD COLUMN inbox_url varchar(255) NOT NULL DEFAULT generate_unique_changeme (),
    ADD COLUMN private_key text,
    ADD COLUMN public_key text NOT NULL DEFAULT generate_unique_changeme ();
""",
    "fk_on_new_column": "ALTER TABLE orders ADD COLUMN account_id bigint REFERENCES accounts (id);\n",
    "fk_and_check_with_values": "ALTER TABLE orders ADD COLUMN account_id bigint DEFAULT 1 REFERENCES accounts (id), "
                                "ADD COLUMN score int DEFAULT 1 CHECK (score > 0);\n",
    "volatile_not_null_pk": "ALTER TABLE audit_log ADD COLUMN uid uuid NOT NULL DEFAULT gen_random_uuid();\n"
                            "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email), "
                            "ALTER COLUMN name SET NOT NULL;\n",
}


def _plan_cases():
    out = []
    for path in sorted(CORPUS.glob("unsafe/*.sql")):
        options = []
        for line in path.read_text().splitlines()[:3]:
            if line.startswith("-- options:"):
                options = line.split(":", 1)[1].split()
        config = LintConfig(assume_in_transaction="--assume-in-transaction" in options)
        if "--pg-version" in options:
            from compose_atomic.lint import parse_pg_version

            config.pg_version = parse_pg_version(options[options.index("--pg-version") + 1])
        out.append(pytest.param(path.read_text(), config, id=path.stem,
                                marks=[pytest.mark.skip(reason=PLAN_SKIP[path.stem])] if path.stem in PLAN_SKIP else []))
    out += [pytest.param(sql, LintConfig(), id=name) for name, sql in PLAN_CASES.items()]
    return out


@pytest.fixture(scope="module")
def template(pg):
    conn, _ = pg
    conn.execute("DROP DATABASE IF EXISTS plan_template")
    conn.execute("CREATE DATABASE plan_template")
    import psycopg

    _, server = pg
    with psycopg.connect(**{**server.conninfo(), "dbname": "plan_template"}, autocommit=True) as setup:
        setup.execute(PLAN_SETUP)
    return "plan_template"


def _fresh(pg, template: str, name: str):
    import psycopg

    conn, server = pg
    conn.execute(f"DROP DATABASE IF EXISTS {name}")
    conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    return psycopg.connect(**{**server.conninfo(), "dbname": name}, autocommit=True)


def _schema(conn) -> dict:
    """What a migration changes, names of generated objects left out."""
    q = lambda sql: sorted(tuple(r) for r in conn.execute(sql).fetchall())  # noqa: E731
    where = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    return {
        "columns": q(f"""SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                           coalesce(pg_get_expr(d.adbin, d.adrelid), ''), a.attgenerated, a.attidentity
                         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                         JOIN pg_namespace n ON n.oid = c.relnamespace
                         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                         WHERE {where} AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped"""),
        "constraints": q(f"""SELECT c.relname, k.contype, pg_get_constraintdef(k.oid), k.convalidated
                             FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
                             JOIN pg_namespace n ON n.oid = c.relnamespace
                             WHERE {where} AND k.contype <> 'n'"""),
        "indexes": q(f"""SELECT t.relname, regexp_replace(pg_get_indexdef(i.indexrelid), 'INDEX \\S+ ON', 'INDEX ON'),
                           i.indisvalid
                         FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
                         JOIN pg_namespace n ON n.oid = t.relnamespace WHERE {where}"""),
        "enums": q("SELECT enumlabel FROM pg_enum"),
    }


def _run_original(conn, text: str, config: LintConfig) -> str | None:
    """The file as its runner runs it: statement by statement, in one transaction if the runner wraps it."""
    import psycopg

    statements = [s.text for s in parse_file("m.sql", text).statements]
    if config.assume_in_transaction:
        statements = ["BEGIN", *statements, "COMMIT"]
    try:
        for sql in statements:
            conn.execute(sql)
    except psycopg.Error as exc:
        conn.execute("ROLLBACK")
        return exc.sqlstate
    return None


@pytest.mark.parametrize("text, config", _plan_cases())
def test_every_plan_runs_step_by_step_on_a_table_with_rows_and_ends_at_the_same_schema(pg, template, text, config,
                                                                                       request):
    import psycopg

    plan = plan_source("m.sql", text, config)
    extra = PLAN_EXTRA.get(request.node.callspec.id)
    with _fresh(pg, template, "plan_orig") as orig:
        if extra:
            orig.execute(extra)
        failed = _run_original(orig, text, config)
        expected = _schema(orig)
    with _fresh(pg, template, "plan_new") as new:
        if extra:
            new.execute(extra)
        for n, step in enumerate(plan.steps, 1):
            for sql in step_sql(step, plan.lock_timeout):
                try:
                    new.execute(sql)
                except psycopg.Error as exc:
                    pytest.fail(f"step {n} failed with {exc.sqlstate}: {sql}\n{exc}")
        got = _schema(new)
    if failed is None:
        assert got == expected
    else:
        # the original fails on this server (e.g. 25001: CONCURRENTLY inside BEGIN, 23502: NOT NULL
        # without a default on rows); the plan is the version that runs
        assert failed in ("25001", "23502", "0A000"), failed
    # a plan adds NOT VALID + VALIDATE only where the original scans
    if text == PLAN_CASES["fk_on_new_column"]:  # the original takes no scan (test above)
        assert not any("VALIDATE" in s for step in plan.steps for s in step.statements), plan.steps


# ---- --trace against a database the user points at ------------------------------------------

TRACED = """SET lock_timeout = '2s';
ALTER TABLE s.t ALTER COLUMN n SET NOT NULL;
ALTER TABLE s.t ADD CONSTRAINT t_id_positive CHECK (id > 0);
ALTER TABLE s.t ALTER COLUMN name TYPE text;
"""


def _traced(proc) -> dict[int, list[dict]]:
    import json

    assert "Traceback" not in proc.stderr, proc.stderr
    by_line: dict[int, list[dict]] = {}
    for f in json.loads(proc.stdout):
        by_line.setdefault(f["line"], []).append(f)
    return by_line


@pytest.mark.parametrize("how", ["database-url", "pg-variables"])
def test_trace_on_any_database_rechecks_scans_and_rewrites(pg, db, tmp_path, how):
    from conftest import run_cli

    _, server = pg
    # a valid CHECK the linter cannot see (it is in the database, not in the files): SET NOT NULL skips its scan
    db.execute("ALTER TABLE t ADD CONSTRAINT t_n_not_null CHECK (n IS NOT NULL)")
    (tmp_path / "m.sql").write_text(TRACED)
    env = {"PGPASSWORD": server.password}  # never in argv
    args = ["lint", "--trace", "--format", "json", "m.sql"]
    if how == "database-url":
        args[2:2] = ["--database-url", f"postgresql://postgres@127.0.0.1:{server.port}/trace"]
    else:
        env.update(PGHOST="127.0.0.1", PGPORT=str(server.port), PGUSER="postgres", PGDATABASE="trace")
    proc = run_cli(*args, cwd=tmp_path, env=env, timeout=120)
    by_line = _traced(proc)
    assert f"127.0.0.1:{server.port}/trace" in proc.stderr and "scratch copy" in proc.stderr
    # SET NOT NULL: statically a scan, on this database none (the valid CHECK): dropped
    assert "adding-not-nullable-field" not in [f["rule"] for f in by_line.get(2, [])]
    # ADD CHECK: the scan happened, confirmed with the table named
    (check,) = [f for f in by_line[3] if f["rule"] == "constraint-missing-not-valid"]
    assert "Trace: scanned t" in check["message"] and check["trace"]["scanned"] == ["t"]
    # varchar -> text: no rewrite on the real table: dropped
    assert "changing-column-type" not in [f["rule"] for f in by_line.get(4, [])]
    # everything was rolled back
    assert db.execute("SELECT count(*) FROM pg_constraint WHERE conname = 't_id_positive'").fetchone()[0] == 0
    assert proc.returncode == 1  # the CHECK without NOT VALID is still an error


def test_trace_needs_a_database_and_says_so(tmp_path):
    from conftest import run_cli

    (tmp_path / "m.sql").write_text("SELECT 1;\n")
    clean = {"PGHOST": "", "PGDATABASE": "", "PGSERVICE": "", "PGHOSTADDR": ""}
    proc = run_cli("lint", "--trace", "m.sql", cwd=tmp_path, env=clean)
    assert proc.returncode == 2 and "--database-url" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("lint", "--database-url", "postgresql://x@127.0.0.1:1/x", "m.sql", cwd=tmp_path)
    assert proc.returncode == 2 and "goes with --trace" in proc.stderr
    proc = run_cli("lint", "--trace", "--database-url", "postgresql://x@127.0.0.1:1/x", "m.sql", cwd=tmp_path,
                   env=clean, timeout=60)
    assert proc.returncode == 1 and "could not connect to 127.0.0.1:1/x" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
