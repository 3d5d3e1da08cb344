"""Recognise what a compose project runs and decide which x-atomic annotations to propose.

Everything here is a pure function over the files' parsed YAML, so it runs without
Docker and is cheap to test. The files are merged the way Compose merges override
files (mappings deep-merged, ``ports``/``expose`` appended), which is enough to
recognise services; Compose itself stays the authority once the files are written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InitError
from ..settings import DEFAULTS

#: Images whose last path component names a PostgreSQL server.
POSTGRES_IMAGES = {"postgres", "postgresql", "postgis", "timescaledb", "timescaledb-ha",
                   "pgvector", "postgresql-repmgr", "supabase-postgres"}
#: Reverse proxies that would sit where compose-atomic's managed Caddy sits.
PROXY_IMAGES = {"caddy": "Caddy", "traefik": "Traefik", "nginx-proxy": "nginx-proxy",
                "caddy-docker-proxy": "caddy-docker-proxy", "haproxy": "HAProxy",
                "nginx-proxy-manager": "Nginx Proxy Manager", "envoy": "Envoy"}
#: Stateful services compose-atomic does not replace; they keep plain `compose up`.
DATASTORES = {"redis", "valkey", "keydb", "memcached", "rabbitmq", "mysql", "mariadb", "mongo",
              "mongodb", "elasticsearch", "opensearch", "minio", "kafka", "zookeeper", "nats",
              "clickhouse-server", "etcd", "mailhog", "mailpit", "meilisearch", "typesense"}
#: Web servers and web apps whose image alone tells the port they listen on.
WEB_IMAGES = {"nginx": 80, "httpd": 80, "nginx-unprivileged": 8080, "ghost": 2368,
              "wordpress": 80, "grafana": 3000, "metabase": 3000, "n8n": 5678, "gitea": 3000,
              "uptime-kuma": 3001, "umami": 3000, "directus": 8055, "strapi": 1337}
#: App servers recognised in `command:`, with the port they listen on by default.
COMMAND_DEFAULTS = (("gunicorn", 8000), ("uvicorn", 8000), ("daphne", 8000), ("hypercorn", 8000),
                    ("runserver", 8000), ("puma", 3000), ("rails s", 3000), ("next start", 3000),
                    ("flask run", 5000))
#: Container ports that are conventionally HTTP, in order of preference.
WEB_PORTS = (80, 8080, 8000, 3000, 5000, 4000, 8888, 9000)

DEFAULT_MONITOR = DEFAULTS["monitor"]
DEFAULT_DRAIN = DEFAULTS["drain"]
DEFAULT_BACKUP = {"schedule": "0 3 * * *",
                  "keep": {"last": 3, "daily": 7, "weekly": 4, "monthly": 6},
                  "verify": "restore"}
DEFAULT_PROXY_PORTS = DEFAULTS["proxy.ports"]


# ---- reading -----------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.2-like for what matters here: ``22:22`` stays a string, as Compose reads it."""


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    value = loader.construct_scalar(node)
    if ":" in str(value):
        return str(value)
    return yaml.SafeLoader.construct_yaml_int(loader, node)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


@dataclass
class ComposeFile:
    """One compose file: its text, its values (anchors and merge keys resolved) and its nodes."""

    path: Path
    text: str
    data: dict[str, Any]
    root: yaml.Node | None


def read_file(path: Path) -> ComposeFile:
    """Parse a compose file, naming the file and line when it is not valid YAML."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:  # keep CRLF as it is
            text = handle.read()
    except UnicodeDecodeError:
        raise InitError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise InitError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_Loader) or {}
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InitError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise InitError(f"{path}: a compose file must be a mapping (services:, volumes:, ...)")
    return ComposeFile(path, text, data, root)


def read_env(directory: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables Compose interpolates with: the ``.env`` file, overridden by the environment."""
    env: dict[str, str] = {}
    dotenv = directory / ".env"
    if dotenv.is_file():
        for line in dotenv.read_text(errors="replace").splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.removeprefix("export ").partition("=")
            env[key.strip()] = value.strip().strip("'\"")
    env.update(os.environ if environ is None else environ)
    return env


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR:-default}`` interpolation, enough to read image names and ports."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3) or ""
        current = env.get(name)
        if op in (":-", ":?"):
            return current if current else (arg if op == ":-" else "")
        if op in ("-", "?"):
            return current if current is not None else (arg if op == "-" else "")
        if op == ":+":
            return arg if current else ""
        if op == "+":
            return arg if current is not None else ""
        return current or ""

    return _VAR.sub(replace, value)


