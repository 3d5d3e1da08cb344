"""Restores that lose nothing silently.

The dump is restored into a *new* database next to the live one and verified
there (schema fingerprint and per-table row counts equal the manifest's). Only
then, with new connections refused and the other sessions terminated, the live
database is swapped for it by two renames. An interrupted or failed restore
therefore leaves the live database exactly as it was.

Before anything is touched, the write counters are compared with the ones taken
at the snapshot: rows written since then would be discarded, so the restore
refuses, naming the tables and counts, unless forced (``--force`` or
``on_failure: restore``).
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import threading
import time
from typing import Any

from .. import docker
from ..errors import Interrupted, RestoreFailed, RestoreRefused
from ..progress import Progress
from ..project import Project
from . import introspect
from .database import Database
from .snapshot import Snapshot, verify_file


def _qi(name: str):
    from psycopg import sql

    return sql.Identifier(name)


def pending_writes(snap: Snapshot, counters_now: dict[str, list[int]]) -> dict[str, int]:
    """Rows written since the snapshot that a restore would discard, per table.

    When the snapshot guarded a migration, PostgreSQL's counters cannot tell the migration's
    writes from the app's while it ran. The built-in runner counts its own (``own_writes``):
    the rest of the window is the app's and counts. For a migration command the window's
    writes are taken as the migration's and not counted (see ``unattributed_window_writes``),
    unless a write hold ran out while it ran (``app_wrote_in_window``): then they all count;
    writes before it started and after it ended always count. Writes into the migration
    tools' bookkeeping and into tables the snapshot does not hold are the migration's.
    """
    manifest = snap.manifest
    baseline = manifest.get("baseline_counters") or manifest["counters"]
    window = manifest.get("migration") or {}
    if window.get("counters_before") is not None and window.get("counters_after") is not None \
            and not manifest.get("baseline_counters"):
        found = introspect.writes_between(baseline, window["counters_before"])
        for table, rows in introspect.writes_between(window["counters_after"], counters_now).items():
            found[table] = found.get(table, 0) + rows
        own = window.get("own_writes")
        if own is not None or window.get("app_wrote_in_window"):
            # The runner knows its own writes; a write hold that ran out let the app write while
            # a command ran: then every write of the window counts (when in doubt, never discard).
            for table, rows in _window(snap).items():
                app = rows - (own or {}).get(table, 0)
                if app > 0:
                    found[table] = found.get(table, 0) + app
        return found
    return introspect.writes_between(baseline, counters_now)


def _window(snap: Snapshot) -> dict[str, int]:
    """Writes while the migration ran into the tables the snapshot holds, bookkeeping aside."""
    from .schemadiff import BOOKKEEPING_TABLES

    window = snap.manifest.get("migration") or {}
    if window.get("counters_before") is None or window.get("counters_after") is None:
        return {}
    tables = snap.manifest.get("tables") or {}
    return {t: n for t, n in introspect.writes_between(window["counters_before"], window["counters_after"]).items()
            if t in tables and t.partition(".")[2] not in BOOKKEEPING_TABLES}


def unattributed_window_writes(snap: Snapshot) -> dict[str, int]:
    """For a migration command: rows written while it ran, which nobody can attribute (the
    app's or the migration's), and which a restore discards without counting them."""
    window = snap.manifest.get("migration") or {}
    if window.get("own_writes") is not None or window.get("app_wrote_in_window") \
            or snap.manifest.get("baseline_counters"):
        return {}  # known, or counted
    return _window(snap)


def describe_writes(writes: dict[str, int]) -> str:
    total = sum(writes.values())
    tables = ", ".join(f"{t} ({n})" for t, n in sorted(writes.items(), key=lambda kv: -kv[1]))
    return f"{total} row{'s' if total != 1 else ''} written since the snapshot in {tables}"


def restore(project: Project, db: Database, snap: Snapshot, *, target_db: str | None = None,
            force: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Bring ``snap`` back into the live database (or into ``target_db``).

    Raises RestoreRefused before touching anything when later writes would be lost
    and ``force`` is false; RestoreFailed when the restore or its verification
    fails (the live database is unchanged); Interrupted on SIGINT (likewise).
    """
    from ..plugins import call_hook

    progress = progress or Progress()
    resource = f"Database {db.service}/{target_db or db.dbname}"
    verify_file(snap)
    started = time.monotonic()
    live = db.dbname
    replacing_live = target_db is None or target_db == live

    maint = db.connect(db.maintenance_db)
    try:
        _repair_interrupted_switch(maint, live, progress)
        discarded: dict[str, int] = {}
        if replacing_live:
            with db.connect() as conn:
                writes = pending_writes(snap, introspect.write_counters(conn))
                wal = _wal_since(conn, snap) if writes else ""
            if writes and not force:
                raise RestoreRefused(
                    f"restoring {snap.name} would discard {describe_writes(writes)}{wal}",
                    hint=f"Nothing was changed. To restore anyway: compose-atomic db restore "
                         f"{snap.name} --force (or restore beside it with --target-db NAME).")
        if not replacing_live and _exists(maint, target_db):
            if not force:
                raise RestoreRefused(f'database "{target_db}" already exists',
                                     hint="Pick another --target-db, or add --force to replace it.")
            _drop(maint, target_db)

        call_hook("before_restore", project=project, database=db.service, path=str(snap.path),
                  target_db=target_db or live)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S")
        work_db = f"{live[:30]}__ca_restore_{stamp}" if replacing_live else target_db
        owner = maint.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                              (live,)).fetchone()
        progress.event(resource, "Restoring", snap.name, state="working")
        _create(maint, work_db, owner[0] if owner else db.user)
        try:
            _pg_restore(db, maint, snap, work_db)
            verified = _verify(db, snap, work_db)
            if replacing_live:
                with _deferred_sigint() as interrupted:
                    discarded = _swap(db, maint, snap, live, work_db, force)
                if interrupted():
                    progress.warn(resource, "interrupted during the switch; the switch was completed")
        except BaseException as exc:
            _drop_quietly(db, work_db)
            if isinstance(exc, KeyboardInterrupt):
                raise Interrupted(f"restore of {snap.name} interrupted; the database "
                                  f'"{live}" was left as it was and the partial copy removed') from None
            raise
    finally:
        maint.close()

    if replacing_live:
        with db.connect() as conn:
            snap.manifest["baseline_counters"] = introspect.write_counters(conn)
        snap.manifest.setdefault("restored", []).append(dt.datetime.now(dt.timezone.utc).isoformat())
        snap.save_manifest()
    elapsed = time.monotonic() - started
    lost = f"; discarded {describe_writes(discarded)}" if discarded else ""
    progress.event(resource, "Restored", f"{snap.name}, verified {len(verified)} tables{lost}", elapsed=elapsed)
    call_hook("after_restore", project=project, database=db.service, path=str(snap.path),
              target_db=target_db or live)
    return {"snapshot": snap.name, "database": target_db or live, "tables": verified,
            "seconds": round(elapsed, 3), "discarded": discarded}


