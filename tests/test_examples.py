"""The examples that users copy are valid, as compose files and as x-atomic annotations."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import ROOT, run_cli


def test_solo_saas_example_is_valid(tmp_path: Path, docker_engine):
    shutil.copytree(ROOT / "examples" / "solo-saas", tmp_path, dirs_exist_ok=True)
    for name in ("db_password", "pgpass"):
        (tmp_path / "secrets" / name).write_text("x\n")
    result = run_cli("check", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"app"' in result.stdout and '"db"' in result.stdout


def test_django_example_is_valid(tmp_path: Path, docker_engine):
    shutil.copytree(ROOT / "examples" / "django-notes", tmp_path, dirs_exist_ok=True)
    (tmp_path / "secrets" / "db_password").write_text("x\n")
    result = run_cli("check", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"web"' in result.stdout and '"db"' in result.stdout
