"""Snapshot and restore+verify against raw pg_dump / pg_restore, in one run.

    .venv/bin/python bench/migrate/run.py [--scale 70] [--repeat 2]

Starts a throwaway PostgreSQL container (compose project ``cabench-migrate-*``),
fills it with ``pgbench -i -s SCALE`` (scale 70 is about 1 GB), then times, on the
same database and in alternation:

- raw ``pg_dump -Fc`` inside the container to a file there, and streamed to the host; on
  PostgreSQL 16 and later also ``pg_dump -Fc --compress=zstd`` inside the container, the
  compression the snapshot uses there;
- ``compose-atomic``'s snapshot (stream + sha256 + the table of contents read from the stream +
  row counts, fingerprint and schema objects in the exported snapshot + fsync + rename);
- the snapshot's parts alone, to see where time goes: the facts read beside the dump, the
  sha256 of the dump, the table of contents read from the file;
- raw ``pg_restore`` of the host file streamed into a new database (and ``-j 2`` from
  a file inside the container);
- ``compose-atomic``'s restore: restore into a new database, verify schema and row
  counts, swap with the live one.

Each operation follows a CHECKPOINT, and the order alternates between rounds, so
neither side inherits the other's dirty pages. The machine is shared: read the
best and the median together.

Prints a Markdown table with the ratios; the numbers in RESULTS.md come from it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

IMAGE = os.environ.get("IMAGE_POSTGRES", "compose-atomic-testbed/postgres:17")
COMPOSE = """
name: {name}
services:
  db:
    image: {image}
    environment:
      POSTGRES_USER: bench
      POSTGRES_DB: bench
      POSTGRES_PASSWORD: bench-pw
    shm_size: 256m
