"""A Caddy 2 container per project, configured only through its admin API.

Why the admin API and a JSON file, never a shell: any Caddy 2 image must work,
including one that holds only the caddy binary. The container reads its whole
configuration from ``<state_dir>/proxy/caddy.json`` (bind-mounted read-only),
which compose-atomic rewrites before every change it pushes through the API, so
a restarted or killed proxy comes back with the routes it had.

The switch between two versions of a service is one ``PATCH`` of the route's
``upstreams`` array (new in, old out): Caddy swaps the configuration gracefully,
requests in flight on the old upstream finish, and ``lb_try_duration`` holds
new requests while a dial fails, so clients do not see the seam.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OperationFailed

ADMIN_PORT = 2019
CONFIG_DIR_IN_CONTAINER = "/etc/compose-atomic"
LABEL_PROXY = "dev.compose-atomic.proxy"
LABEL_SPEC = "dev.compose-atomic.proxy-spec"
#: Methods Caddy may replay on another upstream after the request reached one.
#: POST and PATCH are never replayed: the first upstream may have acted on them.
RETRY_METHODS = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]


class ProxyError(OperationFailed):
    """The managed proxy could not be started or reconfigured."""


@dataclass
class Route:
    """Traffic for one service: what it matches and where it goes."""

    service: str
    port: int
    hosts: list[str] = field(default_factory=list)
    path: str | None = None
    upstreams: list[str] = field(default_factory=list)  # dial addresses, "container:port"
    try_duration: str = "5s"

    @property
    def handler_id(self) -> str:
        return f"ca_{self.service}"

    def to_caddy(self) -> dict[str, Any]:
        match: dict[str, Any] = {}
        if self.hosts:
            match["host"] = list(self.hosts)
        if self.path and self.path != "/":
            base = self.path.rstrip("/")
            match["path"] = [base, base + "/*"]
        handler = {
            "handler": "reverse_proxy",
            "@id": self.handler_id,
            "upstreams": [{"dial": d} for d in self.upstreams],
            "load_balancing": {
                # The first upstream that is up takes every request: during a switch the list is
                # [new, old], so a dial or transport error on the new container sends the retry
                # (and, for 1 s, everything) to the old one, before compose-atomic even notices.
                "selection_policy": {"policy": "first"},
                "try_duration": self.try_duration,
                "try_interval": "100ms",
                "retry_match": [{"method": RETRY_METHODS}],
            },
        }
        if len(self.upstreams) > 1:
            # Only while a fallback exists: with one upstream, marking it down would turn a
            # transient error into 503s for everyone; retrying it (try_duration) is better.
            handler["health_checks"] = {"passive": {"fail_duration": "1s", "max_fails": 1}}
        route: dict[str, Any] = {"@id": f"ca_route_{self.service}", "handle": [handler], "terminal": True}
        if match:
            route["match"] = [match]
        return route

    def sort_key(self) -> tuple:
        # Specific routes first: with a host before without, longer paths before shorter.
        return (0 if self.hosts else 1, -len(self.path or ""), self.service)


def build_config(routes: list[Route]) -> dict[str, Any]:
    """The whole Caddy JSON configuration for a project's routes."""
    any_host = any(r.hosts for r in routes)
    server: dict[str, Any] = {
        "listen": [":80", ":443"] if any_host else [":80"],
        "routes": [r.to_caddy() for r in sorted(routes, key=Route.sort_key)],
    }
    if not any_host:
        server["automatic_https"] = {"disable": True}
    return {
        "admin": {"listen": f"0.0.0.0:{ADMIN_PORT}"},
        "apps": {"http": {"servers": {"atomic": server}}},
    }


def routes_from_config(config: dict[str, Any]) -> dict[str, list[str]]:
    """Upstreams per service as a saved configuration has them."""
    found: dict[str, list[str]] = {}
    servers = config.get("apps", {}).get("http", {}).get("servers", {})
    for server in servers.values():
        for route in server.get("routes", []):
            for handler in route.get("handle", []):
                hid = handler.get("@id", "")
                if hid.startswith("ca_"):
                    found[hid[3:]] = [u["dial"] for u in handler.get("upstreams", [])]
    return found


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


