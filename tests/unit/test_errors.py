"""Errors live in one module, each with its exit code, and docs/exit-codes.md says the same."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from compose_atomic import errors

ROOT = Path(__file__).resolve().parents[2]


def error_classes() -> dict[str, type]:
    return {n: c for n, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.ComposeAtomicError)}


def test_the_docs_table_matches_every_error_class_and_its_code():
    text = (ROOT / "docs" / "exit-codes.md").read_text()
    documented = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\| `(\w+)` \| (\d+) \|", text, re.M)}
    assert documented == {n: c.exit_code for n, c in error_classes().items()}


def test_every_exit_code_is_in_the_codes_table():
    text = (ROOT / "docs" / "exit-codes.md").read_text()
    codes = {int(m.group(1)) for m in re.finditer(r"^\| (\d+) \| ", text, re.M)}
    assert {c.exit_code for c in error_classes().values()} <= codes


def test_the_docstring_tree_names_every_class():
    assert set(error_classes()) <= set(re.findall(r"\b([A-Z]\w+)\b", errors.__doc__))


def test_no_error_class_is_defined_outside_errors_py():
    outside = []
    for path in (ROOT / "compose_atomic").rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(base, "id", getattr(base, "attr", "")) in error_classes() for base in node.bases):
                outside.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not outside, "define errors in compose_atomic/errors.py:\n" + "\n".join(outside)
