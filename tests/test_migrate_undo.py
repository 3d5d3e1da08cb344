"""A failed migration under live writes: the schema comes back, every row written meanwhile stays.

Real PostgreSQL (17 when the test bed has it), the built-in SQL runner, and a writer thread
that inserts rows through psycopg (a new connection per row, as a web app under a pool-less
server does) while ``compose-atomic db migrate`` runs. A second, persistent connection stands
for the old app's pool: its backend must be the same one before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from compose_atomic.errors import EXIT_FAILED, EXIT_ROLLBACK_FAILED, EXIT_ROLLED_BACK
from conftest import IMAGE_BUSYBOX, docker, run_cli

PASSWORD = "undo-Pw-7c1"


def _postgres_image() -> str:
    wanted = os.environ.get("IMAGE_POSTGRES_17", "compose-atomic-testbed/postgres:17")
    if docker("image", "inspect", wanted, check=False).returncode == 0:
        return wanted
    return os.environ.get("IMAGE_POSTGRES", "compose-atomic-testbed/postgres:15")


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
      POSTGRES_PASSWORD: {password}
  api:
    image: {busybox}
    x-atomic:
      migrate:
        database: db
        sql: sql/*.sql
        timeout: 60s
        on_failure: {on_failure}
"""


class Stack:
    def __init__(self, name: str, directory: Path):
        self.name, self.dir = name, directory
        self.state_dir = directory / "state"
        self.pg = _postgres_image()
        self.write()

    def write(self, on_failure: str = "refuse") -> None:
        (self.dir / "compose.yaml").write_text(COMPOSE.format(
            name=self.name, state_dir=self.state_dir, pg=self.pg, busybox=IMAGE_BUSYBOX,
            password=PASSWORD, on_failure=on_failure))

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli("-p", self.name, *args, cwd=self.dir)

    def project(self):
        from compose_atomic.project import ComposeOptions, load_project

        return load_project(ComposeOptions(project_name=self.name, project_directory=str(self.dir)))

    def connect(self, dbname: str | None = None):
        from compose_atomic.migrate.database import Database

        return Database.locate(self.project(), "db").connect(dbname)

    def schema_dump(self) -> str:
        """``pg_dump --schema-only``, without PG17's per-run ``\\restrict`` key lines."""
        cid = subprocess.run(["docker", "compose", "-p", self.name, "ps", "-q", "db"], cwd=self.dir,
                           capture_output=True, text=True, timeout=60).stdout.strip()
        out = subprocess.run(["docker", "exec", cid, "pg_dump", "--schema-only", "-U", "app", "-d", "app"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return "\n".join(line for line in out.splitlines()
                         if not line.startswith(("\\restrict", "\\unrestrict")))


@pytest.fixture(scope="module")
def stack(docker_engine, tmp_path_factory):
    name = f"catest-undo-{uuid.uuid4().hex[:8]}"
    directory = tmp_path_factory.mktemp("undo")
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
    yield s
    subprocess.run(["docker", "compose", "-p", name, "down", "-v", "--remove-orphans", "-t", "1"],
                   cwd=directory, capture_output=True, timeout=120)


def reset(stack: Stack) -> None:
    """items (with duplicate names) and orders; one applied migration; no snapshots."""
    import shutil

    shutil.rmtree(stack.state_dir, ignore_errors=True)
    for f in (stack.dir / "sql").iterdir():
        f.unlink()
    stack.write()
    with stack.connect() as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        conn.execute("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, qty int)")
        conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, item_id int REFERENCES items, "
                     "note text, at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO items (name, qty) SELECT 'n' || (i % 300), i FROM generate_series(1, 3000) i")
    (stack.dir / "sql" / "001_init.sql").write_text("CREATE INDEX items_qty ON items (qty);\n")
    proc = stack.cli("db", "migrate", "api")
    assert proc.returncode == 0, proc.stderr


class Writer:
    """Inserts rows, one connection each, until stopped; remembers every acknowledged id."""

    def __init__(self, stack: Stack):
        self.stack, self.acked, self.failed = stack, [], 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        from compose_atomic.migrate.database import Database

        db = Database.locate(self.stack.project(), "db")
        while not self.stop.is_set():
            try:
                with db.connect(application_name="old-app") as conn:
                    row = conn.execute("INSERT INTO orders (item_id, note) VALUES (1 + %s %% 3000, 'live') "
                                       "RETURNING id", (len(self.acked),)).fetchone()
                self.acked.append(row[0])
            except Exception:  # noqa: BLE001 - counted: a failed request
                self.failed += 1
            time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)
        self.stop.set()
        self.thread.join(timeout=30)


