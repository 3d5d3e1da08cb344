"""A tiny web app and compose files for the deploy tests and bench (no tests here).

The app is busybox httpd with CGI scripts; ``MODE`` picks its behaviour:
``ok``, ``slow`` (sleeps before listening), ``broken`` (never healthy, answers 500),
``crashy`` (healthy, then exits after ``CRASH_AFTER`` seconds), ``exit`` (exits at once).
Every response carries ``VERSION``, so a test can tell which version serves.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import yaml

from conftest import IMAGE_BUSYBOX, IMAGE_CADDY, Clients, docker, free_port  # noqa: F401 (free_port: the deploy tests import it from here)

APP_SCRIPT = r"""
mkdir -p /www/cgi-bin
if [ "$MODE" = broken ]; then
  { echo '#!/bin/sh'; echo 'cat >/dev/null'; echo 'printf "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n"'; echo "echo broken $VERSION"; } > /www/cgi-bin/v
else
  echo ok > /www/healthz
  { echo '#!/bin/sh'; echo 'cat >/dev/null'; echo 'echo Content-Type: text/plain'; echo 'echo'; echo "echo $VERSION"; } > /www/cgi-bin/v
fi
{ echo '#!/bin/sh'; echo 'cat >/dev/null'; echo 'sleep 3'; echo 'echo Content-Type: text/plain'; echo 'echo'; echo "echo $VERSION"; } > /www/cgi-bin/slow
{ echo '#!/bin/sh'; echo 'echo Content-Type: text/plain'; echo 'echo'; echo 'cat /etc/hostname'; } > /www/cgi-bin/who
echo "$VERSION" > /www/index.html
chmod +x /www/cgi-bin/v /www/cgi-bin/slow /www/cgi-bin/who
[ "$MODE" = exit ] && { echo 'exiting at once'; exit 3; }
[ "$MODE" = slow ] && sleep "${SLOW_FOR:-6}"
if [ "$MODE" = crashy ]; then httpd -p 8080 -h /www; sleep "${CRASH_AFTER:-4}"; echo 'crashing'; exit 1; fi
echo "serving $VERSION"
exec httpd -f -p 8080 -h /www
"""


def app_service(version: str, mode: str = "ok", *, start_period: str = "2s", x_atomic: dict | None = None,
                **extra) -> dict:
    service = {
        "image": IMAGE_BUSYBOX,
        "command": ["sh", "-c", APP_SCRIPT.replace("$", "$$")],
        "environment": {"VERSION": version, "MODE": mode, **extra.pop("env", {})},
        "healthcheck": {"test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"],
                        "interval": "1s", "timeout": "2s", "retries": 2, "start_period": start_period},
        "stop_grace_period": "2s",
        "x-atomic": x_atomic if x_atomic is not None else {"route": {"port": 8080}, "monitor": "2s", "drain": "5s"},
    }
    service.update(extra)
    return service


def write_project(directory: Path, services: dict, *, proxy_port: int | None = None, x_atomic: dict | None = None) -> Path:
    doc: dict = {"services": services}
    top = dict(x_atomic or {})
    if proxy_port is not None:
        top["proxy"] = {"image": IMAGE_CADDY, "ports": [f"127.0.0.1:{proxy_port}:80"]}
    if top:
        doc["x-atomic"] = top
    path = directory / "compose.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def get_version(port: int, path: str = "/cgi-bin/v", timeout: float = 10) -> str:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=timeout).text.strip()


def wait_for_version(port: int, expected: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        try:
            seen = get_version(port)
            if seen == expected:
                return seen
        except httpx.HTTPError as exc:
            seen = repr(exc)
        time.sleep(0.2)
    import subprocess

    ps = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}} {{.Status}} {{.Ports}}"],
                        capture_output=True, text=True).stdout
    mine = "\n".join(line for line in ps.splitlines() if str(port) in line)
    proxy = mine.split()[0] if mine else ""
    logs = subprocess.run(["docker", "logs", "--tail", "5", proxy], capture_output=True, text=True).stderr if proxy else ""
    raise AssertionError(f"expected version {expected!r} on port {port}, saw {seen!r}\n{mine}\n{logs}")


def proxy_errors(project_name: str, directory: Path) -> str:
    """What the proxy said about failed requests, for a test's failure message: the edge's and the
    switch's error lines (``docker logs``) and the 5xx answers in the switch's receipt log."""
    out = []
    for name in (f"{project_name}-atomic-proxy-switch", f"{project_name}-atomic-proxy"):
        logs = docker("logs", "--timestamps", "--tail", "300", name, check=False)
        out.append(f"--- {name}")
        out += [line for line in (logs.stdout + logs.stderr).splitlines() if '"error"' in line or "502" in line][-20:]
    for log in (directory / ".compose-atomic" / "proxy" / "run").glob("receipt-*.log"):
        out.append(f"--- {log.name}")
        out += [line for line in log.read_text().splitlines() if '"status":5' in line][-20:]
    text = "\n".join(out)
    print(text)  # whole, in the test's captured output: an assertion message is cut short
    return text


def edge_eofs(project_name: str) -> int:
    """Requests the edge answered 502 because the switch closed their connection unanswered: the
    race of Go's graceful shutdown that an edge before Caddy 2.11.3 keeps (docs/deploy.md, *The proxy*)."""
    logs = docker("logs", f"{project_name}-atomic-proxy", check=False)
    return sum(1 for line in (logs.stdout + logs.stderr).splitlines()
               if '"msg":"EOF"' in line and '"status":502' in line)


def history(run_cli, cwd, project_name, service=None) -> list[dict]:
    args = ["-p", project_name, "history", "--json"] + ([service] if service else [])
    proc = run_cli(*args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


class Hammer(Clients):
    """Steady load through the proxy in threads: GETs, POSTs and one long request at a time."""

    def __init__(self, port: int, clients: int = 4, long_requests: int = 1) -> None:
        import threading

        super().__init__()
        self.join_timeout = 40
        self.port = port
        self.failures: list[str] = []
        self.ok = 0
        self.long_done = 0
        self.versions: list[str] = []
        self.threads = [threading.Thread(target=self._client, args=(i % 2 == 1,), daemon=True) for i in range(clients)]
        self.threads += [threading.Thread(target=self._long, daemon=True) for _ in range(long_requests)]

    def _client(self, post: bool) -> None:
        url = f"http://127.0.0.1:{self.port}/cgi-bin/v"
        with httpx.Client(timeout=15) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(url, content=b"x=1") if post else client.get(url)
                    if r.status_code != 200:
                        self.failures.append(f"{'POST' if post else 'GET'} {r.status_code}")
                    else:
                        self.ok += 1
                        self.versions.append(r.text.strip())
                except httpx.HTTPError as exc:
                    self.failures.append(f"{'POST' if post else 'GET'} {type(exc).__name__}")
                time.sleep(0.04)

    def _long(self) -> None:
        url = f"http://127.0.0.1:{self.port}/cgi-bin/slow"
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.get(url)
                    if r.status_code == 200:
                        self.long_done += 1
                    else:
                        self.failures.append(f"long {r.status_code}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"long {type(exc).__name__}")


class WebhookSink:
    """A local HTTP endpoint that records the JSON bodies posted to it."""

    def __init__(self) -> None:
        import http.server
        import threading

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
