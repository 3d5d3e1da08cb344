"""--trace on a real PostgreSQL: one throwaway container of the project's database image."""

from __future__ import annotations

import json
import time

import pytest

from conftest import IMAGE_POSTGRES, docker, run_cli

pytestmark = pytest.mark.docker

SETUP = """
CREATE TABLE accounts (id int PRIMARY KEY, email varchar(100), note text, parent_id int);
INSERT INTO accounts SELECT g, 'u' || g || '@example.com', 'n' FROM generate_series(1, 500) g;
CREATE INDEX accounts_email_idx ON accounts (email);
"""
# Planned by --plan, then applied by --setup on the same container: the recipes really run.
TO_PLAN = """ALTER TABLE accounts ADD CONSTRAINT accounts_email_key UNIQUE (email), ALTER COLUMN note SET NOT NULL;
CREATE INDEX accounts_note_idx ON accounts (note);
ALTER TABLE accounts ADD CONSTRAINT accounts_parent_fk FOREIGN KEY (parent_id) REFERENCES accounts (id);
"""
MIGRATION = """BEGIN;
SET LOCAL lock_timeout = '2s';
ALTER TABLE accounts ALTER COLUMN id TYPE bigint;
ALTER TABLE accounts ALTER COLUMN email TYPE text;
CREATE INDEX CONCURRENTLY accounts_note_idx ON accounts (note);
ALTER TABLE accounts ADD COLUMN created_at timestamptz DEFAULT clock_timestamp();
ALTER TABLE missing_table ADD COLUMN x int;
INSERT INTO accounts (id, email, note) VALUES (100000, 'u1@example.com', 'dup');
INSERT INTO accounts (id, email, note) VALUES (100001, 'new@example.com', NULL);
INSERT INTO accounts (id, email, note, parent_id) VALUES (100002, 'new2@example.com', 'x', 424242);
DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index WHERE NOT indisvalid) THEN RAISE 'invalid index'; END IF; END $$;
COMMIT;
"""


