"""``compose-atomic rollback``: deploy an image a service ran before, through the same gate.

The previous image is named by its id, which the history records for every
deploy, so a re-tagged or re-pushed tag cannot change what "previous" means.
Compose is given a one-line override file that pins the service's image to that
id; everything else about the service stays as the compose file says. The next
plain ``compose-atomic up`` deploys what the compose file names again.
"""

from __future__ import annotations

import dataclasses

import yaml

from .. import docker
from ..errors import OperationFailed, UsageError
from ..project import ComposeOptions, Project, _included_files, load_project
from .up import up
from .state import History, deploy_dir


def _strip(image_id: str) -> str:
    return image_id[7:] if image_id.startswith("sha256:") else image_id


def pick_target(project: Project, service: str, to: str | None) -> str:
    entries = History(project).entries(service)
    if to:
        wanted = _strip(to)
        for entry in reversed(entries):
            for key in ("old_image_id", "new_image_id"):
                if entry.get(key) and _strip(entry[key]).startswith(wanted):
                    return entry[key]
        found = docker.image_id(to)
        if found:
            return found
        raise UsageError(f"{service}: no image {to!r} in the history or on this host; "
                         f"`compose-atomic history {service}` lists them")
    running = docker.service_containers(project.name, service, running_only=True)
    current = running[0]["Image"] if running else None
    deployed = [e for e in entries if e.get("outcome") == "deployed" and e.get("old_image_id")]
    for entry in reversed(deployed):
        if entry.get("new_image_id") == current and entry["old_image_id"] != current:
            return entry["old_image_id"]
    for entry in reversed(deployed):
        if entry["old_image_id"] != current:
            return entry["old_image_id"]
    raise OperationFailed(f"{service}: no previous image in the history to roll back to",
                          hint="Roll back needs at least one earlier deploy by compose-atomic.")


def rollback(project: Project, options: ComposeOptions, *, service: str | None, to: str | None,
             lock_wait: str | None) -> int:
    candidates = [s for s in project.atomic_services if History(project).entries(s)]
    if service is None:
        if len(candidates) != 1:
            raise UsageError("name the service to roll back: " + (", ".join(candidates) or "no deploys recorded yet"))
        service = candidates[0]
    if service not in project.services:
        raise UsageError(f"no such service: {service}; services are: {', '.join(project.services)}")
    target = pick_target(project, service, to)
    if docker.image_id(target) is None:
        raise OperationFailed(f"{service}: image {target[:19]} is no longer on this host (pruned?)",
                              hint="Pull or rebuild it, then run rollback --to with its id.")
    override = deploy_dir(project) / f"rollback-{service}.yaml"
    override.write_text(yaml.safe_dump({"services": {service: {"image": target}}}))
    if options.files:
        files = list(options.files)
    else:
        included = set(_included_files(project.files))
        files = [str(f) for f in project.files if f not in included]
    pinned = dataclasses.replace(options, files=tuple(files) + (str(override),), project_name=project.name,
                                 project_directory=options.project_directory or str(project.working_dir))
    return up(load_project(pinned), services=[service], flags={}, raw_args=[], lock_wait=lock_wait)