def _wal_since(conn, snap: Snapshot) -> str:
    """`` (the WAL advanced N MiB since)``, as a second witness, or nothing."""
    lsn = snap.manifest.get("wal_lsn")
    if not lsn:
        return ""
    try:
        diff = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (lsn,)).fetchone()[0]
    except Exception:  # noqa: BLE001 - informational only
        return ""
    return f" (the WAL advanced {float(diff) / (1 << 20):.1f} MiB since)"


def _repair_interrupted_switch(conn, live: str, progress: Progress) -> None:
    """Undo a switch cut short between its two renames (the process was killed)."""
    from psycopg import sql

    if _exists(conn, live):
        return
    old = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY datname DESC",
                       (f"{live[:30]}\\_\\_ca\\_old\\_%",)).fetchall()
    if len(old) == 1:
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_qi(old[0][0]), _qi(live)))
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(_qi(live)))
        progress.warn(f"Database {live}", f"an earlier restore was interrupted mid-switch; "
                                          f"{old[0][0]} was renamed back to {live}")


def _exists(conn, dbname: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is not None


def _create(conn, dbname: str, owner: str) -> None:
    from psycopg import sql

    conn.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(_qi(dbname), _qi(owner)))


def _drop(conn, dbname: str) -> None:
    from psycopg import sql

    conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(_qi(dbname)))
    introspect.terminate(conn, introspect.other_sessions(conn, dbname))
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(_qi(dbname)))


