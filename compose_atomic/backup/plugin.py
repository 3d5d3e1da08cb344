"""The backup capability as a built-in plugin: ``compose-atomic backup ...`` commands,
the rclone offsite target, and configuration checks. Heavy work lives in the
sibling modules, imported inside the commands to keep ``--help`` fast.
"""

from __future__ import annotations

import json
import time

import click

from compose_atomic import hookimpl


@hookimpl
def register_offsite_targets(register):
    from .generate import rclone_builder

    register("rclone", rclone_builder)


@hookimpl
def validate_config(project):
    from ..config import ConfigProblem, did_you_mean
    from . import cron

    problems = []
    for name in project.atomic_services:
        backup = project.service_x_atomic(name).get("backup")
        if not isinstance(backup, dict):
            continue
        schedule = backup.get("schedule")
        if isinstance(schedule, str):
            try:
                cron.normalize(schedule)
            except cron.CronError as error:
                problems.append(ConfigProblem(("backup", "schedule"), str(error), name))
        known = offsite_targets()
        for target in backup.get("offsite") or {}:
            if target not in known:
                problems.append(ConfigProblem(
                    ("backup", "offsite", target),
                    f"unknown offsite target; installed: {', '.join(sorted(known))}."
                    + did_you_mean(target, list(known)), name))
    return problems


def offsite_targets() -> dict:
    """Offsite targets from every plugin (``register_offsite_targets``)."""
    from ..plugins import call_hook, load_plugins

    load_plugins()
    targets: dict = {}

    def register(name: str, build) -> None:
        targets[name] = build

    call_hook("register_offsite_targets", register=register)
    return targets


def _before_backup(project, service: str) -> None:
    """Call before_backup; a plugin that raises stops the backup with its reason, not a traceback."""
    from ..errors import BackupFailed, HookFailed
    from ..plugins import call_hook

    try:
        call_hook("before_backup", project=project, service=service)
    except HookFailed as error:
        raise BackupFailed(f"a before_backup hook stopped the backup of {service}: "
                           f"{error.__cause__.__class__.__name__}: {error.__cause__}") from None


def _project(ctx: click.Context):
    from ..project import load_project
    from .host import with_override

    return with_override(load_project(ctx.obj))


service_option = click.option("--service", metavar="NAME", help="The database service (when several have backups).")


