"""``stack deploy``: render, hand the stack to Swarm, wait for its rolling update to settle.

Swarm rolls the services; ``docker stack deploy`` only submits the new specs and
returns at once. What the user needs to know is how it ended, so we watch each
service's ``UpdateStatus`` (``docker service inspect``) until it reaches a final
state, and exit with ``up``'s codes: 0 done, 3 rolled back, 4 rollback failed,
1 failed (a new service that never became ready, or no end within the timeout).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import docker
from ..errors import DockerUnavailable, NotASwarmManager, OperationFailed, StackDeployFailed
from ..progress import Progress
from ..project import Project
from .render import RenderedStack, stack_yaml

SETTLED = {"completed": "updated", "rollback_completed": "rolled back",
           "paused": "paused", "rollback_paused": "rollback paused"}
IN_PROGRESS = {"updating", "rollback_started"}
#: Failed tasks of a new service after which we stop waiting for it.
MAX_NEW_TASK_FAILURES = 3
#: How long an unchanged service is watched for an update all the same.
UPDATE_GRACE = 2.0
#: How long a service whose tasks changed may take before Swarm reports its update.
CHANGED_GRACE = 30.0
POLL = 1.0
#: How long a new task may sit unstarted on a node that is down before the update counts as stalled.
STALL_GRACE = 10.0
#: Task states before running: the updater waits for a new task to leave them.
_STARTING = ("New", "Pending", "Assigned", "Accepted", "Preparing", "Ready", "Starting")
_REPLICAS = re.compile(r"^(\d+)/(\d+)")


@dataclass
class ServiceOutcome:
    """How one service of the stack ended."""

    service: str
    outcome: str  # updated | unchanged | created | rolled back | paused | rollback paused | failed | timeout
    message: str = ""
    seconds: float = 0.0


@dataclass
class StackResult:
    """Everything ``stack deploy`` did, for the summary and ``--json``."""

    stack: str
    stack_file: str
    services: list[ServiceOutcome] = field(default_factory=list)
    labelled: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    proxy_config: str | None = None  # the swarm config holding this deploy's Caddy config
    proxy_answers: bool | None = None  # the proxy answered HTTP on every node (None: not checked)
    proxy_nodes: dict[str, bool] = field(default_factory=dict)  # node hostname -> its proxy answered
    local_images: list[str] = field(default_factory=list)  # images from no registry: every node needs them

    @property
    def exit_code(self) -> int:
        outcomes = {s.outcome for s in self.services}
        if "rollback paused" in outcomes:
            return 4
        if "rolled back" in outcomes:
            return 3
        if outcomes & {"failed", "timeout", "paused"}:
            return 1
        return 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["exit_code"] = self.exit_code
        return data


def swarm_manager_node() -> str:
    """This node's swarm ID; raise NotASwarmManager with the way out when it is not one."""
    proc = docker.run(docker.docker("info", "--format",
                                    "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeID}}"))
    if proc.returncode != 0:
        raise DockerUnavailable(f"cannot reach the Docker engine: {proc.stderr.strip()}")
    state, control, node = (proc.stdout.split() + ["", "", ""])[:3]
    if state != "active":
        raise NotASwarmManager(
            f"this Docker engine is not part of a swarm (state: {state or 'unknown'})",
            hint="Create one with `docker swarm init` (see docs/swarm.md), or point DOCKER_HOST at a manager.")
    if control != "true":
        raise NotASwarmManager("this node is a swarm worker; stacks are deployed from a manager",
                               hint="Run it on a manager node, or point DOCKER_HOST at one.")
    return node


def image_healthcheck(image: str) -> dict[str, Any] | None:
    """The image's own ``HEALTHCHECK`` (``{}`` for none), or None when it is not on this engine."""
    from ..errors import DockerTimeout

    try:
        result = docker.run(docker.inspect_image_healthcheck(image))
    except (DockerUnavailable, DockerTimeout):
        return None
    if not result.ok:
        return None
    return result.json(None) or {}


def state_directory(project: Project, stack_name: str) -> Path:
    """Where the rendered stack lives: ``<state_dir>/swarm/<stack>/``."""
    return project.state_dir / "swarm" / stack_name


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read: a stack file holds the services' environment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def write_stack(rendered: RenderedStack, directory: Path, stack_file: str = "stack.yml") -> Path:
    """Write the stack file and the proxy's config beside it; return the stack file's path."""
    path = directory / stack_file
    if rendered.caddy_text is not None and rendered.caddy_file:
        write_private(directory / rendered.caddy_file, rendered.caddy_text)
    write_private(path, stack_yaml(rendered))
    return path


