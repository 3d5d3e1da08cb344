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

from .. import images
from ..errors import InitError
from ..settings import DEFAULTS

PROXY_IMAGES, PROXY_HELPERS, DATASTORES = images.PROXY_IMAGES, images.PROXY_HELPERS, images.DATASTORES
#: App servers recognised in `command:`, with the port they listen on by default.
COMMAND_DEFAULTS = (("gunicorn", 8000), ("uvicorn", 8000), ("daphne", 8000), ("hypercorn", 8000),
                    ("runserver", 8000), ("puma", 3000), ("rails s", 3000), ("next start", 3000),
                    ("flask run", 5000))
#: Words in `command:`/`entrypoint:` that make a service a worker, whatever its image serves.
WORKER_WORDS = re.compile(r"(?<![\w-])(worker(?::\w+)?|sidekiq|celery|rq|queue:work|horizon|beat|"
                          r"scheduler|cron(?:\.sh)?|consumer)(?![\w-])", re.IGNORECASE)
#: Container ports that are conventionally HTTP, in order of preference.
WEB_PORTS = (80, 8080, 8000, 3000, 5000, 4000, 8888, 9000)
#: The app's own variables that commonly hold its public URL (besides the image table's).
BASE_URL_VARS = ("BASE_URL", "APP_URL", "ROOT_URL", "SITE_URL", "PUBLIC_URL", "SERVER_URL", "EXTERNAL_URL",
                 "URL", "url")

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
    protocol: str = "tcp"


def parse_port(entry: Any) -> PortMapping:
    """One ``ports:`` entry, short (``127.0.0.1:8000:8000/tcp``) or long syntax."""
    if isinstance(entry, dict):
        target = entry.get("target")
        published = entry.get("published")
        raw = f"{published}:{target}" if published else str(target)
        return PortMapping(raw, _int(target), str(published) if published not in (None, "") else None,
                           str(entry.get("protocol") or "tcp").lower())
    raw = str(entry)
    spec, _, protocol = raw.partition("/")
    if spec.startswith("["):  # [::1]:8000:8000
        spec = spec.split("]:", 1)[-1]
    parts = spec.rsplit(":", 2) if spec.count(":") >= 2 else spec.split(":")
    target = _int(parts[-1].split("-")[0])
    published = parts[-2] if len(parts) >= 2 and parts[-2] else None
    return PortMapping(raw, target, published, (protocol or "tcp").lower())


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


def raw_env(value: Any) -> dict[str, str | None]:
    """``environment:`` as written: None for a pass-through entry (``- NAME`` or ``NAME:``)."""
    if isinstance(value, dict):
        return {str(k): None if v is None else str(v) for k, v in value.items()}
    result: dict[str, str | None] = {}
    for item in as_list(value):
        key, sep, val = str(item).partition("=")
        result[key] = val if sep else None
    return result


def image_name(image: str) -> str:
    """``docker.io/library/postgres:17-alpine@sha256:..`` -> ``postgres``."""
    name = image.split("@")[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":")[0].lower()


_HEALTH_URL = re.compile(r"https?://(?:localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\])(?::(\d+))?(/[^\s\"'\]|;&)]*)?")


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
    def repository(self) -> str:
        return images.repository(self.image) if self.image else ""

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
    def tcp_ports(self) -> list[PortMapping]:
        """Published or not, TCP only, one entry per container port."""
        seen: set[int] = set()
        found = []
        for port in self.ports:
            if port.protocol == "tcp" and port.target and port.target not in seen:
                seen.add(port.target)
                found.append(port)
        return found

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
        return " ".join(parts).strip()

    def volume_specs(self) -> list[tuple[str, str]]:
        """(source, target) of each volume, as written."""
        specs = []
        for volume in as_list(self.config.get("volumes")):
            if isinstance(volume, dict):
                specs.append((str(volume.get("source", "")), str(volume.get("target", ""))))
            else:
                bits = str(volume).split(":")
                specs.append((bits[0], bits[1]) if len(bits) > 1 else ("", bits[0]))
        return specs

    def volume_targets(self) -> list[str]:
        return [target for _, target in self.volume_specs()]


