"""After the engine restarts or crashes, on a second engine of the test's own (scripts/engine2).

The shared engine is never stopped: these tests start a dockerd in its own network namespace
(its docker0, bridges and iptables rules live there), deploy the bench's shape on it (an app
without a restart policy behind the managed proxy), then stop it cleanly (SIGTERM) or kill it
(SIGKILL, what a crash or an OOM kill does) and start it again. What must hold:

- the proxy (edge and switch) is back by its restart policy, after either;
- the app, which has no restart policy, is not; its route answers 503 with ``Retry-After``
  at once, never a hang;
- the next ``compose-atomic up`` brings the app back (exit 0) and the route serves it.

Marked ``engine_restart``; conftest.py runs them after every other test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import IMAGE_BUSYBOX, IMAGE_CADDY, ROOT
from test_deploy_support import app_service, free_port, write_project

pytestmark = pytest.mark.engine_restart

SCRIPT = ROOT / "scripts" / "engine2"
NAME = "ca-engine2-test"
NETNS = f"/run/netns/{NAME}"
DOCKER_HOST = f"unix:///run/{NAME}/docker.sock"
ENV = {"ENGINE2_NAME": NAME, "ENGINE2_BIP": "10.213.9.1/24", "ENGINE2_POOL": "10.215.0.0/16"}


def engine2(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(SCRIPT), *args], env={**os.environ, **ENV}, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"scripts/engine2 {' '.join(args)}: {proc.stderr}"
    return proc


def docker0() -> str:
    proc = subprocess.run(["ip", "-brief", "addr", "show", "docker0"], capture_output=True, text=True, timeout=10)
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def second_engine(docker_engine):
    if os.geteuid() != 0:
        pytest.fail("these tests start a second dockerd: run them as root (scripts/test does)")
    before = docker0()
    engine2("down")
    engine2("up", IMAGE_BUSYBOX, IMAGE_CADDY)
    yield
    engine2("down")
    assert docker0() == before, "the host's docker0 changed"


def in_netns(*argv: str, env: dict | None = None, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    """Run a command in the second engine's network namespace, talking to the second engine."""
    return subprocess.run(["nsenter", f"--net={NETNS}", *argv], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, "DOCKER_HOST": DOCKER_HOST, "NO_COLOR": "1", **(env or {})})


def cli(cwd, *args: str) -> subprocess.CompletedProcess:
    return in_netns(sys.executable, "-m", "compose_atomic", *args, cwd=cwd)


def d2(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "-H", DOCKER_HOST, *args], capture_output=True, text=True, timeout=60)


PROBE = textwrap.dedent("""
    import json, sys, time, httpx
    out = []
    for _ in range(int(sys.argv[2])):
        start = time.monotonic()
        try:
            r = httpx.get(sys.argv[1], timeout=30)
            out.append([r.status_code, round(time.monotonic() - start, 3), r.headers.get("retry-after"), r.text.strip()[:60]])
        except httpx.HTTPError as exc:
            out.append([type(exc).__name__, round(time.monotonic() - start, 3), None, str(exc)[:60]])
        time.sleep(0.05)
    print(json.dumps(out))
""")


def get(port: int, count: int = 1, path: str = "/cgi-bin/v") -> list[list]:
    """``count`` GETs from inside the namespace: [status, seconds, Retry-After, body] each."""
    proc = in_netns(sys.executable, "-c", PROBE, f"http://127.0.0.1:{port}{path}", str(count))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def wait_serving(port: int, expected: str, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = get(port)[0]
        if seen[0] == 200 and seen[3] == expected:
            return
        time.sleep(0.3)
    raise AssertionError(f"expected {expected!r} on port {port}, last answer {seen}")


def states(project: str) -> dict[str, str]:
    ids = d2("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
    return {c["Name"].lstrip("/"): c["State"]["Status"] for c in json.loads(d2("inspect", *ids).stdout)} if ids else {}


def assert_unavailable_at_once(port: int) -> None:
    answers = get(port, count=8)
    assert all(a[0] == 503 and a[2] for a in answers), answers  # 503 with Retry-After, never a 502
    seconds = sorted(a[1] for a in answers)
    # A request that meets the vanished address when its passive-health mark (1 s) has expired
    # pays the dial timeout (1 s); the others are answered as soon as Caddy sees no live upstream
    # (200 ms). Never the 7 s of Caddy's defaults.
    assert seconds[-1] < 2.5 and seconds[0] < 0.6, seconds


@pytest.mark.parametrize("signal", ["TERM", "KILL"])
def test_the_proxy_comes_back_after_the_engine_restarts_and_the_next_up_brings_the_app(second_engine, tmp_path,
                                                                                        signal):
    project = f"carestart-{signal.lower()}"
    port = free_port()
    write_project(tmp_path, {"web": app_service("v1")}, proxy_port=port)
    proc = cli(tmp_path, "-p", project, "up")
    assert proc.returncode == 0, proc.stderr
    wait_serving(port, "v1")
    edge, switch = f"{project}-atomic-proxy", f"{project}-atomic-proxy-switch"

    engine2("stop", signal)
    engine2("start")
    # The proxy comes back by its restart policy; the app (no policy) does not.
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = states(project)
        if seen.get(edge) == "running" and seen.get(switch) == "running":
            break
        time.sleep(0.5)
    seen = states(project)
    assert seen.get(edge) == "running" and seen.get(switch) == "running", seen
    assert seen.get(f"{project}-web-1") == "exited", seen
    assert_unavailable_at_once(port)
    print(f"SIG{signal}: 503 answers in", sorted(a[1] for a in get(port, count=20)))

    # The next up recreates the app and routes it.
    proc = cli(tmp_path, "-p", project, "up")
    assert proc.returncode == 0, proc.stderr
    wait_serving(port, "v1")
    assert [a[0] for a in get(port, count=5)] == [200] * 5
    proc = cli(tmp_path, "-p", project, "down", "-v")
    assert proc.returncode == 0, proc.stderr
