"""The docs keep up with the code: every hook is documented with its exact signature."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from compose_atomic import hookspecs
from compose_atomic.config import base_schema

DOCS = Path(__file__).resolve().parents[2] / "docs"


def hook_signatures() -> dict[str, str]:
    found = {}
    for name, func in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(func, "compose_atomic_spec"):
            args = ", ".join(inspect.signature(func).parameters)
            found[name] = f"{name}({args})"
    return found


def test_every_hook_is_documented_with_its_signature():
    text = (DOCS / "plugin_hooks.md").read_text()
    headings = {line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")}
    missing = [sig for sig in hook_signatures().values() if sig not in headings]
    assert not missing, f"hooks missing from docs/plugin_hooks.md: {missing}"


def test_every_hook_states_its_kind_as_the_code_does():
    text = (DOCS / "plugin_hooks.md").read_text()
    for name, func in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(func, "compose_atomic_spec"):
            heading = f"### {hook_signatures()[name]}"
            section = text.split(heading, 1)[1].split("\n### ", 1)[0]
            assert f"Kind: **{func.kind}**" in section, f"{name}: docs/plugin_hooks.md must say Kind: **{func.kind}**"


def test_every_hook_has_a_one_line_docstring():
    for name, func in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(func, "compose_atomic_spec"):
            assert func.__doc__ and "\n" not in func.__doc__.strip(), name


def test_published_schema_matches_the_package():
    published = json.loads((DOCS / "x-atomic.schema.json").read_text())
    assert published == base_schema(), "run: compose-atomic schema > docs/x-atomic.schema.json"
