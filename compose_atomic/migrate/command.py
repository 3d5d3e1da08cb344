"""The user's migration command, in a one-off container of the NEW image.

It runs through ``docker compose run`` on the project's resolved configuration
with the service's image replaced (passed on stdin, so no secret touches the
disk), so the container gets the service's networks, environment and volumes.
It is tagged with ``PGAPPNAME`` so its sessions are recognisable in
``pg_stat_activity``, and gets ``PGOPTIONS=-c lock_timeout=...`` unless the
service sets PGOPTIONS itself (libpq-based tools honour both).

On timeout the migration's backends are cancelled and then terminated *on the
server*, found by application name and by the container's IP addresses, before
the container is removed: killing only the client could leave a backend holding
its locks until PostgreSQL next writes to the socket.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field

import yaml

from .. import docker
from ..project import Project
from . import introspect
from .database import Database, container_ips
from ..errors import MigrationFailed, MigrationTimedOut


@dataclass
class CommandResult:
    error: MigrationFailed | None = None
    output: list[str] = field(default_factory=list)
    ended_backends: int = 0
    interrupted: bool = False


def compose_config_for(project: Project, service: str, image: str) -> dict:
    """The resolved project with ``service`` pointing at ``image`` and no build."""
    config = copy.deepcopy(project.config)
    spec = config["services"][service]
    spec["image"] = image
    spec.pop("build", None)
    spec.pop("x-atomic", None)
    return config


def run_migration_command(project: Project, db: Database, service: str, image: str,
                          command: tuple[str, ...], *, timeout: float, lock_timeout: float,
                          echo=None) -> CommandResult:
    """Run ``command``; never raises for a failed migration (see CommandResult.error)."""
    tag = uuid.uuid4().hex[:8]
    name = f"{project.name}-{service}-migrate-{tag}"
    app_name = f"compose-atomic-migrate-{tag}"
    env = [f"PGAPPNAME={app_name}"]
    service_env = project.services[service].get("environment") or {}
    if "PGOPTIONS" not in service_env:
        env.append(f"PGOPTIONS=-c lock_timeout={int(lock_timeout * 1000)}")
    run = docker.compose_oneoff(project.name, str(project.working_dir), service, command, name=name,
                                env=env, timeout=timeout)
    config_yaml = yaml.safe_dump(compose_config_for(project, service, image), sort_keys=False)
    result = CommandResult()
    tail: deque[str] = deque(maxlen=30)
    echo = echo or (lambda line: print(f"migrate | {line}", file=sys.stderr, flush=True))

    proc = docker.popen(run, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True, errors="replace")

    def pump() -> None:
        for line in proc.stdout:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            tail.append(line)
            echo(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    proc.stdin.write(config_yaml)
    proc.stdin.close()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        result.ended_backends, left = _cancel_on_server(db, name, app_name)
        docker.run(docker.remove(name))
        proc.kill()
        proc.wait()
        reader.join(timeout=5)
        result.output = list(tail)
        detail = (f"cancelled {result.ended_backends} backend(s) on the server"
                  if result.ended_backends else "no backend of it was running")
        if left:
            detail += f"; {left} could not be ended"
        result.error = MigrationTimedOut(
            f'the migration of "{service}" passed its timeout ({timeout:g}s); {detail} and '
            f"removed its container")
        return result
    except KeyboardInterrupt:
        result.ended_backends, _ = _cancel_on_server(db, name, app_name)
        docker.run(docker.remove(name))
        proc.kill()
        proc.wait()
        result.interrupted = True
        result.error = MigrationFailed(f'the migration of "{service}" was interrupted; its '
                                       f"{result.ended_backends} backend(s) were ended on the server")
        return result
    reader.join(timeout=5)
    result.output = list(tail)
    if code != 0:
        last = "\n".join(f"  {line}" for line in list(tail)[-10:])
        result.error = MigrationFailed(f'the migration command of "{service}" exited with {code}'
                                       + (f":\n{last}" if last else ""))
    return result


def _cancel_on_server(db: Database, container: str, app_name: str) -> tuple[int, int]:
    """Cancel, then terminate, the migration's backends; (ended, still alive)."""
    try:
        ips = container_ips(container)
    except Exception:  # noqa: BLE001 - the container may already be gone
        ips = []
    with db.connect(db.maintenance_db) as conn:
        pids = [r[0] for r in conn.execute(
            """SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()
               AND (application_name = %s OR host(client_addr) = ANY(%s))""",
            (app_name, ips)).fetchall()]
        left = introspect.end_sessions(conn, pids)
        held = introspect.locks_held_by(conn, pids)
    return len(pids), max(len(left), 1 if held else 0)
