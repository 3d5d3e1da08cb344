#!/usr/bin/env python3
"""Time `compose-atomic status` beside `docker compose ps` on a 10-service project.

    .venv/bin/python bench/status/run.py [--repeat 15] [--json bench/status/results.json]

The project: 3 routed x-atomic services behind the managed Caddy proxy (busybox httpd with
a health check) and 7 plain ones (busybox sleep), brought up with `compose-atomic up`. Each
repetition runs, interleaved, `docker compose ps` and `compose-atomic status` (table, as a
user types it, NO_COLOR) and `compose-atomic status --json`, each a fresh process, timed from
start to exit, and the CPU time it used (its own and its children's, which the load of a
shared machine disturbs much less than wall time). Everything is removed at the end (`compose-atomic down -v`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import IMAGE_BUSYBOX  # noqa: E402
from test_deploy_support import app_service, free_port, wait_for_version, write_project  # noqa: E402

CLI = [sys.executable, "-m", "compose_atomic"]


CPU: dict[str, list[float]] = {}


def timed(argv: list[str], cwd: Path, key: str | None = None) -> float:
    """Wall time from start to exit; the CPU time it and its children used goes to CPU[key]."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_COLOR": "1"})
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr}")
    if key:
        CPU.setdefault(key, []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return elapsed


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 3), "min": round(ordered[0], 3),
            "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 3), "n": len(ordered)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    name = f"benchstatus-{uuid.uuid4().hex[:6]}"
    port = free_port()
    services = {f"web{i}": app_service("v1", x_atomic={"route": {"port": 8080, "path": f"/w{i}"},
                                                       "monitor": "1s", "drain": "1s"}) for i in range(1, 4)}
    services.update({f"side{i}": {"image": IMAGE_BUSYBOX, "command": ["sleep", "3600"], "init": True}
                     for i in range(1, 8)})
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        write_project(cwd, services, proxy_port=port)
        try:
            up = subprocess.run([*CLI, "-p", name, "up"], cwd=cwd, capture_output=True, text=True, timeout=600)
            if up.returncode != 0:
                raise SystemExit(up.stderr)
            time.sleep(3)  # health checks settle
            # The last two are not status: they are the floor under it (the CLI's start, and the
            # `docker compose config` every project command begins with).
            argv = {"docker compose ps": ["docker", "compose", "-p", name, "ps"],
                    "compose-atomic status": [*CLI, "-p", name, "status"],
                    "compose-atomic status --json": [*CLI, "-p", name, "status", "--json"],
                    "compose-atomic --version": [*CLI, "--version"],
                    "docker compose config": ["docker", "compose", "-p", name, "config"]}
            runs: dict[str, list[float]] = {key: [] for key in argv}
            for key in runs:  # one warm-up each
                timed(argv[key], cwd)
            for _ in range(args.repeat):
                for key in runs:
                    runs[key].append(timed(argv[key], cwd, key))
            shown = subprocess.run([*CLI, "-p", name, "status"], cwd=cwd, capture_output=True, text=True,
                                   env={**os.environ, "NO_COLOR": "1"}).stdout
        finally:
            subprocess.run([*CLI, "-p", name, "down", "-v", "-t", "0"], cwd=cwd, capture_output=True, timeout=300)
    load = os.getloadavg()
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "services": len(services),
              "repeat": args.repeat, "loadavg": [round(x, 2) for x in load],
              "cpus": os.cpu_count(), "python": sys.version.split()[0],
              "seconds": {k: summary(v) for k, v in runs.items()},
              "cpu_seconds": {k: summary(v) for k, v in CPU.items()}}
    base = result["seconds"]["docker compose ps"]["median"]
    result["ratio_to_compose_ps"] = {k: round(v["median"] / base, 2) for k, v in result["seconds"].items()}
    cpu_base = result["cpu_seconds"]["docker compose ps"]["median"]
    result["cpu_ratio_to_compose_ps"] = {k: round(v["median"] / cpu_base, 2) for k, v in result["cpu_seconds"].items()}
    print(shown)
    print(json.dumps(result, indent=2))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
