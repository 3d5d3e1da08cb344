"""Retention: keep the images of the last N releases of each service, remove what is older.

What counts as **this project's** image, and nothing else is ever a candidate:

- an image id this project's deploy history records for a service (``new_image_id`` or
  ``old_image_id``), or
- an image Compose built for this project (label ``com.docker.compose.project=<name>``).

Of those, an image is kept when it is one of the service's newest ``N`` releases (a release:
an image a deploy ended ``deployed`` with, or Compose built; newest by deploy time, else by
creation), when any container of any project uses it (running or stopped; a stopped container
this prune removes first does not count), when the compose
file names it now, or when it carries another compose project's label. The rest is removed
by ``docker image rm`` without ``--force``, so the engine itself refuses an image in use.

Also pruned: pre-migration snapshots past their rule (``migrate.keep_snapshots``, the rule
``compose-atomic db`` applies; manual snapshots are never pruned), and stopped containers the
deploy left (a container the history names, of this project, not running), never while a
deploy holds the lock or left a journal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import docker
from ..project import Project
from ..settings import DEFAULTS
from . import state

DEFAULT_RELEASES = DEFAULTS["retain.releases"]


@dataclass(frozen=True)
class RetainSettings:
    """``x-atomic.retain``, with defaults."""

    releases: int = DEFAULT_RELEASES
    after_deploy: bool = DEFAULTS["retain.after_deploy"]


def retain_settings(project: Project) -> RetainSettings:
    raw = project.x_atomic.get("retain") or {}
    return RetainSettings(releases=int(raw.get("releases", DEFAULT_RELEASES)),
                          after_deploy=bool(raw.get("after_deploy", DEFAULTS["retain.after_deploy"])))


@dataclass
class ImageItem:
    id: str
    service: str
    tags: list[str]
    size: int
    created: str
    why: str = ""  # why it goes, or why it stays

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "service": self.service, "tags": self.tags, "size": self.size, "reason": self.why}


@dataclass
class PrunePlan:
    keep: int
    images: list[ImageItem] = field(default_factory=list)  # to remove
    kept: list[ImageItem] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)  # name, database, path, size
    containers: list[dict[str, Any]] = field(default_factory=list)  # id, name, service, size
    skipped: list[str] = field(default_factory=list)  # why something was not even considered

    @property
    def freed_bytes(self) -> int:
        # Shared layers make an image's Size an upper bound of what removing it frees.
        return (sum(i.size for i in self.images) + sum(s["size"] for s in self.snapshots)
                + sum(c.get("size", 0) for c in self.containers))

    def summary(self) -> str:
        parts = []
        if self.images:
            parts.append(f"{len(self.images)} old image{'s' * (len(self.images) != 1)}")
        if self.snapshots:
            parts.append(f"{len(self.snapshots)} snapshot{'s' * (len(self.snapshots) != 1)}")
        if self.containers:
            parts.append(f"{len(self.containers)} stopped container{'s' * (len(self.containers) != 1)}")
        return ", ".join(parts) or "nothing"

    def as_dict(self) -> dict[str, Any]:
        return {"keep": self.keep, "freed_bytes": self.freed_bytes,
                "images": [i.as_dict() for i in self.images], "kept": [i.as_dict() for i in self.kept],
                "snapshots": self.snapshots, "containers": self.containers, "skipped": self.skipped}


def used_images(leaving: set[str] = frozenset()) -> set[str]:
    """Image ids any container on the engine was created from (running or not, any project),
    except the containers in ``leaving`` (those this prune removes first)."""
    ids = [i for i in docker.run(docker.list_all_containers()).stdout.split() if i not in leaving]
    if not ids:
        return set()
    return set(docker.run(docker.container_images(*ids)).stdout.split())


def releases(history: list[dict[str, Any]], service: str) -> tuple[list[str], set[str]]:
    """(the service's released image ids, newest first; every image id its history names)."""
    order: list[str] = []
    named: set[str] = set()
    for entry in history:
        if entry.get("service") != service:
            continue
        for key in ("old_image_id", "new_image_id"):
            if entry.get(key):
                named.add(entry[key])
        first_old = entry.get("old_image_id")
        if first_old and first_old not in order:
            order.append(first_old)  # what served before the first recorded deploy was a release too
        new = entry.get("new_image_id")
        if new and entry.get("outcome") == "deployed":
            if new in order:
                order.remove(new)
            order.append(new)
    return list(reversed(order)), named


def plan_prune(project: Project, keep: int | None = None, *, holding_lock: bool = False) -> PrunePlan:
    """What ``prune`` would remove (pure reads: nothing changes).

    ``holding_lock``: the caller holds the deploy lock (``prune`` itself), so a held lock is not
    a deploy running.
    """
    keep = retain_settings(project).releases if keep is None else keep
    plan = PrunePlan(keep)
    history = state.history(project)
    built = docker.run(docker.list_images_labelled(f"{docker.LABEL_PROJECT}={project.name}")).stdout.split()
    candidates: set[str] = set(built)
    released: dict[str, list[str]] = {}
    named_by: dict[str, str] = {}
    for service in project.services:
        order, named = releases(history, service)
        released[service] = order
        candidates |= named
        for image in named:
            named_by.setdefault(image, service)
    busy = (not holding_lock and state.lock_holder(project)) or (state.journal(project) and "a deploy left its journal")
    if busy:
        plan.skipped.append(f"stopped containers: not while {busy} (run `compose-atomic up` first)")
    else:
        plan.containers = _left_containers(project, history)
    infos = docker.run(docker.inspect_images(*sorted(candidates))).json([]) if candidates else []
    wanted = _referenced(project)
    in_use = used_images({c["id"] for c in plan.containers}) if infos else set()
    by_service: dict[str, list[dict[str, Any]]] = {}
    for info in infos:
        labels = (info.get("Config") or {}).get("Labels") or {}
        owner = labels.get(docker.LABEL_PROJECT)
        if owner and owner != project.name:
            plan.skipped.append(f"{info['Id']}: built for project {owner}")
            continue
        service = labels.get(docker.LABEL_SERVICE) if owner == project.name else None
        by_service.setdefault(service or named_by.get(info["Id"], "?"), []).append(info)
    for service, found in by_service.items():
        order = released.get(service, [])
        # Newest first: by deploy order where the history has it, else by creation time.
        by_age = sorted(found, key=lambda i: i.get("Created", ""), reverse=True)
        ranked = sorted(by_age, key=lambda i: order.index(i["Id"]) if i["Id"] in order else len(order))
        for rank, info in enumerate(ranked):
            item = ImageItem(info["Id"], service, list(info.get("RepoTags") or []), int(info.get("Size") or 0),
                             info.get("Created", ""))
            if info["Id"] in in_use:
                item.why = "a container uses it"
            elif info["Id"] in wanted:
                item.why = "the compose file names it"
            elif rank < keep:
                item.why = f"one of the last {keep} releases"
            if item.why:
                plan.kept.append(item)
            else:
                item.why = f"older than the last {keep} releases"
                plan.images.append(item)
    plan.snapshots = _old_snapshots(project)
    return plan


def _referenced(project: Project) -> set[str]:
    """Image ids the compose file's image references point to now (the next `up` wants them)."""
    refs = sorted({svc["image"] for svc in project.services.values() if svc.get("image")}
                  | {f"{project.name}-{name}" for name, svc in project.services.items()
                     if "build" in svc and not svc.get("image")})
    if not refs:
        return set()
    return {i["Id"] for i in docker.run(docker.inspect_images(*refs)).json([]) or []}


def _old_snapshots(project: Project) -> list[dict[str, Any]]:
    from ..migrate.settings import migrate_settings
    from ..migrate.snapshot import list_snapshots, to_prune

    directory = state.snapshot_dir(project)
    if not directory.is_dir():
        return []
    keep_for: dict[str, int] = {}
    for service in project.services:
        settings = migrate_settings(project, service)
        if settings:  # several services migrating one database: the most generous rule wins
            keep_for[settings.database] = max(keep_for.get(settings.database, 0), settings.keep_snapshots)
    found = []
    for database, keep in sorted(keep_for.items()):
        for snap in to_prune(list_snapshots(directory, database), keep):
            size = _size(snap.path) + _size(snap.manifest_path)
            found.append({"name": snap.name, "database": database, "path": str(snap.path), "size": size,
                          "reason": f"pre-migration, beyond keep_snapshots={keep} and older than a day"})
    return found


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _left_containers(project: Project, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stopped containers of this project that a recorded deploy created or replaced."""
    names = {e.get(k) for e in history for k in ("old_container", "new_container")} - {None}
    if not names:
        return []
    ids = docker.run(docker.list_project(project.name)).stdout.split()
    found = []
    for info in docker.run(docker.inspect_containers_size(*ids)).json([]) if ids else []:
        name = docker.name_of(info)
        status = info["State"]["Status"]
        if name in names and status in ("exited", "created", "dead"):
            found.append({"id": info["Id"], "name": name, "size": int(info.get("SizeRw") or 0),
                          "service": info["Config"]["Labels"].get(docker.LABEL_SERVICE, ""), "state": status})
    return found


def apply(plan: PrunePlan, progress) -> list[str]:
    """Remove what the plan lists; returns the problems (an image the engine refused, ...)."""
    problems = []
    for c in plan.containers:
        result = docker.run(docker.remove(c["id"]))
        if result.ok:
            progress.event(f"Container {c['name']}", "Removed", "stopped, left by a deploy")
        else:
            problems.append(f"container {c['name']}: {result.last_line()}")
    for item in plan.images:
        # By tag when tagged (an id with several tags is refused), else by id.
        result = docker.run(docker.remove_images(*(item.tags or [item.id])))
        shown = item.tags[0] if item.tags else item.id[7:19]
        if result.ok:
            progress.event(f"Image {shown}", "Removed", f"{item.service}: {item.why}")
        else:
            problems.append(f"image {shown}: {result.last_line()}")
    for snap in plan.snapshots:
        path = Path(snap["path"])
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)
        progress.event(f"Snapshot {snap['name']}", "Removed", snap["reason"])
    return problems
