"""The project's Caddy 2 proxy: an edge and a switch, driven through files and the admin API.

- ``<project>-atomic-proxy`` (the edge) is what clients talk to: it listens on
  ``x-atomic.proxy.ports`` in the host's network namespace, does TLS for the
  routes' hosts and forwards every request to the switch through a unix socket.
  Its configuration changes only with the image or the routes' hosts.
- ``<project>-atomic-proxy-switch`` holds the routes and their upstreams, on the
  project's networks. A deploy changes only this one, with one ``PATCH``
  through its admin API.

Why two Caddy processes: every configuration change restarts Caddy's HTTP
servers, and a restarting server closes idle keep-alive connections. A client
that sent a POST on such a connection at that instant gets EOF, and nobody may
replay a POST: measured here, about one POST in four reloads under load. The
edge is never reloaded during a deploy, and it opens a new connection to the
switch per request, so a reload of the switch has no idle connection to close.

Why these two containers stay independent (no shared network namespace): at
boot Docker starts containers in parallel and does not retry one whose
namespace owner is not up yet; two independent containers come back by their
restart policy alone, and the edge retries its dial until the switch listens.

Why the host's namespace for the edge: a new edge (new image, new hosts) then
binds the same ports beside the old one (Caddy listens with ``SO_REUSEPORT``)
before the old one stops, so a change to the proxy itself drops nothing. A new
switch listens on the other of two sockets, and a symlink flips to it.

Why files: any Caddy 2 image must work, including one that holds only the
caddy binary (no shell). Each container reads its whole configuration from
``<state_dir>/proxy/`` (bind-mounted read-only), which compose-atomic rewrites
before every change it pushes, so a restarted or killed proxy comes back with
the routes it had.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from .. import docker
from ..errors import ProxyError
from ..ports import parse_port
from ..settings import RouteSettings
from ..statedir import write_json_atomic
from .sockets import client_connections, stop_listening

#: Restart policy of the edge and the switch. Not ``unless-stopped``: after dockerd is killed
#: (SIGKILL, OOM, a power cut), the engine stops the containers it finds on start and does not
#: restart ``unless-stopped`` ones; ``always`` ones it does (measured on Docker 20.10, see
#: tests/test_engine_restart.py and docs/deploy.md, "After a reboot or an engine crash").
RESTART_POLICY = "always"
#: How long a proxy container that the engine is restarting (RESTART_POLICY) is left to it.
ENGINE_RESTART_WAIT = 10.0
#: Seconds a client is told to wait (``Retry-After``) when a route has no live container.
RETRY_AFTER = 5
#: How long a request may look for an upstream when the route has a single container: enough to
#: try its address, then its name, not enough to make a client wait for one that is down.
ALONE_TRY_DURATION = "200ms"
ALONE_TRY_INTERVAL = "50ms"
#: Bumped when the switch's container layout changes (2: the admin API on a unix socket, no TCP
#: port), so that an existing switch is handed over to one of the new layout. (The edge's spec
#: is its whole configuration already.)
LAYOUT = 2
CONFIG_DIR_IN_CONTAINER = "/etc/compose-atomic"
#: The edge and the switch share this directory (``<state_dir>/proxy/run`` on the host).
SOCKET_DIR_IN_CONTAINER = "/run/compose-atomic"
#: A symlink to the socket of the switch that serves (``switch-a.sock`` or ``switch-b.sock``).
SWITCH_SOCKET = f"{SOCKET_DIR_IN_CONTAINER}/switch.sock"
SLOTS = ("a", "b")
#: Where ``switch.sock`` points while the switch's configuration changes (nothing listens there).
QUIET_TARGET = "switch-quiet.sock"
#: Seconds the switch gets to read the requests it accepted before its configuration changes.
QUIESCE = 0.1
#: The first Caddy whose reverse proxy keeps a request's body across a failed dial (before, Go's
#: transport closed it and the retried dial of a POST answered 502 "invalid Read on closed Body",
#: seen on 2.6): only an edge of this Caddy or later is kept off the switch during a change.
QUIESCE_MIN_CADDY = (2, 11, 3)
#: An old edge that finds ``<run dir>/edge-draining-<its spec>`` closes each connection after its answer.
DRAIN_MARKER_PREFIX = "edge-draining-"
#: Seconds an old edge may take to see its clients go before it stops anyway.
EDGE_DRAIN_BOUND = 5.0
LABEL_PROXY = "dev.compose-atomic.proxy"
LABEL_ROLE = "dev.compose-atomic.proxy-role"
LABEL_SPEC = "dev.compose-atomic.proxy-spec"
LABEL_SLOT = "dev.compose-atomic.proxy-slot"
READY_LINE = "serving initial configuration"
#: Methods Caddy may replay on another upstream after the request reached one.
#: POST and PATCH are never replayed: the first upstream may have acted on them.
RETRY_METHODS = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]
#: How long the switch waits for a connection to a container. On a container network a live
#: one answers in well under a millisecond; the address of one that is gone answers nothing
#: (Caddy's default is 3 s, and every request paid it). See Route.handler.
DIAL_TIMEOUT = "500ms"
#: How long an upstream that failed once is skipped while there is another one to use.
FAIL_DURATION = "10s"
#: The edge already set these from the client; the switch passes them on unchanged.
FORWARDED = ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"]

# ---- the receipt's log (see compose_atomic/deploy/receipt.py) ----
#: The switch's access log and its reverse proxy's per-attempt log, one JSON object a line, in the
#: run directory (``<state_dir>/proxy/run/receipt-<slot>.log``), rolled at RECEIPT_ROLL_MB.
RECEIPT_LOGGER = "ca_receipt"
RECEIPT_ROLL_MB = 16
#: Response headers the switch sets for its own log (the edge deletes them: no client sees them).
#: The route a request matched; the container that answered (or was tried last); milliseconds from
#: the request's arrival to the answering container's headers and that attempt's own latency (the
#: difference is what the proxy held it or spent on attempts that failed); a hold's outer pass; the
#: error the proxy answered with.
ROUTE_TAG = "X-Compose-Atomic-Route"
UPSTREAM_TAG = "X-Compose-Atomic-Upstream"
TIMING_TAG = "X-Compose-Atomic-Timing"
HOLD_TAG = "X-Compose-Atomic-Hold"
ERROR_TAG = "X-Compose-Atomic-Error"
RECEIPT_TAGS = [ROUTE_TAG, UPSTREAM_TAG, TIMING_TAG, HOLD_TAG, ERROR_TAG]


def receipt_log_name(slot: str) -> str:
    return f"receipt-{slot}.log"


def receipt_logging(slot: str) -> dict[str, Any]:
    """The switch's ``logging``: its access log and the reverse proxy's per-attempt debug lines go
    to one file, without the request (no header, cookie, token, path or query string is written)
    nor the upstream's headers; everything else stays on the container's stderr as before."""
    drop = {"filter": "delete"}
    return {"logs": {
        "default": {"exclude": [f"http.log.access.{RECEIPT_LOGGER}"]},
        RECEIPT_LOGGER: {
            "writer": {"output": "file", "filename": f"{SOCKET_DIR_IN_CONTAINER}/{receipt_log_name(slot)}",
                       "roll_size_mb": RECEIPT_ROLL_MB, "roll_keep": 2, "roll_gzip": False},
            "encoder": {"format": "filter",
                        "wrap": {"format": "json", "time_format": "unix_seconds_float", "duration_format": "seconds"},
                        "fields": {"request": drop, "headers": drop, "resp_headers>Set-Cookie": drop}},
            "level": "DEBUG",
            "include": [f"http.log.access.{RECEIPT_LOGGER}", "http.handlers.reverse_proxy"],
        },
    }}


def route_match(hosts: Iterable[str], path: str | None) -> list[dict[str, Any]]:
    """Caddy's matcher for a route's hosts and path prefix (empty: every request)."""
    match: dict[str, Any] = {}
    if hosts:
        match["host"] = list(hosts)
    if path and path != "/":
        base = path.rstrip("/")
        match["path"] = [base, base + "/*"]
    return [match] if match else []


@dataclass
class Route:
    """Traffic for one service: what it matches and where it goes."""

    service: str
    port: int
    hosts: list[str] = field(default_factory=list)
    path: str | None = None
    upstreams: list[str] = field(default_factory=list)  # dial addresses, "container:port"
    try_duration: str = "5s"
    #: Spread requests over every upstream (replicas) instead of sending them to the first one up.
    balance: bool = False
    #: Containers leaving the route: they get no new request, but Caddy keeps counting the requests
    #: still open to them (an upstream that no handler lists is forgotten, its count with it).
    draining: list[str] = field(default_factory=list)
    #: In maintenance: ``{"message": ..., "retry_after": seconds}`` (see ``compose-atomic maintenance``).
    maintenance: dict[str, Any] | None = None
    #: Paused: ``{"timeout": seconds}``, requests are held (see ``compose-atomic pause``).
    paused: dict[str, Any] | None = None

    @classmethod
    def of(cls, service: str, route: RouteSettings) -> "Route":
        """The route of a service's parsed ``x-atomic.route``."""
        return cls(service, route.port, hosts=list(route.hosts), path=route.path)

    @property
    def handler_id(self) -> str:
        return f"ca_{self.service}"

    @property
    def route_id(self) -> str:
        return f"ca_route_{self.service}"

    def to_caddy(self) -> dict[str, Any]:
        handle = [self.handler()]
        # First, for the receipt: which route answered, whatever answers (see RECEIPT_TAGS).
        handle.insert(0, {"handler": "headers", "response": {"set": {ROUTE_TAG: [self.service]}}})
        if self.paused is not None:
            handle.insert(1, paused(self.service, float(self.paused.get("timeout", 30)),
                                    writes=bool(self.paused.get("writes"))))
        if self.maintenance is not None:
            # The page answers before the proxy handler, which stays (with its upstreams) for the
            # deploys that PATCH it meanwhile and for `maintenance off`.
            handle.insert(1, maintenance_page(self.maintenance.get("message"),
                                              int(self.maintenance.get("retry_after", RETRY_AFTER)),
                                              self.maintenance.get("page")))
        if self.draining:
            # Never reached (the proxy handler answers and does not call the next one), but
            # provisioned: it keeps the leaving upstreams, and their in-flight counts, known.
            handle.append({"handler": "reverse_proxy", "@id": f"ca_drain_{self.service}",
                           "upstreams": [{"dial": d} for d in self.draining]})
        route: dict[str, Any] = {"@id": self.route_id, "handle": handle, "terminal": True}
        match = route_match(self.hosts, self.path)
        if match:
            route["match"] = match
        return route

    def handler(self) -> dict[str, Any]:
        """The route's handler (``@id`` ``ca_<service>``, what a deploy PATCHes)."""
        if not self.upstreams:
            # Nothing to send to (a service not routed yet, or gated): say so at once.
            return unavailable(self.handler_id)
        # Several containers (a switch, replicas): hold a request while one fails, another answers.
        # A single one: a short look (its address, then its name), then 503 with Retry-After.
        fallback = self.balance or containers_behind(self.upstreams) > 1
        handler = {
            "handler": "reverse_proxy",
            "@id": self.handler_id,
            "upstreams": [{"dial": d} for d in self.upstreams],
            "headers": {"request": {"set": {h: [f"{{http.request.header.{h}}}"] for h in FORWARDED}},
                        "response": {"set": {
                            UPSTREAM_TAG: ["{http.reverse_proxy.upstream.hostport}"],
                            TIMING_TAG: ["{http.request.duration_ms} {http.reverse_proxy.upstream.latency_ms}"]}}},
            # A container that died takes its address with it: a dial to it gets no answer at
            # all (no ARP reply, no RST) and would hang for Caddy's default 3 s before the retry
            # goes to the next upstream. On a local bridge a live container answers a dial in
            # well under a millisecond, so a short dial timeout only ever cuts a dead one.
            # No keep-alive to the containers: a request is only ever sent on a connection the
            # container has just accepted, so a POST that fails was inside the container when it
            # died; one written on an idle connection it had already closed would be lost too.
            "transport": {"protocol": "http", "dial_timeout": DIAL_TIMEOUT, "keep_alive": {"enabled": False}},
            "load_balancing": {
                # One container: the first upstream that is up takes every request. During a switch
                # the list is [new, old], so a dial or transport error on the new container sends the
                # retry (and, for FAIL_DURATION, everything) to the old one, before compose-atomic even
                # notices. Replicas: round robin over them, a failed one skipped for FAIL_DURATION.
                "selection_policy": {"policy": "round_robin" if self.balance else "first"},
                "try_duration": self.try_duration if fallback else ALONE_TRY_DURATION,
                "try_interval": "100ms" if fallback else ALONE_TRY_INTERVAL,
                "retry_match": [{"method": RETRY_METHODS}],
            },
        }
        if len(self.upstreams) > 1:
            # Only while a fallback exists: with one upstream, marking it down would turn a
            # transient error into 503s for everyone; retrying it (try_duration) is better.
            # A failed upstream stays skipped long enough for compose-atomic to notice and
            # switch back: its retries then never meet the dead container again.
            handler["health_checks"] = {"passive": {"fail_duration": FAIL_DURATION, "max_fails": 1}}
        return handler

    def sort_key(self) -> tuple:
        # Specific routes first: with a host before without, longer paths before shorter.
        return (0 if self.hosts else 1, -len(self.path or ""), self.service)


