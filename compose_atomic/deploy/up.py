"""Health-gated rolling replacement of x-atomic services (see docs/deploy.md).

``up`` decides first (see :mod:`.plan`), then, under the project's deploy lock:
finishes or undoes a deploy that was interrupted (the journal), lets Compose
bring up everything that needs no replacement exactly as ``docker compose up -d``
would, starts or updates the managed proxy, and replaces each changed x-atomic
service one at a time (see :mod:`.rollout`).
"""

from __future__ import annotations

import signal
from typing import Any

from .. import docker
from ..durations import parse_duration, parse_positive_option
from ..errors import OperationFailed, UsageError
from ..plugins import call_hook
from ..progress import Progress
from ..project import Project
from ..restarts import restart_warning, routed_without_restart
from .plan import ServicePlan, plan_services, with_dependencies
from .rollout import Context, Replacement, notify
from .routing import make_proxy, proxy_networks, sync_proxy
from .state import History, Journal, project_lock

# `up` flags that still make sense when compose-atomic runs Compose detached.
_PASS_FLAGS = ["always-recreate-deps", "build", "force-recreate", "no-build", "no-deps", "no-recreate",
               "no-start", "quiet-build", "quiet-pull", "remove-orphans", "wait", "renew-anon-volumes", "yes"]


def compose_up_args(flags: dict[str, Any]) -> list[str]:
    """``up`` flags for Compose, always detached: the deploy needs the terminal back."""
    args = ["up", "-d"]
    for flag in _PASS_FLAGS:
        if flags.get(flag.replace("-", "_")):
            args.append(f"--{flag}")
    if flags.get("pull"):
        args += ["--pull", flags["pull"]]
    for scale in flags.get("scale") or ():
        args += ["--scale", scale]
    if flags.get("timeout") is not None:
        args += ["--timeout", str(flags["timeout"])]
    if flags.get("wait_timeout"):
        args += ["--wait-timeout", flags["wait_timeout"]]
    return args


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


DEPLOY_KEYS = frozenset({"route", "health", "monitor", "drain", "strategy", "migrate"})


def deployable_services(project: Project) -> list[str]:
    """Services compose-atomic replaces itself: those with a deploy key in x-atomic.

    A service annotated only for backups (a database) is left to Compose: running
    two copies of it side by side on one data volume would be a disaster.
    """
    return [s for s in project.atomic_services if DEPLOY_KEYS & set(project.service_x_atomic(s))]


def explain(project: Project, plan: ServicePlan, progress: Progress) -> list[str]:
    """What plugins say about a plan that changes a service (``explain_plan``), kept on the plan."""
    if plan.action in ("replace", "create", "restart-dead") and not plan.notes:
        for lines in call_hook("explain_plan", warn=lambda m: progress.warn(plan.service, m), project=project,
                               service=plan.service) or []:
            plan.notes += [lines] if isinstance(lines, str) else list(lines or [])
    return plan.notes


def print_plan(progress: Progress, plans: list[ServicePlan], rest: list[str], project: Project,
               compose_args: list[str]) -> None:
    progress.step("Plan")
    for plan in plans:
        progress.event(plan.service, "Would " + plan.describe(), state="info")
        for line in explain(project, plan, progress):
            progress.event(plan.service, line, state="info")
    if rest:
        progress.event("compose", "Would run", "docker compose " + " ".join(compose_args + rest), state="info")
    if project.x_atomic.get("proxy") is not None:
        progress.event(f"{project.name}-atomic-proxy", "Would start or update the proxy", state="info")


