"""The command line: Compose's global options, the commands compose-atomic owns,
and everything else passed through to ``docker compose`` unchanged.

Keep this module thin: it parses, then calls the capability modules. Heavy
imports (python-on-whales, httpx, psycopg) happen inside commands, never here,
so ``compose-atomic --help`` and pass-through commands start fast.
"""

from __future__ import annotations

import json
import os
import sys

import click

from . import __version__
from .completion.services import complete_services
from .errors import EXIT_INTERRUPTED, ComposeAtomicError
from .plugins import call_hook, get_plugins, load_plugins
from .progress import error_line
from .project import ComposeOptions, exec_compose

PASSTHROUGH_HELP = (
    "Every other command (ps, logs, down, exec, run, config, ...) is passed to "
    "`docker compose` unchanged, with its exit code."
)


#: ``up``'s flags that are compose-atomic's own (each takes a value): Compose never sees them.
OWN_UP_VALUES = ("--lock-wait", "--hold-writes")
#: ... and those that take none.
OWN_UP_FLAGS = ("--allow-maintenance",)


def without_lock_wait(args: list[str]) -> list[str]:
    """``up``'s arguments less compose-atomic's own (``--lock-wait``, ``--hold-writes`` [=]VALUE,
    ``--allow-maintenance``), for Compose."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in OWN_UP_VALUES:
            skip = True
        elif arg in OWN_UP_FLAGS:
            continue
        elif not arg.startswith(tuple(f"{flag}=" for flag in OWN_UP_VALUES)):
            kept.append(arg)
    return kept


class PassThrough(click.Command):
    """A command compose-atomic does not own: hand it to ``docker compose``."""

    def __init__(self, name: str) -> None:
        super().__init__(name, add_help_option=False, help="Passed through to docker compose.",
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                           "allow_interspersed_args": False})

    def invoke(self, ctx: click.Context) -> None:
        exec_compose(ctx.find_object(ComposeOptions) or ComposeOptions(), self.name, *ctx.args)


class RawArgsCommand(click.Command):
    """Keeps the exact arguments, so ``up`` can hand them to Compose verbatim."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["raw_args"] = list(args)
        return super().parse_args(ctx, args)


