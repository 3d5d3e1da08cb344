"""The guarded sequence: lint -> snapshot -> migrate (with timeout) -> restore on failure.

``guarded_migrate`` is what the deploy's ``before_deploy`` hook and
``compose-atomic db migrate`` both run; ``rollback`` is what the ``rollback_deploy`` hook runs
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
    RestoreRefused,
    RollbackFailed,
    RolledBack,
)
from ..progress import Progress
from ..project import Project
from ..statedir import Snapshot, find_snapshot, write_json_atomic
from . import cases, introspect, schemadiff
from .database import Database
from .restore import describe_writes, restore, unattributed_window_writes
from .settings import MigrateSettings, migrate_settings, snapshot_dir
from .snapshot import PRE_MIGRATE, prune, take_snapshot
from .undo import undo_additions


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


def _hold_path(project: Project, service: str) -> Path:
    return _state_path(project, service).with_suffix(".hold-ran-out")


def mark_hold_ran_out(project: Project, service: str) -> None:
    """The deploy's write hold let requests through before the release was decided (its time)."""
    _hold_path(project, service).write_text(str(time.time()))


def clear_hold_ran_out(project: Project, service: str) -> None:
    _hold_path(project, service).unlink(missing_ok=True)


def hold_ran_out_before(project: Project, service: str, moment: float) -> bool:
    """Did a write hold run out before ``moment`` (wall clock)? A stale mark (a deploy that died)
    counts too: then the window's writes are taken for the app's, never discarded unsaid."""
    try:
        return float(_hold_path(project, service).read_text()) <= moment
    except (OSError, ValueError):
        return False


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
    return Database.wait_ready(project, service)