@contextmanager
def reachable(socket: Path) -> Iterator[str]:
    """A path to ``socket`` that connect(2) takes (at most 107 bytes): a socket in a deep state
    directory is reached through this process's descriptor of its folder, ``/proc/self/fd/N/NAME``."""
    if len(os.fsencode(socket)) < 100:
        yield str(socket)
        return
    folder = os.open(socket.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{socket.name}"
    finally:
        os.close(folder)


def containers_behind(dials: Iterable[str]) -> int:
    """How many containers a route's dials reach: one container is its address, then its name;
    replicas are one address each."""
    dials = list(dials)
    names = []
    for dial in dials:
        host = dial.rsplit(":", 1)[0].strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            names.append(dial)
    return len(names) if names else len(dials)


def unavailable(handler_id: str | None = None, *, retry_after: int = RETRY_AFTER,
                body: str = "503 Service Unavailable: no container is serving this route right now.\n") -> dict[str, Any]:
    """A handler that answers 503 with ``Retry-After`` at once."""
    handler: dict[str, Any] = {
        "handler": "static_response", "status_code": 503, "body": body,
        "headers": {"Retry-After": [str(retry_after)], "Content-Type": ["text/plain; charset=utf-8"],
                    "Cache-Control": ["no-store"]},
    }
    if handler_id:
        handler["@id"] = handler_id
    return handler


#: Set on a held request when it goes round through the switch after `resume` (the edge strips it
#: from clients' requests).
HELD_HEADER = "X-Compose-Atomic-Held"


def hold_socket(service: str) -> str:
    """The socket a paused route waits for: absent while paused, a link back to the switch after."""
    return f"hold-{service}.sock"


def hold(service: str, timeout: float, *, buffered: bool = False) -> dict[str, Any]:
    """A handler that holds requests for up to ``timeout`` seconds: it dials a socket that does
    not exist yet, and Caddy retries a failed dial (whatever the method: nothing was sent) until
    ``try_duration``. ``resume`` links the socket to the switch's own, so the held requests go
    round through the switch (marked, so that they skip the hold) to the containers, and only
    then routes the service again: a configuration change ends every request Caddy is still
    retrying. After the timeout they get the 503 of a failed dial (with ``Retry-After``)."""
    handler: dict[str, Any] = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": f"unix/{SOCKET_DIR_IN_CONTAINER}/{hold_socket(service)}"}],
        # The client's address and scheme as the edge saw them, through the extra hop too.
        "headers": {"request": {"set": {**{h: [f"{{http.request.header.{h}}}"] for h in FORWARDED},
                                        HELD_HEADER: ["1"]}},
                    # The held request's second pass through the switch is the one the receipt counts.
                    "response": {"set": {HOLD_TAG: ["1"]}}},
        "transport": {"protocol": "http", "keep_alive": {"enabled": False}},
        "load_balancing": {"try_duration": f"{int(timeout * 1000)}ms", "try_interval": "50ms"},
    }
    if buffered:
        # Requests with a body too (a write hold): the body is read into memory first, so that
        # each retried dial sends it whole. Every method is retried: a failed dial sent nothing.
        handler["request_buffers"] = HOLD_REQUEST_BUFFER
        handler["load_balancing"]["retry_match"] = [{"method": ALL_METHODS}]
    return handler


