"""The opt-in write hold (``x-atomic.migrate.hold_writes``) on the real engine: a release whose
migration drops a column and then fails, under a load of POSTs the app acknowledges (201 with the
row's id), with and without the hold.

examples/django-notes (Django 3.2 under gunicorn, a new database connection per request) behind
the managed Caddy (2.11 in the test bed), PostgreSQL 17, ``manage.py migrate`` as the migration:
a non-atomic migration that removes a column the running release writes, then runs invalid SQL.
Only a restore of the pre-migration snapshot undoes a dropped column.

- With the hold, the proxy holds every request from before the snapshot until the release is
  decided: no write lands after the snapshot, the restore discards nothing, the held requests
  go to the old version once it serves on the restored schema: 0 failed, 0 lost.
- Without it, today's guard: the old app's writes after the snapshot make the restore one that
  would discard them, so it is refused (exit 4), the column stays dropped, every row stays.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from compose_atomic.errors import EXIT_ROLLBACK_FAILED, EXIT_ROLLED_BACK
from conftest import IMAGE_CADDY, IMAGE_DJANGO, IMAGE_POSTGRES, Clients, docker, run_cli
from test_deploy_support import proxy_errors
from test_django_example import APP_V1, EXAMPLE, MIGRATION_V2, MODEL_V2, build, free_port

pytestmark = [pytest.mark.docker,
              pytest.mark.skipif(docker("image", "inspect", IMAGE_DJANGO, check=False).returncode != 0,
                                 reason=f"{IMAGE_DJANGO} is not built (scripts/testbed.sh)")]

# A release whose migration drops a column the running release writes, then fails.
MIGRATION_DROP_THEN_FAIL = '''from django.db import migrations


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("notes", "0001_initial")]
    operations = [
        migrations.RemoveField("note", "version"),
        migrations.RunSQL("SELECT * FROM no_such_table"),
    ]
'''


# The same, slower than its hold: the hold's bound passes first.
MIGRATION_SLOW_DROP_THEN_FAIL = MIGRATION_DROP_THEN_FAIL.replace(
    "    operations = [\n", "    operations = [\n        migrations.RunSQL(\"SELECT pg_sleep(4)\"),\n")


@pytest.fixture(scope="module")
def images(docker_engine, tmp_path_factory) -> tuple[str, str, str]:
    v1 = build(APP_V1, EXAMPLE / "app")
    context = tmp_path_factory.mktemp("django-drop") / "app"
    shutil.copytree(EXAMPLE / "app", context)
    (context / "notes" / "migrations" / "0002_drop_version_then_fail.py").write_text(MIGRATION_DROP_THEN_FAIL)
    broken = build("compose-atomic-testbed/django-notes:drop-then-fail", context)
    context = tmp_path_factory.mktemp("django-add") / "app"
    shutil.copytree(EXAMPLE / "app", context)
    models = context / "notes" / "models.py"
    models.write_text(models.read_text() + MODEL_V2)
    (context / "notes" / "migrations" / "0002_note_tag.py").write_text(MIGRATION_V2)
    return v1, broken, build("compose-atomic-testbed/django-notes:hold-add", context)


@pytest.fixture(scope="module")
def slow_image(docker_engine, tmp_path_factory) -> str:
    context = tmp_path_factory.mktemp("django-slow-drop") / "app"
    shutil.copytree(EXAMPLE / "app", context)
    (context / "notes" / "migrations" / "0002_slow_drop_then_fail.py").write_text(MIGRATION_SLOW_DROP_THEN_FAIL)
    return build("compose-atomic-testbed/django-notes:slow-drop-then-fail", context)


class Load(Clients):
    """Three clients POSTing notes through the proxy; each acknowledged id, each failure, and
    the longest time a request took."""

    def __init__(self, url: str):
        self.url, self.acked, self.failed, self.longest = url, [], [], 0.0
        super().__init__()
        self.join_timeout = 100
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(3)]

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                request = urllib.request.Request(self.url, data=b"note", method="POST")
                with urllib.request.urlopen(request, timeout=90) as response:
                    body = json.loads(response.read())
                    (self.acked if response.status == 201 else self.failed).append(body.get("id", response.status))
            except urllib.error.HTTPError as error:
                self.failed.append(error.code)
            except Exception as error:  # noqa: BLE001 - every failure is counted and shown
                self.failed.append(repr(error)[:200])
            self.longest = max(self.longest, time.monotonic() - started)
            time.sleep(0.03)


def psql(project_name: str, sql: str) -> str:
    return docker("exec", f"{project_name}-db-1", "psql", "-X", "-At", "-U", "app", "-d", "app", "-c", sql).stdout


def schema_dump(project_name: str) -> str:
    out = docker("exec", f"{project_name}-db-1", "pg_dump", "--schema-only", "-U", "app", "-d", "app").stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def release_under_load(tmp_path, project_name: str, v1: str, image: str, hold: bool, *flags: str):
    """Deploy ``v1``, then ``image`` while three clients POST; (up's result, the load, POSTs
    acknowledged during `up`, its seconds, the schema before, the port)."""
    shutil.copytree(EXAMPLE, tmp_path, dirs_exist_ok=True)
    (tmp_path / "secrets" / "db_password").write_text("hold-s3cret\n")
    (tmp_path / "secrets" / "db_password").chmod(0o600)
    compose = (tmp_path / "compose.yaml").read_text()
    # A new connection per request (the app); the hold is the opt-in under test.
    compose = compose.replace("      APP_BROKEN: ${APP_BROKEN:-0}\n",
                              "      APP_BROKEN: ${APP_BROKEN:-0}\n      DB_CONN_MAX_AGE: \"0\"\n")
    if hold:
        compose = compose.replace("        lock_timeout: 5s\n", "        lock_timeout: 5s\n        hold_writes: 60s\n")
    assert "DB_CONN_MAX_AGE" in compose and ("hold_writes" in compose) == hold  # the example still fits
    (tmp_path / "compose.yaml").write_text(compose)
    port = free_port()
    env = {"APP_IMAGE": v1, "POSTGRES_IMAGE": IMAGE_POSTGRES, "CADDY_IMAGE": IMAGE_CADDY,
           "HTTP_PORT": f"127.0.0.1:{port}"}
    started = subprocess.run(["docker", "compose", "-p", project_name, "up", "-d", "--wait", "db"], cwd=tmp_path,
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr
    info = json.loads(docker("inspect", f"{project_name}-db-1").stdout)[0]
    env["DB_HOST"] = next(iter(info["NetworkSettings"]["Networks"].values()))["IPAddress"]
    first = run_cli("-p", project_name, "up", "-d", cwd=tmp_path, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    schema_before = schema_dump(project_name)

    with Load(f"http://127.0.0.1:{port}/notes") as load:
        time.sleep(2)
        acked_before = len(load.acked)
        up_started = time.monotonic()
        release = run_cli("-p", project_name, "up", "-d", *flags, cwd=tmp_path, timeout=600,
                          env={**env, "APP_IMAGE": image, "APP_VERSION": "2"})
        up_seconds = time.monotonic() - up_started
        during = len(load.acked) - acked_before
        time.sleep(2)
    assert "compose_atomic/" not in release.stderr, release.stderr  # no traceback of ours
    stored = {int(r) for r in psql(project_name, "SELECT id FROM notes_note").split()}
    lost = sorted(set(load.acked) - stored)
    assert lost == [], f"{len(lost)} acknowledged rows are missing: {lost[:10]}"
    return release, load, during, up_seconds, schema_before, port


@pytest.mark.parametrize("hold", [True, False], ids=["with-hold", "without-hold"])
def test_a_release_that_drops_a_column_then_fails_under_writes(images, tmp_path, project_name, hold):
    v1, broken, _ = images
    release, load, during, up_seconds, schema_before, port = release_under_load(
        tmp_path, project_name, v1, broken, hold)
    err = release.stderr
    columns = psql(project_name, "SELECT column_name FROM information_schema.columns "
                                 "WHERE table_name = 'notes_note'").split()
    if hold:
        assert release.returncode == EXIT_ROLLED_BACK, err
        assert "Holding writes" in err and "Released writes" in err, err
        assert "Restored" in err and "discarded" not in err, err
        assert load.failed == [], (load.failed[:5], proxy_errors(project_name, tmp_path))
        assert "version" in columns
        assert schema_dump(project_name) == schema_before
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=10) as response:
            assert response.read().decode().strip() == "version 1"
    else:
        # today's guard: writes landed after the snapshot, so the restore is refused
        assert release.returncode == EXIT_ROLLBACK_FAILED, err
        assert "Holding writes" not in err
        assert "refused" in err and "column public.notes_note.version was removed" in err, err
        assert "version" not in columns  # the dropped column stays dropped: every row stays
    print(f"\ndrop-then-fail {'with' if hold else 'without'} hold_writes: `up` {up_seconds:.1f}s, "
          f"{during} POSTs acknowledged during it, {len(load.acked)} in all, all kept; "
          f"{len(load.failed)} failed {load.failed[:3]}; longest request {load.longest:.1f}s")


def test_a_release_whose_migration_succeeds_under_the_hold_switches_and_fails_nothing(images, tmp_path,
                                                                                     project_name):
    """The hold ends before the switch (a configuration change would end the held requests):
    they go to the old version, new ones to the new release. Asked with `up --hold-writes`."""
    v1, _, added = images
    release, load, during, up_seconds, _, port = release_under_load(tmp_path, project_name, v1, added, False,
                                                                    "--hold-writes", "60s")
    err = release.stderr
    assert release.returncode == 0, err
    assert "Holding writes" in err and "Released writes" in err and "Switched" in err, err
    assert err.index("Released writes") < err.index("Switched"), err
    assert load.failed == [], (load.failed[:5], proxy_errors(project_name, tmp_path), err)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=10) as response:
        assert response.read().decode().strip() == "version 2"
    versions = set(psql(project_name, "SELECT DISTINCT version FROM notes_note").split())
    assert {"1", "2"} <= versions
    print(f"\nadd-field with hold_writes: `up` {up_seconds:.1f}s, {during} POSTs acknowledged during it, "
          f"all kept, 0 failed; longest request {load.longest:.1f}s")


def test_a_hold_that_runs_out_lets_the_requests_through_and_the_guard_decides(images, slow_image, tmp_path,
                                                                              project_name):
    """`--hold-writes 2s` and a migration slower than that: the held requests go through when the
    time is up (said), none gets a 503 from the hold, and what they write makes the restore one
    that would discard it: refused, as without the hold; every acknowledged row kept."""
    v1, _, _ = images
    release, load, during, up_seconds, _, _ = release_under_load(tmp_path, project_name, v1, slow_image, False,
                                                                 "--hold-writes", "2s")
    err = release.stderr
    assert "Holding writes" in err and "hold_writes (2s) passed before the release was decided" in err, err
    assert release.returncode == EXIT_ROLLBACK_FAILED, err
    assert "refused" in err, err
    assert all(f == 500 for f in load.failed), load.failed[:5]  # the old release on the dropped column
    print(f"\nhold ran out: `up` {up_seconds:.1f}s, {during} POSTs acknowledged during it, all kept; "
          f"{len(load.failed)} failed (500, the dropped column); longest request {load.longest:.1f}s")
