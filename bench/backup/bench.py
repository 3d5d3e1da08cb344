"""Backup benchmark: compose-atomic's sidecar run vs raw pg_dump / pg_restore, in one run.

    .venv/bin/python bench/backup/bench.py [--scale 70] [--repeat 1] [--json out.json]

Builds the example stack (PostgreSQL + the generated backup sidecar) under a unique
project name, fills it with ``pgbench -i -s SCALE`` (70 is about 1 GB), then times,
inside the sidecar container (same image, same volume, same client, no docker-exec
overhead in the figures):

1. raw ``pg_dump -Fc``                        vs  ``sidecar now`` with verify: list
2. raw ``pg_dump -Fc`` + raw ``pg_restore``   vs  ``sidecar now`` with verify: restore
   (raw restore into a new database on the production server, 1 job and -j 2)
3. RTO: ``compose-atomic backup restore --latest`` into a new database, wall time from the host.

Needs scripts/testbed.sh images (IMAGE_POSTGRES) and removes everything it created.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGE_POSTGRES = os.environ.get("IMAGE_POSTGRES", "compose-atomic-testbed/postgres:17")
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
secrets:
  db_password:
    file: ./db_password.txt
"""
# Pinned addresses in /etc/hosts: Docker 20.10's embedded DNS drops compose names while
# swarm mode is active on the engine (see tests/test_backup_stack.py).
PIN = """\
networks:
  default:
    ipam:
      config:
        - subnet: {prefix}.0/24
services:
  db:
    networks:
      default:
        ipv4_address: {prefix}.10
  db-backup:
    extra_hosts: ["db:{prefix}.10"]
"""
FILES = ("-f", "compose.yaml", "-f", "compose.backup.yml", "-f", "compose.pin.yml")
NS = "s=$(date +%s%N); {cmd}; rc=$?; e=$(date +%s%N); echo \"$rc $(( (e - s) / 1000000 ))\""


