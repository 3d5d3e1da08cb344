"""Errors that end a command, each with the exit code documented in docs/exit-codes.md.

The CLI prints ``str(error)`` as one paragraph and exits with ``error.exit_code``;
no traceback ever reaches the user for these.
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
