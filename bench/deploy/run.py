"""Deploy under load: compose-atomic vs `docker compose up -d` vs docker-rollout, in one run.

Load (the issue's): 8 clients at 25 req/s each through the proxy, half of them POST,
plus 2 clients that always keep a 3-second request in flight. Four scenarios:
upgrade (v1 -> v2), slow (v2 needs 6 s before it listens; healthcheck start period
10 s), broken (never healthy, answers 500), crashy (healthy, then exits after 4 s).

Each tool gets the same app (busybox httpd + CGI, tests/test_deploy_support.py) behind
Caddy 2 on 127.0.0.1: compose-atomic drives its own managed proxy; the peers get a
Caddy service in the compose file that dials ``web:8080`` with ``lb_try_duration 5s``.

    .venv/bin/python bench/deploy/run.py                       # everything, ~10 minutes
    .venv/bin/python bench/deploy/run.py --tools compose-atomic --scenarios upgrade
    DOCKER_ROLLOUT=/path/to/docker-rollout .venv/bin/python bench/deploy/run.py

docker-rollout is one shell script (github.com/wowu/docker-rollout); it is not
vendored here: point DOCKER_ROLLOUT at a copy, or its column is skipped.
Results: a Markdown table on stdout and JSON in bench/deploy/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
import yaml  # noqa: E402

from test_deploy_support import APP_SCRIPT, free_port  # noqa: E402

BUSYBOX = os.environ.get("IMAGE_BUSYBOX", "compose-atomic-testbed/busybox:1")
CADDY = os.environ.get("IMAGE_CADDY", "compose-atomic-testbed/caddy:2")
POSTGRES = os.environ.get("IMAGE_POSTGRES", "compose-atomic-testbed/postgres:15")
ROLLOUT = os.environ.get("DOCKER_ROLLOUT", "/tmp/docker-rollout")
SCENARIOS = {
    "upgrade": {"MODE": "ok"},
    "slow": {"MODE": "slow", "SLOW_FOR": "6"},
    "broken": {"MODE": "broken"},
    "crashy": {"MODE": "crashy", "CRASH_AFTER": os.environ.get("CRASH_AFTER", "4")},
}
TOOLS = ["compose-atomic", "compose", "docker-rollout"]
CADDYFILE = ":80 {\n\treverse_proxy web:8080 {\n\t\tlb_try_duration 5s\n\t}\n}\n"


def web_service(version: str, env: dict[str, str], atomic: bool) -> dict:
    service = {
        "image": BUSYBOX,
        "command": ["sh", "-c", APP_SCRIPT.replace("$", "$$")],
        "environment": {"VERSION": version, **env},
        "healthcheck": {"test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"],
                        "interval": "1s", "timeout": "1s", "retries": 3, "start_period": "10s"},
        "stop_grace_period": "10s",
        "init": True,
    }
    if atomic:
        service["x-atomic"] = {"route": {"port": 8080}, "monitor": "8s", "drain": "10s"}
    return service


def write_compose(directory: Path, tool: str, port: int, version: str, env: dict[str, str]) -> None:
    atomic = tool == "compose-atomic"
    doc: dict = {"services": {"web": web_service(version, env, atomic)}}
    if atomic:
        doc["x-atomic"] = {"proxy": {"image": CADDY, "ports": [f"127.0.0.1:{port}:80"]}}
    else:
        (directory / "Caddyfile").write_text(CADDYFILE)
        doc["services"]["proxy"] = {
            "image": CADDY, "ports": [f"127.0.0.1:{port}:80"],
            "entrypoint": ["caddy"], "command": ["run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"],
            "volumes": [f"{directory / 'Caddyfile'}:/etc/caddy/Caddyfile:ro"],
        }
    (directory / "compose.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def deploy_command(tool: str, project: str) -> list[str]:
    if tool == "compose-atomic":
        return [sys.executable, "-m", "compose_atomic", "-p", project, "up"]
    if tool == "compose":
        return ["docker", "compose", "-p", project, "up", "-d"]
    return ["sh", ROLLOUT, "rollout", "-p", project, "-f", "compose.yaml", "web"]


def hey(url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["hey", "-z", "600s", "-t", "30", *args, url], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def parse_hey(text: str) -> dict:
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+(?:Get|Post|Put)", text, re.M))
    slowest = re.search(r"Slowest:\s+([\d.]+) secs", text)
    p99 = re.search(r"99%+ in ([\d.]+) secs", text)
    return {"ok": codes.get(200, 0), "bad_status": sum(n for c, n in codes.items() if c != 200),
            "errors": errors, "max": float(slowest.group(1)) if slowest else None,
            "p99": float(p99.group(1)) if p99 else None, "codes": codes,
            "error_lines": [ln.strip()[:160] for ln in text.split("Error distribution:")[-1].splitlines()
                            if ln.strip()][:5] if "Error distribution:" in text else []}


class VersionWatch(threading.Thread):
    """Polls the version through the proxy every 50 ms; remembers when each version first/last answered."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/cgi-bin/v"
        self.stop = threading.Event()
        self.seen: list[tuple[float, str]] = []

    def run(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self.stop.is_set():
                try:
                    text = client.get(self.url).text.strip()
                except httpx.HTTPError:
                    text = "error"
                now = time.time()
                if not self.seen or self.seen[-1][1] != text:
                    self.seen.append((now, text))
                time.sleep(0.05)

    def first(self, version: str, after: float = 0) -> float | None:
        return next((t for t, v in self.seen if v == version and t >= after), None)


def docker_time(value: str) -> float | None:
    if not value or value.startswith("0001"):
        return None
    value = re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00")
    return datetime.fromisoformat(value).timestamp()


def diagnose(project: str) -> dict:
    """When the site is down at the end: is a web container running, does its name resolve, what did Caddy say?"""
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                          "--filter", "label=com.docker.compose.service=web"], capture_output=True, text=True).stdout.split()
    found: dict = {"web_running": len(ids)}
    if ids:
        info = json.loads(subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True).stdout)[0]
        net = next(iter(info["NetworkSettings"]["Networks"]))
        # Name resolution as a glibc program on that network sees it (the static busybox's wget
        # cannot resolve names on this engine; the PostgreSQL test image has getent).
        for name in (info["Name"].lstrip("/"), "web"):
            probe = subprocess.run(["docker", "run", "--rm", "--network", net, "--entrypoint", "getent", POSTGRES,
                                    "hosts", name], capture_output=True, text=True)
            found[f"dns_{name}"] = (probe.stdout or probe.stderr).strip()[:120] or f"not found (exit {probe.returncode})"
        found["ip"] = info["NetworkSettings"]["Networks"][net].get("IPAddress")
    proxies = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}",
                              "--filter", "ancestor=" + CADDY], capture_output=True, text=True).stdout.split()
    if proxies:
        logs = subprocess.run(["docker", "logs", "--tail", "3", proxies[0]], capture_output=True, text=True)
        found["proxy_log"] = [line[:300] for line in (logs.stderr or logs.stdout).splitlines()[-3:]]
    return found


