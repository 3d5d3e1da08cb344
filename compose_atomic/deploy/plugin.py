"""Default plugin of the deploy capability: ``history``, ``rollback`` and a proxy-aware ``down``.

Top-level imports stay light (click only): the commands import the deploy
machinery when they run.
"""

from __future__ import annotations

import json

import click

from ..hookspecs import hookimpl


def _project(ctx: click.Context):
    from ..config import load_valid_project

    return load_valid_project(ctx.obj)


def _short(image_id: str | None) -> str:
    if not image_id:
        return "-"
    return image_id[7:19] if image_id.startswith("sha256:") else image_id


@hookimpl
def register_commands(cli):
    @cli.command()
    @click.argument("service", required=False)
    @click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
    @click.pass_context
    def history(ctx: click.Context, service: str | None, as_json: bool) -> None:
        """Show past deploys: time, service, outcome, image digests (newest last)."""
        from .state import History

        project = _project(ctx)
        if service and service not in project.services:
            from ..errors import UsageError

            raise UsageError(f"no such service: {service}; services are: {', '.join(project.services)}")
        entries = History(project).entries(service)
        if as_json:
            click.echo(json.dumps(entries, indent=2))
            return
        if not entries:
            click.echo("no deploys recorded yet", err=True)
            return
        click.echo(f"{'TIME':<25} {'SERVICE':<14} {'OUTCOME':<16} {'FROM':<13} {'TO':<13} REASON")
        for e in entries:
            click.echo(f"{e.get('time', ''):<25} {e.get('service', ''):<14} {e.get('outcome', ''):<16} "
                       f"{_short(e.get('old_image_id')):<13} {_short(e.get('new_image_id')):<13} "
                       f"{e.get('reason', '')}")

    @cli.command()
    @click.argument("service", required=False)
    @click.option("--to", "to", metavar="DIGEST", help="Image id (or prefix) from `history`; default: the previous one.")
    @click.option("--lock-wait", metavar="DURATION", help="Wait this long for another deploy to finish.")
    @click.pass_context
    def rollback(ctx: click.Context, service: str | None, to: str | None, lock_wait: str | None) -> None:
        """Deploy a previous image of a service again, health-gated like any deploy."""
        from .rollback import rollback as do_rollback

        code = do_rollback(_project(ctx), ctx.obj, service=service, to=to, lock_wait=lock_wait)
        ctx.exit(code)

    @cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    @click.pass_context
    def down(ctx: click.Context) -> None:
        """Stop and remove the project (and compose-atomic's proxy); arguments as `docker compose down`."""
        from .. import docker
        from ..project import exec_compose, load_project

        try:
            name = load_project(ctx.obj).name
        except Exception:  # noqa: BLE001 - Compose will explain a broken project itself
            name = None
        if name:
            label = f"label=dev.compose-atomic.proxy={name}"
            found = docker.run(docker.docker("ps", "-a", "--format", "{{.Names}}", "--filter", label)).stdout.split()
            if found:
                _say_removed("Container", sorted(found), docker.run(docker.remove(*found)))
            if {"-v", "--volumes"} & set(ctx.args):  # the proxy's certificates go with the volumes
                volumes = docker.run(docker.docker("volume", "ls", "-q", "--filter", label)).stdout.split()
                if volumes:
                    _say_removed("Volume", volumes, docker.run(docker.docker("volume", "rm", *volumes, changes=True)))
        exec_compose(ctx.obj, "down", *ctx.args)


def _say_removed(kind: str, names: list[str], result) -> None:
    """Compose-style lines for what ``down`` removed, or would remove, or could not."""
    from .. import docker

    if docker.gateway().dry_run:
        state = "Would remove"
    elif result.ok:
        state = "Removed"
    else:
        click.echo(f" {kind} {' '.join(names)}  Error: {result.last_line()}", err=True)
        return
    for name in names:
        click.echo(f" {kind} {name}  {state}", err=True)


@hookimpl
def validate_config(project):
    """A health probe needs a port: health.port or route.port."""
    from ..config import ConfigProblem

    problems = []
    for service in project.atomic_services:
        annotation = project.service_x_atomic(service)
        health = annotation.get("health")
        if health is not None and not health.get("port") and not (annotation.get("route") or {}).get("port"):
            problems.append(ConfigProblem(("health", "port"), "the HTTP probe needs a port: set health.port, "
                                          "or route.port when the service is routed", service))
    return problems
