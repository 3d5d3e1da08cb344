"""docs/configuration.md is generated from the JSON Schema and must stay in step with it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from compose_atomic.config import base_schema
from conftest import ROOT

GENERATOR = ROOT / "docs" / "gen_config_reference.py"


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_up_to_date():
    expected = load_generator().render(base_schema())
    actual = (ROOT / "docs" / "configuration.md").read_text()
    assert actual == expected, "docs/configuration.md is out of date: run python docs/gen_config_reference.py"


def test_every_key_has_a_row():
    text = (ROOT / "docs" / "configuration.md").read_text()
    defs = base_schema()["$defs"]
    for scope in ("project", "service"):
        for key in defs[scope]["properties"]:
            assert f"| `{key}` |" in text, key


def test_check_mode_exit_code():
    result = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
