"""Read-only views of the state directory: history, journal, lock, the proxy's saved routes.

The deploy's own classes (:mod:`compose_atomic.deploy.state`) create the directory when they
open it; a ``status`` of a project that never deployed must not, so these read the files only.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import LockBusy
from ..project import Project
from ..statedir import read_jsonl

#: The proxy's saved switch configuration, newest layout first (caddy.json: before the edge/switch pair).
PROXY_FILES = ("switch-a.json", "caddy.json")


def deploy_dir(project: Project) -> Path:
    return project.state_dir / "deploy" / (project.name or "default")


def history(project: Project) -> list[dict[str, Any]]:
    """Every recorded service deploy, oldest first (damaged lines skipped)."""
    return read_jsonl(deploy_dir(project) / "history.jsonl")


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


@contextmanager
def exclusive(project: Project, what: str) -> Iterator[None]:
    """Hold the project's deploy lock (the same flock on the same file as ``up``) or fail at once.

    ``prune`` takes it so that it never removes an image a deploy is about to use. Kept here,
    not borrowed from the deploy package, so that the deploy can call the pre-flight without an
    import cycle.
    """
    path = deploy_dir(project) / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = path.with_name("lock.owner")
            who = owner.read_text().strip() if owner.exists() else "another process"
            raise LockBusy(f"project {project.name}: a deploy is running ({who}); {what} waits for none",
                           hint=f"Run {what} again once it has finished.") from None
        path.with_name("lock.owner").write_text(f"pid {os.getpid()} ({what}) since {time.strftime('%H:%M:%S')}")
        yield


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


def proxy_maintenance(project: Project) -> dict[str, dict[str, Any]]:
    """Routes in maintenance (``compose-atomic maintenance on``): service -> message, retry_after."""
    try:
        found = json.loads((project.state_dir / "proxy" / "maintenance.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in found.items() if isinstance(v, dict)} if isinstance(found, dict) else {}


def snapshot_dir(project: Project) -> Path:
    """Where migrations keep their snapshots (not created here)."""
    return project.state_dir / "snapshots"
