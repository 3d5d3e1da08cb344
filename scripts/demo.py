"""The demo behind scripts/demo: a real app deployed and rolled out under load.

examples/django-notes (Django under gunicorn, PostgreSQL, the managed Caddy proxy) is
deployed as release 1; release 2 (a Django migration, examples/django-notes/releases/2) is
rolled out under load, then a broken release 3 that must be rolled back. The load reads,
writes (every POST the app acknowledges is recorded with its key and id) and keeps long
requests in flight. At the end every acknowledged write is looked up in the database.

Every command it runs is printed first (to stderr), so a newcomer can repeat any step by
hand; the report goes to stdout (`--json` for the data). Exit 0 only when no request failed,
no acknowledged write is missing and each release ended as expected.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "django-notes"
PROJECT = "django-notes-demo"
TIMEOUT = 900  # seconds, for any one command
# The images scripts/testbed.sh builds (it exports IMAGE_POSTGRES, IMAGE_CADDY, IMAGE_DJANGO),
# handed to the example's compose variables.
IMAGES = {
    "POSTGRES_IMAGE": os.environ.get("IMAGE_POSTGRES", "compose-atomic-testbed/postgres:17"),
    "CADDY_IMAGE": os.environ.get("IMAGE_CADDY", "compose-atomic-testbed/caddy:2.11"),
    "APP_BASE_IMAGE": os.environ.get("IMAGE_DJANGO", "compose-atomic-testbed/django:3.2"),
}
PSQL = ["exec", "-T", "db", "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-U", "app", "-d", "app", "-c"]


def say(text: str) -> None:
    print(f"\n==> {text}", file=sys.stderr, flush=True)


def run(argv: list[str], env: dict, cwd: Path, check: bool = True, quiet: bool = False) -> int:
    print("$ " + " ".join(argv), file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL if quiet else sys.stderr,
                              stderr=subprocess.DEVNULL if quiet else None, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"demo: `{' '.join(argv)}` did not finish in {TIMEOUT} s") from None
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(argv)}` failed with exit code {proc.returncode}")
    return proc.returncode


def capture(argv: list[str], env: dict, cwd: Path) -> str:
    print("$ " + " ".join(argv), file=sys.stderr, flush=True)
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(argv)}` failed with exit code {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_releases(env: dict, workdir: Path) -> dict[str, str]:
    """django-notes:1 from app/, django-notes:2 from app/ with releases/2 laid over it (the
    model's new column and its migration); release 3 is release 2's code started with
    APP_BROKEN=1, a release whose health check fails."""
    v2 = workdir / "build-v2"
    shutil.copytree(workdir / "app", v2)
    shutil.copytree(workdir / "releases" / "2", v2, dirs_exist_ok=True)
    tags = {}
    for version, context in (("1", workdir / "app"), ("2", v2), ("3", v2)):
        tags[version] = f"django-notes:{version}"
        run(["docker", "build", "-q", "-t", tags[version], "--build-arg", f"BASE={env['APP_BASE_IMAGE']}",
             str(context)], env, workdir, quiet=True)
    return tags


def acknowledged(path: Path) -> list[tuple[str, int]]:
    """The writes the app confirmed: (key, id) from loadgen's --acked file."""
    acks = []
    if not path.exists():  # the load generator did not finish: nothing to count (the verdict says so)
        return acks
    for line in path.read_text().splitlines():
        key, _, ident = line.partition(" ")
        acks.append((key, int(ident) if ident.isdigit() else -1))
    return acks


def count_rows(cli: list[str], env: dict, workdir: Path, acks: list[tuple[str, int]]) -> dict:
    """Each acknowledged write looked up in the database by its id and its key (the body the
    load generator sent, `note=<key>`): present only when both match."""
    out = capture([*cli, *PSQL, "SELECT id, body FROM notes_note"], env, workdir)
    rows = {}
    for line in out.splitlines():
        ident, _, body = line.partition("|")
        if ident.isdigit():
            rows[int(ident)] = body
    lost = [f"{key} (id {ident})" for key, ident in acks if rows.get(ident) != f"note={key}"]
    return {"acknowledged": len(acks), "present": len(acks) - len(lost), "lost": len(lost),
            "lost_examples": lost[:10], "rows_in_table": len(rows)}


def _describe_backup(listing) -> str:
    if not isinstance(listing, dict):
        return str(listing)
    name = listing.get("file") or listing.get("name") or listing.get("path")
    details = ", ".join(f"{k} {listing[k]}" for k in ("size", "verified", "created", "time") if k in listing)
    return f"{name} ({details})" if details else str(name or listing)


def verdict(report: dict, quick: bool) -> list[str]:
    """What went wrong, if anything (an empty list: the demo succeeded)."""
    load, rows = report.get("load") or {}, report.get("rows") or {}
    problems = []
    if report.get("deploy_v1") != 0:
        problems.append(f"release 1 deploy exited {report.get('deploy_v1')}")
    if report.get("deploy_v2") != 0:
        problems.append(f"release 2 rollout exited {report.get('deploy_v2')}")
    if not quick and report.get("deploy_v3") != 3:
        problems.append(f"broken release 3 exited {report.get('deploy_v3')}, not 3 (rolled back)")
    if load.get("failed") != 0:
        problems.append(f"{load.get('failed')} requests failed: {load.get('failures')}")
    if not load.get("requests"):
        problems.append("no request was served")
    if load.get("long_completed", 0) == 0:
        problems.append("no long request completed")
    if load.get("last_version") != "2":
        problems.append(f"release {load.get('last_version')!r} serves at the end, not 2")
    if rows.get("lost") != 0 or not rows.get("acknowledged"):
        problems.append(f"writes: {rows.get('acknowledged')} acknowledged, {rows.get('lost')} lost "
                        f"{rows.get('lost_examples') or ''}")
    if "0002_note_tag" not in report.get("migrations", []):
        problems.append("release 2's migration 0002_note_tag is not recorded in django_migrations")
    if not quick and (report.get("backup") != 0 or not report.get("newest_backup")):
        problems.append(f"backup now exited {report.get('backup')}")
    return problems


def print_report(report: dict, keep: bool) -> None:
    load, rows = report.get("load") or {}, report.get("rows") or {}
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(load.get("by_kind", {}).items()))
    lines = [
        "compose-atomic demo: examples/django-notes (Django 3.2 + gunicorn, PostgreSQL 17, Caddy 2.11)",
        f"  requests: {load.get('requests', 0)}, failed: {load.get('failed', '?')} ({kinds})"
        + (f" {load.get('failures')}" if load.get("failures") else ""),
        f"  writes: {rows.get('acknowledged', '?')} acknowledged, {rows.get('present', '?')} present, "
        f"{rows.get('lost', '?')} lost" + (f" {rows.get('lost_examples')}" if rows.get("lost") else ""),
        f"  long requests: {load.get('long_completed', 0)} completed, {load.get('long_failed', 0)} failed",
        f"  latency (short requests): p50 {load.get('p50_ms')} ms, p99 {load.get('p99_ms')} ms, "
        f"max {load.get('max_short_ms')} ms",
        f"  versions that served: {load.get('versions')}; serving at the end: {load.get('last_version')}",
        f"  release 1 deploy: exit {report.get('deploy_v1')}",
        f"  release 2 rollout (migration 0002_note_tag): exit {report.get('deploy_v2')}; "
        f"migrations applied: {', '.join(report.get('migrations', [])) or '?'}",
    ]
    if "deploy_v3" in report:
        lines.append(f"  release 3 (broken) rollout: exit {report.get('deploy_v3')} (3 = rolled back, release 2 kept)")
    if "backup" in report:
        lines.append(f"  newest verified backup: {_describe_backup(report.get('newest_backup'))}")
    if keep:
        lines.append(f"  left running: the demo stack (--keep) at {report['url']}, from {report['workdir']} "
                     f"(remove it there with `compose-atomic -p {report['project']} down -v`, or run the demo again)")
    else:
        lines.append("  left running: nothing")
    problems = report["problems"]
    lines.append("DEMO OK" if not problems else "DEMO FAILED: " + "; ".join(problems))
    print("\n".join(lines), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="compose-atomic demo")
    parser.add_argument("--keep", action="store_true", help="leave the demo stack running")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--project", default=PROJECT, help=f"the Compose project name (default {PROJECT})")
    parser.add_argument("--quick", action="store_true",
                        help="the core path only, briefly: release 1, release 2 under load, the row count "
                             "(no broken release, no backup; what the test runs)")
    args = parser.parse_args()
    settle = 1.0 if args.quick else 3.0

    workdir = Path(tempfile.mkdtemp(prefix="compose-atomic-demo-"))
    shutil.copytree(EXAMPLE, workdir, dirs_exist_ok=True)
    (workdir / "secrets" / "db_password").write_text(os.urandom(12).hex() + "\n")
    (workdir / "secrets" / "db_password").chmod(0o600)
    port = free_port()
    env = {**os.environ, **IMAGES, "HTTP_PORT": f"127.0.0.1:{port}", "NO_COLOR": "1"}
    base = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "compose_atomic", "-p", args.project]
    report: dict = {"project": args.project, "url": f"{base}/notes", "workdir": str(workdir)}
    release = {}  # the environment of the release that serves (the last good one)
    try:
        say("Building the example app: release 1, release 2 (a Django migration), a broken release 3")
        tags = build_releases(env, workdir)
        release = {**env, "APP_IMAGE": tags["1"], "APP_VERSION": "1"}

        say("Removing what an earlier demo left (a --keep run)")
        run([*cli, "down", "-v", "-t", "1", "--remove-orphans"], release, workdir, check=False, quiet=True)

        if not args.quick:
            say("Backups: generating the sidecar that takes verified, rotated backups of db")
            run([*cli, "-f", "compose.yaml", "backup", "generate", "-o", "compose.backup.yml"], release, workdir)
            env["COMPOSE_FILE"] = release["COMPOSE_FILE"] = "compose.yaml:compose.backup.yml"

        say("Release 1: first deploy (PostgreSQL, manage.py migrate, gunicorn behind the Caddy proxy)")
        report["deploy_v1"] = run([*cli, "up", "-d"], release, workdir)

        clients = ("2", "2", "1") if args.quick else ("3", "3", "2")
        say(f"Load: {clients[0]} clients reading and {clients[1]} writing (POST /notes, every acknowledged "
            f"id recorded) at 10 req/s each, {clients[2]} long request(s) always in flight, against {base}")
        acked = workdir / "acked.txt"
        load = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "loadgen.py"), "--url", f"{base}/notes", "--long-path",
             "/slow?seconds=3", "--get-clients", clients[0], "--post-clients", clients[1], "--long-clients",
             clients[2], "--rate", "10", "--timeout", "15", "--seconds", "1200", "--acked", str(acked), "--json"],
            stdout=subprocess.PIPE, text=True, env=env)
        try:
            time.sleep(settle)
            say("Release 2: snapshot, manage.py migrate (0002_note_tag), rolling out under load")
            v2 = {**env, "APP_IMAGE": tags["2"], "APP_VERSION": "2"}
            report["deploy_v2"] = run([*cli, "up", "-d"], v2, workdir, check=False)
            if report["deploy_v2"] == 0:
                release = v2
            time.sleep(settle)
            if not args.quick:
                say("Release 3: a broken release (its health check answers 500); expect a rollback (exit 3)")
                report["deploy_v3"] = run([*cli, "up", "-d"], {**env, "APP_IMAGE": tags["3"], "APP_VERSION": "3",
                                                               "APP_BROKEN": "1"}, workdir, check=False)
                time.sleep(settle)
        finally:
            load.terminate()
            report["load"] = json.loads(load.communicate(timeout=60)[0] or "{}")

        say("Counting rows: every write the app acknowledged must be in the database")
        report["rows"] = count_rows(cli, release, workdir, acknowledged(acked))
        report["migrations"] = capture(
            [*cli, *PSQL, "SELECT name FROM django_migrations WHERE app = 'notes' ORDER BY id"],
            release, workdir).split()

        if not args.quick:
            say("Backup: one verified backup of the database now")
            report["backup"] = run([*cli, "backup", "now"], release, workdir, check=False)
            listing = subprocess.run([*cli, "backup", "list", "--json"], env=release, cwd=workdir,
                                     capture_output=True, text=True, timeout=TIMEOUT)
            try:
                backups = json.loads(listing.stdout).get("backups") or []
                report["newest_backup"] = backups[-1] if backups else None
            except json.JSONDecodeError:
                report["newest_backup"] = None
    finally:
        if not args.keep:
            say("Cleaning up: removing the demo stack and its volumes")
            run([*cli, "down", "-v", "-t", "1", "--remove-orphans"], release or env, workdir, check=False, quiet=True)
            shutil.rmtree(workdir, ignore_errors=True)

    report["problems"] = verdict(report, args.quick)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, args.keep)
    return 0 if not report["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