def run_one(tool: str, scenario: str) -> dict:
    project = f"cabench-{tool.replace('-', '')}-{scenario}-{uuid.uuid4().hex[:4]}"
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix=project))
    env = {**os.environ, "NO_COLOR": "1"}
    result: dict = {"tool": tool, "scenario": scenario}
    events = None
    try:
        write_compose(directory, tool, port, "v1", {"MODE": "ok"})
        first = [sys.executable, "-m", "compose_atomic", "-p", project, "up"] if tool == "compose-atomic" else \
            ["docker", "compose", "-p", project, "up", "-d", "--wait"]
        subprocess.run(first, cwd=directory, env=env, check=True, capture_output=True, timeout=180)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/cgi-bin/v", timeout=2).text.strip() == "v1":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        write_compose(directory, tool, port, "v2", SCENARIOS[scenario])
        events = subprocess.Popen(["docker", "events", "--filter", f"label=com.docker.compose.project={project}",
                                   "--format", "{{.TimeNano}}|{{.Action}}|{{.Actor.Attributes.name}}"],
                                  stdout=subprocess.PIPE, text=True)
        watch = VersionWatch(port)
        watch.start()
        url = f"http://127.0.0.1:{port}"
        loads = {"get": hey(url + "/cgi-bin/v", "-c", "4", "-q", "25"),
                 "post": hey(url + "/cgi-bin/v", "-c", "4", "-q", "25", "-m", "POST", "-d", "x=1",
                             "-T", "application/x-www-form-urlencoded"),
                 "long": hey(url + "/cgi-bin/slow", "-c", "2")}
        time.sleep(4)
        started = time.time()
        deploy = subprocess.run(deploy_command(tool, project), cwd=directory, env=env, capture_output=True,
                                text=True, timeout=300)
        ended = time.time()
        # The tail: requests keep flowing after the command returns, and every tool is observed for
        # at least 25 s from the start of its deploy (a broken release that one tool leaves serving
        # costs the same window of failures for every tool).
        time.sleep(max(4.0, started + 25 - time.time()))
        for proc in loads.values():
            proc.send_signal(signal.SIGINT)
        outputs = {k: p.communicate(timeout=60)[0] for k, p in loads.items()}
        watch.stop.set()
        watch.join()
        stats = {k: parse_hey(v) for k, v in outputs.items()}
        short = [stats["get"], stats["post"]]
        result.update({
            "exit_code": deploy.returncode,
            "wall_s": round(ended - started, 2),
            "failed_get": stats["get"]["bad_status"] + stats["get"]["errors"],
            "failed_post": stats["post"]["bad_status"] + stats["post"]["errors"],
            "long_completed": stats["long"]["ok"],
            "long_failed": stats["long"]["bad_status"] + stats["long"]["errors"],
            "p99_ms": round(1000 * max(s["p99"] or 0 for s in short), 1),
            "max_ms": round(1000 * max(s["max"] or 0 for s in short), 1),
            "requests": sum(s["ok"] + s["bad_status"] + s["errors"] for s in short),
        })
        result["failed"] = result["failed_get"] + result["failed_post"]
        result["failures"] = {k: {"codes": v["codes"], "errors": v["error_lines"]} for k, v in stats.items()
                              if v["bad_status"] or v["errors"]}
        first_v2 = watch.first("v2", started)
        result["new_answers_after_s"] = round(first_v2 - started, 2) if first_v2 else None
        try:
            final = httpx.get(f"{url}/cgi-bin/v", timeout=5).text.strip()
        except httpx.HTTPError as exc:
            final = f"down ({type(exc).__name__})"
        result["serving_at_end"] = final if final in ("v1", "v2") else ("down" if "down" in final else final[:20])
        if result["serving_at_end"] == "down":
            result["down_diagnosis"] = diagnose(project)
        # Healthy -> answering, from the new container's health log (when it still exists).
        events.terminate()
        seen = [line.split("|") for line in events.communicate(timeout=10)[0].splitlines() if line.count("|") == 2]
        seen = [(int(t) / 1e9, action, name) for t, action, name in seen]
        new_names = {n for t, a, n in seen if a == "create" and t >= started}
        # Healthy -> answering: the first "healthy" event of a container created during the deploy.
        healthy = next((t for t, a, n in seen if a == "health_status: healthy" and n in new_names), None)
        if healthy and first_v2:
            result["answers_after_healthy_s"] = round(first_v2 - healthy, 2)
        if scenario == "crashy" and first_v2:
            crash = next((t for t, a, n in seen if a == "die" and n in new_names), None)
            # v1 again after the last v2 answer; negative when the proxy failed over before Docker saw the exit.
            last_v2 = max(t for t, v in watch.seen if v == "v2")
            back = watch.first("v1", last_v2)
            if crash and back:
                result["v1_back_after_crash_s"] = round(back - crash, 2)
        result["stderr_tail"] = (deploy.stderr or deploy.stdout).strip().splitlines()[-2:]
    except Exception as exc:  # noqa: BLE001 - one broken run must not lose the others
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if events and events.poll() is None:
            events.kill()
        if os.environ.get("BENCH_KEEP"):
            print(f"kept: {project} in {directory} on port {port}", file=sys.stderr)
        else:
            subprocess.run([sys.executable, "-m", "compose_atomic", "-p", project, "down", "-v", "-t", "0"],
                           cwd=directory, capture_output=True, env=env)
    return result


