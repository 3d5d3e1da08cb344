"""Bench: rolling out and rolling back on a single-node swarm, compose-atomic vs plain Swarm.

One run, the same app (busybox httpd behind Caddy), the same load (hey, 4 workers at
50 req/s each) in both columns:

- ``swarm``: what a user writes without compose-atomic: the app with its healthcheck and
  Swarm's default update settings (stop-first, pause on failure), Caddy in front with a
  plain ``reverse_proxy tasks.web:8080`` (dnsrr, since this kernel has no IPVS for VIPs),
  deployed with ``docker stack deploy``.
- ``compose-atomic``: the same project with x-atomic keys, ``compose-atomic stack deploy``.

For each: failed requests while a new version rolls out, time until the update has
settled, then a broken version (never healthy): failed requests in the same window,
and whether the previous version serves at the end. Also the CLI's own cost:
``stack render`` wall time and peak RSS.

Run: ``.venv/bin/python bench/swarm/run.py`` (needs the test bed; creates and leaves a
swarm if the engine is not in one). Results are printed as a table and written to
bench/swarm/results.json.
"""

from __future__ import annotations

import json
import os
import re
import resource  # noqa: F401  (used by the child script)
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUSYBOX = os.environ.get("IMAGE_BUSYBOX", "compose-atomic-testbed/busybox:1")
CADDY = os.environ.get("IMAGE_CADDY", "compose-atomic-testbed/caddy:2.11")
LOAD = ["-c", "4", "-q", "50", "-t", "10"]
ROLL_WINDOW = 30  # seconds of load around each rollout
APP = ("mkdir -p /www && echo $$VERSION > /www/index.html && echo ok > /www/healthz "
       "&& exec httpd -f -p 8080 -h /www")

ATOMIC = textwrap.dedent("""
    services:
      web:
        image: {busybox}
        command: ["sh", "-c", "{app}"]
        environment:
          VERSION: ${{VERSION:-v1}}
        x-atomic:
          route: {{port: 8080}}
          health: {{path: "${{HEALTH_PATH:-/healthz}}", timeout: 5s, interval: 1s}}
          monitor: 3s
          drain: 5s
    x-atomic:
      proxy:
        image: {caddy}
        ports: ["{port}:80"]
""")

PLAIN = textwrap.dedent("""
    version: "3.8"
    services:
      web:
        image: {busybox}
        command: ["sh", "-c", "{app}"]
        environment:
          VERSION: ${{VERSION:-v1}}
        healthcheck:
          test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080${{HEALTH_PATH:-/healthz}}"]
          interval: 1s
          timeout: 3s
          retries: 3
          start_period: 5s
        deploy:
          endpoint_mode: dnsrr
      proxy:
        image: {caddy}
        command: ["run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
        configs:
          - source: caddyfile
            target: /etc/caddy/Caddyfile
        ports:
          - {{target: 80, published: {port}, mode: host}}
        deploy:
          endpoint_mode: dnsrr
    configs:
      caddyfile:
        file: ./Caddyfile
""")
CADDYFILE = ":80 {\n\treverse_proxy tasks.web:8080\n}\n"


def docker(*args: str, check: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check,
                          env={**os.environ, **(env or {})})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


