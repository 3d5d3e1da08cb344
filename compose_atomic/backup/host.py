"""Run the backup sidecar's commands from the host: ``docker compose run`` of the sidecar.

Host commands use the very script and image the scheduled runs use, so a backup
taken with ``backup now`` and a restore tested with ``backup verify`` go through
the same code path as the nightly job.
"""

from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import OperationFailed, UsageError
from ..project import Project, load_project
from .generate import LABEL, ROLE_LABEL

DEFAULT_OUTPUT = "compose.backup.yml"
FIELDS = ("name", "database", "epoch", "size", "sha256", "verified", "seconds")


@dataclass
class Sidecar:
    """A database service and the sidecar service that backs it up."""

    service: str  # the database service
    name: str  # the dump sidecar service


def with_override(project: Project) -> Project:
    """The project, plus compose.backup.yml when it exists and was not given with -f."""
    if sidecars(project):
        return project
    override = project.working_dir / DEFAULT_OUTPUT
    if override.is_file() and override.resolve() not in {Path(f).resolve() for f in project.files}:
        files = tuple(str(f) for f in project.files) + (str(override),)
        return load_project(dataclasses.replace(project.options, files=files))
    return project


def sidecars(project: Project) -> list[Sidecar]:
    """The dump sidecars in the project, found by the labels ``backup generate`` sets."""
    found = []
    for name, svc in project.services.items():
        labels = svc.get("labels") or {}
        if isinstance(labels, dict) and labels.get(ROLE_LABEL) == "dump" and labels.get(LABEL):
            found.append(Sidecar(service=labels[LABEL], name=name))
    return found


def pick(project: Project, service: str | None) -> Sidecar:
    """The sidecar for ``service`` (or the only one)."""
    found = sidecars(project)
    if not found:
        raise UsageError("no backup sidecar in this project",
                         hint=f"Run `compose-atomic backup generate` and start it with "
                              f"`compose-atomic -f <your compose file> -f {DEFAULT_OUTPUT} up -d`.")
    if service is None:
        if len(found) > 1:
            raise UsageError("several services have backups: " + ", ".join(s.service for s in found),
                             hint="Choose one with --service NAME.")
        return found[0]
    for sidecar in found:
        if service in (sidecar.service, sidecar.name):
            return sidecar
    raise UsageError(f"service {service!r} has no backup sidecar; services with backups: "
                     + ", ".join(s.service for s in found))


def run_sidecar(project: Project, sidecar: Sidecar, *args: str, timeout: float | None = None
                ) -> subprocess.CompletedProcess:
    """``docker compose run --rm -T <sidecar> ARGS``: stdout captured (data), stderr shown live."""
    cmd = project.compose("run", "--rm", "-T", sidecar.name, *args)
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout,
                              check=False)
    except FileNotFoundError:
        raise OperationFailed("the docker CLI was not found on PATH") from None


def result_lines(stdout: str, tag: str) -> list[list[str]]:
    """The sidecar's tab-separated result lines (OK, FAILED, VERIFIED, RESTORED) for ``tag``."""
    return [line.split("\t")[1:] for line in stdout.splitlines() if line.startswith(tag + "\t")]


def failure(stdout: str, code: int) -> str:
    """The sidecar's one-line reason for a failure."""
    failed = result_lines(stdout, "FAILED")
    return failed[-1][0] if failed and failed[-1] else f"the backup sidecar exited with status {code}"


def parse_manifest(stdout: str) -> tuple[list[dict], dict]:
    """Manifest lines into dicts (newest last) plus the sidecar's status line."""
    backups, status = [], {}
    for line in stdout.splitlines():
        parts = line.split("\t")
        if parts[0] == "#status" and len(parts) >= 4:
            status = {"time": int(parts[1]), "result": parts[2], "message": parts[3]}
        elif len(parts) == len(FIELDS) and not line.startswith("#"):
            row: dict = dict(zip(FIELDS, parts))
            try:
                for key in ("epoch", "size", "seconds"):
                    row[key] = int(row[key])
            except ValueError:
                continue  # a damaged line; the sidecar never prunes what it cannot read either
            backups.append(row)
    backups.sort(key=lambda b: b["epoch"])
    return backups, status