class Bench:
    def __init__(self, root: Path, name: str):
        self.root, self.name = root, name
        self.env = {**os.environ, "POSTGRES_IMAGE": IMAGE_POSTGRES, "NO_COLOR": "1"}

    def compose(self, *args: str, check: bool = True, timeout: float = 3600) -> subprocess.CompletedProcess:
        proc = subprocess.run(["docker", "compose", "-p", self.name, *FILES, *args], cwd=self.root,
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise SystemExit(f"{args} failed: {proc.stderr}")
        return proc

    def timed(self, service: str, cmd: str) -> float:
        """Seconds for ``cmd`` inside the running ``service`` container (as postgres)."""
        proc = self.compose("exec", "-T", "-u", "postgres", service, "sh", "-c", NS.format(cmd=cmd))
        rc, ms = proc.stdout.strip().splitlines()[-1].split()
        if rc != "0":
            raise SystemExit(f"{cmd!r} exited {rc}: {proc.stdout} {proc.stderr}")
        self.phases = re.findall(r"(pg_dump|restore-verification) of \S+ took ([0-9.]+)s", proc.stderr)
        return int(ms) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=70)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    name = f"bench-bk-{uuid.uuid4().hex[:8]}"
    (root / "compose.yaml").write_text(COMPOSE)
    (root / "db_password.txt").write_text("bench-password\n")
    b = Bench(root, name)
    subprocess.run([sys.executable, "-m", "compose_atomic", "-p", name, "backup", "generate"], cwd=root,
                   env=b.env, check=True, capture_output=True)
    results: dict = {"scale": args.scale, "runs": []}
    try:
        import random

        for _ in range(8):
            (root / "compose.pin.yml").write_text(PIN.format(prefix=f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"))
            if b.compose("up", "-d", "db", check=False).returncode == 0:
                break
        for _ in range(180):
            if b.compose("exec", "-T", "db", "psql", "-U", "postgres", "-d", "app", "-c", "select 1",
                         check=False).returncode == 0:
                break
            time.sleep(1)
        b.compose("up", "-d", "db-backup")
        t = time.monotonic()
        b.compose("exec", "-T", "-u", "postgres", "db", "pgbench", "-i", "-q", "-s", str(args.scale), "app")
        results["pgbench_init_s"] = round(time.monotonic() - t, 1)
        results["db_size"] = b.compose("exec", "-T", "db", "psql", "-U", "postgres", "-d", "app", "-Atc",
                                       "select pg_size_pretty(pg_database_size('app'))").stdout.strip()
        # A PGPASSFILE for the raw commands, like the sidecar builds its own.
        b.compose("exec", "-T", "-u", "postgres", "db-backup", "sh", "-c",
                  "umask 077; printf '*:*:*:*:%s\\n' \"$(cat /run/secrets/db_password)\" > /tmp/pgpass")
        raw_env = "export PGPASSFILE=/tmp/pgpass; "
        script = "sh /usr/local/bin/compose-atomic-backup now >/dev/null"
        b.phases = []
        for _ in range(args.repeat):
            run: dict = {}
            run["raw_pg_dump_s"] = b.timed("db-backup", raw_env + "pg_dump -Fc -d app -f /backups/.raw.dump")
            run["dump_bytes"] = int(b.compose("exec", "-T", "db-backup", "stat", "-c", "%s", "/backups/.raw.dump").stdout)
            run["raw_pg_restore_s"] = b.timed(
                "db-backup", raw_env + "createdb raw1 && pg_restore -d raw1 --exit-on-error /backups/.raw.dump")
            run["raw_pg_restore_j2_s"] = b.timed(
                "db-backup", raw_env + "createdb raw2 && pg_restore -d raw2 -j 2 --exit-on-error /backups/.raw.dump")
            b.timed("db-backup", raw_env + "dropdb raw1 && dropdb raw2 && rm -f /backups/.raw.dump")
            run["sidecar_verify_list_s"] = b.timed("db-backup", "BACKUP_VERIFY=list " + script)
            run["sidecar_verify_restore_s"] = b.timed("db-backup", "BACKUP_VERIFY=restore " + script)
            for phase, seconds in b.phases:
                run[f"sidecar_phase_{phase.replace('-', '_')}_s"] = float(seconds)
            t = time.monotonic()
            restored = subprocess.run([sys.executable, "-m", "compose_atomic", "-p", name, *FILES, "backup", "restore", "--latest",
                            "--target-db", "rto"], cwd=root, env=b.env, check=False, capture_output=True, text=True)
            run["rto_restore_latest_s"] = round(time.monotonic() - t, 2)
            if restored.returncode != 0:
                raise SystemExit(f"backup restore failed: {restored.stderr}")
            b.timed("db-backup", raw_env + "dropdb rto")
            run["ratio_list_vs_dump"] = round(run["sidecar_verify_list_s"] / run["raw_pg_dump_s"], 3)
            run["ratio_restore_vs_dump_plus_restore"] = round(
                run["sidecar_verify_restore_s"] / (run["raw_pg_dump_s"] + run["raw_pg_restore_s"]), 3)
            run["ratio_restore_vs_dump_plus_restore_j2"] = round(
                run["sidecar_verify_restore_s"] / (run["raw_pg_dump_s"] + run["raw_pg_restore_j2_s"]), 3)
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
        import statistics

        median = {key: round(statistics.median(r[key] for r in results["runs"]), 3)
                  for key in results["runs"][0]}
        results["median"] = median
        interval = 86400
        results["rpo_worst_s"] = round(interval + median["sidecar_verify_restore_s"], 1)
        results["detect_worst_s"] = int(interval * 1.5) + 60
        results["rto_s"] = median["rto_restore_latest_s"]
    finally:
        if not os.environ.get("BENCH_KEEP"):
            b.compose("down", "-v", "-t", "1", check=False)
        print(f"stack: {root} {name}", file=sys.stderr)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
