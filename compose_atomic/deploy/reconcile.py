"""Finish or undo a deploy that a previous process left half done.

The journal says which step the deploy had reached. Holding the project lock
means that process is gone (flock dies with it), so its containers are ours to
settle: before the switch the new container is removed and the old one keeps
serving; after the switch the old one serves again if it still runs; once the
deploy was committed (the old container was being stopped) it is completed.

A stop-first deploy left its old container stopped, not removed: it is started
again unless the new one passed the gate and still runs (then the deploy is
completed). A dead service being recreated is stopped again, so that ``up``
gates it again before anything routes to it.
"""

from __future__ import annotations

from .. import docker
from .plan import START_FIRST, STOP_FIRST, ServicePlan
from .rollout import Context, Replacement
from .routing import proxy_networks, sync_proxy
from .state import Phase

PARK, COMPLETE, FORGET, UNDO = "park", "complete", "forget", "undo"


def settle(phase: Phase, *, strategy: str, action: str, old_running: bool, new_running: bool) -> str:
    """What to do with a deploy the journal left at ``phase`` (pure: the engine was read before).

    PARK: a dead service being recreated is stopped again, to be gated by this ``up``.
    COMPLETE: the new version had taken over (committed, or switched and the old one is gone).
    FORGET: ``container_name`` recreated in place: Compose left whatever it started.
    UNDO: anything else: the old version serves again and the new containers go.
    """
    if action == "restart-dead" and not (phase == Phase.SWITCHED and new_running):
        return PARK
    if strategy == STOP_FIRST and phase == Phase.SWITCHED:
        complete = new_running  # it passed the gate; the old one is stopped, not a fallback
    else:
        complete = phase == Phase.COMMITTED or (phase == Phase.SWITCHED and not old_running)
    if complete:
        return COMPLETE
    if phase == Phase.IN_PLACE:
        return FORGET
    return UNDO


def reconcile(ctx: Context) -> str | None:
    """Settle the journal's deploy, if any; return its outcome."""
    record = ctx.journal.read()
    if not record:
        return None
    service = record.get("service")
    if service not in ctx.project.services:
        ctx.journal.clear()
        return None
    old = docker.inspect(*record.get("old", []))
    plan = ServicePlan(service, record.get("action") or "replace", old=old, image=record.get("image", ""),
                       strategy=record.get("strategy") or START_FIRST)
    replacement = Replacement(ctx, plan)
    try:
        phase = Phase(record.get("phase", "planned"))
    except ValueError:
        phase = Phase.PLANNED
    new_ids = list(record.get("new") or [])
    if phase in (Phase.PLANNED, Phase.CREATING):
        known = {c["Id"] for c in old}
        new_ids = [c["Id"] for c in docker.service_containers(ctx.project.name, service) if c["Id"] not in known]
    replacement.new_ids = new_ids
    replacement.phase = phase
    if replacement.proxied:
        ctx.networks = proxy_networks(ctx.project)
    action = settle(phase, strategy=plan.strategy, action=plan.action,
                    old_running=any(c["State"]["Status"] == "running" for c in old),
                    new_running=any(c["State"]["Status"] == "running" for c in docker.inspect(*new_ids)))
    ctx.progress.event(service, "Reconciling", f"a deploy was interrupted at step {phase.value!r}", state="warning")
    if action == PARK:
        replacement.park_new()
        replacement.finish("failed", "interrupted while recreating a dead service; gated again by this up")
        outcome = "failed"
    elif action == COMPLETE:
        replacement.retire_old()
        replacement.finish("deployed", "completed after an interruption")
        outcome = "deployed"
    elif action == FORGET:
        replacement.finish("failed", "interrupted during a stop-first replacement")
        outcome = "failed"
    else:
        outcome = replacement.undo("the deploy was interrupted; the previous version was put back")
    if ctx.proxy is not None:
        sync_proxy(ctx.project, ctx.proxy, ctx.networks)
    ctx.progress.event(service, "Reconciled", outcome)
    return outcome
