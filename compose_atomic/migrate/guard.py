"""The guarded sequence: lint -> snapshot -> migrate (with timeout) -> restore on failure.

``guarded_migrate`` is what the deploy's ``before_deploy`` hook and
``compose-atomic db migrate`` both run; ``rollback`` is what ``on_rollback`` runs
when the new app fails after a successful migration. Between the two, the
deploy's state (which snapshot guards which service) lives in
``<state dir>/migrate/<service>.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..errors import (
    ComposeAtomicError,
    Interrupted,
    MigrationFailed,
    OperationFailed,
    RestoreRefused,
    RollbackFailed,
    RolledBack,
)
from ..progress import Progress
from ..project import Project
from ..statedir import Snapshot, find_snapshot, write_json_atomic
from . import introspect
from .database import Database
from .restore import restore
from .settings import MigrateSettings, migrate_settings, snapshot_dir
from .snapshot import PRE_MIGRATE, prune, take_snapshot


def _state_path(project: Project, service: str) -> Path:
    path = project.state_dir / "migrate"
    path.mkdir(parents=True, exist_ok=True)
    return path / f"{service}.json"


def read_state(project: Project, service: str) -> dict[str, Any] | None:
    try:
        return json.loads(_state_path(project, service).read_text())
    except (OSError, ValueError):
        return None


def write_state(project: Project, service: str, state: dict[str, Any]) -> None:
    write_json_atomic(_state_path(project, service), state)


def clear_state(project: Project, service: str) -> None:
    _state_path(project, service).unlink(missing_ok=True)


def service_image(project: Project, service: str) -> str:
    """The image Compose would run for ``service`` (its own default name when built)."""
    spec = project.services[service]
    return spec.get("image") or f"{project.name}-{service}"


def lint_gate(project: Project, settings: MigrateSettings, progress: Progress) -> None:
    """Run the migration linter's gate when ``migrate.lint`` is set and the linter is installed."""
    if not settings.lint:
        return
    try:
        from compose_atomic.lint.gate import check_migrations
    except ImportError:
        progress.warn(f"Migration {settings.service}", "migrate.lint is set but the linter is not "
                                                      "installed; skipping the lint gate")
        return
    check_migrations(project, settings.service, progress)


