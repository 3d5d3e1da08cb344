"""Backups end to end: a real PostgreSQL, the generated compose.backup.yml, the real sidecar.

One stack per module (db, the backup sidecar, an alert receiver) keeps this under a
minute or two. Each fault must exit non-zero, send the alert and leave every existing
backup byte for byte as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import IMAGE_BUSYBOX, IMAGE_POSTGRES, IMAGE_POSTGRES_15, docker, run_cli

IMAGE_RCLONE = os.environ.get("IMAGE_RCLONE", "compose-atomic-testbed/rclone:1")
RCLONE_DOCKERFILE = """\
# Debian's rclone, the libraries it links and busybox for sh: a stand-in for rclone/rclone
# (Alpine: rclone + busybox) on a machine without a registry.
FROM scratch
COPY rootfs/ /
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin:/usr/bin HOME=/tmp
ENTRYPOINT ["/usr/bin/rclone"]
"""


def build_rclone_image() -> None:
    """Build IMAGE_RCLONE once (idempotent: an existing image is kept)."""
    if docker("image", "inspect", IMAGE_RCLONE, check=False).returncode == 0:
        return
    import tempfile

    with tempfile.TemporaryDirectory() as ctx:
        rootfs = Path(ctx) / "rootfs"
        for d in ("usr/bin", "bin", "tmp", "etc"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        os.chmod(rootfs / "tmp", 0o1777)
        shutil.copy2("/usr/bin/rclone", rootfs / "usr/bin/rclone")
        shutil.copy2(shutil.which("busybox"), rootfs / "bin/busybox")
        (rootfs / "etc/passwd").write_text("root:x:0:0:root:/tmp:/bin/sh\n")
        (rootfs / "etc/group").write_text("root:x:0:\n")
        ldd = subprocess.run(["ldd", "/usr/bin/rclone"], capture_output=True, text=True).stdout
        for lib in [w for w in ldd.split() if w.startswith("/")]:
            target = rootfs / lib.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(lib), target)
        (Path(ctx) / "Dockerfile").write_text(RCLONE_DOCKERFILE)
        docker("build", "-q", "-t", IMAGE_RCLONE, ctx, timeout=300)

pytestmark = pytest.mark.docker
SCRIPT = "/usr/local/bin/compose-atomic-backup"

COMPOSE = """\
services:
  db:
    image: ${POSTGRES_IMAGE:-postgres:17-alpine}
    environment:
      POSTGRES_DB: app
      POSTGRES_PASSWORD_FILE: /run/secrets/db_password
    secrets: [db_password]
    x-atomic:
      backup:
        schedule: "0 3 * * *"
        keep: {last: 3, daily: 7, weekly: 4, monthly: 6}
        verify: restore
        offsite:
          rclone: ":webdav,url='http://remote:8080':db"
        alert:
          webhook: ${BACKUP_ALERT_WEBHOOK:-}
  remote:
    image: ${RCLONE_IMAGE}
    command: ["serve", "webdav", "/data", "--addr", ":8080"]
    volumes: ["./remote:/data"]
  alerts:
    image: ${BUSYBOX_IMAGE}
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    volumes: ["./www:/www:ro", "./alerts:/alerts"]
secrets:
  db_password:
    file: ./db_password.txt