def is_postgres(service: Service) -> str | None:
    """Why this service is a PostgreSQL server, or None.

    The image must be one of images.POSTGRES_IMAGES, exactly (never a substring); an image
    no table knows, or one built from a Dockerfile, counts when its POSTGRES_* variables and
    a server sign (pg_isready, the data directory, a postgres command; port 5432 only for a
    built one) agree, and it is not a client (POSTGRES_HOST, DATABASE_URL, PGHOST).
    """
    known = images.postgres_image(service.image)
    if known:
        return f"image {service.image}, {known}"
    repo = service.repository
    if repo and (repo in images.WEB_IMAGES or repo in images.TCP_IMAGES or image_name(repo) in DATASTORES
                 or repo in PROXY_IMAGES or repo in PROXY_HELPERS):
        return None
    env = service.environment
    if any(k in env for k in ("POSTGRES_HOST", "DATABASE_URL", "PGHOST")):
        return None  # a client of PostgreSQL, not the server
    if not any(k.startswith("POSTGRES_") for k in env):
        return None
    strong, weak = [], []
    if "pg_isready" in service.healthcheck_text:
        strong.append("a pg_isready healthcheck")
    if any(t.startswith("/var/lib/postgresql") for t in service.volume_targets()):
        strong.append("a volume on /var/lib/postgresql")
    if re.search(r"(?:^|\s)postgres(?:\s|$)", service.command_text):
        strong.append("a postgres command")
    if any(p.target == 5432 for p in service.ports) or 5432 in service.expose:
        weak.append("port 5432")
    if not strong and not (weak and (service.config.get("build") or not repo)):
        return None  # an image no table knows needs a server sign, not just a port
    what = f"image {service.image}, not in the table of PostgreSQL images, with " if repo else ""
    return what + "POSTGRES_* variables and " + " and ".join(strong + weak)


def proxy_kind(service: Service) -> str | None:
    """The proxy this service runs (Caddy, Traefik, nginx-proxy, ...), or None."""
    repo = service.repository
    if repo in PROXY_IMAGES:
        return PROXY_IMAGES[repo]
    name = service.image_name
    if name.startswith("caddy"):
        return "Caddy"
    if name.startswith("traefik"):
        return "Traefik"
    labels = service.labels
    if any(k.startswith("com.github.jrcs.letsencrypt_nginx_proxy_companion.nginx_proxy") for k in labels) \
            or any(t in ("/tmp/docker.sock", "/tmp/docker.sock:ro") and s.endswith("docker.sock")
                   for s, t in service.volume_specs()):
        return "nginx-proxy"
    published = {p.target for p in service.tcp_ports if p.published}
    if name in ("nginx", "openresty") and {80, 443} <= published:
        return "nginx"
    return None


