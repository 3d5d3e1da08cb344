"""What compose-atomic keeps in the project's state directory, and how it writes it.

One writer for every JSON file there (journal, history, migration state, snapshot manifests):
a temporary file, fsync, an atomic rename, fsync of the directory. And the snapshot catalog,
which migrations write and lint (``--trace --from-snapshot``), status and prune read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SnapshotNotFound


def write_json_atomic(path: Path, data: Any, *, mode: int = 0o600) -> None:
    """Write JSON through a temporary file (``mode``), fsync, rename: never half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file (history), oldest first; damaged lines are skipped."""
    try:
        lines = path.read_text().splitlines()
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


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Snapshot:
    """A dump file and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def manifest_path(self) -> Path:
        return self.path.with_suffix(".json")

    @property
    def created(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.manifest["created"])

    def save_manifest(self) -> None:
        write_json_atomic(self.manifest_path, self.manifest)


def list_snapshots(directory: Path, database_service: str | None = None) -> list[Snapshot]:
    """Complete snapshots (dump plus manifest), oldest first."""
    found = []
    if not directory.is_dir():
        return found
    for manifest_path in directory.glob("*.json"):
        if manifest_path.name.startswith("."):
            continue
        dump = manifest_path.with_suffix(".dump")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            continue
        if not dump.is_file():
            continue
        if database_service and manifest.get("database_service") != database_service:
            continue
        found.append(Snapshot(dump, manifest))
    return sorted(found, key=lambda s: (s.manifest["created"], s.name))


def find_snapshot(directory: Path, database_service: str, name: str | None) -> Snapshot:
    """A snapshot by name (or file name), or the newest when name is None."""
    snapshots = list_snapshots(directory, database_service)
    if name is None:
        if not snapshots:
            raise SnapshotNotFound(f'no snapshot of "{database_service}" in {directory}',
                                   hint="Take one with: compose-atomic db snapshot")
        return snapshots[-1]
    for snap in snapshots:
        if name in (snap.name, snap.path.name):
            return snap
    names = ", ".join(s.name for s in snapshots[-5:]) or "none"
    raise SnapshotNotFound(f'no snapshot named "{name}" (latest: {names})',
                           hint="List them with: compose-atomic db snapshots")
