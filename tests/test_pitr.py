"""Point-in-time recovery end to end: real PostgreSQL 17 (and 15 for the exact restore), the
generated compose.backup.yml, the real PITR sidecar, a real rclone WebDAV remote on a test network.

One stack per module. Rows are written by a client on 127.0.0.1 with track_commit_timestamp on, so
"the rows committed before T" is known exactly from the server's own commit times.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import IMAGE_BUSYBOX, docker, run_cli
from test_backup_stack import CGI, IMAGE_RCLONE, build_rclone_image

pytestmark = pytest.mark.docker

IMAGE_PG17 = os.environ.get("IMAGE_POSTGRES17", "compose-atomic-testbed/postgres:17")
IMAGE_PG15 = os.environ.get("IMAGE_POSTGRES15", "compose-atomic-testbed/postgres:15")
SCRIPT = "/usr/local/bin/compose-atomic-pitr"
PASSWORD = "s3cret:pass\\word"

COMPOSE = """\
services:
  db:
    image: ${POSTGRES_IMAGE:-postgres:17-alpine}
    command: ["postgres", "-c", "track_commit_timestamp=on", "-c", "min_wal_size=32MB", "-c", "max_wal_size=64MB"]
    environment:
      POSTGRES_DB: app
      POSTGRES_PASSWORD_FILE: /run/secrets/db_password
    secrets: [db_password]
    ports: ["127.0.0.1::5432"]
    x-atomic:
      backup:
        schedule: "0 3 * * *"
        pitr: {keep: 7d, max_wal_keep: 96MB, max_lag: 1m, full_every: 3}
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

FILES = ("-f", "compose.yaml", "-f", "compose.backup.yml", "-f", "compose.pin.yml")
PINNED = {"db": 10, "alerts": 11, "remote": 12}
PINNED_CLIENTS = ("db-pitr", "db-pitr-offsite", "db-backup", "db-backup-offsite")


def pin_file(prefix: str) -> str:
    """Fixed addresses (Docker 20.10's DNS may drop service names while swarm mode is on)."""
    hosts = [f"{name}:{prefix}.{last}" for name, last in PINNED.items()]
    lines = ["networks:", "  default:", "    ipam:", "      config:", f"        - subnet: {prefix}.0/24", "services:"]
    for name, last in PINNED.items():
        lines += [f"  {name}:", "    networks:", "      default:", f"        ipv4_address: {prefix}.{last}"]
    for name in PINNED_CLIENTS:
        lines += [f"  {name}:", "    extra_hosts:"] + [f'      - "{h}"' for h in hosts]
    return "\n".join(lines) + "\n"


