"""``stack status NAME``: per node, what of the stack runs there; per service, its update.

Asked of a manager in three calls (``docker node inspect``, ``docker service inspect`` and
``docker stack ps``), so that after a rollout, a rollback or a lost node one look says where
every task runs, which nodes are down and how each service's last update ended.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import docker
from ..errors import OperationFailed
from .deploy import _replicas, stack_services, swarm_manager_node, swarm_nodes


@dataclass
class TaskView:
    task: str  # <stack>_<service>.<slot> (or .<node id> for a global service)
    service: str
    image: str
    state: str  # Docker's CurrentState: "Running 3 minutes ago"
    error: str = ""


@dataclass
class NodeView:
    hostname: str
    role: str  # manager | worker
    state: str  # ready | down | ...
    availability: str
    address: str
    tasks: list[TaskView] = field(default_factory=list)


@dataclass
class ServiceView:
    service: str
    mode: str  # replicated | global
    running: int
    desired: int
    update: str = ""  # Swarm's UpdateStatus.State of the last update, "" if none
    message: str = ""


@dataclass
class StackStatus:
    stack: str
    services: list[ServiceView] = field(default_factory=list)
    nodes: list[NodeView] = field(default_factory=list)
    unassigned: list[TaskView] = field(default_factory=list)  # meant to run, on no node yet

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stack_tasks(stack_name: str) -> list[dict[str, Any]]:
    """The stack's tasks meant to run now, as ``docker stack ps`` shows them."""
    proc = docker.run(docker.docker("stack", "ps", "--no-trunc", "--filter", "desired-state=running",
                                    "--format", "{{json .}}", stack_name))
    tasks = []
    for line in proc.stdout.splitlines():
        try:
            tasks.append(json.loads(line))
        except ValueError:
            continue
    return tasks


def stack_status(stack_name: str) -> StackStatus:
    swarm_manager_node()
    services = stack_services(stack_name)
    if not services:
        raise OperationFailed(f"no stack named {stack_name} on this swarm",
                              hint="docker stack ls lists the stacks; deploy with compose-atomic stack deploy NAME.")
    status = StackStatus(stack=stack_name)
    replicas = _replicas(stack_name)
    for name, service in sorted(services.items()):
        update = service.get("UpdateStatus") or {}
        mode = "global" if "Global" in (service["Spec"].get("Mode") or {}) else "replicated"
        running, desired = replicas.get(name, (0, 0))
        status.services.append(ServiceView(name, mode, running, desired, update.get("State", ""),
                                           update.get("Message", "")))
    nodes = {n.hostname: NodeView(n.hostname, "manager" if n.manager else "worker", n.state, n.availability,
                                  n.address) for n in swarm_nodes()}
    prefix = f"{stack_name}_"
    for task in stack_tasks(stack_name):
        name = task.get("Name", "")
        view = TaskView(task=name, service=name.removeprefix(prefix).split(".")[0], image=task.get("Image", ""),
                        state=task.get("CurrentState", ""), error=task.get("Error", ""))
        node = nodes.get(task.get("Node") or "")
        (node.tasks if node else status.unassigned).append(view)
    status.nodes = list(nodes.values())
    return status


def status_text(status: StackStatus) -> str:
    lines = [f"Stack {status.stack}"]
    width = max((len(s.service) for s in status.services), default=0)
    for s in status.services:
        update = f"  last update: {s.update}" if s.update else ""
        lines.append(f"  {s.service:<{width}}  {s.mode:<10}  {s.running}/{s.desired}{update}")
    for node in status.nodes:
        lines.append(f"Node {node.hostname} ({node.role}, {node.state}, {node.availability}, {node.address})")
        if not node.tasks:
            lines.append("  no task of this stack")
        for task in sorted(node.tasks, key=lambda t: t.task):
            error = f"  {task.error}" if task.error else ""
            base, _, suffix = task.task.rpartition(".")
            shown = f"{base}.{suffix[:12]}" if base and len(suffix) > 12 else task.task  # a global task: node id
            lines.append(f"  {shown}  {task.state}  {task.image}{error}")
    if status.unassigned:
        lines.append("Not on a node yet")
        for task in status.unassigned:
            lines.append(f"  {task.task}  {task.state}  {task.error}")
    return "\n".join(lines) + "\n"
