"""Shared fixtures: one real Docker engine and the images scripts/testbed.sh built."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGE_BUSYBOX = os.environ.get("IMAGE_BUSYBOX", "compose-atomic-testbed/busybox:1")
# The images scripts/testbed.sh builds (the same variable names): PostgreSQL 17 and Caddy 2.11
# by default, what users run; PostgreSQL 15 and Debian's Caddy 2.6 where two versions matter.
IMAGE_CADDY = os.environ.get("IMAGE_CADDY", "compose-atomic-testbed/caddy:2.11")  # with a busybox shell
IMAGE_CADDY_NOSHELL = os.environ.get("IMAGE_CADDY_NOSHELL", "compose-atomic-testbed/caddy:2.11-noshell")
IMAGE_CADDY_OLD = os.environ.get("IMAGE_CADDY_OLD", "compose-atomic-testbed/caddy:2.6")  # no shell
IMAGE_POSTGRES = os.environ.get("IMAGE_POSTGRES", "compose-atomic-testbed/postgres:17")
IMAGE_POSTGRES_15 = os.environ.get("IMAGE_POSTGRES_15", "compose-atomic-testbed/postgres:15")
IMAGE_DJANGO = os.environ.get("IMAGE_DJANGO", "compose-atomic-testbed/django:3.2")


def pytest_configure(config):
    sys._called_from_test = True


def pytest_collection_modifyitems(config, items):
    """Tests that restart an engine (their own second one, see scripts/engine2) run last."""
    items.sort(key=lambda item: item.get_closest_marker("engine_restart") is not None)


def _ports():
    """This pytest worker's own ports (``-n``: gw0, gw1, ...), a thousand each from 20000, below the
    kernel's ephemeral range (32768 up, where outgoing connections take theirs), from a random place
    in the range (so that runs side by side rarely try the same one first)."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    base, start = 20000 + 1000 * (worker % 12), random.randrange(1000)
    return itertools.cycle(base + (start + i) % 1000 for i in range(1000))


_PORTS = _ports()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a test's proxy or app to publish on ``host``."""
    for _ in range(1000):
        port = next(_PORTS)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in this worker's range")


class Clients:
    """Load in threads for a ``with`` block: the subclass puts its clients in ``threads`` (they loop
    until ``stop`` is set); entering starts them, leaving stops them and waits ``join_timeout``
    (longer than one request may take) for each."""

    join_timeout: float = 30

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=self.join_timeout)


def run_cli(*args: str, cwd: Path | str | None = None, env: dict | None = None,
            timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``compose-atomic ARGS`` as a user would, in a subprocess."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "compose_atomic", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, input=input)


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """The real engine; the suite fails (not skips) without it: see scripts/testbed.sh."""
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.fail("no Docker engine: run scripts/test, which prepares one")
    if docker("compose", "version", check=False).returncode != 0:
        pytest.fail("no Docker Compose v2 plugin: run scripts/test, which installs it")


@pytest.fixture
def project_name(docker_engine) -> str:
    """A unique compose project name; its containers, networks and volumes go afterwards."""
    name = f"catest-{uuid.uuid4().hex[:8]}"
    yield name
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={name}", check=False).stdout.split()
    if ids:
        docker("rm", "-f", "-v", *ids, check=False)
    for kind in ("network", "volume"):
        found = docker(kind, "ls", "-q", "--filter", f"label=com.docker.compose.project={name}",
                       check=False).stdout.split()
        if found:
            docker(kind, "rm", *found, check=False)
