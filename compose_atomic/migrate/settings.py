"""The x-atomic.migrate settings of a service, with defaults, and the state directory."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..durations import parse_duration
from ..errors import UsageError
from ..project import Project
from ..settings import DEFAULTS

DEFAULT_TIMEOUT = DEFAULTS["migrate.timeout"]
DEFAULT_LOCK_TIMEOUT = "5s"
DEFAULT_KEEP = 5


@dataclass(frozen=True)
class MigrateSettings:
    """What ``services.<service>.x-atomic.migrate`` asks for."""

    service: str
    database: str
    command: tuple[str, ...] | None
    sql: tuple[str, ...]
    timeout: float
    lock_timeout: float
    lint: tuple[str, ...]
    on_failure: str  # "refuse" | "restore"
    keep_snapshots: int

    @property
    def force_restore(self) -> bool:
        """``on_failure: restore`` opts in to restores that discard later writes."""
        return self.on_failure == "restore"


def _strings(value) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def migrate_settings(project: Project, service: str) -> MigrateSettings | None:
    """The service's migrate settings, or None when it has none."""
    raw = project.service_x_atomic(service).get("migrate")
    if not raw:
        return None
    command = raw.get("command")
    if isinstance(command, str):
        command = shlex.split(command)
    return MigrateSettings(
        service=service,
        database=raw["database"],
        command=tuple(command) if command else None,
        sql=_strings(raw.get("sql")),
        timeout=parse_duration(raw.get("timeout", DEFAULT_TIMEOUT)),
        lock_timeout=parse_duration(raw.get("lock_timeout", DEFAULT_LOCK_TIMEOUT)),
        lint=_strings(raw.get("lint")),
        on_failure=raw.get("on_failure", "refuse"),
        keep_snapshots=int(raw.get("keep_snapshots", DEFAULT_KEEP)),
    )


def snapshot_dir(project: Project) -> Path:
    """Where snapshots live; created with mode 0700 (dumps hold all the data)."""
    path = project.state_dir / "snapshots"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def database_service(project: Project, requested: str | None) -> str:
    """The PostgreSQL service a ``db`` command acts on.

    Explicit ``--service`` wins; otherwise the one service named by a
    ``migrate.database``, or else the one service whose image mentions postgres.
    """
    services = list(project.services)
    if requested:
        if requested not in project.services:
            raise UsageError(f'no service "{requested}" in the project; services are: '
                             f'{", ".join(services)}.')
        return requested
    named = sorted({(project.service_x_atomic(s).get("migrate") or {}).get("database")
                    for s in services} - {None})
    if len(named) == 1:
        return named[0]
    candidates = named or [s for s, spec in project.services.items()
                           if "postgres" in str(spec.get("image", "")).lower()]
    if len(candidates) == 1:
        return candidates[0]
    raise UsageError("cannot tell which service is the database"
                     + (f" (candidates: {', '.join(candidates)})" if candidates else ""),
                     hint="Name it with --service SERVICE.")
