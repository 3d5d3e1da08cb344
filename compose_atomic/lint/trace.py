"""``--trace``: run the migration on a throwaway PostgreSQL and watch what it really does.

In eugene's style: a container of the project's own database image (so the same major
version and extensions) starts empty on a random 127.0.0.1 port, the ``--setup`` files
are applied and committed, then the migration runs inside one transaction. After each
statement we record the locks this backend holds on relations that existed before
(``pg_locks``), which tables got a new ``relfilenode`` (a rewrite), which indexes were
rebuilt, and the duration; then everything is rolled back and the container removed.

That settles what static analysis cannot: ``int -> bigint`` rewrites the table,
``varchar -> text`` does not. A static finding about a rewrite that did not happen is
dropped; a rewrite no rule predicted becomes a ``table-rewrite`` finding; a statement
that fails becomes ``trace-failed`` (e.g. SQLSTATE 25001 for CONCURRENTLY in a transaction).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path


from ..errors import LintUsageError, TraceFailed
from .engine import LOCK_ORDER
from .model import Finding
from .parser import parse_file

REWRITE_RULES = {"changing-column-type", "adding-field-with-default"}
# Rules whose claim is a scan of the table (validation of a constraint, NOT NULL): rechecked with the
# backend's own scan counters (pg_stat_get_xact_numscans, table and its indexes) around the statement.
SCAN_RULES = {"constraint-missing-not-valid", "adding-foreign-key-constraint", "adding-not-nullable-field",
              "adding-serial-primary-key-field"}
SCANS = """
SELECT t.oid, pg_stat_get_xact_numscans(t.oid)
       + coalesce((SELECT sum(pg_stat_get_xact_numscans(i.indexrelid)) FROM pg_index i WHERE i.indrelid = t.oid), 0)
FROM pg_class t WHERE t.oid = ANY(%s)
"""
RELATIONS = """
SELECT c.oid, c.relname, c.relkind, c.relfilenode
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  AND c.relkind IN ('r', 'p', 'm', 'i')
"""
LOCKS = """
SELECT c.oid, c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
"""


@dataclass
class TracedStatement:
    file: str
    line: int
    start: int
    statement: str
    duration_ms: float = 0.0
    locks: list[str] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    scanned: list[str] = field(default_factory=list)
    indexes_rebuilt: list[str] = field(default_factory=list)
    sqlstate: str | None = None
    error: str | None = None
    skipped: str | None = None

    def as_json(self) -> dict:
        return {"duration_ms": round(self.duration_ms, 2), "locks": self.locks, "rewritten": self.rewritten,
                "scanned": self.scanned, "indexes_rebuilt": self.indexes_rebuilt, "sqlstate": self.sqlstate, "error": self.error,
                "skipped": self.skipped}


# ---- docker commands: built here as data, run by compose_atomic.docker's gateway ----------------


def run_container(name: str, image: str):
    """A PostgreSQL container on a random 127.0.0.1 port; the password comes from the CLI's environment."""
    from compose_atomic import docker

    return docker.docker("run", "-d", "--rm", "--name", name, "--label", "compose-atomic.lint-trace=1",
                         "-e", "POSTGRES_PASSWORD", "-e", "POSTGRES_USER=postgres", "-e", "POSTGRES_DB=trace",
                         "-p", "127.0.0.1::5432", image, changes=True, timeout=docker.LONG_TIMEOUT)


def container_port(name: str):
    from compose_atomic import docker

    return docker.docker("port", name, "5432/tcp")


def container_running(name: str):
    from compose_atomic import docker

    return docker.docker("inspect", "-f", "{{.State.Running}}", name)


def restore_dump(name: str):
    from compose_atomic import docker

    return docker.docker("exec", "-i", name, "pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
                         "-U", "postgres", "-d", "trace", changes=True, timeout=1800)


