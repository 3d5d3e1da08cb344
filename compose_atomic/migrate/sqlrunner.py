"""The built-in runner for plain SQL migration files (``migrate: {sql: "migrations/*.sql"}``).

Files run in name order; each applied file is recorded (name, sha256, time) in the
table ``compose_atomic_migrations`` so it runs once. A file runs inside one
transaction, so a failure leaves nothing behind, unless it holds a statement that
PostgreSQL refuses inside a transaction block (``CREATE INDEX CONCURRENTLY``,
``VACUUM``, ...) or manages its own transactions: then its statements run one by
one and a failure halfway leaves the earlier ones applied (the snapshot is there
for that). ``lock_timeout`` is set for the session; the whole run is cancelled on
the server when it passes ``timeout``.
"""

from __future__ import annotations

import glob
import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..progress import Progress
from .database import Database
from ..errors import MigrationFailed, MigrationTimedOut, UsageError

TABLE = "compose_atomic_migrations"
APPLICATION_NAME = "compose-atomic-migrate"

NON_TRANSACTIONAL = re.compile(
    r"""^\s*(
        (create|drop)\s+(unique\s+)?index\s+concurrently
      | reindex\b.*\bconcurrently\b
      | alter\s+table\b.*\bdetach\s+partition\b.*\bconcurrently\b
      | vacuum\b
      | (create|drop)\s+database\b
      | (create|drop)\s+tablespace\b
      | alter\s+system\b
      | (begin|commit|rollback|end|start\s+transaction|savepoint|release|abort)\b
    )""", re.IGNORECASE | re.VERBOSE | re.DOTALL)


@dataclass
class Statement:
    text: str
    line: int


@dataclass
class MigrationFile:
    path: Path
    name: str
    sha256: str
    statements: list[Statement]

    @property
    def transactional(self) -> bool:
        return not any(NON_TRANSACTIONAL.match(s.text) for s in self.statements)


@dataclass
class RunResult:
    """What the runner did: files applied, and whether anything was committed."""

    applied: list[str] = field(default_factory=list)
    committed: bool = False
    error: MigrationFailed | None = None
    interrupted: bool = False
    #: ``(file:line, sql)`` of every statement that committed, in order
    executed: list[tuple[str, str]] = field(default_factory=list)


def split_statements(text: str) -> list[Statement]:
    """Statements with the line each starts on; comment-only pieces are dropped."""
    import sqlparse

    found, pos = [], 0
    for raw in sqlparse.split(text):
        at = text.find(raw, pos)
        at = pos if at < 0 else at
        pos = at + len(raw)
        stripped = sqlparse.format(raw, strip_comments=True).strip()
        if not stripped or stripped == ";":
            continue
        found.append(Statement(stripped, text.count("\n", 0, at + _code_offset(raw)) + 1))
    return found


def _code_offset(raw: str) -> int:
    """Offset of the first token that is neither whitespace nor a comment."""
    import sqlparse
    from sqlparse import tokens as T

    offset = 0
    for token in sqlparse.parse(raw)[0].flatten():
        if not (token.is_whitespace or token.ttype in T.Comment):
            return offset
        offset += len(token.value)
    return 0


def discover(patterns: tuple[str, ...], base: Path) -> list[MigrationFile]:
    """Files matching the globs (relative to the project directory), sorted by name."""
    paths: dict[Path, None] = {}
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        for match in glob.glob(full, recursive=True):
            if Path(match).is_file():
                paths[Path(match)] = None
    if not paths:
        raise UsageError(f"migrate.sql matches no file: {', '.join(patterns)} (relative to {base})")
    files = []
    for path in sorted(paths, key=lambda p: (p.name, str(p))):
        data = path.read_bytes()
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not UTF-8 text") from None
        files.append(MigrationFile(path, _display(path, base), hashlib.sha256(data).hexdigest(),
                                   split_statements(text)))
    return files


