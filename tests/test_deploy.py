"""compose-atomic up: the rolling replacement on the real engine, behind the real Caddy proxy."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import IMAGE_BUSYBOX, docker, run_cli
from test_deploy_support import (Hammer, app_service, free_port, get_version, history, proxy_errors, wait_for_version,
                                 write_project)

pytestmark = pytest.mark.docker


def containers(project_name: str, service: str = "web", all_: bool = False) -> list[str]:
    args = ["ps", "--format", "{{.Names}}", "--filter", f"label=com.docker.compose.project={project_name}",
            "--filter", f"label=com.docker.compose.service={service}"]
    return sorted(docker(*args, *(["-a"] if all_ else [])).stdout.split())


def test_upgrade_under_load_then_history_dry_run_proxy_restart_and_rollback(project_name, tmp_path, request):
    port = free_port()
    services = {"web": app_service("v1"), "side": {"image": "compose-atomic-testbed/busybox:1",
                                                   "command": ["sleep", "3600"], "init": True}}
    write_project(tmp_path, services, proxy_port=port)
    first = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    wait_for_version(port, "v1")
    assert containers(project_name, "side"), "a service without x-atomic comes up as with docker compose up -d"

    # v2 is a different image (busybox plus a label), so that rollback has an image to go back to.
    image_v2 = f"compose-atomic-testbed/app:{project_name}-v2"
    built = subprocess.run(["docker", "build", "-q", "-t", image_v2, "-"], text=True, capture_output=True,
                           input=f"FROM {IMAGE_BUSYBOX}\nLABEL version=v2\n")
    assert built.returncode == 0, built.stderr
    request.addfinalizer(lambda: docker("rmi", "-f", image_v2, check=False))
    services["web"] = app_service("v2", image=image_v2)
    write_project(tmp_path, services, proxy_port=port)
    dry = run_cli("--dry-run", "-p", project_name, "up", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "Would replace start-first (configuration changed, image changed)" in dry.stderr
    assert containers(project_name) == [f"{project_name}-web-1"] and get_version(port) == "v1"

    with Hammer(port) as load:
        upgrade = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert upgrade.returncode == 0, upgrade.stderr
    assert load.failures == [], (load.failures, proxy_errors(project_name, tmp_path))
    assert load.long_done >= 1 and load.ok > 20
    assert "v2" in load.versions and get_version(port) == "v2"
    assert containers(project_name, all_=True) == [f"{project_name}-web-2"]
    assert "Switched" in upgrade.stderr and "Healthy" in upgrade.stderr
    assert "image changed" in upgrade.stderr

    # Compose counts the new container as the service: a plain `docker compose up -d` keeps it.
    plain = docker("compose", "-p", project_name, "--project-directory", str(tmp_path), "up", "-d", check=False)
    assert plain.returncode == 0, plain.stderr
    assert containers(project_name) == [f"{project_name}-web-2"]

    unchanged = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert unchanged.returncode == 0 and "Replacing" not in unchanged.stderr

    # The proxy's routes survive a restart of the proxy.
    docker("restart", "-t", "1", f"{project_name}-atomic-proxy")
    wait_for_version(port, "v2")

    entries = history(run_cli, tmp_path, project_name, "web")
    assert [e["outcome"] for e in entries] == ["deployed"]
    assert entries[0]["old_image_id"] and entries[0]["new_container"] == f"{project_name}-web-2"
    table = run_cli("-p", project_name, "history", cwd=tmp_path)
    assert "deployed" in table.stdout

    back = run_cli("-p", project_name, "rollback", "web", cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    assert containers(project_name) == [f"{project_name}-web-3"]
    running = json.loads(docker("inspect", f"{project_name}-web-3").stdout)[0]["Image"]
    assert running == entries[0]["old_image_id"] != entries[0]["new_image_id"]
    assert get_version(port) == "v2"  # the configuration (VERSION) is the compose file's; the image is the old one
    assert history(run_cli, tmp_path, project_name, "web")[-1]["outcome"] == "deployed"

    down = run_cli("-p", project_name, "down", "-t", "0", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project_name}").stdout.strip() == ""
    certificates = ["volume", "ls", "-q", "--filter", f"label=dev.compose-atomic.proxy={project_name}"]
    assert docker(*certificates).stdout.split() == [f"{project_name}-atomic-proxy-data"]  # kept by down
    down = run_cli("-p", project_name, "down", "-v", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert docker(*certificates).stdout.strip() == ""  # gone with down -v


def test_without_proxy_the_service_name_moves_only_once_healthy(project_name, tmp_path):
    services = {"web": app_service("v1", x_atomic={"monitor": "1s", "health": {"path": "/healthz", "port": 8080}})}
    write_project(tmp_path, services)
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    services["web"] = app_service("v2", x_atomic={"monitor": "1s", "health": {"path": "/healthz", "port": 8080}})
    write_project(tmp_path, services)
    proc = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    net = f"{project_name}_default"
    new = f"{project_name}-web-2"
    aliases = json.loads(docker("inspect", new).stdout)[0]["NetworkSettings"]["Networks"][net]["Aliases"]
    assert "web" in aliases
    probe = docker("run", "--rm", "--network", net, "compose-atomic-testbed/busybox:1",
                   "wget", "-qO-", "http://web:8080/cgi-bin/v", check=False)
    assert probe.stdout.strip() == "v2", probe.stderr

    # Dead, then recreated: it starts out of the aliases and gets them back once healthy.
    docker("kill", new)
    revived = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert revived.returncode == 0, revived.stderr
    assert "Recreating" in revived.stderr and "Healthy" in revived.stderr
    aliases = json.loads(docker("inspect", new).stdout)[0]["NetworkSettings"]["Networks"][net]["Aliases"]
    assert "web" in aliases
    probe = docker("run", "--rm", "--network", net, "compose-atomic-testbed/busybox:1",
                   "wget", "-qO-", "http://web:8080/cgi-bin/v", check=False)
    assert probe.stdout.strip() == "v2", probe.stderr


def test_two_replicas_upgrade_under_load_then_broken_rolls_back_to_both(project_name, tmp_path):
    port = free_port()
    web = {"deploy": {"replicas": 2}, "init": True}  # init: the old ones stop at once
    write_project(tmp_path, {"web": app_service("v1", **web)}, proxy_port=port)
    first = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    wait_for_version(port, "v1")
    old = [f"{project_name}-web-1", f"{project_name}-web-2"]
    assert containers(project_name, all_=True) == old

    write_project(tmp_path, {"web": app_service("v2", **web)}, proxy_port=port)
    with Hammer(port, clients=4, long_requests=1) as load:
        upgrade = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert upgrade.returncode == 0, upgrade.stderr
    assert load.failures == [], (load.failures, proxy_errors(project_name, tmp_path))
    assert load.ok > 20 and load.long_done >= 1 and "v2" in load.versions
    new = [f"{project_name}-web-3", f"{project_name}-web-4"]
    lines = upgrade.stderr.splitlines()
    switched = next(i for i, ln in enumerate(lines) if "Switched" in ln)
    for name in new:  # both gated before the switch, both routed by it
        assert any(name in ln and "Healthy" in ln for ln in lines[:switched]), upgrade.stderr
        assert name in lines[switched]
    for name in old:
        assert any(name in ln and "Removed" in ln for ln in lines[switched:]), upgrade.stderr
    assert containers(project_name, all_=True) == new
    assert get_version(port) == "v2"
    # Both replicas take requests (round robin), not one serving and one waiting.
    served_by = {get_version(port, "/cgi-bin/who") for _ in range(8)}
    assert len(served_by) == 2, served_by

    write_project(tmp_path, {"web": app_service("v3", "broken", **web)}, proxy_port=port)
    broken = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert broken.returncode == 3, broken.stderr
    assert f"rolled back, {new[0]}, {new[1]} serves" in broken.stderr
    assert containers(project_name, all_=True) == new
    assert get_version(port) == "v2"