"""

CGI = """#!/bin/sh
head -c "$CONTENT_LENGTH" > "/alerts/$(date +%s)-$$.json"
printf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'
"""

SEED = """
CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL);
INSERT INTO customers SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 5000) g;
CREATE TABLE orders (id bigserial PRIMARY KEY, customer int REFERENCES customers, total numeric(10,2));
INSERT INTO orders (customer, total) SELECT 1 + g % 5000, (g % 997) / 7.0 FROM generate_series(1, 20000) g;
CREATE SCHEMA billing;
CREATE TABLE billing."Invoice Lines" (id int, note text);
INSERT INTO billing."Invoice Lines" VALUES (1, 'tab	and ''quote'''), (2, NULL);
"""

CHECKSUMS = """
SELECT 'customers', count(*), md5(string_agg(c::text, ',' ORDER BY id)) FROM customers c
UNION ALL SELECT 'orders', count(*), md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o
UNION ALL SELECT 'invoice', count(*), md5(string_agg(i::text, ',' ORDER BY id)) FROM billing."Invoice Lines" i
"""


# compose.pin.yml pins names to addresses in /etc/hosts. Docker 20.10's embedded DNS drops
# compose service names after a minute or so while swarm mode is active on the engine
# (another user of the shared engine turns it on); the generated file stays as it is.
FILES = ("-f", "compose.yaml", "-f", "compose.backup.yml", "-f", "compose.pin.yml")
PINNED = {"db": 10, "alerts": 11, "remote": 12}


def pin_file(prefix: str) -> str:
    hosts = [f"{name}:{prefix}.{last}" for name, last in PINNED.items()]
    lines = ["networks:", "  default:", "    ipam:", "      config:", f"        - subnet: {prefix}.0/24", "services:"]
    for name, last in PINNED.items():
        lines += [f"  {name}:", "    networks:", "      default:", f"        ipv4_address: {prefix}.{last}"]
    for name in ("db-backup", "db-backup-offsite"):
        lines += [f"  {name}:", "    extra_hosts:"] + [f'      - "{h}"' for h in hosts]
    return "\n".join(lines) + "\n"


class Stack:
    def __init__(self, root: Path, name: str):
        self.root, self.name = root, name
        self.env = {**os.environ, "POSTGRES_IMAGE": IMAGE_POSTGRES, "BUSYBOX_IMAGE": IMAGE_BUSYBOX,
                    "RCLONE_IMAGE": IMAGE_RCLONE,
                    "BACKUP_ALERT_WEBHOOK": "http://alerts:8080/cgi-bin/alert", "NO_COLOR": "1"}

    def compose(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        cmd = ["docker", "compose", "-p", self.name, *FILES, *args]
        proc = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{cmd} failed: {proc.stderr}")
        return proc

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        files = FILES if (self.root / "compose.backup.yml").exists() else ()
        return run_cli("-p", self.name, *files, *args, cwd=self.root, env=self.env, timeout=timeout)

    def sidecar(self, *args: str, entry: str | None = None, extra: tuple[str, ...] = (),
                timeout: float = 180) -> subprocess.CompletedProcess:
        """`docker compose run` of the sidecar; `entry` is a sh -c prelude (umask, fakes)."""
        if entry is None:
            return self.compose("run", "--rm", "-T", *extra, "db-backup", *args, check=False, timeout=timeout)
        return self.compose("run", "--rm", "-T", *extra, "--entrypoint", "sh", "db-backup", "-c",
                            f"{entry}; exec sh {SCRIPT} {' '.join(args)}", check=False, timeout=timeout)

    def psql(self, sql: str, db: str = "app") -> str:
        return self.compose("exec", "-T", "db", "psql", "-X", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", db,
                            "-At", "-c", sql).stdout

    def files(self) -> dict[str, str]:
        """Every file in the backup volume with its sha256 (dotfiles aside)."""
        out = self.compose("exec", "-T", "db-backup", "sh", "-c",
                           "cd /backups && for f in *; do [ -f \"$f\" ] && sha256sum \"$f\"; done; true").stdout
        return {line.split()[1]: line.split()[0] for line in out.splitlines() if line.strip()}

    def alerts(self) -> list[dict]:
        found = []
        for path in sorted((self.root / "alerts").glob("*.json")):
            found.append(json.loads(path.read_text()))
        return found

    def clear_alerts(self) -> None:
        for path in (self.root / "alerts").glob("*.json"):
            path.unlink()

    def wait_db(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.compose("exec", "-T", "db", "pg_isready", "-U", "postgres", "-d", "app", check=False).returncode == 0:
                if self.compose("exec", "-T", "db", "psql", "-U", "postgres", "-d", "app", "-c", "select 1",
                                check=False).returncode == 0:
                    return
            time.sleep(0.5)
        raise AssertionError("database did not become ready")


@pytest.fixture(scope="module")
def stack(docker_engine, tmp_path_factory):
    build_rclone_image()
    root = tmp_path_factory.mktemp("backup-stack")
    name = f"catest-bk-{uuid.uuid4().hex[:8]}"
    (root / "compose.yaml").write_text(COMPOSE)
    (root / "db_password.txt").write_text("s3cret:pass\\word\n")
    os.chmod(root / "db_password.txt", 0o600)
    (root / "www" / "cgi-bin").mkdir(parents=True)
    (root / "www" / "cgi-bin" / "alert").write_text(CGI)
    os.chmod(root / "www" / "cgi-bin" / "alert", 0o755)
    (root / "alerts").mkdir()
    (root / "remote").mkdir()
    os.chmod(root / "alerts", 0o777)
    s = Stack(root, name)
    generated = s.cli("backup", "generate")
    assert generated.returncode == 0, generated.stderr
    try:
        import random

        for _ in range(8):  # a free /24 for the pinned addresses
            (root / "compose.pin.yml").write_text(pin_file(f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"))
            if s.compose("up", "-d", "db", "alerts", "remote", check=False).returncode == 0:
                break
            s.compose("down", "-t", "0", check=False)
        else:
            raise AssertionError("no free subnet for the test stack")
        s.wait_db()
        s.psql(SEED)
        s.compose("up", "-d", "db-backup", "db-backup-offsite")
        yield s
    finally:
        s.compose("down", "-v", "--remove-orphans", "-t", "1", check=False)
        for kind in ("container", "volume", "network"):
            ids = docker(kind, "ls", "-q", *(["-a"] if kind == "container" else []), "--filter",
                         f"label=com.docker.compose.project={name}", check=False).stdout.split()
            if ids:
                docker(kind, "rm", "-f", *ids, check=False) if kind == "container" else docker(kind, "rm", *ids, check=False)


def backup_now(stack: Stack) -> subprocess.CompletedProcess:
    result = stack.cli("backup", "now")
    assert result.returncode == 0, result.stderr
    return result


def assert_failed_safely(stack: Stack, result: subprocess.CompletedProcess, before: dict, words: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    assert words in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
    assert stack.files() == before, "a failed run changed existing backups"
    alerts = stack.alerts()
    assert alerts and "[failure]" in alerts[-1]["text"], alerts
    health = stack.sidecar("health")
    assert health.returncode == 1 and "failed" in health.stdout


def test_backup_now_is_verified_private_and_restores_equal(stack):
    started = stack.sidecar("now", entry="umask 000")  # a permissive umask must not leak
    assert started.returncode == 0, started.stdout + started.stderr
    mode = stack.compose("exec", "-T", "db-backup", "sh", "-c",
                         "stat -c '%a %n' /backups /backups/* /backups/.status").stdout
    modes = dict(reversed(line.split(" ", 1)) for line in mode.splitlines())
    assert modes.pop("/backups") == "700"
    assert set(modes.values()) == {"600"}, modes
    result = stack.cli("backup", "now", "--json")
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)["backups"][-1]
    path, size, checksum, verified = written["path"], written["size"], written["sha256"], written["verified"]
    assert verified == "restore" and int(size) > 10000 and len(checksum) == 64
    listing = json.loads(stack.cli("backup", "list", "--json").stdout)
    assert [b["name"] for b in listing["backups"]][-1] == path.rsplit("/", 1)[-1]
    assert listing["status"]["result"] == "ok"
    assert stack.sidecar("health").returncode == 0
    restored = stack.cli("backup", "restore", "--latest", "--target-db", "app_copy")
    assert restored.returncode == 0, restored.stderr
    assert stack.psql(CHECKSUMS, "app_copy") == stack.psql(CHECKSUMS)
    # Never over an existing database (production included).
    again = stack.cli("backup", "restore", "--latest", "--target-db", "app")
    assert again.returncode == 1 and "already exists" in again.stderr
    verify = stack.cli("backup", "verify", "--latest")
    assert verify.returncode == 0, verify.stderr


def test_wrong_password_fails_loudly(stack):
    before = stack.files()
    stack.clear_alerts()
    result = stack.sidecar("now", entry="echo wrong > /tmp/wrongpw; export BACKUP_PASSWORD_FILE=/tmp/wrongpw")
    assert_failed_safely(stack, result, before, "password authentication failed")
    assert "wrong" not in json.dumps(stack.alerts())


def test_server_newer_than_client_fails_at_start(stack, tmp_path):
    # A real PostgreSQL 17 server read by a real PostgreSQL 15 sidecar (its pg_dump 15): the
    # sidecar image was left behind when the database was upgraded.
    before = stack.files()
    stack.clear_alerts()
    (stack.root / "compose.old-client.yml").write_text(f"services:\n  db-backup:\n    image: {IMAGE_POSTGRES_15}\n")
    assert "17." in stack.psql("SHOW server_version")
    cmd = ["docker", "compose", "-p", stack.name, *FILES, "-f", "compose.old-client.yml",
           "run", "--rm", "-T", "db-backup", "serve"]
    result = subprocess.run(cmd, cwd=stack.root, env=stack.env, capture_output=True, text=True, timeout=120)
    assert_failed_safely(stack, result, before, "pg_dump cannot back up a newer server")
    assert "PostgreSQL 17 but this sidecar's pg_dump is 15" in result.stderr, result.stderr


def test_corrupted_byte_is_caught(stack):
    backup_now(stack)
    before = stack.files()
    stack.clear_alerts()
    name = json.loads(stack.cli("backup", "list", "--json").stdout)["backups"][-1]["name"]
    flip = (f"f=/backups/{name}; cp $f /tmp/orig; "
            "printf 'X' | dd of=$f bs=1 seek=5000 conv=notrunc 2>/dev/null")
    stack.compose("exec", "-T", "db-backup", "sh", "-c", flip)
    result = stack.cli("backup", "verify", name)
    assert result.returncode == 1 and "checksum mismatch" in result.stderr
    assert stack.alerts() and "checksum mismatch" in stack.alerts()[-1]["text"]
    # Corruption before the checksum was taken (bad RAM, a buggy disk): the restore catches it.
    stack.compose("exec", "-T", "db-backup", "sh", "-c",
                  f"s=$(sha256sum /backups/{name} | cut -d' ' -f1); cp /backups/manifest.tsv /tmp/m; "
                  f"awk -F '\\t' -v OFS='\\t' -v s=$s '$1 == \"{name}\" {{ $5 = s }} 1' /tmp/m > /backups/manifest.tsv")
    result = stack.cli("backup", "verify", name)
    assert result.returncode == 1 and "failed" in result.stderr
    stack.compose("exec", "-T", "db-backup", "sh", "-c",
                  f"cp /tmp/orig /backups/{name}; cp /tmp/m /backups/manifest.tsv")
    assert stack.files() == before
    assert stack.cli("backup", "verify", name).returncode == 0


def test_a_byte_corrupted_during_the_run_never_becomes_a_backup(stack):
    """A pg_dump whose output gets one byte flipped before verification (disk, RAM, bug)."""
    backup_now(stack)
    before = stack.files()
    stack.clear_alerts()
    flipper = ("mkdir -p /tmp/shim; printf '%s\\n' '#!/bin/sh' "
               "'PATH=${PATH#/tmp/shim:} pg_dump \"$@\" || exit $?' "
               "'for a in \"$@\"; do [ \"$prev\" = -f ] && f=$a; prev=$a; done' "
               "'[ -n \"$f\" ] || exit 0' "
               "'size=$(wc -c < \"$f\"); printf Z | dd of=\"$f\" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null' "
               "> /tmp/shim/pg_dump; chmod 755 /tmp/shim/pg_dump; export PATH=/tmp/shim:$PATH")
    result = stack.sidecar("now", entry=flipper)
    assert_failed_safely(stack, result, before, "failed")
    assert "restore-verification of" in result.stderr or "pg_restore --list rejects" in result.stderr, result.stderr


def test_full_disk_and_shrink_alert(stack):
    volume = f"{stack.name}_tiny"
    docker("volume", "create", "--driver", "local", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
           "--opt", "o=size=1600k", "--label", f"com.docker.compose.project={stack.name}", volume)
    tiny = ("-v", f"{volume}:/backups")
    first = stack.sidecar("now", extra=tiny)
    assert first.returncode == 0, first.stderr
    before = stack.compose("run", "--rm", "-T", *tiny, "--entrypoint", "sh", "db-backup", "-c",
                           "cd /backups && sha256sum * | sort").stdout
    stack.clear_alerts()
    # 2 MB of incompressible data: the free-space check passes, then pg_dump hits ENOSPC.
    stack.psql("CREATE TABLE blob AS SELECT g AS id, decode(string_agg(md5(random()::text || g || h), ''), 'hex') AS b "
               "FROM generate_series(1, 128) g, generate_series(1, 1024) h GROUP BY g")
    try:
        result = stack.sidecar("now", extra=tiny)
        assert result.returncode != 0
        assert "no space left" in result.stderr.lower() or "not enough free space" in result.stderr.lower()
        after = stack.compose("run", "--rm", "-T", *tiny, "--entrypoint", "sh", "db-backup", "-c",
                              "cd /backups && sha256sum * | sort; ls -a").stdout
        assert after.startswith(before) and ".partial" not in after
        assert stack.alerts() and "[failure]" in stack.alerts()[-1]["text"]
        # In the real volume the big dump fits; then the table goes and the next dump shrinks.
        backup_now(stack)
    finally:
        stack.psql("DROP TABLE IF EXISTS blob")
    stack.clear_alerts()
    backup_now(stack)
    assert any("shrank by more than half" in a["text"] for a in stack.alerts())
    docker("volume", "rm", "-f", volume, check=False)


def test_missed_days_keep_the_floor_and_foreign_files(stack):
    """Backups stopped for weeks, then one run with keep last=1 (below the floor)."""
    backup_now(stack)
    name = json.loads(stack.cli("backup", "list", "--json").stdout)["backups"][-1]["name"]
    seed = (f"cd /backups && : > /tmp/extra && for d in 10 11 12 13 14; do "
            f"n=app-202601${{d}}T030000Z.dump; cp {name} $n; "
            f"printf '%s\\tapp\\t%s\\t1\\t%s\\trestore\\t1\\n' $n $((1700000000 + d)) $(sha256sum $n | cut -d' ' -f1) >> /tmp/extra; done; "
            "cat manifest.tsv >> /tmp/extra; mv /tmp/extra manifest.tsv; "
            "echo mine > notes.txt; echo mine > app-handmade.dump")
    stack.compose("exec", "-T", "db-backup", "sh", "-c", seed)
    listed = stack.cli("backup", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    count_before = len(json.loads(listed.stdout)["backups"])
    assert count_before >= 6
    stack.clear_alerts()
    keep1 = ("export BACKUP_KEEP_LAST=1 BACKUP_KEEP_DAILY=0 BACKUP_KEEP_WEEKLY=0 BACKUP_KEEP_MONTHLY=0")
    result = stack.sidecar("now", entry=keep1)
    assert result.returncode == 0, result.stderr
    left = json.loads(stack.cli("backup", "list", "--json").stdout)["backups"]
    assert len(left) == 3
    files = stack.files()
    assert "notes.txt" in files and "app-handmade.dump" in files
    assert sorted(f for f in files if f.endswith(".dump") and f != "app-handmade.dump") == sorted(b["name"] for b in left)


def test_database_stopped_mid_dump(stack):
    before = stack.files()
    stack.clear_alerts()
    # Hold a lock so pg_dump is connected and mid-dump, waiting, when the server goes away.
    holder = subprocess.Popen(
        ["docker", "compose", "-p", stack.name, *FILES, "exec", "-T",
         "db", "psql", "-U", "postgres", "-d", "app", "-c",
         "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);"],
        cwd=stack.root, env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        run = subprocess.Popen(
            ["docker", "compose", "-p", stack.name, *FILES,
             "run", "--rm", "-T", "db-backup", "now"],
            cwd=stack.root, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = stack.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' "
                                 "AND wait_event_type = 'Lock'")
            if waiting.strip() not in ("", "0"):
                break
            time.sleep(0.3)
        else:
            raise AssertionError("pg_dump never started")
        stack.compose("kill", "db")
        out, err = run.communicate(timeout=120)
        result = subprocess.CompletedProcess(run.args, run.returncode, out, err)
    finally:
        holder.kill()
        holder.wait()
        stack.compose("start", "db")
        stack.wait_db()
    assert_failed_safely(stack, result, before, "pg_dump of app exited with status")
    backup_now(stack)
    assert stack.sidecar("health").returncode == 0


def test_offsite_sidecar_copies_and_the_copy_restores(stack):
    """The rclone sidecar (busybox sh + rclone, volume read-only) against a WebDAV remote."""
    backup_now(stack)
    result = stack.compose("exec", "-T", "db-backup-offsite", "sh", SCRIPT, "offsite-now", check=False)
    assert result.returncode == 0, result.stderr
    local = {n for n in stack.files() if n.startswith("app-2") and n.endswith(".dump")}
    remote_dir = stack.root / "remote" / "db"
    assert local <= {p.name for p in remote_dir.iterdir()}
    health = stack.compose("exec", "-T", "db-backup-offsite", "sh", SCRIPT, "offsite-health", check=False)
    assert health.returncode == 0, health.stdout
    # The runbook for a lost volume: restore the offsite copy from a directory on the host.
    newest = max(local)
    restored = stack.compose("run", "--rm", "-T", "-v", f"{remote_dir}:/restore:ro", "db-backup", "restore",
                             f"/restore/{newest}", "app_offsite", check=False)
    assert restored.returncode == 0, restored.stderr
    assert stack.psql(CHECKSUMS, "app_offsite") == stack.psql(CHECKSUMS)


def test_a_held_lock_skips_the_run_and_a_stale_one_is_taken(stack):
    before = stack.files()
    stack.compose("exec", "-T", "-u", "postgres", "db-backup", "sh", "-c",
                  "mkdir /backups/.lock && echo other 1 > /backups/.lock/owner")
    try:
        held = stack.sidecar("now")
        assert held.returncode == 1 and "another backup run holds" in held.stderr
        assert stack.files() == before
        stack.compose("exec", "-T", "-u", "postgres", "db-backup", "touch", "-d", "@1", "/backups/.lock/owner")
        stale = stack.sidecar("now")
        assert stale.returncode == 0, stale.stderr
        assert "stale lock" in stale.stderr
    finally:
        stack.compose("exec", "-T", "db-backup", "rm", "-rf", "/backups/.lock")


def test_a_run_under_busybox_ash(stack):
    """The dump path (fifo, snapshot session, restore-verify) under busybox ash, the shell of alpine."""
    # busybox's applets first on PATH (awk, sed, sort, find, df, sha256sum, date...), as on
    # alpine; pg_* and setpriv (not in busybox) stay the image's.
    applets = ("mkdir -p /tmp/bb && /opt/busybox --install -s /tmp/bb && rm -f /tmp/bb/setpriv && "
               "export PATH=/tmp/bb:$PATH BACKUP_SHELL='/opt/busybox ash'")
    result = stack.sidecar("now", entry=applets,
                           extra=("-v", f"{shutil.which('busybox')}:/opt/busybox:ro"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK\t") or "\nOK\t" in result.stdout


def test_hooks_see_each_backup_and_can_stop_one(stack, monkeypatch):
    from click.testing import CliRunner

    from compose_atomic import hookimpl
    from compose_atomic.cli import cli
    from compose_atomic.plugins import pm

    seen: dict = {}

    class Recorder:
        @hookimpl
        def before_backup(self, service):
            seen["before"] = service

        @hookimpl
        def after_backup(self, service, path, size, checksum, verified):
            seen["after"] = (service, path, size, checksum, verified)

    class Veto:
        @hookimpl
        def before_backup(self, service):
            raise RuntimeError("maintenance window")

    monkeypatch.chdir(stack.root)
    for key in ("POSTGRES_IMAGE", "BUSYBOX_IMAGE", "RCLONE_IMAGE", "BACKUP_ALERT_WEBHOOK"):
        monkeypatch.setenv(key, stack.env[key])
    pm.register(Recorder(), name="test-backup-recorder")
    try:
        result = CliRunner().invoke(cli, ["-p", stack.name, *FILES, "backup", "now"])
        assert result.exit_code == 0, result.output
        service, path, size, checksum, verified = seen["after"]
        assert seen["before"] == service == "db" and verified == "restore"
        assert stack.files()[path.rsplit("/", 1)[-1]] == checksum and size > 0
        before = stack.files()
        veto = Veto()
        pm.register(veto, name="test-backup-veto")
        try:
            stopped = CliRunner().invoke(cli, ["-p", stack.name, *FILES, "backup", "now"])
        finally:
            pm.unregister(veto)
        assert stopped.exit_code == 1 and "maintenance window" in stopped.output
        assert stack.files() == before
    finally:
        pm.unregister(name="test-backup-recorder")


def test_the_schedule_loop_runs_at_the_cron_time_and_stops_promptly(stack):
    """`serve` with a clock that says 03:00 (the configured "0 3 * * *"): one run, then SIGTERM."""
    def names() -> set:
        return {b["name"] for b in json.loads(stack.cli("backup", "list", "--json").stdout)["backups"]}

    before = names()
    clock = ("mkdir -p /tmp/clock; printf '%s\\n' '#!/bin/sh' "
             "'case \"$*\" in *\"%M %H\"*) echo \"00 03 26 11 4 58\"; exit 0 ;; esac' "
             "'exec /usr/bin/date \"$@\"' > /tmp/clock/date; chmod 755 /tmp/clock/date; "
             "export PATH=/tmp/clock:$PATH")
    name = f"{stack.name}-serve"
    stack.compose("run", "-d", "--name", name, "--entrypoint", "sh", "db-backup", "-c",
                  f"{clock}; exec sh {SCRIPT} serve")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if names() - before:
                break
            time.sleep(1)
        else:
            raise AssertionError("the schedule loop did not run at 03:00: " + docker("logs", name, check=False).stderr)
        time.sleep(3)  # the same minute again: no second run
        assert len(names() - before) == 1
        started = time.monotonic()
        docker("stop", "-t", "20", name)
        assert time.monotonic() - started < 10, "serve ignored SIGTERM"
    finally:
        docker("rm", "-f", name, check=False)


def test_a_table_lock_held_too_long_fails_the_run_instead_of_hanging(stack):
    before = stack.files()
    stack.clear_alerts()
    holder = subprocess.Popen(
        ["docker", "compose", "-p", stack.name, *FILES, "exec", "-T", "db", "psql", "-U", "postgres", "-d", "app",
         "-c", "BEGIN; LOCK TABLE customers IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(30);"],
        cwd=stack.root, env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        result = stack.sidecar("now", entry="export BACKUP_LOCK_TIMEOUT=2s", timeout=60)
    finally:
        holder.kill()
        holder.wait()
        stack.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE query LIKE '%LOCK TABLE customers%' AND pid <> pg_backend_pid()")
    assert_failed_safely(stack, result, before, "lock")
    backup_now(stack)


def test_backup_now_never_starts_a_stopped_database(stack):
    """Compose's depends_on would start the database for `run`: a backup must not."""
    stack.compose("stop", "db")
    try:
        before = stack.files()
        for command in (("backup", "now"), ("backup", "restore", "--latest", "--target-db", "never")):
            result = stack.cli(*command)
            assert result.returncode == 1, result.stdout + result.stderr
            assert 'the database service "db" is not running' in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
            state = stack.compose("ps", "-a", "--format", "{{.State}}", "db").stdout.strip()
            assert state == "exited", state
        listed = stack.cli("backup", "list", "--json")  # reads the volume only: works, starts nothing
        assert listed.returncode == 0, listed.stderr
        assert stack.compose("ps", "-a", "--format", "{{.State}}", "db").stdout.strip() == "exited"
        assert stack.files() == before
    finally:
        stack.compose("start", "db")
        stack.wait_db()
    backup_now(stack)