def _label_values(labels: dict[str, str], pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return [v for k, v in labels.items() if regex.fullmatch(k)]


def worker_reason(service: Service) -> str | None:
    """Why this service is a worker or a one-off job rather than a server, or None."""
    command = service.command_text
    match = WORKER_WORDS.search(command)
    if match:
        return f"a worker (its command runs {match.group(1)})"
    restart = str(service.config.get("restart", "")).lower()
    if command and restart in ("no", "false") and not service.ports:
        return "a one-off job (restart: no, with its own command)"
    return None


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
    known = images.web_image(service.image)
    targets = [p.target for p in service.tcp_ports if p.target not in images.TCP_PORTS]
    targets += [p for p in service.expose if p not in targets and p not in images.TCP_PORTS]
    if known and (known.port in targets or not targets):
        return known.port, f"the {known.name} image's web port"
    match = _HEALTH_URL.search(service.healthcheck_text)
    if match:
        return int(match.group(1) or 80), f"the healthcheck URL {match.group(0)}"
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
    known = images.web_image(service.image)
    if known and known.health_status:
        return known.health or "/", known.health_note or f"what {known.name} answers"
    if known and known.health:
        return known.health, f"the health endpoint {known.name} documents"
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


def proxy_label(service: Service) -> str | None:
    """The proxy label or variable that routes outside traffic to this service, or None."""
    labels = service.labels
    if str(labels.get("traefik.enable", "")).lower() == "true" or \
            _label_values(labels, r"traefik\.http\.routers\.[^.]+\.rule"):
        return "its Traefik labels route to it"
    if any(re.fullmatch(r"caddy(_\d+)?(\..*)?", k) for k in labels):
        return "its caddy-docker-proxy labels route to it"
    if "VIRTUAL_HOST" in service.environment:
        return "nginx-proxy's VIRTUAL_HOST marks it"
    return None


_URL_HOST = re.compile(r"^[a-z][a-z0-9+.-]*://(?:[^@/]*@)?(\[[^\]]+\]|[^/:?#]+)", re.IGNORECASE)


def base_url_host(service: Service) -> tuple[str | None, str | None]:
    """(host, variable) from the app's own public-URL variable; host None when it is unknown.

    ``url: https://${DOMAIN}`` gives ``${DOMAIN}`` (Compose interpolates it); a
    variable that holds the whole URL gives its value from ``.env`` when set there.
    """
    known = images.web_image(service.image)
    written = raw_env(service.config.get("environment"))
    names = [*(known.base_url if known else ()), *BASE_URL_VARS]
    for name in names:
        if name not in written:
            continue
        value = written[name]
        if value is None:  # pass-through: the value comes from the environment
            value = service.env.get(name, "")
        whole = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)(?:[:?+-][^}]*)?\}?", value.strip())
        if whole:
            value = service.env.get(whole.group(1), "")
        value = _caddy_placeholders(value.strip().strip("'\""))
        scheme = re.match(r"^[a-z][a-z0-9+.-]*://", value, re.IGNORECASE)
        rest = value[scheme.end():] if scheme else ""
        if rest.startswith("${") and "}" in rest:
            return rest[: rest.index("}") + 1], name  # https://${DOMAIN}: Compose fills it in
        match = _URL_HOST.match(value)
        if not match:
            return None, name
        host = match.group(1)
        if host.lower() in ("localhost", "127.0.0.1", "0.0.0.0", "[::1]") or not host:
            return None, name
        return host, name
    return None, None


def _caddy_placeholders(text: str) -> str:
    """Caddy's ``{$VAR:default}`` as Compose's ``${VAR:-default}``, so Compose interpolates it."""
    return re.sub(r"\{\$([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}",
                  lambda m: f"${{{m.group(1)}:-{m.group(2)}}}" if m.group(2) is not None else f"${{{m.group(1)}}}",
                  text)


