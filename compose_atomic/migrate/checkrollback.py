"""``compose-atomic db check-rollback [SERVICE]``: would the old code run on the new schema?

Never on the live database. A scratch Compose project (``<project>-checkrb-<tag>``) holds
two services taken from the resolved configuration: a fresh copy of the database service
(no volumes, no ports) and SERVICE running its **previous** image (the one the running
container has). Its networks are its own, so the app's database host name resolves to the
copy, and nothing of the live project is reachable by it.

1. the latest snapshot of the database is restored into the copy and verified;
2. the new release's migration is applied to the copy (the built-in runner, or the
   migration command in a one-off container of the new image, in the scratch project);
3. SERVICE starts with its previous image and goes through the deploy's health gate.

"code-only rollback is safe" when it passes; otherwise what failed. The scratch project
is removed (``down -v``) whatever happens.
"""

from __future__ import annotations

import copy
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import yaml

from .. import docker
from ..errors import DatabaseUnavailable, OperationFailed, RollbackUnsafe, UsageError
from ..progress import Progress
from ..project import ComposeOptions, Project
from .database import Database
from .settings import migrate_settings, snapshot_dir
from .snapshot import list_snapshots

SAFE = "code-only rollback is safe"


@dataclass
class CheckReport:
    service: str
    snapshot: str
    previous_image: str
    new_image: str
    safe: bool = False
    failed: str = ""
    steps: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def scratch_config(project: Project, service: str, database: str, name: str, previous_image: str) -> dict:
    """The two services of the check, with their own networks and no state of the live project."""
    source = project.config
    services = {}
    for svc, image in ((database, None), (service, previous_image)):
        spec = copy.deepcopy(source["services"][svc])
        for key in ("ports", "container_name", "depends_on", "x-atomic", "links", "external_links"):
            spec.pop(key, None)
        if svc == database:
            spec.pop("volumes", None)  # a fresh, empty data directory
        if image:
            spec["image"] = image
            spec.pop("build", None)
        services[svc] = spec
    used = {n for spec in services.values() for n in (spec.get("networks") or {})}
    networks = {n: d for n, d in (source.get("networks") or {}).items() if n in used or n == "default"}
    for net, definition in networks.items():
        if (definition or {}).get("external"):
            raise UsageError(f'check-rollback: network "{net}" is external; the check needs networks of '
                             "its own so that the old app cannot reach the live database")
    config: dict[str, Any] = {"name": name, "services": services}
    if networks:
        config["networks"] = {n: {k: v for k, v in (d or {}).items() if k != "name"} for n, d in networks.items()}
    volumes = {v for spec in services.values() for v in _named_volumes(spec)}
    if volumes:
        config["volumes"] = {v: {} for v in volumes}
    return config


def _named_volumes(spec: dict) -> list[str]:
    found = []
    for volume in spec.get("volumes") or []:
        if isinstance(volume, dict) and volume.get("type") == "volume" and volume.get("source"):
            found.append(volume["source"])
    return found


def _compose(scratch: Project, config: dict, *args: str, timeout: float = docker.LONG_TIMEOUT):
    command = docker.compose_stdin(scratch.name, str(scratch.working_dir), *args, timeout=timeout)
    return docker.run(command, input=yaml.safe_dump(config, sort_keys=False))


def previous_image(project: Project, service: str) -> str:
    running = docker.service_containers(project.name, service, running_only=True)
    if not running:
        raise OperationFailed(f'check-rollback: "{service}" has no running container, so there is no '
                              "previous version to check", hint="Deploy it once first.")
    return running[0]["Config"]["Image"]