class CaddyProxy:
    """The project's proxy container and its admin API."""

    def __init__(self, project_name: str, state_dir: Path, *, image: str, ports: list[str | int],
                 routes: list[Route]) -> None:
        self.project_name = project_name
        self.container_name = f"{project_name}-atomic-proxy"
        self.config_dir = (state_dir / "proxy").resolve()
        self.config_path = self.config_dir / "caddy.json"
        self.image = image
        self.ports = [str(p) for p in ports]
        self.routes = {r.service: r for r in routes}
        self._admin: str | None = None

    # ---- saved state -------------------------------------------------------

    def saved_upstreams(self) -> dict[str, list[str]]:
        """What the proxy routes to according to the saved configuration."""
        try:
            return routes_from_config(json.loads(self.config_path.read_text()))
        except (OSError, ValueError):
            return {}

    def config(self) -> dict[str, Any]:
        return build_config(list(self.routes.values()))

    def _save(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.config(), indent=2))
        os.replace(tmp, self.config_path)

    # ---- the container -----------------------------------------------------

    def state(self) -> dict[str, Any] | None:
        proc = _docker("inspect", "--type", "container", self.container_name)
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout)[0]

    @property
    def spec(self) -> str:
        """What the container was created with; a change needs a new container."""
        import hashlib

        return hashlib.sha256(json.dumps([self.image, sorted(self.ports)]).encode()).hexdigest()[:16]

    def ensure(self, networks: list[str], on_recreate=None) -> None:
        """Create or start the proxy, join ``networks`` and push the saved configuration."""
        self._save()
        info = self.state()
        if info is not None and (info["Config"].get("Labels") or {}).get(LABEL_SPEC) != self.spec:
            # A new image or new ports: the published ports cannot be held by two containers,
            # so this is a short gap (about a second); said out loud by the caller.
            if on_recreate:
                on_recreate()
            self.remove()
            info = None
        if info is None:
            self._create(networks)
            info = self.state()
        elif info["State"]["Status"] != "running":
            proc = _docker("start", self.container_name)
            if proc.returncode != 0:
                raise ProxyError(f"proxy {self.container_name}: could not start: {proc.stderr.strip()}")
            self._admin = None
        joined = set((info or {}).get("NetworkSettings", {}).get("Networks", {}) or {})
        for net in networks:
            if net not in joined:
                proc = _docker("network", "connect", net, self.container_name)
                if proc.returncode != 0 and "already exists" not in proc.stderr:
                    raise ProxyError(f"proxy {self.container_name}: could not join network {net}: "
                                     f"{proc.stderr.strip()}")
        self.wait_ready()
        self.load()

    def _create(self, networks: list[str]) -> None:
        args = ["run", "-d", "--name", self.container_name,
                "--label", f"com.docker.compose.project={self.project_name}",
                "--label", f"{LABEL_PROXY}={self.project_name}",
                "--label", f"{LABEL_SPEC}={self.spec}",
                "--restart", "unless-stopped",
                "-p", f"127.0.0.1::{ADMIN_PORT}",
                "-v", f"{self.config_dir}:{CONFIG_DIR_IN_CONTAINER}:ro",
                "--entrypoint", "caddy"]
        for port in self.ports:
            args += ["-p", port]
        if networks:
            args += ["--network", networks[0]]
        args += [self.image, "run", "--config", f"{CONFIG_DIR_IN_CONTAINER}/caddy.json"]
        proc = _docker(*args, timeout=300)
        if proc.returncode != 0:
            _docker("rm", "-f", self.container_name)
            message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "unknown error"
            raise ProxyError(f"proxy {self.container_name}: could not start {self.image}: {message}",
                             hint="Check x-atomic.proxy.image and that x-atomic.proxy.ports are free.")
        self._admin = None

    def remove(self) -> None:
        _docker("rm", "-f", self.container_name)

    # ---- the admin API -----------------------------------------------------

    def admin_url(self) -> str:
        if self._admin is None:
            proc = _docker("port", self.container_name, f"{ADMIN_PORT}/tcp")
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("127.0.0.1:")), "")
            if proc.returncode != 0 or not line:
                raise ProxyError(f"proxy {self.container_name} is not running")
            self._admin = f"http://{line.strip()}"
        return self._admin

    def _request(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        import httpx

        response = httpx.request(method, self.admin_url() + path, timeout=timeout,
                                 json=body if body is not None else None)
        if response.status_code >= 400:
            raise ProxyError(f"proxy admin API {method} {path}: {response.status_code} {response.text.strip()}")
        return response.json() if response.content else None

    def wait_ready(self, timeout: float = 30) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                self._request("GET", "/config/", timeout=2)
                return
            except (httpx.HTTPError, ProxyError) as exc:
                last = str(exc)
                self._admin = None
                time.sleep(0.2)
        raise ProxyError(f"proxy {self.container_name}: admin API not ready after {timeout:.0f}s ({last})")

    def load(self) -> None:
        self._request("POST", "/load", self.config())

    def _with_retry(self, action, networks: list[str]):
        """Run an admin call; if the proxy is gone (killed, restarting), bring it back once."""
        import httpx

        try:
            return action()
        except (httpx.HTTPError, ProxyError):
            self._admin = None
            self.ensure(networks)  # pushes the full saved configuration
            return action()

    def set_upstreams(self, service: str, dials: list[str], networks: list[str]) -> None:
        """Point ``service``'s route at ``dials`` in one atomic change (saved first)."""
        route = self.routes[service]
        route.upstreams = list(dials)
        self._save()

        def patch():
            try:
                self._request("PATCH", f"/id/{route.handler_id}/upstreams", [{"dial": d} for d in dials])
            except ProxyError as exc:
                if " 404 " in str(exc) or "unknown object ID" in str(exc):
                    self.load()  # the running config predates this route
                else:
                    raise

        self._with_retry(patch, networks)

    def in_flight(self, dial: str) -> int:
        """Requests the proxy has open to ``dial`` right now (0 when unknown)."""
        import httpx

        try:
            for upstream in self._request("GET", "/reverse_proxy/upstreams", timeout=3) or []:
                if upstream.get("address") == dial:
                    return int(upstream.get("num_requests", 0))
        except (httpx.HTTPError, ProxyError):
            return 0
        return 0