def parse_caddyfile(text: str) -> dict[str, tuple[int, list[str]]]:
    """``upstream host -> (port, site addresses)`` from a Caddyfile's ``reverse_proxy`` lines.

    Enough for the common one-site-per-block files and for the brace-less form of a
    file with a single site (its first line is the address, the rest its directives);
    anything unusual is simply not recognised (init then falls back to the other signals).
    """
    routes: dict[str, tuple[int, list[str]]] = {}
    lines = [raw.split(" #", 1)[0].strip() for raw in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if lines and not any(line.endswith("{") for line in lines) \
            and not lines[0].startswith(("reverse_proxy", "import")):
        lines = [lines[0] + " {", *lines[1:], "}"]  # the single-site form, without braces
    depth, hosts = 0, None
    for line in lines:
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


def parse_nginx_conf(text: str) -> dict[str, tuple[int, list[str]]]:
    """``upstream host -> (port, server names)`` from an nginx config's ``proxy_pass`` lines."""
    upstreams: dict[str, tuple[str, int]] = {}
    for name, body in re.findall(r"upstream\s+([\w.-]+)\s*\{([^}]*)\}", text):
        match = re.search(r"server\s+([\w.-]+):(\d+)", body)
        if match:
            upstreams[name] = (match.group(1), int(match.group(2)))
    routes: dict[str, tuple[int, list[str]]] = {}
    for block in re.split(r"(?=\bserver\s*\{)", text):
        names = [h for h in re.findall(r"server_name\s+([^;]+);", block)[:1] for h in h.split()
                 if h not in ("_", "localhost")]
        for host, port in re.findall(r"proxy_pass\s+https?://([\w.-]+)(?::(\d+))?", block):
            if host in upstreams:
                host, number = upstreams[host]
            else:
                number = int(port or 80)
            routes.setdefault(host, (number, names))
    return routes


def proxy_routes(proxy: Service, base: Path) -> tuple[dict[str, tuple[int, list[str]]], str]:
    """The routes of the Caddyfile or nginx config a proxy service mounts, and its path as written.

    Sources are interpolated first (``$PWD/Caddyfile``, ``${CONF_DIR}/nginx.conf``).
    """
    env = dict(proxy.env)
    env.setdefault("PWD", str(base))
    for source, target in proxy.volume_specs():
        written = source
        source = interpolate(source, env)
        if not source.startswith((".", "/", "~")):
            continue  # a named volume, not a file of the user's
        path = Path(os.path.expanduser(source))
        path = path if path.is_absolute() else base / path
        if path.is_dir() and target.rstrip("/") == "/etc/caddy":
            path = path / "Caddyfile"
        try:
            if path.is_file() and (path.name == "Caddyfile" or target.endswith("Caddyfile")):
                return parse_caddyfile(path.read_text(errors="replace")), written
            if path.is_file() and (path.suffix == ".conf" or target.endswith(".conf")):
                found = parse_nginx_conf(path.read_text(errors="replace"))
                if found:
                    return found, written
        except OSError:
            continue
    return {}, ""




# ---- images on this machine ------------------------------------------------------


@dataclass(frozen=True)
class ImageFacts:
    """What ``docker image inspect`` tells about an image present on this machine."""

    healthcheck: bool
    ports: tuple[int, ...] = ()


def image_facts(config: dict[str, Any]) -> ImageFacts:
    """ImageFacts from an image's ``.Config`` (``docker image inspect``)."""
    check = (config or {}).get("Healthcheck") or {}
    test = check.get("Test") or []
    healthy = bool(test) and str(test[0]).upper() != "NONE"
    ports = tuple(sorted(p for p in (_int(str(k).split("/")[0]) for k in (config or {}).get("ExposedPorts") or {})
                         if p))
    return ImageFacts(healthy, ports)


# ---- the plan ------------------------------------------------------------------


@dataclass
class Plan:
    """What init proposes: annotations per service and for the project, and why."""

    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    project: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # one line per choice
    warnings: list[str] = field(default_factory=list)  # what blocks atomic deploys, with the fix
    paths: list[Path] = field(default_factory=list)  # the files, to point warnings at a line
    routes: dict[str, str] = field(default_factory=dict)  # service -> why it is an entry point
    backups: dict[str, str] = field(default_factory=dict)  # service -> where its password comes from

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

    def order(self, services: list[str]) -> None:
        """Notes and warnings grouped by service, in file order; project-wide lines last."""
        rank = {name: i for i, name in enumerate(services)}

        def key(line: str) -> int:
            return rank.get(line.split(": ", 1)[0], len(rank))

        self.notes.sort(key=key)
        self.warnings.sort(key=key)


#: How strongly a service looks like the one the outside world reaches.
RANK_PROXY, RANK_LABEL, RANK_PUBLISHED, RANK_IMAGE = 5, 4, 3, 2


@dataclass
class Candidate:
    """A service that looks like an entry point, and why."""

    service: Service
    rank: int
    evidence: str
    port: int
    port_source: str
    hosts: list[str]
    host_source: str | None
    order: int
    penalty: int = 0
    host_hint: str | None = None  # a base-URL variable whose host is not known here


def plan_project(files: list[ComposeFile], env: dict[str, str],
                 image_info: dict[str, ImageFacts | None] | None = None) -> Plan:
    """Decide the annotations for a project made of these files (pure: nothing is written).

    ``image_info`` maps an image reference to what ``docker image inspect`` says of it
    (None: not on this machine); without it, what images define is "unknown".
    """
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
        routes, source = proxy_routes(services[name], base)
        for upstream, (port, hosts) in routes.items():
            target = upstream if upstream in services else next(
                (n for n, s in services.items() if s.config.get("container_name") == upstream), None)
            if target and target not in proxies:
                from_proxy.setdefault(target, (port, hosts, f"{name}'s {Path(source).name} {source}"))
    databases = {name: why for name, s in services.items()
                 if name not in proxies and (why := is_postgres(s))}
    routed = [name for name, s in services.items() if isinstance(s.config.get("x-atomic"), dict)
              and "route" in s.config["x-atomic"]]

    candidates: list[Candidate] = []
    for order, (name, service) in enumerate(services.items()):
        if "x-atomic" in service.config:
            plan.note(name, "already has x-atomic; left as it is")
            continue
        if name in proxies:
            plan.note(name, f"{proxies[name]} reverse proxy; see the proxy line below")
            continue
        if service.repository in PROXY_HELPERS:
            plan.note(name, f"{PROXY_HELPERS[service.repository]}: serves the proxy, not visitors; no route")
            continue
        if name in databases:
            _plan_database(plan, service, databases[name], base)
            continue
        if service.image_name in DATASTORES:
            extra = " (backups cover PostgreSQL only)" if service.image_name in ("mysql", "mariadb") else ""
            plan.note(name, f"{service.image_name} keeps its data across deploys, so it is not "
                            f"replaced by compose-atomic; left to plain `compose up`{extra}")
            continue
        found = _assess(plan, service, from_proxy.get(name), order)
        if found:
            candidates.append(found)

    existing = {name: services[name].config["x-atomic"]["route"] for name in routed}
    for candidate in _choose_routes(plan, candidates, existing):
        _plan_web(plan, candidate, databases, image_info)
        routed.append(candidate.service.name)

    _plan_proxy(plan, services, proxies, routed, top_level)
    _plan_logging(plan, services)
    plan.order(list(services))
    return plan


def _assess(plan: Plan, service: Service, proxied: tuple[int, list[str], str] | None,
            order: int) -> Candidate | None:
    """The service as a candidate entry point, or None with one note saying why it is not one."""
    name = service.name
    known = images.web_image(service.image)
    if proxied:
        port, hosts, source = proxied
        return Candidate(service, RANK_PROXY, f"{source} sends traffic to it", port, source, list(hosts),
                         "the host name(s) your proxy already routes here" if hosts else None, order)
    label = proxy_label(service)
    worker = worker_reason(service)
    if worker and not label:
        serves = f", although the {known.name} image serves HTTP on {known.port}" if known else ""
        plan.note(name, f"{worker}{serves}: no route, left to plain `compose up`")
        return None
    tcp_image = images.TCP_IMAGES.get(service.repository)
    if tcp_image:
        kept = ", ".join(p.raw for p in service.ports)
        plan.note(name, f"{tcp_image}: TCP, not HTTP, so no route"
                        + (f"; its ports ({kept}) stay as they are" if kept else ""))
        return None
    published = [p for p in service.tcp_ports if p.published]
    web_published = [p for p in published if p.target not in images.TCP_PORTS]
    udp = [p for p in service.ports if p.protocol == "udp"]
    found = web_port(service)
    rank, evidence = 0, ""
    if label:
        rank, evidence = RANK_LABEL, label
    elif web_published:
        shown = next((p for p in web_published if found and p.target == found[0]), web_published[0])
        rank, evidence = RANK_PUBLISHED, f'it publishes "{shown.raw}" on the host'
    elif known and known.entry:
        rank, evidence = RANK_IMAGE, f"the {known.name} image is the app people open"
    if rank == 0:
        if published or udp:
            what = ", ".join(p.raw + (f" ({images.TCP_PORTS[p.target]})" if p.target in images.TCP_PORTS
                                      else "") for p in [*published, *udp])
            plan.note(name, f"only TCP/UDP ports ({what}), no HTTP: no route; its ports stay")
        elif known and not known.entry:
            plan.note(name, f"{known.name}: only other services call it, so no route")
        elif found:
            plan.note(name, f"serves HTTP on {found[0]} (from {found[1]}) to other services only: no "
                            "published port, proxy label or proxy route reaches it, so no route")
        else:
            plan.note(name, "no port, no HTTP healthcheck and no known web image: a worker or job, "
                            "left to plain `compose up`")
        return None
    if found is None:
        plan.note(name, f"looks like an entry point ({evidence}) but no port was found: add "
                        "x-atomic.route.port by hand")
        return None
    if service.config.get("network_mode") == "host":
        plan.warn(name, "network_mode: host; the proxy reaches apps over a compose network, so "
                        "this service cannot get a route",
                  "remove network_mode: host and re-run init", plan.where("services", name, "network_mode"))
        return None
    hosts = route_hosts(service)
    return Candidate(service, rank, evidence, found[0], found[1], hosts,
                     "the host name(s) your proxy already routes here" if hosts else None, order)


def _choose_routes(plan: Plan, candidates: list[Candidate],
                   existing: dict[str, Any] | None = None) -> list[Candidate]:
    """The entry points: the strongest candidate for each host; one catch-all at most.

    Two routes that match the same host and path would leave one service
    unreachable (and `check` rejects them), so the others get a note instead.
    """
    for candidate in candidates:
        if not candidate.hosts:
            host, variable = base_url_host(candidate.service)
            if host:
                candidate.hosts, candidate.host_source = [host], f"the host of its {variable}"
            elif variable:
                candidate.host_hint = variable
        twins = [o for o in candidates if o is not candidate and o.service.image
                 and o.service.image == candidate.service.image]
        if twins and candidate.service.config.get("command") and \
                any(not o.service.config.get("command") and o.rank >= candidate.rank for o in twins):
            candidate.penalty = 1  # the same image with its own command: a second instance or a job
    taken: dict[str, str] = {}
    for name, route in (existing or {}).items():  # routes the files already have
        if isinstance(route, dict) and route.get("path") in (None, "", "/"):
            host = route.get("host")
            for key in ([host] if isinstance(host, str) else list(host or [])) or ["*"]:
                taken.setdefault(str(key).lower(), name)
    chosen = []
    def strength(candidate: Candidate) -> tuple[int, int, int, int]:
        known = images.web_image(candidate.service.image)
        return -candidate.rank, candidate.penalty, 0 if known and known.entry else 1, candidate.order

    for candidate in sorted(candidates, key=strength):
        keys = [h.lower() for h in candidate.hosts] or ["*"]
        clash = next((taken[k] for k in keys if k in taken), None)
        if clash:
            what = "every request without a host name" if keys == ["*"] else "that host name"
            plan.note(candidate.service.name,
                      f"could be an entry point ({candidate.evidence}), but {clash} already takes {what}: "
                      "no route. To route it too, give it x-atomic.route with a route.host of its own")
            continue
        for key in keys:
            taken[key] = candidate.service.name
        chosen.append(candidate)
    return sorted(chosen, key=lambda c: c.order)


def password_source(service: Service, base: Path) -> tuple[str, bool]:
    """Where the backup sidecar's password comes from, and whether it is known to exist."""
    written = raw_env(service.config.get("environment"))
    recommend = ("; a Docker secret is better: POSTGRES_PASSWORD_FILE: /run/secrets/db_password with "
                 "secrets: {db_password: {file: ./db_password.txt}}")
    in_file = ("`backup generate` gives the sidecar the password in a 0600 file in the state "
               "directory (never argv or its environment)")
    if written.get("POSTGRES_PASSWORD_FILE"):
        return "POSTGRES_PASSWORD_FILE: the sidecar reuses that Docker secret", True
    if str(written.get("POSTGRES_HOST_AUTH_METHOD") or "").lower() == "trust":
        return "none needed (POSTGRES_HOST_AUTH_METHOD=trust)", True
    if "POSTGRES_PASSWORD" in written:
        value = written["POSTGRES_PASSWORD"]
        if value is None:
            return f"POSTGRES_PASSWORD is passed through from your shell or .env; {in_file}{recommend}", True
        if re.fullmatch(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::?[-?][^}]*)?\}?", value.strip()):
            return (f"POSTGRES_PASSWORD is {value.strip()}: `backup generate` hands it to the sidecar as a "
                    "Docker secret read from the environment"), True
        if not value.strip():
            return "POSTGRES_PASSWORD is empty", False
        return f"POSTGRES_PASSWORD is written in the compose file; {in_file}{recommend}", True
    for entry in as_list(service.config.get("env_file")):
        path = str(entry.get("path", "")) if isinstance(entry, dict) else str(entry)
        file = base / interpolate(path, service.env)
        try:
            text = file.read_text(errors="replace") if file.is_file() else ""
        except OSError:
            text = ""
        match = re.search(r"^\s*(?:export\s+)?POSTGRES_PASSWORD\s*=(.*)$", text, re.MULTILINE)
        if match and not match.group(1).strip().strip("'\""):
            return f"POSTGRES_PASSWORD is empty in env_file {path}", False
        if match:
            return f"POSTGRES_PASSWORD comes from env_file {path}; {in_file}{recommend}", True
        if not file.is_file():
            return (f"env_file {path} is not here, so init cannot see a POSTGRES_PASSWORD in it; if it holds "
                    f"one, {in_file}{recommend}"), True
    return "none found", False


