"""Backup: the sidecar script's pure parts under dash and busybox ash, the generator,
and the offsite pass against a real rclone WebDAV remote on 127.0.0.1.

The end-to-end runs against real PostgreSQL are in test_backup_stack.py.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from compose_atomic.backup import cron
from compose_atomic.backup.generate import build, render, script_text
from compose_atomic.project import ComposeOptions, Project
from conftest import free_port


# The script as the sidecars get it (with the shared webhook functions in place).
_SCRIPT_DIR = tempfile.TemporaryDirectory(prefix="compose-atomic-sidecar-")
SCRIPT = Path(_SCRIPT_DIR.name) / "sidecar.sh"
SCRIPT.write_text(script_text())
SHELLS = [["dash"], ["busybox", "ash"]]
SHELL_IDS = ["dash", "busybox-ash"]


def sh(shell: list[str], *args: str, env: dict | None = None, input: str | None = None,
       timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*shell, str(SCRIPT), *args], capture_output=True, text=True, input=input,
                          env={"PATH": os.environ["PATH"], **(env or {})}, timeout=timeout)


# ---- cron ------------------------------------------------------------------------


def test_cron_normalizes_macros_and_names():
    assert cron.normalize("@daily") == "0 0 * * *"
    assert cron.normalize("30 2 * jan-mar mon,fri") == "30 2 * 1-3 1,5"
    with pytest.raises(cron.CronError, match="5"):
        cron.normalize("0 3 * *")
    with pytest.raises(cron.CronError, match="outside"):
        cron.normalize("61 3 * * *")


def test_cron_longest_interval_sets_the_freshness_limit():
    assert cron.max_interval("0 3 * * *") == 86400
    assert cron.max_interval("*/15 * * * *") == 900
    assert cron.max_interval("0 0 1 * *") == 31 * 86400
    assert cron.max_interval("0 4 * * 0") == 7 * 86400


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
def test_shell_cron_matcher_agrees_with_python(shell):
    expressions = ["0 3 * * *", "*/15 1-5 * * 1-5", "0 0 1 * 0", "5,35 */6 10-20/5 2,8 *", "0 0 * * 7"]
    start = dt.datetime(2026, 2, 1, 0, 0)
    moments = [start + dt.timedelta(minutes=37 * i + (i % 3) * 1440) for i in range(40)]
    moments += [dt.datetime(2026, 2, 1, 0, 0), dt.datetime(2026, 11, 26, 3, 0), dt.datetime(2026, 2, 10, 6, 35)]
    for expression in expressions:
        normal = cron.normalize(expression)
        for when in moments:
            dow = (when.weekday() + 1) % 7
            result = sh(shell, "cron-match", normal, str(when.minute), str(when.hour), str(when.day),
                        str(when.month), str(dow))
            assert result.returncode in (0, 1), result.stderr
            assert (result.returncode == 0) == cron.matches(expression, when), (expression, when)


# ---- retention ---------------------------------------------------------------------


def names(days_back: list[int], now=dt.datetime(2026, 11, 26, 3, 0)) -> list[str]:
    return [f"app-{(now - dt.timedelta(days=d)).strftime('%Y%m%dT%H%M%SZ')}.dump" for d in days_back]


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
def test_gfs_keeps_days_weeks_months(shell):
    listing = names(list(range(60)))
    kept = sh(shell, "gfs", "3", "7", "4", "6", input="\n".join(listing) + "\n").stdout.split()
    # 7 newest days; Sundays of the 3 previous ISO weeks; the last backup of Oct and Sep.
    assert kept == listing[:7] + names([11, 18]) + names([26, 57])


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
def test_gfs_never_keeps_fewer_than_three_even_after_missed_days(shell):
    # Backups stopped for months; then one run. Nothing is "recent", the floor holds.
    listing = names([0, 120, 121, 122, 300])
    kept = sh(shell, "gfs", "1", "0", "0", "0", input="\n".join(listing) + "\n").stdout.split()
    assert kept == listing[:3]
    kept = sh(shell, "gfs", "3", "1", "1", "1", input="\n".join(listing) + "\n").stdout.split()
    assert kept == listing[:3]


# ---- generator -------------------------------------------------------------------------


def project_for(tmp_path: Path, compose: dict, raw: str | None = None) -> Project:
    path = tmp_path / "compose.yaml"
    path.write_text(raw or yaml.safe_dump(compose))
    return Project(name="shop", options=ComposeOptions(), config=compose, files=[path], working_dir=tmp_path)


DB = {
    "image": "postgres:17-alpine",
    "environment": {"POSTGRES_DB": "app", "POSTGRES_PASSWORD_FILE": "/run/secrets/db_password"},
    "secrets": [{"source": "db_password"}],
    "x-atomic": {"backup": {"schedule": "@hourly", "keep": {"last": 5}, "offsite": {"rclone": "b2:bucket/db"},
                            "alert": {"webhook": "https://hooks.example/x"}}},
}


def test_generate_is_deterministic_and_holds_no_secret(tmp_path):
    project = project_for(tmp_path, {"services": {"db": DB}})
    from compose_atomic.backup.generate import rclone_builder

    first = render(project, build(project, {"rclone": rclone_builder}), "compose.backup.yml")
    second = render(project, build(project, {"rclone": rclone_builder}), "compose.backup.yml")
    assert first == second
    doc = yaml.safe_load(first)
    sidecar = doc["services"]["db-backup"]
    assert sidecar["image"] == "postgres:17-alpine"
    assert sidecar["environment"]["BACKUP_SCHEDULE"] == "0 * * * *"
    assert sidecar["environment"]["BACKUP_MAX_AGE"] == "5400"  # 1.5 x 1 h
    assert sidecar["environment"]["BACKUP_KEEP_LAST"] == "5"
    assert sidecar["secrets"] == [{"source": "db_password", "target": "db_password"}]
    offsite = doc["services"]["db-backup-offsite"]
    assert offsite["volumes"] == ["db-backups:/backups:ro"]
    assert offsite["command"] == ["offsite-serve"]
    # Compose would interpolate the script: every $ is escaped.
    assert doc["configs"]["compose_atomic_backup_script"]["content"] == script_text().replace("$", "$$")
    assert "PASSWORD:" not in first.replace("PASSWORD_FILE", "")


def test_generate_keeps_env_references_and_hands_a_literal_password_over_as_a_file(tmp_path):
    from compose_atomic.errors import ConfigError

    raw = ("services:\n  db:\n    image: ${POSTGRES_IMAGE:-postgres:17-alpine}\n    environment:\n"
           "      POSTGRES_PASSWORD: hunter2\n    x-atomic:\n      backup: {}\n")
    config = {"services": {"db": {"image": "postgres:17-alpine", "environment": {"POSTGRES_PASSWORD": "hunter2"},
                                  "x-atomic": {"backup": {}}}}}
    project = project_for(tmp_path, config, raw)
    files: dict = {}
    doc = build(project, password_files=files)
    assert doc["services"]["db-backup"]["image"] == "${POSTGRES_IMAGE:-postgres:17-alpine}"
    assert doc["secrets"] == {"db_backup_password": {"file": "./.compose-atomic/backup/db.password"}}
    assert doc["services"]["db-backup"]["environment"]["BACKUP_PASSWORD_FILE"] == "/run/secrets/db_backup_password"
    assert "hunter2" not in json.dumps(doc)
    assert files == {tmp_path / ".compose-atomic" / "backup" / "db.password": "hunter2"}
    assert build(project) == doc  # deterministic, with or without collecting the files
    unset = {"services": {"db": {**config["services"]["db"], "environment": {"POSTGRES_PASSWORD": None}}}}
    with pytest.raises(ConfigError, match="no value here"):
        build(project_for(tmp_path, unset, raw))


def test_generate_rejects_bad_schedule_and_unknown_target(tmp_path):
    from compose_atomic.errors import ConfigError

    bad = {"services": {"db": {**DB, "x-atomic": {"backup": {"schedule": "0 25 * * *"}}}}}
    with pytest.raises(ConfigError, match="hour field"):
        build(project_for(tmp_path, bad))
    with pytest.raises(ConfigError, match="no offsite target named 'rclone'"):
        build(project_for(tmp_path, {"services": {"db": DB}}), {})


# ---- offsite against a real rclone WebDAV remote on loopback --------------------------


class Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list = []

    def do_POST(self):
        self.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def alerts():
    """A local HTTP receiver standing in for a Slack/Discord webhook."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("R", (Receiver,), {"bodies": []}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", server.RequestHandlerClass.bodies
    server.shutdown()


