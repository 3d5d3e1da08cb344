"""Snapshot-guarded migrations against a real PostgreSQL container (one per module).

Every test starts from the same data set (reset_data) and compares checksums of
every table's rows (and of the column list) before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compose_atomic import hookimpl
from compose_atomic.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_ROLLED_BACK, OperationFailed, RollbackFailed, RolledBack
from compose_atomic.migrate import plugin
from conftest import IMAGE_BUSYBOX, IMAGE_POSTGRES, docker, run_cli

PASSWORD = "s3cret-Pw-9f2"

COMPOSE = """
name: {name}
x-atomic:
  state_dir: {state_dir}
services:
  db:
    image: {pg}
    environment:
      POSTGRES_USER: app
      POSTGRES_DB: app
      POSTGRES_PASSWORD_FILE: /run/pw
    volumes:
      - ./pw:/run/pw:ro
  web:
    image: {pg}
    entrypoint: []
    environment:
      PGHOST: {db_host}
      PGUSER: app
      PGDATABASE: app
      PGPASSWORD: {password}
    volumes:
      - ./migrations:/migrations:ro
    x-atomic:
      migrate:
        database: db
        command: [psql, -v, ON_ERROR_STOP=1, -q, --single-transaction, -f, /migrations/current.sql]
        timeout: {timeout}
        lock_timeout: 1m
        on_failure: {on_failure}
  api:
    image: {busybox}
    x-atomic:
      migrate:
        database: db
        sql: sql/*.sql
        timeout: {timeout}
"""


class Stack:
    def __init__(self, name: str, directory: Path):
        self.name = name
        self.dir = directory
        self.state_dir = directory / "state"
        # The engine is shared (and in swarm mode): its embedded DNS sometimes fails to
        # resolve "db" for a few seconds. The migration command gets the IP instead.
        self.db_host = "db"
        self.write(timeout="20s")

    def write(self, timeout: str = "20s", state_dir: Path | None = None, on_failure: str = "refuse") -> None:
        (self.dir / "compose.yaml").write_text(COMPOSE.format(
            name=self.name, state_dir=state_dir or self.state_dir, pg=IMAGE_POSTGRES,
            busybox=IMAGE_BUSYBOX, password=PASSWORD, timeout=timeout, db_host=self.db_host,
            on_failure=on_failure))

    def cli(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return run_cli("-p", self.name, *args, cwd=self.dir, **kw)

    def project(self):
        from compose_atomic.project import ComposeOptions, load_project

        return load_project(ComposeOptions(project_name=self.name, project_directory=str(self.dir)))

    def database(self):
        from compose_atomic.migrate.database import Database

        return Database.locate(self.project(), "db")

    def connect(self, dbname: str | None = None):
        return self.database().connect(dbname)


@pytest.fixture(scope="module")
def stack(docker_engine, tmp_path_factory):
    import uuid

    name = f"catest-mig-{uuid.uuid4().hex[:8]}"
    directory = tmp_path_factory.mktemp("migrate")
    (directory / "pw").write_text(PASSWORD + "\n")
    (directory / "migrations").mkdir()
    (directory / "sql").mkdir()
    s = Stack(name, directory)
    up = subprocess.run(["docker", "compose", "-p", name, "up", "-d", "--wait", "db"], cwd=directory,
                        capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stderr
    deadline = time.monotonic() + 60
    while True:
        try:
            s.connect().close()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    s.db_host = s.database().address()[0]
    s.write()
    yield s
    subprocess.run(["docker", "compose", "-p", name, "down", "-v", "--remove-orphans", "-t", "1"],
                   cwd=directory, capture_output=True, timeout=120)


def reset_data(stack: Stack, rows: int = 1000) -> None:
    """A known data set; the state dir emptied; no migration files."""
    import shutil

    shutil.rmtree(stack.state_dir, ignore_errors=True)
    for folder in ("sql", "migrations"):
        for f in (stack.dir / folder).iterdir():
            f.unlink()
    stack.write()
    conn = stack.connect()
    with conn:
        pid = conn.info.backend_pid
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        conn.execute("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, qty int)")
        conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, item_id int REFERENCES items, note text)")
        conn.execute("INSERT INTO items (name, qty) SELECT md5(i::text), i FROM generate_series(1, %s) i",
                     (rows,))
        conn.execute("INSERT INTO orders (item_id, note) SELECT i, repeat('x', i %% 50) "
                     "FROM generate_series(1, %s) i", (min(rows, 500),))
    wait_gone(stack, pid)


def wait_gone(stack: Stack, pid: int) -> None:
    """A backend flushes its write statistics as it exits: wait for that."""
    with stack.connect("postgres") as conn:
        for _ in range(100):
            if not conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
                return
            time.sleep(0.05)


def checksums(stack: Stack, dbname: str | None = None) -> dict[str, str]:
    """md5 of every user table's rows plus its column list; independent of our code."""
    with stack.connect(dbname) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1").fetchall()]
        out = {}
        for t in tables:
            cols = conn.execute("SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY ordinal_position) "
                                "FROM information_schema.columns WHERE table_schema || '.' || table_name = %s",
                                (t.replace('"', ''),)).fetchone()[0]
            data = conn.execute(f"SELECT md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) "
                                f"FROM {t} r").fetchone()[0]
            out[t] = f"{cols}/{data}"
        out["indexes"] = ",".join(r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1").fetchall())
    return out


def migration_sessions(stack: Stack) -> list:
    with stack.connect("postgres") as conn:
        return conn.execute("SELECT pid, state FROM pg_stat_activity "
                            "WHERE application_name LIKE 'compose-atomic-migrate%'").fetchall()


# ---- snapshots ------------------------------------------------------------------------


def test_snapshot_is_verified_private_and_restorable_elsewhere(stack):
    reset_data(stack)
    before = checksums(stack)
    proc = stack.cli("db", "snapshot", "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    dump = stack.state_dir / "snapshots" / f"{manifest['name']}.dump"
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert stat.S_IMODE(dump.parent.stat().st_mode) == 0o700
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == manifest["sha256"]
    assert manifest["size"] == dump.stat().st_size
    assert manifest["tables"] == {"public.items": 1000, "public.orders": 500}
    assert manifest["compression"] == ("zstd" if int(manifest["server_version"].split(".")[0]) >= 16 else "gzip")
    assert not list(dump.parent.glob(".*partial*"))
    assert PASSWORD not in proc.stdout + proc.stderr + dump.with_suffix(".json").read_text()

    listed = stack.cli("db", "snapshots", "--json")
    assert [s["name"] for s in json.loads(listed.stdout)] == [manifest["name"]]

    # restore beside the live database: same data, live untouched
    proc = stack.cli("db", "restore", manifest["name"], "--target-db", "copy1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert checksums(stack, "copy1") == before
    assert checksums(stack) == before

    # a damaged dump is refused before anything is touched
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    proc = stack.cli("db", "restore", "--latest", "--force")
    assert proc.returncode == EXIT_FAILED
    assert "damaged" in proc.stderr and "Traceback" not in proc.stderr
    assert checksums(stack) == before


NO_ZSTD_PG_DUMP = """#!/bin/sh
# pg_dump as built without zstd: it refuses --compress=zstd as the real one does
for arg in "$@"; do
  case "$arg" in --compress=zstd*) echo "pg_dump: error: this build does not support compression with zstd" >&2; exit 1;; esac
done
exec "$0.real" "$@"
"""


def test_a_pg_dump_built_without_zstd_gives_a_gzip_snapshot(stack, tmp_path):
    """pg_dump 16+ is asked for zstd; one built without it refuses, and the snapshot is taken
    with its default (gzip), verified and restorable as any other."""
    from conftest import docker

    reset_data(stack)
    before = checksums(stack)
    db = f"{stack.name}-db-1"
    bindir = docker("exec", db, "pg_config", "--bindir").stdout.strip()
    if int(docker("exec", db, "pg_dump", "--version").stdout.split()[-1].split(".")[0]) < 16:
        pytest.skip("pg_dump before 16 has no zstd")
    wrapper = tmp_path / "pg_dump"
    wrapper.write_text(NO_ZSTD_PG_DUMP)
    wrapper.chmod(0o755)
    docker("exec", "-u", "root", db, "mv", f"{bindir}/pg_dump", f"{bindir}/pg_dump.real")
    try:
        docker("cp", str(wrapper), f"{db}:{bindir}/pg_dump")
        proc = stack.cli("db", "snapshot", "--json")
    finally:
        docker("exec", "-u", "root", db, "mv", f"{bindir}/pg_dump.real", f"{bindir}/pg_dump")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["compression"] == "gzip" and "Traceback" not in proc.stderr
    proc = stack.cli("db", "restore", manifest["name"], "--target-db", "copy_gzip", "--json")
    assert proc.returncode == 0, proc.stderr
    assert checksums(stack, "copy_gzip") == before


def test_disk_too_small_for_the_snapshot_fails_cleanly(stack, tmp_path):
    reset_data(stack, rows=60000)  # ~6 MB of table data
    with stack.connect() as conn:  # ~3 MB that no compression shrinks (the estimate assumes 35%)
        conn.execute("CREATE TABLE blobs AS SELECT i, (SELECT decode(string_agg(md5(random()::text || i || g), ''), "
                     "'hex') FROM generate_series(1, 62) g) AS b FROM generate_series(1, 3000) i")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)], check=True)
    try:
        (small / "snapshots").mkdir()
        keep = small / "snapshots" / "older.dump"
        keep.write_bytes(b"x" * 1000)
        stack.write(state_dir=small)
        # 1. the estimate does not fit: refused before dumping
        proc = stack.cli("db", "snapshot")
        assert proc.returncode == EXIT_FAILED, proc.stderr
        assert "not enough space" in proc.stderr and "Traceback" not in proc.stderr
        assert "Dumping" not in proc.stderr
        assert sorted(p.name for p in (small / "snapshots").iterdir()) == ["older.dump"]
        # 2. the estimate fits but the dump does not: ENOSPC is caught, the partial file removed
        with stack.connect() as conn:
            conn.execute("DROP TABLE items CASCADE")
        subprocess.run(["mount", "-o", "remount,size=2m", str(small)], check=True)
        proc = stack.cli("db", "snapshot")
        assert proc.returncode == EXIT_FAILED, proc.stderr
        assert "disk filled up" in proc.stderr and "Traceback" not in proc.stderr
        assert sorted(p.name for p in (small / "snapshots").iterdir()) == ["older.dump"]
        assert keep.read_bytes() == b"x" * 1000
    finally:
        subprocess.run(["umount", str(small)], check=False)
        stack.write()


# ---- the built-in SQL runner -------------------------------------------------------------


def test_syntax_error_halfway_through_a_non_transactional_file_is_restored(stack):
    reset_data(stack)
    before = checksums(stack)
    (stack.dir / "sql" / "001_add_column.sql").write_text(
        "ALTER TABLE items ADD COLUMN price numeric;\nUPDATE items SET price = qty * 2;\n")
    (stack.dir / "sql" / "002_index.sql").write_text(
        "-- cannot run in a transaction\n"
        "CREATE INDEX CONCURRENTLY items_name_idx ON items (name);\n"
        "DELETE FROM orders WHERE id % 2 = 0;\n"
        "INSERT INTO items (name, qty) VALUES ('half', 1);\n"
        "SELEC oops FROM items;\n"
        "INSERT INTO items (name, qty) VALUES ('never', 2);\n")
    proc = stack.cli("db", "migrate", "api")
    assert proc.returncode == EXIT_ROLLED_BACK, proc.stderr
    assert "sql/002_index.sql:5" in proc.stderr and "syntax error" in proc.stderr
    assert "restored from snapshot" in proc.stderr and "Traceback" not in proc.stderr
    assert checksums(stack) == before  # no price column, no index, orders intact


def test_failure_inside_one_transaction_is_detected_and_not_restored(stack):
    reset_data(stack)
    before = checksums(stack)
    (stack.dir / "sql" / "001_bad.sql").write_text(
        "ALTER TABLE items ADD COLUMN price numeric;\nUPDATE items SET price = 1/0;\n")
    proc = stack.cli("db", "migrate", "api")
    assert proc.returncode == EXIT_FAILED, proc.stderr
    assert "division by zero" in proc.stderr
    assert "The migration changed nothing; the database is left as it is" in proc.stderr
    assert "Restored" not in proc.stderr
    assert checksums(stack) == before


# ---- the user's command in the new image, inside a deploy --------------------------------


def _deploy_start(stack: Stack):
    from compose_atomic.migrate import plugin

    project = stack.project()
    plugin.before_deploy(project=project, service="web", old_container=None,
                         new_image=IMAGE_POSTGRES)
    return project


class CommandLineWatcher:
    """Scans every process's command line on the host while active."""

    def __init__(self, secret: str):
        import threading

        self.secret = secret.encode()
        self.found: list[str] = []
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    data = cmdline.read_bytes()
                except OSError:
                    continue
                if self.secret in data:
                    self.found.append(data.replace(b"\0", b" ").decode(errors="replace"))
            self.scans += 1
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


class LockHolder:
    """A plugin that, once the snapshot exists, takes the lock the migration will need."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.conn = None

    @hookimpl
    def before_migrate(self, project, service, database, snapshot_path):
        assert Path(snapshot_path).is_file() and database == "db"
        self.conn = self.stack.connect()
        self.conn.execute("BEGIN")
        self.conn.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")


def test_db_migrate_applies_and_prunes_old_pre_migration_snapshots(stack):
    reset_data(stack)
    snapdir = stack.state_dir / "snapshots"
    snapdir.mkdir(parents=True)
    old = {"reason": "pre-migrate", "database_service": "db", "size": 10, "sha256": "0", "tables": {}}
    for i, age in enumerate(["2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"]):
        (snapdir / f"old{i}.dump").write_bytes(b"x" * 10)
        (snapdir / f"old{i}.json").write_text(json.dumps({**old, "name": f"old{i}", "created": age}))
    (stack.dir / "migrations" / "current.sql").write_text("ALTER TABLE items ADD COLUMN price numeric;\n")
    text = (stack.dir / "compose.yaml").read_text().replace("lock_timeout: 1m", "lock_timeout: 1m\n        keep_snapshots: 1")
    (stack.dir / "compose.yaml").write_text(text)
    proc = stack.cli("db", "migrate", "web", "--image", IMAGE_POSTGRES)
    assert proc.returncode == 0, proc.stderr
    assert "Migrated" in proc.stderr and "Pruned" in proc.stderr
    assert "price:numeric" in checksums(stack)["public.items"]
    names = [s["name"] for s in json.loads(stack.cli("db", "snapshots", "--json").stdout)]
    assert names == [Path(proc.stdout.strip()).stem]  # both old ones pruned, the new one kept
    assert not (stack.state_dir / "migrate" / "web.json").exists()


def test_migration_waiting_on_a_lock_is_cancelled_on_the_server(stack):
    from compose_atomic.plugins import pm

    reset_data(stack)
    before = checksums(stack)
    stack.write(timeout="3s")
    (stack.dir / "migrations" / "current.sql").write_text("ALTER TABLE items ADD COLUMN price numeric;\n")
    holder = LockHolder(stack)
    pm.register(holder, name="test-lock-holder")
    watcher = CommandLineWatcher(PASSWORD)
    try:
        started = time.monotonic()
        with watcher, pytest.raises(OperationFailed) as caught:
            plugin.before_deploy(project=stack.project(), service="web", old_container=None,
                                 new_image=IMAGE_POSTGRES)
        assert time.monotonic() - started < 40
        assert watcher.scans > 5 and watcher.found == []  # no password on any command line
        message = str(caught.value)
        assert "timeout" in message and "cancelled 1 backend(s) on the server" in message
        assert "The migration changed nothing; the database is left as it is" in message
        assert migration_sessions(stack) == []
        with stack.connect("postgres") as conn:
            held = conn.execute("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                                "WHERE a.application_name LIKE 'compose-atomic-migrate%'").fetchone()[0]
        assert held == 0
        # the other session was not touched: it still holds its lock
        assert holder.conn.execute("SELECT count(*) FROM items").fetchone()[0] == 1000
    finally:
        pm.unregister(name="test-lock-holder")
        if holder.conn is not None:
            holder.conn.execute("ROLLBACK")
            holder.conn.close()
    assert checksums(stack) == before
    leftover = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.name}",
                      "--filter", "label=com.docker.compose.oneoff=True").stdout.split()
    assert leftover == []


def test_builtin_runner_waiting_on_a_lock_is_cancelled_on_the_server(stack):
    from compose_atomic.plugins import pm

    reset_data(stack)
    before = checksums(stack)
    stack.write(timeout="3s")
    (stack.dir / "sql" / "001_ok.sql").write_text("CREATE TABLE first (id int);\n")
    (stack.dir / "sql" / "002_wait.sql").write_text("ALTER TABLE items ADD COLUMN price numeric;\n")
    holder = LockHolder(stack)
    pm.register(holder, name="test-lock-holder")
    try:
        with pytest.raises(RolledBack) as caught:  # 001 committed: the snapshot comes back
            plugin.before_deploy(project=stack.project(), service="api", old_container=None,
                                 new_image=IMAGE_BUSYBOX)
        message = str(caught.value)
        assert "sql/002_wait.sql:1" in message and "cancelled on the server" in message
        assert migration_sessions(stack) == []
    finally:
        pm.unregister(name="test-lock-holder")
        if holder.conn is not None and not holder.conn.closed:
            holder.conn.close()
    assert checksums(stack) == before


def test_new_app_failing_health_after_migration_brings_the_database_back(stack):
    from compose_atomic.migrate import plugin

    reset_data(stack)
    before = checksums(stack)
    (stack.dir / "migrations" / "current.sql").write_text(
        "ALTER TABLE items ADD COLUMN price numeric DEFAULT 1;\n"
        "UPDATE orders SET note = 'migrated';\nCREATE TABLE audit (id int);\n"
        "ALTER TABLE orders DROP COLUMN note;\n")  # a drop: only a restore undoes it
    # The command's UPDATE writes 500 rows, which PostgreSQL cannot tell from the app's: without
    # a write hold the restore would be refused; this release asks for it in words.
    stack.write(on_failure="restore")
    project = _deploy_start(stack)
    after_migration = checksums(stack)
    assert after_migration != before and "public.audit" in after_migration
    state = json.loads((stack.state_dir / "migrate" / "web.json").read_text())
    assert state["phase"] == "migrated"
    # the deploy's health gate failed; the old app serves again; the guard restores
    plugin.rollback_deploy(project=project, service="web", reason="health check failed")
    assert checksums(stack) == before
    assert not (stack.state_dir / "migrate" / "web.json").exists()


def test_app_writes_while_a_migration_command_runs_are_never_discarded(stack):
    """PostgreSQL's counters cannot tell a migration command's writes from the app's: without a
    write hold, the rows the app wrote while the command ran count, and the restore is refused."""
    import threading

    from compose_atomic.migrate import plugin

    reset_data(stack)
    (stack.dir / "migrations" / "current.sql").write_text(
        "SELECT pg_sleep(3);\nALTER TABLE orders DROP COLUMN note;\n")  # a drop: only a restore undoes it
    acknowledged: list[int] = []
    backend: list[int] = []

    def app() -> None:  # the old app, acknowledging writes while the migration sleeps
        deadline = time.monotonic() + 2.5
        with stack.connect() as conn:
            conn.autocommit = True
            backend.append(conn.info.backend_pid)
            time.sleep(0.3)
            while time.monotonic() < deadline:
                acknowledged.append(conn.execute(
                    "INSERT INTO orders (item_id, note) VALUES (1, 'acked') RETURNING id").fetchone()[0])
                time.sleep(0.05)

    writer = threading.Thread(target=app)
    writer.start()
    project = _deploy_start(stack)
    writer.join()
    wait_gone(stack, backend[0])
    assert acknowledged
    with pytest.raises(RollbackFailed) as caught:
        plugin.rollback_deploy(project=project, service="web", reason="health check failed")
    assert caught.value.exit_code == 4
    assert f"{len(acknowledged)} rows written since the snapshot" in str(caught.value), str(caught.value)
    assert "hold_writes" in (caught.value.hint or "")
    with stack.connect() as conn:
        kept = {r[0] for r in conn.execute("SELECT id FROM orders WHERE id = ANY(%s)", [acknowledged])}
    assert kept == set(acknowledged)


def test_writes_after_the_snapshot_make_the_restore_refuse_without_force(stack):
    from compose_atomic.migrate import plugin

    reset_data(stack)
    before = checksums(stack)
    (stack.dir / "migrations" / "current.sql").write_text("ALTER TABLE items ALTER COLUMN qty TYPE bigint;\n")
    project = _deploy_start(stack)
    with stack.connect() as conn:  # the old app keeps writing during the window
        conn.execute("INSERT INTO orders (item_id, note) VALUES (1, 'late'), (2, 'late'), (3, 'late')")
        conn.execute("UPDATE items SET qty = 0 WHERE id = 7")
        writer = conn.info.backend_pid
    wait_gone(stack, writer)
    migrated_with_writes = checksums(stack)
    with pytest.raises(RollbackFailed) as caught:
        plugin.rollback_deploy(project=project, service="web", reason="health check failed")
    assert caught.value.exit_code == 4
    assert "4 rows written since the snapshot" in str(caught.value)
    assert "public.orders (3)" in str(caught.value) and "public.items (1)" in str(caught.value)
    assert checksums(stack) == migrated_with_writes  # nothing discarded
    message = str(caught.value) + (caught.value.hint or "")
    assert "column public.items.qty was changed" in message and "Nothing was changed" not in message

    proc = stack.cli("db", "restore", "--latest")
    assert proc.returncode == EXIT_FAILED
    assert "public.orders (3)" in proc.stderr and "--force" in proc.stderr
    assert checksums(stack) == migrated_with_writes

    proc = stack.cli("db", "restore", "--latest", "--force")
    assert proc.returncode == 0, proc.stderr
    assert checksums(stack) == before
    # restoring again right away loses nothing: the restore itself is the new baseline
    proc = stack.cli("db", "restore", "--latest")
    assert proc.returncode == 0, proc.stderr


def test_a_command_migration_that_only_added_is_undone_in_place_keeping_the_writes(stack):
    from compose_atomic.migrate import plugin

    reset_data(stack)
    before = checksums(stack)
    (stack.dir / "migrations" / "current.sql").write_text(
        "ALTER TABLE items ADD COLUMN price numeric DEFAULT 1;\nCREATE TABLE audit (id serial, note text);\n"
        "INSERT INTO audit (note) VALUES ('mine');\nCREATE INDEX items_price ON items (price);\n")
    project = _deploy_start(stack)
    with stack.connect() as conn:  # the old app keeps writing
        conn.execute("INSERT INTO orders (item_id, note) VALUES (1, 'late'), (2, 'late')")
    message = plugin_rollback_message(project)
    assert "only added objects" in message and "every row written since the snapshot was kept" in message
    assert "public.audit (1 row)" in message  # the migration's own data goes with what it added
    assert "compose-atomic cannot see whether it also changed rows" in message
    after = checksums(stack)
    assert {k: v for k, v in after.items() if k != "public.orders"} == \
        {k: v for k, v in before.items() if k != "public.orders"}
    with stack.connect() as conn:
        assert conn.execute("SELECT count(*) FROM orders WHERE note = 'late'").fetchone()[0] == 2


def plugin_rollback_message(project) -> str:
    from compose_atomic.migrate.guard import rollback

    return rollback(project, "web", "health check failed")


def test_sigint_during_restore_leaves_the_live_database_as_it_was(stack):
    reset_data(stack, rows=400000)
    with stack.connect() as conn:
        conn.execute("CREATE INDEX items_name ON items (name)")
    assert stack.cli("db", "snapshot").returncode == 0
    with stack.connect() as conn:
        conn.execute("INSERT INTO orders (item_id, note) VALUES (1, 'after the snapshot')")
    live = checksums(stack)
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "compose_atomic", "-p", stack.name, "db", "restore",
                             "--latest", "--force"], cwd=stack.dir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    with stack.connect("postgres") as conn:
        while not conn.execute("SELECT 1 FROM pg_stat_activity WHERE datname LIKE 'app__ca_restore_%' "
                               "AND query ILIKE 'COPY%'").fetchone():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == EXIT_INTERRUPTED, err
        assert "left as it was" in err and "Traceback" not in err
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE '%__ca_%'").fetchone()[0] == 0
    assert checksums(stack) == live


def test_first_deploy_starts_the_database_it_migrates(stack):
    reset_data(stack)
    (stack.dir / "sql" / "001_add.sql").write_text("CREATE TABLE fresh (id int);\n")
    subprocess.run(["docker", "compose", "-p", stack.name, "stop", "-t", "5", "db"], cwd=stack.dir,
                   check=True, capture_output=True, timeout=60)
    proc = stack.cli("db", "migrate", "api")
    assert proc.returncode == 0, proc.stderr
    assert "Starting" in proc.stderr and "Applied" in proc.stderr
    assert "public.fresh" in checksums(stack)


def test_lint_gate_runs_first_and_stops_before_the_snapshot(stack, monkeypatch):
    import types

    reset_data(stack)
    calls = []

    def check_migrations(project, service, progress):
        calls.append(service)
        raise OperationFailed("migrations/current.sql:1: error: adding a column with a volatile default")

    package = types.ModuleType("compose_atomic.lint")
    gate = types.ModuleType("compose_atomic.lint.gate")
    gate.check_migrations = check_migrations
    package.gate = gate
    monkeypatch.setitem(sys.modules, "compose_atomic.lint", package)
    monkeypatch.setitem(sys.modules, "compose_atomic.lint.gate", gate)
    text = (stack.dir / "compose.yaml").read_text().replace(
        "lock_timeout: 1m", 'lock_timeout: 1m\n        lint: ["migrations/*.sql"]')
    (stack.dir / "compose.yaml").write_text(text)
    (stack.dir / "migrations" / "current.sql").write_text("ALTER TABLE items ADD COLUMN t timestamptz DEFAULT now();\n")
    with pytest.raises(OperationFailed, match="volatile default"):
        plugin.before_deploy(project=stack.project(), service="web", old_container=None,
                             new_image=IMAGE_POSTGRES)
    assert calls == ["web"]
    assert not (stack.state_dir / "snapshots").exists() or not list((stack.state_dir / "snapshots").iterdir())


def test_sigint_during_a_migration_restores_before_exiting(stack):
    reset_data(stack)
    before = checksums(stack)
    (stack.dir / "sql" / "001_slow.sql").write_text(
        "CREATE INDEX CONCURRENTLY items_qty ON items (qty);\nSELECT pg_sleep(60);\n")
    proc = subprocess.Popen([sys.executable, "-m", "compose_atomic", "-p", stack.name, "db", "migrate", "api"],
                            cwd=stack.dir, env={**os.environ, "NO_COLOR": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    with stack.connect("postgres") as conn:
        while not conn.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' "
                               "AND application_name = 'compose-atomic-migrate'").fetchone():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, err
    # the index it committed is all it did: dropped in place, nothing restored
    assert "interrupted" in err and "only added objects (index public.items_qty)" in err
    assert "Traceback" not in err
    assert migration_sessions(stack) == []
    assert checksums(stack) == before
