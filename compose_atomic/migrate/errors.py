"""Errors of the migration guard, each mapped to the exit codes in compose_atomic.errors."""

from __future__ import annotations

from ..errors import ComposeAtomicError, OperationFailed, RollbackFailed, RolledBack, UsageError

__all__ = [
    "ComposeAtomicError", "DatabaseUnavailable", "MigrationFailed", "MigrationTimedOut",
    "NotEnoughSpace", "RestoreFailed", "RestoreRefused", "RollbackFailed", "RolledBack",
    "SnapshotFailed", "SnapshotNotFound", "UsageError",
]


class DatabaseUnavailable(OperationFailed):
    """The database container is not running or cannot be reached."""


class SnapshotFailed(OperationFailed):
    """A snapshot could not be taken; nothing was written to the state directory."""


class NotEnoughSpace(SnapshotFailed):
    """The state directory has less free space than the snapshot needs."""


class SnapshotNotFound(UsageError):
    """The snapshot asked for does not exist."""


class RestoreRefused(OperationFailed):
    """A restore would discard writes made since the snapshot, or the dump is damaged."""


class RestoreFailed(OperationFailed):
    """The restore did not complete; the live database was left as it was."""


class MigrationFailed(OperationFailed):
    """The migration exited with an error."""


class MigrationTimedOut(MigrationFailed):
    """The migration ran past its timeout and was cancelled on the server."""
