"""The rule reference of docs/lint.md, generated from the rules so the two never drift.

``python -m compose_atomic.lint.reference`` rewrites the section in place;
tests/test_lint.py checks that it is current.
"""

from __future__ import annotations

from pathlib import Path

HEADING = "## Rule reference\n"
INTRO = """
Generated from the rules (`python -m compose_atomic.lint.reference`). **PostgreSQL** is the
server behaviour the rule encodes and the test that shows it; tests/test_lint_postgres.py runs
those on a real server (relfilenode for rewrites, `pg_stat_get_xact_numscans` for scans,
`pg_locks` for lock levels, SQLSTATEs for failures).
"""


def rule_reference(rules) -> str:
    out = [HEADING, INTRO]
    for rule in rules.values():
        origin = " Same id as squawk." if rule.squawk else " compose-atomic only."
        if rule.aliases:
            origin += " Also accepted in ignores and `--exclude`: " + ", ".join(
                f"`{a}` (squawk's name)" for a in rule.aliases) + "."
        out.append(f"\n### {rule.id}\n\n**{rule.summary}.** Default level: {rule.severity}.{origin}\n\n"
                   f"- **Why:** {rule.why}\n- **PostgreSQL:** {rule.postgres or '-'}\n"
                   f"- **Lock:** {rule.lock}\n- **Safe recipe:** {rule.recipe}\n")
    return "".join(out)


def update(path: Path) -> bool:
    """Rewrite the rule reference of ``path``; True when it changed."""
    from .registry import get_rules

    text = path.read_text()
    head = text.split(HEADING, 1)[0]
    new = head + rule_reference(get_rules())
    if new != text:
        path.write_text(new)
        return True
    return False


if __name__ == "__main__":
    update(Path(__file__).resolve().parents[2] / "docs" / "lint.md")
