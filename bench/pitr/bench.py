"""PITR benchmark, one run: pgbench write load on PostgreSQL 17 with the generated PITR sidecar.

Measures, in one run on the same stack (see README.md for the results and the machine):
- the WAL receiver's lag under load (pg_stat_replication.flush_lag, bytes behind);
- the recovery point at a crash: `kill -9` of the database mid-load, then `pitr restore --latest`:
  seconds of committed pgbench transactions missing from the restore;
- restore-to-time duration: `compose-atomic pitr restore --to-time T` against raw
  pg_basebackup output + replay of the same WAL (cp restore_command, recovery_target_time, promote)
  in the same image, on the same volume, to the same moment;
- base backup: `pitr base` (full) against raw `pg_basebackup -X stream -c fast` from the same container.

    .venv/bin/python bench/pitr/bench.py --scale 16 --seconds 60 --json bench/pitr/results.json

With ``--pgbackrest`` (PostgreSQL 15: Debian's pgBackRest 2.45 predates 16 and 17) the same
database also archives WAL with ``archive_command = pgbackrest archive-push``; the run then
times a pgBackRest full backup against ``pitr base`` and ``pgbackrest restore --type=time`` (to
the same moment, to the promotion) against ``pitr restore --to-time``:

    .venv/bin/python bench/pitr/bench.py --pgbackrest --image compose-atomic-bench/postgres-pgbackrest:15
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))
sys._called_from_test = True  # only the built-in plugins, as in the tests

import test_pitr  # noqa: E402

RAW_RESTORE = r"""
set -e
B=/pitr/base/$1
T="$2"
W=$(mktemp -d /tmp/raw.XXXXXX); chown postgres "$W"
t0=$(date +%s%N)
setpriv --reuid=postgres --regid=postgres --init-groups sh -c '
  set -e
  cp -R -p "$0/." "$1/d/" 2>/dev/null || { mkdir -p "$1/d" && chmod 700 "$1/d" && cp -R -p "$0/." "$1/d/"; }
  rm -f "$1/d/compose-atomic.info"
  printf "%s\n" "restore_command = '"'"'cp /pitr/wal/%f %p || cp /pitr/wal/%f.partial %p'"'"'" \
    "recovery_target_time = '"'"'$2'"'"'" "recovery_target_action = '"'"'promote'"'"'" >> "$1/d/postgresql.auto.conf"
  : > "$1/d/recovery.signal"
  printf "local all all trust\n" > "$1/hba"
  postgres -D "$1/d" -k "$1" -c listen_addresses= -c hba_file="$1/hba" -c hot_standby=off > "$1/log" 2>&1 &
  until [ "$(psql -X -At -h "$1" -U postgres -d postgres -c "select pg_is_in_recovery()" 2>/dev/null)" = f ]; do
    kill -0 $! 2>/dev/null || { tail -n 5 "$1/log" >&2; exit 1; }
    sleep 0.2
  done
  pg_ctl -D "$1/d" -m fast -w stop > /dev/null
' "$B" "$W" "$T"
t1=$(date +%s%N)
echo "RAW $(( (t1 - t0) / 1000000 ))"
rm -rf "$W"
"""

PGBR_CONF = """\
[global]
repo1-path=/repo
repo1-retention-full=2
start-fast=y
log-level-console=warn
log-level-file=off
[db]
pg1-path=/var/lib/postgresql/data
pg1-socket-path=/var/run/postgresql
"""

PGBR_RESTORE = r"""
set -e
T="$1"
mkdir -p /tmp/r && chown postgres /tmp/r && chmod 700 /tmp/r
t0=$(date +%s%N)
setpriv --reuid=postgres --regid=postgres --init-groups sh -c '
  set -e
  pgbackrest --stanza=db --pg1-path=/tmp/r --type=time "--target=$0" --target-action=promote restore
  printf "local all all trust\n" > /tmp/hba
  postgres -D /tmp/r -k /tmp -c listen_addresses= -c hba_file=/tmp/hba -c hot_standby=off -c archive_mode=off \
    > /tmp/log 2>&1 &
  until [ "$(psql -X -At -h /tmp -U postgres -d postgres -c "select pg_is_in_recovery()" 2>/dev/null)" = f ]; do
    kill -0 $! 2>/dev/null || { tail -n 5 /tmp/log >&2; exit 1; }
    sleep 0.2
  done
