"""A tiny web app and compose files for the deploy tests and bench (no tests here).

The app is busybox httpd with CGI scripts; ``MODE`` picks its behaviour:
``ok``, ``slow`` (sleeps before listening), ``broken`` (never healthy, answers 500),
``crashy`` (healthy, then exits after ``CRASH_AFTER`` seconds), ``exit`` (exits at once).
Every response carries ``VERSION``, so a test can tell which version serves.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import yaml

from conftest import IMAGE_BUSYBOX, IMAGE_CADDY

APP_SCRIPT = r"""
mkdir -p /www/cgi-bin
if [ "$MODE" = broken ]; then
  { echo '#!/bin/sh'; echo 'cat >/dev/null'; echo 'printf "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n"'; echo "echo broken $VERSION"; } > /www/cgi-bin/v
else
  echo ok > /www/healthz
  { echo '#!/bin/sh'; echo 'cat >/dev/null'; echo 'echo Content-Type: text/plain'; echo 'echo'; echo "echo $VERSION"; } > /www/cgi-bin/v
fi
{ echo '#!/bin/sh'; echo 'cat >/dev/null'; echo 'sleep 3'; echo 'echo Content-Type: text/plain'; echo 'echo'; echo "echo $VERSION"; } > /www/cgi-bin/slow
echo "$VERSION" > /www/index.html
chmod +x /www/cgi-bin/v /www/cgi-bin/slow
[ "$MODE" = exit ] && { echo 'exiting at once'; exit 3; }
[ "$MODE" = slow ] && sleep "${SLOW_FOR:-6}"
if [ "$MODE" = crashy ]; then httpd -p 8080 -h /www; sleep "${CRASH_AFTER:-4}"; echo 'crashing'; exit 1; fi
echo "serving $VERSION"
exec httpd -f -p 8080 -h /www
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def get_version(port: int, path: str = "/cgi-bin/v", timeout: float = 5) -> str:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=timeout).text.strip()


def wait_for_version(port: int, expected: str, timeout: float = 30) -> str:
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
    raise AssertionError(f"expected version {expected!r} on port {port}, saw {seen!r}")


def history(run_cli, cwd, project_name, service=None) -> list[dict]:
    args = ["-p", project_name, "history", "--json"] + ([service] if service else [])
    proc = run_cli(*args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