#: Methods a paused route holds on a Caddy that cannot hold a body. Holding a request with its body
#: (a write hold, and ``pause`` where it can) needs ``request_buffers`` (Caddy 2.7 and later):
#: Caddy 2.6.2 has no such option, and with its ``buffer_requests`` none of 30 held concurrent
#: POSTs arrived whole (29 got 502, one a mangled body; without it 4 of 6 arrived empty). On
#: 2.11, 30 concurrent POSTs (10 B to 300 kB) held 2 s all arrived whole, with and without it.
HELD_METHODS = ["GET", "HEAD", "OPTIONS"]
ALL_METHODS = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "TRACE"]
#: How much of a held request's body Caddy keeps in memory (bytes); beyond it the rest streams.
HOLD_REQUEST_BUFFER = 16 * 1024 * 1024
#: How long ``resume`` waits, at most, for the requests going through the hold to be answered.
RELEASE_WAIT = 5.0
#: The first Caddy release with ``request_buffers``: a write hold needs it.
WRITE_HOLD_MIN_CADDY = (2, 7)


def paused(service: str, timeout: float, *, writes: bool = False) -> dict[str, Any]:
    """What a paused route does first: hold ``HELD_METHODS`` (``writes``: every request),
    answer the others 503 at once (with ``Retry-After``), and let requests marked as held
    (coming back through the switch after ``resume``) through to the route's own handler."""
    not_held = {"not": [{"header": {HELD_HEADER: ["1"]}}]}
    if writes:
        return {"handler": "subroute", "routes": [
            {"match": [not_held], "handle": [hold(service, timeout, buffered=True)], "terminal": True}]}
    return {"handler": "subroute", "routes": [
        {"match": [{**not_held, "method": HELD_METHODS}], "handle": [hold(service, timeout)], "terminal": True},
        # Any other: one dial that fails, which the error routes turn into a 503. (Not a static
        # 503: answering before the body is read resets the connection under the edge's feet, a
        # 502; the failed dial closes the body, which reads it to its end first.)
        {"match": [not_held], "handle": [{
            "handler": "reverse_proxy",
            "upstreams": [{"dial": f"unix/{SOCKET_DIR_IN_CONTAINER}/paused-{service}.refuse"}]}],
         "terminal": True},
    ]}


def parse_caddy_version(text: str | None) -> tuple[int, int, int] | None:
    """(major, minor, patch) from ``caddy version`` (``v2.11.7 h1:...``, ``2.6.2``)."""
    import re

    found = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return (int(found.group(1)), int(found.group(2)), int(found.group(3) or 0)) if found else None


