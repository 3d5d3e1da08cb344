"""Default plugin of the deploy: ``compose-atomic maintenance on|off [SERVICE]`` (docs/deploy.md).

Top-level imports stay light (click only): the proxy loads when the command runs.
"""

from __future__ import annotations

import click

from ..hookspecs import hookimpl


def routed_services(project, proxy, service: str | None) -> list[str]:
    """The routes a command acts on: ``service``'s, or every route; a clear error otherwise."""
    from ..errors import UsageError

    if proxy is None:
        raise UsageError("the project has no managed proxy (x-atomic.proxy), so there is no route to change",
                         hint="Add x-atomic.proxy (docs/deploy.md), run compose-atomic up, then try again.")
    routed = sorted(proxy.routes)
    if service is None:
        if not routed:
            raise UsageError("no service has an x-atomic.route, so the proxy has no route to change")
        return routed
    if service not in routed:
        known = ", ".join(routed) or "none"
        what = "is not a service of the project" if service not in project.services else "has no x-atomic.route"
        raise UsageError(f"{service} {what}; routed services: {known}")
    return [service]


@hookimpl
def register_commands(cli):
    @cli.command()
    @click.argument("state", type=click.Choice(["on", "off"]))
    @click.argument("service", required=False)
    @click.option("--message", help="The text of the maintenance page (default: a short notice).")
    @click.option("--retry-after", type=click.IntRange(min=0), default=120, show_default=True,
                  help="Seconds clients are told to wait (the Retry-After header).")
    @click.option("--lock-wait", help="Wait this long for a running deploy (default: x-atomic.lock_wait, else fail at once).")
    @click.pass_context
    def maintenance(ctx: click.Context, state: str, service: str | None, message: str | None, retry_after: int,
                    lock_wait: str | None) -> None:
        """Answer 503 with a maintenance page for SERVICE's route (default: every route).

        The containers keep running and their health checks pass; deploys meanwhile keep the
        page up. `maintenance off` routes to them again.
        """
        from ..config import load_valid_project
        from .routing import make_proxy, proxy_networks
        from .state import project_lock
        from ..durations import parse_duration
        from ..errors import UsageError
        from ..progress import Progress

        project = load_valid_project(ctx.obj)
        proxy = make_proxy(project)
        services = routed_services(project, proxy, service)
        try:
            wait = parse_duration(str(lock_wait or project.x_atomic.get("lock_wait") or "0s"))
        except ValueError as exc:
            raise UsageError(f"--lock-wait: {exc}") from None
        progress = Progress(project.options.progress, dry_run=project.options.dry_run)
        if project.options.dry_run:
            for name in services:
                progress.event(f"Route {name}", "Would set", f"maintenance {state}")
            return
        with project_lock(project, wait):
            proxy.restore_saved()
            settings = {"message": message, "retry_after": retry_after} if state == "on" else None
            proxy.set_maintenance(services, settings, proxy_networks(project))
        for name in services:
            if state == "on":
                progress.event(f"Route {name}", "Maintenance", f"503 with Retry-After: {retry_after}")
            else:
                progress.event(f"Route {name}", "Serving", "maintenance off")
