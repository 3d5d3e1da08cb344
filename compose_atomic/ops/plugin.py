"""Default plugin of the operator's view: ``status`` and ``prune`` (docs/operations.md).

Top-level imports stay light (click only): the commands import their modules when they run.
"""

from __future__ import annotations

import json
import os
import sys

import click

from ..hookspecs import hookimpl


def _colour() -> bool:
    """Colour and symbols on a terminal; plain with NO_COLOR, TERM=dumb or a pipe."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return sys.stdout.isatty()


@hookimpl
def register_commands(cli):
    @cli.command()
    @click.argument("service", required=False)
    @click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
    @click.pass_context
    def status(ctx: click.Context, service: str | None, as_json: bool) -> None:
        """What serves and how healthy, the last deploys, backups, free disk, what needs a look."""
        from ..config import validate_project
        from ..errors import UsageError
        from .status import collect, gather, render

        project, view = gather(ctx.obj)
        if service and service not in project.services:
            raise UsageError(f"no such service: {service}; services are: {', '.join(project.services)}")
        try:
            data = collect(project, service, view)
        except (AttributeError, KeyError, TypeError, ValueError):
            # Validation is left out of the fast path (the schema library alone costs ~0.3 s):
            # only an annotation it would reject can trip the reading, and then it explains it.
            validate_project(project)
            raise
        if as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            click.echo(render(data, _colour()))

    @cli.command()
    @click.option("--dry-run", "dry_run", is_flag=True, help="List what would be removed; remove nothing.")
    @click.option("--keep", type=click.IntRange(min=1), metavar="N",
                  help="Keep the images of the last N releases of each service (default: x-atomic.retain.releases, 5).")
    @click.option("--json", "as_json", is_flag=True, help="Print what was (or would be) removed as JSON.")
    @click.pass_context
    def prune(ctx: click.Context, dry_run: bool, keep: int | None, as_json: bool) -> None:
        """Remove this project's old release images, old snapshots and stopped leftover containers."""
        from ..config import load_valid_project
        from ..deploy.state import project_lock
        from ..progress import Progress
        from .disk import human
        from .prune import apply, plan_prune

        project = load_valid_project(ctx.obj)
        dry_run = dry_run or project.options.dry_run
        progress = Progress(project.options.progress, dry_run=dry_run)
        if dry_run:
            plan = plan_prune(project, keep)
            problems: list[str] = []
        else:
            with project_lock(project, 0):  # never while a deploy runs: it may need an "old" image back
                plan = plan_prune(project, keep, holding_lock=True)
                problems = apply(plan, progress)
        if as_json:
            click.echo(json.dumps({**plan.as_dict(), "dry_run": dry_run, "problems": problems}, indent=2))
        else:
            verb = "would remove" if dry_run else "removed"
            for item in plan.images:
                click.echo(f"{verb}\timage\t{item.service}\t{(item.tags or [item.id])[0]}\t{human(item.size)}\t{item.why}")
            for snap in plan.snapshots:
                click.echo(f"{verb}\tsnapshot\t{snap['database']}\t{snap['name']}\t{human(snap['size'])}\t{snap['reason']}")
            for c in plan.containers:
                click.echo(f"{verb}\tcontainer\t{c['service']}\t{c['name']}\t{human(c['size'])}\tstopped, left by a deploy")
            for item in plan.kept:
                click.echo(f"kept\timage\t{item.service}\t{(item.tags or [item.id])[0]}\t{human(item.size)}\t{item.why}",
                           err=True)
            for note in plan.skipped:
                click.echo(f"skipped: {note}", err=True)
            click.echo(f"{'would free' if dry_run else 'freed'} up to {human(plan.freed_bytes)} ({plan.summary()})",
                       err=True)
        if problems:
            for problem in problems:
                click.echo(f"error: {problem}", err=True)
            ctx.exit(1)


@hookimpl
def after_deploy(project, service, old_container, new_container, outcome):
    """``x-atomic.retain.after_deploy``: prune once a service's deploy succeeded."""
    if outcome != "deployed" or not (project.x_atomic.get("retain") or {}).get("after_deploy"):
        return
    from ..progress import Progress
    from .prune import apply, plan_prune

    progress = Progress(project.options.progress)
    plan = plan_prune(project)
    plan.containers = []  # the deploy holds the lock and is still finishing: leave containers to `prune`
    for problem in apply(plan, progress):
        progress.warn("prune", problem)


@hookimpl
def before_changes(project, plans):
    """The disk pre-flight: stop (exit 1) before anything changes when the deploy would not fit."""
    from .disk import preflight

    preflight(project, plans)