def write_hold_refusal(version: tuple[int, ...] | None, image: str, container: str) -> str | None:
    """Why a write hold cannot run on this Caddy (None: it can)."""
    if version is None:
        return f"cannot hold writes: the version of Caddy in {container} could not be read (`caddy version`)"
    if version < WRITE_HOLD_MIN_CADDY:
        need = ".".join(map(str, WRITE_HOLD_MIN_CADDY))
        return (f"cannot hold writes: the proxy runs Caddy {version[0]}.{version[1]} ({image}), which cannot "
                f"hold a request's body (no request_buffers; with its buffer_requests none of 30 held "
                f"concurrent POSTs arrived whole); Caddy {need} or later can")
    return None


def maintenance_page(message: str | None, retry_after: int, page: str | None = None) -> dict[str, Any]:
    """503 with ``Retry-After`` for a route in maintenance: ``page`` (the user's HTML, as it is), or a
    small page with ``message``."""
    import html

    if page is not None:
        # Caddy expands {placeholders} in a static body; a backslash keeps a brace (CSS) literal.
        body = page.replace("{", "\\{").replace("}", "\\}")
    else:
        text = html.escape(message or "This service is down for maintenance. Please try again shortly.")
        text = text.replace("{", "&#123;").replace("}", "&#125;")  # braces stay literal, as above
        body = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>Maintenance</title></head>"
                f"<body><h1>Down for maintenance</h1><p>{text}</p></body></html>\n")
    return unavailable(retry_after=retry_after, body=body) | {
        "headers": {"Retry-After": [str(retry_after)], "Content-Type": ["text/html; charset=utf-8"],
                    "Cache-Control": ["no-store"]}}


def error_routes(tagged: bool = False) -> dict[str, Any]:
    """A server's error handling: no upstream to reach (a dial failed, or none is available) is a
    503 with ``Retry-After``; any other error keeps its status (a request that reached a container
    and failed there is not one a client may simply send again). ``tagged`` (the switch): the
    answer says, for the receipt's log, which container was tried last and what failed."""
    tag = [{"handle": [{"handler": "headers", "response": {"set": {
        UPSTREAM_TAG: ["{http.reverse_proxy.upstream.hostport}"], ERROR_TAG: ["{http.error.message}"]}}}]}]
    return {"routes": (tag if tagged else []) + [
        {"match": [{"vars_regexp": {"{http.error.message}": {"pattern": "^(dial |no upstreams available)"}}}],
         "handle": [unavailable()], "terminal": True},
        {"handle": [{"handler": "static_response", "status_code": "{http.error.status_code}"}]},
    ]}


def build_config(routes: list[Route], slot: str = "a") -> dict[str, Any]:
    """The switch's configuration: every route and its upstreams, plain HTTP on a unix socket."""
    server: dict[str, Any] = {
        "listen": [f"unix/{SOCKET_DIR_IN_CONTAINER}/switch-{slot}.sock"],
        "automatic_https": {"disable": True},
        "routes": [r.to_caddy() for r in sorted(routes, key=Route.sort_key)],
        "errors": error_routes(tagged=True),
        "logs": {"default_logger_name": RECEIPT_LOGGER},
    }
    return {
        # A unix socket in the run directory (mode 0700), which only the proxy containers mount:
        # no container network and no host port reaches the admin API.
        "admin": {"listen": f"unix/{SOCKET_DIR_IN_CONTAINER}/admin-{slot}.sock"},
        "logging": receipt_logging(slot),
        "apps": {"http": {"servers": {"atomic": server}}},
    }


def edge_listeners(ports: list[str | int | dict]) -> list[tuple[str, int]]:
    """``x-atomic.proxy.ports`` (Compose's syntax) as (host address to listen on, container port)."""
    parsed = [parse_port(port) for port in ports]
    return [(port.listen_address, port.target) for port in parsed if port.protocol != "udp"]


def edge_logging() -> dict[str, Any]:
    """The edge's ``logging``: every request it could not hand to the switch gets an error line on
    its stderr (``docker logs``), with the reason (Caddy logs an error its error routes answer only
    at DEBUG), and without the request (no header, cookie, token, path or query string)."""
    return {"logs": {
        "default": {"exclude": ["http.log.error"]},
        "ca_edge_errors": {"include": ["http.log.error"], "level": "DEBUG",
                           "writer": {"output": "stderr"},
                           "encoder": {"format": "filter", "wrap": {"format": "json"},
                                       "fields": {"request": {"filter": "delete"}}}},
    }}


def build_edge_config(routes: list[Route], ports: list[str | int | dict] | None = None) -> dict[str, Any]:
    """The edge's configuration: the public sockets, TLS for the routes' hosts, everything to the switch."""
    listeners = edge_listeners(ports if ports is not None else ["80:80", "443:443"])
    hosts = sorted({h for r in routes for h in r.hosts})
    forward = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": f"unix/{SWITCH_SOCKET}"}],
        # A new connection per request: a reload of the switch then never meets an idle one.
        "transport": {"protocol": "http", "keep_alive": {"enabled": False}},
        # Only the switch marks held requests; its tags are for its own log, not for clients.
        "headers": {"request": {"delete": [HELD_HEADER]}, "response": {"delete": RECEIPT_TAGS}},
        # Only dial errors are retried (whatever the method): nothing was sent yet.
        "load_balancing": {"try_duration": "10s", "try_interval": "50ms"},
    }
    server: dict[str, Any] = {"listen": [address for address, _ in listeners], "routes": [],
                              "errors": error_routes()}  # the switch down for more than 10 s
    app: dict[str, Any] = {"servers": {"edge": server}}
    if hosts:
        # The host matcher is what tells Caddy which certificates to obtain; the ports that
        # stand for the container's 80 and 443 are where it redirects and serves TLS.
        server["routes"].append({"match": [{"host": hosts}], "handle": [forward], "terminal": True})
        for target, key in ((80, "http_port"), (443, "https_port")):
            mapped = [int(address.rsplit(":", 1)[1]) for address, t in listeners if t == target]
            if mapped and mapped[0] != target:
                app[key] = mapped[0]
    else:
        server["automatic_https"] = {"disable": True}
    server["routes"].append({"handle": [forward], "terminal": True})
    return {"admin": {"disabled": True}, "logging": edge_logging(), "apps": {"http": app}}