def _pool_backend(conn) -> tuple:
    return conn.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone()


def _check_kept(stack: Stack, writer: Writer) -> None:
    with stack.connect() as conn:
        present = {r[0] for r in conn.execute("SELECT id FROM orders WHERE note = 'live'").fetchall()}
    assert writer.acked and set(writer.acked) <= present, "an acknowledged row was lost"
    assert writer.failed == 0


@pytest.mark.parametrize("migration, added", [
    ("ALTER TABLE items ADD COLUMN price numeric DEFAULT 0;\n"
     "CREATE TABLE audit (id serial PRIMARY KEY, item_id int REFERENCES items, what text);\n"
     "INSERT INTO audit (item_id, what) VALUES (1, 'x'), (2, 'y');\n"
     "CREATE VIEW priced AS SELECT i.id, i.price, a.what FROM items i JOIN audit a ON a.item_id = i.id;\n"
     "CREATE TYPE mood AS ENUM ('ok', 'sad');\n"
     "ALTER TABLE orders ADD CONSTRAINT orders_note_len CHECK (length(note) < 100) NOT VALID;\n"
     "VACUUM items;\n"
     "SELECT * FROM no_such_table;\n",
     "column public.items.price"),
    ("ALTER TABLE items ADD COLUMN price numeric;\n"
     "CREATE UNIQUE INDEX CONCURRENTLY items_name_uq ON items (name);\n",
     "INVALID index public.items_name_uq"),
], ids=["add-column-then-error", "failed-create-index-concurrently"])
def test_a_failed_additive_migration_is_undone_in_place_keeping_every_row(stack, migration, added):
    reset(stack)
    schema_before = stack.schema_dump()
    (stack.dir / "sql" / "002_next.sql").write_text(migration)
    plan = stack.cli("db", "migrate", "api")  # noqa: F841 - warm the CLI's imports
    with stack.connect() as pool:
        backend = _pool_backend(pool)
        with Writer(stack) as writer:
            before = len(writer.acked)
            proc = stack.cli("db", "migrate", "api")
            during = len(writer.acked) - before
        assert _pool_backend(pool) == backend  # the old app's pooled session was never ended
    assert proc.returncode == EXIT_ROLLED_BACK, proc.stderr
    assert "undoable in place" in proc.stderr
    assert "only added objects" in proc.stderr and added in proc.stderr
    assert "every row written since the snapshot was kept" in proc.stderr
    assert "Restored" not in proc.stderr and "Traceback" not in proc.stderr
    assert stack.schema_dump() == schema_before
    _check_kept(stack, writer)
    assert during > 0
    print(f"\n{added}: {during} rows written during `db migrate`, {len(writer.acked)} acknowledged, "
          f"all kept, {writer.failed} failed")


def test_a_failed_migration_that_changed_nothing_leaves_the_database_and_its_sessions(stack):
    reset(stack)
    (stack.dir / "sql" / "002_bad.sql").write_text(
        "ALTER TABLE items ADD COLUMN price numeric;\nUPDATE items SET price = 1/0;\n")
    with stack.connect() as pool:
        backend = _pool_backend(pool)
        proc = stack.cli("db", "migrate", "api")
        assert _pool_backend(pool) == backend
    assert proc.returncode == EXIT_FAILED, proc.stderr
    assert "The migration changed nothing; the database is left as it is" in proc.stderr
    assert "Restored" not in proc.stderr


def test_rollback_of_a_release_whose_migration_did_nothing_touches_nothing(stack):
    """No pending migration, the new app fails its health gate: no restore, same backends."""
    from compose_atomic.migrate import plugin

    reset(stack)
    project = stack.project()
    with stack.connect() as pool:
        backend = _pool_backend(pool)
        with Writer(stack) as writer:
            plugin.before_deploy(project=project, service="api", old_container=None, new_image=IMAGE_BUSYBOX)
            time.sleep(0.5)  # the old app writes while the new one fails its gate
            message = plugin_rollback(project)
        assert _pool_backend(pool) == backend
    assert message.startswith("The migration changed nothing; the database is left as it is")
    _check_kept(stack, writer)
    assert not (stack.state_dir / "migrate" / "api.json").exists()