def start_load(port: int, seconds: int) -> subprocess.Popen:
    return subprocess.Popen(["hey", "-z", f"{seconds}s", *LOAD, f"http://127.0.0.1:{port}/"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def load_result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=ROLL_WINDOW + 60)
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors = sum(int(n) for n in re.findall(r"\[(\d+)\]\s+Get ", out))
    ok = sum(n for c, n in codes.items() if c < 400)
    return {"requests": sum(codes.values()) + errors, "ok": ok, "failed": sum(codes.values()) - ok + errors}


def wait_http(port: int, expected: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                if r.read().decode().strip() == expected:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"proxy on {port} never answered {expected}")


def serving(port: int) -> str:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as r:
            return r.read().decode().strip()
    except OSError as exc:
        return f"error: {exc}"


def settle(service: str, before: str | None, timeout: float = 90) -> tuple[str, float]:
    """Poll UpdateStatus until a new update reaches a final state (or the window ends)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        raw = docker("service", "inspect", service, "--format", "{{json .UpdateStatus}}").stdout.strip()
        status = json.loads(raw) if raw and raw != "null" else {}
        if status.get("StartedAt") != before and status.get("State") in (
                "completed", "rollback_completed", "paused", "rollback_paused"):
            return status["State"], round(time.monotonic() - started, 1)
        time.sleep(0.5)
    return "not settled", round(time.monotonic() - started, 1)


def started_at(service: str) -> str | None:
    raw = docker("service", "inspect", service, "--format", "{{json .UpdateStatus}}").stdout.strip()
    return (json.loads(raw) or {}).get("StartedAt") if raw and raw != "null" else None


def run_plain(workdir: Path) -> dict:
    name, port = f"bench-plain-{uuid.uuid4().hex[:6]}", free_port()
    (workdir / "Caddyfile").write_text(CADDYFILE)
    (workdir / "stack.yml").write_text(PLAIN.format(busybox=BUSYBOX, caddy=CADDY, app=APP, port=port))

    def deploy(**env):
        return docker("stack", "deploy", "--detach=true", "--resolve-image", "never", "-c",
                      str(workdir / "stack.yml"), name, env=env)

    try:
        deploy(VERSION="v1")
        wait_http(port, "v1")
        return {"new_version": rollout(lambda: deploy(VERSION="v2"), f"{name}_web", port, plain=True),
                "broken_version": rollout(lambda: deploy(VERSION="v3", HEALTH_PATH="/missing"),
                                          f"{name}_web", port, plain=True)}
    finally:
        cleanup(name)


def run_atomic(workdir: Path) -> dict:
    name, port = f"bench-atomic-{uuid.uuid4().hex[:6]}", free_port()
    (workdir / "compose.yaml").write_text(ATOMIC.format(busybox=BUSYBOX, caddy=CADDY, app=APP, port=port))

    def deploy(**env):
        return subprocess.run([sys.executable, "-m", "compose_atomic", "stack", "deploy", name, "--timeout", "90s"],
                              cwd=workdir, capture_output=True, text=True, env={**os.environ, **env})

    try:
        deploy(VERSION="v1")
        wait_http(port, "v1")
        result = {"new_version": rollout(lambda: deploy(VERSION="v2"), f"{name}_web", port),
                  "broken_version": rollout(lambda: deploy(VERSION="v3", HEALTH_PATH="/missing"),
                                            f"{name}_web", port)}
        result["cli"] = cli_cost(workdir)
        return result
    finally:
        cleanup(name)


def rollout(deploy, service: str, port: int, plain: bool = False) -> dict:
    before = started_at(service)
    load = start_load(port, ROLL_WINDOW)
    time.sleep(2)
    began = time.monotonic()
    proc = deploy()
    exit_code = proc.returncode
    if plain:
        state, _ = settle(service, before, timeout=ROLL_WINDOW - 4)
    else:
        raw = docker("service", "inspect", service, "--format", "{{json .UpdateStatus}}").stdout.strip()
        state = (json.loads(raw) or {}).get("State", "") if raw and raw != "null" else ""
    seconds = round(time.monotonic() - began, 1)
    stats = load_result(load)
    return {"exit_code": exit_code, "update_state": state, "settled_after_s": seconds,
            "serving_after": serving(port), **stats}


SELF_RSS = textwrap.dedent("""
    import resource, runpy, sys
    sys.argv = ["compose-atomic", "stack", "render", "-o", "out/stack.yml"]
    try:
        runpy.run_module("compose_atomic", run_name="__main__")
    except SystemExit:
        pass
    print("RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
""")


def cli_cost(workdir: Path) -> dict:
    """``stack render``'s wall time and the Python process's own peak RSS (not docker's)."""
    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", SELF_RSS], cwd=workdir, capture_output=True, text=True,
                          check=True)
    seconds = time.monotonic() - began
    rss = int(re.search(r"RSS_KB (\d+)", proc.stderr).group(1))
    return {"render_wall_s": round(seconds, 2), "peak_rss_mb": round(rss / 1024, 1)}


def cleanup(name: str) -> None:
    docker("stack", "rm", name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and docker("ps", "-aq", "--filter",
                                                 f"label=com.docker.stack.namespace={name}").stdout.split():
        time.sleep(1)
    for kind in ("config", "volume", "network"):
        ids = docker(kind, "ls", "-q", "--filter", f"label=com.docker.stack.namespace={name}").stdout.split()
        if ids:
            docker(kind, "rm", *ids)
    configs = docker("config", "ls", "-q", "--filter", f"name={name}_caddy_").stdout.split()
    if configs:
        docker("config", "rm", *configs)


def main() -> None:
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    created = state == "inactive"
    gwbridge = docker("network", "inspect", "docker_gwbridge").returncode == 0
    if created:
        docker("swarm", "init", "--advertise-addr", "127.0.0.1", check=True)
    try:
        with tempfile.TemporaryDirectory() as plain_dir, tempfile.TemporaryDirectory() as atomic_dir:
            results = {"swarm": run_plain(Path(plain_dir)), "compose-atomic": run_atomic(Path(atomic_dir))}
    finally:
        if created:
            docker("swarm", "leave", "--force")
            if not gwbridge:  # swarm init created it; leaving does not remove it
                docker("network", "rm", "docker_gwbridge")
    results["machine"] = {"cpus": os.cpu_count(), "docker": docker("version", "--format",
                                                                   "{{.Server.Version}}").stdout.strip(),
                          "load": "hey " + " ".join(LOAD)}
    (Path(__file__).parent / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'':34} {'swarm defaults':>18} {'compose-atomic':>18}")
    for phase in ("new_version", "broken_version"):
        for key in ("requests", "failed", "settled_after_s", "update_state", "serving_after"):
            a, b = results["swarm"][phase][key], results["compose-atomic"][phase][key]
            print(f"{phase + ' ' + key:34} {str(a):>18} {str(b):>18}")
    print(f"{'stack render (wall s / peak RSS MB)':34} {'-':>18} "
          f"{results['compose-atomic']['cli']['render_wall_s']:>9} / {results['compose-atomic']['cli']['peak_rss_mb']}")


if __name__ == "__main__":
    main()