def guarded_migrate(project: Project, service: str, image: str | None = None,
                    progress: Progress | None = None) -> Snapshot | None:
    """Lint, snapshot and migrate ``service``'s database; restore on failure.

    Returns the guarding snapshot (None when the service has no migrate settings).
    On failure (see ``settle``) raises MigrationFailed (exit 1) when the migration
    changed nothing, RolledBack (exit 3) when what it added was undone in place or the
    snapshot was restored, RollbackFailed (exit 4) when the database keeps the migration.
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
    verdict = release_verdict(project, settings, db)
    progress.event(f"Migration {service}", "Case", str(verdict))
    directory = snapshot_dir(project)
    snap = take_snapshot(project, db, directory, reason=PRE_MIGRATE, label=service,
                         progress=progress, extra={"service": service, "image": image,
                                                   "release_case": verdict.as_dict()},
                         lock_wait=settings.timeout)
    write_state(project, service, {"snapshot": snap.name, "database": settings.database,
                                   "image": image, "phase": "migrating", "pid": os.getpid()})
    with db.connect() as conn:
        before = introspect.write_counters(conn)
        catalog_before = introspect.catalog_version(conn)
    call_hook("before_migrate", project=project, service=service, database=settings.database,
              snapshot_path=str(snap.path))
    resource = f"Migration {service}"
    progress.event(resource, "Running", _describe(settings), state="working")
    started = time.monotonic()
    committed = True
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
        catalog_after = introspect.catalog_version(conn)
    outcome = "migrated" if error is None else type(error).__name__
    executed = cases.classify(result.executed) if settings.sql else cases.command_verdict(settings.command)
    snap.manifest["migration"] = {"service": service, "image": image, "outcome": outcome,
                                  "counters_before": before, "counters_after": after,
                                  # a write hold ran out while it ran: the window's writes may be the app's
                                  "app_wrote_in_window": hold_ran_out_before(project, service, time.time()),
                                  "tool": "sql" if settings.sql else "command",
                                  "own_writes": result.own_writes if settings.sql else None,
                                  "executed": executed.as_dict()}
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
    failed = Interrupted if interrupted else None
    try:
        if settings.sql and not committed:  # the runner knows: nothing of it stayed
            raise (failed or MigrationFailed)(
                f"{error.message}\n{UNCHANGED} (the migration failed inside one transaction, which "
                f"PostgreSQL rolled back, or before it changed anything; snapshot {snap.name} kept).",
                hint=error.hint)
        message = settle(project, db, snap, settings, progress,
                         catalog_unchanged=catalog_before == catalog_after)
    except ComposeAtomicError as exc:
        if isinstance(exc, (MigrationFailed, Interrupted, RolledBack)):
            raise
        raise RollbackFailed(f"{error.message}\n{exc.message}", hint=exc.hint) from None
    finally:
        clear_state(project, service)
    if message.startswith(UNCHANGED):
        raise (failed or MigrationFailed)(f"{error.message}\n{message}", hint=error.hint)
    raise (failed or RolledBack)(f"{error.message}\n{message}")


#: What is said when the database is left alone.
UNCHANGED = "The migration changed nothing; the database is left as it is"


def judge(db: Database, snap: Snapshot, progress: Progress, *, catalog_unchanged: bool = False):
    """How the schema and the tools' bookkeeping differ from the snapshot's.

    None when it cannot be told: the snapshot predates schema descriptions, or another session
    holds a lock on a table (reading a definition takes a share lock). ``catalog_unchanged``
    (no committed DDL since before the migration, see ``introspect.catalog_version``) spares
    reading the schema, which needs no table lock then.
    """
    import psycopg

    if "schema_objects" not in snap.manifest:
        return None
    try:
        with db.connect() as conn:
            conn.execute(f"SET lock_timeout = {int(JUDGE_LOCK_TIMEOUT * 1000)}")
            books = schemadiff.bookkeeping(conn)
            if catalog_unchanged:
                return schemadiff.diff({}, {}, snap.manifest.get("bookkeeping"), books)
            now = schemadiff.describe(conn)
    except psycopg.errors.LockNotAvailable:
        progress.warn(f"Database {db.service}", "cannot compare the schema with the snapshot's: "
                                                "another session holds a lock on a table")
        return None
    return schemadiff.diff(snap.manifest["schema_objects"], now, snap.manifest.get("bookkeeping"), books)


#: How long reading the schema after a migration waits for a table lock held by another session.
JUDGE_LOCK_TIMEOUT = 3.0


def settle(project: Project, db: Database, snap: Snapshot, settings: MigrateSettings | None,
           progress: Progress, *, catalog_unchanged: bool = False) -> str:
    """After a failed migration or the rollback of its release: leave the database, undo the
    migration in place, or restore the snapshot. Returns what was done, for a message; raises
    RollbackFailed (saying what is left and what the user can do) when none of them could be."""
    resource = f"Database {db.service}"
    migration = snap.manifest.get("migration") or {}
    executed = cases.Verdict(**migration["executed"]) if migration.get("executed") else None
    command = migration.get("tool") == "command"
    found = judge(db, snap, progress, catalog_unchanged=catalog_unchanged)
    if found is not None and found.empty and (command or (executed and executed.case == cases.UNDOABLE)):
        progress.event(resource, "Unchanged", "the migration changed nothing; the database is left as it is")
        return f"{UNCHANGED} (no restore, no session ended; snapshot {snap.name} kept)."
    rewritten = rows_changed_in_place(migration) if command else []
    if rewritten:
        progress.event(resource, "Rows changed", "during the migration, in existing tables "
                       f"({', '.join(rewritten)}): dropping what it added would not undo that", state="warning")
    if found is not None and found.only_additions and not rewritten and (
            command or (executed and executed.case == cases.UNDOABLE)):
        report = undo_additions(db, snap, found, lock_timeout=settings.lock_timeout if settings else 2.0,
                                progress=progress)
        progress.event(resource, "Undone", f"dropped {len(report.dropped)} added object(s)"
                       + (f" after {report.retries} lock retries" if report.retries else "")
                       + ", schema verified equal to the snapshot's", elapsed=report.seconds)
        text = (f"The migration only added objects ({found.describe_added()}): they were dropped and the "
                f"schema verified equal to snapshot {snap.name}'s; every row written since the snapshot "
                f"was kept, nothing was restored.")
        if report.bookkeeping:
            text += f" Bookkeeping put back: {', '.join(report.bookkeeping)}."
        if report.lost_with:
            text += f" What the migration wrote into them went with them: {', '.join(report.lost_with)}."
        if command:
            text += (" (The migration is a command: compose-atomic cannot see whether it also changed rows "
                     f"of existing tables; if it did, `compose-atomic db restore {snap.name} --force` undoes "
                     "that too, discarding the writes made since.)")
        return text
    return restore_or_refuse(project, db, snap, settings, found, progress)


def rows_changed_in_place(migration: dict[str, Any]) -> list[str]:
    """Tables that existed before a migration command and saw rows updated or deleted while it ran.

    A command's statements are not known, so a data migration (an UPDATE, a RunPython) shows only
    here; the app's own updates in that window look the same, and count too: when in doubt, the
    rows are not taken for untouched (the restore rules decide, and they never discard a write
    silently). The tools' own bookkeeping tables are left out.
    """
    before, after = migration.get("counters_before"), migration.get("counters_after")
    if not before or not after:
        return []
    found = []
    for table, now in after.items():
        then = before.get(table)
        if then is None or table.rsplit(".", 1)[-1] in schemadiff.BOOKKEEPING_TABLES:
            continue
        if now[1] != then[1] or now[2] != then[2]:
            found.append(table)
    return sorted(found)


def restore_or_refuse(project: Project, db: Database, snap: Snapshot, settings: MigrateSettings | None,
                      found, progress: Progress) -> str:
    """Only a restore undoes it: restore under the guard's rules, or say what is left."""
    force = settings.force_restore if settings else False
    left = _what_is_left(found, snap)
    try:
        report = restore(project, db, snap, force=force, progress=progress)
    except RestoreRefused as exc:
        raise RollbackFailed(
            f"The database keeps the migration's changes ({left}): only a restore of snapshot "
            f"{snap.name} undoes them, and it was refused: {exc.message}.{_unattributed(snap)}",
            hint=f"Every row is still there; the old version runs on the migrated schema. Either "
                 f"restore and discard those writes (compose-atomic db restore {snap.name} --force, or "
                 f"x-atomic.migrate.on_failure: restore), or keep them and fix the schema forward "
                 f"with a new migration.") from None
    except ComposeAtomicError as exc:
        raise RollbackFailed(
            f"The database keeps the migration's changes ({left}): restoring snapshot {snap.name} "
            f"failed: {exc.message}",
            hint=exc.hint or f"Restore by hand: compose-atomic db restore {snap.name}") from None
    text = f"The database was restored from snapshot {snap.name} and verified ({left} undone)"
    discarded = report.get("discarded") or {}
    if discarded:
        text += f"; the restore discarded {describe_writes(discarded)}"
    return text + "." + _unattributed(snap)


