"""Undo, in place, a migration that only added things: rows written since the snapshot stay.

The DROP statements of ``schemadiff.undo_plan`` run one by one on an autocommit
session with a short ``lock_timeout`` (an ``ALTER TABLE`` waiting for its lock would
queue the app's queries behind it), retried on a lock timeout; a statement that
something else still depends on waits for a later pass. Then the migration tools'
bookkeeping rows are put back as they were, and the result is verified: the schema
fingerprint must equal the snapshot's, the bookkeeping tables their snapshot rows.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from ..errors import RollbackFailed
from ..progress import Progress
from . import introspect, schemadiff
from .database import Database
from .snapshot import Snapshot

#: Longest a DROP waits for its lock before it gives up and tries again later.
UNDO_LOCK_TIMEOUT = 2.0
ATTEMPTS = 15


@dataclass
class UndoReport:
    dropped: list[str] = field(default_factory=list)
    lost_with: list[str] = field(default_factory=list)  # the migration's own data that went with them
    bookkeeping: list[str] = field(default_factory=list)
    retries: int = 0
    seconds: float = 0.0


def _added_data(conn, added: dict) -> list[str]:
    """What the migration wrote into the objects it added, which goes with them."""
    from psycopg import sql

    lost = []
    for obj in added.values():
        if obj["kind"] == "relation" and obj["relkind"] in ("r", "p", "m"):
            n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(obj["schema"], obj["name"]))).fetchone()[0]
            if n and obj["name"] not in schemadiff.BOOKKEEPING_TABLES:
                lost.append(f"{obj['schema']}.{obj['name']} ({n} row{'s' if n != 1 else ''})")
        elif obj["kind"] == "column" and f"relation {obj['schema']}.{obj['table']}" not in added:
            lost.append(f"the values of column {obj['schema']}.{obj['table']}.{obj['name']}")
    return lost


def undo_additions(db: Database, snap: Snapshot, found: schemadiff.Diff, *,
                   lock_timeout: float = UNDO_LOCK_TIMEOUT, progress: Progress | None = None,
                   attempts: int = ATTEMPTS) -> UndoReport:
    """Drop what the migration added and put its bookkeeping back; raise RollbackFailed if the
    schema cannot be brought back to the snapshot's (what is left is then named)."""
    import psycopg

    progress = progress or Progress()
    resource = f"Database {db.service}"
    report = UndoReport()
    started = time.monotonic()
    steps = schemadiff.undo_plan(found.added)
    progress.event(resource, "Undoing", f"dropping what the migration added: {found.describe_added()}",
                   state="working")
    with db.connect(application_name="compose-atomic-undo") as conn:
        conn.execute(f"SET lock_timeout = {int(min(lock_timeout, UNDO_LOCK_TIMEOUT) * 1000)}")
        report.lost_with = _added_data(conn, found.added)
        pending = list(steps)
        tries = {id(s): 0 for s in steps}
        last_error: dict[int, str] = {}
        while pending:
            progressed, later = False, []
            for step in pending:
                try:
                    conn.execute(step.statement)
                    report.dropped.append(step.what)
                    progressed = True
                except psycopg.errors.LockNotAvailable as exc:
                    tries[id(step)] += 1
                    report.retries += 1
                    last_error[id(step)] = f"{step.what}: {exc.diag.message_primary}"
                    if tries[id(step)] >= attempts:
                        raise _left(found, report, last_error[id(step)]) from None
                    later.append(step)
                except psycopg.errors.DependentObjectsStillExist as exc:
                    last_error[id(step)] = f"{step.what}: {exc.diag.message_primary}"
                    later.append(step)
                except psycopg.Error as exc:
                    raise _left(found, report, f"{step.what}: {str(exc).strip()}") from None
            if later and not progressed and all(tries[id(s)] == 0 for s in later):
                raise _left(found, report, "; ".join(last_error[id(s)] for s in later))
            if later and not progressed:
                time.sleep(min(0.25 * (1 + report.retries), 2.0))
            pending = later
        report.bookkeeping = put_back_bookkeeping(conn, snap.manifest.get("bookkeeping") or {})
        fingerprint = introspect.schema_fingerprint(conn)
        books = schemadiff.bookkeeping(conn)
    if fingerprint != snap.manifest["schema_sha256"]:
        raise _left(found, report, "after the undo the schema fingerprint still differs from the "
                                   "snapshot's")
    expected = snap.manifest.get("bookkeeping") or {}
    if {t: r for t, r in books.items() if t in expected} != expected:
        raise _left(found, report, "after the undo the migration tool's bookkeeping still differs "
                                   "from the snapshot's")
    report.seconds = time.monotonic() - started
    return report


def put_back_bookkeeping(conn, expected: dict[str, list[str]]) -> list[str]:
    """Make each bookkeeping table that still exists hold exactly its snapshot rows."""
    from psycopg import sql

    fixed = []
    current = schemadiff.bookkeeping(conn)
    for table, rows in expected.items():
        now = current.get(table)
        if now is None or now == rows:
            continue
        schema, _, name = table.partition(".")
        ident = sql.Identifier(schema, name)
        missing = sorted(set(rows) - set(now))
        with conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {} t WHERE NOT (row_to_json(t)::text = ANY(%s))").format(ident),
                         (rows,))
            if missing:
                conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM json_populate_recordset(NULL::{}, %s::json)")
                             .format(ident, ident), ("[" + ",".join(missing) + "]",))
        fixed.append(table)
    return fixed


def _left(found: schemadiff.Diff, report: UndoReport, why: str) -> RollbackFailed:
    done = ", ".join(report.dropped) or "nothing"
    remaining = [s.what for s in schemadiff.undo_plan(found.added) if s.what not in report.dropped]
    return RollbackFailed(
        f"undoing the migration in place stopped: {why}. Dropped so far: {done}; still there: "
        f"{', '.join(remaining) or 'none of the added objects'}. Every row written since the "
        f"snapshot is still in the database.",
        hint="Run `compose-atomic db migrate` again once the cause is fixed, drop the objects "
             "named above by hand, or restore the snapshot (compose-atomic db restore NAME --force "
             "discards the writes made since).")


def dumps(report: UndoReport) -> str:
    return json.dumps(report.__dict__)