def _display(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def run_sql_files(db: Database, patterns: tuple[str, ...], base: Path, *, lock_timeout: float,
                  timeout: float, progress: Progress | None = None) -> RunResult:
    """Apply pending files; never raises for a failed migration (see RunResult.error)."""
    import psycopg

    progress = progress or Progress()
    files = discover(patterns, base)
    result = RunResult()
    conn = db.connect(application_name=APPLICATION_NAME)
    pid = conn.info.backend_pid
    timed_out = threading.Event()

    def cancel_on_server() -> None:
        timed_out.set()
        with db.connect(db.maintenance_db) as admin:
            from . import introspect

            introspect.end_sessions(admin, [pid], grace=3.0)

    watchdog = threading.Timer(timeout, cancel_on_server)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.execute(f"SET lock_timeout = {int(lock_timeout * 1000)}")
        applied = applied_files(conn)
        for mf in files:
            if mf.name in applied:
                if applied[mf.name] != mf.sha256:
                    result.error = MigrationFailed(
                        f"{mf.name} was changed after it was applied (sha256 differs from the one "
                        f"recorded in {TABLE})", hint="Never edit an applied migration; add a new file.")
                    return result
                continue
            started = time.monotonic()
            index = 0
            try:
                if mf.transactional:
                    with conn.transaction():
                        for index, stmt in enumerate(mf.statements):
                            conn.execute(stmt.text)
                        _record(conn, mf, started)
                    result.executed += [(f"{mf.name}:{s.line}", s.text) for s in mf.statements]
                else:
                    for index, stmt in enumerate(mf.statements):
                        conn.execute(stmt.text)
                        result.committed = True
                        result.executed.append((f"{mf.name}:{stmt.line}", stmt.text))
                    _record(conn, mf, started)
            except (psycopg.Error, KeyboardInterrupt) as exc:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE and not conn.closed:
                    try:
                        conn.execute("ROLLBACK")
                    except psycopg.Error:
                        pass
                stmt = mf.statements[index] if mf.statements else None
                where = f"{mf.name}:{stmt.line}" if stmt else mf.name
                kind = "in one transaction, rolled back" if mf.transactional else \
                    f"not in a transaction; {index} earlier statement{'s' if index != 1 else ''} stayed applied"
                if isinstance(exc, KeyboardInterrupt):
                    result.interrupted = True
                    result.error = MigrationFailed(f"{where}: interrupted ({kind})")
                elif timed_out.is_set():
                    result.error = MigrationTimedOut(
                        f"{where}: the migration passed its timeout ({timeout:g}s) and was cancelled "
                        f"on the server ({kind})")
                else:
                    message = (exc.diag.message_primary or str(exc)).strip()
                    result.error = MigrationFailed(f"{where}: {message} ({kind})")
                return result
            result.committed = True
            result.applied.append(mf.name)
            progress.event(f"Migration {mf.name}", "Applied",
                           "" if mf.transactional else "non-transactional",
                           elapsed=time.monotonic() - started)
        return result
    finally:
        watchdog.cancel()
        conn.close()


def applied_files(conn) -> dict[str, str]:
    """``name -> sha256`` of the files already applied (none before the first)."""
    if conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()[0] is None:
        return {}
    return dict(conn.execute(f"SELECT name, sha256 FROM {TABLE}").fetchall())


def pending_statements(files: list[MigrationFile], applied: dict[str, str] | None) -> list[tuple[str, str]]:
    """``(file:line, sql)`` of the files not applied yet (all of them when ``applied`` is None)."""
    return [(f"{mf.name}:{s.line}", s.text) for mf in files
            if applied is None or mf.name not in applied for s in mf.statements]


def _record(conn, mf: MigrationFile, started: float) -> None:
    """Record an applied file; the table appears with the first record, so a run
    that applies nothing leaves the schema untouched."""
    conn.execute(f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        name text PRIMARY KEY, sha256 text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now(), duration_ms integer NOT NULL)""")
    conn.execute(f"INSERT INTO {TABLE} (name, sha256, duration_ms) VALUES (%s, %s, %s)",
                 (mf.name, mf.sha256, int((time.monotonic() - started) * 1000)))