def merge_services(files: list[ComposeFile]) -> dict[str, dict[str, Any]]:
    """Services merged across files as Compose does for overrides (later files win)."""
    merged: dict[str, dict[str, Any]] = {}
    for file in files:
        for name, service in (file.data.get("services") or {}).items():
            if isinstance(service, dict):
                merged[str(name)] = _merge(merged.get(str(name), {}), service)
    return merged


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in override.items():
        if key in ("ports", "expose") and isinstance(value, list):
            result[key] = [*as_list(result.get(key)), *value]
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = value
    return result


# ---- recognising -------------------------------------------------------------


@dataclass
class PortMapping:
    raw: str
    target: int | None
    published: str | None  # host side, when the port is published on the host


def parse_port(entry: Any) -> PortMapping:
    """One ``ports:`` entry, short (``127.0.0.1:8000:8000/tcp``) or long syntax."""
    if isinstance(entry, dict):
        target = entry.get("target")
        published = entry.get("published")
        raw = f"{published}:{target}" if published else str(target)
        return PortMapping(raw, _int(target), str(published) if published not in (None, "") else None)
    raw = str(entry)
    spec = raw.split("/")[0]
    if spec.startswith("["):  # [::1]:8000:8000
        spec = spec.split("]:", 1)[-1]
    parts = spec.rsplit(":", 2) if spec.count(":") >= 2 else spec.split(":")
    target = _int(parts[-1].split("-")[0])
    published = parts[-2] if len(parts) >= 2 and parts[-2] else None
    return PortMapping(raw, target, published)


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def as_list(value: Any) -> list[Any]:
    """A list-valued key as a list, whatever a hand-edited file holds."""
    if isinstance(value, list):
        return value
    return [] if value is None or isinstance(value, dict) else [value]


def as_dict(value: Any) -> dict[str, str]:
    """``environment:``/``labels:`` in either mapping or ``KEY=value`` list form."""
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    result: dict[str, str] = {}
    for item in as_list(value):
        key, _, val = str(item).partition("=")
        result[key] = val
    return result


def image_name(image: str) -> str:
    """``docker.io/library/postgres:17-alpine@sha256:..`` -> ``postgres``."""
    name = image.split("@")[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":")[0].lower()


_HEALTH_URL = re.compile(r"https?://(?:localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\])(?::(\d+))?(/[^\s\"'\]|;&]*)?")


@dataclass
class Service:
    """What a service looks like, merged across the files."""

    name: str
    config: dict[str, Any]
    env: dict[str, str]

    @property
    def image(self) -> str:
        return interpolate(str(self.config.get("image") or ""), self.env)

    @property
    def image_name(self) -> str:
        return image_name(self.image) if self.image else ""

    @property
    def environment(self) -> dict[str, str]:
        return as_dict(self.config.get("environment"))

    @property
    def labels(self) -> dict[str, str]:
        return as_dict(self.config.get("labels"))

    @property
    def ports(self) -> list[PortMapping]:
        return [parse_port(interpolate(p, self.env) if isinstance(p, str) else p)
                for p in as_list(self.config.get("ports"))]

    @property
    def expose(self) -> list[int]:
        found = [_int(interpolate(str(p), self.env).split("/")[0].split("-")[0])
                 for p in as_list(self.config.get("expose"))]
        return [p for p in found if p]

    @property
    def healthcheck(self) -> dict[str, Any] | None:
        check = self.config.get("healthcheck")
        if not isinstance(check, dict) or check.get("disable"):
            return None
        test = check.get("test")
        if isinstance(test, list) and test and str(test[0]).upper() == "NONE":
            return None
        return check

    @property
    def healthcheck_text(self) -> str:
        check = self.healthcheck or {}
        test = check.get("test")
        return " ".join(map(str, test)) if isinstance(test, list) else str(test or "")

    @property
    def command_text(self) -> str:
        parts = []
        for key in ("entrypoint", "command"):
            value = self.config.get(key)
            parts.append(" ".join(map(str, value)) if isinstance(value, list) else str(value or ""))
        return " ".join(parts)

    def volume_targets(self) -> list[str]:
        targets = []
        for volume in as_list(self.config.get("volumes")):
            if isinstance(volume, dict):
                targets.append(str(volume.get("target", "")))
            else:
                bits = str(volume).split(":")
                targets.append(bits[1] if len(bits) > 1 else bits[0])
        return targets


