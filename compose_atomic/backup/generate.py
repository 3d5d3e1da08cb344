"""Write the Compose override file with the backup sidecars.

``compose-atomic backup generate`` reads the resolved project and, for every service
with ``x-atomic.backup``, adds:

- ``<db>-backup``: the database service's own image (so pg_dump matches the server),
  running ``sidecar.sh serve``; a freshness health check; the backup volume.
- one service per offsite target (built in: ``<db>-backup-offsite`` with rclone),
  reading the same volume read-only.

The output is deterministic (same project, same bytes) and holds no secret: the
password reaches the sidecar as a Docker secret (the database's own
``POSTGRES_PASSWORD_FILE`` one, or a ``0600`` file in the state directory holding the
``POSTGRES_PASSWORD`` Compose resolved), and other values the user wrote as ``${VAR}``
stay ``${VAR}`` for Compose to interpolate at ``up`` time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from ..errors import ConfigError
from ..project import Project
from . import EXTENSIONS, cron  # EXTENSIONS: (project, document) functions run on the built override

SCRIPT_CONFIG = "compose_atomic_backup_script"
SCRIPT_PATH = "/usr/local/bin/compose-atomic-backup"
BACKUP_DIR = "/backups"
LABEL = "com.compose-atomic.backup.for"
ROLE_LABEL = "com.compose-atomic.backup.role"
SCRIPT_LABEL = "com.compose-atomic.backup.script"
DEFAULT_RCLONE_IMAGE = "rclone/rclone:1.68"
DEFAULT_KEEP = {"last": 3, "daily": 7, "weekly": 4, "monthly": 6}
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
PASSWORD_DIR = "backup"  # under the project's state directory: <service>.password, 0600


@dataclass
class OffsiteContext:
    """What an offsite target needs to add its sidecar (passed to the builder a plugin registers)."""

    project: Project
    service: str  # the database service
    backup_service: str  # the dump sidecar
    volume: str  # the backup volume, mount it read-only at BACKUP_DIR
    config: Any  # the value under x-atomic.backup.offsite.<target>
    environment: dict[str, str]  # shared settings: keep, alert webhook, label
    script_config: str = SCRIPT_CONFIG
    script_path: str = SCRIPT_PATH
    backup_dir: str = BACKUP_DIR
    extra_secrets: dict[str, Any] = field(default_factory=dict)  # top-level secrets to add


OffsiteBuilder = Callable[[OffsiteContext], dict[str, dict[str, Any]]]


def script_text() -> str:
    """The POSIX sh script every sidecar runs."""
    return assemble(resources.files("compose_atomic.backup").joinpath("sidecar.sh").read_text())


def assemble(script: str) -> str:
    """A sidecar's script with its ``# include shared.sh`` line replaced by the functions
    the backup and PITR sidecars share (one file in the container, nothing to source)."""
    shared = resources.files("compose_atomic.backup").joinpath("shared.sh").read_text()
    return script.replace("# include shared.sh\n", shared, 1)


def script_digest() -> str:
    """Short sha256 of the script: a label, so `up -d` recreates sidecars when it changes
    (Compose does not compare the content of configs)."""
    import hashlib

    return hashlib.sha256(script_text().encode()).hexdigest()[:16]


def raw_value(project: Project, *path: str) -> Any:
    """A value as written in the compose files (before interpolation); the last file wins."""
    found = None
    for file in project.files:
        try:
            node: Any = yaml.safe_load(Path(file).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        for key in path:
            if isinstance(node, dict):
                node = node.get(key)
            elif isinstance(node, list):  # environment: ["KEY=value", ...]
                node = _env_list_lookup(node, key)
            else:
                node = None
            if node is None:
                break
        if node is not None:
            found = node
    return found


def _env_list_lookup(items: list, key: str) -> Any:
    for item in items:
        if isinstance(item, str) and item.split("=", 1)[0] == key:
            return item.split("=", 1)[1] if "=" in item else None
    return None


def _keep_raw(project: Project, service: str, value: Any, *path: str) -> Any:
    """Prefer the un-interpolated spelling when the user wrote a ${VAR} reference."""
    raw = raw_value(project, "services", service, *path)
    if isinstance(raw, str) and "$" in raw:
        return raw
    return value


def password_file(project: Project, service: str) -> Path:
    """Where ``backup generate`` keeps the password of a service that sets POSTGRES_PASSWORD."""
    return project.state_dir / PASSWORD_DIR / f"{service}.password"


def _secret_path(project: Project, path: Path) -> str:
    """The path as the override file spells it: relative to the project directory when inside it."""
    try:
        return "./" + path.relative_to(project.working_dir).as_posix()
    except ValueError:
        return str(path)


def _password(project: Project, service: str, env: dict[str, Any],
              files: dict[Path, str] | None = None) -> tuple[dict, dict, dict]:
    """(sidecar environment, sidecar secrets list entry, top-level secrets) for the password.

    POSTGRES_PASSWORD however it was written (literally, ``${VAR}`` from the shell or ``.env``,
    a pass-through ``- POSTGRES_PASSWORD``, an ``env_file``) is the value Compose resolved: it
    goes into ``files`` (path -> password) for the caller to write with mode 0600, and the
    sidecar reads it as a file secret, never from argv or its environment.
    """
    svc = project.services[service]
    if env.get("POSTGRES_PASSWORD_FILE"):
        path = str(env["POSTGRES_PASSWORD_FILE"])
        target = path.rsplit("/", 1)[-1]
        for entry in svc.get("secrets") or []:
            source = entry if isinstance(entry, str) else entry.get("source")
            tgt = entry if isinstance(entry, str) else entry.get("target") or source
            if path in (f"/run/secrets/{tgt}", tgt):
                return ({"BACKUP_PASSWORD_FILE": f"/run/secrets/{target}"},
                        {"source": source, "target": target}, {})
        raise ConfigError(
            f'service "{service}": POSTGRES_PASSWORD_FILE is {path} but no secret of the service is '
            "mounted there; the backup sidecar reuses that secret, so list it under the service's secrets:.")
    if str(env.get("POSTGRES_HOST_AUTH_METHOD", "")).lower() == "trust":
        return {}, {}, {}
    if "POSTGRES_PASSWORD" in env:
        password = env.get("POSTGRES_PASSWORD")
        if password is None or str(password) == "":
            raise ConfigError(
                f'service "{service}": POSTGRES_PASSWORD has no value here (a pass-through or ${{VAR}} whose '
                "variable is not set); the backup sidecar needs the password to log in.",
                hint="Set the variable (shell or .env) and run backup generate again, or use "
                     "POSTGRES_PASSWORD_FILE with a Docker secret.")
        path = password_file(project, service)
        if files is not None:
            files[path] = str(password)
        name = f"{service}_backup_password"
        return ({"BACKUP_PASSWORD_FILE": f"/run/secrets/{name}"}, {"source": name, "target": name},
                {name: {"file": _secret_path(project, path)}})
    raise ConfigError(
        f'service "{service}": no POSTGRES_PASSWORD_FILE or POSTGRES_PASSWORD; the backup sidecar cannot log in.',
        hint="Set POSTGRES_PASSWORD_FILE to a Docker secret (recommended).")


def _check_name(service: str, key: str, value: str) -> str:
    if not SAFE_NAME.match(value):
        raise ConfigError(f'service "{service}": x-atomic.backup.{key}: {value!r} may use letters, digits, '
                          "'_', '.' and '-' only (it becomes part of backup file names).")
    return value


def sidecar_environment(project: Project, service: str, backup: dict[str, Any]) -> dict[str, str]:
    """The settings shared by the dump sidecar and the offsite ones."""
    keep = {**DEFAULT_KEEP, **(backup.get("keep") or {})}
    env = {
        "BACKUP_LABEL": f"{project.name}/{service}",
        "BACKUP_KEEP_LAST": str(max(3, int(keep["last"]))),
        "BACKUP_KEEP_DAILY": str(int(keep["daily"])),
        "BACKUP_KEEP_WEEKLY": str(int(keep["weekly"])),
        "BACKUP_KEEP_MONTHLY": str(int(keep["monthly"])),
    }
    webhook = _keep_raw(project, service, (backup.get("alert") or {}).get("webhook"),
                        "x-atomic", "backup", "alert", "webhook")
    if webhook:
        env["BACKUP_ALERT_WEBHOOK"] = webhook
    return env


def build(project: Project, offsite_builders: dict[str, OffsiteBuilder] | None = None,
          password_files: dict[Path, str] | None = None) -> dict[str, Any]:
    """The override file as a mapping (services, volumes, configs, secrets).

    ``password_files`` (when given) receives the secret files the override refers to, path ->
    content, for ``write_password_files``; the mapping itself never holds a password.
    """
    offsite_builders = offsite_builders or {}
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    for service in project.atomic_services:
        backup = project.service_x_atomic(service).get("backup")
        if backup is None:
            continue
        backup = backup or {}
        svc = project.services[service]
        if svc.get("network_mode"):
            raise ConfigError(f'service "{service}": x-atomic.backup needs the database on a compose network; '
                              f"network_mode: {svc['network_mode']} is not supported.")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
        user = str(env.get("POSTGRES_USER") or "postgres")
        databases = [_check_name(service, "databases", d)
                     for d in (backup.get("databases") or [str(env.get("POSTGRES_DB") or user)])]
        schedule_raw = str(backup.get("schedule", "0 3 * * *"))
        try:
            schedule = cron.normalize(schedule_raw)
            max_age = int(cron.max_interval(schedule) * 1.5)
        except cron.CronError as error:
            raise ConfigError(f'service "{service}": x-atomic.backup.schedule: {error}') from None
        image = _keep_raw(project, service, svc.get("image"), "image")
        if not image:
            raise ConfigError(f'service "{service}": x-atomic.backup needs an image: the sidecar runs the '
                              "database's own image so pg_dump matches the server.")
        pw_env, pw_secret, top_secrets = _password(project, service, env, password_files)
        secrets.update(top_secrets)
        shared = sidecar_environment(project, service, backup)
        volume = f"{service}-backups"
        volumes[volume] = {"labels": {LABEL: service}}
        name = f"{service}-backup"
        networks = sorted((svc.get("networks") or {"default": None}).keys())
        sidecar: dict[str, Any] = {
            "image": image,
            "entrypoint": ["sh", SCRIPT_PATH],
            "command": ["serve"],
            "restart": "unless-stopped",
            "stop_signal": "SIGTERM",
            "depends_on": {service: {"condition": "service_started"}},
            "environment": {
                "PGHOST": service, "PGPORT": "5432", "PGUSER": user, "PGDATABASE": databases[0],
                "BACKUP_DIR": BACKUP_DIR, "BACKUP_DATABASES": " ".join(databases),
                "BACKUP_SCHEDULE": schedule, "BACKUP_MAX_AGE": str(max_age),
                "BACKUP_VERIFY": str(backup.get("verify", "restore")),
                **pw_env, **shared,
            },
            "volumes": [f"{volume}:{BACKUP_DIR}"],
            "configs": [{"source": SCRIPT_CONFIG, "target": SCRIPT_PATH}],
            "healthcheck": {"test": ["CMD", "sh", SCRIPT_PATH, "health"], "interval": "1m",
                            "timeout": "30s", "retries": 1, "start_period": "1m"},
            "labels": {LABEL: service, ROLE_LABEL: "dump", SCRIPT_LABEL: script_digest()},
            "networks": networks,
        }
        if env.get("TZ"):
            # The schedule is read in the sidecar's time zone: the database's, when it sets one.
            sidecar["environment"]["TZ"] = _keep_raw(project, service, str(env["TZ"]), "environment", "TZ")
        if pw_secret:
            sidecar["secrets"] = [pw_secret]
        services[name] = sidecar
        for target, config in sorted((backup.get("offsite") or {}).items()):
            builder = offsite_builders.get(target)
            if builder is None:
                raise ConfigError(f'service "{service}": x-atomic.backup.offsite.{target}: no offsite target '
                                  f"named {target!r}; installed: {', '.join(sorted(offsite_builders)) or 'none'}.")
            context = OffsiteContext(project=project, service=service, backup_service=name, volume=volume,
                                     config=config, environment=dict(shared))
            for extra_name, extra in builder(context).items():
                extra.setdefault("labels", {}).update({LABEL: service, ROLE_LABEL: f"offsite-{target}",
                                                       SCRIPT_LABEL: script_digest()})
                services[extra_name] = extra
            secrets.update(context.extra_secrets)
    if not services:
        raise ConfigError("no service has x-atomic.backup; add it to the database service "
                          "(see docs/backups.md) and run compose-atomic backup generate again.")
    document: dict[str, Any] = {"services": services, "volumes": volumes,
                                "configs": {SCRIPT_CONFIG: {"content": script_text().replace("$", "$$")}}}
    if secrets:
        document["secrets"] = secrets
    for extend in EXTENSIONS:  # e.g. x-atomic.backup.pitr (compose_atomic.pitr registers itself)
        extend(project, document)
    return document


def write_password_files(files: dict[Path, str]) -> None:
    """Write each password file with mode 0600 (atomically, never readable by others), in a
    0700 directory that git ignores."""
    import os

    for path, password in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        ignore = path.parent / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# passwords for the backup sidecars (compose-atomic backup generate)\n*\n")
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, password.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)


def rclone_builder(context: OffsiteContext) -> dict[str, dict[str, Any]]:
    """The built-in offsite target: an rclone sidecar that copies (never syncs) the backups."""
    config = context.config
    remote = config if isinstance(config, str) else (config or {}).get("remote")
    if not remote:
        raise ConfigError(f'service "{context.service}": x-atomic.backup.offsite.rclone needs a remote, '
                          'e.g. "b2:my-bucket/db".')
    remote = _keep_raw(context.project, context.service, remote, "x-atomic", "backup", "offsite", "rclone")
    env = {"BACKUP_DIR": context.backup_dir, "BACKUP_OFFSITE_REMOTE": remote, **context.environment}
    service: dict[str, Any] = {
        "image": "${RCLONE_IMAGE:-" + DEFAULT_RCLONE_IMAGE + "}",
        "entrypoint": ["sh", context.script_path],
        "command": ["offsite-serve"],
        "restart": "unless-stopped",
        "stop_signal": "SIGTERM",
        "environment": env,
        "volumes": [f"{context.volume}:{context.backup_dir}:ro"],
        "configs": [{"source": context.script_config, "target": context.script_path}],
        "healthcheck": {"test": ["CMD", "sh", context.script_path, "offsite-health"], "interval": "1m",
                        "timeout": "30s", "retries": 1},
    }
    if not str(remote).startswith(":"):
        # A named remote needs rclone.conf; it is a secret (it holds the storage credentials).
        secret = "rclone_conf"
        context.extra_secrets[secret] = {"file": "${RCLONE_CONFIG_FILE:-./rclone.conf}"}
        service["secrets"] = [{"source": secret, "target": secret}]
        env["RCLONE_CONFIG"] = f"/run/secrets/{secret}"
    return {f"{context.backup_service}-offsite": service}


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

HEADER = """\
# Backup sidecars for {project}, generated by `compose-atomic backup generate`.
# Do not edit: change x-atomic.backup in your compose file and generate again
# (the output is deterministic). Start with:
#   compose-atomic -f {base} -f {output} up -d
# Each <db>-backup service runs the database's own image and the POSIX sh script in
# configs.{config} (compose_atomic/backup/sidecar.sh): pg_dump -Fc, pg_restore --list,
# a restore into a throwaway server with row counts compared, sha256, fsync, atomic
# rename, 0600 files, GFS retention with a floor of 3; its health check fails when the
# newest verified backup is older than 1.5x the schedule interval or the last run failed.
# Offsite services copy with `rclone copy --immutable`, never `sync`. See docs/backups.md.
"""


def render(project: Project, document: dict[str, Any], output: str) -> str:
    """The override file's text: a comment header, then YAML in a stable key order."""
    base = " -f ".join(str(Path(f).name) for f in project.files) or "compose.yaml"
    header = HEADER.format(project=project.name, base=base, output=output, config=SCRIPT_CONFIG)
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100,
                     allow_unicode=True)
    return header + body