@pytest.fixture
def webdav(tmp_path):
    """``rclone serve webdav`` on 127.0.0.1: a real remote, on loopback."""
    root = tmp_path / "remote"
    root.mkdir()
    port = free_port()
    proc = subprocess.Popen(["rclone", "serve", "webdav", str(root), "--addr", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield f":webdav,url='http://127.0.0.1:{port}':backups", root / "backups"
    proc.terminate()
    proc.wait(timeout=10)


def make_local(directory: Path, days_back: list[int]) -> list[str]:
    """A backup directory as the sidecar leaves it: files plus manifest lines."""
    directory.mkdir(exist_ok=True)
    lines = []
    listing = names(days_back)
    for i, name in enumerate(listing):
        (directory / name).write_bytes(os.urandom(2048) + name.encode())
        (directory / f"{name}.counts").write_text("public.t|1\n")
        lines.append(f"{name}\tapp\t{1795600000 - i * 86400}\t2048\tx\trestore\t1\n")
    (directory / "manifest.tsv").write_text("".join(lines))
    return listing


def offsite_env(local: Path, remote: str, tmp_path: Path, **extra) -> dict:
    return {"BACKUP_DIR": str(local), "BACKUP_OFFSITE_REMOTE": remote, "BACKUP_VERIFY_DIR": str(tmp_path),
            "BACKUP_OFFSITE_STATE": str(tmp_path / "offsite.state"), "BACKUP_KEEP_LAST": "3",
            "BACKUP_KEEP_DAILY": "0", "BACKUP_KEEP_WEEKLY": "0", "BACKUP_KEEP_MONTHLY": "0",
            "RCLONE_CONFIG": str(tmp_path / "rclone.conf"), "HOME": str(tmp_path), **extra}


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
def test_offsite_copies_checks_and_prunes_with_floor(shell, tmp_path, webdav):
    remote, remote_dir = webdav
    local = tmp_path / "local"
    listing = make_local(local, [0, 1, 2, 3, 4])
    (remote_dir).mkdir(parents=True)
    (remote_dir / "someone-elses-file.tar").write_text("not ours")
    result = sh(shell, "offsite-now", env=offsite_env(local, remote, tmp_path))
    assert result.returncode == 0, result.stderr
    # Remote GFS pass with keep last=3: the two oldest go, files it did not create stay.
    on_remote = sorted(p.name for p in remote_dir.iterdir())
    assert on_remote == sorted(listing[:3] + [f"{n}.counts" for n in listing[:3]] + ["someone-elses-file.tar"])
    for name in listing[:3]:
        assert (remote_dir / name).read_bytes() == (local / name).read_bytes()
    assert (remote_dir / "someone-elses-file.tar").exists()
    assert (tmp_path / "offsite.state").read_text().startswith("ok")


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
def test_empty_local_directory_leaves_the_remote_intact(shell, tmp_path, webdav):
    remote, remote_dir = webdav
    local = tmp_path / "local"
    listing = make_local(local, [0, 1, 2])
    env = offsite_env(local, remote, tmp_path)
    assert sh(shell, "offsite-now", env=env).returncode == 0
    before = sorted(p.name for p in remote_dir.iterdir())
    assert set(listing) <= set(before)
    # The volume got wiped (or mounted empty): the remote must survive.
    shutil.rmtree(local)
    local.mkdir()
    result = sh(shell, "offsite-now", env=env)
    assert result.returncode == 0
    assert "nothing removed" in result.stderr
    assert sorted(p.name for p in remote_dir.iterdir()) == before
    # Manifest kept but the files gone: the same.
    make_local(local, [0, 1, 2])
    for name in listing:
        (local / name).unlink()
    assert sh(shell, "offsite-now", env=env).returncode == 0
    assert sorted(p.name for p in remote_dir.iterdir()) == before


def test_offsite_refuses_to_overwrite_and_alerts(tmp_path, webdav, alerts):
    remote, remote_dir = webdav
    url, bodies = alerts
    local = tmp_path / "local"
    listing = make_local(local, [0, 1, 2])
    env = offsite_env(local, remote, tmp_path, BACKUP_ALERT_WEBHOOK=url)
    assert sh(["busybox", "ash"], "offsite-now", env=env).returncode == 0
    original = (remote_dir / listing[0]).read_bytes()
    (local / listing[0]).write_bytes(b"changed locally")  # --immutable: never replace a remote backup
    result = sh(["busybox", "ash"], "offsite-now", env=env)
    assert result.returncode != 0
    assert (remote_dir / listing[0]).read_bytes() == original
    assert bodies and "offsite" in bodies[-1]["text"] and bodies[-1]["content"] == bodies[-1]["text"]
    assert (tmp_path / "offsite.state").read_text().startswith("failed")
    health = sh(["busybox", "ash"], "offsite-health", env=env)
    assert health.returncode == 1


# ---- the command line ------------------------------------------------------------------------


def test_generate_command_is_idempotent_and_checks_targets(tmp_path):
    from conftest import run_cli

    (tmp_path / "compose.yaml").write_text(yaml.safe_dump({"services": {"db": DB}, "secrets": {
        "db_password": {"file": "./pw.txt"}}}))
    first = run_cli("backup", "generate", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    text = (tmp_path / "compose.backup.yml").read_text()
    again = run_cli("backup", "generate", cwd=tmp_path)
    assert again.returncode == 0 and "up to date" in again.stderr
    assert (tmp_path / "compose.backup.yml").read_text() == text
    printed = run_cli("backup", "generate", "-o", "-", cwd=tmp_path)
    assert printed.stdout == text
    typo = {**DB, "x-atomic": {"backup": {"offsite": {"rclon": "b2:x"}}}}
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump({"services": {"db": typo}, "secrets": {
        "db_password": {"file": "./pw.txt"}}}))
    bad = run_cli("backup", "generate", cwd=tmp_path)
    assert bad.returncode == 2 and "rclone" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "compose.backup.yml").unlink()
    none = run_cli("backup", "list", cwd=tmp_path)
    assert none.returncode == 2 and "backup generate" in none.stderr


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
def test_health_means_freshness_not_liveness(shell, tmp_path):
    now = int(time.time())
    env = {"BACKUP_DIR": str(tmp_path), "BACKUP_MAX_AGE": "5400"}
    assert sh(shell, "health", env=env).returncode == 1  # no status at all
    (tmp_path / ".started").write_text(f"{now - 60}\n")
    (tmp_path / ".status").write_text(f"{now - 60}\tok\tstarted; no run yet\n")
    assert sh(shell, "health", env=env).returncode == 0  # waiting for the first run
    (tmp_path / ".started").write_text(f"{now - 6000}\n")
    assert "no verified backup" in sh(shell, "health", env=env).stdout  # the first run never came
    (tmp_path / "manifest.tsv").write_text(f"app-x.dump\tapp\t{now - 3600}\t1\tx\trestore\t1\n")
    assert sh(shell, "health", env=env).returncode == 0
    stale = sh(shell, "health", env={**env, "BACKUP_MAX_AGE": "1800"})
    assert stale.returncode == 1 and "old" in stale.stdout
    (tmp_path / ".status").write_text(f"{now}\tfailed\tpg_dump of app exited with status 1\n")
    failed = sh(shell, "health", env=env)
    assert failed.returncode == 1 and "last run failed" in failed.stdout