UPGRADE = """\
services:
  db:
    image: ${POSTGRES_IMAGE}
    environment:
      POSTGRES_DB: app
      POSTGRES_PASSWORD_FILE: /run/secrets/db_password
    secrets: [db_password]
    volumes: ["${DATA_VOLUME}:/var/lib/postgresql/data"]
    x-atomic:
      backup: {schedule: "0 3 * * *", verify: restore}
secrets:
  db_password:
    file: ./db_password.txt
volumes:
  data15: {}
  data17: {}
"""


def test_a_postgresql_15_backup_restores_into_postgresql_17(docker_engine, tmp_path, project_name):
    """The upgrade path: a verified backup of a PostgreSQL 15 database, then the service moved to
    PostgreSQL 17 on a new volume; PostgreSQL 17's sidecar restores the 15 dump and checks its counts."""
    (tmp_path / "compose.yaml").write_text(UPGRADE)
    (tmp_path / "db_password.txt").write_text("upgrade-pw\n")
    files = ("-f", "compose.yaml", "-f", "compose.backup.yml")

    def step(image: str, volume: str):
        env = {**os.environ, "POSTGRES_IMAGE": image, "DATA_VOLUME": volume, "NO_COLOR": "1"}

        def compose(*args: str) -> subprocess.CompletedProcess:
            proc = subprocess.run(["docker", "compose", "-p", project_name, *files, *args], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=180)
            assert proc.returncode == 0, proc.stderr
            return proc

        def cli(*args: str) -> subprocess.CompletedProcess:
            return run_cli("-p", project_name, *files, *args, cwd=tmp_path, env=env, timeout=240)

        return compose, cli, env

    compose, cli, env = step(IMAGE_POSTGRES_15, "data15")
    assert run_cli("-p", project_name, "backup", "generate", cwd=tmp_path, env=env).returncode == 0
    compose("up", "-d", "db", "db-backup")
    psql = ("exec", "-T", "db", "psql", "-X", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d")

    def wait_for_server(env: dict) -> None:
        # On TCP: a new volume's first start runs initdb and the init scripts on a temporary server
        # that listens on the socket only and stops before the real one starts (ci-25 met that gap).
        ready = ("exec", "-T", "db", "pg_isready", "-h", "127.0.0.1", "-U", "postgres", "-d", "app")
        for _ in range(120):
            if subprocess.run(["docker", "compose", "-p", project_name, *files, *ready],
                              cwd=tmp_path, env=env, capture_output=True, timeout=60).returncode == 0:
                return
            time.sleep(0.5)
    wait_for_server(env)
    compose(*psql, "app", "-c", SEED)
    before = compose(*psql, "app", "-At", "-c", CHECKSUMS).stdout
    assert "15." in compose(*psql, "app", "-At", "-c", "SHOW server_version").stdout
    taken = cli("backup", "now", "--json")
    assert taken.returncode == 0, taken.stderr
    name = json.loads(taken.stdout)["backups"][-1]["path"].rsplit("/", 1)[-1]
    compose("stop", "db", "db-backup")

    compose, cli, env = step(IMAGE_POSTGRES, "data17")  # the same backup volume
    compose("up", "-d", "--force-recreate", "db", "db-backup")
    wait_for_server(env)
    assert "17." in compose(*psql, "app", "-At", "-c", "SHOW server_version").stdout
    restored = cli("backup", "restore", name, "--target-db", "from15")
    assert restored.returncode == 0, restored.stderr
    assert compose(*psql, "from15", "-At", "-c", CHECKSUMS).stdout == before
    verified = cli("backup", "verify", name)  # PostgreSQL 17's tools verify the 15 dump too
    assert verified.returncode == 0, verified.stderr