def ensure_node_labels(rendered: RenderedStack, node_id: str, progress: Progress) -> dict[str, str]:
    """Label this node for every pinned service whose label no node carries yet."""
    labelled = {}
    for label, members in rendered.node_labels.items():
        found = docker.run(docker.docker("node", "ls", "-q", "--filter", f"node.label={label}=true"))
        if found.returncode == 0 and found.stdout.strip():
            continue
        proc = docker.run(docker.node_label_add(node_id, f"{label}=true"))
        if proc.returncode != 0:
            raise OperationFailed(f"could not label node {node_id} with {label}=true: {proc.stderr.strip()}")
        labelled[label] = node_id
        progress.event(f"Node {node_id[:12]}", "Labelled", f"{label}=true for {', '.join(members)}")
    return labelled


def stack_services(stack_name: str) -> dict[str, dict[str, Any]]:
    """The stack's services as ``docker service inspect`` shows them, by short name."""
    ids = docker.run(docker.docker("service", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack_name}"))
    if ids.returncode != 0 or not ids.stdout.split():
        return {}
    proc = docker.run(docker.docker("service", "inspect", *ids.stdout.split()))
    if proc.returncode != 0:
        return {}
    prefix = f"{stack_name}_"
    return {s["Spec"]["Name"].removeprefix(prefix): s for s in json.loads(proc.stdout or "[]")}


def _replicas(stack_name: str) -> dict[str, tuple[int, int]]:
    proc = docker.run(docker.docker("service", "ls", "--filter", f"label=com.docker.stack.namespace={stack_name}",
                                    "--format", "{{.Name}} {{.Replicas}}"))
    found = {}
    for line in proc.stdout.splitlines():
        name, _, replicas = line.partition(" ")
        match = _REPLICAS.match(replicas.strip())
        if match:
            found[name.removeprefix(f"{stack_name}_")] = (int(match.group(1)), int(match.group(2)))
    return found


def _task_failures(full_name: str) -> tuple[int, str]:
    proc = docker.run(docker.docker("service", "ps", "--no-trunc", "--format", "{{json .}}", full_name))
    count, last = 0, ""
    missing: set[str] = set()  # nodes that rejected a task for want of its image
    for line in proc.stdout.splitlines():
        try:
            task = json.loads(line)
        except ValueError:
            continue
        if str(task.get("CurrentState", "")).startswith(("Failed", "Rejected")):
            count += 1
            last = last or task.get("Error", "")
            if "No such image" in task.get("Error", "") and task.get("Node"):
                missing.add(task["Node"])
    if missing:
        last = (f"{last}: the image is not on node(s) {', '.join(sorted(missing))}; load it there "
                "(docker save | docker load) or push it to a registry the nodes can pull from")
    return count, last


def _stalled_on_lost_node(full_name: str, down: set[str]) -> tuple[str, str] | None:
    """(task, node) when the service's update waits on a new task that can never start.

    Swarm's updater waits for each new task to report running. When the node it was given
    is lost, Swarm reschedules the slot elsewhere, but the lost task's state stays where it
    was (the node cannot report) and the updater waits for it until the node is back (seen
    on Docker 20.10: the update stays ``updating``, with old and new tasks running side by side).
    """
    if not down:
        return None
    proc = docker.run(docker.docker("service", "ps", "--no-trunc", "--format", "{{json .}}", full_name))
    for line in proc.stdout.splitlines():
        try:
            task = json.loads(line)
        except ValueError:
            continue
        if task.get("Node") in down and str(task.get("CurrentState", "")).startswith(_STARTING):
            return task.get("ID", "?"), task["Node"]
    return None


def _rollback_reason(status: dict[str, Any], full_name: str) -> str:
    """Swarm's message plus the failed task's own error (why it was unhealthy or exited)."""
    message = status.get("Message", "")
    match = re.search(r"task ([a-z0-9]{20,})", message)
    if match:
        proc = docker.run(docker.docker("inspect", "--format", "{{.Status.Err}}", match.group(1)))
        if proc.returncode == 0 and proc.stdout.strip():
            return f"{message}: {proc.stdout.strip()}"
    _, error = _task_failures(full_name)
    return f"{message}: {error}" if error else message


@dataclass(frozen=True)
class SwarmNode:
    """A node of the swarm as ``docker node inspect`` shows it."""

    id: str
    hostname: str
    state: str  # ready | down | unknown | disconnected
    availability: str  # active | pause | drain
    address: str
    manager: bool

    @property
    def up(self) -> bool:
        return self.state == "ready"


def swarm_nodes() -> list[SwarmNode]:
    """Every node of the swarm (asked of a manager); empty when the engine cannot tell."""
    ids = docker.run(docker.docker("node", "ls", "-q"))
    if ids.returncode != 0 or not ids.stdout.split():
        return []
    proc = docker.run(docker.docker("node", "inspect", *ids.stdout.split()))
    if proc.returncode != 0:
        return []
    nodes = []
    for node in json.loads(proc.stdout or "[]"):
        status = node.get("Status") or {}
        manager = node.get("ManagerStatus") or {}
        address = status.get("Addr") or ""
        if address in ("", "0.0.0.0") and manager.get("Addr"):
            # A manager may report 0.0.0.0 as its own address; its raft address is the one it advertises.
            address = manager["Addr"].rpartition(":")[0]
        nodes.append(SwarmNode(id=node["ID"], hostname=(node.get("Description") or {}).get("Hostname", ""),
                               state=status.get("State", "unknown"),
                               availability=(node.get("Spec") or {}).get("Availability", "active"),
                               address=address, manager=bool(manager)))
    return sorted(nodes, key=lambda n: (not n.manager, n.hostname))


def stack_images(rendered: RenderedStack) -> list[str]:
    return sorted({s["image"] for s in rendered.stack["services"].values() if s.get("image")})


def local_only_images(rendered: RenderedStack) -> list[str]:
    """The stack's images that this engine has but that came from no registry (built or loaded
    here: no repository digest). No other node can pull them, and asking a registry for their
    digest (``--resolve-image always``) finds nothing, or worse, another image of that name."""
    images = stack_images(rendered)
    if not images:
        return []
    proc = docker.run(docker.inspect_images(*images))
    found = []
    for image in json.loads(proc.stdout or "[]") if proc.stdout.strip().startswith("[") else []:
        if not image.get("RepoDigests"):
            tags = set(image.get("RepoTags") or [])
            found.extend(name for name in images if name in tags or name == image.get("Id"))
    return sorted(set(found))


def resolve_image_mode(rendered: RenderedStack, requested: str, nodes: list[SwarmNode] | None = None) -> str:
    """``auto``: ``never`` when an image came from no registry (the nodes must have it already:
    there is nothing to resolve) or on a single-node swarm that has every image; else ``always``,
    so every node runs the same digest."""
    if requested != "auto":
        return requested
    if local_only_images(rendered):
        return "never"
    if len(nodes if nodes is not None else swarm_nodes()) > 1:
        return "always"
    for image in stack_images(rendered):
        if docker.image_id(image) is None:
            return "always"
    return "never"


def submit(stack_file: Path, stack_name: str, resolve_image: str, prune: bool, registry_auth: bool = False) -> str:
    """``docker stack deploy``; raise StackDeployFailed with Docker's message when it refuses."""
    proc = docker.run(docker.stack_deploy(str(stack_file), stack_name, resolve_image=resolve_image, prune=prune,
                                          registry_auth=registry_auth))
    if proc.returncode != 0:
        raise StackDeployFailed(f"docker stack deploy refused the stack: {proc.stderr.strip() or proc.stdout.strip()}",
                                hint=f"The rendered file is {stack_file}.")
    return proc.stdout


def wait_settled(stack_name: str, before: dict[str, dict[str, Any]], expected: list[str],
                 timeout: float, progress: Progress) -> list[ServiceOutcome]:
    """Follow every service until Swarm's update (or first start) has ended, or the timeout."""
    started = time.monotonic()
    outcomes: dict[str, ServiceOutcome] = {}
    reported: set[str] = set()
    reasons: dict[str, str] = {}
    stalled: dict[str, float] = {}  # service -> when its update was first seen waiting on a lost node
    while True:
        elapsed = time.monotonic() - started
        current = stack_services(stack_name)
        replicas = _replicas(stack_name)
        down: set[str] | None = None
        for name in expected:
            if name in outcomes:
                continue
            service = current.get(name)
            if service is None:
                continue
            old = before.get(name)
            status = service.get("UpdateStatus") or {}
            old_status = (old or {}).get("UpdateStatus") or {}
            # A new update, or one still running from an earlier deploy (interrupted): follow it.
            fresh = bool(status) and (status.get("StartedAt") != old_status.get("StartedAt")
                                      or status.get("State") in IN_PROGRESS)
            running, desired = replicas.get(name, (0, -1))
            if fresh or old_status.get("State") in IN_PROGRESS:
                state = status.get("State", "")
                if name not in reported:
                    progress.event(f"Service {name}", "Updating", state="working")
                    reported.add(name)
                if state.startswith("rollback") and name not in reasons:
                    # The first rollback message names the failed task; later ones do not.
                    reasons[name] = _rollback_reason(status, f"{stack_name}_{name}")
                if state in SETTLED:
                    message = "" if state == "completed" else reasons.get(name) or status.get("Message", "")
                    outcomes[name] = ServiceOutcome(name, SETTLED[state], message, round(elapsed, 1))
                elif state == "updating" and name not in reasons:
                    if down is None:
                        down = {n.hostname for n in swarm_nodes() if not n.up}
                    waiting = _stalled_on_lost_node(f"{stack_name}_{name}", down)
                    if waiting is None:
                        stalled.pop(name, None)
                    elif time.monotonic() - stalled.setdefault(name, time.monotonic()) >= STALL_GRACE:
                        # It would wait until the node is back: end it the way a failed update ends.
                        task, node = waiting
                        reasons[name] = (f"node {node} was lost while new task {task[:12]} was starting "
                                         "there; the update waited for it, so compose-atomic rolled back")
                        progress.event(f"Service {name}", "Rolling back", reasons[name], state="warning")
                        docker.run(docker.service_rollback(f"{stack_name}_{name}"))
                continue
            if old is not None:
                # A changed task template means Swarm will roll the tasks: wait to see it start.
                changed = old["Spec"].get("TaskTemplate") != service["Spec"].get("TaskTemplate")
                grace = CHANGED_GRACE if changed else UPDATE_GRACE
                if elapsed >= grace and running == desired:
                    outcomes[name] = ServiceOutcome(name, "unchanged", "", round(elapsed, 1))
                continue
            if running == desired and desired >= 0 and elapsed >= 1.0:
                outcomes[name] = ServiceOutcome(name, "created", "", round(elapsed, 1))
                continue
            failures, error = _task_failures(f"{stack_name}_{name}")
            if failures >= MAX_NEW_TASK_FAILURES:
                outcomes[name] = ServiceOutcome(name, "failed", (
                    f"{failures} tasks failed and none became ready; last error: {error or 'unknown'}"),
                    round(elapsed, 1))
        for outcome in outcomes.values():
            key = f"done:{outcome.service}"
            if key in reported:
                continue
            reported.add(key)
            state = {"updated": "done", "unchanged": "done", "created": "done",
                     "rolled back": "warning"}.get(outcome.outcome, "error")
            progress.event(f"Service {outcome.service}", outcome.outcome.capitalize(), outcome.message,
                           state=state, elapsed=outcome.seconds)
        if len(outcomes) == len(expected):
            return [outcomes[n] for n in expected]
        if elapsed >= timeout:
            for name in expected:
                if name not in outcomes:
                    outcomes[name] = ServiceOutcome(name, "timeout", (
                        f"not settled after {timeout:.0f}s; Swarm carries on in the background "
                        f"(docker service ps {stack_name}_{name})"), round(elapsed, 1))
                    progress.event(f"Service {name}", "Timeout", outcomes[name].message, state="error")
            return [outcomes[n] for n in expected]
        time.sleep(POLL)


def remove_stale_proxy_configs(stack_name: str, current: str | None) -> None:
    """Drop the proxy configs of earlier deploys (Swarm refuses for one still in use)."""
    if not current:
        return
    prefix = f"{stack_name}_caddy_"
    proc = docker.run(docker.docker("config", "ls", "--filter", f"name={prefix}", "--format", "{{.Name}}"))
    stale = [n for n in proc.stdout.split() if n.startswith(prefix) and n != current]
    if stale:
        docker.run(docker.config_remove(*stale))


def proxy_answers(rendered: RenderedStack, progress: Progress, nodes: list[SwarmNode] | None = None,
                  timeout: float = 15.0) -> dict[str, bool] | None:
    """Check that the proxy answers HTTP on every node's published ports (any status counts).

    The proxy is global: one task per node, on the node's own ports. Each node is asked at
    the address it has in the swarm (where its peers reach it), not at 127.0.0.1, which is
    only the manager when the command runs there. The Caddy image may hold nothing but the
    caddy binary, so Swarm cannot health-check it from inside; we ask from outside instead.
    Returns ``{node hostname: answered}`` for the nodes that are up, None when there is no
    proxy or no plain-HTTP port to ask.
    """
    import httpx

    from .render import PROXY_SERVICE

    proxy = rendered.stack["services"].get(PROXY_SERVICE)
    if not proxy:
        return None
    ports = [p["published"] for p in proxy.get("ports", []) if p.get("target") != 443 and p.get("published")]
    if not ports:
        return None
    targets = [(n.hostname or n.id[:12], n.address) for n in (nodes or []) if n.up and n.address]
    if not targets:
        targets = [("this node", "127.0.0.1")]
    answered: dict[str, bool] = {}
    deadline = time.monotonic() + timeout
    for name, address in targets:
        host = f"[{address}]" if ":" in address else address
        answered[name] = True
        for port in ports:
            url = f"http://{host}:{port}/"
            while True:
                try:
                    httpx.get(url, timeout=2.0)
                    progress.event(f"Service {PROXY_SERVICE}", "Answering", f"{url} (node {name})")
                    break
                except httpx.HTTPError:
                    if time.monotonic() >= deadline:
                        progress.warn(f"Service {PROXY_SERVICE}", (
                            f"nothing answers on {url} (node {name}) from here; "
                            f"see docker service ps {rendered.stack_name}_{PROXY_SERVICE} and that "
                            "node's firewall"))
                        answered[name] = False
                        break
                    time.sleep(0.5)
    return answered


def deploy_stack(project: Project, rendered: RenderedStack, directory: Path, *, timeout: float,
                 resolve_image: str = "auto", prune: bool = False, registry_auth: bool = False,
                 progress: Progress | None = None) -> StackResult:
    """Write, submit and follow the stack until it settles; the caller maps the result to an exit code."""
    from ..plugins import call_hook
    from .render import PROXY_CONFIG

    progress = progress or Progress()
    started = time.monotonic()
    node = swarm_manager_node()
    stack_file = write_stack(rendered, directory)
    result = StackResult(stack=rendered.stack_name, stack_file=str(stack_file),
                         proxy_config=(rendered.stack.get("configs") or {}).get(PROXY_CONFIG, {}).get("name"))
    progress.step(f"Deploying stack {rendered.stack_name} ({len(rendered.stack['services'])} services)")
    result.labelled = ensure_node_labels(rendered, node, progress)
    before = stack_services(rendered.stack_name)
    busy = [name for name, service in before.items()
            if (service.get("UpdateStatus") or {}).get("State") in IN_PROGRESS]
    if busy:
        # Re-submitting during an update makes Swarm record the half-deployed spec as the one
        # to roll back to, and the update never ends. Let the earlier one finish first.
        progress.event(f"Stack {rendered.stack_name}", "Waiting",
                       f"an earlier update is still running on {', '.join(busy)}", state="working")
        earlier = wait_settled(rendered.stack_name, before, busy, timeout, progress)
        if any(o.outcome == "timeout" for o in earlier):
            result.services = earlier
            result.seconds = round(time.monotonic() - started, 1)
            return result
        before = stack_services(rendered.stack_name)
    nodes = swarm_nodes()
    result.local_images = local_only_images(rendered)
    if len(nodes) > 1:
        for image in result.local_images:
            progress.warn(f"Image {image}", (
                "built or loaded on this node, from no registry: Swarm cannot pull it elsewhere, so "
                "every node must have it already (docker save | docker load), or a node without it "
                "rejects its tasks (No such image). Push it to a registry to let Swarm distribute it."))
    mode = resolve_image_mode(rendered, resolve_image, nodes)
    submit(stack_file, rendered.stack_name, mode, prune, registry_auth)
    progress.event(f"Stack {rendered.stack_name}", "Submitted", f"{stack_file} (resolve-image {mode})")
    expected = list(rendered.stack["services"])
    result.services = wait_settled(rendered.stack_name, before, expected, timeout, progress)
    if result.exit_code == 0:
        answered = proxy_answers(rendered, progress, swarm_nodes())
        if answered is not None:
            result.proxy_nodes = answered
            result.proxy_answers = all(answered.values())
    result.seconds = round(time.monotonic() - started, 1)
    call_hook("after_stack_deploy", project=project, result=result)
    return result
