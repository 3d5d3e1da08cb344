"""The stack's Caddy configuration, as Caddy's native JSON.

On one host compose-atomic drives Caddy through its admin API, container by
container. In a swarm the tasks come and go under Swarm's control, so the proxy
follows them through Docker's DNS instead: each route's upstreams are a ``dynamic
a`` source on ``tasks.<service>``, refreshed every second. Swarm lists a task in
DNS only once its healthcheck passes and removes it before stopping it, so DNS is
the health gate; Caddy adds passive health (a task that refuses connections is
skipped) and retries (``try_duration``) so a request that meets a task on its way
out is replayed on another one instead of failing.

The routing is the single-host proxy's: a route with ``host`` matches that host
(served over HTTPS when the proxy publishes port 443), a route without ``host``
matches every request on plain HTTP, and ``path`` matches a prefix.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..proxy.caddy import Route, route_match

#: How long Caddy holds a request while it looks for a task that answers.
TRY_DURATION = "10s"
#: How often it looks again within that time.
TRY_INTERVAL = "250ms"
#: How often the upstream list is re-read from Docker's DNS.
DNS_REFRESH = "1s"
#: How long a task that refused a connection is left out.
FAIL_DURATION = "2s"
HTTPS_PORT = 443


def _handler(route: Route) -> dict[str, Any]:
    return {
        "handler": "reverse_proxy",
        "dynamic_upstreams": {
            "source": "a",
            "name": f"tasks.{route.service}",
            "port": str(route.port),
            "refresh": DNS_REFRESH,
        },
        "load_balancing": {
            "selection_policy": {"policy": "round_robin"},
            "try_duration": TRY_DURATION,
            "try_interval": TRY_INTERVAL,
        },
        "health_checks": {"passive": {"fail_duration": FAIL_DURATION, "max_fails": 1}},
    }


def _routes(routes: list[Route]) -> list[dict[str, Any]]:
    out = []
    for route in sorted(routes, key=Route.sort_key):
        entry: dict[str, Any] = {"handle": [_handler(route)], "terminal": True}
        match = route_match(route.hosts, route.path)
        if match:
            entry["match"] = match
        out.append(entry)
    return out


def caddy_config(routes: list[Route], listen_ports: list[int]) -> dict[str, Any]:
    """Caddy's JSON config for these routes, listening on the proxy's container ports.

    With 443 among the ports, routes with a host are served over HTTPS (Caddy gets
    the certificates and redirects HTTP to HTTPS for them); without it every route is
    served on plain HTTP and Caddy never tries to obtain a certificate.
    """
    https = HTTPS_PORT in listen_ports
    http_ports = sorted(p for p in set(listen_ports) if p != HTTPS_PORT)
    servers: dict[str, Any] = {}
    if http_ports:
        plain = [r for r in routes if not r.hosts] if https else routes
        server: dict[str, Any] = {"listen": [f":{p}" for p in http_ports], "routes": _routes(plain)}
        if not https:
            server["automatic_https"] = {"disable": True}
        servers["http"] = server
    if https:
        servers["https"] = {"listen": [f":{HTTPS_PORT}"],
                            "routes": _routes([r for r in routes if r.hosts])}
    return {
        # No admin API: the config comes from a swarm config, and nothing needs to change it live
        # (a listening admin API, even on the task's loopback, is one more thing to protect).
        "admin": {"disabled": True},
        "logging": {"logs": {"default": {"level": "WARN"}}},
        "apps": {"http": {"servers": servers}},
    }


def config_text(config: dict[str, Any]) -> str:
    """Stable text for the config file: the same routes give the same bytes (and name)."""
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def config_digest(text: str) -> str:
    """Short content hash: Swarm configs are immutable, so a change needs a new name."""
    return hashlib.sha256(text.encode()).hexdigest()[:10]