def up(project: Project, *, services: list[str], flags: dict, raw_args: list[str],
       lock_wait: str | None, hold_writes: str | None = None, allow_maintenance: bool = False) -> int:
    """Bring the project up; changed x-atomic services are replaced without downtime.

    ``hold_writes`` (``--hold-writes``): hold requests during every migration of this deploy, at
    most that long, whatever ``x-atomic.migrate.hold_writes`` says. ``allow_maintenance``
    (``--allow-maintenance``): replace a service whose route is in maintenance (else refused,
    exit 2, before anything changes). Returns the exit code;
    failures raise a ComposeAtomicError with theirs.
    """
    progress = Progress(project.options.progress, dry_run=project.options.dry_run)
    hold_seconds = None if hold_writes is None else parse_positive_option("--hold-writes", hold_writes)
    unknown = [s for s in services if s not in project.services]
    if unknown:
        raise UsageError(f"no such service: {', '.join(unknown)}; services are: {', '.join(project.services)}")
    selected = list(services) or list(project.services)
    closure = selected if flags.get("no_deps") else with_dependencies(project, selected)
    atomic = [s for s in closure if s in deployable_services(project)]
    compose_args = compose_up_args(flags)
    force = bool(flags.get("force_recreate"))
    for service in routed_without_restart({s: project.services[s] for s in atomic}):
        progress.warn(service, restart_warning(service, project.services))

    if project.options.dry_run:
        plans = plan_services(project, atomic, force=force)
        replace = {p.service for p in plans if p.action in ("replace", "restart-dead")}
        print_plan(progress, plans, [s for s in closure if s not in replace], project, compose_args)
        return 0

    wait = lock_wait or project.x_atomic.get("lock_wait") or "0s"
    try:
        wait_seconds = parse_duration(wait)
    except ValueError as exc:
        raise UsageError(f"--lock-wait: {exc}") from None
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with project_lock(project, wait_seconds):
            return _locked_up(project, progress, services, closure, atomic, compose_args, force, hold_seconds,
                              allow_maintenance)
    finally:
        signal.signal(signal.SIGTERM, previous)


def refuse_maintenance(proxy, replaced: list[str]) -> None:
    """``up`` does not switch a route that is in maintenance unless told (``--allow-maintenance``)."""
    held = [s for s in replaced if proxy is not None and s in proxy.routes and proxy.routes[s].maintenance]
    if held:
        names = " ".join(held)
        raise UsageError(f"{', '.join(held)}: the route is in maintenance (compose-atomic maintenance on); "
                         "nothing was replaced",
                         hint=f"Run `compose-atomic maintenance off {names}` first, or pass --allow-maintenance "
                              "to deploy behind the page (it stays up until maintenance off).")


def _locked_up(project: Project, progress: Progress, services: list[str], closure: list[str],
               atomic: list[str], compose_args: list[str], force: bool, hold_writes: float | None = None,
               allow_maintenance: bool = False) -> int:
    journal, history = Journal(project), History(project)
    proxy = make_proxy(project)
    ctx = Context(project, progress, journal, history, proxy, hold_writes=hold_writes)
    from .reconcile import reconcile

    reconcile(ctx)
    plans = plan_services(project, atomic, force=force)
    if not allow_maintenance:
        refuse_maintenance(proxy, [p.service for p in plans if p.action == "replace"])
    call_hook("before_changes", project=project, plans=plans)  # e.g. the disk pre-flight
    for plan in plans:
        explain(project, plan, progress)  # recorded in the history with the outcome
    replace = [p for p in plans if p.action == "replace"]
    revive = [p for p in plans if p.action == "restart-dead"]  # gated before routed, see Replacement.revive
    names = {p.service for p in replace + revive}

    rest = [s for s in closure if s not in names]
    if not names:
        argv = compose_args + list(services)
    else:
        argv = compose_args + ["--no-deps"] + rest if rest else []
    # A service Compose creates (first deploy, or nothing left running) still goes
    # through before_deploy, so that its migrations run before it starts.
    created = [p for p in plans if p.action == "create" and p.service in rest]
    for plan in created:
        call_hook("before_deploy", project=project, service=plan.service, old_container=None,
                  new_image=plan.image)
    if argv:
        code = docker.run(project.compose(*argv), capture=False).returncode
        for plan in created:
            notify("after_deploy", progress, project=project, service=plan.service, old_container=None,
                       new_container=None, outcome="deployed" if code == 0 else "failed", receipt=None)
        if code != 0:
            raise OperationFailed(f"docker compose up failed (exit {code}); x-atomic services were not replaced")

    if proxy is not None:
        ctx.networks = proxy_networks(project)
        sync_proxy(project, proxy, ctx.networks, progress)
        progress.event(f"Proxy {proxy.container_name}", "Ready",
                       ", ".join(f"{s} -> {' '.join(r.upstreams) or 'nothing'}" for s, r in proxy.routes.items()))

    for plan in revive:
        Replacement(ctx, plan).revive()
    for plan in replace:
        Replacement(ctx, plan).run()
    return 0
