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