def plugin_rollback(project) -> str:
    from compose_atomic.migrate.guard import rollback

    return rollback(project, "api", "health check failed")


def test_rollback_of_a_release_that_added_a_column_drops_it_and_keeps_the_writes(stack):
    from compose_atomic.migrate import plugin

    reset(stack)
    schema_before = stack.schema_dump()
    (stack.dir / "sql" / "002_price.sql").write_text("ALTER TABLE items ADD COLUMN price numeric;\n")
    project = stack.project()
    with Writer(stack) as writer:
        plugin.before_deploy(project=project, service="api", old_container=None, new_image=IMAGE_BUSYBOX)
        time.sleep(0.5)
        message = plugin_rollback(project)
    assert "only added objects (column public.items.price)" in message
    assert stack.schema_dump() == schema_before
    _check_kept(stack, writer)
    with stack.connect() as conn:  # the runner's record of 002 is gone with it: a retry runs it again
        names = [r[0] for r in conn.execute("SELECT name FROM compose_atomic_migrations").fetchall()]
    assert names == ["sql/001_init.sql"]


def test_a_migration_that_only_a_restore_undoes_is_refused_under_writes_and_says_what_is_left(stack):
    reset(stack)
    (stack.dir / "sql" / "002_drop.sql").write_text(
        "ALTER TABLE items DROP COLUMN qty;\nVACUUM items;\nSELECT * FROM no_such_table;\n")
    plan = stack.cli("db", "snapshots")  # noqa: F841
    with Writer(stack) as writer:
        time.sleep(0.2)
        proc = stack.cli("db", "migrate", "api")
    assert "restore needed" in proc.stderr and "DropColumn" in proc.stderr
    # the app's writes during the migration make the guard refuse (only writes *after* the
    # migration count as discarded: the ones during it cannot be told from the migration's)
    if proc.returncode == EXIT_ROLLBACK_FAILED:
        assert "column public.items.qty was removed" in proc.stderr
        assert "Nothing was changed" not in proc.stderr
        assert "--force" in proc.stderr
        _check_kept(stack, writer)
    else:
        assert proc.returncode == EXIT_ROLLED_BACK, proc.stderr
        assert "restored from snapshot" in proc.stderr


def test_on_failure_restore_says_how_many_rows_it_discarded_per_table(stack):
    reset(stack)
    stack.write(on_failure="restore")
    (stack.dir / "sql" / "002_drop.sql").write_text("ALTER TABLE items DROP COLUMN qty;\n")
    from compose_atomic.migrate import plugin

    project = stack.project()
    plugin.before_deploy(project=project, service="api", old_container=None, new_image=IMAGE_BUSYBOX)
    with stack.connect() as conn:
        conn.execute("INSERT INTO orders (item_id, note) SELECT i, 'late' FROM generate_series(1, 7) i")
    time.sleep(0.3)
    message = plugin_rollback(project)
    assert "the restore discarded 7 rows written since the snapshot in public.orders (7)" in message
    with stack.connect() as conn:
        assert conn.execute("SELECT count(*) FROM orders WHERE note = 'late'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM information_schema.columns "
                            "WHERE table_name = 'items' AND column_name = 'qty'").fetchone()[0] == 1


def test_the_case_is_said_before_the_deploy_and_recorded_in_the_snapshot(stack):
    from compose_atomic.migrate.guard import classify_release
    from compose_atomic.migrate.snapshot import list_snapshots

    reset(stack)
    project = stack.project()
    assert classify_release(project, "api") == "migration: undoable in place (nothing pending)"
    (stack.dir / "sql" / "002_a.sql").write_text("ALTER TABLE items ADD COLUMN price numeric;\n"
                                                 "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n")
    assert classify_release(project, "api") == "migration: undoable in place (3 statements)"
    (stack.dir / "sql" / "003_b.sql").write_text("UPDATE items SET qty = 0;\n")
    line = classify_release(project, "api")
    assert line.startswith("migration: restore needed: sql/003_b.sql:1: UPDATE items"), line
    proc = stack.cli("db", "migrate", "api")
    assert proc.returncode == 0, proc.stderr
    snap = list_snapshots(stack.state_dir / "snapshots", "db")[-1]
    assert snap.manifest["release_case"]["case"] == "restore needed"
    assert json.loads(snap.manifest_path.read_text())["migration"]["executed"]["case"] == "restore needed"