def _plan_database(plan: Plan, service: Service, why: str, base: Path) -> None:
    plan.services[service.name] = {"backup": _copy(DEFAULT_BACKUP)}
    keep = DEFAULT_BACKUP["keep"]
    plan.note(service.name, f"PostgreSQL ({why}): backup every day at 03:00 (the sidecar's TZ), "
                            f"keep the last {keep['last']} plus {keep['daily']} daily, {keep['weekly']} "
                            f"weekly and {keep['monthly']} monthly, each verified by a test restore")
    how, ok = password_source(service, base)
    plan.backups[service.name] = how
    if ok:
        plan.note(service.name, f"backup password: {how}")
    else:
        plan.warn(service.name, f"backup password: {how}; PostgreSQL needs one and the backup sidecar "
                                "cannot log in without it",
                  "set POSTGRES_PASSWORD_FILE to a Docker secret (recommended), or POSTGRES_PASSWORD: "
                  "${DB_PASSWORD} with DB_PASSWORD in .env", plan.where("services", service.name, "environment"))


def _plan_web(plan: Plan, candidate: Candidate, databases: dict[str, str],
              image_info: dict[str, ImageFacts | None] | None) -> None:
    service, port = candidate.service, candidate.port
    name = service.name
    path, path_why = health_path(service)
    route: dict[str, Any] = {"port": port}
    hosts = candidate.hosts
    if hosts:
        route["host"] = hosts[0] if len(hosts) == 1 else hosts
    health: dict[str, Any] = {"path": path}
    known = images.web_image(service.image)
    if known and known.health_status and path == (known.health or "/"):
        health["status"] = known.health_status
    plan.services[name] = {"route": route, "health": health,
                           "monitor": DEFAULT_MONITOR, "drain": DEFAULT_DRAIN}
    plan.routes[name] = candidate.evidence
    plan.note(name, f"web app on port {port} (from {candidate.port_source}), the entry point because "
                    f"{candidate.evidence}: route.port {port}")
    if hosts:
        plan.note(name, f"route.host {', '.join(hosts)}: {candidate.host_source}")
    elif candidate.host_hint:
        plan.note(name, f"route.host not set: set it to the host name in {candidate.host_hint} (the proxy "
                        "then serves it over HTTPS); without it the route takes every request on plain HTTP")
    shown = f"health.path {path}" + (f", health.status {health['status']}" if "status" in health else "")
    plan.note(name, f"{shown}: {path_why}")
    plan.note(name, f"monitor {DEFAULT_MONITOR}: watch the new version that long after the switch and "
                    f"roll back if it fails; drain {DEFAULT_DRAIN}: the old one gets up to that long to "
                    "finish its requests")
    if "restart" not in service.config and not (service.config.get("deploy") or {}).get("restart_policy"):
        plan.note(name, "no restart: policy, so nothing starts it again after a crash or a reboot; add "
                        "restart: unless-stopped")
    for dependency in _depends_on(service):
        if dependency in databases:
            plan.note(name, f"uses PostgreSQL service {dependency}: to run migrations guarded by a "
                            f"snapshot, add x-atomic.migrate (docs/configuration.md)")
            break
    _warn_blockers(plan, service, port)
    _docker_healthcheck(plan, service, port, path, image_info)