def _drop_quietly(db: Database, dbname: str) -> None:
    """Remove the partial copy on a fresh connection (an interrupt may have broken the old one)."""
    try:
        with db.connect(db.maintenance_db) as conn:
            if _exists(conn, dbname):
                _drop(conn, dbname)
    except Exception:  # noqa: BLE001 - best effort while already failing
        pass


def _pg_restore(db: Database, maint, snap: Snapshot, work_db: str) -> None:
    """Stream the dump into ``work_db`` with pg_restore inside the container.

    On an interrupt, killing the docker CLI is not enough (the process inside the
    container would go on): the restoring backend is terminated on the server.
    """
    argv = db.exec_argv("pg_restore", "--exit-on-error", "--no-password", "-U", db.user,
                        "-d", work_db, stdin=True)
    with open(snap.path, "rb") as handle:
        proc = docker.popen(docker.exec_in(argv), stdin=handle, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=db.exec_env())
        errors: list[bytes] = []
        drain = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
        drain.start()
        try:
            code = proc.wait()
        except BaseException:
            introspect.terminate(maint, introspect.other_sessions(maint, work_db))
            proc.kill()
            proc.wait()
            raise
        drain.join(timeout=5)
    if code != 0:
        message = b"".join(errors).decode(errors="replace").strip()
        raise RestoreFailed(f"pg_restore of {snap.name} failed (exit {code}): {message[-2000:]}",
                            hint="The live database was not touched.")


def _verify(db: Database, snap: Snapshot, work_db: str) -> dict[str, int]:
    """The restored copy must have the snapshot's schema and row counts."""
    with db.connect(work_db) as conn:
        fingerprint = introspect.schema_fingerprint(conn)
        counts = introspect.row_counts(conn)
    expected = snap.manifest["tables"]
    if fingerprint != snap.manifest["schema_sha256"]:
        raise RestoreFailed(f"verification of {snap.name} failed: the restored schema differs "
                            "from the one recorded at the snapshot", hint="The live database was not touched.")
    if counts != expected:
        diff = [f"{t}: {counts.get(t)} rows, expected {expected.get(t)}"
                for t in sorted(set(counts) | set(expected)) if counts.get(t) != expected.get(t)]
        raise RestoreFailed(f"verification of {snap.name} failed: " + "; ".join(diff[:10]),
                            hint="The live database was not touched.")
    return counts


def _swap(db: Database, maint, snap: Snapshot, live: str, work_db: str, force: bool) -> dict[str, int]:
    """Refuse new connections, end the others, re-check writes, rename twice; returns the
    rows written since the snapshot, which the swap discarded (only ever non-empty if forced)."""
    from psycopg import sql

    guard = db.connect(live)  # stays usable after ALLOW_CONNECTIONS false
    maint.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(_qi(live)))
    try:
        others = [p for p in introspect.other_sessions(maint, live) if p != guard.info.backend_pid]
        left = introspect.terminate(maint, others)
        if left:
            raise RestoreFailed(f"{len(left)} sessions on {live} could not be terminated")
        time.sleep(0.2)  # terminated backends flush their statistics on exit
        writes = pending_writes(snap, introspect.write_counters(guard))
        if not force:
            if writes:
                raise RestoreRefused(f"restoring {snap.name} would discard {describe_writes(writes)}",
                                     hint="Nothing was changed. Add --force to restore anyway.")
        guard.close()
        old = f"{live[:30]}__ca_old_{work_db[-14:]}"
        maint.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_qi(live), _qi(old)))
    except BaseException:
        guard.close()
        maint.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(_qi(live)))
        raise
    try:
        maint.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_qi(work_db), _qi(live)))
    except BaseException:
        maint.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_qi(old), _qi(live)))
        maint.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(_qi(live)))
        raise
    maint.execute(sql.SQL("DROP DATABASE {}").format(_qi(old)))
    return writes


class _deferred_sigint:
    """Hold SIGINT during the few statements of the switch; report it afterwards."""

    def __enter__(self):
        self.hit = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return lambda: self.hit

    def _handler(self, signum, frame):
        self.hit = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False
