"""PITR as a built-in plugin: ``compose-atomic pitr list|base|verify|restore`` and config checks.

Its own command group rather than options on ``backup``: the ``backup`` group belongs to the
dump capability (another plugin, its own restore semantics: a new database from a dump file),
and a hook cannot safely add options to a command another plugin defines. PITR restores a whole
cluster into a new volume, a different operation with a different target.
"""

from __future__ import annotations

import json

import click

from compose_atomic import hookimpl

from ..backup import EXTENSIONS


def extend(project, document) -> None:
    """:func:`compose_atomic.pitr.generate.extend`, imported when `backup generate` runs
    (not when any command starts: the generator pulls in yaml and the backup settings)."""
    from .generate import extend as pitr_extend

    pitr_extend(project, document)


# `backup generate` adds the PITR sidecar and the database overrides through this.
if not any(getattr(f, "__qualname__", "") == "extend" and getattr(f, "__module__", "") == __name__
           for f in EXTENSIONS):
    EXTENSIONS.append(extend)


@hookimpl
def validate_config(project):
    from ..config import ConfigProblem
    from ..errors import ConfigError
    from .settings import pitr_settings

    problems = []
    for name in project.atomic_services:
        backup = project.service_x_atomic(name).get("backup")
        if isinstance(backup, dict) and isinstance(backup.get("pitr"), dict):
            try:
                pitr_settings(project, name)
            except ConfigError as error:
                problems.append(ConfigProblem(("backup", "pitr"), error.message, name))
    return problems


