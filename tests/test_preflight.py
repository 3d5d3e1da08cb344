"""The disk pre-flight of `up` on the real engine: a deploy that would not fit fails before anything changes.

The free-space reading is simulated with the pre-flight's test hook, COMPOSE_ATOMIC_TEST_FREE_BYTES
(compose_atomic/ops/disk.py): everything else (the project, the plan, the containers' writable
layers, the image sizes) is read from the engine.
"""

from __future__ import annotations

import inspect
import json
import subprocess

import pytest

import compose_atomic.deploy
from compose_atomic.errors import EXIT_FAILED, PreflightFailed
from compose_atomic.ops import disk
from conftest import IMAGE_BUSYBOX, docker, run_cli
from test_deploy_support import app_service, write_project

WIRED = "preflight(" in inspect.getsource(compose_atomic.deploy)


def test_simulated_reading_and_sizes():
    assert disk.human(300 * 1024 * 1024) == "300.0 MiB" and disk.human(512) == "512 B"


def running(project_name: str) -> list[tuple[str, str]]:
    out = docker("ps", "-a", "--format", "{{.Names}} {{.Image}}", "--filter",
                 f"label=com.docker.compose.project={project_name}").stdout
    return sorted(tuple(line.split()) for line in out.splitlines())


@pytest.fixture
def deployed_v1_and_image_v2(project_name, tmp_path, request):
    services = {"web": app_service("v1")}
    write_project(tmp_path, services)
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    image_v2 = f"compose-atomic-testbed/app:{project_name}-v2"
    built = subprocess.run(["docker", "build", "-q", "-t", image_v2, "-"], text=True, capture_output=True,
                           input=f"FROM {IMAGE_BUSYBOX}\nLABEL version=v2\n")
    assert built.returncode == 0, built.stderr
    request.addfinalizer(lambda: docker("rmi", "-f", image_v2, check=False))
    services["web"] = app_service("v2", image=image_v2)
    write_project(tmp_path, services)
    return image_v2


@pytest.mark.docker
def test_preflight_refuses_a_deploy_that_does_not_fit(project_name, tmp_path, deployed_v1_and_image_v2, monkeypatch):
    from compose_atomic.deploy.plan import plan_services
    from compose_atomic.project import ComposeOptions, load_project

    project = load_project(ComposeOptions(project_name=project_name, project_directory=str(tmp_path)))
    plans = plan_services(project, ["web"])
    assert [p.action for p in plans] == ["replace"]
    before = running(project_name)

    disk.preflight(project, plans)  # the real disk has room

    monkeypatch.setenv(disk.TEST_HOOK, str(100 * 1024 * 1024))  # 100 MiB free: under the margin
    with pytest.raises(PreflightFailed) as caught:
        disk.preflight(project, plans)
    error = caught.value
    assert error.exit_code == EXIT_FAILED
    root = json.loads(docker("info", "--format", "{{json .DockerRootDir}}").stdout)
    assert f"({root}) has 100.0 MiB free" in error.message and "missing" in error.message
    assert "web: the second container's writable layer" in error.message
    assert "prune --dry-run" in error.hint
    assert running(project_name) == before  # nothing changed

    # Nothing to create or replace: nothing to check, however full the disk.
    unchanged = [p for p in plans if p.action == "unchanged"]
    disk.preflight(project, unchanged)


@pytest.mark.docker
@pytest.mark.skipif(not WIRED, reason="compose_atomic/deploy/__init__.py does not call ops.disk.preflight yet")
def test_up_fails_before_anything_changes(project_name, tmp_path, deployed_v1_and_image_v2):
    before = running(project_name)
    up = run_cli("-p", project_name, "up", cwd=tmp_path, env={disk.TEST_HOOK: "1000"})
    assert up.returncode == 1, up.stderr
    assert "not enough free space for this deploy; nothing was changed" in up.stderr
    assert "Traceback" not in up.stderr
    assert running(project_name) == before
