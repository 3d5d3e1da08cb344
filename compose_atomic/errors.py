"""Every error that ends a command, in one module, each with its exit code (docs/exit-codes.md).

The CLI prints ``str(error)`` as one paragraph and exits with ``error.exit_code``;
no traceback ever reaches the user for these. The tree (exit code in brackets):

    ComposeAtomicError [1]
    ├── UsageError [2]                 bad command line
    │   ├── LintUsageError             lint names a file or rule that does not exist
    │   ├── SnapshotNotFound           the snapshot asked for does not exist
    │   └── InitError                  init cannot read or change the compose file
    ├── ConfigError [2]                bad x-atomic annotations or compose files
    │   └── LintConfigError            x-atomic.lint names an unknown rule or value
    ├── DockerUnavailable [1]          no docker CLI, no Compose plugin, engine down
    ├── OperationFailed [1]            failed before changing anything serving
    │   ├── PreflightFailed            up: not enough free disk space for the deploy
    │   ├── DockerTimeout              a docker command did not answer in time
    │   ├── HookFailed                 a plugin's gate hook raised
    │   ├── LockBusy                   another command holds the deploy lock
    │   ├── DeployFailed               the new version failed before taking traffic
    │   │   └── HealthFailed           ...at the health gate or in the monitor window
    │   ├── ProxyError                 the managed proxy could not be started or changed
    │   ├── DatabaseUnavailable        the database container cannot be reached
    │   ├── SnapshotFailed             a snapshot could not be taken
    │   │   └── NotEnoughSpace         ...for lack of free space
    │   ├── RestoreRefused             a restore would discard writes, or the dump is damaged
    │   ├── RestoreFailed              a restore did not complete; the live database is as it was
    │   ├── MigrationFailed            the migration exited with an error
    │   │   └── MigrationTimedOut      ...or ran past its timeout
    │   ├── LintFailed                 error-level lint findings remain
    │   ├── TraceFailed                lint --trace could not run the migration on a copy
    │   ├── BackupFailed               a backup, verification or restore failed
    │   ├── NotASwarmManager           stack commands need a swarm manager
    │   └── StackDeployFailed          docker stack deploy itself failed
    ├── RolledBack [3]                 failed, and the previous state is back
    ├── RollbackFailed [4]             failed, and so did putting the previous state back
    └── Interrupted [130]              a signal stopped it after it cleaned up
"""

from __future__ import annotations

#: Everything asked for was done.
EXIT_OK = 0
#: The operation failed before it changed anything; what ran before still runs.
EXIT_FAILED = 1
#: Bad command line or bad configuration; nothing was touched.
EXIT_USAGE = 2
#: The operation failed and compose-atomic put the previous state back.
EXIT_ROLLED_BACK = 3
#: The operation failed and so did putting the previous state back: act by hand.
EXIT_ROLLBACK_FAILED = 4
#: Interrupted (SIGINT/SIGTERM) after cleaning up to a consistent state.
EXIT_INTERRUPTED = 130


class ComposeAtomicError(Exception):
    """Base class: a failure we can explain, with its exit code."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n{self.hint}"
        return self.message


class UsageError(ComposeAtomicError):
    """The command line asks for something that cannot be done."""

    exit_code = EXIT_USAGE


class ConfigError(ComposeAtomicError):
    """An ``x-atomic`` annotation (or the compose project around it) is invalid."""

    exit_code = EXIT_USAGE


class DockerUnavailable(ComposeAtomicError):
    """The docker CLI, its Compose v2 plugin or the engine cannot be reached."""

    exit_code = EXIT_FAILED


class OperationFailed(ComposeAtomicError):
    """The operation failed; nothing that was serving has changed."""

    exit_code = EXIT_FAILED


class RolledBack(ComposeAtomicError):
    """The operation failed and the previous version was restored."""

    exit_code = EXIT_ROLLED_BACK


class RollbackFailed(ComposeAtomicError):
    """The operation failed and restoring the previous state failed too."""

    exit_code = EXIT_ROLLBACK_FAILED


class Interrupted(ComposeAtomicError):
    """A signal stopped the operation after it cleaned up."""

    exit_code = EXIT_INTERRUPTED


class DockerTimeout(OperationFailed):
    """A docker or Compose command did not answer within its timeout."""


class HookFailed(OperationFailed):
    """A plugin's gate hook raised; the operation stopped there."""


class LockBusy(OperationFailed):
    """Another compose-atomic command holds the project's deploy lock."""


class PreflightFailed(OperationFailed):
    """The deploy would not fit on the disk; it stopped before pulling, snapshotting or starting."""


class DeployFailed(OperationFailed):
    """The new version failed before it took traffic; the old one never stopped serving."""


class HealthFailed(DeployFailed):
    """The new container did not pass the gate; ``report`` holds its health log and logs."""

    def __init__(self, message: str, report: str = "") -> None:
        super().__init__(message)
        self.report = report


class ProxyError(OperationFailed):
    """The managed proxy could not be started, reached or changed."""


# ---- migrations -----------------------------------------------------------------------------


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


# ---- lint -----------------------------------------------------------------------------------


class LintFailed(OperationFailed):
    """Error-level findings remain: the migration must not run as written (exit 1)."""

    def __init__(self, message: str, findings: list | None = None, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.findings = list(findings or [])


class LintUsageError(UsageError):
    """The lint command line names something that does not exist (exit 2)."""


class LintConfigError(ConfigError):
    """``x-atomic.lint`` names an unknown rule or an invalid value (exit 2)."""


class TraceFailed(OperationFailed):
    """``lint --trace`` could not run the migration on a scratch copy."""


# ---- init, backups, swarm -------------------------------------------------------------------


class InitError(UsageError):
    """``init`` cannot read or change the compose file."""


class BackupFailed(OperationFailed):
    """A backup, its verification or a restore started from the host failed."""


class NotASwarmManager(OperationFailed):
    """Stack commands need the engine to be a swarm manager."""


class StackDeployFailed(OperationFailed):
    """``docker stack deploy`` itself failed."""