def _depends_on(service: Service) -> list[str]:
    value = service.config.get("depends_on") or []
    return [str(v) for v in value] if isinstance(value, (list, dict)) else []


def _warn_blockers(plan: Plan, service: Service, port: int) -> None:
    name = service.name
    published = [p for p in service.ports if p.published]
    routed = [p for p in published if p.target == port and p.protocol == "tcp"]
    udp_numbers = {p.target for p in published if p.protocol == "udp"}
    others = [p for p in published if p not in routed]
    if routed:
        raw = ", ".join(f'"{p.raw}"' for p in routed)
        plan.warn(name, f"ports {raw} publishes the app on the host: during a replacement the old and "
                        "the new container both need that host port, so the new one cannot start",
                  f"remove it (the proxy publishes 80 and 443 and reaches the app on {port}); "
                  f"use `expose: [\"{port}\"]` to document the port",
                  plan.where("services", name, "ports"))
    if others:
        must = [p for p in others if p.protocol == "udp" or p.target in images.TCP_PORTS
                or p.target in udp_numbers]
        maybe = [p for p in others if p not in must]
        parts = []
        if must:
            named = [repr(p.raw) + (f" ({images.TCP_PORTS[p.target]})" if p.target in images.TCP_PORTS else "")
                     for p in must]
            parts.append(f"{', '.join(named)} must stay on the host (not HTTP)")
        if maybe:
            parts.append(f"{', '.join(repr(p.raw) for p in maybe)} stay if clients reach them directly")
        plan.warn(name, f"ports: {'; '.join(parts)}; while the old container holds them the new one "
                        "cannot start beside it, so compose-atomic replaces this service stop-first (the old "
                        "one stops before the new one starts: a short gap)",
                  "move those ports to a service of their own to keep replacements without a gap; "
                  "remove any you do not need",
                  plan.where("services", name, "ports"))
    if service.config.get("container_name"):
        plan.warn(name, f"container_name: {service.config['container_name']} allows only one "
                        "container, so the new version cannot start beside the old one",
                  f"remove container_name (Compose names the containers <project>-{name}-N)",
                  plan.where("services", name, "container_name"))


