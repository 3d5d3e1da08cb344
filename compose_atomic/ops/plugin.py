"""Default plugin of the operator's view: ``status`` (docs/operations.md).

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
        from ..config import load_valid_project
        from ..errors import UsageError
        from .status import collect, render

        project = load_valid_project(ctx.obj)
        if service and service not in project.services:
            raise UsageError(f"no such service: {service}; services are: {', '.join(project.services)}")
        data = collect(project, service)
        if as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            click.echo(render(data, _colour()))