def with_drain_marker(config: dict[str, Any], spec: str) -> dict[str, Any]:
    """The edge's configuration plus the rule that drains it: while the file
    ``<run dir>/edge-draining-<spec>`` exists, every response says ``Connection: close``."""
    config = json.loads(json.dumps(config))
    drain = {"match": [{"file": {"root": SOCKET_DIR_IN_CONTAINER, "try_files": [f"/{DRAIN_MARKER_PREFIX}{spec}"]}}],
             "handle": [{"handler": "headers", "response": {"set": {"Connection": ["close"]}}}]}
    config["apps"]["http"]["servers"]["edge"]["routes"].insert(0, drain)
    return config


def _no_log(info: dict[str, Any] | None) -> str:
    """What the engine says of a proxy container that stopped without a log line."""
    if info is None:
        return "the container is gone"
    state = info.get("State") or {}
    return (f"no log line; the engine says {state.get('Status')}, exit code {state.get('ExitCode')}"
            f"{', ' + state['Error'] if state.get('Error') else ''}, started {state.get('StartedAt')}, "
            f"finished {state.get('FinishedAt')}, restarted {info.get('RestartCount', 0)} times")


def routes_from_config(config: dict[str, Any]) -> dict[str, list[str]]:
    """Upstreams per service as a saved configuration has them."""
    return {service: dials for service, (dials, _) in balanced_routes_from_config(config).items()}


def balanced_routes_from_config(config: dict[str, Any]) -> dict[str, tuple[list[str], bool]]:
    """Upstreams per service as a saved configuration has them, and whether they are balanced."""
    found: dict[str, tuple[list[str], bool]] = {}
    servers = config.get("apps", {}).get("http", {}).get("servers", {})
    for server in servers.values():
        for route in server.get("routes", []):
            for handler in route.get("handle", []):
                hid = handler.get("@id", "")
                if hid.startswith("ca_") and not hid.startswith(("ca_route_", "ca_drain_")):
                    policy = ((handler.get("load_balancing") or {}).get("selection_policy") or {}).get("policy")
                    found[hid[3:]] = ([u["dial"] for u in handler.get("upstreams", [])], policy == "round_robin")
    return found


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


