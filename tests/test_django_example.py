"""examples/django-notes on the real engine: Django under gunicorn (sync workers, persistent
connections) behind the managed Caddy, migrated with `manage.py migrate` through
x-atomic.migrate.command. A release with a real Django migration rolls out under light load:
no request fails and every row the app acknowledged (201 with its id) is in the database.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import IMAGE_CADDY, IMAGE_DJANGO, IMAGE_POSTGRES, ROOT, docker, run_cli

pytestmark = pytest.mark.docker
EXAMPLE = ROOT / "examples" / "django-notes"
APP_V1 = "compose-atomic-testbed/django-notes:1"

# Release 2: a field and its migration (nullable, so release 1 keeps writing during the rollout).
MODEL_V2 = '''
    tag = models.CharField(max_length=40, null=True, blank=True)
'''
MIGRATION_V2 = '''from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [migrations.AddField("note", "tag", models.CharField(blank=True, max_length=40, null=True))]
'''


def build(tag: str, context: Path) -> str:
    docker("build", "-q", "-t", tag, "--build-arg", f"BASE={IMAGE_DJANGO}", str(context), timeout=600)
    return tag


@pytest.fixture(scope="module")
def images(docker_engine, tmp_path_factory) -> tuple[str, str]:
    v1 = build(APP_V1, EXAMPLE / "app")
    context = tmp_path_factory.mktemp("django-v2") / "app"
    shutil.copytree(EXAMPLE / "app", context)
    models = context / "notes" / "models.py"
    models.write_text(models.read_text() + MODEL_V2)
    (context / "notes" / "migrations" / "0002_note_tag.py").write_text(MIGRATION_V2)
    v2 = build("compose-atomic-testbed/django-notes:2", context)
    return v1, v2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Load:
    """Two clients POSTing notes through the proxy, each acknowledged id recorded."""

    def __init__(self, url: str):
        self.url, self.acked, self.failed = url, [], []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                request = urllib.request.Request(self.url, data=b"note", method="POST")
                with urllib.request.urlopen(request, timeout=15) as response:
                    body = json.loads(response.read())
                    (self.acked if response.status == 201 else self.failed).append(body.get("id", response.status))
            except Exception as error:  # noqa: BLE001 - every failure is counted and shown
                self.failed.append(repr(error)[:200])
            time.sleep(0.03)

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def test_django_release_with_a_migration_rolls_out_under_load_without_losing_a_row(images, tmp_path, project_name):
    v1, v2 = images
    shutil.copytree(EXAMPLE, tmp_path, dirs_exist_ok=True)
    (tmp_path / "secrets" / "db_password").write_text("django-s3cret\n")
    (tmp_path / "secrets" / "db_password").chmod(0o600)
    port = free_port()
    env = {"APP_IMAGE": v1, "POSTGRES_IMAGE": IMAGE_POSTGRES, "CADDY_IMAGE": IMAGE_CADDY,
           "HTTP_PORT": f"127.0.0.1:{port}"}
    base = f"http://127.0.0.1:{port}"

    # The app reaches the database by address: the shared engine's DNS flakes (see test_backup_stack).
    started = subprocess.run(["docker", "compose", "-p", project_name, "up", "-d", "--wait", "db"], cwd=tmp_path,
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr
    info = json.loads(docker("inspect", f"{project_name}-db-1").stdout)[0]
    env["DB_HOST"] = next(iter(info["NetworkSettings"]["Networks"].values()))["IPAddress"]

    first = run_cli("-p", project_name, "up", "-d", cwd=tmp_path, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "Applying notes.0001_initial... OK" in first.stderr
    with urllib.request.urlopen(f"{base}/version", timeout=10) as response:
        assert response.read().decode().strip() == "version 1"

    with Load(f"{base}/notes") as load:
        time.sleep(3)
        second = run_cli("-p", project_name, "up", "-d", cwd=tmp_path, timeout=600,
                         env={**env, "APP_IMAGE": v2, "APP_VERSION": "2"})
        time.sleep(3)
    assert second.returncode == 0, second.stderr
    assert "Applying notes.0002_note_tag... OK" in second.stderr
    with urllib.request.urlopen(f"{base}/version", timeout=10) as response:
        assert response.read().decode().strip() == "version 2"

    assert load.failed == [], load.failed[:5]
    assert len(load.acked) > 50, len(load.acked)
    rows = docker("exec", f"{project_name}-db-1", "psql", "-X", "-At", "-U", "app", "-d", "app", "-c",
                  "SELECT id, version FROM notes_note").stdout.split()
    stored = {int(line.split("|")[0]): line.split("|")[1] for line in rows}
    lost = sorted(set(load.acked) - set(stored))
    assert lost == [], f"{len(lost)} acknowledged rows are missing: {lost[:10]}"
    assert {"1", "2"} <= set(stored.values())  # both releases wrote during the rollout
    columns = docker("exec", f"{project_name}-db-1", "psql", "-X", "-At", "-U", "app", "-d", "app", "-c",
                     "SELECT column_name FROM information_schema.columns WHERE table_name = 'notes_note'").stdout
    assert "tag" in columns.split()
    print(f"django rollout: {len(load.acked)} acknowledged POSTs, 0 failed, 0 lost")
