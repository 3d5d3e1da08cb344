"""Free space where Docker keeps images and where the state directory lives, and the pre-flight.

``preflight(project, plans)`` runs in ``up`` after the plan and before anything is pulled,
snapshotted or started: a deploy that would fill the disk fails there (exit 1), saying how
much is missing where and what ``compose-atomic prune --dry-run`` would free.

Test hook: ``COMPOSE_ATOMIC_TEST_FREE_BYTES`` replaces the free-space reading of the
pre-flight only (``status`` always shows the real one). A number applies to both places;
``docker=N,state=M`` sets each. It exists so that the real-engine test can simulate a full
disk without mounting one; nothing else reads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .. import docker
from ..errors import PreflightFailed
from ..project import Project

TEST_HOOK = "COMPOSE_ATOMIC_TEST_FREE_BYTES"
MIB = 1024 * 1024
#: Free space a deploy must leave on Docker's data root: the engine itself misbehaves near 0.
DOCKER_MARGIN = 256 * MIB
#: ... and on the state directory (journal, history, proxy configuration).
STATE_MARGIN = 16 * MIB
#: A new image is estimated at the running one's size (an upper bound when layers are shared).
PULL_FACTOR = 1.0
#: A snapshot may be this much larger than the previous one (as compose_atomic.migrate.snapshot).
SNAPSHOT_GROWTH = 1.2


@dataclass
class Space:
    """A filesystem's free and total bytes, as statvfs says (for unprivileged users)."""

    path: str
    free: int | None  # None: cannot be read here (a remote engine)
    total: int | None = None
    device: int | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "free_bytes": self.free, "total_bytes": self.total,
                **({"note": self.note} if self.note else {})}


