"""Run the backup sidecar's commands from the host: ``docker compose run`` of the sidecar.

Host commands use the very script and image the scheduled runs use, so a backup
taken with ``backup now`` and a restore tested with ``backup verify`` go through
the same code path as the nightly job. ``--no-deps``: a backup never starts a service
the user stopped (Compose's ``depends_on`` would start the database); the commands
that need the server check first that it runs (:func:`require_running`).
Every call goes through the Docker gateway (compose_atomic/docker.py).
"""

from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .. import docker
from ..errors import BackupFailed, DockerTimeout, UsageError
from ..project import Project, load_project
from .generate import LABEL, ROLE_LABEL

DEFAULT_OUTPUT = "compose.backup.yml"
FIELDS = ("name", "database", "epoch", "size", "sha256", "verified", "seconds")
#: A dump, verification or restore of a large database takes long; a hung one still ends.
RUN_TIMEOUT = 6 * 3600.0


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
    return choose(sidecars(project), service, "backup", hint=(
        f"Run `compose-atomic backup generate` and start it with "
        f"`compose-atomic -f <your compose file> -f {DEFAULT_OUTPUT} up -d`."))


def choose(found: list, service: str | None, what: str, hint: str):
    """The one of ``found`` (sidecars with ``service`` and ``name``) that ``service`` names, or
    the only one; a clear error otherwise. ``what`` names the kind ("backup", "PITR")."""
    if not found:
        raise UsageError(f"no {what} sidecar in this project", hint=hint)
    if service is None:
        if len(found) > 1:
            raise UsageError(f"several services have a {what} sidecar: " + ", ".join(s.service for s in found),
                             hint="Choose one with --service NAME.")
        return found[0]
    for sidecar in found:
        if service in (sidecar.service, sidecar.name):
            return sidecar
    raise UsageError(f"service {service!r} has no {what} sidecar; services with one: "
                     + ", ".join(s.service for s in found))


def require_running(project: Project, sidecar: Sidecar, action: str) -> None:
    """Stop with a clear error when the database service has no running container."""
    if not docker.service_containers(project.name, sidecar.service, running_only=True):
        raise BackupFailed(
            f'the database service "{sidecar.service}" is not running; {action} does not start it',
            hint=f"Start it first (compose-atomic up -d {sidecar.service}), then run the command again.")


def sidecar_command(project: Project, sidecar: Sidecar, *args: str, timeout: float = RUN_TIMEOUT
                    ) -> docker.Command:
    """``docker compose run --rm --no-deps -T <sidecar> ARGS`` as a gateway command."""
    return project.compose("run", "--rm", "--no-deps", "-T", sidecar.name, *args, timeout=timeout)


def run_sidecar(project: Project, sidecar: Sidecar, *args: str, timeout: float = RUN_TIMEOUT
                ) -> subprocess.CompletedProcess:
    """Run the sidecar's command: stdout captured (data), stderr shown live (progress)."""
    command = sidecar_command(project, sidecar, *args, timeout=timeout)
    proc = docker.popen(command, stdout=subprocess.PIPE, stderr=None, stdin=subprocess.DEVNULL, text=True)
    try:
        stdout, _ = proc.communicate(timeout=command.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise DockerTimeout(f"`{command}` did not finish within {command.timeout:g}s") from None
    return subprocess.CompletedProcess(list(command.argv), proc.returncode, stdout or "", None)


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