def is_postgres(service: Service) -> str | None:
    """Why this service is a PostgreSQL server, or None."""
    name = service.image_name
    if name in POSTGRES_IMAGES or "postgres" in name:
        return f"image {service.image}"
    env = service.environment
    if any(k in env for k in ("POSTGRES_HOST", "DATABASE_URL", "PGHOST")):
        return None  # a client of PostgreSQL, not the server
    if not any(k.startswith("POSTGRES_") for k in env):
        return None
    signals = []
    if "pg_isready" in service.healthcheck_text:
        signals.append("a pg_isready healthcheck")
    if any(t.startswith("/var/lib/postgresql") for t in service.volume_targets()):
        signals.append("a volume on /var/lib/postgresql")
    if any(p.target == 5432 for p in service.ports) or 5432 in service.expose:
        signals.append("port 5432")
    if "postgres" in service.command_text:
        signals.append("a postgres command")
    if signals:
        return "POSTGRES_* variables and " + " and ".join(signals)
    return None


def proxy_kind(service: Service) -> str | None:
    """The proxy this service runs (Caddy, Traefik, ...), or None."""
    name = service.image_name
    if name in PROXY_IMAGES:
        return PROXY_IMAGES[name]
    if name.startswith("caddy"):
        return "Caddy"
    if name.startswith("traefik"):
        return "Traefik"
    published = {p.target for p in service.ports if p.published}
    if name in ("nginx", "openresty") and {80, 443} <= published:
        return "nginx"
    return None


