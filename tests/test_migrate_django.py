"""A real framework's own migration command (Django 3.2's ``manage.py migrate``) under live writes.

The app in tests/django_app has one model; its second migration is non-atomic (``AddField``,
then invalid SQL), as in issue #18. A writer thread inserts rows into the model's table through
psycopg (a new connection per row) while the migration runs; a persistent connection stands
for the old app's pool.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from compose_atomic.errors import EXIT_ROLLED_BACK
from conftest import docker, run_cli
from test_migrate_undo import _pool_backend, _postgres_image

IMAGE_DJANGO = "compose-atomic-testbed/django:3.2"
APP = Path(__file__).parent / "django_app"
PASSWORD = "dj-Pw-41b"

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
  web:
    image: {django}
    working_dir: /app
    environment:
      DB_HOST: {db_host}
      DB_PASSWORD: {password}
    volumes:
      - ./app:/app:ro
    x-atomic:
      migrate:
        database: db
        command: [python3, manage.py, migrate, --noinput]
        timeout: 120s
"""

pytestmark = pytest.mark.skipif(docker("image", "inspect", IMAGE_DJANGO, check=False).returncode != 0,
                                reason=f"{IMAGE_DJANGO} is not built (scripts/testbed.sh)")


@pytest.fixture(scope="module")
def stack(docker_engine, tmp_path_factory):
    name = f"catest-dj-{uuid.uuid4().hex[:8]}"
    directory = tmp_path_factory.mktemp("django")
    shutil.copytree(APP, directory / "app")
    (directory / "app" / "shop" / "migrations").mkdir()
    (directory / "app" / "shop" / "migrations" / "__init__.py").write_text("")

    def write(db_host: str) -> None:
        (directory / "compose.yaml").write_text(COMPOSE.format(
            name=name, state_dir=directory / "state", pg=_postgres_image(), django=IMAGE_DJANGO,
            password=PASSWORD, db_host=db_host))

    write("db")
    up = subprocess.run(["docker", "compose", "-p", name, "up", "-d", "--wait", "db"], cwd=directory,
                        capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stderr
    s = DjangoStack(name, directory)
    deadline = time.monotonic() + 60
    while True:
        try:
            s.connect().close()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    write(s.database().address()[0])  # the shared engine's DNS is sometimes slow to know "db"
    yield s
    subprocess.run(["docker", "compose", "-p", name, "down", "-v", "--remove-orphans", "-t", "1"],
                   cwd=directory, capture_output=True, timeout=120)


class DjangoStack:
    def __init__(self, name: str, directory: Path):
        self.name, self.dir = name, directory

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli("-p", self.name, *args, cwd=self.dir)

    def project(self):
        from compose_atomic.project import ComposeOptions, load_project

        return load_project(ComposeOptions(project_name=self.name, project_directory=str(self.dir)))

    def database(self):
        from compose_atomic.migrate.database import Database

        return Database.locate(self.project(), "db")

    def connect(self):
        return self.database().connect()

    def add_migration(self, name: str) -> None:
        shutil.copy(APP / "shop" / "migrations_src" / name, self.dir / "app" / "shop" / "migrations" / name)

    def schema_dump(self) -> str:
        cid = subprocess.run(["docker", "compose", "-p", self.name, "ps", "-q", "db"], cwd=self.dir,
                             capture_output=True, text=True, timeout=60).stdout.strip()
        out = subprocess.run(["docker", "exec", cid, "pg_dump", "--schema-only", "-U", "app", "-d", "app"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return "\n".join(line for line in out.splitlines()
                         if not line.startswith(("\\restrict", "\\unrestrict")))


class Writer:
    def __init__(self, stack: DjangoStack):
        import threading

        self.db = stack.database()
        self.acked, self.failed, self.errors = [], 0, set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                with self.db.connect(application_name="old-app") as conn:
                    self.acked.append(conn.execute("INSERT INTO shop_order (note) VALUES ('live') "
                                                   "RETURNING id").fetchone()[0])
            except Exception as exc:  # noqa: BLE001 - a failed request
                self.failed += 1
                self.errors.add(type(exc).__name__)
            time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)
        self.stop.set()
        self.thread.join(timeout=30)


def test_django_non_atomic_migration_failing_halfway_is_undone_in_place_under_writes(stack):
    stack.add_migration("0001_initial.py")
    proc = stack.cli("db", "migrate", "web")
    assert proc.returncode == 0, proc.stderr
    schema_before = stack.schema_dump()

    # no new migration, the release is rolled back: the database is left alone
    from compose_atomic.migrate import plugin
    from compose_atomic.migrate.guard import rollback

    project = stack.project()
    with stack.connect() as pool:
        backend = _pool_backend(pool)
        with Writer(stack) as writer:
            plugin.before_deploy(project=project, service="web", old_container=None, new_image=IMAGE_DJANGO)
            message = rollback(project, "web", "health check failed")
        assert _pool_backend(pool) == backend
    assert message.startswith("The migration changed nothing; the database is left as it is"), message
    noop_rows = len(writer.acked)

    # AddField commits, then RunSQL fails: the column is dropped, every row kept
    stack.add_migration("0002_price_then_fail.py")
    with stack.connect() as pool:
        backend = _pool_backend(pool)
        with Writer(stack) as writer2:
            proc = stack.cli("db", "migrate", "web")
        assert _pool_backend(pool) == backend
    assert proc.returncode == EXIT_ROLLED_BACK, proc.stderr
    assert "column public.shop_order.price" in proc.stderr and "every row written since" in proc.stderr
    assert "Restored" not in proc.stderr
    assert stack.schema_dump() == schema_before
    with stack.connect() as conn:
        present = {r[0] for r in conn.execute("SELECT id FROM shop_order").fetchall()}
        applied = [r[0] for r in conn.execute("SELECT name FROM django_migrations WHERE app = 'shop'").fetchall()]
    assert set(writer.acked) | set(writer2.acked) <= present
    assert writer.failed == 0
    # Django's AddField leaves the new column NOT NULL without a default: until it is dropped
    # again, the old code's INSERTs fail on it. That is the migration's own incompatibility
    # (only a write hold would delay them instead); nothing else may fail.
    assert writer2.errors <= {"NotNullViolation"}, writer2.errors
    assert applied == ["0001_initial"]
    print(f"\ndjango no-op release: {noop_rows} rows written during deploy+rollback, all kept, 0 failed; "
          f"failed AddField: {len(writer2.acked)} rows written during `db migrate`, all kept, "
          f"{writer2.failed} INSERTs refused by the half-applied NOT NULL column before the undo")
