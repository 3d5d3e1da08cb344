"""Run the PITR sidecar's commands from the host, through the Docker gateway.

``base`` and ``verify`` run inside the running ``<db>-pitr`` container (``compose exec``), so
they share its lock with the scheduled runs; ``restore`` runs a one-off of the same service with
the new volume mounted (``compose run --no-deps -v NAME:/restore``): production is not touched.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from .. import docker
from ..errors import BackupFailed, UsageError
from ..project import Project
from ..backup.host import choose
from .generate import ROLE, SCRIPT_PATH

RESTORE_MOUNT = "/restore"
RESTORE_LABEL = "com.compose-atomic.pitr.restore-of"
VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class PitrSidecar:
    service: str  # the database service
    name: str  # the <db>-pitr service


def sidecars(project: Project) -> list[PitrSidecar]:
    from ..backup.generate import LABEL, ROLE_LABEL

    found = []
    for name, svc in project.services.items():
        labels = svc.get("labels") or {}
        if isinstance(labels, dict) and labels.get(ROLE_LABEL) == ROLE and labels.get(LABEL):
            found.append(PitrSidecar(labels[LABEL], name))
    return found


def pick(project: Project, service: str | None) -> PitrSidecar:
    """The PITR sidecar for ``service`` (or the only one)."""
    return choose(sidecars(project), service, "PITR", hint=(
        "Add x-atomic.backup.pitr to the database service, run `compose-atomic backup generate` "
        "and `compose-atomic -f <your compose file> -f compose.backup.yml up -d`."))


def parse_time(text: str) -> dt.datetime:
    """``2026-12-01 14:03:00Z``, ``2026-12-01T14:03:00+01:00``, ...: an aware UTC datetime."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--to-time {text!r} is not a time; use ISO 8601 with a zone, "
                         'e.g. "2026-12-01 14:03:00Z" or "2026-12-01T15:03:00+01:00".') from None
    if when.tzinfo is None:
        raise UsageError(f"--to-time {text!r} has no time zone; add Z (UTC) or an offset such as +01:00.")
    return when.astimezone(dt.timezone.utc)


def restore_args(when: dt.datetime | None) -> list[str]:
    """The sidecar's restore target arguments."""
    if when is None:
        return ["latest"]
    return ["time", str(int(when.timestamp())), when.strftime("%Y-%m-%d %H:%M:%S.%f+00")]


def exec_sidecar(project: Project, sidecar: PitrSidecar, *args: str, timeout: float = 7200) -> docker.Result:
    return docker.run(project.compose("exec", "-T", sidecar.name, "sh", SCRIPT_PATH, *args, timeout=timeout))


def run_sidecar(project: Project, sidecar: PitrSidecar, *args: str, volume: str | None = None,
                timeout: float = 7200) -> docker.Result:
    mount = ["-v", f"{volume}:{RESTORE_MOUNT}"] if volume else []
    return docker.run(project.compose("run", "--rm", "-T", "--no-deps", *mount, sidecar.name, *args,
                                      timeout=timeout))


def lines(stdout: str, tag: str) -> list[list[str]]:
    return [line.split("\t")[1:] for line in stdout.splitlines() if line.startswith(tag + "\t")]


def failure(result: docker.Result) -> str:
    failed = lines(result.stdout, "FAILED")
    if failed and failed[-1]:
        return failed[-1][0]
    return result.last_line() or f"the PITR sidecar exited with status {result.returncode}"


def parse_list(stdout: str) -> dict:
    """The sidecar's ``list`` output as data: base backups, the window, statuses."""
    bases, window, status = [], None, {}
    for fields in lines(stdout, "BASE"):
        name, kind, parent, start, end, size = (fields + [""] * 6)[:6]
        bases.append({"name": name, "kind": kind, "parent": parent or None, "start": _int(start),
                      "end": _int(end), "size_kb": _int(size)})
    for fields in lines(stdout, "WINDOW"):
        window = {"from": _int(fields[0]), "to": _int(fields[1]) if len(fields) > 1 else None,
                  "wal_segments": _int(fields[2]) if len(fields) > 2 else None}
    for fields in lines(stdout, "STATUS"):
        if len(fields) >= 4:
            status[fields[0]] = {"time": _int(fields[1]), "result": fields[2], "message": fields[3],
                                 "extra": fields[4] if len(fields) > 4 else ""}
    return {"bases": bases, "window": window, "status": status}


def _int(text: str) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def new_volume(project: Project, sidecar: PitrSidecar, name: str | None) -> str:
    """Create the empty volume a restore goes into; never an existing one."""
    if name is None:
        name = f"{project.name}_{sidecar.service}-restore-{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M%S}"
    if not VOLUME_NAME.match(name):
        raise UsageError(f"--target-volume {name!r}: a volume name uses letters, digits, '_', '.' and '-'.")
    if docker.run(docker.volume_inspect(name)).ok:
        raise UsageError(f"volume {name!r} already exists; a restore only goes into a new volume.",
                         hint="Choose another --target-volume (or leave it out for a fresh name).")
    created = docker.run(docker.volume_create(name, {RESTORE_LABEL: f"{project.name}/{sidecar.service}"}))
    if not created.ok:
        raise BackupFailed(f"cannot create the volume {name!r}: {created.last_line()}")
    return name


def swap_steps(project: Project, sidecar: PitrSidecar, volume: str) -> str:
    return (f"To make it the live database (docs/backups.md, 'Swap in a restored volume'):\n"
            f"  1. compose-atomic stop {sidecar.service} {sidecar.name}\n"
            f"  2. in the compose file, mount the volume {volume} at the data directory of {sidecar.service}:\n"
            f"       volumes: {{<data volume>: {{external: true, name: {volume}}}}}\n"
            f"  3. compose-atomic up -d {sidecar.service} {sidecar.name}, then take a base backup: "
            f"compose-atomic pitr base --service {sidecar.service}\n"
            f"The old volume is left as it was; remove it yourself once you are sure.")


def check_failed(result: docker.Result) -> None:
    if not result.ok:
        raise BackupFailed(failure(result))


def fmt_epoch(epoch: int | None) -> str:
    if epoch is None:
        return "?"
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