def _label_values(labels: dict[str, str], pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return [v for k, v in labels.items() if regex.fullmatch(k)]


def web_port(service: Service) -> tuple[int, str] | None:
    """The port the app listens on and where that came from, or None for a non-web service."""
    labels, env = service.labels, service.environment
    for value in _label_values(labels, r"traefik\.http\.services\.[^.]+\.loadbalancer\.server\.port"):
        if _int(value):
            return int(value), "its Traefik label loadbalancer.server.port"
    if _int(env.get("VIRTUAL_PORT")):
        return int(env["VIRTUAL_PORT"]), "nginx-proxy's VIRTUAL_PORT"
    for value in _label_values(labels, r"caddy(_\d+)?\.reverse_proxy"):
        match = re.search(r"upstreams\s+(?:https?\s+)?(\d+)", value)
        if match:
            return int(match.group(1)), "its caddy-docker-proxy label"
    match = _HEALTH_URL.search(service.healthcheck_text)
    if match:
        return int(match.group(1) or 80), f"the healthcheck URL {match.group(0)}"
    targets = [p.target for p in service.ports if p.target]
    targets += [p for p in service.expose if p not in targets]
    if len(targets) == 1:
        source = "ports:" if any(p.target == targets[0] for p in service.ports) else "expose:"
        return targets[0], f"its {source} entry"
    for port in WEB_PORTS:
        if port in targets:
            return port, f"the conventional HTTP port among {', '.join(map(str, targets))}"
    command = service.command_text
    match = re.search(r"(?:--bind|-b)[= ]\S*:(\d+)|--port[= ](\d+)|(?:^|\s)-p\s+(\d+)", command)
    if match:
        return int(next(g for g in match.groups() if g)), "its command line"
    if _int(env.get("PORT")):
        return int(env["PORT"]), "its PORT variable"
    if targets:
        return targets[0], "its first port"
    if service.image_name in WEB_IMAGES:
        return WEB_IMAGES[service.image_name], f"the {service.image_name} image's default"
    for word, port in COMMAND_DEFAULTS:
        if word in command:
            return port, f"{word}'s default port"
    return None


def health_path(service: Service) -> tuple[str, str]:
    """The path a health probe should use and why."""
    match = _HEALTH_URL.search(service.healthcheck_text)
    if match and match.group(2):
        return match.group(2), "the path your healthcheck already probes"
    for value in _label_values(service.labels, r"traefik\.http\.services\.[^.]+\.loadbalancer\.healthcheck\.path"):
        if value.startswith("/"):
            return value, "its Traefik healthcheck label"
    return "/", ("no health endpoint found, so the probe asks for /; point health.path at a cheap "
                 "endpoint such as /healthz that also checks the database")


def route_hosts(service: Service) -> list[str]:
    """Host names an existing proxy routes to this service (raw, uninterpolated text)."""
    raw_labels = as_dict(service.config.get("labels"))
    hosts: list[str] = []
    for value in _label_values(raw_labels, r"traefik\.http\.routers\.[^.]+\.rule"):
        hosts += re.findall(r"Host\(\s*`([^`]+)`", value)
        for group in re.findall(r"Host\(([^)]*)\)", value):
            hosts += [h for h in re.findall(r"`([^`]+)`", group) if h not in hosts]
    virtual = as_dict(service.config.get("environment")).get("VIRTUAL_HOST")
    if virtual:
        hosts += [h.strip() for h in virtual.split(",") if h.strip()]
    for key in ("caddy", "caddy_0"):
        if raw_labels.get(key):
            hosts += [h.strip() for h in re.split(r"[,\s]+", raw_labels[key]) if h.strip()]
    unique: list[str] = []
    for host in hosts:
        if host not in unique:
            unique.append(host)
    return unique


def _caddy_placeholders(text: str) -> str:
    """Caddy's ``{$VAR:default}`` as Compose's ``${VAR:-default}``, so Compose interpolates it."""
    return re.sub(r"\{\$([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}",
                  lambda m: f"${{{m.group(1)}:-{m.group(2)}}}" if m.group(2) is not None else f"${{{m.group(1)}}}",
                  text)


def parse_caddyfile(text: str) -> dict[str, tuple[int, list[str]]]:
    """``upstream host -> (port, site addresses)`` from a Caddyfile's ``reverse_proxy`` lines.

    Enough for the common one-site-per-block files; anything unusual is simply not
    recognised (init then falls back to the other signals).
    """
    routes: dict[str, tuple[int, list[str]]] = {}
    depth, hosts = 0, None
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if depth == 0 and line.endswith("{"):
            head = line[:-1].strip()
            hosts = None if head.startswith("(") else [h for h in (
                _site_host(a) for a in re.split(r"[,\s]+", head) if a) if h]
            depth = 1
            continue
        depth = max(depth + line.count("{") - line.count("}"), 0)
        if depth == 0:
            hosts = None
            continue
        if hosts is not None and line.startswith("reverse_proxy"):
            for upstream in line.split()[1:]:
                match = re.fullmatch(r"(?:https?://)?([A-Za-z0-9_.-]+):(\d+)", upstream)
                if match and match.group(1) not in routes:
                    routes[match.group(1)] = (int(match.group(2)), hosts)
    return routes


def _site_host(address: str) -> str:
    address = _caddy_placeholders(address)
    address = re.sub(r"^https?://", "", address).split("/", 1)[0]
    if address.startswith("${"):
        return address
    return address.rsplit(":", 1)[0] if ":" in address else address


def caddyfile_routes(proxy: Service, base: Path) -> tuple[dict[str, tuple[int, list[str]]], str]:
    """The routes of the Caddyfile a Caddy service mounts, and its path as written."""
    for volume in as_list(proxy.config.get("volumes")):
        if isinstance(volume, dict):
            source, target = str(volume.get("source", "")), str(volume.get("target", ""))
        else:
            bits = str(volume).split(":")
            source, target = bits[0], (bits[1] if len(bits) > 1 else "")
        if not source.startswith((".", "/")):
            continue  # a named volume, not a file of the user's
        path = base / interpolate(source, proxy.env)
        if path.is_dir() and target.rstrip("/") == "/etc/caddy":
            path = path / "Caddyfile"
        if path.is_file() and (path.name == "Caddyfile" or target.endswith("Caddyfile")):
            try:
                return parse_caddyfile(path.read_text(errors="replace")), source
            except OSError:
                break
    return {}, ""


# ---- the plan ------------------------------------------------------------------


@dataclass
class Plan:
    """What init proposes: annotations per service and for the project, and why."""

    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    project: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # one line per choice
    warnings: list[str] = field(default_factory=list)  # what blocks atomic deploys, with the fix
    paths: list[Path] = field(default_factory=list)  # the files, to point warnings at a line

    @property
    def empty(self) -> bool:
        return not self.services and not self.project

    def where(self, *key_path: str) -> str | None:
        """``file:line`` of a key, in the last file that sets it."""
        from ..config import locate

        return locate(self.paths, list(key_path))

    def note(self, subject: str, text: str) -> None:
        self.notes.append(f"{subject}: {text}")

    def warn(self, subject: str, problem: str, fix: str, where: str | None = None) -> None:
        self.warnings.append(f"{subject}: {where + ': ' if where else ''}{problem}\n  fix: {fix}")


def plan_project(files: list[ComposeFile], env: dict[str, str]) -> Plan:
    """Decide the annotations for a project made of these files (pure: nothing is written)."""
    plan = Plan(paths=[f.path for f in files])
    merged = merge_services(files)
    if not merged:
        names = ", ".join(str(f.path) for f in files)
        raise InitError(f"no services found in {names}",
                        hint="init annotates the services of an existing compose file.")
    services = {name: Service(name, config, env) for name, config in merged.items()}
    top_level: dict[str, Any] = {}
    for file in files:
        value = file.data.get("x-atomic")
        if isinstance(value, dict):
            top_level.update(value)

    proxies = {name: kind for name, s in services.items() if (kind := proxy_kind(s))}
    base = files[0].path.parent
    from_proxy: dict[str, tuple[int, list[str], str]] = {}
    for name in proxies:
        routes, source = caddyfile_routes(services[name], base)
        for upstream, (port, hosts) in routes.items():
            target = upstream if upstream in services else next(
                (n for n, s in services.items() if s.config.get("container_name") == upstream), None)
            if target:
                from_proxy.setdefault(target, (port, hosts, f"{name}'s Caddyfile {source}"))
    databases = {name: why for name, s in services.items()
                 if name not in proxies and (why := is_postgres(s))}
    routed = [name for name, s in services.items() if s.config.get("x-atomic", {}) and
              isinstance(s.config.get("x-atomic"), dict) and "route" in s.config["x-atomic"]]

    for name, service in services.items():
        if "x-atomic" in service.config:
            plan.note(name, "already has x-atomic; left as it is")
            continue
        if name in proxies:
            plan.note(name, f"{proxies[name]} reverse proxy; see the proxy line below")
            continue
        if name in databases:
            _plan_database(plan, service, databases[name])
            continue
        if service.image_name in DATASTORES:
            extra = " (backups cover PostgreSQL only)" if service.image_name in ("mysql", "mariadb") else ""
            plan.note(name, f"{service.image_name} keeps its data across deploys, so it is not "
                            f"replaced by compose-atomic; left to plain `compose up`{extra}")
            continue
        if _plan_web(plan, service, databases, from_proxy.get(name)):
            routed.append(name)

    _plan_proxy(plan, services, proxies, routed, top_level)
    return plan


def _plan_database(plan: Plan, service: Service, why: str) -> None:
    plan.services[service.name] = {"backup": _copy(DEFAULT_BACKUP)}
    keep = DEFAULT_BACKUP["keep"]
    plan.note(service.name, f"PostgreSQL ({why}): backup every day at 03:00 (the sidecar's TZ), "
                            f"keep the last {keep['last']} plus {keep['daily']} daily, {keep['weekly']} "
                            f"weekly and {keep['monthly']} monthly, each verified by a test restore")


def _plan_web(plan: Plan, service: Service, databases: dict[str, str],
              proxied: tuple[int, list[str], str] | None) -> bool:
    name = service.name
    found = (proxied[0], proxied[2]) if proxied else web_port(service)
    if found is None:
        plan.note(name, "no port, no HTTP healthcheck and no known web image: a worker or job, "
                        "left to plain `compose up`")
        return False
    if service.config.get("network_mode") == "host":
        plan.warn(name, "network_mode: host; the proxy reaches apps over a compose network, so "
                        "this service cannot get a route",
                  "remove network_mode: host and re-run init", plan.where("services", name, "network_mode"))
        return False
    port, source = found
    path, path_why = health_path(service)
    route: dict[str, Any] = {"port": port}
    hosts = route_hosts(service) or (proxied[1] if proxied else [])
    if hosts:
        route["host"] = hosts[0] if len(hosts) == 1 else hosts
    plan.services[name] = {"route": route, "health": {"path": path},
                           "monitor": DEFAULT_MONITOR, "drain": DEFAULT_DRAIN}
    plan.note(name, f"web app on port {port} (from {source}): route.port {port}")
    if hosts:
        plan.note(name, f"route.host {', '.join(hosts)}, the host name(s) your proxy already routes here")
    plan.note(name, f"health.path {path}: {path_why}")
    plan.note(name, f"monitor {DEFAULT_MONITOR}: watch the new version that long after the switch and "
                    f"roll back if it fails; drain {DEFAULT_DRAIN}: the old one gets up to that long to "
                    "finish its requests")
    for dependency in _depends_on(service):
        if dependency in databases:
            plan.note(name, f"uses PostgreSQL service {dependency}: to run migrations guarded by a "
                            f"snapshot, add x-atomic.migrate (docs/configuration.md)")
            break
    _warn_blockers(plan, service, port)
    return True


def _depends_on(service: Service) -> list[str]:
    value = service.config.get("depends_on") or []
    return [str(v) for v in value] if isinstance(value, (list, dict)) else []


def _warn_blockers(plan: Plan, service: Service, port: int) -> None:
    name = service.name
    published = [p for p in service.ports if p.published]
    if published:
        raw = ", ".join(f'"{p.raw}"' for p in published)
        plan.warn(name, f"ports {raw} publishes the app on the host: during a replacement the old and "
                        "the new container both need that host port, so the new one cannot start",
                  f"remove ports: (the proxy publishes 80 and 443 and reaches the app on {port}); "
                  f"use `expose: [\"{port}\"]` to document the port",
                  plan.where("services", name, "ports"))
    if service.config.get("container_name"):
        plan.warn(name, f"container_name: {service.config['container_name']} allows only one "
                        "container, so the new version cannot start beside the old one",
                  f"remove container_name (Compose names the containers <project>-{name}-N)",
                  plan.where("services", name, "container_name"))
    if service.healthcheck is None:
        plan.warn(name, "no Docker healthcheck: readiness rests on the HTTP probe alone and "
                        "`docker compose ps` cannot show it",
                  f'add healthcheck: {{test: ["CMD", "wget", "-qO-", "http://localhost:{port}'
                  f'{(plan.services[name]["health"]["path"])}"], interval: 5s, retries: 3}} '
                  "(or curl -fsS, whichever the image has)")


def _plan_proxy(plan: Plan, services: dict[str, Service], proxies: dict[str, str],
                routed: list[str], top_level: dict[str, Any]) -> None:
    if "proxy" in top_level:
        plan.note("proxy", "x-atomic.proxy is already set; left as it is")
        return
    if not routed:
        plan.note("proxy", "no web service to route, so no x-atomic.proxy")
        return
    if not proxies:
        plan.project["proxy"] = {"ports": list(DEFAULT_PROXY_PORTS)}
        plan.note("proxy", "no reverse proxy found: x-atomic.proxy runs a Caddy that compose-atomic "
                           "drives, on ports 80 and 443, and switches traffic in one step")
        return
    name, kind = next(iter(proxies.items()))
    service = services[name]
    proxy: dict[str, Any] = {}
    if kind == "Caddy" and service.image_name == "caddy":
        proxy["image"] = str(service.config.get("image"))
    ports = [p.raw for p in service.ports if p.published] or list(DEFAULT_PROXY_PORTS)
    proxy["ports"] = ports
    plan.project["proxy"] = proxy
    reuse = " with the same image" if "image" in proxy else ""
    plan.note("proxy", f"{kind} found in service {name}: x-atomic.proxy takes over its ports "
                       f"({', '.join(ports)}){reuse}, because compose-atomic must drive the switch itself")
    plan.warn(name, f"{kind} and compose-atomic's proxy cannot both publish {', '.join(ports)}",
              f"move its host names and TLS settings to x-atomic.route.host, then remove service "
              f"{name} (or give it other ports) before `compose-atomic up`",
              plan.where("services", name, "ports"))


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
