"""Stop-first replacements on the real engine: the old container is kept, stopped, and comes back."""

from __future__ import annotations

import json
import signal
import time

import pytest

from conftest import docker, run_cli
from test_deploy_faults import names, popen_up, wait_for_container
from test_deploy_support import app_service, free_port, get_version, history, wait_for_version, write_project

pytestmark = pytest.mark.docker


def host_port_web(version: str, mode: str, port: int, **extra) -> dict:
    # init: the app then stops at once on SIGTERM instead of after its whole grace period.
    return app_service(version, mode, x_atomic={"health": {"path": "/healthz", "port": 8080}, "monitor": "1s"},
                       ports=[f"127.0.0.1:{port}:8080"], init=True, **extra)


def running(name: str) -> bool:
    return json.loads(docker("inspect", name).stdout)[0]["State"]["Status"] == "running"


def test_host_port_broken_v2_rolls_back_to_v1_then_v2_replaces_it(project_name, tmp_path):
    port = free_port()
    write_project(tmp_path, {"web": host_port_web("v1", "ok", port)})
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    wait_for_version(port, "v1")

    write_project(tmp_path, {"web": host_port_web("v2", "broken", port)})
    proc = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert f"{project_name}-web-1 was started again and serves" in proc.stderr
    assert "health log" in proc.stderr and "Traceback" not in proc.stderr
    assert "Error response from daemon" not in proc.stderr
    assert get_version(port) == "v1"  # no wait: "serves" was checked before the command said so
    assert names(project_name) == [f"{project_name}-web-1"] and running(f"{project_name}-web-1")
    assert history(run_cli, tmp_path, project_name, "web")[-1]["outcome"] == "rolled-back"

    write_project(tmp_path, {"web": host_port_web("v2", "ok", port)})
    proc = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "Stop-first" in ln]
    assert len(lines) == 1 and f"publishes host port {port}" in lines[0]
    assert "Error response from daemon" not in proc.stderr
    wait_for_version(port, "v2")
    assert names(project_name) == [f"{project_name}-web-2"]  # the old one was removed


def test_host_port_v2_crashing_in_the_monitor_window_brings_v1_back(project_name, tmp_path):
    port = free_port()
    write_project(tmp_path, {"web": host_port_web("v1", "ok", port)})
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    wait_for_version(port, "v1")
    crashy = app_service("v2", "crashy", x_atomic={"health": {"path": "/healthz", "port": 8080}, "monitor": "8s"},
                         ports=[f"127.0.0.1:{port}:8080"], init=True, env={"CRASH_AFTER": "3"})
    write_project(tmp_path, {"web": crashy})
    proc = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "after the switch" in proc.stderr and "was started again and serves" in proc.stderr
    assert get_version(port) == "v1"
    assert names(project_name) == [f"{project_name}-web-1"]


def test_interrupted_stop_first_puts_the_old_container_back(project_name, tmp_path):
    port = free_port()
    write_project(tmp_path, {"web": host_port_web("v1", "ok", port)})
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    wait_for_version(port, "v1")
    slow = host_port_web("v2", "slow", port, start_period="10s")

    # Ctrl-C while the new container is gated: the same undo as start-first, under shielded().
    write_project(tmp_path, {"web": slow})
    proc = popen_up(tmp_path, project_name)
    wait_for_container(f"{project_name}-web-2")  # started, so the old one is stopped by now
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert get_version(port) == "v1"
    assert names(project_name) == [f"{project_name}-web-1"]

    # Killed outright at the same step: the next `up` starts the stopped old container again.
    proc = popen_up(tmp_path, project_name)
    wait_for_container(f"{project_name}-web-2")  # Compose numbers it 2 again
    time.sleep(0.5)
    proc.kill()
    proc.communicate(timeout=30)
    assert not running(f"{project_name}-web-1")
    write_project(tmp_path, {"web": host_port_web("v1", "ok", port)})
    again = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Reconciled" in again.stderr and "Replacing" not in again.stderr
    assert names(project_name) == [f"{project_name}-web-1"]
    assert get_version(port) == "v1"


def test_strategy_stop_first_behind_the_proxy_rolls_back_then_deploys(project_name, tmp_path):
    port = free_port()
    annotation = {"route": {"port": 8080}, "strategy": "stop-first", "monitor": "1s"}
    write_project(tmp_path, {"web": app_service("v1", x_atomic=annotation, init=True)}, proxy_port=port)
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    wait_for_version(port, "v1")

    write_project(tmp_path, {"web": app_service("v2", "broken", x_atomic=annotation, init=True)}, proxy_port=port)
    failed = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert failed.returncode == 3, failed.stderr
    assert "strategy: stop-first" in failed.stderr and "was started again and serves" in failed.stderr
    assert get_version(port) == "v1"  # through the proxy, re-pointed at the restarted container
    assert names(project_name) == [f"{project_name}-web-1"]

    write_project(tmp_path, {"web": app_service("v2", x_atomic=annotation, init=True)}, proxy_port=port)
    deployed = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr
    assert get_version(port) == "v2"
    assert names(project_name) == [f"{project_name}-web-2"]  # the old one was removed
    assert f"Container {project_name}-web-1 Removed" in deployed.stderr.replace("  ", " ")


def test_container_name_is_recreated_in_place_and_says_it_cannot_go_back(project_name, tmp_path):
    """Compose refuses to scale a container_name service and removes the old one when it recreates it."""
    named = f"{project_name}-named"
    write_project(tmp_path, {"web": app_service("v1", x_atomic={"monitor": "1s"}, container_name=named)})
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    write_project(tmp_path, {"web": app_service("v2", "exit", x_atomic={"monitor": "1s"}, container_name=named)})
    proc = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert proc.returncode == 4, proc.stderr
    assert f"container_name: {named}" in proc.stderr and "no old version is left to return to" in proc.stderr
    assert "exiting at once" in proc.stderr and "Traceback" not in proc.stderr
