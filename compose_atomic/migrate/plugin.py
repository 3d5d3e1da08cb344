"""The migration guard as a built-in plugin: deploy hooks and the ``db`` commands.

Top-level imports stay light (click, the hook marker): psycopg and friends load
only when a command or hook actually runs.
"""

from __future__ import annotations

import json

import click

from compose_atomic import hookimpl


def _progress(project):
    from ..progress import Progress

    return Progress(project.options.progress, dry_run=False)


# ---- deploy hooks ---------------------------------------------------------------------


@hookimpl
def before_deploy(project, service, old_container, new_image):
    """lint -> snapshot -> migrate; raises (keeping the old app serving) on failure."""
    if not (project.service_x_atomic(service).get("migrate")):
        return
    from .guard import guarded_migrate

    guarded_migrate(project, service, new_image, _progress(project))


@hookimpl
def rollback_deploy(project, service, reason):
    """Settle the database of a rolled-back release: leave it, undo the migration in place, or restore."""
    from .guard import rollback

    rollback(project, service, reason, _progress(project))


@hookimpl
def after_deploy(project, service, old_container, new_container, outcome):
    """The deploy is over: forget which snapshot guarded it."""
    from .guard import clear_hold_ran_out, clear_state, read_state

    clear_hold_ran_out(project, service)
    if outcome != "rollback-failed" and read_state(project, service) is not None:
        clear_state(project, service)


@hookimpl
def after_write_hold(project, service, database, timed_out):
    """The write hold ran out: the app writes again, maybe while the migration still runs."""
    if timed_out:
        from .guard import mark_hold_ran_out

        mark_hold_ran_out(project, service)


# ---- commands -------------------------------------------------------------------------


def _load(ctx: click.Context):
    from ..config import load_valid_project

    return load_valid_project(ctx.find_root().obj)


@hookimpl
def register_commands(cli):
    @cli.group()
    def db():
        """Snapshots, verified restores and guarded migrations of PostgreSQL services."""

    service_option = click.option("--service", metavar="SERVICE",
                                  help="The PostgreSQL service (default: the one migrate.database names).")

    @db.command("snapshot")
    @service_option
    @click.option("--json", "as_json", is_flag=True, help="Print the snapshot's manifest as JSON.")
    @click.pass_context
    def snapshot_cmd(ctx, service, as_json):
        """Take a verified snapshot (pg_dump -Fc inside the container)."""
        from .database import Database
        from .settings import database_service, snapshot_dir
        from .snapshot import take_snapshot

        project = _load(ctx)
        db_service = database_service(project, service)
        db_ = Database.locate(project, db_service)
        snap = take_snapshot(project, db_, snapshot_dir(project), progress=_progress(project))
        click.echo(json.dumps(snap.manifest, indent=2) if as_json else str(snap.path))

    @db.command("snapshots")
    @service_option
    @click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
    @click.pass_context
    def snapshots_cmd(ctx, service, as_json):
        """List snapshots, oldest first."""
        from .settings import database_service, snapshot_dir
        from .snapshot import list_snapshots

        project = _load(ctx)
        db_service = database_service(project, service)
        snaps = list_snapshots(snapshot_dir(project), db_service)
        if as_json:
            click.echo(json.dumps([{k: s.manifest[k] for k in
                                    ("name", "created", "reason", "database_service", "dbname",
                                     "size", "sha256")} | {"path": str(s.path)} for s in snaps],
                                  indent=2))
            return
        if not snaps:
            click.echo(f'no snapshots of "{db_service}"', err=True)
        for s in snaps:
            m = s.manifest
            click.echo(f"{m['name']}  {m['created']}  {m['reason']:<11}  "
                       f"{m['size'] / (1 << 20):8.1f} MiB  {len(m['tables'])} tables")

    @db.command("restore")
    @click.argument("name", required=False)
    @click.option("--latest", is_flag=True, help="Restore the newest snapshot.")
    @service_option
    @click.option("--target-db", metavar="NAME", help="Restore into this database instead of the live one.")
    @click.option("--force", is_flag=True,
                  help="Restore even if it discards writes made since the snapshot.")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @click.pass_context
    def restore_cmd(ctx, name, latest, service, target_db, force, as_json):
        """Restore a snapshot, verified against its manifest.

        Refuses (exit 1, nothing changed) when rows were written since the
        snapshot, naming the tables, unless --force.
        """
        from ..errors import UsageError
        from ..statedir import find_snapshot
        from .database import Database
        from .restore import restore
        from .settings import database_service, snapshot_dir

        if bool(name) == latest:
            raise UsageError("name a snapshot or pass --latest (compose-atomic db snapshots lists them)")
        project = _load(ctx)
        db_service = database_service(project, service)
        snap = find_snapshot(snapshot_dir(project), db_service, name)
        db_ = Database.locate(project, db_service)
        report = restore(project, db_, snap, target_db=target_db, force=force,
                         progress=_progress(project))
        if as_json:
            click.echo(json.dumps(report, indent=2))

    @db.command("check-rollback")
    @click.argument("service", required=False)
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    @click.pass_context
    def check_rollback_cmd(ctx, service, as_json):
        """Would the previous image run on the new release's schema? Checked on a copy.

        Restores the latest snapshot into a scratch copy of the database, applies the new
        release's migration there, starts SERVICE's running (previous) image against it and
        runs its health gate. Exit 0 when safe, 1 when not. The live database is never touched.
        """
        from ..errors import UsageError
        from .checkrollback import SAFE, check_rollback, require_safe

        project = _load(ctx)
        if service is None:
            migrating = [s for s in project.services if project.service_x_atomic(s).get("migrate")]
            if len(migrating) != 1:
                raise UsageError("name the service to check" + (f" (one of: {', '.join(migrating)})"
                                                                 if migrating else ": none has x-atomic.migrate"))
            service = migrating[0]
        elif service not in project.services:
            raise UsageError(f'no service "{service}" in the project')
        report = check_rollback(project, service, _progress(project))
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2))
        elif report.safe:
            click.echo(f"{service}: {SAFE} (previous image {report.previous_image} passed its health gate "
                       f"on a copy of {report.snapshot} with the new migration applied)")
        require_safe(report)

    @db.command("migrate")
    @click.argument("service")
    @click.option("--image", metavar="IMAGE", help="Run the migration in this image (default: the service's).")
    @click.pass_context
    def migrate_cmd(ctx, service, image):
        """Run SERVICE's x-atomic.migrate, guarded by a snapshot, without a deploy."""
        from ..errors import UsageError
        from .guard import clear_state, guarded_migrate

        project = _load(ctx)
        if service not in project.services:
            raise UsageError(f'no service "{service}" in the project')
        if not project.service_x_atomic(service).get("migrate"):
            raise UsageError(f'service "{service}" has no x-atomic.migrate')
        snap = guarded_migrate(project, service, image, _progress(project))
        clear_state(project, service)
        click.echo(str(snap.path) if snap else "")


@hookimpl
def explain_plan(project, service):
    """``up --dry-run``: which case the service's migration is in (undoable in place, restore, unknown)."""
    from .guard import classify_release

    return classify_release(project, service) or None