class Stack:
    def __init__(self, root: Path, name: str, image: str):
        self.root, self.name, self.image = root, name, image
        self.env = {**os.environ, "POSTGRES_IMAGE": image, "BUSYBOX_IMAGE": IMAGE_BUSYBOX,
                    "RCLONE_IMAGE": IMAGE_RCLONE, "BACKUP_ALERT_WEBHOOK": "http://alerts:8080/cgi-bin/alert",
                    "NO_COLOR": "1"}
        self.volumes: list[str] = []

    def compose(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        cmd = ["docker", "compose", "-p", self.name, *FILES, *args]
        proc = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{cmd} failed: {proc.stdout}\n{proc.stderr}")
        return proc

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return run_cli("-p", self.name, *FILES, *args, cwd=self.root, env=self.env, timeout=timeout)

    def sidecar(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.compose("exec", "-T", "db-pitr", "sh", SCRIPT, *args, check=False, timeout=timeout)

    def sh(self, service: str, script: str, check: bool = True) -> str:
        return self.compose("exec", "-T", service, "sh", "-c", script, check=check).stdout

    def psql(self, sql: str) -> str:
        return self.compose("exec", "-T", "db", "psql", "-X", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "app",
                            "-At", "-c", sql).stdout.strip()

    def port(self) -> int:
        return int(self.compose("port", "db", "5432").stdout.strip().rsplit(":", 1)[1])

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port(), user="postgres", password=PASSWORD,
                               dbname="app", autocommit=True, connect_timeout=10)

    def wait_db(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with self.connect() as conn:
                    conn.execute("select 1")
                return
            except (psycopg.OperationalError, AssertionError, ValueError, IndexError):
                time.sleep(0.5)
        raise AssertionError("database did not become ready")

    def wait(self, what, timeout: float = 90, every: float = 1.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = what()
            if value:
                return value
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {what}")

    def listing(self) -> dict:
        result = self.cli("pitr", "list", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def files(self, part: str) -> dict[str, str]:
        """sha256 of every file under /pitr/<part> (the segment being written aside)."""
        out = self.sh("db-pitr", f"cd /pitr/{part} && find . -type f ! -name '*.partial' -exec sha256sum {{}} +; true")
        return {line.split()[1]: line.split()[0] for line in out.splitlines() if line.strip()}

    def alerts(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.root / "alerts").glob("*.json"))]

    def clear_alerts(self) -> None:
        for path in (self.root / "alerts").glob("*.json"):
            path.unlink()

    def restore(self, *args: str) -> dict:
        result = self.cli("pitr", "restore", *args, "--json", timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        data = json.loads(result.stdout)
        self.volumes.append(data["volume"])
        return data

    def query_volume(self, volume: str, sql: str) -> str:
        """Start a plain server on a restored volume (as a swap would) and query it."""
        name = f"{self.name}-check-{uuid.uuid4().hex[:6]}"
        docker("run", "-d", "--name", name, "--network", "none", "-v", f"{volume}:/var/lib/postgresql/data",
               self.image)
        try:
            deadline = time.monotonic() + 60
            while True:
                got = docker("exec", "-u", "postgres", name, "psql", "-X", "-At", "-d", "app", "-c", sql, check=False)
                if got.returncode == 0:
                    return got.stdout.strip()
                if time.monotonic() > deadline:
                    logs = docker("logs", name, check=False)
                    raise AssertionError(f"restored volume did not start: {got.stderr}\n{logs.stderr[-2000:]}")
                time.sleep(0.5)
        finally:
            docker("rm", "-f", name, check=False)


class Writer(threading.Thread):
    """Inserts a row every ~interval seconds, one transaction each; remembers what was acknowledged."""

    def __init__(self, stack: Stack, table: str, interval: float = 0.02):
        super().__init__(daemon=True)
        self.stack, self.table, self.interval = stack, table, interval
        self.acked: list[tuple[int, float]] = []
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.stack.connect() as conn:
                while not self.stop_event.is_set():
                    row = conn.execute(f"INSERT INTO {self.table} DEFAULT VALUES RETURNING id").fetchone()
                    self.acked.append((row[0], time.time()))
                    time.sleep(self.interval)
        except psycopg.Error as error:  # the database was killed: expected in that test
            self.error = error

    def stop(self) -> None:
        self.stop_event.set()
        self.join(30)


def make_stack(root: Path, image: str) -> Stack:
    build_rclone_image()
    name = f"catest-pitr-{uuid.uuid4().hex[:8]}"
    (root / "compose.yaml").write_text(COMPOSE)
    (root / "db_password.txt").write_text(PASSWORD + "\n")
    os.chmod(root / "db_password.txt", 0o600)
    (root / "www" / "cgi-bin").mkdir(parents=True)
    (root / "www" / "cgi-bin" / "alert").write_text(CGI)
    os.chmod(root / "www" / "cgi-bin" / "alert", 0o755)
    (root / "alerts").mkdir()
    (root / "remote").mkdir()
    os.chmod(root / "alerts", 0o777)
    s = Stack(root, name, image)
    generated = run_cli("-p", name, "backup", "generate", cwd=root, env=s.env)
    assert generated.returncode == 0, generated.stderr
    for _ in range(8):
        (root / "compose.pin.yml").write_text(pin_file(f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"))
        if s.compose("up", "-d", "db", "alerts", "remote", check=False).returncode == 0:
            break
        s.compose("down", "-t", "0", check=False)
    else:
        raise AssertionError("no free subnet for the test stack")
    s.wait_db()
    s.psql("CREATE TABLE ticks (id bigserial PRIMARY KEY, note text DEFAULT 'x');"
           "CREATE TABLE quiet (id int PRIMARY KEY); INSERT INTO quiet SELECT generate_series(1, 2000);")
    s.compose("up", "-d", "db-pitr")
    s.wait(lambda: s.listing()["bases"], timeout=120)
    return s


def teardown(s: Stack) -> None:
    s.compose("down", "-v", "--remove-orphans", "-t", "1", check=False)
    for kind in ("container", "volume", "network"):
        ids = docker(kind, "ls", "-q", *(["-a"] if kind == "container" else []), "--filter",
                     f"label=com.docker.compose.project={s.name}", check=False).stdout.split()
        if ids:
            docker(kind, "rm", "-f" if kind == "container" else "--force", *ids, check=False)
    for volume in s.volumes:
        docker("volume", "rm", "-f", volume, check=False)


@pytest.fixture(scope="module")
def stack(docker_engine, tmp_path_factory):
    s = make_stack(tmp_path_factory.mktemp("pitr17"), IMAGE_PG17)
    try:
        yield s
    finally:
        teardown(s)


def commit_times(stack: Stack, table: str) -> list[tuple[int, dt.datetime]]:
    with stack.connect() as conn:
        return conn.execute(f"SELECT id, pg_xact_commit_timestamp(xmin) FROM {table} ORDER BY 2, 1").fetchall()


def exact_restore(stack: Stack, table: str, base_between: bool) -> None:
    stack.psql(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
    writer = Writer(stack, table)
    writer.start()
    time.sleep(3)
    if base_between:  # a base backup while rows are written: incremental on 17, full on 15
        result = stack.cli("pitr", "base")
        assert result.returncode == 0, result.stderr
    time.sleep(4)
    writer.stop()
    assert writer.error is None, writer.error
    rows = commit_times(stack, table)
    assert len(rows) > 50
    # A moment between two commits, well after the newest base backup ended.
    newest_end = max(b["end"] for b in stack.listing()["bases"])
    candidates = [i for i in range(len(rows) - 1)
                  if rows[i][1].timestamp() > newest_end + 1 and rows[i + 1][1] > rows[i][1]]
    assert candidates, "no commit after the newest base backup: the machine is too slow for this test's timing"
    i = candidates[len(candidates) // 2]
    target = rows[i][1] + (rows[i + 1][1] - rows[i][1]) / 2
    expected = sorted(r[0] for r in rows if r[1] <= target)
    data = stack.restore("--to-time", target.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%fZ"))
    counted = {t["table"]: t["rows"] for t in data["tables"]}
    assert set(data["phases"]) == {"verify_base", "copy", "replay"}
    assert sum(data["phases"].values()) <= data["seconds"] + 0.01
    assert counted[f"public.{table}"] == len(expected)
    assert counted["public.quiet"] == 2000
    got = stack.query_volume(data["volume"], f"SELECT string_agg(id::text, ',' ORDER BY id) FROM {table}")
    assert [int(x) for x in got.split(",")] == expected, (target, rows[i], rows[i + 1])
    # The restored directory is a plain data directory: no restore settings left behind.
    auto = stack.query_volume(data["volume"], "SELECT count(*) FROM pg_file_settings WHERE name LIKE 'recovery_target%'"
                                              " OR name = 'restore_command'")
    assert auto == "0"


# ---- generator ------------------------------------------------------------------------------


def test_generated_override_configures_the_database_without_editing_its_volume(stack):
    import yaml

    doc = yaml.safe_load((stack.root / "compose.backup.yml").read_text())
    db = doc["services"]["db"]
    assert db["command"][:3] == ["postgres", "-c", "track_commit_timestamp=on"]  # the user's own flags first
    assert "max_slot_wal_keep_size=96MB" in db["command"] and "summarize_wal=on" in db["command"]
    assert db["configs"][0]["target"] == "/etc/compose-atomic/pg_hba.conf"
    hba = doc["configs"]["compose_atomic_pitr_hba_db"]["content"]
    assert "host    replication  postgres   all           scram-sha-256" in hba
    assert PASSWORD not in (stack.root / "compose.backup.yml").read_text()
    sidecar = doc["services"]["db-pitr"]
    assert sidecar["image"] == "${POSTGRES_IMAGE:-postgres:17-alpine}"  # the database's own image
    assert "BACKUP_PASSWORD_FILE" in sidecar["environment"] and "PGPASSWORD" not in sidecar["environment"]
    assert doc["services"]["db-pitr-offsite"]["volumes"] == ["db-pitr:/pitr:ro"]
    assert stack.psql("SHOW summarize_wal") == "on"
    slot = stack.psql("SELECT slot_type, wal_status FROM pg_replication_slots WHERE slot_name = 'compose_atomic_pitr'")
    assert slot == "physical|reserved"


# ---- restore to a moment -------------------------------------------------------------------------


def test_restore_to_a_moment_gives_exactly_the_rows_committed_before_it(stack):
    exact_restore(stack, "orders17", base_between=True)
    kinds = [b["kind"] for b in stack.listing()["bases"]]
    assert kinds[0] == "full" and "incremental" in kinds  # the restore combined an incremental chain


def test_restore_refuses_an_existing_volume_and_a_time_before_the_window(stack):
    docker("volume", "create", f"{stack.name}-taken")
    stack.volumes.append(f"{stack.name}-taken")
    taken = stack.cli("pitr", "restore", "--latest", "--target-volume", f"{stack.name}-taken")
    assert taken.returncode == 2 and "already exists" in taken.stderr
    early = stack.cli("pitr", "restore", "--to-time", "2020-01-01 00:00:00Z")
    assert early.returncode == 1 and "earliest moment" in early.stderr, early.stderr
    naive = stack.cli("pitr", "restore", "--to-time", "2026-12-01 14:03:00")
    assert naive.returncode == 2 and "time zone" in naive.stderr


def test_kill_9_restore_to_latest_loses_at_most_a_second(stack, record_property):
    writer = Writer(stack, "ticks", interval=0.005)
    writer.start()
    time.sleep(4)
    docker("kill", "-s", "KILL", stack.compose("ps", "-q", "db").stdout.strip())
    writer.join(30)
    acked = writer.acked
    assert writer.error is not None and len(acked) > 100
    data = stack.restore("--latest")
    got = stack.query_volume(data["volume"], "SELECT coalesce(max(id), 0) FROM ticks")
    restored_max = int(got)
    lost = [(i, t) for i, t in acked if i > restored_max]
    last_ack = acked[-1][1]
    kept_ack = max((t for i, t in acked if i <= restored_max), default=acked[0][1])
    lost_seconds = last_ack - kept_ack if lost else 0.0
    record_property("pitr_kill9_lost_rows", len(lost))
    record_property("pitr_kill9_lost_seconds", round(lost_seconds, 3))
    print(f"kill -9: {len(acked)} acknowledged, {len(lost)} not in the restore ({lost_seconds:.3f}s of commits)")
    assert lost_seconds <= 1.0, (len(lost), lost_seconds)
    stack.compose("up", "-d", "db")
    stack.wait_db()


# ---- the sidecar down for a while ----------------------------------------------------------------


def segments(stack: Stack) -> list[str]:
    out = stack.sh("db-pitr", "ls -1 /pitr/wal")
    return sorted(line.replace(".partial", "") for line in out.split() if len(line.split(".")[0]) == 24)


def contiguous(names: list[str]) -> bool:
    numbers = [int(n[8:16], 16) * 256 + int(n[16:24], 16) for n in names if n.startswith("00000001")]
    return numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def test_sidecar_stopped_under_writes_loses_no_wal_and_the_disk_stays_bounded(stack):
    stack.compose("stop", "-t", "5", "db-pitr")
    with stack.connect() as conn:
        for _ in range(3):  # three segments while nobody receives
            conn.execute("INSERT INTO ticks (note) SELECT repeat('w', 100) FROM generate_series(1, 2000)")
            conn.execute("SELECT pg_switch_wal()")
        slot = conn.execute("SELECT wal_status, safe_wal_size FROM pg_replication_slots "
                            "WHERE slot_name = 'compose_atomic_pitr'").fetchone()
    assert slot[0] in ("reserved", "extended") and slot[1] > 0  # kept for us, within the bound
    stack.compose("up", "-d", "db-pitr")
    current = stack.psql("SELECT pg_current_wal_lsn()")
    stack.wait(lambda: stack.psql(f"SELECT coalesce(max(flush_lsn) >= '{current}', false) FROM pg_stat_replication "
                                  "WHERE application_name = 'compose-atomic-pitr'") == "t", timeout=60)
    assert contiguous(segments(stack)), segments(stack)
    result = stack.cli("pitr", "verify", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    verified = json.loads(result.stdout)
    assert verified["tables"] >= 3 and verified["rto_seconds"] > 0
    assert stack.sidecar("health").returncode == 0


# ---- damage -----------------------------------------------------------------------------------


def flip(stack: Stack, path: str, offset: int) -> bytes:
    """Flip one byte of a file in the PITR volume; return the original byte (hex)."""
    original = stack.sh("db-pitr", f"dd if={path} bs=1 skip={offset} count=1 2>/dev/null | od -An -tx1").strip()
    value = int(original, 16) ^ 0xFF
    stack.sh("db-pitr", f"printf '\\{value:03o}' | dd of={path} bs=1 seek={offset} conv=notrunc 2>/dev/null")
    return bytes.fromhex(original)


def unflip(stack: Stack, path: str, offset: int, original: bytes) -> None:
    stack.sh("db-pitr", f"printf '\\{original[0]:03o}' | dd of={path} bs=1 seek={offset} conv=notrunc 2>/dev/null")


def test_a_corrupted_wal_segment_fails_verification_loudly_and_touches_nothing(stack):
    assert stack.cli("pitr", "base").returncode == 0
    stack.psql("INSERT INTO ticks (note) SELECT 'after base' FROM generate_series(1, 500)")
    stack.psql("SELECT pg_switch_wal()")
    current = stack.psql("SELECT pg_current_wal_lsn()")
    stack.wait(lambda: stack.psql(f"SELECT coalesce(max(flush_lsn) >= '{current}', false) FROM pg_stat_replication "
                                  "WHERE application_name = 'compose-atomic-pitr'") == "t", timeout=60)
    newest = stack.listing()["bases"][-1]["name"]
    start_wal = stack.sh("db-pitr", f"sed -n 's/^start_wal=//p' /pitr/base/{newest}/compose-atomic.info").strip()
    after = [s for s in segments(stack) if s > start_wal]
    complete = set(stack.files("wal"))
    victim = next(s for s in after if f"./{s}" in complete)
    before_wal, before_base = stack.files("wal"), stack.files("base")
    stack.clear_alerts()
    original = flip(stack, f"/pitr/wal/{victim}", 200)
    try:
        result = stack.cli("pitr", "verify")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "recovery" in result.stderr and "failed" in result.stderr
        alerts = stack.alerts()
        assert alerts and "[failure]" in alerts[-1]["text"], alerts
        health = stack.sidecar("health")
        assert health.returncode == 1 and "verification failed" in health.stdout
        now_wal = stack.files("wal")
        assert {k: v for k, v in now_wal.items() if k in before_wal and k != f"./{victim}"} == \
               {k: v for k, v in before_wal.items() if k != f"./{victim}"}
        assert stack.files("base") == before_base
    finally:
        unflip(stack, f"/pitr/wal/{victim}", 200, original)
    assert stack.cli("pitr", "verify").returncode == 0
    assert stack.sidecar("health").returncode == 0


def test_a_corrupted_base_backup_fails_verification_loudly(stack):
    newest = stack.listing()["bases"][-1]["name"]
    victim = stack.sh("db-pitr", f"cd /pitr/base/{newest} && ls global/pg_control").strip()
    path = f"/pitr/base/{newest}/{victim}"
    before = stack.files("base")
    stack.clear_alerts()
    original = flip(stack, path, 100)
    try:
        result = stack.cli("pitr", "verify")
        assert result.returncode == 1 and "damaged" in result.stderr, result.stderr
        assert stack.alerts(), "no alert"
        damaged = stack.files("base")
        assert {k: v for k, v in damaged.items() if not k.endswith(victim)} == \
               {k: v for k, v in before.items() if not k.endswith(victim)}
    finally:
        unflip(stack, path, 100, original)
    assert stack.files("base") == before
    assert stack.cli("pitr", "verify").returncode == 0


# ---- offsite ---------------------------------------------------------------------------------


def test_offsite_copies_immutably_and_an_empty_local_directory_never_empties_the_remote(stack):
    stack.compose("up", "-d", "db-pitr-offsite")
    remote = stack.root / "remote" / "db" / "pitr"
    stack.wait(lambda: (remote / "wal").is_dir() and (remote / "base").is_dir() and any((remote / "base").iterdir()),
               timeout=180)
    before = sorted(str(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file())
    assert any(p.startswith("wal/") for p in before) and not any(p.endswith(".partial") for p in before)
    empty = f"{stack.name}-empty"
    stack.volumes.append(empty)
    docker("volume", "create", empty)
    missing = stack.compose("run", "--rm", "-T", "--no-deps", "-v", f"{empty}:/pitr", "db-pitr-offsite", "offsite-now",
                            check=False)
    assert missing.returncode != 0
    stack.compose("run", "--rm", "-T", "--no-deps", "--entrypoint", "sh", "-v", f"{empty}:/pitr", "db-pitr-offsite",
                  "-c", "mkdir -p /pitr/wal /pitr/base")
    passed = stack.compose("run", "--rm", "-T", "--no-deps", "-v", f"{empty}:/pitr", "db-pitr-offsite", "offsite-now",
                           check=False)
    assert passed.returncode == 0, passed.stderr
    after = sorted(str(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file())
    assert set(before) <= set(after), set(before) - set(after)


# ---- the bound (last: it gives the slot up) ------------------------------------------------------


def test_past_max_wal_keep_the_slot_is_given_up_the_sidecar_alerts_and_starts_a_new_chain(stack):
    before = stack.listing()["bases"][-1]["name"]
    stack.compose("stop", "-t", "5", "db-pitr")
    stack.clear_alerts()
    with stack.connect() as conn:
        for _ in range(9):  # 9 x 16 MB > max_wal_keep 96MB
            conn.execute("INSERT INTO ticks (note) VALUES ('bound')")
            conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")
        status = conn.execute("SELECT wal_status FROM pg_replication_slots "
                              "WHERE slot_name = 'compose_atomic_pitr'").fetchone()[0]
    assert status in ("lost", "unreserved")
    size_mb = int(stack.sh("db", "du -sm /var/lib/postgresql/data/pg_wal | cut -f1"))
    assert size_mb <= 96 + 64 + 32, size_mb  # max_wal_keep + max_wal_size + a segment or two
    stack.compose("up", "-d", "db-pitr")
    stack.wait(lambda: any("slot" in a["text"] for a in stack.alerts()), timeout=90)
    # A new chain: the WAL before the gap kept aside, a new slot, a new full base backup.
    stack.wait(lambda: stack.listing()["bases"][-1]["name"] != before, timeout=120)
    newest = stack.listing()["bases"][-1]
    assert newest["kind"] == "full"
    assert "wal-before-" in stack.sh("db-pitr", "ls /pitr")
    stack.wait(lambda: stack.sidecar("health").returncode == 0, timeout=90)
    data = stack.restore("--latest")
    got = stack.query_volume(data["volume"], "SELECT count(*) FROM ticks WHERE note = 'bound'")
    assert got == "9"


# ---- PostgreSQL 15: no incremental backups, the same restore ------------------------------------


@pytest.fixture(scope="module")
def stack15(docker_engine, tmp_path_factory):
    s = make_stack(tmp_path_factory.mktemp("pitr15"), IMAGE_PG15)
    try:
        yield s
    finally:
        teardown(s)


def test_postgres15_restore_to_a_moment_with_full_base_backups(stack15):
    import yaml

    doc = yaml.safe_load((stack15.root / "compose.backup.yml").read_text())
    assert "summarize_wal=on" not in doc["services"]["db"]["command"]
    exact_restore(stack15, "orders15", base_between=True)
    assert {b["kind"] for b in stack15.listing()["bases"]} == {"full"}
