"""Lint settings: top-level ``x-atomic.lint`` (pg_version, exclude, severity) plus the command line.

The lint command reads ``x-atomic.lint`` straight from the compose files Compose
would use (compose.yaml and its override), without running ``docker compose
config``: linting must work on a laptop or CI runner with no Docker, and start
fast. The deploy gate gets the fully resolved project instead.
"""

from __future__ import annotations

from typing import Any

from .engine import LintConfig, parse_pg_version
from ..errors import LintConfigError, LintUsageError
from .model import SEVERITIES, SQUAWK_ONLY_RULES, Rule


def resolve_rule(name: str, rules: dict[str, Rule], where: str, error=LintUsageError) -> str:
    """A rule id (or a squawk alias) -> the rule id; unknown names are a usage error."""
    key = name.strip().lower()
    if key in rules:
        return key
    for rule in rules.values():
        if key in rule.aliases:
            return rule.id
    if key in SQUAWK_ONLY_RULES:
        return key  # squawk's rule, which we do not have: excluding it is a no-op
    from compose_atomic.config import did_you_mean  # imports jsonschema: only on this error path

    raise error(f"{where}: unknown lint rule {name!r}." + did_you_mean(key, list(rules)),
                hint="`compose-atomic lint --list-rules` lists them.")


def config_from_x_atomic(lint: dict[str, Any] | None, rules: dict[str, Rule], where: str = "x-atomic.lint") -> LintConfig:
    """Build a LintConfig from the ``x-atomic.lint`` mapping (already schema-shaped, but checked again)."""
    lint = lint or {}
    if not isinstance(lint, dict):
        raise LintConfigError(f"{where} must be a mapping with pg_version, exclude and severity")
    config = LintConfig()
    if lint.get("pg_version") is not None:
        try:
            config.pg_version = parse_pg_version(lint["pg_version"])
        except ValueError as exc:
            raise LintConfigError(f"{where}.pg_version: {exc}") from None
    exclude = lint.get("exclude") or []
    if isinstance(exclude, str):
        exclude = [exclude]
    config.exclude = frozenset(resolve_rule(r, rules, f"{where}.exclude", LintConfigError) for r in exclude)
    severity = {}
    for name, level in (lint.get("severity") or {}).items():
        if level not in SEVERITIES:
            raise LintConfigError(f"{where}.severity.{name}: {level!r} is not one of {', '.join(SEVERITIES)}")
        severity[resolve_rule(name, rules, f"{where}.severity", LintConfigError)] = level
    config.severity = severity
    if "assume_in_transaction" in lint:  # from .squawk.toml only; not an x-atomic key
        config.assume_in_transaction = bool(lint["assume_in_transaction"])
    return config


def squawk_toml_section(start=None) -> tuple[str, dict[str, Any]] | None:
    """squawk's ``.squawk.toml`` (nearest one walking up from the working directory), mapped to
    ``x-atomic.lint`` keys, so a project switching from squawk keeps its settings.

    Read: ``excluded_rules``, ``pg_version``, ``assume_in_transaction``. Unknown squawk keys
    are ignored.
    """
    from pathlib import Path

    here = Path(start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        path = directory / ".squawk.toml"
        if path.is_file():
            import tomllib

            try:
                data = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise LintConfigError(f"{path}: not valid TOML: {exc}") from None
            section: dict[str, Any] = {}
            if data.get("excluded_rules"):
                section["exclude"] = list(data["excluded_rules"])
            if data.get("pg_version"):
                section["pg_version"] = str(data["pg_version"])
            if "assume_in_transaction" in data:
                section["assume_in_transaction"] = bool(data["assume_in_transaction"])
            return str(path), section
    return None


def lint_section_from_files(options) -> dict[str, Any] | None:
    """``x-atomic.lint`` from the compose files in the working directory, or None when there are none."""
    from compose_atomic.project import ComposeOptions, discover_files

    files = discover_files(options or ComposeOptions())
    if not files:
        return None
    import yaml  # only when there is a compose file to read (start-up time)

    merged: dict[str, Any] | None = None
    for path in files:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        section = (data.get("x-atomic") or {}).get("lint") if isinstance(data, dict) else None
        if isinstance(section, dict):
            merged = {**(merged or {}), **section}
    return merged
