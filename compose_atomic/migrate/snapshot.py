"""Verified snapshots: ``pg_dump -Fc`` inside the database container, streamed to disk.

Never trust a pipe: the dump's own exit status is checked, the bytes go to a
temporary file while their sha256 is computed and the archive's header and table of contents
are read from them (:mod:`.archive`, as pg_restore reads them; ``pg_restore --list`` for an
archive version newer than it knows), then the file is fsynced, renamed atomically and made mode 0600. A
manifest beside the dump records what a restore must bring back: per-table row
counts and a schema fingerprint (read in the very snapshot pg_dump used, through
``pg_export_snapshot``), and the write counters the restore compares against.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from .. import docker
from ..errors import NotEnoughSpace, SnapshotFailed
from ..progress import Progress
from ..project import Project
from ..statedir import Snapshot, fsync_dir, list_snapshots  # noqa: F401 - Snapshot, list_snapshots: re-exported
from . import introspect, schemadiff
from .archive import Malformed, TocReader
from .database import Database

CHUNK = 1 << 20
#: Without an earlier snapshot to go by, a custom-format dump is assumed to take
#: at most this share of the tables' on-disk size (it is compressed; pgbench data
#: dumps to about 1/12 of it with gzip, 1/40 with zstd).
FIRST_DUMP_RATIO = 0.35
#: Head room over the previous snapshot of the same database.
GROWTH_MARGIN = 1.25
PRE_MIGRATE = "pre-migrate"
MANUAL = "manual"
#: How long a snapshot waits for a table lock held by another session.
LOCK_WAIT = 60.0
#: pg_dump 16 and later compress with zstd when built with it (the official images are): on
#: bench/migrate's 1 GB pgbench database the dump is ~4x smaller than gzip's (pg_dump's default),
#: so less goes through ``docker exec``, and pg_dump itself spends less CPU beside the row counts.
ZSTD_FROM_MAJOR = 16
ZSTD = "--compress=zstd"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def snapshot_name(database_service: str, reason: str, label: str | None, when: dt.datetime) -> str:
    parts = [database_service, when.strftime("%Y%m%dT%H%M%SZ"), reason]
    if label:
        parts.append(label)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(parts))


# ---- listing ----------------------------------------------------------------------


# ---- retention --------------------------------------------------------------------


def to_prune(snapshots: list[Snapshot], keep: int, now: dt.datetime | None = None,
             min_age: dt.timedelta = dt.timedelta(days=1)) -> list[Snapshot]:
    """Pre-migration snapshots beyond the newest ``keep`` that are older than ``min_age``.

    Manual snapshots are never pruned: the user took them on purpose.
    """
    now = now or _now()
    pre = sorted((s for s in snapshots if s.manifest.get("reason") == PRE_MIGRATE),
                 key=lambda s: s.manifest["created"])
    older = pre[:-keep] if keep > 0 else pre
    return [s for s in older if now - s.created > min_age]


def prune(directory: Path, database_service: str, keep: int, progress: Progress | None = None) -> list[str]:
    """Apply the retention rule; returns the names removed."""
    removed = []
    for snap in to_prune(list_snapshots(directory, database_service), keep):
        snap.path.unlink(missing_ok=True)
        snap.manifest_path.unlink(missing_ok=True)
        removed.append(snap.name)
        if progress:
            progress.event(f"Snapshot {snap.name}", "Pruned", f"keep_snapshots={keep}")
    return removed


# ---- taking a snapshot ----------------------------------------------------------------


def estimate_size(conn, previous: list[Snapshot]) -> int:
    """Bytes the dump is expected to need at most (see FIRST_DUMP_RATIO)."""
    if previous:
        return int(previous[-1].manifest["size"] * GROWTH_MARGIN)
    tables = conn.execute("""SELECT coalesce(sum(pg_table_size(c.oid)), 0) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND c.relkind = 'r'""").fetchone()[0]
    return int(int(tables) * FIRST_DUMP_RATIO)


def take_snapshot(project: Project, db: Database, directory: Path, *, reason: str = MANUAL,
                  label: str | None = None, progress: Progress | None = None,
                  extra: dict[str, Any] | None = None, lock_wait: float = LOCK_WAIT) -> Snapshot:
    """Dump ``db`` into ``directory``; return the verified snapshot.

    A dump needs a share lock on every table: when another session holds an
    exclusive one for longer than ``lock_wait`` seconds, the snapshot fails
    instead of queueing forever. On any failure nothing is left behind but the
    existing snapshots.
    """
    from ..plugins import call_hook

    progress = progress or Progress()
    when = _now()
    name = snapshot_name(db.service, reason, label, when)
    final = directory / f"{name}.dump"
    tmp = directory / f".{name}.dump.partial"
    call_hook("before_snapshot", project=project, database=db.service, path=str(final))

    conn = db.connect(autocommit=True)
    try:
        conn.execute(f"SET lock_timeout = {int(lock_wait * 1000)}")
        needed = estimate_size(conn, list_snapshots(directory, db.service))
        free = shutil.disk_usage(directory).free
        if needed > free:
            raise NotEnoughSpace(
                f"not enough space for a snapshot of \"{db.service}\" in {directory}: "
                f"{_mib(free)} free, about {_mib(needed)} needed",
                hint="Free space there or point x-atomic.state_dir at a larger disk; "
                     "nothing was dumped and no existing snapshot was touched.")
        progress.event(f"Snapshot {name}", "Dumping", f"{_mib(free)} free", state="working")
        version = introspect.server_version(conn)
        # Counters first, then the snapshot: a write in between is seen as a later
        # write (a false alarm at worst), never silently missed.
        counters = introspect.write_counters(conn)
        lsn = introspect.wal_lsn(conn)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot_id = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        facts: dict[str, Any] = {}

        def read_facts() -> None:
            try:
                facts["tables"] = introspect.row_counts(conn)
                facts["schema_sha256"] = introspect.schema_fingerprint(conn)
                facts["schema_objects"] = schemadiff.describe(conn)
                facts["bookkeeping"] = schemadiff.bookkeeping(conn)
            except Exception as exc:  # noqa: BLE001 - reported below
                facts["error"] = exc

        reader = threading.Thread(target=read_facts, daemon=True)
        reader.start()
        contents = TocReader()
        try:
            try:
                size, digest = _dump(db, snapshot_id, tmp, lock_wait, contents,
                                     zstd=_major(version) >= ZSTD_FROM_MAJOR)
            except _NoZstd:  # a pg_dump built without it: its default (gzip)
                tmp.unlink(missing_ok=True)
                contents = TocReader()
                size, digest = _dump(db, snapshot_id, tmp, lock_wait, contents)
        finally:
            reader.join()
            conn.execute("COMMIT")
        if "error" in facts:
            raise SnapshotFailed(f"reading row counts for the snapshot failed: {facts['error']}")
        toc = _toc_entries(db, contents, tmp)
        os.replace(tmp, final)
        fsync_dir(directory)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        conn.close()

    manifest = {
        "name": name, "created": when.isoformat(), "reason": reason, "label": label,
        "database_service": db.service, "dbname": db.dbname, "server_version": version,
        "size": size, "sha256": digest, "toc_entries": toc, "compression": contents.compression,
        "wal_lsn": lsn,
        "tables": facts["tables"], "schema_sha256": facts["schema_sha256"],
        "schema_objects": facts["schema_objects"], "bookkeeping": facts["bookkeeping"],
        "counters": counters, **(extra or {}),
    }
    snap = Snapshot(final, manifest)
    snap.save_manifest()
    progress.event(f"Snapshot {name}", "Created",
                   f"{_mib(size)}, {len(facts['tables'])} tables, sha256 {digest[:12]}")
    call_hook("after_snapshot", project=project, database=db.service, path=str(final), manifest=manifest)
    return snap


def _toc_entries(db: Database, contents: TocReader, dump: Path) -> int:
    """The entries of the dump's table of contents, read from the stream; ``pg_restore --list``
    on the file for an archive version the reader does not know. SnapshotFailed if unreadable."""
    if contents.unknown:
        lister = ArchiveCheck(db)
        try:
            with open(dump, "rb") as handle:
                while lister.feeding and (chunk := handle.read(CHUNK)):
                    lister.feed(chunk)
            return lister.finish()
        finally:
            lister.kill()
    try:
        return contents.finish()
    except Malformed as exc:
        raise SnapshotFailed(f"the dump is not a readable archive: {exc}") from None


class ArchiveCheck:
    """``pg_restore --list`` reading a dump fed to it (the header and table of contents, which a
    custom archive carries first: it may exit before the data ends)."""

    def __init__(self, db: Database) -> None:
        self.command = docker.exec_in(db.exec_argv("pg_restore", "--list", stdin=True))
        self.proc = docker.popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=db.exec_env())
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.readers = [threading.Thread(target=lambda: self.out.append(self.proc.stdout.read()), daemon=True),
                        threading.Thread(target=lambda: self.err.append(self.proc.stderr.read()), daemon=True)]
        for reader in self.readers:
            reader.start()
        self.feeding = True

    def feed(self, chunk: bytes) -> None:
        if self.feeding:
            try:
                self.proc.stdin.write(chunk)
            except (BrokenPipeError, OSError):  # it has read all it needs
                self.feeding = False

    def finish(self) -> int:
        """The number of TOC entries; SnapshotFailed when the archive cannot be read."""
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            code = self.proc.wait(timeout=self.command.timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise SnapshotFailed("pg_restore --list did not finish reading the dump") from None
        for reader in self.readers:
            reader.join(timeout=5)
        if code != 0:
            raise SnapshotFailed("the dump is not a readable archive (pg_restore --list: "
                                 f"{b''.join(self.err).decode(errors='replace').strip()})")
        return sum(1 for line in b"".join(self.out).decode(errors="replace").splitlines()
                   if line and not line.startswith(";"))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class _NoZstd(Exception):
    """pg_dump refused ``--compress=zstd`` (built without zstd): a signal to dump again with
    its default, caught in ``take_snapshot`` and never shown to a user."""


def _major(version: str) -> int:
    """``17.10 (Debian 17.10-1)`` -> 17; 0 when unreadable."""
    found = re.match(r"\s*(\d+)", version)
    return int(found.group(1)) if found else 0


def _dump(db: Database, snapshot_id: str, tmp: Path, lock_wait: float,
          contents: TocReader | None = None, *, zstd: bool = False) -> tuple[int, str]:
    """Stream pg_dump's output into ``tmp`` (and ``contents``); return size and sha256."""
    argv = db.exec_argv("pg_dump", "--format=custom", *([ZSTD] if zstd else []), "--no-password",
                        f"--snapshot={snapshot_id}", f"--lock-wait-timeout={int(lock_wait * 1000)}",
                        "-U", db.user, "-d", db.dbname)
    digest = hashlib.sha256()
    size = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    proc = docker.popen(docker.exec_in(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=db.exec_env())
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    drain.start()
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := proc.stdout.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if contents is not None and not contents.done:
                    try:
                        contents.feed(chunk)
                    except Malformed as exc:
                        raise SnapshotFailed(f"the dump is not a readable archive: {exc}") from None
            out.flush()
            os.fsync(out.fileno())
        code = proc.wait()
    except OSError as exc:
        proc.kill()
        proc.wait()
        if exc.errno == 28:  # ENOSPC
            raise NotEnoughSpace(f"the disk filled up while dumping into {tmp.parent}: {exc.strerror}",
                                 hint="The partial file was removed; no existing snapshot was touched.") from None
        raise SnapshotFailed(f"writing the snapshot failed: {exc}") from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        drain.join(timeout=5)
    if code != 0:
        message = b"".join(errors).decode(errors="replace").strip()
        if zstd and size == 0 and "zstd" in message:
            raise _NoZstd(message)
        raise SnapshotFailed(f"pg_dump exited with {code}: {message or 'no message'}")
    if size == 0:
        raise SnapshotFailed("pg_dump exited 0 but wrote nothing")
    return size, digest.hexdigest()


def verify_file(snap: Snapshot) -> None:
    """Size and sha256 of the dump must equal the manifest's."""
    from ..errors import RestoreRefused

    size = snap.path.stat().st_size
    if size != snap.manifest["size"]:
        raise RestoreRefused(f"snapshot {snap.name} is damaged: {size} bytes, "
                             f"the manifest records {snap.manifest['size']}")
    digest = hashlib.sha256()
    with open(snap.path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != snap.manifest["sha256"]:
        raise RestoreRefused(f"snapshot {snap.name} is damaged: its sha256 differs from the manifest's",
                             hint="Restore an older snapshot (compose-atomic db snapshots lists them).")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
