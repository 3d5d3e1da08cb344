"""The example stack end to end: first deploy runs the migrations, a release whose
migration succeeds but whose app fails its health check brings the database back
and leaves the old app serving (issues 3 and 4 together, on the real engine)."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import pytest

from conftest import IMAGE_BUSYBOX, IMAGE_CADDY, IMAGE_POSTGRES, ROOT, docker, free_port, run_cli

APP_IMAGE = "compose-atomic-testbed/solo-saas-app:1"


@pytest.fixture(scope="module")
def app_image(docker_engine) -> str:
    if docker("image", "inspect", APP_IMAGE, check=False).returncode != 0:
        docker("build", "-q", "-t", APP_IMAGE, "--build-arg", f"BASE={IMAGE_POSTGRES}",
               "--build-arg", f"BUSYBOX={IMAGE_BUSYBOX}", str(ROOT / "examples" / "solo-saas" / "app"),
               timeout=300)
    return APP_IMAGE


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode().strip()


def psql(project: str, sql: str) -> str:
    return docker("exec", f"{project}-db-1", "psql", "-X", "-q", "-t", "-A", "-U", "app", "-d", "app",
                  "-c", sql).stdout.strip()


def test_failed_release_restores_the_database_and_keeps_the_old_app(tmp_path: Path, project_name, app_image):
    shutil.copytree(ROOT / "examples" / "solo-saas", tmp_path, dirs_exist_ok=True)
    (tmp_path / "secrets" / "db_password").write_text("s3cret-for-tests\n")
    (tmp_path / "secrets" / "pgpass").write_text("db:5432:app:app:s3cret-for-tests\n")
    for f in (tmp_path / "secrets").iterdir():
        f.chmod(0o600)
    port = free_port()
    env = {"APP_IMAGE": app_image, "POSTGRES_IMAGE": IMAGE_POSTGRES, "CADDY_IMAGE": IMAGE_CADDY,
           "HTTP_PORT": f"127.0.0.1:{port}"}
    url = f"http://127.0.0.1:{port}/cgi-bin/version"

    first = run_cli("-p", project_name, "up", "-d", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert get(url) == "version 1"
    assert psql(project_name, "SELECT to_regclass('public.notes') IS NOT NULL") == "t"
    psql(project_name, "INSERT INTO notes (body) VALUES ('kept')")

    (tmp_path / "migrations" / "003_notes_title.sql").write_text(
        "ALTER TABLE notes ADD COLUMN title text;\n")
    broken = run_cli("-p", project_name, "up", "-d", cwd=tmp_path, env={**env, "APP_BROKEN": "1"})
    assert broken.returncode == 3, broken.stderr
    # The migration only added a column: it is undone in place, the rows stay (no restore).
    assert "Migrated" in broken.stderr and "Undone" in broken.stderr and "Restored" not in broken.stderr
    assert "Traceback" not in broken.stderr
    # The database is as it was before the release: no new column, the row kept.
    assert psql(project_name, "SELECT count(*) FROM information_schema.columns "
                              "WHERE table_name = 'notes' AND column_name = 'title'") == "0"
    assert psql(project_name, "SELECT body FROM notes") == "kept"
    # The old app never stopped serving.
    assert get(url) == "version 1"
    running = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project_name}",
                     "--filter", "label=com.docker.compose.service=app").stdout.split()
    assert len(running) == 1

    # Fixed release: the migration applies for good and the new config serves.
    docker("tag", app_image, app_image + "-fixed")
    fixed = run_cli("-p", project_name, "up", "-d", cwd=tmp_path, env={**env, "APP_IMAGE": app_image + "-fixed"})
    assert fixed.returncode == 0, fixed.stderr
    assert psql(project_name, "SELECT count(*) FROM information_schema.columns "
                              "WHERE table_name = 'notes' AND column_name = 'title'") == "1"
    assert get(url) == "version 1"
