"""`backup generate` with POSTGRES_PASSWORD however users write it, on the real engine.

A literal value (the most common spelling), a pass-through `- POSTGRES_PASSWORD` from the
shell, `${VAR}` from `.env`, and an `env_file`: the sidecar is generated, takes a verified
backup, and the password is in neither the generated file, nor the sidecar container's
argv or environment (`docker inspect`): it reaches the sidecar as a 0600 file secret.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time

import pytest

from conftest import IMAGE_POSTGRES, docker, run_cli

pytestmark = pytest.mark.docker
PASSWORD = "Lit3ral-pw-7c1e"

BASE = """\
services:
  db:
    image: {image}
{spelling}
    x-atomic:
      backup: {{schedule: "0 3 * * *", verify: restore}}
"""

SPELLINGS = {
    "literal": ("    environment:\n      POSTGRES_DB: app\n      POSTGRES_PASSWORD: " + PASSWORD + "\n", {}, {}),
    "pass-through": ("    environment:\n      - POSTGRES_DB=app\n      - POSTGRES_PASSWORD\n", {},
                     {"POSTGRES_PASSWORD": PASSWORD}),
    "dotenv-var": ("    environment:\n      POSTGRES_DB: app\n      POSTGRES_PASSWORD: ${DB_PASSWORD}\n",
                   {".env": f"DB_PASSWORD={PASSWORD}\n"}, {}),
    "env_file": ("    env_file: [db.env]\n", {"db.env": f"POSTGRES_DB=app\nPOSTGRES_PASSWORD={PASSWORD}\n"}, {}),
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_generate_accepts_the_password_as_written_and_never_exposes_it(spelling, tmp_path, project_name):
    block, files, shell_env = SPELLINGS[spelling]
    (tmp_path / "compose.yaml").write_text(BASE.format(image=IMAGE_POSTGRES, spelling=block.rstrip("\n")))
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {**os.environ, **shell_env, "NO_COLOR": "1"}
    env.pop("DB_PASSWORD", None)

    generated = run_cli("-p", project_name, "backup", "generate", cwd=tmp_path, env=env)
    assert generated.returncode == 0, generated.stderr
    assert len([line for line in generated.stderr.splitlines() if "Docker secret" in line]) == 1
    override = (tmp_path / "compose.backup.yml").read_text()
    assert PASSWORD not in override
    secret_file = tmp_path / ".compose-atomic" / "backup" / "db.password"
    assert secret_file.read_text() == PASSWORD
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_file.parent.stat().st_mode) == 0o700

    files_args = ("-f", "compose.yaml", "-f", "compose.backup.yml")
    up = subprocess.run(["docker", "compose", "-p", project_name, *files_args, "up", "-d", "db", "db-backup"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stderr
    for _ in range(120):
        ready = subprocess.run(["docker", "compose", "-p", project_name, *files_args, "exec", "-T", "db", "psql",
                                "-U", "postgres", "-d", "app", "-c", "select 1"],
                               cwd=tmp_path, env=env, capture_output=True, timeout=60)
        if ready.returncode == 0:
            break
        time.sleep(0.5)
    now = run_cli("-p", project_name, *files_args, "backup", "now", "--json", cwd=tmp_path, env=env, timeout=240)
    assert now.returncode == 0, now.stderr
    assert json.loads(now.stdout)["backups"][-1]["verified"] == "restore"
    assert PASSWORD not in now.stdout + now.stderr

    sidecar = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project_name}",
                     "--filter", "label=com.docker.compose.service=db-backup").stdout.split()
    assert sidecar
    info = json.loads(docker("inspect", sidecar[0]).stdout)[0]
    exposed = json.dumps({"Args": info.get("Args"), "Path": info.get("Path"), "Cmd": info["Config"].get("Cmd"),
                          "Entrypoint": info["Config"].get("Entrypoint"), "Env": info["Config"].get("Env")})
    assert PASSWORD not in exposed
    assert "BACKUP_PASSWORD_FILE=/run/secrets/db_backup_password" in info["Config"]["Env"]