def _dockerfile_has_healthcheck(service: Service, base: Path) -> bool | None:
    build = service.config.get("build")
    if not build:
        return None
    context = build if isinstance(build, str) else str((build or {}).get("context", "."))
    dockerfile = "Dockerfile" if isinstance(build, str) else str((build or {}).get("dockerfile", "Dockerfile"))
    path = base / interpolate(context, service.env) / dockerfile
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    return bool(re.search(r"^\s*HEALTHCHECK\s+(?!NONE)", text, re.MULTILINE | re.IGNORECASE))


def _docker_healthcheck(plan: Plan, service: Service, port: int, path: str,
                        image_info: dict[str, ImageFacts | None] | None) -> None:
    """Say whether Docker health exists: the compose file's, the image's, none or unknown."""
    name = service.name
    check = service.config.get("healthcheck")
    if service.healthcheck is not None and (not isinstance(check, dict) or check.get("test")):
        return  # the compose file defines one
    suggestion = (f'healthcheck: {{test: ["CMD", "wget", "-qO-", "http://localhost:{port}{path}"], '
                  "interval: 5s, retries: 3} (or curl -fsS, whichever the image has)")
    if isinstance(check, dict) and (check.get("disable") or (isinstance(check.get("test"), list) and check["test"]
                                                             and str(check["test"][0]).upper() == "NONE")):
        plan.warn(name, "the Docker healthcheck is disabled: readiness rests on the HTTP probe alone",
                  f"remove the disable, or add {suggestion}")
        return
    info = image_info or {}
    facts = info.get(service.image) if service.image else None
    known = images.web_image(service.image)
    built = _dockerfile_has_healthcheck(service, plan.paths[0].parent if plan.paths else Path("."))
    if facts is not None:
        has, whose = facts.healthcheck, f"the image {service.image} (inspected on this machine)"
    elif built is not None:
        has, whose = built, "its Dockerfile"
    elif known and known.healthcheck:
        has, whose = True, f"the {known.name} image"
    else:
        if not service.image:
            where = "its Dockerfile was not found"
        elif service.image in info:
            where = f"image {service.image} is not on this machine"
        else:
            where = f"Docker could not be asked about image {service.image}"
        plan.note(name, f"Docker healthcheck: unknown ({where}, so init cannot see whether it defines one; "
                        f"if it does not: {suggestion})")
        return
    if has:
        plan.note(name, f"Docker healthcheck: {whose} defines one")
    else:
        plan.warn(name, f"no Docker healthcheck (neither the compose file nor {whose} defines one): "
                        "readiness rests on the HTTP probe alone and `docker compose ps` cannot show it",
                  f"add {suggestion}")


def _plan_logging(plan: Plan, services: dict[str, Service]) -> None:
    bare = [name for name, s in services.items() if "logging" not in s.config]
    if not bare:
        return
    plan.note("logging", f"{', '.join(bare)} use Docker's default json-file log without rotation, which "
                         "grows until the disk is full: add logging: {driver: json-file, options: "
                         "{max-size: 10m, max-file: \"3\"}} to each (an x-logging anchor keeps it in one place)")


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
    ports = [p.raw for p in service.tcp_ports if p.published] or list(DEFAULT_PROXY_PORTS)
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