def table(results: list[dict]) -> str:
    scenarios = [s for s in SCENARIOS if any(r["scenario"] == s for r in results)]
    tools = [t for t in TOOLS if any(r["tool"] == t for r in results)]
    lines = ["| tool | " + " | ".join(scenarios) + " |", "|---|" + "---|" * len(scenarios)]
    for tool in tools:
        cells = []
        for scenario in scenarios:
            r = next((r for r in results if r["tool"] == tool and r["scenario"] == scenario), None)
            if r is None or "error" in r:
                cells.append(f"error: {r.get('error', '')[:60]}" if r else "-")
                continue
            extra = f", back {r['v1_back_after_crash_s']} s after crash" if "v1_back_after_crash_s" in r else ""
            cells.append(f"{r['failed']} failed ({r['failed_post']} POST), long {r['long_completed']}/"
                         f"{r['long_completed'] + r['long_failed']}, p99 {r['p99_ms']} ms, max {r['max_ms']} ms, "
                         f"new answers {r['new_answers_after_s']} s"
                         + (f" ({r['answers_after_healthy_s']} s after healthy)" if "answers_after_healthy_s" in r else "")
                         + f", wall {r['wall_s']} s, exit {r['exit_code']}, "
                         f"ends {r['serving_at_end']}{extra}")
        lines.append(f"| {tool} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def distribution(results: list[dict]) -> str:
    """Per tool and scenario over the repeated runs: failed GETs, failed POSTs, 503s, exit codes."""
    lines = ["", "| tool | scenario | runs | failed GET per run | failed POST per run | 503s per run | exits |",
             "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["tool"], r["scenario"]) for r in results})
    for tool, scenario in keys:
        runs = [r for r in results if (r["tool"], r["scenario"]) == (tool, scenario)]
        s503 = [sum(kind.get("codes", {}).get("503", 0) for kind in (r.get("failures") or {}).values())
                for r in runs]
        lines.append(f"| {tool} | {scenario} | {len(runs)} | {[r['failed_get'] for r in runs]} | "
                     f"{[r['failed_post'] for r in runs]} | {s503} | {[r['exit_code'] for r in runs]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    parser.add_argument("--repeat", type=int, default=1, help="Run each tool and scenario this many times.")
    args = parser.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    if "docker-rollout" in tools and not Path(ROLLOUT).is_file():
        print(f"docker-rollout not found at {ROLLOUT}: its column is skipped", file=sys.stderr)
        tools.remove("docker-rollout")
    results = []
    for scenario in args.scenarios.split(","):
        for tool in tools:
            for _ in range(args.repeat):
                print(f"-- {tool} / {scenario}", file=sys.stderr, flush=True)
                result = run_one(tool, scenario)
                print(json.dumps(result), file=sys.stderr, flush=True)
                results.append(result)
    Path(args.out).write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                          "results": results}, indent=2))
    print(table(results))
    if args.repeat > 1:
        print(distribution(results))


if __name__ == "__main__":
    main()
