"""Thin, typed calls to the docker CLI that the deploy needs.

Argument lists only, never a shell. State is read with one ``docker inspect``
per poll and kept in a plain dict: python-on-whales re-inspects on almost every
attribute access (its cache lives 10 ms), which would multiply engine calls in
the health and monitor loops. python-on-whales objects are built only for the
hooks, whose documented arguments are ``Container`` objects.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from ..errors import DockerUnavailable

LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
LABEL_HASH = "com.docker.compose.config-hash"
LABEL_ONEOFF = "com.docker.compose.oneoff"
LABEL_NUMBER = "com.docker.compose.container-number"


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise DockerUnavailable("the docker CLI was not found on PATH") from exc


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def inspect(*ids: str) -> list[dict[str, Any]]:
    """``docker inspect`` of containers; missing ones are left out."""
    if not ids:
        return []
    proc = docker("inspect", "--type", "container", *ids)
    try:
        return json.loads(proc.stdout or "[]")
    except ValueError:
        return []


def inspect_one(cid: str) -> dict[str, Any] | None:
    found = inspect(cid)
    return found[0] if found else None


def service_containers(project: str, service: str, *, running_only: bool = False) -> list[dict[str, Any]]:
    """The containers Compose counts for a service (not one-offs), lowest number first."""
    args = ["ps", "-aq", "--no-trunc", "--filter", f"label={LABEL_PROJECT}={project}",
            "--filter", f"label={LABEL_SERVICE}={service}", "--filter", f"label={LABEL_ONEOFF}=False"]
    ids = docker(*args).stdout.split()
    found = [c for c in inspect(*ids) if LABEL_HASH in c["Config"]["Labels"]]
    if running_only:
        found = [c for c in found if c["State"]["Status"] == "running"]
    return sorted(found, key=lambda c: int(c["Config"]["Labels"].get(LABEL_NUMBER, "0") or 0))


def name_of(info: dict[str, Any]) -> str:
    return info["Name"].lstrip("/")


def image_id(reference: str) -> str | None:
    proc = docker("image", "inspect", "--format", "{{.Id}}", reference)
    return proc.stdout.strip() if proc.returncode == 0 else None


def image_label(image: str) -> str:
    """A readable form of an image: its reference, or a short id."""
    return image[7:19] if image.startswith("sha256:") else image


def whale(cid: str | None):
    """A python-on-whales Container for hook arguments (None stays None)."""
    if not cid:
        return None
    from python_on_whales import docker as pow_docker

    try:
        return pow_docker.container.inspect(cid)
    except Exception:  # noqa: BLE001 - a removed container is not worth failing a hook call for
        return None


def remove(*ids: str) -> None:
    if ids:
        docker("rm", "-f", *ids)


def stop(grace: float, *ids: str) -> None:
    """Stop containers with a grace period; one ``docker stop`` stops them all at once."""
    if ids:
        docker("stop", "-t", str(int(round(grace))), *ids, timeout=grace + 60)


def logs_tail(cid: str, lines: int = 20) -> str:
    proc = docker("logs", "--tail", str(lines), cid)
    return (proc.stdout + proc.stderr).rstrip()
