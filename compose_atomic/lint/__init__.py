"""``compose-atomic lint``: lock-aware, transaction-aware analysis of SQL migrations.

Public API (stable for plugins and the deploy gate)::

    from compose_atomic.lint import Rule, Hit, Finding, LintConfig, lint_paths, lint_text

Rules register through the ``register_lint_rules(register)`` hook; see docs/lint.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import LintConfig, Linter, parse_pg_version
    from ..errors import LintConfigError, LintFailed, LintUsageError
    from .model import Finding, Hit, Rule

# Imported on first use: `compose-atomic --help` loads the lint plugin, not the linter.
_LAZY = {"LintConfig": "engine", "Linter": "engine", "parse_pg_version": "engine", "LintConfigError": "..errors",
         "LintFailed": "..errors", "LintUsageError": "..errors", "Finding": "model", "Hit": "model", "Rule": "model"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name] if _LAZY[name].startswith("..") else f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Finding", "Hit", "LintConfig", "LintConfigError", "LintFailed", "LintUsageError", "Linter",
           "Rule", "expand_paths", "lint_paths", "lint_text", "parse_pg_version"]


def lint_text(text: str, path: str = "<stdin>", config: LintConfig | None = None) -> list[Finding]:
    """Lint SQL text with every registered rule."""
    from .engine import LintConfig, Linter
    from .registry import get_rules

    return Linter(get_rules(), config or LintConfig()).lint_text(path, text)


def expand_paths(patterns, base=None) -> list[str]:
    """Files from paths, directories (``*.sql`` below, sorted) and globs, in a stable order.

    Raises LintUsageError naming the pattern that matched nothing.
    """
    import glob
    import os

    from ..errors import LintUsageError

    found: list[str] = []
    for pattern in patterns:
        full = pattern if base is None or os.path.isabs(pattern) else os.path.join(str(base), pattern)
        if os.path.isdir(full):
            matches = sorted(glob.glob(os.path.join(full, "**", "*.sql"), recursive=True))
        elif os.path.isfile(full):
            matches = [full]
        else:
            matches = sorted(p for p in glob.glob(full, recursive=True) if os.path.isfile(p))
        if not matches:
            raise LintUsageError(f"{pattern}: no such file, or no SQL file matches")
        found.extend(m for m in matches if m not in found)
    return found


def lint_paths(paths, config: LintConfig | None = None) -> list[Finding]:
    """Lint files (already expanded) with every registered rule."""
    from .engine import LintConfig, lint_files
    from .registry import get_rules

    return lint_files(paths, get_rules(), config or LintConfig())