def human(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def statvfs(path: str | Path) -> Space:
    """Free space of the filesystem holding ``path`` (its nearest existing parent)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
        dev = os.stat(probe).st_dev
    except OSError as exc:
        return Space(str(path), None, note=f"cannot read: {exc.strerror}")
    return Space(str(path), st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize, dev)


def engine_is_local() -> bool:
    """Whether the engine runs on this machine (then its data root can be statvfs'd here)."""
    host = os.environ.get("DOCKER_HOST", "")
    context = os.environ.get("DOCKER_CONTEXT", "")
    return (not host or host.startswith("unix://")) and context in ("", "default")


def docker_root_space(root_dir: str | None) -> Space:
    """Free space on Docker's data root (``docker info`` DockerRootDir)."""
    if not root_dir:
        return Space("?", None, note="docker info did not say where Docker keeps its data")
    if not engine_is_local():
        return Space(root_dir, None, note="the engine is remote: check free space on its host")
    return statvfs(root_dir)


def docker_root_dir() -> str | None:
    result = docker.run(docker.engine_info("{{json .DockerRootDir}}"))
    value = result.json() if result.ok else None
    return value if isinstance(value, str) else None


# ---- pre-flight -------------------------------------------------------------------------------


@dataclass
class Need:
    """What one deploy needs on one filesystem, item by item."""

    place: str  # "Docker's data root" or "the state directory"
    space: Space
    items: list[tuple[str, int]] = field(default_factory=list)
    margin: int = 0

    @property
    def total(self) -> int:
        return sum(n for _, n in self.items) + self.margin

    def describe(self) -> str:
        parts = [f"{what} {human(n)}" for what, n in self.items] + [f"margin {human(self.margin)}"]
        return ", ".join(parts)


def _simulated(place: str) -> int | None:
    raw = os.environ.get(TEST_HOOK)
    if not raw:
        return None
    if raw.strip().isdigit():
        return int(raw)
    for part in raw.split(","):
        key, _, value = part.partition("=")
        if key.strip() == place and value.strip().isdigit():
            return int(value)
    return None


def needs(project: Project, plans: Iterable[Any], root: Space, state: Space) -> list[Need]:
    """What the plans need on the data root and on the state directory (one Need when they share it)."""
    active = [p for p in plans if p.action in ("replace", "create", "restart-dead")]
    docker_need = Need("Docker's data root", root, margin=DOCKER_MARGIN)
    state_need = Need("the state directory", state, margin=STATE_MARGIN)
    if not active:
        return []
    old_ids = [c["Id"] for p in active for c in p.old]
    sized = {c["Id"]: c for c in (docker.run(docker.inspect_containers_size(*old_ids)).json([]) if old_ids else [])}
    old_images = sorted({c.get("Image") for c in sized.values() if c.get("Image")})
    image_sizes = {i["Id"]: int(i.get("Size") or 0)
                   for i in (docker.run(docker.inspect_images(*old_images)).json([]) if old_images else [])}
    for plan in active:
        svc = project.services.get(plan.service, {})
        previous = max((image_sizes.get(sized.get(c["Id"], {}).get("Image"), 0) for c in plan.old), default=0)
        if plan.needs_pull or "build" in svc:
            # The new image's size is not known before it is pulled: the running one's is the estimate.
            factor = PULL_FACTOR
            verb = "pull" if plan.needs_pull else "build"
            if previous:
                docker_need.items.append((f"{plan.service}: {verb} of the new image (~ the running one)",
                                          int(previous * factor)))
        writable = sum(int(sized.get(c["Id"], {}).get("SizeRw") or 0) for c in plan.old)
        if writable and plan.action == "replace":
            docker_need.items.append((f"{plan.service}: the second container's writable layer", writable))
        database = (project.service_x_atomic(plan.service).get("migrate") or {}).get("database")
        if database:
            previous_snapshot = _newest_snapshot_size(project, database)
            if previous_snapshot:
                state_need.items.append((f"{plan.service}: snapshot of {database} (the last one x{SNAPSHOT_GROWTH:g})",
                                         int(previous_snapshot * SNAPSHOT_GROWTH)))
    if root.device is not None and root.device == state.device:
        docker_need.items += state_need.items
        docker_need.margin += state_need.margin
        docker_need.place = "Docker's data root (which also holds the state directory)"
        return [docker_need]
    return [docker_need, state_need]


def _newest_snapshot_size(project: Project, database: str) -> int:
    from ..migrate.snapshot import list_snapshots
    from .state import snapshot_dir

    directory = snapshot_dir(project)
    if not directory.is_dir():
        return 0
    found = list_snapshots(directory, database)
    return int(found[-1].manifest.get("size") or 0) if found else 0


def preflight(project: Project, plans: Iterable[Any]) -> None:
    """Fail (exit 1) before anything changes when this deploy would not fit on the disk.

    ``plans`` are the deploy's :class:`~compose_atomic.deploy.plan.ServicePlan` objects. Nothing
    is checked when no service is created or replaced.
    """
    root = docker_root_space(docker_root_dir())
    state = statvfs(project.state_dir)
    for space, place in ((root, "docker"), (state, "state")):
        simulated = _simulated(place)
        if simulated is not None:
            space.free = simulated
    short = [n for n in needs(project, plans, root, state) if n.space.free is not None and n.space.free < n.total]
    if not short:
        return
    lines = [f"{n.place} ({n.space.path}) has {human(n.space.free)} free; this deploy needs "
             f"{human(n.total)} ({n.describe()}): {human(n.total - (n.space.free or 0))} missing"
             for n in short]
    raise PreflightFailed("not enough free space for this deploy; nothing was changed:\n  " + "\n  ".join(lines),
                          hint=prune_hint(project))


def prune_hint(project: Project) -> str:
    """What ``prune`` would free, for the pre-flight's message."""
    from .prune import plan_prune

    try:
        plan = plan_prune(project)
    except Exception as exc:  # noqa: BLE001 - the hint must not hide the real error
        return f"`compose-atomic prune --dry-run` lists what can go (it could not be estimated: {exc})."
    if not plan.freed_bytes:
        return ("`compose-atomic prune --dry-run` finds nothing of this project to free: "
                "free space on that disk by other means, or keep fewer releases (x-atomic.retain.releases).")
    return (f"`compose-atomic prune --dry-run` would free {human(plan.freed_bytes)} ({plan.summary()}); "
            "`compose-atomic prune` removes it.")
