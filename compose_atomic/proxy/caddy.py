"""The project's Caddy 2 proxy, driven only through its admin API and JSON files.

Three small containers share one network namespace:

- ``<project>-atomic-proxy-ports`` owns the namespace: the published ports, the
  admin port and the networks. It runs an idle Caddy and never needs replacing
  unless the ports change.
- ``<project>-atomic-proxy`` (the edge) is what clients talk to: TLS and the
  listening sockets. Its configuration only changes when the routes' hosts or
  the image change, and then a new edge starts beside the old one on the same
  sockets (Caddy listens with ``SO_REUSEPORT``) before the old one stops.
- ``<project>-atomic-proxy-switch`` holds the upstreams. A deploy changes only
  this one, with one ``PATCH`` through the admin API.

Why two Caddy processes instead of one: every configuration change restarts
Caddy's HTTP servers, and a restarting server closes idle keep-alive
connections. A client that sent a POST on such a connection at that instant
gets EOF, and nobody may replay a POST: measured here, about one POST in four
reloads under load. The edge is never reloaded during a deploy, and it talks to
the switch without keep-alive, so a reload of the switch has no idle
connection to close. ``net.ipv4.tcp_migrate_req`` (set on the namespace)
hands connections still queued on a closing listener to the new one.

Why files: any Caddy 2 image must work, including one that holds only the
caddy binary (no shell). Each container reads its whole configuration from
``<state_dir>/proxy/`` (bind-mounted read-only), which compose-atomic rewrites
before every change it pushes, so a restarted or killed proxy comes back with
the routes it had.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import OperationFailed

ADMIN_PORT = 2019
#: Where the switch listens, inside the proxy's own network namespace only.
SWITCH_LISTEN = "127.0.0.1:2020"
CONFIG_DIR_IN_CONTAINER = "/etc/compose-atomic"
LABEL_PROXY = "dev.compose-atomic.proxy"
LABEL_ROLE = "dev.compose-atomic.proxy-role"
LABEL_SPEC = "dev.compose-atomic.proxy-spec"
READY_LINE = "serving initial configuration"
#: Methods Caddy may replay on another upstream after the request reached one.
#: POST and PATCH are never replayed: the first upstream may have acted on them.
RETRY_METHODS = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]
#: The edge already set these from the client; the switch passes them on unchanged.
FORWARDED = ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"]


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
            "headers": {"request": {"set": {h: [f"{{http.request.header.{h}}}"] for h in FORWARDED}}},
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
    """The switch's configuration: every route and its upstreams, plain HTTP on the loopback."""
    server: dict[str, Any] = {
        "listen": [SWITCH_LISTEN],
        "automatic_https": {"disable": True},
        "routes": [r.to_caddy() for r in sorted(routes, key=Route.sort_key)],
    }
    return {
        "admin": {"listen": f"0.0.0.0:{ADMIN_PORT}"},
        "apps": {"http": {"servers": {"atomic": server}}},
    }


def build_edge_config(routes: list[Route]) -> dict[str, Any]:
    """The edge's configuration: the public sockets, TLS for the routes' hosts, everything to the switch."""
    hosts = sorted({h for r in routes for h in r.hosts})
    forward = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": SWITCH_LISTEN}],
        # A new connection per request: a reload of the switch then never meets an idle one.
        "transport": {"protocol": "http", "keep_alive": {"enabled": False}},
        # Only dial errors are retried (whatever the method): nothing was sent yet.
        "load_balancing": {"try_duration": "10s", "try_interval": "50ms"},
    }
    server: dict[str, Any] = {"listen": [":80", ":443"] if hosts else [":80"], "routes": []}
    if hosts:
        # The host matcher is what tells Caddy which certificates to obtain.
        server["routes"].append({"match": [{"host": hosts}], "handle": [forward], "terminal": True})
    else:
        server["automatic_https"] = {"disable": True}
    server["routes"].append({"handle": [forward], "terminal": True})
    return {"admin": {"disabled": True}, "apps": {"http": {"servers": {"edge": server}}}}


#: The namespace holder runs Caddy with nothing to do: any Caddy image can hold the ports.
HOLDER_CONFIG = {"admin": {"disabled": True}}


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


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


