"""Shell completion through click 8, with service names from `docker compose config --services`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import run_cli

CASES = Path(__file__).resolve().parent / "init_cases"


def complete(words: str, cwd: Path, shell: str = "bash") -> list[str]:
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    result = run_cli(cwd=cwd, env={"_COMPOSE_ATOMIC_COMPLETE": f"{shell}_complete",
                                   "COMP_WORDS": words, "COMP_CWORD": str(cword)}, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout.split()


def test_up_completes_service_names(tmp_path):
    folder = tmp_path / "app"
    shutil.copytree(CASES / "django-postgres", folder)
    assert complete("compose-atomic up w", folder) == ["plain,web", "plain,worker"]
    # services already on the line are not offered again
    assert "plain,web" not in complete("compose-atomic up web ", folder)
    # -f given before the command is honoured
    other = CASES / "node-caddy" / "docker-compose.yml"
    assert sorted(complete(f"compose-atomic -f {other} up ", folder)) == \
        ["plain,app", "plain,caddy", "plain,postgres"]


def test_completion_fails_silently_without_a_project(tmp_path):
    assert complete("compose-atomic up ", tmp_path) == []


def test_commands_complete(tmp_path):
    assert "plain,init" in complete("compose-atomic i", tmp_path)


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o nosort -F"),
                                          ("zsh", "#compdef compose-atomic"),
                                          ("fish", "complete --no-files --command compose-atomic")])
def test_completion_command_prints_the_script(shell, marker, tmp_path):
    printed = run_cli("completion", shell, cwd=tmp_path, timeout=60)
    assert printed.returncode == 0 and marker in printed.stdout
    sourced = run_cli(cwd=tmp_path, env={"_COMPOSE_ATOMIC_COMPLETE": f"{shell}_source"}, timeout=60)
    assert sourced.stdout.strip() == printed.stdout.strip()


def test_completion_without_a_known_shell_says_what_to_do(tmp_path):
    result = run_cli("completion", cwd=tmp_path, env={"SHELL": "/bin/tcsh"}, timeout=60)
    assert result.returncode == 2 and "compose-atomic completion bash|zsh|fish" in result.stderr
