"""Read-only views of the state directory: history, journal, lock, the proxy's saved routes.

The deploy's own classes (:mod:`compose_atomic.deploy.state`) create the directory when they
open it; a ``status`` of a project that never deployed must not, so these read the files only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..project import Project

#: The proxy's saved switch configuration, newest layout first (caddy.json: before the edge/switch pair).
PROXY_FILES = ("switch-a.json", "caddy.json")


def deploy_dir(project: Project) -> Path:
    return project.state_dir / "deploy" / (project.name or "default")


def history(project: Project) -> list[dict[str, Any]]:
    """Every recorded service deploy, oldest first (damaged lines skipped)."""
    try:
        lines = (deploy_dir(project) / "history.jsonl").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            found.append(entry)
    return found


def journal(project: Project) -> dict[str, Any] | None:
    """The journal an interrupted (or running) deploy left, if any."""
    try:
        record = json.loads((deploy_dir(project) / "journal.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def lock_holder(project: Project) -> str | None:
    """Who holds the deploy lock right now ("pid 123 since 10:02:03"), or None when nobody does.

    Read from ``/proc/locks``, never by trying the lock: a probe, however short, could make
    a concurrent ``up`` (which does not wait by default) fail with "another deploy is running".
    """
    path = deploy_dir(project) / "lock"
    try:
        info = path.stat()
        locks = Path("/proc/locks").read_text()
    except OSError:
        return None
    key = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    for line in locks.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF": major:minor:inode is field 5
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == key:
            try:
                return path.with_name("lock.owner").read_text().strip() or f"pid {fields[4]}"
            except OSError:
                return f"pid {fields[4]}"
    return None


def proxy_routes(project: Project) -> dict[str, list[str]] | None:
    """What the proxy dials per service, from its saved configuration (None: no saved proxy)."""
    from ..proxy.caddy import routes_from_config

    directory = project.state_dir / "proxy"
    for name in PROXY_FILES:
        try:
            return routes_from_config(json.loads((directory / name).read_text()))
        except (OSError, ValueError):
            continue
    return None


def snapshot_dir(project: Project) -> Path:
    """Where migrations keep their snapshots (not created here)."""
    return project.state_dir / "snapshots"
