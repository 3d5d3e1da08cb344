"""What ``up`` will do to each service, decided before anything changes.

A service is replaced only when Compose itself would recreate it: its
``com.docker.compose.config-hash`` label differs from ``docker compose config
--hash`` (Compose's own hash, which leaves ``x-*`` out), or the image the
reference points to is not the one the container runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import docker
from ..errors import OperationFailed
from ..project import Project

START_FIRST = "start-first"
STOP_FIRST = "stop-first"


@dataclass
class ServicePlan:
    service: str
    action: str  # "replace", "unchanged", "create", "restart-dead"
    strategy: str = START_FIRST
    reason: str = ""
    old: list[dict[str, Any]] = field(default_factory=list)  # running containers, inspected
    #: What plugins say about this plan (explain_plan), e.g. which case a migration is in.
    notes: list[str] = field(default_factory=list)
    image: str = ""
    needs_pull: bool = False

    def describe(self) -> str:
        if self.action == "replace":
            return f"replace {self.strategy} ({self.reason})"
        return {"unchanged": "unchanged", "create": "create (no container yet)",
                "restart-dead": f"recreate, gated before it is routed ({self.reason})"}.get(self.action, self.action)


def config_hashes(project: Project, services: list[str]) -> dict[str, str]:
    if not services:
        return {}
    proc = docker.run(project.compose("config", "--hash", ",".join(services), changes=False,
                                      timeout=docker.DEFAULT_TIMEOUT))
    if not proc.ok:
        raise OperationFailed(f"docker compose config --hash failed: {proc.last_line()}",
                              hint="Nothing was changed. Check the compose files with `compose-atomic check`.")
    hashes = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            hashes[parts[0]] = parts[1]
    return hashes


def stop_first_reason(project: Project, service: str) -> str | None:
    """Why a service cannot run twice at once (None when it can)."""
    svc = project.services[service]
    if project.service_x_atomic(service).get("strategy") == STOP_FIRST:
        return "strategy: stop-first"
    if svc.get("container_name"):
        return f"container_name: {svc['container_name']}"
    if svc.get("network_mode") == "host":
        return "network_mode: host"
    for port in svc.get("ports") or []:
        published = port.get("published") if isinstance(port, dict) else str(port).count(":") >= 1
        if published:
            shown = port.get("published") if isinstance(port, dict) else port
            return f"publishes host port {shown}"
    return None


def plan_services(project: Project, services: list[str], *, force: bool = False) -> list[ServicePlan]:
    """A plan for each x-atomic service among ``services``: the engine is read, then :func:`decide`."""
    hashes = config_hashes(project, services)
    plans = []
    for service in services:
        image = image_of(project, service)
        plans.append(decide(project, service, containers=docker.service_containers(project.name, service),
                            image_id=docker.image_id(image), config_hash=hashes.get(service), force=force))
    return plans


def image_of(project: Project, service: str) -> str:
    return project.services[service].get("image") or f"{project.name}-{service}"


def decide(project: Project, service: str, *, containers: list[dict[str, Any]], image_id: str | None,
           config_hash: str | None, force: bool = False) -> ServicePlan:
    """What to do with one service, from what the engine said (pure: no engine call)."""
    svc = project.services[service]
    running = [c for c in containers if c["State"]["Status"] == "running"]
    plan = ServicePlan(service, "unchanged", image=image_of(project, service), old=running)
    plan.needs_pull = image_id is None and "build" not in svc
    if not containers:
        plan.action = "create"
    elif not running:
        plan.action, plan.reason = "restart-dead", "no running container to keep serving"
    else:
        reasons = []
        if force:
            reasons.append("--force-recreate")
        if any(c["Config"]["Labels"].get(docker.LABEL_HASH) != config_hash for c in running):
            reasons.append("configuration changed")
        if image_id is None or any(c["Image"] != image_id for c in running):
            reasons.append("image changed")
        if reasons:
            plan.action, plan.reason = "replace", ", ".join(reasons)
            why_stop = stop_first_reason(project, service)
            if why_stop:
                plan.strategy, plan.reason = STOP_FIRST, f"{plan.reason}; {why_stop}"
    return plan


def with_dependencies(project: Project, services: list[str]) -> list[str]:
    """``services`` and everything they depend on, in file order."""
    wanted: set[str] = set()
    stack = list(services)
    while stack:
        name = stack.pop()
        if name in wanted or name not in project.services:
            continue
        wanted.add(name)
        deps = project.services[name].get("depends_on") or {}
        stack.extend(deps if isinstance(deps, (dict, list)) else [])
    return [s for s in project.services if s in wanted]