class ComposeAtomicGroup(click.Group):
    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or PassThrough(cmd_name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ComposeAtomicError as error:
            click.echo(error_line(str(error)), err=True)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo(error_line("interrupted"), err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=ComposeAtomicGroup, epilog=PASSTHROUGH_HELP,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-f", "--file", "files", multiple=True, metavar="FILE",
              help="Compose configuration files (repeatable; default: COMPOSE_FILE or compose.yaml).")
@click.option("-p", "--project-name", help="Project name (default: COMPOSE_PROJECT_NAME or the directory).")
@click.option("--project-directory", metavar="DIR", help="Alternate working directory.")
@click.option("--env-file", "env_files", multiple=True, metavar="FILE", help="Alternate environment file (repeatable).")
@click.option("--profile", "profiles", multiple=True, metavar="NAME",
              help="Profile to enable (repeatable; default: COMPOSE_PROFILES).")
@click.option("--ansi", type=click.Choice(["never", "always", "auto"]), help="Control ANSI control characters.")
@click.option("--progress", type=click.Choice(["auto", "tty", "plain", "json", "quiet"]),
              help="Type of progress output.")
@click.option("--parallel", type=int, help="Max parallelism for Compose, -1 for unlimited.")
@click.option("--compatibility", is_flag=True, help="Run compose in backward compatibility mode.")
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
@click.option("--all-resources", is_flag=True, help="Include all resources, even those not used by services.")
@click.version_option(__version__, "--version", prog_name="compose-atomic")
@click.pass_context
def cli(ctx: click.Context, files, project_name, project_directory, env_files, profiles, ansi,
        progress, parallel, compatibility, dry_run, all_resources) -> None:
    """Atomic deploys, guarded migrations and verified backups for Docker Compose.

    Use it wherever you use `docker compose`: annotate services with `x-atomic`
    and `compose-atomic up` replaces them without downtime.
    """
    if dry_run or "compose_atomic.docker" in sys.modules:
        from . import docker

        docker.configure(dry_run=dry_run)
    # else: docker's gateway is the default one (no dry run) when a command first imports it;
    # `compose-atomic lint` never does, and skips importing subprocess and the gateway.
    if ansi == "never":
        os.environ.setdefault("NO_COLOR", "1")
    ctx.obj = ComposeOptions(
        files=files, project_name=project_name, project_directory=project_directory,
        env_files=env_files, profiles=profiles, ansi=ansi, progress=progress, parallel=parallel,
        compatibility=compatibility, dry_run=dry_run, all_resources=all_resources,
    )


# `docker compose up`'s flags, so that any `up` line a user has still parses.
UP_FLAGS = [
    "abort-on-container-exit", "abort-on-container-failure", "always-recreate-deps",
    "attach-dependencies", "build", "dry-run", "force-recreate", "menu", "no-build", "no-color",
    "no-deps", "no-log-prefix", "no-recreate", "no-start", "quiet-build", "quiet-pull",
    "remove-orphans", "timestamps", "wait",
]
UP_VALUES = {"attach": True, "exit-code-from": False, "no-attach": True, "pull": False,
             "scale": True, "wait-timeout": False}


def _up_options(func):
    for flag in reversed(UP_FLAGS):
        func = click.option(f"--{flag}", is_flag=True)(func)
    for flag, multiple in UP_VALUES.items():
        func = click.option(f"--{flag}", multiple=multiple)(func)
    func = click.option("-d", "--detach", is_flag=True, help="Run in the background.")(func)
    func = click.option("-t", "--timeout", type=int, help="Shutdown timeout in seconds.")(func)
    func = click.option("-V", "--renew-anon-volumes", is_flag=True)(func)
    func = click.option("-w", "--watch", is_flag=True)(func)
    func = click.option("-y", "--yes", is_flag=True)(func)
    return func


@cli.command(cls=RawArgsCommand)
@_up_options
@click.option("--lock-wait", metavar="DURATION", help="Wait this long for another deploy of the project to finish.")
@click.option("--hold-writes", metavar="DURATION",
              help="Hold requests at the proxy during this deploy's migrations, at most DURATION, so that a "
                   "restore loses nothing (as x-atomic.migrate.hold_writes, which it overrides).")
@click.option("--allow-maintenance", is_flag=True,
              help="Deploy a service whose route is in maintenance (behind the page) instead of refusing.")
@click.argument("services", nargs=-1, shell_complete=complete_services)
@click.pass_context
def up(ctx: click.Context, services: tuple[str, ...], lock_wait: str | None, hold_writes: str | None,
       allow_maintenance: bool, **flags) -> None:
    """Create and start containers; replace x-atomic services without downtime.

    A project without x-atomic gets exactly `docker compose up`. Accepts every
    `docker compose up` flag.
    """
    from .config import validate_project
    from .errors import ConfigError
    from .project import load_project

    options: ComposeOptions = ctx.obj
    raw = without_lock_wait(ctx.meta["raw_args"])
    try:
        project = load_project(options)
    except ConfigError:
        exec_compose(options, "up", *raw)  # Compose explains its own errors, with its own exit code
        return
    if not project.is_atomic:
        exec_compose(options, "up", *raw)
        return
    validate_project(project)
    from .deploy.up import up as deploy_up

    code = deploy_up(project, services=list(services), flags=flags, raw_args=raw, lock_wait=lock_wait,
                     hold_writes=hold_writes, allow_maintenance=allow_maintenance)
    ctx.exit(code)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def check(ctx: click.Context, as_json: bool) -> None:
    """Validate the project's x-atomic annotations (exit 2 when invalid)."""
    from .config import load_valid_project

    project = load_valid_project(ctx.obj)
    summary = {"project": project.name, "valid": True,
               "services": {s: sorted(project.service_x_atomic(s)) for s in project.atomic_services},
               "project_keys": sorted(project.x_atomic)}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"{project.name}: x-atomic configuration is valid "
                   f"({len(project.atomic_services)} annotated services)")


@cli.command()
@click.pass_context
def schema(ctx: click.Context) -> None:
    """Print the x-atomic JSON Schema, with keys added by plugins."""
    from .config import full_schema

    click.echo(json.dumps(full_schema(), indent=2, ensure_ascii=False))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--all", "show_all", is_flag=True, help="Include the built-in default plugins.")
def plugins(as_json: bool, show_all: bool) -> None:
    """List installed plugins and the hooks they implement."""
    found = [p for p in get_plugins() if show_all or not p["builtin"]]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("no third-party plugins installed (use --all to list the built-in ones)", err=True)
    for plugin in found:
        version = f" {plugin['version']}" if plugin.get("version") else ""
        click.echo(f"{plugin['name']}{version}: {', '.join(plugin['hooks'])}")


load_plugins()
call_hook("register_commands", cli=cli)


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="compose-atomic")
    finally:
        # The process ends: what is alive is frozen, so that the interpreter's last full
        # collection has nothing to walk (9 ms of every run, 17 ms of a 342-file lint: bench/lint).
        # Reference counting, atexit handlers and the flush of open files run as before.
        import gc

        gc.freeze()
