"""Registers ``compose-atomic init`` (a built-in plugin: see DEFAULT_PLUGINS)."""

from __future__ import annotations

import sys

import click

from compose_atomic import hookimpl


@hookimpl
def register_commands(cli):
    @cli.command()
    @click.option("--dry-run", "dry_run", is_flag=True, help="Print the diff; write nothing.")
    @click.option("-y", "--yes", is_flag=True, help="Write without asking.")
    @click.option("--json", "as_json", is_flag=True,
                  help="Print the proposal (annotations, notes, warnings, diff) as JSON instead of the diff.")
    @click.pass_context
    def init(ctx: click.Context, dry_run: bool, yes: bool, as_json: bool) -> None:
        """Propose x-atomic annotations for the compose files you have.

        Recognises web apps, PostgreSQL and an existing reverse proxy, explains each
        choice on stderr, warns about what blocks atomic deploys, and writes the
        annotations into the files (only adding lines) after showing the diff.
        """
        from .command import run_init

        options = ctx.obj
        code = run_init(options, dry_run=dry_run or bool(options and options.dry_run), yes=yes,
                        interactive=sys.stdin.isatty(), as_json=as_json)
        ctx.exit(code)