def ensure_database(project: Project, service: str, progress: Progress) -> Database:
    """The database the migration needs, started first if it is not running (first deploy)."""
    from .. import docker
    from ..errors import DatabaseUnavailable
    from .database import find_container

    if find_container(project, service) is None:
        progress.event(f"Database {service}", "Starting", "the migration needs it", state="working")
        proc = docker.run(project.compose("up", "-d", "--wait", service))
        if not proc.ok:
            raise DatabaseUnavailable(f'could not start the database service "{service}": '
                                      f"{proc.stderr.strip()[-500:]}")
    db = Database.locate(project, service)
    deadline = time.monotonic() + 60
    while True:  # a fresh container runs initdb before it accepts connections
        try:
            db.connect().close()
            return db
        except DatabaseUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def guarded_migrate(project: Project, service: str, image: str | None = None,
                    progress: Progress | None = None) -> Snapshot | None:
    """Lint, snapshot and migrate ``service``'s database; restore on failure.

    Returns the guarding snapshot (None when the service has no migrate settings).
    Raises MigrationFailed (exit 1) when the migration failed but left the
    database unchanged, RolledBack (exit 3) when the snapshot was restored and
    verified, RollbackFailed (exit 4) when the restore was refused or failed.
    """
    from ..plugins import call_hook

    settings = migrate_settings(project, service)
    if settings is None:
        return None
    progress = progress or Progress()
    image = image or service_image(project, service)
    if settings.sql:
        from .sqlrunner import discover

        discover(settings.sql, project.working_dir)  # a bad glob fails before any snapshot
    lint_gate(project, settings, progress)
    db = ensure_database(project, settings.database, progress)
    directory = snapshot_dir(project)
    snap = take_snapshot(project, db, directory, reason=PRE_MIGRATE, label=service,
                         progress=progress, extra={"service": service, "image": image},
                         lock_wait=settings.timeout)
    write_state(project, service, {"snapshot": snap.name, "database": settings.database,
                                   "image": image, "phase": "migrating", "pid": os.getpid()})
    with db.connect() as conn:
        before = introspect.write_counters(conn)
        schema_before = introspect.catalog_version(conn)
    call_hook("before_migrate", project=project, service=service, database=settings.database,
              snapshot_path=str(snap.path))
    resource = f"Migration {service}"
    progress.event(resource, "Running", _describe(settings), state="working")
    started = time.monotonic()
    committed: bool | None = None
    if settings.sql:
        from .sqlrunner import run_sql_files

        result = run_sql_files(db, settings.sql, project.working_dir, lock_timeout=settings.lock_timeout,
                               timeout=settings.timeout, progress=progress)
        error, committed = result.error, result.committed
    else:
        from .command import run_migration_command

        result = run_migration_command(project, db, service, image, settings.command,
                                       timeout=settings.timeout, lock_timeout=settings.lock_timeout)
        error = result.error
    interrupted = result.interrupted  # SIGINT: still bring the database to a consistent state
    with db.connect() as conn:
        after = introspect.write_counters(conn)
        schema_after = introspect.catalog_version(conn)
    outcome = "migrated" if error is None else type(error).__name__
    snap.manifest["migration"] = {"service": service, "image": image, "outcome": outcome,
                                  "counters_before": before, "counters_after": after}
    snap.save_manifest()
    call_hook("after_migrate", project=project, service=service, database=settings.database,
              snapshot_path=str(snap.path), outcome=outcome)
    elapsed = time.monotonic() - started

    if error is None:
        write_state(project, service, {"snapshot": snap.name, "database": settings.database,
                                       "image": image, "phase": "migrated", "pid": os.getpid()})
        progress.event(resource, "Migrated", elapsed=elapsed)
        prune(directory, settings.database, settings.keep_snapshots, progress)
        return snap

    progress.fail(resource, error.message)
    if committed is None:  # the user's tool: judge from the outside
        committed = schema_after != schema_before or bool(introspect.writes_between(before, after))
    if not committed:
        clear_state(project, service)
        raise (Interrupted if interrupted else MigrationFailed)(
            f"{error.message}\nThe database is unchanged (the migration failed inside one transaction, "
            f"which PostgreSQL rolled back, or before it changed anything), so nothing was restored "
            f"(snapshot {snap.name} kept).",
            hint=error.hint)
    try:
        restore(project, db, snap, force=settings.force_restore, progress=progress)
    except ComposeAtomicError as exc:
        raise RollbackFailed(
            f"{error.message}\nThe migration left changes behind and restoring snapshot {snap.name} "
            f"did not happen: {exc.message}",
            hint=exc.hint or f"Restore by hand: compose-atomic db restore {snap.name}") from None
    finally:
        clear_state(project, service)
    raise (Interrupted if interrupted else RolledBack)(
        f"{error.message}\nThe database was restored from snapshot {snap.name} and verified.")


def rollback(project: Project, service: str, reason: str | None = None,
             progress: Progress | None = None) -> dict[str, Any] | None:
    """Restore the snapshot that guarded this deploy's migration, if it migrated."""
    state = read_state(project, service)
    if not state or state.get("phase") != "migrated":
        return None
    settings = migrate_settings(project, service)
    force = settings.force_restore if settings else False
    progress = progress or Progress()
    db = Database.locate(project, state["database"])
    snap = find_snapshot(snapshot_dir(project), state["database"], state["snapshot"])
    progress.event(f"Database {db.service}", "Restoring",
                   f"{service} rolled back{': ' + reason if reason else ''}", state="working")
    try:
        report = restore(project, db, snap, force=force, progress=progress)
    except RestoreRefused as exc:
        raise RollbackFailed(
            f"{service} was rolled back but its database keeps the migration: {exc.message}",
            hint=f"Nothing was discarded. To restore anyway: compose-atomic db restore {snap.name} "
                 f"--force (or set x-atomic.migrate.on_failure: restore).") from None
    except OperationFailed as exc:
        raise RollbackFailed(f"{service} was rolled back but restoring its database failed: "
                             f"{exc.message}", hint=exc.hint) from None
    clear_state(project, service)
    return report


def _describe(settings: MigrateSettings) -> str:
    if settings.sql:
        return f"sql: {', '.join(settings.sql)}"
    return " ".join(settings.command or ())
