"""The demo behind scripts/demo: the example stack deployed and rolled out under load.

Every command it runs is printed first, so a newcomer can repeat any step by hand.
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
EXAMPLE = ROOT / "examples" / "solo-saas"
PROJECT = "solo-saas-demo"
# The images scripts/testbed.sh builds (IMAGE_POSTGRES, IMAGE_CADDY, IMAGE_BUSYBOX there).
IMAGES = {
    "POSTGRES_IMAGE": os.environ.get("IMAGE_POSTGRES", "compose-atomic-testbed/postgres:17"),
    "CADDY_IMAGE": os.environ.get("IMAGE_CADDY", "compose-atomic-testbed/caddy:2.11"),
    "APP_BASE_IMAGE": os.environ.get("IMAGE_POSTGRES", "compose-atomic-testbed/postgres:17"),
    "BUSYBOX_IMAGE": os.environ.get("IMAGE_BUSYBOX", "compose-atomic-testbed/busybox:1"),
}


def say(text: str) -> None:
    print(f"\n==> {text}", file=sys.stderr, flush=True)


def run(argv: list[str], env: dict, cwd: Path, check: bool = True, quiet: bool = False) -> int:
    print("$ " + " ".join(argv), file=sys.stderr, flush=True)
    proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL if quiet else None,
                          stderr=subprocess.DEVNULL if quiet else None)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(argv)}` failed with exit code {proc.returncode}")
    return proc.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_app(version: str, env: dict, workdir: Path) -> str:
    tag = f"solo-saas-app:{version}"
    run(["docker", "build", "-q", "-t", tag, "--build-arg", f"VERSION={version}",
         "--build-arg", f"BASE={env['APP_BASE_IMAGE']}", "--build-arg", f"BUSYBOX={env['BUSYBOX_IMAGE']}",
         str(workdir / "app")], env, workdir, quiet=True)
    return tag


def _describe_backup(listing) -> str:
    if not isinstance(listing, dict):
        return str(listing)
    name = listing.get("file") or listing.get("name") or listing.get("path")
    details = ", ".join(f"{k} {listing[k]}" for k in ("size", "verified", "created", "time") if k in listing)
    return f"{name} ({details})" if details else str(name or listing)


def main() -> int:
    parser = argparse.ArgumentParser(description="compose-atomic demo")
    parser.add_argument("--keep", action="store_true", help="leave the demo stack running")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="compose-atomic-demo-"))
    shutil.copytree(EXAMPLE, workdir, dirs_exist_ok=True)
    secrets = workdir / "secrets"
    password = os.urandom(12).hex()
    (secrets / "db_password").write_text(password + "\n")
    (secrets / "pgpass").write_text(f"db:5432:app:app:{password}\n")
    for f in secrets.iterdir():
        f.chmod(0o600)
    port = free_port()
    env = {**os.environ, **IMAGES, "HTTP_PORT": f"127.0.0.1:{port}",
           "COMPOSE_FILE": "docker-compose.yml:compose.backup.yml"}
    url = f"http://127.0.0.1:{port}/cgi-bin/version"
    cli = [sys.executable, "-m", "compose_atomic", "-p", PROJECT]
    report: dict = {"url": url, "workdir": str(workdir)}
    try:
        say("Building the example app: versions 1, 2 and a broken 3")
        for version in ("1", "2", "3"):
            build_app(version, env, workdir)

        say("Backups: generating the sidecar that takes verified, rotated backups of db")
        run([*cli, "-f", "docker-compose.yml", "backup", "generate", "-o", "compose.backup.yml"],
            {**env, "APP_IMAGE": "solo-saas-app:1"}, workdir)

        say("Version 1: first deploy of the stack (app, PostgreSQL, backup sidecar, Caddy proxy)")
        env1 = {**env, "APP_IMAGE": "solo-saas-app:1"}
        report["deploy_v1"] = run([*cli, "up", "-d"], env1, workdir)

        say(f"Load: 8 clients at 25 req/s (half POST) and 2 long requests, against {url}")
        load = subprocess.Popen([sys.executable, str(ROOT / "bench" / "loadgen.py"), "--url", url,
                                 "--seconds", "600", "--json"], stdout=subprocess.PIPE, text=True, env=env)
        time.sleep(3)

        say("Version 2: rolling out under load")
        report["deploy_v2"] = run([*cli, "up", "-d"], {**env, "APP_IMAGE": "solo-saas-app:2"}, workdir,
                                  check=False)
        time.sleep(2)

        say("Version 3: a broken release (answers 500, never healthy); expect a rollback (exit 3)")
        report["deploy_v3"] = run([*cli, "up", "-d"], {**env, "APP_IMAGE": "solo-saas-app:3",
                                                       "APP_BROKEN": "1"}, workdir, check=False)
        time.sleep(2)
        load.terminate()
        report["load"] = json.loads(load.communicate(timeout=30)[0])

        say("Backup: one verified backup of the database now")
        backup_env = {**env, "APP_IMAGE": "solo-saas-app:2"}
        report["backup"] = run([*cli, "backup", "now"], backup_env, workdir, check=False)
        listing = subprocess.run([*cli, "backup", "list", "--json"], env=backup_env, cwd=workdir,
                                 capture_output=True, text=True)
        try:
            backups = json.loads(listing.stdout).get("backups") or []
            report["newest_backup"] = backups[-1] if backups else None
        except json.JSONDecodeError:
            report["newest_backup"] = None
    finally:
        if not args.keep:
            say("Cleaning up: removing the demo stack and its volumes")
            run([*cli, "down", "-v", "-t", "1", "--remove-orphans"], {**env, "APP_IMAGE": "solo-saas-app:2"},
                workdir, check=False, quiet=True)
            shutil.rmtree(workdir, ignore_errors=True)

    load = report.get("load", {})
    ok = (report.get("deploy_v1") == 0 and report.get("deploy_v2") == 0 and report.get("deploy_v3") == 3
          and load.get("failed") == 0 and load.get("last_version") == "2" and report.get("backup") == 0
          and bool(report.get("newest_backup")))
    print(json.dumps(report, indent=2))
    print("\ncompose-atomic demo report", file=sys.stderr)
    print(f"  requests served      {load.get('requests', 0)} ({load.get('by_kind', {})})", file=sys.stderr)
    print(f"  failed requests      {load.get('failed', '?')} {load.get('failures') or ''}", file=sys.stderr)
    print(f"  long requests        {load.get('long_completed', 0)} completed, {load.get('long_failed', 0)} failed",
          file=sys.stderr)
    print(f"  latency              p99 {load.get('p99_ms')} ms, max {load.get('max_short_ms')} ms", file=sys.stderr)
    print(f"  versions that served {load.get('versions')}; serving at the end: {load.get('last_version')}",
          file=sys.stderr)
    print(f"  v2 rollout           exit {report.get('deploy_v2')}", file=sys.stderr)
    print(f"  v3 (broken) rollout  exit {report.get('deploy_v3')} (3 = rolled back, old version kept)",
          file=sys.stderr)
    newest = report.get("newest_backup")
    print(f"  newest verified backup {_describe_backup(newest)}", file=sys.stderr)
    print(f"  left running         {'the demo stack (--keep)' if args.keep else 'nothing'}", file=sys.stderr)
    print(f"\n{'DEMO OK' if ok else 'DEMO FAILED'}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