class ThrowawayPostgres:
    """A PostgreSQL container of ``image`` on 127.0.0.1:<random>, removed on exit."""

    def __init__(self, image: str, name_prefix: str, start_timeout: float = 90.0) -> None:
        self.image = image
        self.name = f"{name_prefix}-lint-trace-{uuid.uuid4().hex[:8]}"
        self.password = secrets.token_urlsafe(18)
        self.start_timeout = start_timeout
        self.port: int | None = None

    def __enter__(self) -> "ThrowawayPostgres":
        from compose_atomic import docker

        if docker.gateway().dry_run:
            raise LintUsageError("--trace starts a throwaway database container: not with --dry-run")
        # The password travels in the environment of the docker CLI, never in argv.
        env = {**os.environ, "POSTGRES_PASSWORD": self.password}
        result = docker.run(run_container(self.name, self.image), env=env)
        if not result.ok:
            raise TraceFailed(f"--trace could not start a container of {self.image}: {result.last_line()}")
        try:
            self._wait()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait(self) -> None:
        import psycopg

        from compose_atomic import docker

        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if self.port is None:
                out = docker.run(container_port(self.name)).stdout.strip().splitlines()
                if out:
                    self.port = int(out[0].rsplit(":", 1)[1])
            if self.port is not None:
                try:
                    with psycopg.connect(**self.conninfo(), connect_timeout=3) as conn:
                        conn.execute("SELECT 1")
                    return
                except psycopg.OperationalError as exc:
                    last = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            state = docker.run(container_running(self.name)).stdout.strip()
            if state != "true":
                raise TraceFailed(f"the trace container of {self.image} stopped while starting")
            time.sleep(0.5)
        raise TraceFailed(f"the trace database ({self.image}) was not ready after {self.start_timeout:.0f}s: {last}")

    def restore(self, dump: Path) -> None:
        """Load a ``pg_dump -Fc`` file (a snapshot) into the trace database, streamed over stdin."""
        from compose_atomic import docker

        command = restore_dump(self.name)
        with open(dump, "rb") as fh:
            proc = docker.popen(command, stdin=fh, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                _, err = proc.communicate(timeout=command.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise TraceFailed(f"--from-snapshot: restoring {dump.name} took more than {command.timeout:g}s")
        if proc.returncode != 0:
            detail = (err or b"").decode(errors="replace").strip().splitlines()
            raise TraceFailed(f"--from-snapshot: restoring {dump.name} into the trace database failed: "
                              f"{detail[-1] if detail else 'exit ' + str(proc.returncode)}")

    def conninfo(self) -> dict:
        return {"host": "127.0.0.1", "port": self.port, "user": "postgres", "password": self.password,
                "dbname": "trace", "client_encoding": "UTF8"}  # text as str on any server encoding

    def __exit__(self, *exc) -> None:
        from compose_atomic import docker

        docker.run(docker.remove(self.name, volumes=True))


def _find_snapshot(project, service: str, name: str) -> Path:
    """The dump of a ``compose-atomic db snapshot`` of ``service``: by name, or the newest."""
    from ..statedir import list_snapshots

    found = list_snapshots(project.state_dir / "snapshots", service)
    if not found:
        raise LintUsageError(f"--from-snapshot: no snapshot of service {service!r} in {project.state_dir}",
                             hint=f"Take one with: compose-atomic db snapshot (the {service} service must run).")
    if name == "latest":
        return found[-1].path
    for snap in found:
        if name in (snap.name, snap.path.name):
            return snap.path
    raise LintUsageError(f"--from-snapshot: no snapshot named {name!r}; there are: "
                         + ", ".join(s.name for s in found[-5:]) + " (or use latest)")


def _relations(cur) -> dict[int, tuple[str, str, int]]:
    cur.execute(RELATIONS)
    return {oid: (name, kind, node) for oid, name, kind, node in cur.fetchall()}


def trace_source(conn, source, config=None) -> list[TracedStatement]:
    """Run a parsed file in one transaction on ``conn``, statement by statement; roll back.

    A statement that cannot run in a transaction block, in a file that does not run in
    one (no BEGIN, no --assume-in-transaction), is not executed: the runner would run it on
    its own, and inside our transaction it could only fail with 25001.
    """
    import psycopg

    from .effects import no_transaction_reason
    from .engine import LintConfig, LintContext

    config = config or LintConfig()
    ctx = LintContext(source, config, config.assume_in_transaction)
    records: list[TracedStatement] = []
    conn.autocommit = False
    with conn.cursor() as cur:
        before = _relations(cur)
        current = dict(before)
        held: set[tuple[int, str]] = set()
        tables = [oid for oid, (_, kind, _) in before.items() if kind in ("r", "p", "m")]
        for n, stmt in enumerate(source.statements):
            in_transaction = ctx.in_transaction
            ctx.after(stmt)
            if stmt.kind == "TransactionStmt" or stmt.error:
                continue
            record = TracedStatement(source.path, source.position(stmt.start)[0], stmt.start, stmt.text)
            records.append(record)
            reason = no_transaction_reason(stmt, config.pg_version)
            if reason and not in_transaction:
                record.skipped = f"not traced: {reason} runs outside a transaction"
                continue
            cur.execute(f"SAVEPOINT lint_trace_{n}")
            cur.execute(SCANS, (tables,))
            scans_before = dict(cur.fetchall())
            started = time.perf_counter()
            try:
                cur.execute(stmt.text)
            except psycopg.Error as exc:
                record.duration_ms = (time.perf_counter() - started) * 1000
                record.sqlstate = exc.sqlstate
                record.error = (exc.diag.message_primary or str(exc)).strip()
                cur.execute(f"ROLLBACK TO SAVEPOINT lint_trace_{n}")
                continue
            record.duration_ms = (time.perf_counter() - started) * 1000
            cur.execute(SCANS, (tables,))
            for oid, count in cur.fetchall():
                if oid in current and count > scans_before.get(oid, count):
                    record.scanned.append(current[oid][0])
            cur.execute(LOCKS)
            locks = {(oid, mode) for oid, _, mode in cur.fetchall() if oid in before}
            strongest: dict[int, str] = {}
            for oid, mode in locks - held:  # one line per relation: its strongest new lock
                name = LOCK_NAMES.get(mode, mode)
                if oid not in strongest or LOCK_ORDER.index(name) > LOCK_ORDER.index(strongest[oid]):
                    strongest[oid] = name
            for oid, name in sorted(strongest.items(), key=lambda x: (-LOCK_ORDER.index(x[1]), before[x[0]][0])):
                record.locks.append(f"{name} on {before[oid][0]}")
            held |= locks
            after = _relations(cur)
            for oid, (name, kind, node) in before.items():
                if oid not in current:
                    continue
                if oid not in after:
                    if kind == "i":  # ALTER TYPE rebuilds an index as a new relation
                        record.indexes_rebuilt.append(name)
                    continue
                if after[oid][2] != current[oid][2]:
                    (record.indexes_rebuilt if kind == "i" else record.rewritten).append(name)
            current = {oid: after[oid] for oid in current if oid in after}
            cur.execute(f"RELEASE SAVEPOINT lint_trace_{n}")
    conn.rollback()
    conn.autocommit = True
    return records


LOCK_NAMES = {"AccessShareLock": "ACCESS SHARE", "RowShareLock": "ROW SHARE", "RowExclusiveLock": "ROW EXCLUSIVE",
              "ShareUpdateExclusiveLock": "SHARE UPDATE EXCLUSIVE", "ShareLock": "SHARE",
              "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE", "ExclusiveLock": "EXCLUSIVE",
              "AccessExclusiveLock": "ACCESS EXCLUSIVE"}


def apply_setup(conn, path: str, text: str) -> None:
    import psycopg

    conn.autocommit = True
    for stmt in parse_file(path, text).statements:
        try:
            conn.execute(stmt.text)
        except psycopg.Error as exc:
            raise LintUsageError(f"--setup {path}: line {stmt.source.position(stmt.start)[0]}: "
                                 f"{(exc.diag.message_primary or str(exc)).strip()}") from None


def merge(findings: list[Finding], records: list[TracedStatement], texts: dict[str, str]) -> list[Finding]:
    """Confirm, drop or add findings from what the database did."""
    by_stmt = {(r.file, r.start): r for r in records}
    out: list[Finding] = []
    covered: set[tuple[str, int]] = set()
    starts: dict[tuple[str, int], int] = {}
    for path in {r.file for r in records}:
        for stmt in parse_file(path, texts[path]).statements:
            starts[(path, stmt.start)] = stmt.end
    for f in findings:
        record = next((r for (file, start), r in by_stmt.items()
                       if file == f.file and start <= f.start <= starts.get((file, start), start)), None)
        if record is not None:
            covered.add((record.file, record.start))
            if f.rule in REWRITE_RULES and record.sqlstate is None:
                if not record.rewritten:
                    continue  # the database proved there is no rewrite: a static false positive
                f.message += f" Trace: rewrote {', '.join(record.rewritten)} ({record.duration_ms:.1f} ms here)."
            elif f.rule in SCAN_RULES and record.sqlstate is None and record.skipped is None:
                if not record.scanned:
                    continue  # no scan of any existing table: e.g. a valid CHECK proved NOT NULL
                f.message += f" Trace: scanned {', '.join(record.scanned)} ({record.duration_ms:.1f} ms here)."
            if record.locks:
                f.lock = "; ".join(record.locks) + " (traced)"
        out.append(f)
    for r in records:
        stmt_end = starts.get((r.file, r.start), r.start)
        if r.sqlstate == "25001" and any(f.rule == "ban-concurrent-index-creation-in-transaction" and f.file == r.file
                                         and r.start <= f.start <= stmt_end for f in out):
            continue
        if r.sqlstate:
            out.append(_finding(r, "trace-failed", f"Trace: the statement failed with SQLSTATE {r.sqlstate}: {r.error}.",
                                "25001: move it out of the transaction (see --plan). 42P01/42703: give --setup "
                                "the schema this migration expects."))
        elif r.rewritten and not any(f.rule in REWRITE_RULES | {"table-rewrite"} and r.start <= f.start <= starts[(r.file, r.start)]
                                     and f.file == r.file for f in out):
            out.append(_finding(r, "table-rewrite", f"Trace: this statement rewrote {', '.join(r.rewritten)} "
                                "under ACCESS EXCLUSIVE (new relfilenode), which no static rule predicted.",
                                "Rewrite-free alternative: new column/table filled in batches.",
                                "; ".join(r.locks) or None))
    out.sort(key=lambda f: (f.file, f.start))
    return out


def _finding(r: TracedStatement, rule: str, message: str, help_: str, lock: str | None = None) -> Finding:
    lines = r.statement.splitlines() or [""]
    end_line = r.line + len(lines) - 1
    end_col = len(lines[-1]) + 1
    return Finding(r.file, r.line, 1, end_line, end_col, rule, "error", message, help_, lock, r.statement,
                   r.start, r.start + len(r.statement), r.line)


def format_trace(records: list[TracedStatement], where: str) -> str:
    out = [f"trace on {where} (one transaction, rolled back):"]
    for r in records:
        first = r.statement.splitlines()[0][:60] if r.statement else ""
        what = r.skipped if r.skipped else f"FAILED {r.sqlstate}: {r.error}" if r.sqlstate else \
            "; ".join(filter(None, ["; ".join(r.locks) or "no new lock on existing relations",
                                    f"REWRITE {', '.join(r.rewritten)}" if r.rewritten else "",
                                    f"scanned {', '.join(r.scanned)}" if r.scanned else "",
                                    f"indexes rebuilt: {', '.join(r.indexes_rebuilt)}" if r.indexes_rebuilt else ""]))
        out.append(f"  {r.file}:{r.line}  {r.duration_ms:7.1f} ms  {first}")
        out.append(f"      {what}")
    return "\n".join(out)


def _read_setups(setups: list[str]) -> dict[str, str]:
    setup_texts = {}
    for path in setups:
        try:
            with open(path, encoding="utf-8") as fh:
                setup_texts[path] = fh.read()
        except OSError as exc:
            raise LintUsageError(f"--setup {path}: cannot read: {exc.strerror}") from None
    return setup_texts


def _trace_on(conn, files, texts, setup_texts, config) -> list[TracedStatement]:
    records: list[TracedStatement] = []
    for path, text in setup_texts.items():
        apply_setup(conn, path, text)
    for path in files:
        records.extend(trace_source(conn, parse_file(path, texts[path]), config))
    return records


def _report(records, where: str, fmt: str, findings, texts) -> list[Finding]:
    if fmt == "text":
        print(format_trace(records, where), file=sys.stdout)
        print(file=sys.stdout)
    merged = merge(findings, records, texts)
    if fmt == "json":
        by_stmt = {(r.file, r.start): r for r in records}
        for f in merged:
            for (file, start), r in by_stmt.items():
                if file == f.file and start <= f.start <= start + len(r.statement):
                    f.trace = r.as_json()  # type: ignore[attr-defined]
    return merged


def describe_server(database_url: str | None) -> str:
    """Where a --database-url / PG* trace connects, without any password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(database_url or "")
    except Exception as exc:  # noqa: BLE001 - psycopg's ProgrammingError: a malformed URL
        raise LintUsageError(f"--database-url: not a PostgreSQL connection string ({exc})") from None
    host = info.get("host") or os.environ.get("PGHOST") or "localhost"
    port = info.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = info.get("dbname") or os.environ.get("PGDATABASE") or info.get("user") or os.environ.get("PGUSER") or "?"
    return f"{host}:{port}/{dbname}"


def trace_database(database_url: str | None, files: list[str], texts: dict[str, str], findings: list[Finding],
                   setups: list[str], fmt: str, config) -> list[Finding]:
    """Trace on a PostgreSQL the user points at: ``database_url`` (libpq URL or key=value string),
    with libpq's PG* variables filling in what it leaves out (all of it when it is None).

    Everything runs in one transaction that is rolled back (--setup files excepted: they are
    committed), but the locks are real while it runs: point it at a scratch copy."""
    import psycopg

    setup_texts = _read_setups(setups)
    where = describe_server(database_url)
    print(f"lint --trace on {where}: one transaction, rolled back; its locks are real while it runs "
          "(use a scratch copy)", file=sys.stderr)
    try:
        conn = psycopg.connect(database_url or "", autocommit=True, connect_timeout=10, client_encoding="UTF8")
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceFailed(f"--trace could not connect to {where}: {detail}") from None
    with conn:
        records = _trace_on(conn, files, texts, setup_texts, config)
    return _report(records, where, fmt, findings, texts)


def trace_files(options, service: str, files: list[str], texts: dict[str, str], findings: list[Finding],
                setups: list[str], fmt: str, config, from_snapshot: str | None = None) -> list[Finding]:
    """Trace every file on one throwaway container of ``service``'s image; merge into ``findings``."""
    import psycopg

    from compose_atomic.config import did_you_mean
    from compose_atomic.project import load_project

    project = load_project(options)
    if service not in project.services:
        raise LintUsageError(f"--service {service!r}: no such service in project {project.name!r}."
                             + did_you_mean(service, list(project.services)))
    image = project.services[service].get("image")
    if not image:
        raise LintUsageError(f"--service {service!r} has no image: --trace runs the database service's image "
                             "(build it first and set image:)")
    setup_texts = _read_setups(setups)
    snapshot = _find_snapshot(project, service, from_snapshot) if from_snapshot else None
    with ThrowawayPostgres(image, project.name or "compose-atomic") as pg:
        if snapshot is not None:
            pg.restore(snapshot)
        with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
            records = _trace_on(conn, files, texts, setup_texts, config)
    return _report(records, image, fmt, findings, texts)
