"""Pure functions of the migration guard: retention, statement splitting, write deltas, settings."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from compose_atomic.migrate import introspect
from compose_atomic.migrate.restore import describe_writes, pending_writes
from compose_atomic.migrate.snapshot import PRE_MIGRATE, Snapshot, snapshot_name, to_prune
from compose_atomic.migrate.sqlrunner import MigrationFile, split_statements

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)


def snap(hours_ago: float, reason: str = PRE_MIGRATE, name: str | None = None) -> Snapshot:
    created = NOW - dt.timedelta(hours=hours_ago)
    return Snapshot(Path(f"/x/{name or hours_ago}.dump"),
                    {"name": name or str(hours_ago), "created": created.isoformat(), "reason": reason})


def test_retention_keeps_the_last_n_and_everything_younger_than_a_day():
    snaps = [snap(h) for h in (100, 90, 80, 70, 30, 20, 10, 1)]
    pruned = {s.name for s in to_prune(snaps, keep=3, now=NOW)}
    # the newest 3 (20, 10, 1 hours) are kept by count, 30 hours is older than a day
    assert pruned == {"100", "90", "80", "70", "30"}
    assert {s.name for s in to_prune(snaps, keep=7, now=NOW)} == {"100"}
    assert to_prune([snap(h) for h in (23, 12, 5, 1)], keep=1, now=NOW) == []


def test_retention_never_touches_manual_snapshots():
    snaps = [snap(500, reason="manual", name="mine"), snap(400), snap(300)]
    assert [s.name for s in to_prune(snaps, keep=1, now=NOW)] == ["400"]


def test_snapshot_names_are_safe_file_names():
    name = snapshot_name("db", PRE_MIGRATE, "web/api", NOW)
    assert name == "db-20261126T120000Z-pre-migrate-web_api"


def test_statements_are_split_with_their_lines_and_comments_dropped():
    text = ("-- header\nCREATE TABLE t (id int);\n\nCREATE FUNCTION f() RETURNS int AS $$\n"
            "  SELECT 1; SELECT 2;\n$$ LANGUAGE sql;\n/* only a comment */\nSELEC broken;\n")
    stmts = split_statements(text)
    assert [s.line for s in stmts] == [2, 4, 8]
    assert stmts[1].text.startswith("CREATE FUNCTION") and "SELECT 2;" in stmts[1].text
    assert stmts[2].text == "SELEC broken;"


@pytest.mark.parametrize("sql, transactional", [
    ("ALTER TABLE t ADD COLUMN c int; UPDATE t SET c = 1;", True),
    ("CREATE INDEX CONCURRENTLY i ON t (c);", False),
    ("create unique index concurrently i on t (c);", False),
    ("DROP INDEX CONCURRENTLY i;", False),
    ("REINDEX TABLE CONCURRENTLY t;", False),
    ("VACUUM t;", False),
    ("BEGIN; UPDATE t SET c = 2; COMMIT;", False),
    ("CREATE TABLE concurrently_named (id int);", True),
    ("INSERT INTO t VALUES ('vacuum');", True),
])
def test_files_with_statements_that_cannot_run_in_a_transaction_are_detected(sql, transactional):
    mf = MigrationFile(Path("x.sql"), "x.sql", "0", split_statements(sql))
    assert mf.transactional is transactional


def test_writes_between_counts_only_changes_and_new_tables():
    before = {"public.a": [10, 0, 0], "public.b": [5, 5, 5]}
    after = {"public.a": [12, 1, 0], "public.b": [5, 5, 5], "public.c": [3, 0, 0]}
    assert introspect.writes_between(before, after) == {"public.a": 3, "public.c": 3}
    # a counter that went backwards (stats reset) counts fully: err towards protecting data
    assert introspect.writes_between({"public.a": [10, 0, 0]}, {"public.a": [2, 0, 0]}) == {"public.a": 2}


def test_writes_during_the_migration_itself_are_the_migrations_own():
    manifest = {
        "counters": {"public.t": [100, 0, 0]},
        "migration": {"counters_before": {"public.t": [102, 0, 0]},       # 2 app writes before it
                      "counters_after": {"public.t": [102, 500, 0],       # the migration's backfill
                                         "public.new": [0, 0, 0]}},
    }
    now = {"public.t": [103, 500, 0], "public.new": [4, 0, 0]}             # 1 + 4 app writes after
    s = Snapshot(Path("/x.dump"), manifest)
    assert pending_writes(s, now) == {"public.t": 3, "public.new": 4}
    assert describe_writes({"public.t": 3, "public.new": 4}) == \
        "7 rows written since the snapshot in public.new (4), public.t (3)"
    # after a restore, the restored state is the new baseline
    manifest["baseline_counters"] = {"public.t": [103, 500, 0]}
    assert pending_writes(s, {"public.t": [103, 500, 0]}) == {}


def test_no_password_on_the_docker_command_line():
    from compose_atomic.migrate.database import Database

    db = Database(project=None, service="db", container="abc", dbname="app", user="app",
                  _password="hunter2-secret")
    argv = db.exec_argv("pg_dump", "-Fc", "-U", "app", "-d", "app")
    assert "hunter2-secret" not in " ".join(argv)
    assert argv[:4] == ["docker", "exec", "-e", "PGPASSWORD"]
    assert db.exec_env()["PGPASSWORD"] == "hunter2-secret"
    assert "hunter2-secret" not in repr(db)


def test_help_does_not_import_psycopg():
    code = ("import sys; from compose_atomic import cli; "
            "assert 'psycopg' not in sys.modules and 'sqlparse' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- the three cases -------------------------------------------------------------------


def test_classify_says_which_case_a_release_is_in():
    from compose_atomic.migrate.cases import RESTORE, UNDOABLE, UNKNOWN, classify

    adds = [("a.sql:1", "ALTER TABLE items ADD COLUMN price numeric"),
            ("a.sql:2", "CREATE TABLE audit (id int)"),
            ("a.sql:3", "INSERT INTO audit VALUES (1)"),
            ("a.sql:4", "CREATE INDEX CONCURRENTLY i ON items (price)"),
            ("a.sql:5", "ALTER TABLE items ADD CONSTRAINT c CHECK (price > 0) NOT VALID"),
            ("a.sql:6", "CREATE VIEW v AS SELECT 1"), ("a.sql:7", "CREATE TYPE m AS ENUM ('a')"),
            ("a.sql:8", "VACUUM items"), ("a.sql:9", "SET lock_timeout = '1s'")]
    verdict = classify(adds)
    assert verdict.case == UNDOABLE and str(verdict) == "undoable in place (9 statements)"
    assert str(classify([])) == "undoable in place (nothing pending)"
    for sql, reason in [("UPDATE items SET qty = 0", "UPDATE items changes rows of an existing table"),
                        ("ALTER TABLE items DROP COLUMN qty", "ALTER TABLE items DropColumn"),
                        ("ALTER TABLE items ALTER COLUMN qty TYPE bigint", "ALTER TABLE items AlterColumnType"),
                        ("DROP TABLE items", "DROP TABLE"), ("ALTER TABLE items RENAME TO goods", "RENAME TABLE"),
                        ("CREATE OR REPLACE VIEW v AS SELECT 2", "CREATE OR REPLACE"),
                        ("TRUNCATE items", "TRUNCATE")]:
        verdict = classify(adds + [("b.sql:1", sql)])
        assert verdict.case == RESTORE and reason in verdict.reasons[0], (sql, verdict.reasons)
    assert classify([("c.sql:1", "DO $$ BEGIN PERFORM 1; END $$")]).case == UNKNOWN
    assert classify([("c.sql:1", "INSERT INTO compose_atomic_migrations VALUES ('x')")]).case == UNDOABLE


def test_undo_plan_drops_dependents_first_and_leaves_what_goes_with_its_table():
    from compose_atomic.migrate import schemadiff

    def obj(kind, **kw):
        return {"kind": kind, "schema": "public", **kw}

    added = {
        "relation public.audit": obj("relation", name="audit", relkind="r", def_=None),
        "column public.audit.id": obj("column", table="audit", name="id", def_="int"),
        "constraint public.audit.audit_fk": obj("constraint", table="audit", name="audit_fk", contype="f"),
        "column public.items.price": obj("column", table="items", name="price", def_="numeric"),
        "index public.items_price": obj("index", table="items", name="items_price", valid=False, constraint=False),
        "constraint public.items.items_price_key": obj("constraint", table="items", name="items_price_key", contype="u"),
        "index public.items_price_key": obj("index", table="items", name="items_price_key", valid=True, constraint=True),
        "relation public.v": obj("relation", name="v", relkind="v"),
        "relation public.audit_id_seq": obj("relation", name="audit_id_seq", relkind="S"),
        "function public.f(a integer)": obj("function", name="f", args="a integer", prokind="f"),
        "type public.mood": obj("type", name="mood", typtype="e"),
    }
    steps = schemadiff.undo_plan(added)
    assert [s.what for s in steps] == [
        "view public.v", "constraint public.items.items_price_key", "INVALID index public.items_price",
        "column public.items.price", "table public.audit", "sequence public.audit_id_seq",
        "function public.f(a integer)", "type public.mood"]
    assert [s.concurrently for s in steps].count(True) == 1


def test_diff_tells_additions_from_changes_and_bookkeeping():
    from compose_atomic.migrate.schemadiff import diff

    before = {"column public.items.qty": {"kind": "column", "def": "integer"}}
    found = diff(before, {**before, "relation public.t": {"kind": "relation"}})
    assert found.only_additions and not found.empty
    found = diff(before, {"column public.items.qty": {"kind": "column", "def": "bigint"}})
    assert found.changed == ["column public.items.qty"] and not found.only_additions
    assert diff(before, {}).removed == ["column public.items.qty"]
    found = diff(before, before, {"public.django_migrations": ["a"]}, {"public.django_migrations": ["a", "b"]})
    assert found.bookkeeping == ["public.django_migrations"] and found.only_additions and not found.empty
    assert diff(before, before, {"public.django_migrations": ["a"]}, {"public.django_migrations": ["a"]}).empty


def test_docker_builders_for_the_migration_command_and_database_tools():
    from compose_atomic import docker

    cmd = docker.compose_oneoff("p", "/srv/p", "web", ["python3", "manage.py", "migrate"], name="p-web-migrate-1",
                                env=["PGAPPNAME=x"], timeout=60)
    assert cmd.argv == ("docker", "compose", "-f", "-", "-p", "p", "--project-directory", "/srv/p", "run", "--rm",
                        "--no-deps", "-T", "--name", "p-web-migrate-1", "-e", "PGAPPNAME=x", "web", "python3",
                        "manage.py", "migrate")
    assert cmd.changes and cmd.timeout == 60
    assert not docker.exec_in(["docker", "exec", "c", "pg_dump"]).changes


def test_a_command_that_updated_rows_of_an_existing_table_is_not_undone_in_place():
    from compose_atomic.migrate.guard import rows_changed_in_place

    before = {"public.notes_note": [20, 0, 0], "public.django_migrations": [10, 0, 0]}
    after = {"public.notes_note": [20, 20, 0], "public.django_migrations": [11, 0, 1],
             "public.notes_tag": [3, 1, 0]}  # a table the migration created: its rows go with it
    assert rows_changed_in_place({"counters_before": before, "counters_after": after}) == ["public.notes_note"]
    inserts_only = {"public.notes_note": [25, 0, 0], "public.django_migrations": [11, 0, 0]}
    assert rows_changed_in_place({"counters_before": before, "counters_after": inserts_only}) == []
    assert rows_changed_in_place({}) == []