def _unattributed(snap: Snapshot) -> str:
    window = unattributed_window_writes(snap)
    if not window:
        return ""
    total = sum(window.values())
    tables = ", ".join(f"{t} ({n})" for t, n in sorted(window.items(), key=lambda kv: -kv[1]))
    return (f" While the migration command ran, {total} row{'s' if total != 1 else ''} were written in "
            f"{tables}: PostgreSQL cannot tell the app's from the migration's, so they are not counted "
            f"above, and a restore discards the app's among them.")


def _what_is_left(found, snap: Snapshot) -> str:
    if found is None:
        return "the schema cannot be compared with the snapshot's"
    parts = []
    if found.removed or found.changed:
        parts.append(found.describe_restore_reasons())
    if found.added:
        parts.append(f"added: {found.describe_added()}")
    if not parts:
        executed = (snap.manifest.get("migration") or {}).get("executed") or {}
        parts.append("; ".join(executed.get("reasons", [])[:3]) or "rows it changed")
    return "; ".join(parts)


def rollback(project: Project, service: str, reason: str | None = None,
             progress: Progress | None = None) -> str | None:
    """The release whose migration this deploy ran was rolled back: settle its database.

    Leaves the database as it is when the migration changed nothing, undoes it in place when it
    only added objects, restores the snapshot otherwise (under the guard's rules). Returns what
    was done; raises RollbackFailed (exit 4) when the database keeps the migration.
    """
    state = read_state(project, service)
    if not state or state.get("phase") != "migrated":
        return None
    settings = migrate_settings(project, service)
    progress = progress or Progress()
    db = Database.locate(project, state["database"])
    snap = find_snapshot(snapshot_dir(project), state["database"], state["snapshot"])
    progress.event(f"Database {db.service}", "Settling",
                   f"{service} rolled back{': ' + reason if reason else ''}", state="working")
    try:
        message = settle(project, db, snap, settings, progress)
    except RollbackFailed as exc:
        raise RollbackFailed(f"{service} was rolled back. {exc.message}", hint=exc.hint) from None
    clear_state(project, service)
    return message


def release_verdict(project: Project, settings: MigrateSettings, db: Database | None) -> cases.Verdict:
    """The case of the pending migration (see ``compose_atomic.migrate.cases``); with no
    reachable database every file counts as pending."""
    if not settings.sql:
        return cases.command_verdict(settings.command)
    from .sqlrunner import applied_files, discover, pending_statements

    files = discover(settings.sql, project.working_dir)
    applied = None
    if db is not None:
        with db.connect() as conn:
            applied = applied_files(conn)
    return cases.classify(pending_statements(files, applied))


def classify_release(project: Project, service: str) -> str:
    """One line for the plan (``up --dry-run``): which case ``service``'s release is in.

    Empty when the service has no migration. Reads the database only (the applied files),
    and when it is not running, counts every file as pending.
    """
    settings = migrate_settings(project, service)
    if settings is None:
        return ""
    db = None
    try:
        db = Database.locate(project, settings.database)
        db.connect().close()
    except ComposeAtomicError:
        db = None
    try:
        verdict = release_verdict(project, settings, db)
    except ComposeAtomicError as exc:
        return f"{cases.UNKNOWN}: {exc.message}"
    note = "" if db is not None or not settings.sql else \
        f" (database {settings.database} not running: every file counted as pending)"
    return f"migration: {verdict}{note}"


def _describe(settings: MigrateSettings) -> str:
    if settings.sql:
        return f"sql: {', '.join(settings.sql)}"
    return " ".join(settings.command or ())