' "$T"
t1=$(date +%s%N)
n=$(setpriv --reuid=postgres --regid=postgres --init-groups psql -X -At -h /tmp -U postgres -d app -c "select count(*) from pgbench_history")
echo "PGBR $(( (t1 - t0) / 1000000 )) $n"
"""

RAW_BASE = r"""
set -e
t0=$(date +%s%N)
pg_basebackup -D /tmp/rawbase -X stream -c fast
t1=$(date +%s%N)
echo "RAWBASE $(( (t1 - t0) / 1000000 )) $(du -sk /tmp/rawbase | cut -f1)"
rm -rf /tmp/rawbase
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--image", default=None, help="the database image (default: the PostgreSQL 17 test bed)")
    parser.add_argument("--pgbackrest", action="store_true", help="also archive with pgBackRest and compare")
    args = parser.parse_args()
    import tempfile

    test_pitr.COMPOSE = test_pitr.COMPOSE.replace("full_every: 3", "full_every: 1").replace(
        "max_wal_keep: 96MB", "max_wal_keep: 4GB").replace('"max_wal_size=64MB"', '"max_wal_size=1GB"')
    image = args.image or test_pitr.IMAGE_PG17
    if args.pgbackrest:
        test_pitr.COMPOSE = test_pitr.COMPOSE.replace(
            '"-c", "max_wal_size=1GB"]',
            '"-c", "max_wal_size=1GB", "-c", "archive_mode=on", "-c", "archive_command=pgbackrest --stanza=db archive-push %p"]'
        ).replace('    ports: ["127.0.0.1::5432"]\n',
                  '    ports: ["127.0.0.1::5432"]\n'
                  '    volumes: ["./pgbackrest.conf:/etc/pgbackrest/pgbackrest.conf:ro", "pgbr-repo:/repo"]\n'
        ) + "volumes:\n  pgbr-repo: {}\n"
    results: dict = {"image": image, "scale": args.scale, "seconds": args.seconds, "clients": args.clients,
                     "started": dt.datetime.now(dt.timezone.utc).isoformat()}
    root = Path(tempfile.mkdtemp(prefix="bench-pitr-"))
    (root / "pgbackrest.conf").write_text(PGBR_CONF)
    (root / "pgbr_restore.sh").write_text(PGBR_RESTORE)
    s = test_pitr.make_stack(root, image)
    try:
        if args.pgbackrest:
            s.compose("exec", "-T", "-u", "root", "db", "chown", "postgres", "/repo")
            s.compose("exec", "-T", "-u", "postgres", "db", "pgbackrest", "--stanza=db", "stanza-create", timeout=300)
        t = time.monotonic()
        s.compose("exec", "-T", "db", "pgbench", "-i", "-q", "-s", str(args.scale), "-U", "postgres", "app", timeout=1800)
        results["init_seconds"] = round(time.monotonic() - t, 2)
        results["db_bytes"] = int(s.psql("SELECT pg_database_size('app')"))
        print(f"pgbench -i -s {args.scale}: {results['db_bytes'] / 1e6:.0f} MB", file=sys.stderr)

        t = time.monotonic()
        base = s.cli("pitr", "base", timeout=1800)
        assert base.returncode == 0, base.stderr
        results["pitr_base_wall_seconds"] = round(time.monotonic() - t, 2)
        results["pitr_base_line"] = base.stderr.strip().splitlines()[-1]
        raw = s.compose("exec", "-T", "-u", "postgres", "db-pitr", "sh", "-c",
                        "PGPASSFILE=/tmp/.compose-atomic-pitr.pgpass; export PGPASSFILE;" + RAW_BASE, timeout=1800)
        ms, kb = raw.stdout.split("RAWBASE ")[1].split()
        results["raw_basebackup_seconds"] = int(ms) / 1000
        print(f"base: {results['pitr_base_line']}; raw pg_basebackup {int(ms) / 1000:.1f}s", file=sys.stderr)
        if args.pgbackrest:
            t = time.monotonic()
            s.compose("exec", "-T", "-u", "postgres", "db", "pgbackrest", "--stanza=db", "--type=full", "backup",
                      timeout=1800)
            results["pgbackrest_backup_seconds"] = round(time.monotonic() - t, 2)
            print(f"pgbackrest full backup {results['pgbackrest_backup_seconds']}s (wall, docker exec)", file=sys.stderr)

        lsn0 = s.psql("SELECT pg_current_wal_lsn()")
        load = subprocess.Popen(["docker", "compose", "-p", s.name, *test_pitr.FILES, "exec", "-T", "db", "pgbench", "-n",
                                 "-c", str(args.clients), "-j", "2", "-T", str(args.seconds + 30), "-U", "postgres", "app"],
                                cwd=root, env=s.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lags: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample() -> None:
            import psycopg

            with s.connect() as conn:
                while not stop.is_set():
                    try:
                        row = conn.execute(
                            "SELECT coalesce(extract(epoch FROM flush_lag), 0), "
                            "pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn) FROM pg_stat_replication "
                            "WHERE application_name = 'compose-atomic-pitr'").fetchone()
                    except psycopg.Error:
                        return
                    if row:
                        lags.append((float(row[0]), float(row[1])))
                    time.sleep(1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        time.sleep(args.seconds * 2 / 3)
        target = dt.datetime.now(dt.timezone.utc)
        time.sleep(args.seconds / 3)
        lsn1 = s.psql("SELECT pg_current_wal_lsn()")
        wal_bytes = int(s.psql(f"SELECT pg_wal_lsn_diff('{lsn1}', '{lsn0}')"))
        stop.set()
        sampler.join(5)
        test_pitr.docker("kill", "-s", "KILL", s.compose("ps", "-q", "db").stdout.strip())
        killed_at = time.time()
        load.wait(60)
        results["wal_bytes_per_second"] = round(wal_bytes / args.seconds)
        results["receiver_max_flush_lag_seconds"] = round(max((l for l, _ in lags), default=0), 3)
        results["receiver_max_bytes_behind"] = int(max((b for _, b in lags), default=0))
        results["lag_samples"] = len(lags)
        print(f"load: {wal_bytes / args.seconds / 1e6:.2f} MB/s of WAL; receiver max flush_lag "
              f"{results['receiver_max_flush_lag_seconds']}s, max {results['receiver_max_bytes_behind']} bytes behind",
              file=sys.stderr)

        # Production restarts and recovers from its own pg_wal: its newest commit is the truth.
        s.compose("up", "-d", "db")
        s.wait_db()
        prod_last = s.psql("SELECT extract(epoch FROM max(mtime)) FROM pgbench_history")
        prod_count = int(s.psql("SELECT count(*) FROM pgbench_history"))
        latest = s.restore("--latest")
        got = s.query_volume(latest["volume"], "SELECT extract(epoch FROM max(mtime)) || ' ' || count(*) FROM pgbench_history")
        restored_last, restored_count = got.split()
        results["crash_lost_seconds"] = round(float(prod_last) - float(restored_last), 3)
        results["crash_lost_transactions"] = prod_count - int(restored_count)
        results["restore_latest_seconds"] = latest["seconds"]
        print(f"kill -9 at {killed_at:.0f}: {results['crash_lost_transactions']} of {prod_count} transactions "
              f"({results['crash_lost_seconds']}s) missing from restore --latest", file=sys.stderr)

        iso = target.strftime("%Y-%m-%d %H:%M:%S.%fZ")
        t = time.monotonic()
        at = s.restore("--to-time", iso)
        results["pitr_restore_wall_seconds"] = round(time.monotonic() - t, 2)
        results["pitr_restore_seconds"] = at["seconds"]
        results["pitr_restore_base"] = at["base"]
        pg_iso = target.strftime("%Y-%m-%d %H:%M:%S.%f+00")
        t = time.monotonic()
        raw = s.compose("run", "--rm", "-T", "--no-deps", "--entrypoint", "sh", "db-pitr", "-c", RAW_RESTORE,
                        "raw", at["base"], pg_iso, timeout=1800)
        results["raw_restore_wall_seconds"] = round(time.monotonic() - t, 2)
        results["raw_restore_seconds"] = int(raw.stdout.split("RAW ")[1].split()[0]) / 1000
        results["ratio_restore"] = round(results["pitr_restore_seconds"] / results["raw_restore_seconds"], 2)
        results["ratio_restore_wall"] = round(results["pitr_restore_wall_seconds"] / results["raw_restore_wall_seconds"], 2)
        print(f"restore to {iso}: pitr {results['pitr_restore_seconds']}s (wall {results['pitr_restore_wall_seconds']}s), "
              f"raw {results['raw_restore_seconds']}s (wall {results['raw_restore_wall_seconds']}s): "
              f"{results['ratio_restore']}x ({results['ratio_restore_wall']}x wall)", file=sys.stderr)
        if args.pgbackrest:
            # pgBackRest needs the segment holding T archived: switch and wait for the archiver.
            seg = s.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
            s.psql("SELECT pg_switch_wal()")
            s.wait(lambda: s.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= seg, timeout=300)
            t = time.monotonic()
            # A one-off of db-pitr (same image; db itself has a pinned address), with the repository.
            pgbr = s.compose("run", "--rm", "-T", "--no-deps", "-u", "root", "--entrypoint", "sh",
                             "-v", f"{root}/pgbr_restore.sh:/pgbr_restore.sh:ro",
                             "-v", f"{root}/pgbackrest.conf:/etc/pgbackrest/pgbackrest.conf:ro",
                             "-v", f"{s.name}_pgbr-repo:/repo", "db-pitr", "/pgbr_restore.sh", pg_iso, timeout=1800)
            results["pgbackrest_restore_wall_seconds"] = round(time.monotonic() - t, 2)
            ms, n = pgbr.stdout.split("PGBR ")[1].split()[:2]
            results["pgbackrest_restore_seconds"] = int(ms) / 1000
            ours = s.query_volume(at["volume"], "SELECT count(*) FROM pgbench_history")
            results["pgbackrest_rows_at_T"], results["pitr_rows_at_T"] = int(n), int(ours)
            results["ratio_restore_vs_pgbackrest"] = round(results["pitr_restore_seconds"] / results["pgbackrest_restore_seconds"], 2)
            print(f"pgbackrest restore to T: {results['pgbackrest_restore_seconds']}s "
                  f"(wall {results['pgbackrest_restore_wall_seconds']}s), {n} rows; pitr {ours} rows", file=sys.stderr)
        results["load_average"] = Path("/proc/loadavg").read_text().split()[:3]
    finally:
        test_pitr.teardown(s)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