def test_trace_tells_a_rewrite_from_a_catalog_only_change(tmp_path, project_name):
    (tmp_path / "compose.yaml").write_text(
        "services:\n  db:\n    image: ${POSTGRES_IMAGE:-postgres:17-alpine}\n")
    (tmp_path / "to_plan.sql").write_text(TO_PLAN)
    plan = run_cli("lint", "--plan", "to_plan.sql", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    (tmp_path / "setup.sql").write_text(SETUP + plan.stdout)  # --setup fails (exit 2) if a step fails
    (tmp_path / "m.sql").write_text(MIGRATION)
    proc = run_cli("-p", project_name, "lint", "--trace", "--service", "db", "--setup", "setup.sql",
                   "--format", "json", "m.sql", cwd=tmp_path, env={"POSTGRES_IMAGE": IMAGE_POSTGRES}, timeout=180)
    assert proc.returncode == 1, proc.stderr
    findings = json.loads(proc.stdout)
    by_line = {}
    for f in findings:
        by_line.setdefault(f["line"], []).append(f)
    # varchar -> text: static analysis flags it, the database shows no rewrite: dropped
    assert "changing-column-type" not in [f["rule"] for f in by_line.get(4, [])]
    # int -> bigint: confirmed, with the locks really taken (the index is rebuilt too)
    (change,) = [f for f in by_line[3] if f["rule"] == "changing-column-type"]
    assert "Trace: rewrote accounts" in change["message"]
    assert change["trace"]["rewritten"] == ["accounts"]
    assert "accounts_pkey" in change["trace"]["indexes_rebuilt"]
    assert "ACCESS EXCLUSIVE on accounts" in change["lock"] and change["lock"].endswith("(traced)")
    # CONCURRENTLY in the transaction: PostgreSQL's 25001 confirms the static finding
    assert [f["rule"] for f in by_line[5]] == ["ban-concurrent-index-creation-in-transaction"]
    assert by_line[5][0]["trace"]["sqlstate"] == "25001"
    # clock_timestamp() default: volatile, really rewrites
    assert any(f["rule"] == "adding-field-with-default" and "Trace: rewrote" in f["message"] for f in by_line[6])
    # an object the setup did not create: the migration would fail at deploy time
    (failed,) = [f for f in by_line[7] if f["rule"] == "trace-failed"]
    assert "42P01" in failed["message"]
    # the planned steps ran: the unique index, NOT NULL and the foreign key are enforced, all indexes valid
    assert [f["trace"]["sqlstate"] for line in (8, 9, 10) for f in by_line[line] if f["rule"] == "trace-failed"] \
        == ["23505", "23502", "23503"]
    assert not [f for f in by_line.get(11, []) if f["rule"] == "trace-failed"]
    # the throwaway container is gone
    left = docker("ps", "-a", "--filter", f"name={project_name}-lint-trace", "--format", "{{.Names}}").stdout
    assert left.strip() == ""


def test_trace_needs_a_known_service_with_an_image(tmp_path, project_name):
    (tmp_path / "compose.yaml").write_text("services:\n  database:\n    image: postgres\n")
    (tmp_path / "m.sql").write_text("SELECT 1;\n")
    proc = run_cli("-p", project_name, "lint", "--trace", "--service", "databse", "m.sql", cwd=tmp_path)
    assert proc.returncode == 2 and "did you mean" in proc.stderr.lower() and "Traceback" not in proc.stderr


def test_trace_with_a_missing_image_fails_cleanly(tmp_path, project_name):
    (tmp_path / "compose.yaml").write_text("services:\n  db:\n    image: compose-atomic-testbed/no-such-image:1\n")
    (tmp_path / "m.sql").write_text("SELECT 1;\n")
    proc = run_cli("-p", project_name, "lint", "--trace", "--service", "db", "m.sql", cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and "could not start a container" in proc.stderr and "Traceback" not in proc.stderr
    left = docker("ps", "-a", "--filter", f"name={project_name}-lint-trace", "--format", "{{.Names}}").stdout
    assert left.strip() == ""


def test_trace_from_the_latest_snapshot_sees_the_real_schema(tmp_path, project_name):
    (tmp_path / "compose.yaml").write_text(
        f"services:\n  db:\n    image: {IMAGE_POSTGRES}\n"
        "    environment: {POSTGRES_PASSWORD: pw-for-tests, POSTGRES_DB: app}\n"
        "    healthcheck: {test: [CMD, pg_isready, -U, postgres], interval: 1s, retries: 30}\n")
    (tmp_path / "m.sql").write_text("ALTER TABLE accounts ALTER COLUMN id TYPE bigint;\n")
    missing = run_cli("-p", project_name, "lint", "--trace", "--service", "db", "--from-snapshot", "latest",
                      "m.sql", cwd=tmp_path)
    assert missing.returncode == 2 and "no snapshot of service 'db'" in missing.stderr

    assert run_cli("-p", project_name, "up", "-d", "--wait", cwd=tmp_path).returncode == 0
    # the image's first start runs its init scripts on a temporary server that pg_isready also
    # answers for: wait until the real one takes connections
    for _ in range(60):
        made = docker("exec", f"{project_name}-db-1", "psql", "-U", "postgres", "-d", "app", "-v", "ON_ERROR_STOP=1",
                      "-c", "CREATE TABLE accounts (id int PRIMARY KEY); "
                      "INSERT INTO accounts SELECT generate_series(1, 100);", check=False)
        if made.returncode == 0:
            break
        time.sleep(0.5)
    assert made.returncode == 0, made.stderr
    snap = run_cli("-p", project_name, "db", "snapshot", "--service", "db", cwd=tmp_path)
    assert snap.returncode == 0, snap.stderr

    proc = run_cli("-p", project_name, "lint", "--trace", "--service", "db", "--from-snapshot", "latest",
                   "--format", "json", "m.sql", cwd=tmp_path, timeout=180)
    assert "Traceback" not in proc.stderr
    findings = json.loads(proc.stdout)
    traced = [f for f in findings if f.get("trace")]
    assert traced, findings
    assert traced[0]["trace"].get("rewrote") or "rewr" in json.dumps(traced[0]["trace"]), traced[0]["trace"]