@hookimpl
def register_commands(cli):
    @cli.group()
    def backup():
        """Verified, rotated, offsite PostgreSQL backups (x-atomic.backup)."""

    @backup.command()
    @click.option("-o", "--output", default="compose.backup.yml", show_default=True, metavar="FILE",
                  help="Where to write the Compose override file ('-' for stdout).")
    @click.pass_context
    def generate(ctx, output):
        """Write the Compose override file with the backup sidecars."""
        from pathlib import Path

        from ..config import load_valid_project
        from .generate import build, render, write_password_files

        project = load_valid_project(ctx.obj)
        password_files: dict = {}
        document = build(project, offsite_targets(), password_files)
        text = render(project, document, output if output != "-" else "compose.backup.yml")
        write_password_files(password_files)
        for path in password_files:
            click.echo(f"note: the sidecar reads the POSTGRES_PASSWORD Compose resolved from {path} (0600, "
                       "rewritten by every generate); a Docker secret with POSTGRES_PASSWORD_FILE is "
                       "recommended (docs/backups.md)", err=True)
        if output == "-":
            click.echo(text, nl=False)
            return
        path = Path(output)
        if not path.is_absolute():
            path = project.working_dir / path
        if path.exists() and path.read_text() == text:
            click.echo(f"{path} is up to date", err=True)
            return
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
        names = ", ".join(document["services"])
        click.echo(f"wrote {path} ({names}); start it with: compose-atomic "
                   + " ".join(f"-f {Path(f).name}" for f in project.files) + f" -f {path.name} up -d", err=True)

    @backup.command()
    @service_option
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @click.pass_context
    def now(ctx, service, as_json):
        """Take a backup now, with the sidecar's checks and verification."""
        from ..errors import BackupFailed
        from ..plugins import call_hook
        from .host import failure, pick, require_running, result_lines, run_sidecar

        project = _project(ctx)
        sidecar = pick(project, service)
        require_running(project, sidecar, "backup now")
        _before_backup(project, sidecar.service)
        proc = run_sidecar(project, sidecar, "now")
        if proc.returncode != 0:
            error = failure(proc.stdout or "", proc.returncode)
            call_hook("on_backup_failure", project=project, service=sidecar.service, error=error)
            raise BackupFailed(f"backup of {sidecar.service} failed: {error}",
                               hint="Existing backups are untouched.")
        written = []
        for path, size, checksum, verified, seconds in result_lines(proc.stdout, "OK"):
            call_hook("after_backup", project=project, service=sidecar.service, path=path, size=int(size),
                      checksum=checksum, verified=verified)
            written.append({"path": path, "size": int(size), "sha256": checksum, "verified": verified,
                            "seconds": int(seconds)})
            if not as_json:
                click.echo(f"{path}\t{size}\t{checksum}\t{verified}\t{seconds}s")
        if as_json:
            click.echo(json.dumps({"service": sidecar.service, "backups": written}, indent=2))

    @backup.command(name="list")
    @service_option
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @click.pass_context
    def list_(ctx, service, as_json):
        """List the verified backups (newest last) and the last run's result."""
        from ..errors import BackupFailed
        from .host import parse_manifest, pick, run_sidecar

        project = _project(ctx)
        sidecar = pick(project, service)
        proc = run_sidecar(project, sidecar, "list", timeout=300)
        if proc.returncode != 0:
            raise BackupFailed(f"cannot read the backups of {sidecar.service} (exit {proc.returncode})")
        backups, status = parse_manifest(proc.stdout)
        if as_json:
            click.echo(json.dumps({"service": sidecar.service, "backups": backups, "status": status}, indent=2))
            return
        for b in backups:
            when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(b["epoch"]))
            click.echo(f"{b['name']}\t{when}\t{b['size']}\t{b['verified']}\t{b['sha256'][:12]}")
        if status:
            click.echo(f"last run: {status['result']}: {status['message']}", err=True)

    def _target(latest, file):
        if latest and file:
            raise click.UsageError("give either --latest or FILE, not both")
        return "" if latest or not file else file

    @backup.command()
    @service_option
    @click.option("--latest", is_flag=True, help="The newest backup (the default).")
    @click.argument("file", required=False)
    @click.pass_context
    def verify(ctx, service, latest, file):
        """Check a backup: checksum, archive listing, restore into a throwaway server."""
        from ..errors import BackupFailed
        from ..plugins import call_hook
        from .host import failure, pick, run_sidecar

        project = _project(ctx)
        sidecar = pick(project, service)
        proc = run_sidecar(project, sidecar, "verify", _target(latest, file))
        if proc.returncode != 0:
            error = failure(proc.stdout or "", proc.returncode)
            call_hook("on_backup_failure", project=project, service=sidecar.service, error=error)
            raise BackupFailed(f"verification failed: {error}")
        for line in proc.stdout.splitlines():
            if line.startswith("VERIFIED\t"):
                click.echo(f"verified {line.split(chr(9))[1]}")

    @backup.command()
    @service_option
    @click.option("--latest", is_flag=True, help="The newest backup (the default).")
    @click.option("--target-db", metavar="NAME",
                  help="The new database to restore into (default: <db>_restore_<time>); never an existing one.")
    @click.argument("file", required=False)
    @click.pass_context
    def restore(ctx, service, latest, target_db, file):
        """Restore a backup into a new database on the database server."""
        from ..errors import BackupFailed, UsageError
        from ..plugins import call_hook
        from .host import failure, parse_manifest, pick, require_running, run_sidecar

        project = _project(ctx)
        sidecar = pick(project, service)
        require_running(project, sidecar, "backup restore")
        chosen = _target(latest, file)
        if not target_db:
            listing = run_sidecar(project, sidecar, "list")
            backups, _ = parse_manifest(listing.stdout or "")
            match = [b for b in backups if not chosen or b["name"] == chosen.rsplit("/", 1)[-1]]
            if not match:
                raise UsageError(f"no backup named {chosen!r}" if chosen else "there is no backup to restore",
                                 hint="compose-atomic backup list shows them.")
            target_db = f"{match[-1]['database']}_restore_{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
        proc = run_sidecar(project, sidecar, "restore", chosen, target_db)
        if proc.returncode != 0:
            error = failure(proc.stdout or "", proc.returncode)
            call_hook("on_backup_failure", project=project, service=sidecar.service, error=error)
            raise BackupFailed(f"restore failed: {error}", hint="Production was not touched.")
        click.echo(target_db)
        click.echo(f"restored into the new database {target_db}; row counts match the source at dump time",
                   err=True)
