"""The deploy gate: ``x-atomic.migrate.lint`` is checked before any snapshot or migration runs."""

from __future__ import annotations

from pathlib import Path

from compose_atomic.errors import ConfigError

from . import expand_paths, lint_paths
from ..errors import LintFailed, LintUsageError
from .model import Finding
from .registry import get_rules
from .settings import config_from_x_atomic


def check_migrations(project, service: str, progress) -> list[Finding]:
    """Lint the files that ``services.<service>.x-atomic.migrate.lint`` matches.

    Globs are relative to ``project.working_dir``; the project's top-level
    ``x-atomic.lint`` applies (pg_version, exclude, severity: a team can lower a
    rule to a warning). Every finding is printed through ``progress``. Raises
    LintFailed (exit 1, nothing changed yet) when an error-level finding remains;
    returns the findings otherwise.
    """
    migrate = project.service_x_atomic(service).get("migrate") or {}
    patterns = migrate.get("lint") or []
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        return []
    rules = get_rules()
    config = config_from_x_atomic(project.x_atomic.get("lint"), rules)
    base = Path(project.working_dir)
    files: list[str] = []
    for pattern in patterns:
        try:
            files.extend(f for f in expand_paths([pattern], base) if f not in files)
        except LintUsageError:
            progress.warn(f"{service} migrations", f"x-atomic.migrate.lint: {pattern!r} matches no file in {base}")
    if not files:
        return []
    progress.step(f"Linting {len(files)} migration file(s) for {service}")
    try:
        findings = lint_paths(files, config)
    except OSError as exc:
        raise ConfigError(f"service {service!r}: x-atomic.migrate.lint: cannot read {exc.filename}: {exc.strerror}")
    for f in findings:
        where = f"{_relative(f.file, base)}:{f.line}"
        text = f"[{f.rule}] {f.message}" + (f" Safe: {f.help}" if f.help else "")
        if f.severity == "error":
            progress.fail(where, text)
        else:
            progress.warn(where, text)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise LintFailed(
            f"service {service!r}: {len(errors)} error-level lint finding(s) in its migrations; nothing was "
            "migrated or deployed",
            findings,
            hint="Fix the migration, or lower the rule in x-atomic.lint.severity (e.g. "
                 f"{errors[0].rule}: warning), or add `-- compose-atomic-ignore {errors[0].rule}` above the statement.",
        )
    progress.event(f"{service} migrations", "Linted", f"{len(files)} file(s), {len(findings)} warning(s)")
    return findings


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return path
