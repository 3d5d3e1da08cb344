"""Default plugin of the deploy (it changes deployed routes under the deploy lock): ``maintenance on|off``, ``pause`` and ``resume`` (docs/deploy.md).

Top-level imports stay light (click only): the proxy loads when the command runs.
"""

from __future__ import annotations

from typing import Any

import click

from ..hookspecs import hookimpl


#: The largest page ``maintenance on --page FILE`` takes: it lives in the switch's configuration.
PAGE_LIMIT = 256 * 1024


def read_page(path: str) -> str:
    """The HTML of ``--page FILE``, or a clear error (exit 2) before anything changes."""
    from ..errors import UsageError

    try:
        with open(path, "rb") as page:
            data = page.read(PAGE_LIMIT + 1)
    except OSError as exc:
        raise UsageError(f"--page {path}: cannot read it ({exc.strerror})") from None
    if len(data) > PAGE_LIMIT:
        raise UsageError(f"--page {path}: larger than {PAGE_LIMIT // 1024} KiB; a maintenance page lives "
                         "in the proxy's configuration", hint="Link to images and styles instead of inlining them.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--page {path}: not UTF-8 text") from None


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


def _change_routes(ctx: click.Context, service: str | None, lock_wait: str | None, what: str,
                   change) -> tuple[list[str], Any]:
    """Load the project, take the deploy lock, and apply ``change(proxy, services, networks)``;
    return the services changed and what ``change`` returned."""
    from ..config import load_valid_project
    from ..durations import parse_duration
    from ..errors import UsageError
    from ..progress import Progress
    from .routing import make_proxy, proxy_networks
    from .state import project_lock

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
            progress.event(f"Route {name}", "Would set", what)
        return [], None
    with project_lock(project, wait):
        proxy.restore_saved()
        result = change(proxy, services, proxy_networks(project))
    return services, result


def _progress(ctx: click.Context):
    from ..progress import Progress

    return Progress(ctx.obj.progress)


@hookimpl
def register_commands(cli):
    lock_option = click.option("--lock-wait", help="Wait this long for a running deploy "
                                                   "(default: x-atomic.lock_wait, else fail at once).")

    @cli.command()
    @click.argument("service", required=False)
    @click.option("--timeout", default="30s", show_default=True,
                  help="Hold each request at most this long; then it gets 503 with Retry-After.")
    @lock_option
    @click.pass_context
    def pause(ctx: click.Context, service: str | None, timeout: str, lock_wait: str | None) -> None:
        """Hold SERVICE's requests at the proxy (default: every route) until `resume`.

        Clients wait instead of failing, up to --timeout each. The containers keep running.
        """
        from ..durations import parse_positive_option

        seconds = parse_positive_option("--timeout", timeout)

        def pause_routes(proxy, services, nets) -> bool:
            # Caddy 2.7 and later hold a request with its body too (buffered, as the write hold does).
            bodies = proxy.holds_bodies()
            proxy.set_paused(services, seconds, nets, writes=bodies)
            return bodies

        done, bodies = _change_routes(ctx, service, lock_wait, f"paused (hold up to {timeout})", pause_routes)
        refused = "" if bodies is None or bodies else \
            " (requests with a body get 503 with Retry-After: this Caddy, before 2.7, cannot hold a body)"
        for name in done:
            _progress(ctx).event(f"Route {name}", "Paused", f"requests held up to {timeout}{refused}; resume with "
                                                            f"compose-atomic resume {name}",
                                 state="warning" if refused else "done")

    @cli.command()
    @click.argument("service", required=False)
    @lock_option
    @click.pass_context
    def resume(ctx: click.Context, service: str | None, lock_wait: str | None) -> None:
        """Let SERVICE's held requests through (default: every route) and route new ones again."""
        done, _ = _change_routes(ctx, service, lock_wait, "resumed",
                                 lambda proxy, services, nets: proxy.set_paused(services, None, nets))
        for name in done:
            _progress(ctx).event(f"Route {name}", "Resumed", "held requests go through")

    @cli.command()
    @click.argument("state", type=click.Choice(["on", "off"]))
    @click.argument("service", required=False)
    @click.option("--message", help="The text of the maintenance page (default: a short notice).")
    @click.option("--page", "page_file", type=click.Path(dir_okay=False), metavar="FILE",
                  help=f"An HTML file to answer with instead (at most {PAGE_LIMIT // 1024} KiB), sent as it is.")
    @click.option("--retry-after", type=click.IntRange(min=0), default=120, show_default=True,
                  help="Seconds clients are told to wait (the Retry-After header).")
    @lock_option
    @click.pass_context
    def maintenance(ctx: click.Context, state: str, service: str | None, message: str | None,
                    page_file: str | None, retry_after: int, lock_wait: str | None) -> None:
        """Answer 503 with a maintenance page for SERVICE's route (default: every route).

        The containers keep running and their health checks pass; `up` refuses to replace the
        service meanwhile unless given --allow-maintenance. `maintenance off` routes to them again.
        """
        settings = {"message": message, "retry_after": retry_after} if state == "on" else None
        if settings is not None and page_file is not None:
            if message is not None:
                from ..errors import UsageError

                raise UsageError("give --message or --page, not both (the page is sent as it is)")
            settings["page"] = read_page(page_file)
        done, _ = _change_routes(ctx, service, lock_wait, f"maintenance {state}",
                                 lambda proxy, services, nets: proxy.set_maintenance(services, settings, nets))
        for name in done:
            if state == "on":
                _progress(ctx).event(f"Route {name}", "Maintenance", f"503 with Retry-After: {retry_after}")
            else:
                _progress(ctx).event(f"Route {name}", "Serving", "maintenance off")
