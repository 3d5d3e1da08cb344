"""Every server encoding, on a real PostgreSQL 17: SQL_ASCII, LATIN1 and UTF8 databases with
non-ASCII table and column names through snapshot, restore, a guarded migration that fails
halfway (restore and verification), the lint trace from a snapshot, and the backup sidecar.

On SQL_ASCII (what initdb gives without a UTF-8 locale) psycopg returns text as bytes: the
snapshot once sent ``SET TRANSACTION SNAPSHOT 'b''...'''`` and every guarded migration failed.
The checksums here come from psql inside the container, as bytes, independent of our code.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from compose_atomic.errors import EXIT_ROLLED_BACK
from conftest import IMAGE_BUSYBOX, IMAGE_POSTGRES, docker, run_cli

pytestmark = pytest.mark.docker

COMPOSE = """\
x-atomic:
  state_dir: ./state
services:
  db:
    image: {pg}
    environment:
      POSTGRES_DB: app
      POSTGRES_PASSWORD_FILE: /run/secrets/db_password
      POSTGRES_INITDB_ARGS: "{initdb}"
    secrets: [db_password]
    # TCP: the entrypoint's temporary init server listens on the socket only
    healthcheck: {{test: [CMD, pg_isready, -h, 127.0.0.1, -U, postgres, -d, app], interval: 1s, retries: 60}}
    x-atomic:
      backup:
        schedule: "0 3 * * *"
        verify: restore
  api:
    image: {busybox}
    x-atomic:
      migrate:
        database: db
        sql: sql/*.sql
        timeout: 30s
secrets:
  db_password:
    file: ./db_password.txt
"""

# Written in UTF-8 by a UTF-8 client: LATIN1 stores them converted, SQL_ASCII as these bytes.
SEED = """
CREATE TABLE "Bücher" (id serial PRIMARY KEY, "Größe" int NOT NULL, "titel_é" text);
INSERT INTO "Bücher" ("Größe", "titel_é") SELECT g, 'Straße ' || g || ' café' FROM generate_series(1, 300) g;
CREATE SCHEMA "spät";
CREATE TABLE "spät"."Ñandú" ("año" int, "niño" text);
INSERT INTO "spät"."Ñandú" SELECT g, 'ñ' || g FROM generate_series(1, 50) g;
"""

CHECKSUMS = """SELECT 'b', count(*), md5(string_agg(b::text, ',' ORDER BY id)) FROM "Bücher" b
UNION ALL SELECT 'n', count(*), md5(string_agg(n::text, ',' ORDER BY "año")) FROM "spät"."Ñandú" n
UNION ALL SELECT 'c', count(*), string_agg(attname, ',' ORDER BY attrelid, attnum)::text
  FROM pg_attribute WHERE attnum > 0 AND NOT attisdropped
  AND attrelid IN ('"Bücher"'::regclass, '"spät"."Ñandú"'::regclass)"""

ENCODINGS = {
    "SQL_ASCII": "--encoding=SQL_ASCII --locale=C",
    "LATIN1": "--encoding=LATIN1 --locale=C",
    "UTF8": "",
}


class Stack:
    def __init__(self, root: Path, name: str):
        self.root, self.name = root, name

    def cli(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return run_cli("-p", self.name, *args, cwd=self.root, timeout=timeout)

    def psql(self, sql: str, db: str = "app") -> bytes:
        """psql in the db container with a UTF-8 client, output as bytes."""
        proc = subprocess.run(
            ["docker", "compose", "-p", self.name, "exec", "-T", "-e", "PGCLIENTENCODING=UTF8", "db",
             "psql", "-X", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", db, "-At", "-c", sql],
            cwd=self.root, capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return proc.stdout


@pytest.fixture(params=list(ENCODINGS), ids=list(ENCODINGS))
def stack(request, docker_engine, tmp_path):
    encoding = request.param
    name = f"catest-enc-{uuid.uuid4().hex[:8]}"
    (tmp_path / "compose.yaml").write_text(COMPOSE.format(pg=IMAGE_POSTGRES, busybox=IMAGE_BUSYBOX,
                                                          initdb=ENCODINGS[encoding]))
    (tmp_path / "db_password.txt").write_text("pw-énc-1\n")
    (tmp_path / "sql").mkdir()
    s = Stack(tmp_path, name)
    try:
        up = subprocess.run(["docker", "compose", "-p", name, "up", "-d", "--wait", "db"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, up.stderr
        assert s.psql("SHOW server_encoding").decode().strip() == encoding
        s.psql(SEED)
        yield s
    finally:
        subprocess.run(["docker", "compose", "-p", name, "-f", "compose.yaml",
                        *(["-f", "compose.backup.yml"] if (tmp_path / "compose.backup.yml").exists() else []),
                        "down", "-v", "--remove-orphans", "-t", "1"], cwd=tmp_path, capture_output=True, timeout=120)
        for kind in ("container", "volume", "network"):
            ids = docker(kind, "ls", "-q", *(["-a"] if kind == "container" else []), "--filter",
                         f"label=com.docker.compose.project={name}", check=False).stdout.split()
            if ids:
                docker(kind, "rm", *(["-f"] if kind == "container" else []), *ids, check=False)


def test_snapshot_restore_migration_trace_and_backup_in_every_encoding(stack):
    before = stack.psql(CHECKSUMS)
    assert "Größe".encode() in before and "año".encode() in before

    # Snapshot, then a restore into a new database: the same bytes.
    snap = stack.cli("db", "snapshot", "--service", "db", "--json")
    assert snap.returncode == 0, snap.stderr
    restored = stack.cli("db", "restore", "--service", "db", "--latest", "--target-db", "copy1")
    assert restored.returncode == 0, restored.stderr
    assert stack.psql(CHECKSUMS, "copy1") == before

    # A guarded migration that fails halfway through a non-transactional file: restored.
    (stack.root / "sql" / "001_change.sql").write_text(
        'ALTER TABLE "Bücher" ADD COLUMN "preis_£" numeric;\n'
        'CREATE INDEX CONCURRENTLY "bücher_größe" ON "Bücher" ("Größe");\n'
        'DELETE FROM "spät"."Ñandú" WHERE "año" % 2 = 0;\n'
        "SELEC oops;\n", encoding="utf-8")
    migrated = stack.cli("db", "migrate", "api")
    assert migrated.returncode == EXIT_ROLLED_BACK, migrated.stderr
    assert "restored from snapshot" in migrated.stderr and "Traceback" not in migrated.stderr
    assert stack.psql(CHECKSUMS) == before

    # The lint trace on a copy of the latest snapshot sees the non-ASCII schema.
    (stack.root / "m.sql").write_text('ALTER TABLE "Bücher" ALTER COLUMN "Größe" TYPE bigint;\n', encoding="utf-8")
    traced = stack.cli("lint", "--trace", "--service", "db", "--from-snapshot", "latest", "--format", "json",
                       "m.sql")
    assert "Traceback" not in traced.stderr, traced.stderr
    findings = json.loads(traced.stdout)
    assert [f for f in findings if f.get("trace")], findings

    # The backup sidecar: a verified dump, then a restore into a new database with equal bytes.
    generated = stack.cli("backup", "generate")
    assert generated.returncode == 0, generated.stderr
    files = ["-f", "compose.yaml", "-f", "compose.backup.yml"]
    up = subprocess.run(["docker", "compose", "-p", stack.name, *files, "up", "-d", "db-backup"],
                        cwd=stack.root, capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stderr
    now = stack.cli("backup", "now", "--json")
    assert now.returncode == 0, now.stderr
    assert json.loads(now.stdout)["backups"][-1]["verified"] == "restore"
    verified = stack.cli("backup", "verify", "--latest")
    assert verified.returncode == 0, verified.stderr
    back = stack.cli("backup", "restore", "--latest", "--target-db", "copy2")
    assert back.returncode == 0, back.stderr
    assert stack.psql(CHECKSUMS, "copy2") == before