def check_rollback(project: Project, service: str, progress: Progress | None = None) -> CheckReport:
    """Run the check; never touches the live database. Returns the report (``safe`` says)."""
    from .guard import service_image

    progress = progress or Progress()
    settings = migrate_settings(project, service)
    if settings is None:
        raise UsageError(f'service "{service}" has no x-atomic.migrate')
    snaps = list_snapshots(snapshot_dir(project), settings.database)
    if not snaps:
        raise OperationFailed(f'check-rollback: no snapshot of "{settings.database}" yet',
                              hint="Take one: compose-atomic db snapshot")
    snap = snaps[-1]
    old = previous_image(project, service)
    report = CheckReport(service, snap.name, old, service_image(project, service))
    name = f"{project.name}-checkrb-{uuid.uuid4().hex[:6]}"
    config = scratch_config(project, service, settings.database, name, old)
    scratch = Project(name=name, options=ComposeOptions(project_name=name), config=config,
                      working_dir=project.working_dir)
    resource = f"Check-rollback {service}"
    try:
        progress.event(resource, "Starting", f"a copy of {settings.database} in project {name}", state="working")
        up = _compose(scratch, config, "up", "-d", "--wait", settings.database)
        if not up.ok:
            raise DatabaseUnavailable(f"could not start the copy of {settings.database}: {up.last_line()}")
        copy_db = Database.wait_ready(scratch, settings.database)
        _restore_into(copy_db, snap)
        report.steps.append(f"restored {snap.name} into the copy and verified it")
        progress.event(resource, "Restored", snap.name)
        failure = _migrate(scratch, copy_db, settings, report.new_image, service)
        if failure:
            report.failed = f"the new release's migration fails on the copy: {failure}"
            return report
        report.steps.append("applied the new release's migration to the copy")
        progress.event(resource, "Migrated", "the copy")
        up = _compose(scratch, config, "up", "-d", "--no-deps", service)
        if not up.ok:
            report.failed = f"the previous image did not start: {up.last_line()}"
            return report
        cid = docker.service_containers(name, service)[0]["Id"]
        progress.event(resource, "Gating", f"{old} on the migrated copy", state="working")
        why = health_gate(cid, project.service_x_atomic(service).get("health") or {})
        if why:
            report.failed = f"the previous image {old} fails its health gate on the migrated schema: {why}"
            return report
        report.steps.append(f"the previous image {old} passed its health gate on the migrated copy")
        report.safe = True
        return report
    finally:
        _compose(scratch, config, "down", "-v", "--remove-orphans", "-t", "1", timeout=120)


#: Without a HEALTHCHECK or a health path, how long the old app must keep running.
STABLE = 5.0


def health_gate(cid: str, health: dict[str, Any]) -> str:
    """The gate the deploy applies, on the scratch container: the image's HEALTHCHECK must
    report healthy and ``x-atomic.health.path`` (if set) answer below 400, within
    ``health.timeout``; without either, it must keep running for a few seconds. Returns why it
    failed, or empty. (Written here rather than imported: migrate does not use deploy.)"""
    import httpx

    from ..durations import parse_duration

    deadline = time.monotonic() + parse_duration(health.get("timeout", "60s"))
    path, port = health.get("path"), health.get("port")
    started = time.monotonic()
    last = "it did not become healthy in time"
    while time.monotonic() < deadline:
        info = docker.inspect_one(cid)
        if info is None:
            return "its container disappeared"
        state = info["State"]
        if state["Status"] in ("exited", "dead"):
            return f"it exited with code {state.get('ExitCode')}"
        status = (state.get("Health") or {}).get("Status")
        if status == "unhealthy":
            log = (state.get("Health") or {}).get("Log") or []
            output = (log[-1].get("Output") or "").strip().splitlines() if log else []
            return "its HEALTHCHECK reports unhealthy" + (f": {output[-1]}" if output else "")
        probe_ok = path is None
        if path is not None and port:
            ips = [n.get("IPAddress") for n in (info["NetworkSettings"].get("Networks") or {}).values()]
            ip = next((i for i in ips if i), None)
            try:
                code = httpx.get(f"http://{ip}:{port}{path}", timeout=2.0).status_code
                probe_ok = code == int(health["status"]) if health.get("status") else code < 400
                last = f"GET {path} answered {code}"
            except httpx.HTTPError as exc:
                last = f"GET {path} failed: {exc}"
        if status in (None, "healthy") and probe_ok:
            if status == "healthy" or path is not None or time.monotonic() - started >= STABLE:
                return ""
        time.sleep(0.5)
    return last


def _restore_into(db: Database, snap) -> None:
    from .restore import _pg_restore, _verify
    from .snapshot import verify_file

    verify_file(snap)
    with db.connect(db.maintenance_db) as maint:
        _pg_restore(db, maint, snap, db.dbname)
    _verify(db, snap, db.dbname)


def _migrate(scratch: Project, db: Database, settings, image: str, service: str) -> str:
    """Apply the migration to the copy; the failure's message, or empty."""
    if settings.sql:
        from .sqlrunner import run_sql_files

        result = run_sql_files(db, settings.sql, scratch.working_dir, lock_timeout=settings.lock_timeout,
                               timeout=settings.timeout, progress=Progress("quiet"))
    else:
        from .command import run_migration_command

        result = run_migration_command(scratch, db, service, image, settings.command,
                                       timeout=settings.timeout, lock_timeout=settings.lock_timeout,
                                       echo=lambda line: None)
    return result.error.message if result.error else ""


def require_safe(report: CheckReport) -> None:
    if not report.safe:
        raise RollbackUnsafe(f"{report.service}: code-only rollback is NOT safe: {report.failed}",
                             hint=f"Checked on a copy restored from {report.snapshot}; the live database "
                                  "was not touched. Roll back with the database too, or make the migration "
                                  "backward compatible (expand first, contract in a later release).")
