"""The plugin system: built-ins are plugins, hooks add commands, startup stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import click
from click.testing import CliRunner

from compose_atomic import hookimpl
from compose_atomic.plugins import DEFAULT_PLUGINS, get_plugins, pm
from conftest import run_cli


def test_builtin_features_are_registered_as_plugins():
    names = {p["name"] for p in get_plugins() if p["builtin"]}
    assert set(DEFAULT_PLUGINS) <= names


def test_plugins_command_lists_hooks_as_json():
    result = run_cli("plugins", "--all", "--json")
    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    assert "validate_config" in listed["compose_atomic.default_plugins.core"]["hooks"]


def test_a_plugin_adds_a_command():
    class Hello:
        __name__ = "hello-plugin"

        @hookimpl
        def register_commands(self, cli):
            @cli.command()
            def hello():
                """Say hello."""
                click.echo("hello from a plugin")

    group = click.Group()
    pm.register(Hello(), name="undo-hello")
    try:
        pm.hook.register_commands(cli=group)
    finally:
        pm.unregister(name="undo-hello")
    result = CliRunner().invoke(group, ["hello"])
    assert result.output == "hello from a plugin\n"


def test_help_does_not_import_heavy_clients():
    """`compose-atomic --help` and pass-through commands must start fast."""
    code = ("import sys; from compose_atomic.cli import cli\n"
            "try:\n    cli(['--help'], prog_name='compose-atomic')\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('python_on_whales', 'httpx', 'psycopg', 'pydantic', 'jsonschema', 'pglast')"
            " if m in sys.modules]\nprint('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY []"


def test_version_and_help_exit_zero():
    assert run_cli("--version").stdout.startswith("compose-atomic, version ")
    help_text = run_cli("--help")
    assert help_text.returncode == 0 and "passed to" in help_text.stdout
