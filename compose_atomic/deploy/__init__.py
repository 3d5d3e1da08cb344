"""Health-gated rolling replacement of x-atomic services (see docs/deploy.md)."""

from __future__ import annotations

import subprocess

from ..project import Project


def up(project: Project, *, services: list[str], flags: dict, raw_args: list[str],
       lock_wait: str | None) -> int:
    """Bring the project up; x-atomic services are replaced without downtime.

    Placeholder until the rolling replacement lands: a validated project is
    started with Compose exactly as `docker compose up` would.
    """
    return subprocess.run(project.compose("up", *raw_args), check=False).returncode