class CaddyProxy:
    """The project's edge and switch containers and the switch's admin API."""

    def __init__(self, project_name: str, state_dir: Path, *, image: str, ports: list[str | int],
                 routes: list[Route]) -> None:
        self.project_name = project_name
        self.container_name = f"{project_name}-atomic-proxy"  # the edge: what clients talk to
        self.switch_name = f"{project_name}-atomic-proxy-switch"
        self.config_dir = (state_dir / "proxy").resolve()
        self.run_dir = self.config_dir / "run"
        self.config_path = self.config_dir / "switch-a.json"
        self.image = image
        self.ports = list(ports)
        self.routes = {r.service: r for r in routes}
        self.data_volume = f"{project_name}-atomic-proxy-data"  # the edge's certificates
        self.slot = self._serving_slot()  # the sockets the serving switch listens on
        self._edge_version: tuple[int, int, int] | None = None  # read when first needed (_change)
        for service, state in self._route_state("maintenance").items():
            if service in self.routes:
                self.routes[service].maintenance = state
        for service, state in self._route_state("paused").items():
            if service in self.routes:
                self.routes[service].paused = state

    # ---- saved state -------------------------------------------------------

    def _route_state(self, kind: str) -> dict[str, dict[str, Any]]:
        """Routes in maintenance or paused (``<state_dir>/proxy/maintenance.json``, ``paused.json``)."""
        try:
            state = json.loads((self.config_dir / f"{kind}.json").read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _set_route_state(self, kind: str, services: list[str], state: dict[str, Any] | None) -> None:
        current = self._route_state(kind)
        for service in services:
            setattr(self.routes[service], kind, state)
            if state is None:
                current.pop(service, None)
            else:
                current[service] = state
        self.config_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.config_dir / f"{kind}.json", current, mode=0o644)
        self._save()

    def _patch_routes(self, services: list[str], networks: list[str]) -> None:
        def patch():
            for service in services:
                route = self.routes[service]
                try:
                    self._change("PATCH", f"/id/{route.route_id}", route.to_caddy())
                except ProxyError as exc:
                    if " 404 " in str(exc) or "unknown object ID" in str(exc):
                        self.load()
                        return
                    raise

        self._with_retry(patch, networks)

    def set_paused(self, services: list[str], timeout: float | None, networks: list[str], *,
                   writes: bool = False) -> None:
        """Hold ``services``' requests for up to ``timeout`` seconds, or (None) let them through.

        ``writes``: hold requests with a body too (see ``check_write_hold``), not only reads."""
        if timeout is not None:
            for service in services:  # dials must fail while paused
                (self.run_dir / hold_socket(service)).unlink(missing_ok=True)
            self._set_route_state("paused", services, {"timeout": timeout, **({"writes": True} if writes else {})})
            self._patch_routes(services, networks)
            return
        for service in services:  # the held ones round through the switch to the containers
            self._relink(self.run_dir / hold_socket(service), f"switch-{self.slot}.sock")
        time.sleep(0.3)  # each held request dials again within 50 ms: none is left retrying
        # ... unless the machine is busy: the configuration change below ends any request still
        # inside the hold, so wait (a bounded while) until the proxy counts none there.
        holds = [f"unix/{SOCKET_DIR_IN_CONTAINER}/{hold_socket(s)}" for s in services]
        self._wait_closed(holds)
        self._set_route_state("paused", services, None)
        self._patch_routes(services, networks)  # new requests go straight to the containers
        # A request that came in just before that change still goes round through the hold:
        # let it end too, so that the next change (a deploy's switch) meets none there.
        self._wait_closed(holds)

    def _wait_closed(self, dials: list[str]) -> None:
        """Wait (at most RELEASE_WAIT) until the proxy counts no open request to ``dials``."""
        deadline = time.monotonic() + RELEASE_WAIT
        while (self.open_requests(dials) or 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.05)

    def restore_saved(self) -> None:
        """Give the routes the upstreams the saved configuration has (for commands other than up)."""
        for path in (self.config_dir / f"switch-{self.slot}.json", self.config_path):
            try:
                saved = balanced_routes_from_config(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
            for service, (dials, balance) in saved.items():
                if service in self.routes:
                    self.routes[service].upstreams, self.routes[service].balance = dials, balance
            return

    def set_maintenance(self, services: list[str], state: dict[str, Any] | None, networks: list[str]) -> None:
        """Put ``services``' routes in maintenance (``state``: message, retry_after) or take them out (None)."""
        self._set_route_state("maintenance", services, state)
        self._patch_routes(services, networks)

    def saved_upstreams(self) -> dict[str, list[str]]:
        """What the proxy routes to according to the saved configuration."""
        for path in (self.config_path, self.config_dir / "caddy.json"):  # caddy.json: before the edge/switch pair
            try:
                return routes_from_config(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return {}

    def config(self, slot: str | None = None) -> dict[str, Any]:
        return build_config(list(self.routes.values()), slot or self.slot)

    def edge_spec(self) -> str:
        """What the edge runs (its image and configuration), as its label and drain marker carry it."""
        return _digest([self.image, self.edge_config()])

    def edge_config(self) -> dict[str, Any]:
        return build_edge_config(list(self.routes.values()), self.ports)

    def _save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)  # holds the switch's admin socket: root (the proxy, us) only
        files = {f"switch-{slot}.json": self.config(slot) for slot in SLOTS}
        files["edge.json"] = with_drain_marker(self.edge_config(), self.edge_spec())
        for name, content in files.items():  # read by the proxy containers (mounted read-only)
            write_json_atomic(self.config_dir / name, content, mode=0o644)

    def _serving_slot(self) -> str:
        """The slot ``switch.sock`` points at, else the serving switch's (the first one before there
        is a switch). A command killed during a change (see ``_change``) left it at QUIET_TARGET."""
        try:
            target = os.readlink(self.run_dir / "switch.sock")
        except OSError:
            target = ""
        for slot in SLOTS:
            if target == f"switch-{slot}.sock":
                return slot
        labels = ((self._inspect(self.switch_name) or {}).get("Config") or {}).get("Labels") or {}
        return labels.get(LABEL_SLOT, SLOTS[0])

    def _point_socket(self, slot: str) -> None:
        """Send the edge's next connections to the switch on ``slot``."""
        self._relink(self.run_dir / "switch.sock", f"switch-{slot}.sock")
        self.slot = slot

    @staticmethod
    def _relink(link: Path, target: str) -> None:
        """Point the symlink ``link`` at ``target`` in one atomic rename."""
        tmp = link.with_name(f".{link.name}.next")
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)

    # ---- the containers ----------------------------------------------------

    @staticmethod
    def _inspect(name: str) -> dict[str, Any] | None:
        return docker.inspect_one(name)

    def _state(self, name: str) -> dict[str, Any]:
        """``State`` of ``name`` as the engine reports it; empty when the container is gone."""
        return (self._inspect(name) or {}).get("State") or {}

    def ensure(self, networks: list[str], report: Callable[[str, bool], None] | None = None) -> None:
        """Create, repair or update the proxy, join ``networks`` and push the saved configuration.

        ``report(message, warning)`` hears about anything clients may notice.
        """
        self._save()
        self._ensure_switch(networks, report)
        self._ensure_edge(report)
        self._edge_version = None  # it may be a new one
        self.wait_ready()
        self.load()

    def _labels(self, role: str, spec: str, slot: str = "") -> dict[str, str]:
        labels = {docker.LABEL_PROJECT: self.project_name, LABEL_PROXY: self.project_name,
                  LABEL_ROLE: role, LABEL_SPEC: spec}
        if slot:
            labels[LABEL_SLOT] = slot
        return labels

    def _run(self, name: str, labels: dict[str, str], config_file: str, *, network: str | None = None,
             volumes: tuple[str, ...] = (), env: dict[str, str] | None = None,
             hint: str = "Check x-atomic.proxy.image.") -> None:
        """``docker run`` one Caddy and wait until it serves; on failure nothing is left behind."""
        command = docker.run_detached(
            name, self.image, labels=labels, restart=RESTART_POLICY, network=network, env=env,
            volumes=(f"{self.config_dir}:{CONFIG_DIR_IN_CONTAINER}:ro", f"{self.run_dir}:{SOCKET_DIR_IN_CONTAINER}",
                     *volumes),
            entrypoint="caddy", command=("run", "--config", f"{CONFIG_DIR_IN_CONTAINER}/{config_file}"))
        result = docker.run(command)
        try:
            if not result.ok:
                raise ProxyError(f"proxy {name}: could not start {self.image}: {result.last_line()}", hint=hint)
            self._wait_serving(name, hint=hint)
        except ProxyError:
            docker.run(docker.remove(name))
            raise

    # -- the switch --

    def _ensure_switch(self, networks: list[str], report: Callable[[str, bool], None] | None) -> None:
        spec = _digest([self.image, LAYOUT])
        info = self._inspect(self.switch_name)
        if info is None:
            self._create_switch(self.switch_name, SLOTS[0], spec, networks)
            self._point_socket(SLOTS[0])
            return
        slot = (info["Config"].get("Labels") or {}).get(LABEL_SLOT, SLOTS[0])
        if (info["Config"].get("Labels") or {}).get(LABEL_SPEC) != spec:
            self._hand_over_switch(slot, spec, networks, report)
            return
        self._keep_policy(self.switch_name, info)
        if info["State"]["Status"] != "running":
            self._start(self.switch_name)
        self._join(self.switch_name, info, networks)
        self._point_socket(slot)

    def _create_switch(self, name: str, slot: str, spec: str, networks: list[str]) -> None:
        # No published port: its admin API is a unix socket in the run directory (see admin_socket).
        self._run(name, self._labels("switch", spec, slot), f"switch-{slot}.json",
                  network=networks[0] if networks else None)
        self._join(name, self._inspect(name) or {}, networks)

    def _join(self, name: str, info: dict[str, Any], networks: list[str]) -> None:
        joined = set((info.get("NetworkSettings") or {}).get("Networks") or {})
        for net in networks:
            if net not in joined:
                result = docker.run(docker.network_connect(net, name))
                if not result.ok and "already exists" not in result.stderr:
                    raise ProxyError(f"proxy {name}: could not join network {net}: {result.last_line()}")

    def _hand_over_switch(self, slot: str, spec: str, networks: list[str],
                          report: Callable[[str, bool], None] | None) -> None:
        """The new switch listens on the other socket and the symlink flips to it."""
        other = SLOTS[1] if slot == SLOTS[0] else SLOTS[0]

        def create(name: str) -> None:
            self._create_switch(name, other, spec, networks)
            self._point_socket(other)

        self._hand_over(self.switch_name, create, report)

    # -- the edge --

    def _ensure_edge(self, report: Callable[[str, bool], None] | None) -> None:
        spec = self.edge_spec()
        info = self._inspect(self.container_name)
        if info is None:
            self._create_edge(self.container_name, spec)
        elif (info["Config"].get("Labels") or {}).get(LABEL_SPEC) != spec:
            self._hand_over_edge(spec, report)
        else:
            self._keep_policy(self.container_name, info)
            if info["State"]["Status"] != "running":
                self._start(self.container_name)

    def _create_edge(self, name: str, spec: str) -> None:
        # Labelled like Compose's volumes, so that `down -v` and label filters find it.
        docker.run(docker.volume_create(self.data_volume, {docker.LABEL_PROJECT: self.project_name,
                                                            LABEL_PROXY: self.project_name}))
        self._run(name, self._labels("edge", spec), "edge.json", network="host", env={"XDG_DATA_HOME": "/data"},
                  volumes=(f"{self.data_volume}:/data",),
                  hint="Check x-atomic.proxy.image, and that x-atomic.proxy.ports are free on this host.")

    def _hand_over_edge(self, spec: str, report: Callable[[str, bool], None] | None) -> None:
        """The new edge binds the same ports beside the old one (``SO_REUSEPORT``)."""
        self._hand_over(self.container_name, lambda name: self._create_edge(name, spec), report)

    # -- both --

    @staticmethod
    def _keep_policy(name: str, info: dict[str, Any]) -> None:
        """A proxy container made by an earlier version (``unless-stopped``) gets ``always`` in place."""
        if ((info.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") != RESTART_POLICY:
            docker.run(docker.update_restart(name, RESTART_POLICY))

    def _hand_over(self, name: str, create: Callable[[str], None],
                   report: Callable[[str, bool], None] | None) -> None:
        """Start the new Caddy beside the old one, then let the old one finish its requests and go."""
        fresh, retired = f"{name}-next", f"{name}-old"
        docker.run(docker.remove(fresh, retired))
        try:
            create(fresh)
        except ProxyError:
            # The old one holds the ports without SO_REUSEPORT (a Caddy before 2.6, or a proxy
            # from an older compose-atomic that published them through Docker): a short gap.
            if report:
                report(f"proxy {name}: the new Caddy could not listen beside the old one; "
                       "replacing it, requests fail for about a second", True)
            docker.run(docker.remove(name))
            create(name)
            return
        self._retire(name, fresh, retired)
        if report:
            report(f"proxy {name}: a new Caddy ({self.image}) took over beside the old one, "
                   "which finished its requests and stopped", False)

    def _retire(self, name: str, fresh: str, retired: str) -> None:
        docker.run(docker.rename(name, retired))
        docker.run(docker.rename(fresh, name))
        if name == self.container_name:
            self._drain_edge(retired)
        docker.run(docker.stop(30, retired))  # Caddy finishes requests in flight on SIGTERM
        docker.run(docker.remove(retired))
        for marker in self.run_dir.glob(f"{DRAIN_MARKER_PREFIX}*"):
            marker.unlink(missing_ok=True)

    def _drain_edge(self, retired: str) -> None:
        """Let clients leave the old edge before it stops, so none sends a request on a keep-alive
        connection at the instant it closes (a POST lost that way cannot be replayed).

        The old edge answers every request with ``Connection: close`` once its marker file exists
        (no reload: a reload would close the idle connections itself), and its listeners are
        stopped (sockets.py), so every new connection goes to the new edge; it stops when it holds
        no client connection, or after ``EDGE_DRAIN_BOUND`` seconds (a client idle all that time,
        or a request still running, which SIGTERM lets finish). Where its listeners cannot be stopped (a remote engine, not root) it keeps accepting
        until then: under steady load it then stops at the bound.
        """
        info = self._inspect(retired) or {}
        spec = ((info.get("Config") or {}).get("Labels") or {}).get(LABEL_SPEC)
        if not spec:
            return
        (self.run_dir / f"{DRAIN_MARKER_PREFIX}{spec}").touch()
        pid = (info.get("State") or {}).get("Pid") or 0
        ports = {int(address.rsplit(":", 1)[1]) for address, _ in edge_listeners(self.ports)}
        stop_listening(pid, ports)
        deadline = time.monotonic() + EDGE_DRAIN_BOUND
        while time.monotonic() < deadline:
            if client_connections(pid, ports) == 0:
                return
            time.sleep(0.1)

    def _start(self, name: str) -> None:
        """Start a stopped or killed proxy container and wait until it serves.

        Its log is read from the end of its last run (``FinishedAt``), not from ``StartedAt``: the
        engine sets StartedAt once it sees the process running, and on a busy engine Caddy can
        have written its lines, the ready line included, before that. Read from StartedAt, a
        serving Caddy is taken for one that "did not start" (no log line) after 30 s and the
        deploy rolls back: the likely cause of one failed run of the suite in six
        (tests/unit/test_proxy_start.py). A start that fails is tried again for
        ENGINE_RESTART_WAIT; a Caddy that cannot start fails every time and its last error is raised.
        """
        deadline = time.monotonic() + ENGINE_RESTART_WAIT
        while True:
            # Its lines since its last run ended (not since StartedAt: see above).
            ended = self._state(name).get("FinishedAt") or ""
            since = ended if ended and not ended.startswith("0001-") else None  # 0001-...: never ran
            if not self._restarted_by_engine(name):
                result = docker.run(docker.start(name))
                if not result.ok and self._state(name).get("Status") != "running":
                    # (Docker's restart policy may have started it meanwhile: that is fine too.)
                    raise ProxyError(f"proxy {name}: could not start: {result.last_line()}")
            try:
                self._wait_serving(name, since=since)
                return
            except ProxyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _restarted_by_engine(self, name: str) -> bool:
        """Whether the engine brings ``name`` back by itself (its RESTART_POLICY, during its back-off:
        Docker says ``restarting``), waited for at most ENGINE_RESTART_WAIT. A ``docker start`` in
        that back-off would cancel the engine's own restart. (``docker kill`` is a manual stop to
        Docker 20.10: a killed proxy is not restarted by the engine, and is started here.)"""
        deadline = time.monotonic() + ENGINE_RESTART_WAIT
        while True:
            status = self._state(name).get("Status")
            if status != "restarting":
                return status == "running"
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def _wait_serving(self, name: str, timeout: float = 30, hint: str | None = None,
                      since: str | None = None) -> None:
        """Until Caddy says it serves its configuration (its own log line since ``since``; no shell,
        no curl)."""
        deadline = time.monotonic() + timeout
        while True:
            result = docker.run(docker.logs(name, since))
            if READY_LINE in result.stderr or READY_LINE in result.stdout:
                return
            info = self._inspect(name)
            if info is None or info["State"]["Status"] in ("exited", "dead") or time.monotonic() > deadline:
                raise ProxyError(f"proxy {name} did not start: {result.last_line() or _no_log(info)}",
                                 hint=hint)
            time.sleep(0.1)

    # ---- the admin API -----------------------------------------------------

    def receipt_log(self) -> Path:
        """The serving switch's log for receipts (rolled files beside it: ``receipt-<slot>-*.log``)."""
        return self.run_dir / receipt_log_name(self.slot)

    def admin_socket(self) -> Path:
        """The serving switch's admin API: a unix socket in the run directory, on no network."""
        return self.run_dir / f"admin-{self.slot}.sock"

    def _request(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        import httpx

        # Caddy accepts an empty Host on a unix socket (2.6 accepts nothing else).
        with reachable(self.admin_socket()) as socket_path, \
                httpx.Client(transport=httpx.HTTPTransport(uds=socket_path), timeout=timeout,
                             headers={"Host": ""}) as client:
            response = client.request(method, f"http://localhost{path}",
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
                time.sleep(0.2)
        raise ProxyError(f"proxy {self.switch_name}: admin API not ready after {timeout:.0f}s ({last})")

    def _change(self, method: str, path: str, body: Any) -> Any:
        """An admin call that changes the switch's configuration, with the edge kept off it meanwhile.

        A change restarts Caddy's HTTP server: the old one shuts down gracefully beside the new
        one, and Go's graceful shutdown closes a connection it accepted but whose request it has
        not read yet (golang/go#75591). The edge then gets EOF for a request nobody handled, and
        may not send a POST again: measured, 16 POSTs in 300 changes under load. So ``switch.sock``
        points nowhere during the change: the edge's dials fail and it dials again every 50 ms,
        which is safe for any method (nothing was sent; an edge older than QUIESCE_MIN_CADDY loses
        the body, so it keeps the race). The switch first gets QUIESCE seconds to read what it
        accepted. Killed in between, the next command points it back (``_serving_slot``).
        """
        link = self.run_dir / "switch.sock"
        if not link.is_symlink() or not self._edge_redials_bodies():  # no switch yet, or an older edge
            return self._request(method, path, body)
        self._relink(link, QUIET_TARGET)
        try:
            time.sleep(QUIESCE)
            return self._request(method, path, body)
        finally:
            self._point_socket(self.slot)

    def load(self) -> None:
        self._change("POST", "/load", self.config())

    def _with_retry(self, action, networks: list[str]):
        """Run an admin call; if a proxy container is gone (killed, restarting), bring it back."""
        import httpx

        try:
            result = action()
        except (httpx.HTTPError, ProxyError):
            self.ensure(networks)  # pushes the full saved configuration
            return action()
        # The switch answered; the edge, which clients talk to, may still be the one that was killed.
        edge = self._inspect(self.container_name)
        if edge is None or edge["State"]["Status"] != "running":
            self.ensure(networks)
        return result

    def set_upstreams(self, service: str, dials: list[str], networks: list[str], *, balance: bool = False,
                      draining: list[str] | None = None) -> None:
        """Point ``service``'s route at ``dials`` in one atomic change (saved first).

        The route's whole handler list is replaced, not only its upstreams: the selection policy
        and the passive health checks depend on how many upstreams there are, and ``draining``
        (containers leaving the route) keeps their in-flight requests counted for :meth:`in_flight`.
        """
        route = self.routes[service]
        route.upstreams, route.balance = list(dials), balance
        route.draining = [d for d in draining or [] if d not in route.upstreams]
        self._save()

        def patch():
            try:
                self._change("PATCH", f"/id/{route.route_id}/handle", route.to_caddy()["handle"])
            except ProxyError as exc:
                if " 404 " in str(exc) or "unknown object ID" in str(exc):
                    self.load()  # the running config predates this route
                else:
                    raise

        self._with_retry(patch, networks)

    def caddy_version(self, container: str | None = None) -> tuple[int, int, int] | None:
        """The Caddy version of the serving switch (or ``container``), or None when it cannot be read."""
        proc = docker.run(docker.docker("exec", container or self.switch_name, "caddy", "version", timeout=15))
        return parse_caddy_version(proc.stdout) if proc.ok else None

    def _edge_redials_bodies(self) -> bool:
        """Whether the edge's Caddy dials the switch again with a request's body (QUIESCE_MIN_CADDY)."""
        if self._edge_version is None:
            self._edge_version = self.caddy_version(self.container_name) or (0, 0, 0)
        return self._edge_version >= QUIESCE_MIN_CADDY

    def holds_bodies(self) -> bool:
        """Whether this Caddy can hold a request with its body (2.7 and later: ``request_buffers``)."""
        return write_hold_refusal(self.caddy_version(), self.image, self.switch_name) is None

    def check_write_hold(self) -> None:
        """Refuse a write hold on a Caddy that cannot hold a request's body (before 2.7)."""
        refusal = write_hold_refusal(self.caddy_version(), self.image, self.switch_name)
        if refusal:
            raise ProxyError(refusal, hint="Set x-atomic.proxy.image to Caddy 2.7 or later (2.11 is the one "
                                           "measured), or remove x-atomic.migrate.hold_writes. Nothing was changed.")

    def open_requests(self, dials: Iterable[str]) -> int | None:
        """Requests the proxy has open to any of ``dials``; None when the admin API does not answer."""
        import httpx

        wanted = set(dials)
        try:
            upstreams = self._request("GET", "/reverse_proxy/upstreams", timeout=3) or []
        except (httpx.HTTPError, ProxyError):
            return None
        return sum(int(u.get("num_requests", 0)) for u in upstreams if u.get("address") in wanted)

    def in_flight(self, dial: str) -> int | None:
        """Requests the proxy has open to ``dial`` right now; None when it cannot tell.

        Unknown is never "drained": an upstream that no handler lists is not reported (see
        ``Route.draining``), and an admin API that does not answer says nothing.
        """
        import httpx

        try:
            for upstream in self._request("GET", "/reverse_proxy/upstreams", timeout=3) or []:
                if upstream.get("address") == dial:
                    return int(upstream.get("num_requests", 0))
        except (httpx.HTTPError, ProxyError):
            return None
        return None
