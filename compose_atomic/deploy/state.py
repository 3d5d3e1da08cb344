"""The project's state directory: the deploy lock, the journal and the history.

Everything a deploy needs to survive its own interruption lives on disk here,
written atomically (temporary file + rename) before the step it describes, so
the next ``up`` can tell exactly what was half done.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, Iterator

from ..errors import LockBusy
from ..project import Project
from ..statedir import read_jsonl, write_json_atomic


class Phase(str, Enum):
    """How far one service's replacement got; the journal records it before each step.

    Start-first: PLANNED -> CREATING -> CREATED -> GATING -> SWITCHED -> COMMITTED.
    Stop-first adds OLD_STOPPED after CREATED; ``container_name`` is IN_PLACE throughout;
    a service with no running container goes PLANNED -> REVIVING -> (GATING ->) SWITCHED.
    """

    PLANNED = "planned"
    CREATING = "creating"
    CREATED = "created"
    OLD_STOPPED = "old-stopped"
    GATING = "gating"
    SWITCHED = "switched"
    COMMITTED = "committed"
    IN_PLACE = "stop-first"
    REVIVING = "reviving"


def deploy_dir(project: Project) -> Path:
    path = project.state_dir / "deploy" / (project.name or "default")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def project_lock(project: Project, wait: float) -> Iterator[None]:
    """Hold the per-project deploy lock; wait up to ``wait`` seconds for it.

    flock is released by the kernel when the process dies, so a killed deploy
    never leaves a stale lock behind (the journal says what it left half done).
    """
    path = deploy_dir(project) / "lock"
    handle = open(path, "a+")
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = path.with_name("lock.owner")
                    who = holder.read_text().strip() if holder.exists() else "another process"
                    raise LockBusy(
                        f"project {project.name}: another deploy is running ({who})",
                        hint="Wait for it, or pass --lock-wait 2m (or x-atomic.lock_wait) to queue behind it.",
                    ) from None
                time.sleep(0.2)
        path.with_name("lock.owner").write_text(f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}")
        yield
    finally:
        handle.close()


class Journal:
    """What the running deploy is doing, one record per service being replaced."""

    def __init__(self, project: Project) -> None:
        self.path = deploy_dir(project) / "journal.json"

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def write(self, record: dict[str, Any]) -> None:
        write_json_atomic(self.path, {**record, "updated": time.time(), "pid": os.getpid()})

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class History:
    """One JSON line per finished service deploy (``history.jsonl``)."""

    def __init__(self, project: Project) -> None:
        self.path = deploy_dir(project) / "history.jsonl"

    def append(self, entry: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def entries(self, service: str | None = None) -> list[dict[str, Any]]:
        return [e for e in read_jsonl(self.path) if service is None or e.get("service") == service]
