"""Collect the rules from every plugin (built-ins included) through ``register_lint_rules``."""

from __future__ import annotations

from ..errors import LintUsageError
from .model import Rule

_cache: dict[str, Rule] | None = None


def get_rules(refresh: bool = False) -> dict[str, Rule]:
    """All registered rules by id (built-in ones first). A duplicate id is an error."""
    global _cache
    if _cache is not None and not refresh:
        return _cache
    from compose_atomic.plugins import call_hook, load_plugins

    load_plugins()
    rules: dict[str, Rule] = {}

    def register(rule: Rule) -> None:
        if not isinstance(rule, Rule):
            raise LintUsageError(f"register_lint_rules: expected a compose_atomic.lint.Rule, got {rule!r}")
        if rule.id in rules:
            raise LintUsageError(f"lint rule {rule.id!r} is registered twice (by two plugins?)")
        rules[rule.id] = rule

    call_hook("register_lint_rules", register=register)
    _cache = rules
    return rules
