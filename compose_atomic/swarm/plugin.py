"""The ``stack`` commands: ``stack render`` and ``stack deploy`` (docs/swarm.md).

Top-level imports stay light: the renderer and the deploy loop load inside the commands.
"""

from __future__ import annotations

import json
import sys

import click

from compose_atomic import hookimpl

RESOLVE_IMAGE = ["auto", "always", "changed", "never"]


def _load(ctx: click.Context):
    from compose_atomic.config import load_valid_project
    from compose_atomic.project import ComposeOptions

    return load_valid_project(ctx.find_object(ComposeOptions))


def _report(rendered, progress, *, infos: bool = True) -> None:
    """One progress line per finding: errors and warnings always, conversions when asked."""
    for finding in rendered.findings:
        resource = f"Service {finding.service}" if finding.service else "Stack"
        text = f"{finding.key}: {finding.message}"
        if finding.severity == "error":
            progress.fail(resource, text)
        elif finding.severity == "warning":
            progress.warn(resource, text)
        elif infos:
            progress.event(resource, "Converted", text, state="info")


def _refuse_errors(rendered) -> None:
    from compose_atomic.errors import ConfigError

    if rendered.errors:
        body = "\n".join(f"  - {f}" for f in rendered.errors)
        raise ConfigError(f"the project cannot run on Swarm as it is ({len(rendered.errors)} problem(s)):\n{body}",
                          hint="Fix these in the compose files; docs/swarm.md explains each.")


def _stack_name(name: str) -> str:
    from compose_atomic.errors import UsageError
    from compose_atomic.swarm.render import valid_stack_name

    if not valid_stack_name(name):
        raise UsageError(f"{name!r} is not a valid stack name: use letters, digits, '_', '.' and '-', "
                         "starting with a letter or digit.")
    return name


@click.group()
def stack() -> None:
    """Deploy the same x-atomic project to Docker Swarm (docs/swarm.md)."""