service_option = click.option("--service", metavar="NAME", help="The database service (when several have PITR).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def _project(ctx: click.Context):
    from ..backup.host import with_override
    from ..project import load_project

    return with_override(load_project(ctx.obj))


def _failed(project, sidecar, error: str, what: str, hint: str | None = None):
    from ..errors import BackupFailed
    from ..plugins import call_hook

    call_hook("on_backup_failure", project=project, service=sidecar.service, error=error)
    raise BackupFailed(f"{what} of {sidecar.service} failed: {error}", hint=hint)


@hookimpl
def register_commands(cli):
    @cli.group()
    def pitr():
        """Point-in-time recovery of PostgreSQL (x-atomic.backup.pitr)."""

    @pitr.command(name="list")
    @service_option
    @json_option
    @click.pass_context
    def list_(ctx, service, as_json):
        """The base backups, the window you can restore to, and the sidecar's statuses."""
        from .host import exec_sidecar, failure, fmt_epoch, parse_list, pick

        project = _project(ctx)
        sidecar = pick(project, service)
        result = exec_sidecar(project, sidecar, "list", timeout=60)
        if not result.ok:
            from ..errors import BackupFailed

            raise BackupFailed(f"cannot read the PITR state of {sidecar.service}: {failure(result)}",
                               hint=f"Is the sidecar running? compose-atomic ps {sidecar.name}")
        data = {"service": sidecar.service, **parse_list(result.stdout)}
        if as_json:
            click.echo(json.dumps(data, indent=2))
            return
        for b in data["bases"]:
            click.echo(f"{b['name']}\t{b['kind']}\t{fmt_epoch(b['end'])}\t{b['size_kb']} kB"
                       + (f"\ton {b['parent']}" if b["parent"] else ""))
        window = data["window"]
        if window:
            click.echo(f"restorable from {fmt_epoch(window['from'])} to {fmt_epoch(window['to'])} "
                       f"({window['wal_segments']} WAL segments)", err=True)
        else:
            click.echo("no base backup yet: nothing can be restored", err=True)
        for kind, st in data["status"].items():
            click.echo(f"{kind}: {st['result']}: {st['message']}", err=True)

    @pitr.command()
    @service_option
    @click.pass_context
    def base(ctx, service):
        """Take a base backup now (incremental on PostgreSQL 17 where possible)."""
        from .host import exec_sidecar, failure, lines, pick

        project = _project(ctx)
        sidecar = pick(project, service)
        click.echo(f"base backup of {sidecar.service} ...", err=True)
        result = exec_sidecar(project, sidecar, "base")
        if not result.ok:
            _failed(project, sidecar, failure(result), "the base backup", "Earlier backups are untouched.")
        for name, kind, size, ms in lines(result.stdout, "BASE"):
            click.echo(name)
            click.echo(f"{kind} base backup {name}: {size} kB in {int(ms) / 1000:.1f}s", err=True)

    @pitr.command()
    @service_option
    @json_option
    @click.pass_context
    def verify(ctx, service, as_json):
        """Restore the newest base backup + WAL into a throwaway server up to now; compare row counts."""
        from .host import exec_sidecar, failure, lines, pick

        project = _project(ctx)
        sidecar = pick(project, service)
        click.echo(f"verifying the PITR chain of {sidecar.service} ...", err=True)
        result = exec_sidecar(project, sidecar, "verify")
        if not result.ok:
            _failed(project, sidecar, failure(result), "verification", "Backups are untouched.")
        for base_name, lsn, ms, tables in lines(result.stdout, "VERIFIED"):
            data = {"service": sidecar.service, "base": base_name, "lsn": lsn, "rto_seconds": int(ms) / 1000,
                    "tables": int(tables)}
            if as_json:
                click.echo(json.dumps(data, indent=2))
            else:
                click.echo(f"verified {base_name} + WAL to {lsn}: {tables} tables match, "
                           f"restore took {int(ms) / 1000:.1f}s")

    @pitr.command()
    @service_option
    @click.option("--to-time", "to_time", metavar="TIME",
                  help='The moment to restore to, ISO 8601 with a zone: "2026-12-01 14:03:00Z".')
    @click.option("--latest", is_flag=True, help="Everything the sidecar has received.")
    @click.option("--target-volume", metavar="NAME",
                  help="The new volume to restore into (default: <project>_<db>-restore-<time>); never an existing one.")
    @json_option
    @click.pass_context
    def restore(ctx, service, to_time, latest, target_volume, as_json):
        """Restore the database as it was at a moment into a new volume, verified on the way."""
        from .. import docker
        from ..errors import UsageError
        from .host import (failure, lines, new_volume, parse_time, pick, restore_args, run_sidecar,
                           swap_steps, RESTORE_MOUNT)

        if bool(to_time) == bool(latest):
            raise UsageError("give exactly one of --to-time TIME or --latest")
        when = parse_time(to_time) if to_time else None
        project = _project(ctx)
        sidecar = pick(project, service)
        volume = new_volume(project, sidecar, target_volume)
        target = f"{when:%Y-%m-%d %H:%M:%S.%f}Z" if when else "the latest WAL received"
        click.echo(f"restoring {sidecar.service} to {target} into the new volume {volume} ...", err=True)
        result = run_sidecar(project, sidecar, "restore", RESTORE_MOUNT, *restore_args(when), volume=volume)
        if not result.ok:
            docker.run(docker.volume_remove(volume))
            _failed(project, sidecar, failure(result), "the restore",
                    "Production was not touched; the new volume was removed.")
        rows = [{"database": db, "table": table, "rows": int(n)} for db, table, n in lines(result.stdout, "ROWS")]
        done = lines(result.stdout, "RESTORED")[-1]
        base_name, ms, reached, *phases = (done + [""] * 6)[:6]
        phase_seconds = {name: int(value) / 1000 for name, value in zip(("verify_base", "copy", "replay"), phases)
                         if value.isdigit()}
        if as_json:
            click.echo(json.dumps({"service": sidecar.service, "volume": volume, "base": base_name,
                                   "target": when.isoformat() if when else "latest", "seconds": int(ms) / 1000,
                                   "phases": phase_seconds, "recovery": reached, "tables": rows}, indent=2))
        else:
            click.echo(volume)
            for row in rows:
                click.echo(f"  {row['database']}.{row['table']}: {row['rows']} rows", err=True)
        click.echo(f"restored from base backup {base_name} in {int(ms) / 1000:.1f}s ({reached}); "
                   f"the server recovered, promoted and every table was counted", err=True)
        click.echo(swap_steps(project, sidecar, volume), err=True)
