"""What ``compose-atomic lint`` does once click has parsed its options."""

from __future__ import annotations

import sys

import click

from compose_atomic import __version__
from compose_atomic.durations import parse_duration

from .engine import LintConfig, Linter, parse_pg_version
from ..errors import LintUsageError
from .formatters import format_github, format_json, format_sarif, format_text
from .model import SEVERITIES
from .registry import get_rules
from .settings import config_from_x_atomic, lint_section_from_files, resolve_rule, squawk_toml_section


def build_config(options, pg_version, excludes, severities, assume_in_transaction, rules) -> LintConfig:
    """.squawk.toml, then x-atomic.lint from the working directory's compose files, then the
    command line on top."""
    squawk = squawk_toml_section()
    compose = lint_section_from_files(options) or {}
    if squawk:
        config_from_x_atomic(squawk[1], rules, squawk[0])  # its own errors name its own file
    config_from_x_atomic(compose, rules)
    config = config_from_x_atomic({**(squawk[1] if squawk else {}), **compose}, rules)
    if pg_version is not None:
        try:
            config.pg_version = parse_pg_version(pg_version)
        except ValueError as exc:
            raise LintUsageError(f"--pg-version: {exc}") from None
    if excludes:
        config.exclude = config.exclude | {resolve_rule(r, rules, "--exclude") for r in excludes}
    for item in severities:
        name, sep, level = item.partition("=")
        if not sep or level not in SEVERITIES:
            raise LintUsageError(f"--severity {item!r}: expected RULE=LEVEL with LEVEL one of {', '.join(SEVERITIES)}")
        config.severity = {**config.severity, resolve_rule(name, rules, "--severity"): level}
    if assume_in_transaction is not None:
        config.assume_in_transaction = assume_in_transaction
    return config


def list_rules_text(rules, config: LintConfig) -> str:
    linter = Linter(rules, config)
    width = max(len(r) for r in rules)
    return "\n".join(f"{r.id.ljust(width)}  {linter.severity(r.id):7}  {r.summary}" for r in rules.values())


def run_lint(options, *, paths, fmt, pg_version, excludes, severities, assume_in_transaction, list_rules,
             plan, lock_timeout, trace, service, setups, expand, from_snapshot=None, database_url=None) -> int:
    rules = get_rules()
    config = build_config(options, pg_version, excludes, severities, assume_in_transaction, rules)
    if list_rules:
        click.echo(list_rules_text(rules, config))
        return 0
    if not paths:
        raise LintUsageError("lint: give at least one SQL file, directory or glob",
                             hint="e.g. compose-atomic lint migrations/")
    if fmt in ("alembic", "django") and not plan:
        raise LintUsageError(f"--format {fmt} writes a migration: use it with --plan")
    use_env = trace and not service and database_url is None and _pg_environment()
    if database_url is not None and not trace:
        raise LintUsageError("--database-url goes with --trace")
    if trace and service and database_url is not None:
        raise LintUsageError("--trace: give --service NAME (a throwaway container of its image) or --database-url "
                             "URL (a database you point at), not both")
    if trace and not service and database_url is None and not use_env:
        raise LintUsageError("--trace needs a database: --service NAME (a throwaway container of the service's "
                             "image), --database-url URL, or the PG* variables (PGHOST, PGDATABASE...)")
    if from_snapshot and not (trace and service):
        raise LintUsageError("--from-snapshot goes with --trace --service NAME")
    files = expand(paths)
    texts: dict[str, str] = {}
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                texts[path] = fh.read()
        except OSError as exc:
            raise LintUsageError(f"{path}: cannot read: {exc.strerror}") from None
    if plan:
        from .plan import format_plan, plan_source

        try:
            seconds = parse_duration(lock_timeout)
        except ValueError as exc:
            raise LintUsageError(f"--lock-timeout: {exc}") from None
        plans = [plan_source(path, texts[path], config, seconds) for path in files]
        click.echo(format_plan(plans, fmt))
        return 0
    import gc

    gc.disable()  # the run allocates many small acyclic objects; the process ends soon after (bench/lint)
    findings = Linter(rules, config).lint_texts(texts)
    if trace and not service:
        from .trace import trace_database

        findings = trace_database(database_url, files, texts, findings, setups, fmt, config)
    elif trace:
        from .trace import trace_files

        findings = trace_files(options, service, files, texts, findings, setups, fmt, config,
                               from_snapshot=from_snapshot)
    if fmt == "json":
        click.echo(format_json(findings))  # bytes: written as they are
    elif fmt == "sarif":
        click.echo(format_sarif(findings, rules, __version__))
    elif fmt == "github":
        if findings:
            click.echo(format_github(findings))
    else:
        color = sys.stdout.isatty() and not _no_color()
        text = format_text(findings, texts, color=color)
        if text:
            click.echo(text)
        else:
            click.echo(f"{len(files)} file(s): no findings", err=True)
    return 1 if any(f.severity == "error" for f in findings) else 0


def _pg_environment() -> bool:
    """libpq's variables name a server (PGHOST / PGHOSTADDR / PGDATABASE / PGSERVICE)."""
    import os

    return any(os.environ.get(name) for name in ("PGHOST", "PGHOSTADDR", "PGDATABASE", "PGSERVICE"))


def _no_color() -> bool:
    import os

    return bool(os.environ.get("NO_COLOR"))
