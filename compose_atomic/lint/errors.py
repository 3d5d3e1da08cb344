"""Errors of the lint capability, each mapped to the exit codes in compose_atomic.errors."""

from __future__ import annotations

from compose_atomic.errors import ConfigError, OperationFailed, UsageError


class LintFailed(OperationFailed):
    """Error-level findings remain: the migration must not run as written (exit 1)."""

    def __init__(self, message: str, findings: list | None = None, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.findings = list(findings or [])


class LintUsageError(UsageError):
    """The lint command line names something that does not exist (exit 2)."""


class LintConfigError(ConfigError):
    """``x-atomic.lint`` names an unknown rule or an invalid value (exit 2)."""
