"""Faults during a deploy, with real containers: each ends with one version serving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from conftest import docker, run_cli
from test_deploy_support import WebhookSink, app_service, free_port, get_version, wait_for_version, write_project

pytestmark = pytest.mark.docker


@pytest.fixture
def sink():
    hook = WebhookSink()
    yield hook
    hook.close()


def names(project_name: str, service: str = "web") -> list[str]:
    return sorted(docker("ps", "-a", "--format", "{{.Names}}", "--filter",
                         f"label=com.docker.compose.project={project_name}",
                         "--filter", f"label=com.docker.compose.service={service}").stdout.split())


def start_v1(tmp_path, project_name, sink=None, **web):
    port = free_port()
    top = {"alert": {"webhook": sink.url}} if sink else None
    write_project(tmp_path, {"web": app_service("v1", **web)}, proxy_port=port, x_atomic=top)
    proc = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    wait_for_version(port, "v1")
    return port, top


def popen_up(tmp_path, project_name, *extra):
    return subprocess.Popen([sys.executable, "-m", "compose_atomic", "-p", project_name, "up", *extra],
                            cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_container(name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if docker("ps", "-q", "--filter", f"name=^{name}$").stdout.strip():
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} never started")


def test_never_healthy_rolls_back_with_health_log_and_alert(project_name, tmp_path, sink):
    port, top = start_v1(tmp_path, project_name, sink)
    write_project(tmp_path, {"web": app_service("v2", "broken")}, proxy_port=port, x_atomic=top)
    proc = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "rolled back" in proc.stderr and "health log" in proc.stderr and "404 Not Found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert get_version(port) == "v1"
    assert names(project_name) == [f"{project_name}-web-1"]
    assert any("rolled back" in m["text"] for m in sink.received), sink.received


def test_exits_at_once_rolls_back_with_log_tail(project_name, tmp_path):
    port, _ = start_v1(tmp_path, project_name)
    write_project(tmp_path, {"web": app_service("v2", "exit")}, proxy_port=port)
    proc = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "exited with code 3" in proc.stderr and "exiting at once" in proc.stderr
    assert get_version(port) == "v1"
    assert names(project_name) == [f"{project_name}-web-1"]


def test_crash_inside_the_monitor_window_switches_back(project_name, tmp_path, sink):
    port, top = start_v1(tmp_path, project_name, sink)
    crashy = app_service("v2", "crashy", env={"CRASH_AFTER": "3"},
                         x_atomic={"route": {"port": 8080}, "monitor": "8s", "drain": "2s"})
    write_project(tmp_path, {"web": crashy}, proxy_port=port, x_atomic=top)
    proc = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "Switched" in proc.stderr and "after the switch" in proc.stderr
    assert get_version(port) == "v1"
    assert names(project_name) == [f"{project_name}-web-1"]
    assert any("rolled back" in m["text"] for m in sink.received)
    entries = run_cli("-p", project_name, "history", "--json", cwd=tmp_path)
    assert '"rolled-back"' in entries.stdout


def test_image_not_found_changes_nothing(project_name, tmp_path):
    port, _ = start_v1(tmp_path, project_name)
    write_project(tmp_path, {"web": app_service("v2", image="127.0.0.1:9/compose-atomic/missing:1")},
                  proxy_port=port)
    proc = run_cli("-p", project_name, "up", cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "could not be pulled" in proc.stderr and "Traceback" not in proc.stderr
    assert get_version(port) == "v1"
    assert names(project_name) == [f"{project_name}-web-1"]


def test_old_container_already_dead(project_name, tmp_path):
    port, _ = start_v1(tmp_path, project_name, init=True)  # init: stops at once
    web = f"{project_name}-web-1"
    docker("kill", web)
    write_project(tmp_path, {"web": app_service("v2", init=True)}, proxy_port=port)
    proc = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no running container" in proc.stderr
    lines = proc.stderr.splitlines()
    healthy = next(i for i, ln in enumerate(lines) if web in ln and "Healthy" in ln)
    assert any("Ready" in ln and "web -> nothing" in ln for ln in lines[:healthy]), proc.stderr
    assert any("Switched" in ln for ln in lines[healthy:]), proc.stderr  # routed only once healthy
    wait_for_version(port, "v2")
    assert names(project_name) == [web]

    # Dead again, and the recreated one never gets healthy: nothing to roll back to, never routed.
    docker("kill", web)
    write_project(tmp_path, {"web": app_service("v3", "broken", init=True)}, proxy_port=port)
    failed = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    assert "nothing was serving before, so there is nothing to roll back to" in failed.stderr
    assert "health log" in failed.stderr and "Traceback" not in failed.stderr
    assert docker("inspect", "-f", "{{.State.Status}}", web).stdout.strip() == "exited"
    try:  # routed, the broken app would answer 500 at once; unrouted, the proxy waits for an upstream
        answer = httpx.get(f"http://127.0.0.1:{port}/cgi-bin/v", timeout=1.5)
        assert answer.status_code in (502, 503) and "broken" not in answer.text, answer.text
    except httpx.TimeoutException:
        pass

    # The next `up` gates it again (and this time it is healthy).
    write_project(tmp_path, {"web": app_service("v3", init=True)}, proxy_port=port)
    again = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    wait_for_version(port, "v3")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_deploy_leaves_the_old_version(project_name, tmp_path, sig):
    port, _ = start_v1(tmp_path, project_name)
    write_project(tmp_path, {"web": app_service("v2", "slow", start_period="10s")}, proxy_port=port)
    proc = popen_up(tmp_path, project_name)
    wait_for_container(f"{project_name}-web-2")
    time.sleep(1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert get_version(port) == "v1"
    assert names(project_name) == [f"{project_name}-web-1"]


def test_killed_deploy_is_reconciled_by_the_next_up(project_name, tmp_path):
    port, _ = start_v1(tmp_path, project_name)
    write_project(tmp_path, {"web": app_service("v2", "slow", start_period="10s")}, proxy_port=port)
    proc = popen_up(tmp_path, project_name)
    wait_for_container(f"{project_name}-web-2")
    proc.kill()
    proc.communicate(timeout=30)
    assert get_version(port) == "v1"
    write_project(tmp_path, {"web": app_service("v1")}, proxy_port=port)
    again = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Reconciled" in again.stderr
    assert names(project_name) == [f"{project_name}-web-1"]
    assert get_version(port) == "v1"


@pytest.mark.parametrize("part", ["", "-switch"], ids=["edge", "switch"])
def test_proxy_killed_mid_deploy_comes_back_with_the_new_route(project_name, tmp_path, part):
    port, _ = start_v1(tmp_path, project_name)
    write_project(tmp_path, {"web": app_service("v2", "slow", start_period="10s", env={"SLOW_FOR": "3"})},
                  proxy_port=port)
    proc = popen_up(tmp_path, project_name)
    wait_for_container(f"{project_name}-web-2")
    docker("kill", f"{project_name}-atomic-proxy{part}")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    wait_for_version(port, "v2")
    assert names(project_name) == [f"{project_name}-web-2"]


def test_two_ups_at_once_one_waits_one_fails(project_name, tmp_path):
    port, _ = start_v1(tmp_path, project_name)
    write_project(tmp_path, {"web": app_service("v2", "slow", start_period="10s", env={"SLOW_FOR": "3"})},
                  proxy_port=port)
    first = popen_up(tmp_path, project_name)
    wait_for_container(f"{project_name}-web-2")
    waiting = popen_up(tmp_path, project_name, "--lock-wait", "2m")
    busy = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert busy.returncode == 1
    assert "another deploy is running" in busy.stderr and "--lock-wait" in busy.stderr
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    _, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert "Replacing" not in err  # it ran after the first finished: nothing left to replace
    assert get_version(port) == "v2"


def test_sigint_inside_the_monitor_window_switches_back(project_name, tmp_path):
    port, _ = start_v1(tmp_path, project_name)
    write_project(tmp_path, {"web": app_service("v2", x_atomic={"route": {"port": 8080}, "monitor": "30s"})},
                  proxy_port=port)
    proc = subprocess.Popen([sys.executable, "-m", "compose_atomic", "-p", project_name, "up"], cwd=tmp_path,
                            env={**os.environ, "NO_COLOR": "1"}, stderr=subprocess.PIPE, text=True)
    wait_for_version(port, "v2", timeout=60)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert get_version(port) == "v1"
    assert names(project_name) == [f"{project_name}-web-1"]