"""


def sh(*argv, **kw):
    return subprocess.run(list(argv), check=True, **kw)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=70)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    from compose_atomic.migrate.database import Database
    from compose_atomic.migrate.restore import restore
    from compose_atomic.migrate.snapshot import take_snapshot
    from compose_atomic.progress import Progress
    from compose_atomic.project import ComposeOptions, load_project

    name = f"cabench-migrate-{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="cabench-migrate-"))
    (work / "compose.yaml").write_text(COMPOSE.format(name=name, image=IMAGE))
    sh("docker", "compose", "up", "-d", "--wait", cwd=work, capture_output=True)
    try:
        project = load_project(ComposeOptions(project_directory=str(work)))
        db = Database.locate(project, "db")
        for _ in range(60):
            try:
                db.connect().close()
                break
            except Exception:
                time.sleep(1)
        print(f"pgbench -i -s {args.scale} ...", file=sys.stderr)
        t_init = timed(lambda: sh(*db.exec_argv("pgbench", "-i", "-q", "-s", str(args.scale), "-U", "bench", "bench"),
                                  env=db.exec_env(), capture_output=True))
        with db.connect() as conn:
            conn.execute("VACUUM ANALYZE")
            size = conn.execute("SELECT pg_database_size('bench')").fetchone()[0]
        print(f"database: {size / 2**30:.2f} GiB, initialised in {t_init:.0f}s", file=sys.stderr)
        host_dump = work / "raw.dump"
        snapdir = work / "snapshots"
        snapdir.mkdir(mode=0o700)
        quiet = Progress("quiet")
        rows: dict[str, list[float]] = {k: [] for k in
                                        ("dump_in", "dump_in_zstd", "dump_host", "snapshot", "restore_raw", "restore_raw_j2",
                                         "restore_ours", "facts", "sha256", "toc")}

        def raw_dump_inside():
            sh(*db.exec_argv("pg_dump", "-Fc", "-U", "bench", "-d", "bench", "-f", "/tmp/raw.dump"),
               env=db.exec_env())

        def raw_dump_inside_zstd():
            """The same, compressed as the snapshot compresses it on PostgreSQL 16 and later."""
            sh(*db.exec_argv("pg_dump", "-Fc", "--compress=zstd", "-U", "bench", "-d", "bench", "-f", "/tmp/raw.zst.dump"),
               env=db.exec_env())

        def raw_dump_host():
            with open(host_dump, "wb") as out:
                sh(*db.exec_argv("pg_dump", "-Fc", "-U", "bench", "-d", "bench"), stdout=out, env=db.exec_env())

        snaps = []

        def ours_snapshot():
            snaps.append(take_snapshot(project, db, snapdir, progress=quiet))

        def facts_alone():
            """What the snapshot reads beside the dump (in parallel there), run on its own."""
            from compose_atomic.migrate import introspect, schemadiff

            with db.connect() as conn:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                introspect.row_counts(conn)
                introspect.schema_fingerprint(conn)
                schemadiff.describe(conn)
                schemadiff.bookkeeping(conn)
                conn.execute("COMMIT")

        def sha256_alone():
            import hashlib

            digest = hashlib.sha256()
            with open(host_dump, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)

        def toc_alone():
            """The archive check: the dump's table of contents read as the snapshot reads it from the stream."""
            from compose_atomic.migrate.archive import TocReader

            contents = TocReader()
            with open(host_dump, "rb") as handle:
                while not contents.done and (chunk := handle.read(1 << 20)):
                    contents.feed(chunk)
            contents.finish()

        def raw_restore(target: str, jobs: bool):
            with db.connect("postgres") as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{target}"')
                conn.execute(f'CREATE DATABASE "{target}" TEMPLATE template0')
            if jobs:
                t = timed(lambda: sh(*db.exec_argv("pg_restore", "-j", "2", "-U", "bench", "-d", target,
                                                   "/tmp/raw.dump"), env=db.exec_env()))
            else:
                with open(host_dump, "rb") as handle:
                    t = timed(lambda: sh(*db.exec_argv("pg_restore", "-U", "bench", "-d", target, stdin=True),
                                         stdin=handle, env=db.exec_env()))
            with db.connect("postgres") as conn:
                conn.execute(f'DROP DATABASE "{target}"')
            return t

        def checkpoint():
            with db.connect() as conn:
                conn.execute("CHECKPOINT")

        def measure(key, fn):
            checkpoint()  # no dirty pages left over from the previous operation
            rows[key].append(timed(fn) if key != "restore_raw" and key != "restore_raw_j2" else fn())

        dumps = [("dump_in", raw_dump_inside), ("dump_host", raw_dump_host), ("snapshot", ours_snapshot)]
        from compose_atomic.migrate.introspect import server_version

        with db.connect() as conn:
            snaps_zstd = int(server_version(conn).split(".")[0]) >= 16
        if snaps_zstd:
            dumps.insert(1, ("dump_in_zstd", raw_dump_inside_zstd))
        restores = [("restore_raw", lambda: raw_restore("raw_restore", jobs=False)),
                    ("restore_raw_j2", lambda: raw_restore("raw_restore", jobs=True)),
                    ("restore_ours", lambda: restore(project, db, snaps[-1], force=True, progress=quiet))]
        for i in range(args.repeat):
            print(f"round {i + 1}/{args.repeat}", file=sys.stderr)
            order = (lambda x: x) if i % 2 == 0 else (lambda x: list(reversed(x)))
            for key, fn in order(dumps):
                measure(key, fn)
            for key, fn in order(restores):
                measure(key, fn)
            for key, fn in (("facts", facts_alone), ("sha256", sha256_alone), ("toc", toc_alone)):
                measure(key, fn)

        best = {k: min(v) for k, v in rows.items() if v}
        med = {k: statistics.median(v) for k, v in rows.items() if v}
        dump_mib = snaps[-1].manifest["size"] / 2**20
        cpu = os.cpu_count()
        print(f"\n## pgbench scale {args.scale}: {size / 2**30:.2f} GiB database, dump {dump_mib:.0f} MiB\n")
        print(f"{platform.node()} ({cpu} cores, shared), PostgreSQL {snaps[-1].manifest['server_version']} ({IMAGE}), "
              f"{args.repeat} rounds, best (median) seconds\n")
        print("| operation | seconds | ratio |")
        print("|---|---|---|")
        line = lambda label, key, base: print(
            f"| {label} | {best[key]:.2f} ({med[key]:.2f}) | "
            + (f"{best[key] / best[base]:.2f}x vs {base}" if base else "-") + " |")
        line("raw `pg_dump -Fc` to a file inside the container", "dump_in", None)
        line("raw `pg_dump -Fc` streamed to the host", "dump_host", None)
        if snaps_zstd:
            line("raw `pg_dump -Fc --compress=zstd` to a file inside the container", "dump_in_zstd", None)
        line(f"**compose-atomic snapshot** ({snaps[-1].manifest['compression']})", "snapshot", "dump_in")
        if snaps_zstd:
            print(f"| (snapshot vs raw zstd dump inside) | | {best['snapshot'] / best['dump_in_zstd']:.2f}x |")
        print(f"| (snapshot vs streamed raw dump) | | {best['snapshot'] / best['dump_host']:.2f}x |")
        line("raw `pg_restore` streamed from the host into a new DB", "restore_raw", None)
        line("raw `pg_restore -j 2` from a file inside the container", "restore_raw_j2", None)
        line("**compose-atomic restore + verify + swap**", "restore_ours", "restore_raw")
        print(f"| (restore vs raw `-j 2`) | | {best['restore_ours'] / best['restore_raw_j2']:.2f}x |")
        print("\nThe snapshot's parts, each timed alone (best, median): row counts + fingerprint + schema "
              f"objects + bookkeeping in one REPEATABLE READ transaction {best['facts']:.2f} ({med['facts']:.2f}) s "
              f"(runs beside the dump), sha256 of the dump {best['sha256']:.2f} ({med['sha256']:.2f}) s "
              f"(computed on the stream), the archive's table of contents {best['toc']:.3f} ({med['toc']:.3f}) s "
              f"(read from the stream).")
        paired = lambda a, b: statistics.median(x / y for x, y in zip(rows[a], rows[b]))
        print("\nMedian of per-round ratios (each pair measured back to back, so less exposed to "
              "load from other processes):\n")
        print(f"- snapshot / raw dump in the container: {paired('snapshot', 'dump_in'):.2f}x")
        if snaps_zstd:
            print(f"- snapshot / raw zstd dump in the container: {paired('snapshot', 'dump_in_zstd'):.2f}x")
        print(f"- snapshot / raw dump streamed to the host: {paired('snapshot', 'dump_host'):.2f}x")
        print(f"- restore+verify+swap / raw streamed pg_restore: {paired('restore_ours', 'restore_raw'):.2f}x")
        print(f"- restore+verify+swap / raw pg_restore -j 2: {paired('restore_ours', 'restore_raw_j2'):.2f}x")
        print("\nraw seconds per round: " + ", ".join(f"{k}={[round(x, 2) for x in v]}" for k, v in rows.items() if v))
    finally:
        subprocess.run(["docker", "compose", "down", "-v", "-t", "1"], cwd=work, capture_output=True)
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
