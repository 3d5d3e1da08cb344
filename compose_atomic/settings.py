"""The deploy's x-atomic settings, parsed once into typed objects, with every default in one place.

``DEFAULTS`` is the only place a default is written; ``tests/unit/test_settings.py`` checks it
against the JSON Schema's ``default`` values, so the docs, the schema and the code agree.
Other capabilities keep their own typed settings beside them (``migrate/settings.py``,
``lint/settings.py``), reading their defaults from here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .durations import parse_duration

if TYPE_CHECKING:
    from .project import Project

#: Defaults by x-atomic key path ("proxy.*" at the top level, the rest per service).
DEFAULTS: dict[str, Any] = {
    "proxy.image": "caddy:2.8-alpine",
    "proxy.ports": ["80:80", "443:443"],
    "lock_wait": "0s",
    "retain.releases": 5,
    "retain.after_deploy": False,
    "strategy": "start-first",
    "monitor": "10s",
    "drain": "30s",
    "health.path": "/",
    "health.timeout": "60s",
    "health.interval": "1s",
    "migrate.timeout": "60s",
    "migrate.lock_timeout": "5s",
    "migrate.on_failure": "refuse",
    "migrate.keep_snapshots": 5,
    "retain.releases": 5,
    "retain.after_deploy": False,
    "backup.schedule": "0 3 * * *",
    "backup.verify": "restore",
    "backup.pitr.keep": "7d",
    "backup.pitr.max_wal_keep": "4GB",
    "backup.pitr.max_lag": "2m",
    "backup.pitr.verify": "30 4 * * *",
    "backup.pitr.full_every": 7,
    "backup.pitr.incremental": True,
}


@dataclass(frozen=True)
class RouteSettings:
    """``x-atomic.route``: what the proxy matches and the container port it dials."""

    port: int
    hosts: tuple[str, ...] = ()
    path: str | None = None


@dataclass(frozen=True)
class HealthSettings:
    """``x-atomic.health`` resolved against ``route``; ``path`` None: no HTTP probe."""

    path: str | None = None
    port: int | None = None
    status: int | None = None
    timeout: float = parse_duration(DEFAULTS["health.timeout"])
    interval: float = parse_duration(DEFAULTS["health.interval"])


@dataclass(frozen=True)
class DeploySettings:
    """One service's deploy keys."""

    route: RouteSettings | None
    health: HealthSettings
    monitor: float
    drain: float
    strategy: str


@dataclass(frozen=True)
class ProxySettings:
    """``x-atomic.proxy`` at the top level of the project."""

    image: str
    ports: tuple
    networks: tuple[str, ...] = ()


def _duration(annotation: dict[str, Any], key: str) -> float:
    return parse_duration(annotation.get(key, DEFAULTS[key]))


def parse_route(annotation: dict[str, Any]) -> RouteSettings | None:
    route = annotation.get("route")
    if not route:
        return None
    hosts = route.get("host") or []
    return RouteSettings(int(route["port"]), tuple([hosts] if isinstance(hosts, str) else hosts), route.get("path"))


def parse_health(annotation: dict[str, Any]) -> HealthSettings:
    health = annotation.get("health") or {}
    route = annotation.get("route") or {}
    return HealthSettings(
        path=health.get("path", DEFAULTS["health.path"]) if health else None,
        port=health.get("port") or route.get("port"),
        status=health.get("status"),
        timeout=parse_duration(health.get("timeout", DEFAULTS["health.timeout"])),
        interval=parse_duration(health.get("interval", DEFAULTS["health.interval"])),
    )


def deploy_settings(project: Project, service: str) -> DeploySettings:
    """A service's deploy settings (the project was validated against the schema before)."""
    annotation = project.service_x_atomic(service)
    return DeploySettings(route=parse_route(annotation), health=parse_health(annotation),
                          monitor=_duration(annotation, "monitor"), drain=_duration(annotation, "drain"),
                          strategy=annotation.get("strategy", DEFAULTS["strategy"]))


def proxy_settings(project: Project) -> ProxySettings | None:
    """The managed proxy's settings, or None when the project has no ``x-atomic.proxy``."""
    proxy = project.x_atomic.get("proxy")
    if proxy is None:
        return None
    return ProxySettings(image=proxy.get("image", DEFAULTS["proxy.image"]),
                         ports=tuple(proxy.get("ports", DEFAULTS["proxy.ports"])),
                         networks=tuple(proxy.get("networks") or ()))


@dataclass(frozen=True)
class WriteHoldSettings:
    """``x-atomic.migrate.hold_writes``: hold the routes that write to ``database`` during a migration."""

    database: str
    timeout: float
    #: The routed services that use the database: those migrating it, and those that depend on it.
    services: tuple[str, ...]


def write_hold_settings(project: Project, service: str, *, timeout: float | None = None) -> WriteHoldSettings | None:
    """The write hold ``service``'s migration asks for, or None (not set, or no migration).

    ``timeout`` (``up --hold-writes``) asks for one, that long, for any service with a migration."""
    migrate = project.service_x_atomic(service).get("migrate") or {}
    if not migrate or not (timeout or migrate.get("hold_writes")):
        return None
    database = migrate["database"]
    users = []
    for name in project.atomic_services:
        annotation = project.service_x_atomic(name)
        if not annotation.get("route"):
            continue
        depends = project.services.get(name, {}).get("depends_on") or {}
        if name == service or (annotation.get("migrate") or {}).get("database") == database or database in depends:
            users.append(name)
    return WriteHoldSettings(database, timeout or parse_duration(migrate["hold_writes"]), tuple(users))