@stack.command("render")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Write the stack file here (and the proxy's Caddy config beside it).")
@click.option("--stack-name", help="The stack name it is meant for (default: the project name).")
@click.option("--json", "as_json", is_flag=True, help="Print stack, proxy config and findings as JSON.")
@click.option("--strict", is_flag=True, help="Exit 2 on warnings too, not only on errors.")
@click.pass_context
def render_command(ctx: click.Context, output: str | None, stack_name: str | None, as_json: bool,
                   strict: bool) -> None:
    """Turn the project into a stack file for `docker stack deploy`.

    Every x-atomic service gets safe rolling-update settings (start-first, rollback
    on failure, the monitor window), its healthcheck, and routed services get a
    Caddy service in front. What Swarm cannot do is listed on stderr and at the
    top of the file.
    """
    from pathlib import Path

    from compose_atomic.errors import ConfigError
    from compose_atomic.progress import Progress
    from compose_atomic.swarm.render import render_stack, stack_yaml

    project = _load(ctx)
    name = _stack_name(stack_name or project.name)
    caddy_file = f"{Path(output).stem}.caddy.json" if output else f"{name}.caddy.json"
    from compose_atomic.swarm.deploy import image_healthcheck

    rendered = render_stack(project, name, caddy_file=caddy_file, image_healthcheck=image_healthcheck)
    progress = Progress(ctx.obj.progress)
    if as_json:
        click.echo(json.dumps({"stack_name": name, "stack": rendered.stack, "caddy_file": rendered.caddy_file,
                               "caddy": rendered.caddy_config,
                               "findings": [f.__dict__ for f in rendered.findings],
                               "node_labels": rendered.node_labels}, indent=2))
    else:
        _report(rendered, progress)
    _refuse_errors(rendered)
    if strict and any(f.severity == "warning" for f in rendered.findings):
        raise ConfigError("--strict: the project has warnings for Swarm (listed above)")
    if as_json:
        return
    if output:
        from compose_atomic.swarm.deploy import write_private

        target = Path(output)
        if rendered.caddy_text is not None:
            write_private(target.parent / caddy_file, rendered.caddy_text)
        write_private(target, stack_yaml(rendered))  # 0600: it holds the services' environment
        written = f"{target}" + (f" and {target.parent / caddy_file}" if rendered.caddy_text else "")
        progress.event("Stack file", "Written", written)
    else:
        sys.stdout.write(stack_yaml(rendered))
        if rendered.caddy_text is not None:
            progress.warn("Stack", f"the proxy's config ({caddy_file}) is written only with -o FILE")


@stack.command("deploy")
@click.argument("name")
@click.option("--timeout", default="10m", show_default=True, metavar="DURATION",
              help="How long to wait for Swarm's update to settle.")
@click.option("--resolve-image", type=click.Choice(RESOLVE_IMAGE), default="auto", show_default=True,
              help="auto: never when an image came from no registry or a single-node swarm has every image, "
                   "else always.")
@click.option("--prune", is_flag=True, help="Remove services no longer in the project.")
@click.option("--with-registry-auth", "registry_auth", is_flag=True,
              help="Send this client's registry login to the nodes (images in a private registry).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome per service as JSON.")
@click.pass_context
def deploy_command(ctx: click.Context, name: str, timeout: str, resolve_image: str, prune: bool,
                   registry_auth: bool, as_json: bool) -> None:
    """Render, deploy as stack NAME and wait until Swarm's rolling update settles.

    Exits like `up`: 0 done, 3 a service failed and Swarm rolled it back, 4 the
    rollback failed too, 1 failed (a new service never became ready, or timeout).
    """
    from compose_atomic.durations import parse_duration
    from compose_atomic.errors import RollbackFailed, RolledBack, OperationFailed, UsageError
    from compose_atomic.progress import Progress
    from compose_atomic.swarm.deploy import deploy_stack, state_directory
    from compose_atomic.swarm.render import render_stack

    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise UsageError(f"--timeout: {exc}") from None
    name = _stack_name(name)
    project = _load(ctx)
    from compose_atomic.swarm.deploy import image_healthcheck

    rendered = render_stack(project, name, image_healthcheck=image_healthcheck)
    progress = Progress(ctx.obj.progress, dry_run=ctx.obj.dry_run)
    _report(rendered, progress, infos=False)  # `stack render` lists the conversions too
    _refuse_errors(rendered)
    if ctx.obj.dry_run:
        from compose_atomic.swarm.deploy import write_stack

        path = write_stack(rendered, state_directory(project, name))
        progress.event(f"Stack {name}", "Rendered", f"{path}; would run docker stack deploy -c {path} {name}")
        return
    result = deploy_stack(project, rendered, state_directory(project, name), timeout=seconds,
                          resolve_image=resolve_image, prune=prune, registry_auth=registry_auth,
                          progress=progress)
    if as_json:
        data = result.as_dict()
        data["findings"] = [f.__dict__ for f in rendered.findings]
        click.echo(json.dumps(data, indent=2))
    code = result.exit_code
    if code == 0:
        progress.event(f"Stack {name}", "Deployed", f"{len(result.services)} services", elapsed=result.seconds)
        return
    bad = [s for s in result.services if s.outcome not in ("updated", "unchanged", "created")]
    detail = "; ".join(f"{s.service}: {s.outcome}" + (f" ({s.message})" if s.message else "") for s in bad)
    if code == 3:
        rolled = [s for s in bad if s.outcome == "rolled back"]
        why = "; ".join(f"{s.service}: {s.message}" if s.message else s.service for s in rolled)
        raise RolledBack(f"stack {name}: the new version failed and Swarm rolled it back, so the previous "
                         f"version serves ({why})",
                         hint=f"Inspect with: docker service ps --no-trunc {name}_{bad[0].service}")
    if code == 4:
        raise RollbackFailed(f"stack {name}: the rollback did not finish: {detail}",
                             hint=f"Act by hand: docker service ps --no-trunc {name}_{bad[0].service}; "
                                  f"docker service rollback {name}_{bad[0].service}")
    raise OperationFailed(f"stack {name}: {detail}",
                          hint=f"Inspect with: docker service ps --no-trunc {name}_{bad[0].service}")


@stack.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print nodes, tasks and services as JSON.")
def status_command(name: str, as_json: bool) -> None:
    """Per node of the swarm, the tasks of stack NAME that run there; per service, its replicas
    and how its last update ended. Asked of a manager (DOCKER_HOST)."""
    from compose_atomic.swarm.status import stack_status, status_text

    status = stack_status(_stack_name(name))
    if as_json:
        click.echo(json.dumps(status.as_dict(), indent=2))
    else:
        sys.stdout.write(status_text(status))


@hookimpl
def register_commands(cli):
    cli.add_command(stack)


@hookimpl(tryfirst=True)
def swarm_stack(project, rendered):
    """Built in: pin stateful services and their backup sidecars, put Caddy in front."""
    from compose_atomic.swarm.render import add_proxy, pin_stateful

    pin_stateful(project, rendered)
    add_proxy(project, rendered)


@hookimpl
def after_stack_deploy(project, result):
    """Built in: once the stack is deployed, drop the proxy configs of earlier deploys."""
    if result.exit_code == 0:
        from compose_atomic.swarm.deploy import remove_stale_proxy_configs

        remove_stale_proxy_configs(result.stack, result.proxy_config)
