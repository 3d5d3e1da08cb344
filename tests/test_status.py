"""compose-atomic status on the real engine, behind the real Caddy proxy; its pure parts beside."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import IMAGE_BUSYBOX, docker, run_cli
from test_deploy_support import app_service, free_port, wait_for_version, write_project

from compose_atomic.ops.status import _parse_time, ago


def test_ago_and_docker_timestamps():
    assert [ago(s) for s in (5, 65, 3720, 90000)] == ["5s", "1m05s", "1h02m", "1d01h"]
    assert _parse_time("2026-12-01T20:00:00.123456789Z") == _parse_time("2026-12-01T21:00:00+01:00")
    assert _parse_time("0001-01-01T00:00:00Z") is None


def status(tmp_path, project_name, *args):
    started = time.monotonic()
    proc = run_cli("-p", project_name, "status", *args, cwd=tmp_path)
    return proc, time.monotonic() - started


@pytest.mark.docker
def test_status_after_deploys(project_name, tmp_path, request):
    port = free_port()
    side = {"image": IMAGE_BUSYBOX, "command": ["sleep", "3600"], "init": True,
            "logging": {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}}
    services = {"web": app_service("v1"), "side": side}
    write_project(tmp_path, services, proxy_port=port)
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    wait_for_version(port, "v1")

    image_v2 = f"compose-atomic-testbed/app:{project_name}-v2"
    built = subprocess.run(["docker", "build", "-q", "-t", image_v2, "-"], text=True, capture_output=True,
                           input=f"FROM {IMAGE_BUSYBOX}\nLABEL version=v2\n")
    assert built.returncode == 0, built.stderr
    request.addfinalizer(lambda: docker("rmi", "-f", image_v2, check=False))
    services["web"] = app_service("v2", image=image_v2)
    write_project(tmp_path, services, proxy_port=port)
    upgrade = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert upgrade.returncode == 0, upgrade.stderr
    wait_for_version(port, "v2")

    proc, _ = status(tmp_path, project_name, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    web = next(s for s in data["services"] if s["service"] == "web")
    new_image = json.loads(docker("image", "inspect", image_v2).stdout)[0]["Id"]
    assert web["image"] == image_v2 and web["image_id"] == new_image
    assert web["health"] == "healthy" and web["replicas"] == {"running": 1, "desired": 1}
    assert [c["name"] for c in web["containers"]] == [f"{project_name}-web-2"]
    assert web["since_seconds"] is not None and web["since_seconds"] < 120
    ip = next(iter(json.loads(docker("inspect", f"{project_name}-web-2").stdout)[0]
                   ["NetworkSettings"]["Networks"].values()))["IPAddress"]
    assert web["route"]["proxy_dials"] == [f"{ip}:8080", f"{project_name}-web-2:8080"]
    assert web["route"]["stale_dials"] == []
    assert web["last_deploy"]["outcome"] == "deployed" and web["last_deploy"]["new_image_id"] == new_image
    assert web["logs_unbounded"] is True  # the app sets no logging options
    side_status = next(s for s in data["services"] if s["service"] == "side")
    assert side_status["health"] == "running" and side_status["logs_unbounded"] is False
    assert side_status["last_deploy"] is None and side_status["route"] is None
    places = {d["place"]: d for d in data["disk"]}
    assert places["docker"]["path"] == json.loads(docker("info", "--format", "{{json .DockerRootDir}}").stdout)
    assert places["docker"]["free_bytes"] > 0 and places["state"]["free_bytes"] > 0
    assert data["problems"] == ["logs unbounded for web (json-file without max-size grows until the disk is full): "
                                "set logging.options max-size and max-file"], data["problems"]

    # The table: plain without colour under NO_COLOR, data on stdout, nothing on stderr.
    plain, seconds = status(tmp_path, project_name)
    assert plain.returncode == 0 and plain.stderr == ""
    assert "\x1b[" not in plain.stdout
    assert f"route * :8080 -> {ip}:8080 {project_name}-web-2:8080" in plain.stdout
    assert "last deploy" in plain.stdout and "deployed" in plain.stdout
    assert "logs unbounded" in plain.stdout
    assert seconds < 5, f"status took {seconds:.2f}s (the bench measures it quietly: bench/status)"

    one, _ = status(tmp_path, project_name, "web", "--json")
    assert [s["service"] for s in json.loads(one.stdout)["services"]] == ["web"]

    # What reconcile would fix: a journal left behind, a proxy dialling a container that is gone.
    journal = tmp_path / ".compose-atomic" / "deploy" / project_name / "journal.json"
    journal.write_text(json.dumps({"service": "web", "phase": "switched", "old": [], "new": []}))
    docker("stop", "-t", "0", f"{project_name}-web-2")
    found = json.loads(status(tmp_path, project_name, "--json")[0].stdout)["problems"]
    assert any("interrupted at step 'switched'" in p and "compose-atomic up" in p for p in found), found
    assert any(p.startswith("web: stopped") for p in found), found
    assert any("the proxy dials" in p for p in found), found
    journal.unlink()


@pytest.mark.docker
def test_status_usage_errors(project_name, tmp_path):
    write_project(tmp_path, {"web": app_service("v1")})
    proc, _ = status(tmp_path, project_name, "nope")
    assert proc.returncode == 2 and "no such service: nope" in proc.stderr and "Traceback" not in proc.stderr
    # Never deployed: no containers, nothing in the state directory, and status creates none of it.
    proc, _ = status(tmp_path, project_name, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["services"][0]["health"] == "missing"
    assert not (tmp_path / ".compose-atomic").exists()