class CaddyProxy:
    """The project's proxy containers and the switch's admin API."""

    def __init__(self, project_name: str, state_dir: Path, *, image: str, ports: list[str | int],
                 routes: list[Route]) -> None:
        self.project_name = project_name
        self.container_name = f"{project_name}-atomic-proxy"  # the edge: what clients talk to
        self.switch_name = f"{project_name}-atomic-proxy-switch"
        self.holder_name = f"{project_name}-atomic-proxy-ports"
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

    def _files(self) -> dict[str, dict[str, Any]]:
        return {"caddy.json": self.config(), "edge.json": build_edge_config(list(self.routes.values())),
                "ports.json": HOLDER_CONFIG}

    def _save(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        for name, content in self._files().items():
            path = self.config_dir / name
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(content, indent=2))
            os.replace(tmp, path)

    # ---- the containers ----------------------------------------------------

    @staticmethod
    def _inspect(name: str) -> dict[str, Any] | None:
        proc = _docker("inspect", "--type", "container", name)
        return json.loads(proc.stdout)[0] if proc.returncode == 0 else None

    def _specs(self) -> dict[str, str]:
        """What each container was created with; a difference needs a new container."""
        return {"ports": _digest(sorted(self.ports)), "switch": _digest(self.image),
                "edge": _digest([self.image, build_edge_config(list(self.routes.values()))])}

    def ensure(self, networks: list[str], report: Callable[[str, bool], None] | None = None) -> None:
        """Create, repair or update the proxy, join ``networks`` and push the saved configuration.

        ``report(message, warning)`` hears about anything clients may notice.
        """
        self._save()
        specs = self._specs()
        holder = self._inspect(self.holder_name)
        if holder is not None and (holder["Config"].get("Labels") or {}).get(LABEL_SPEC) != specs["ports"]:
            # The published ports belong to the namespace: new ports need a new one. Said out loud.
            if report:
                report("x-atomic.proxy ports changed: recreating the proxy; requests fail for about a second",
                       True)
            holder = None
        if holder is None:
            self.remove()  # an edge or switch left in a namespace that is gone cannot be restarted into a new one
            self._create_holder(networks, specs["ports"])
        elif holder["State"]["Status"] != "running":
            proc = _docker("start", self.holder_name)
            if proc.returncode != 0:
                raise ProxyError(f"proxy {self.holder_name}: could not start: {_last_line(proc.stderr)}")
        holder = self._inspect(self.holder_name) or {}
        joined = set((holder.get("NetworkSettings") or {}).get("Networks") or {})
        for net in networks:
            if net not in joined:
                proc = _docker("network", "connect", net, self.holder_name)
                if proc.returncode != 0 and "already exists" not in proc.stderr:
                    raise ProxyError(f"proxy {self.holder_name}: could not join network {net}: "
                                     f"{_last_line(proc.stderr)}")
        started = holder.get("State", {}).get("StartedAt", "")
        self._ensure_caddy(self.switch_name, "switch", "caddy.json", specs["switch"], started, report)
        self._ensure_caddy(self.container_name, "edge", "edge.json", specs["edge"], started, report)
        self._admin = None
        self.wait_ready()
        self.load()

    def _run(self, name: str, role: str, spec: str, extra: list[str], command: list[str]) -> None:
        args = ["run", "-d", "--name", name,
                "--label", f"com.docker.compose.project={self.project_name}",
                "--label", f"{LABEL_PROXY}={self.project_name}",
                "--label", f"{LABEL_ROLE}={role}", "--label", f"{LABEL_SPEC}={spec}",
                "--restart", "unless-stopped",
                "-v", f"{self.config_dir}:{CONFIG_DIR_IN_CONTAINER}:ro",
                "--entrypoint", "caddy", *extra, self.image, "run", *command]
        proc = _docker(*args, timeout=300)
        if proc.returncode != 0:
            _docker("rm", "-f", name)
            raise ProxyError(f"proxy {name}: could not start {self.image}: {_last_line(proc.stderr)}",
                             hint="Check x-atomic.proxy.image and that x-atomic.proxy.ports are free.")

    def _create_holder(self, networks: list[str], spec: str) -> None:
        extra = ["-p", f"127.0.0.1::{ADMIN_PORT}"]
        for port in self.ports:
            extra += ["-p", port]
        if networks:
            extra += ["--network", networks[0]]
        command = ["--config", f"{CONFIG_DIR_IN_CONTAINER}/ports.json"]
        try:
            self._run(self.holder_name, "ports", spec, ["--sysctl", "net.ipv4.tcp_migrate_req=1", *extra], command)
        except ProxyError as exc:
            if "sysctl" not in str(exc.message):
                raise
            self._run(self.holder_name, "ports", spec, extra, command)  # a kernel before 5.14

    def _create_caddy(self, name: str, role: str, config_file: str, spec: str) -> None:
        extra = ["--network", f"container:{self.holder_name}",
                 "-e", "XDG_DATA_HOME=/data", "-v", f"{self.project_name}-atomic-proxy-data:/data"]
        self._run(name, role, spec, extra, ["--config", f"{CONFIG_DIR_IN_CONTAINER}/{config_file}"])

    def _ensure_caddy(self, name: str, role: str, config_file: str, spec: str, holder_started: str,
                      report: Callable[[str, bool], None] | None) -> None:
        info = self._inspect(name)
        if info is None:
            self._create_caddy(name, role, config_file, spec)
            self._wait_serving(name)
        elif (info["Config"].get("Labels") or {}).get(LABEL_SPEC) != spec:
            self._hand_over(name, role, config_file, spec, report)
        elif info["State"]["Status"] != "running" or info["State"].get("StartedAt", "") < holder_started:
            # Stopped, or started before the namespace it joined was recreated: start it again.
            proc = _docker("restart", "-t", "5", name)
            if proc.returncode != 0:
                raise ProxyError(f"proxy {name}: could not start: {_last_line(proc.stderr)}")
            self._wait_serving(name)

    def _hand_over(self, name: str, role: str, config_file: str, spec: str,
                   report: Callable[[str, bool], None] | None) -> None:
        """Start the new Caddy on the same sockets, then let the old one finish its requests and go."""
        fresh, retired = f"{name}-next", f"{name}-old"
        _docker("rm", "-f", fresh, retired)
        self._create_caddy(fresh, role, config_file, spec)
        try:
            self._wait_serving(fresh, timeout=30)
        except ProxyError:
            # A Caddy that cannot share its sockets (before 2.6): the gap cannot be avoided.
            _docker("rm", "-f", fresh)
            if report:
                report(f"proxy {name}: the new Caddy could not listen beside the old one; replacing it, "
                       "requests fail for about a second", True)
            _docker("rm", "-f", name)
            self._create_caddy(name, role, config_file, spec)
            self._wait_serving(name)
            return
        _docker("rename", name, retired)
        _docker("rename", fresh, name)
        _docker("stop", "-t", "30", retired, timeout=90)  # Caddy finishes requests in flight on SIGTERM
        _docker("rm", "-f", retired)
        if report:
            report(f"proxy {name}: handed over to {self.image} without closing the listening sockets", False)

    def _wait_serving(self, name: str, timeout: float = 30) -> None:
        """Until Caddy says it serves its configuration (its own log line; no shell, no curl)."""
        deadline = time.monotonic() + timeout
        while True:
            proc = _docker("logs", name)
            if READY_LINE in proc.stderr or READY_LINE in proc.stdout:
                return
            info = self._inspect(name)
            if info is None or info["State"]["Status"] in ("exited", "dead") or time.monotonic() > deadline:
                raise ProxyError(f"proxy {name} did not start: {_last_line(proc.stderr + proc.stdout)}")
            time.sleep(0.1)

    def remove(self) -> None:
        ids = _docker("ps", "-aq", "--filter", f"label={LABEL_PROXY}={self.project_name}").stdout.split()
        if ids:
            _docker("rm", "-f", *ids)

    # ---- the admin API -----------------------------------------------------

    def admin_url(self) -> str:
        if self._admin is None:
            proc = _docker("port", self.holder_name, f"{ADMIN_PORT}/tcp")
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("127.0.0.1:")), "")
            if proc.returncode != 0 or not line:
                raise ProxyError(f"proxy {self.holder_name} is not running")
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
        raise ProxyError(f"proxy {self.switch_name}: admin API not ready after {timeout:.0f}s ({last})")

    def load(self) -> None:
        self._request("POST", "/load", self.config())

    def _with_retry(self, action, networks: list[str]):
        """Run an admin call; if a proxy container is gone (killed, restarting), bring it back."""
        import httpx

        try:
            result = action()
        except (httpx.HTTPError, ProxyError):
            self._admin = None
            self.ensure(networks)  # pushes the full saved configuration
            return action()
        # The switch answered; the edge, which clients talk to, may still be the one that was killed.
        edge = self._inspect(self.container_name)
        if edge is None or edge["State"]["Status"] != "running":
            self.ensure(networks)
        return result

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
