"""``compose-atomic status``: what serves, how healthy, what the last deploy did, what is at risk.

One pass over the engine for the whole project, while ``docker compose config`` resolves it:
``docker ps -aq`` of the project, one container ``inspect`` of all of them, one image
``inspect`` of every image they run. Docker's data root is read from the storage driver's
paths in that inspect (``docker info`` only when no container shows them). Everything else comes
from the state directory: the deploy history and journal, the proxy's saved configuration.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import docker
from ..project import ComposeOptions, Project, discover_files, load_project
from . import state
from .disk import docker_root_dir, docker_root_space, human, root_from_layers, statvfs

BACKUP_FOR = "com.compose-atomic.backup.for"
BACKUP_ROLE = "com.compose-atomic.backup.role"
PROXY_ROLE = "dev.compose-atomic.proxy-role"
_BACKUP_AGE = re.compile(r"newest verified backup is (\d+)s old")
#: A volume below this share of free space is reported as a problem.
LOW_FREE_SHARE = 0.10


def _parse_time(value: str | None) -> float | None:
    """Docker's RFC 3339 timestamps (nanoseconds, Z) as epoch seconds."""
    if not value or value.startswith("0001-"):
        return None
    try:
        head = value[:19]
        stamp = dt.datetime.fromisoformat(head).replace(tzinfo=dt.timezone.utc).timestamp()
    except ValueError:
        return None
    offset = re.search(r"([+-])(\d\d):(\d\d)$", value)
    if offset:
        sign = 1 if offset.group(1) == "+" else -1
        stamp -= sign * (int(offset.group(2)) * 3600 + int(offset.group(3)) * 60)
    return stamp


def ago(seconds: float | None) -> str:
    """``42s``, ``5m07s``, ``3h05m``, ``2d04h``."""
    if seconds is None:
        return "?"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _desired(svc: dict[str, Any]) -> int:
    replicas = (svc.get("deploy") or {}).get("replicas")
    if replicas is None:
        replicas = svc.get("scale", 1)
    try:
        return int(replicas)
    except (TypeError, ValueError):
        return 1


def _health(containers: list[dict[str, Any]]) -> str:
    running = [c for c in containers if c["State"]["Status"] == "running"]
    if not running:
        return "stopped" if containers else "missing"
    states = {(c["State"].get("Health") or {}).get("Status") or "running" for c in running}
    for worst in ("unhealthy", "starting", "healthy"):
        if worst in states:
            return worst
    return "running"


def _unbounded_logs(info: dict[str, Any]) -> bool:
    log = (info.get("HostConfig") or {}).get("LogConfig") or {}
    return log.get("Type", "json-file") == "json-file" and not (log.get("Config") or {}).get("max-size")


def _dial_targets(info: dict[str, Any]) -> set[str]:
    found = {docker.name_of(info)}
    for net in ((info.get("NetworkSettings") or {}).get("Networks") or {}).values():
        if net.get("IPAddress"):
            found.add(net["IPAddress"])
        found.update(net.get("Aliases") or [])
    return found


@dataclass
class EngineView:
    """What the engine says about a project: its containers and their images, and the data root."""

    containers: list[dict[str, Any]]
    images: dict[str, dict[str, Any]]
    root_dir: str | None = None


def engine_view(name: str) -> EngineView:
    """Three calls, whatever the project's size: ps, one container inspect, one image inspect."""
    ids = docker.run(docker.list_project(name)).stdout.split()
    infos = docker.inspect(*ids)
    image_ids = sorted({c["Image"] for c in infos if c.get("Image")})
    images = {i["Id"]: i for i in (docker.run(docker.inspect_images(*image_ids)).json([]) if image_ids else [])}
    return EngineView(infos, images)


def guess_project_name(options: ComposeOptions, environ: dict[str, str] | None = None) -> str | None:
    """The name Compose will give the project, guessed without running it (None: cannot tell).

    Only to ask the engine while ``docker compose config`` runs; its answer decides.
    """
    env = os.environ if environ is None else environ
    if options.project_name or env.get("COMPOSE_PROJECT_NAME"):
        return options.project_name or env["COMPOSE_PROJECT_NAME"]
    files = discover_files(options, env)
    if not files:
        return None
    try:
        import yaml

        named = (yaml.safe_load(files[0].read_text()) or {}).get("name")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None
    if isinstance(named, str) and "$" not in named:
        return named
    directory = Path(options.project_directory) if options.project_directory else files[0].parent
    return re.sub(r"[^a-z0-9_-]", "", directory.resolve().name.lower()).lstrip("_-") or None


def gather(options: ComposeOptions) -> tuple[Project, EngineView]:
    """Load the project and read the engine at the same time (``docker compose config`` is the slow one)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        loading = pool.submit(load_project, options)
        guess = guess_project_name(options)
        early = pool.submit(engine_view, guess) if guess else None
        project = loading.result()
        view = early.result() if early is not None and guess == project.name else engine_view(project.name)
    view.root_dir = root_from_layers(view.containers) or docker_root_dir()
    return project, view


def collect(project: Project, only: str | None = None, view: EngineView | None = None) -> dict[str, Any]:
    """The status as data (what ``--json`` prints)."""
    now = time.time()
    if view is None:
        view = engine_view(project.name)
        view.root_dir = root_from_layers(view.containers) or docker_root_dir()
    infos, images, root_dir = view.containers, view.images, view.root_dir

    history = state.history(project)
    routes = state.proxy_routes(project)
    maintenance = state.proxy_maintenance(project)
    by_service: dict[str, list[dict[str, Any]]] = {}
    sidecars: dict[str, dict[str, Any]] = {}
    proxies: list[dict[str, Any]] = []
    for info in infos:
        labels = info["Config"].get("Labels") or {}
        if labels.get(BACKUP_ROLE) == "dump" and labels.get(BACKUP_FOR):
            sidecars[labels[BACKUP_FOR]] = info
        if labels.get(PROXY_ROLE):
            proxies.append({"name": docker.name_of(info), "role": labels[PROXY_ROLE], "state": info["State"]["Status"]})
            continue
        if labels.get(docker.LABEL_ONEOFF) == "True" or docker.LABEL_HASH not in labels:
            continue
        by_service.setdefault(labels.get(docker.LABEL_SERVICE, ""), []).append(info)

    problems: list[str] = []
    services = []
    for name, svc in project.services.items():
        if only and name != only:
            continue
        entry = _service(project, name, svc, by_service.get(name, []), images, history, routes, now, problems)
        if entry["route"] is not None:
            entry["route"]["maintenance"] = maintenance.get(name)
            if maintenance.get(name) is not None:
                problems.append(f"{name} is in maintenance (the proxy answers 503); "
                                f"`compose-atomic maintenance off {name}` serves it again")
        services.append(entry)

    from .prune import left_behind

    left = sorted(docker.name_of(c) for c in left_behind(history, infos))
    if left and not only:
        problems.append(f"stopped containers left by deploys: {', '.join(left)}; `compose-atomic prune` removes them")
    unbounded = [s["service"] for s in services if s["logs_unbounded"] and s["containers"]]
    if unbounded:
        problems.append(f"logs unbounded for {', '.join(unbounded)} (json-file without max-size grows until the "
                        "disk is full): set logging.options max-size and max-file")
    if project.x_atomic.get("proxy") is not None and not only:
        serving = {p["role"] for p in proxies if p["state"] == "running"}
        missing = [role for role in ("edge", "switch") if role not in serving]
        if missing and (proxies or routes is not None):
            problems.append(f"the proxy's {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not running; "
                            "`compose-atomic up` starts it again")
    backups = [] if only else _backups(project, sidecars, now, problems)
    disk = [] if only else _disk(project, root_dir, problems)
    snapshots = [] if only else _snapshots(project, now)
    if not only:
        _reconcile(project, problems)
    return {"project": project.name, "time": dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="seconds"),
            "services": services, "proxy": sorted(proxies, key=lambda p: p["role"]), "backups": backups, "snapshots": snapshots, "disk": disk, "problems": problems}


def _service(project: Project, name: str, svc: dict[str, Any], containers: list[dict[str, Any]],
             images: dict[str, dict[str, Any]], history: list[dict[str, Any]], routes: dict[str, list[str]] | None,
             now: float, problems: list[str]) -> dict[str, Any]:
    containers = sorted(containers, key=lambda c: int(c["Config"]["Labels"].get(docker.LABEL_NUMBER, "0") or 0))
    running = [c for c in containers if c["State"]["Status"] == "running"]
    serving = running or containers
    image_id = serving[0]["Image"] if serving else None
    image = images.get(image_id or "", {})
    digests = image.get("RepoDigests") or []
    started = [t for t in (_parse_time(c["State"].get("StartedAt")) for c in running) if t]
    annotation = project.service_x_atomic(name)
    route = annotation.get("route")
    entry: dict[str, Any] = {
        "service": name,
        "image": svc.get("image") or f"{project.name}-{name}",
        "image_id": image_id,
        "digest": digests[0].split("@", 1)[1] if digests else None,
        "health": _health(containers),
        "replicas": {"running": len(running), "desired": _desired(svc)},
        "since": dt.datetime.fromtimestamp(min(started), dt.timezone.utc).isoformat(timespec="seconds") if started else None,
        "since_seconds": round(now - min(started)) if started else None,
        "containers": [{"name": docker.name_of(c), "state": c["State"]["Status"],
                        "health": (c["State"].get("Health") or {}).get("Status"),
                        "image_id": c.get("Image")} for c in containers],
        "atomic": bool(annotation),
        "route": None, "last_deploy": None,
        "logs_unbounded": any(_unbounded_logs(c) for c in containers),
    }
    if len({c.get("Image") for c in running}) > 1:
        problems.append(f"{name}: its running containers run different images (an interrupted deploy?)")
    if entry["health"] in ("unhealthy", "stopped", "missing") and (svc.get("deploy") or {}).get("replicas") != 0:
        problems.append(f"{name}: {entry['health']}" + ("; `compose-atomic up` recreates it" if annotation else ""))
    elif entry["replicas"]["running"] < entry["replicas"]["desired"]:
        problems.append(f"{name}: {entry['replicas']['running']} of {entry['replicas']['desired']} replicas running")
    if route:
        hosts = route.get("host") or []
        dials = (routes or {}).get(name)
        targets = set().union(*(_dial_targets(c) for c in running)) if running else set()
        stale = [d for d in dials or [] if d.rsplit(":", 1)[0] not in targets]
        entry["route"] = {"hosts": [hosts] if isinstance(hosts, str) else list(hosts), "path": route.get("path"),
                          "port": route.get("port"), "proxy_dials": dials, "stale_dials": stale}
        if routes is None and project.x_atomic.get("proxy") is not None:
            problems.append(f"{name}: the proxy has no saved configuration yet; `compose-atomic up` creates it")
        elif dials and len(stale) == len(dials):
            problems.append(f"{name}: the proxy dials {', '.join(stale)}, none of which is a running container "
                            "of the service; `compose-atomic up` points it at the running ones")
    for record in reversed(history):
        if record.get("service") == name:
            entry["last_deploy"] = {k: record.get(k) for k in ("time", "outcome", "reason", "seconds",
                                                                 "new_image_id", "old_image_id", "strategy")}
            if record.get("receipt") is not None:
                entry["last_deploy"]["receipt"] = record["receipt"]
            break
    return entry


def _backups(project: Project, sidecars: dict[str, dict[str, Any]], now: float,
             problems: list[str]) -> list[dict[str, Any]]:
    found = []
    for name in project.services:
        backup = project.service_x_atomic(name).get("backup")
        if not backup:
            continue
        record: dict[str, Any] = {"database": name, "schedule": backup.get("schedule") if isinstance(backup, dict) else None,
                                  "sidecar": None, "newest_age_seconds": None, "max_age_seconds": None,
                                  "ok": None, "message": ""}
        info = sidecars.get(name)
        if info is None:
            record["message"] = ("no backup sidecar is running; see docs/backups.md "
                                 "(`compose-atomic backup generate`), then `compose-atomic backup list`")
            problems.append(f"{name}: backups are configured but no backup sidecar runs")
            found.append(record)
            continue
        record["sidecar"] = docker.name_of(info)
        env = dict(e.split("=", 1) for e in info["Config"].get("Env") or [] if "=" in e)
        record["schedule"] = env.get("BACKUP_SCHEDULE") or record["schedule"]
        if env.get("BACKUP_MAX_AGE", "").isdigit():
            record["max_age_seconds"] = int(env["BACKUP_MAX_AGE"])
        health = info["State"].get("Health") or {}
        log = (health.get("Log") or [])[-1:] or [{}]
        output = (log[0].get("Output") or "").strip()
        checked = _parse_time(log[0].get("End"))
        match = _BACKUP_AGE.search(output)
        if match and checked:
            record["newest_age_seconds"] = int(match.group(1)) + max(0, round(now - checked))
        record["ok"] = health.get("Status") == "healthy" if health else None
        record["message"] = output or "the sidecar's health check has not run yet; `compose-atomic backup list` reads the manifest"
        if record["ok"] is False:
            problems.append(f"{name}: backup sidecar is {health.get('Status')}: {output}")
        found.append(record)
    return found


def _snapshots(project: Project, now: float) -> list[dict[str, Any]]:
    """Per database that migrations snapshot: how many snapshots, their size, the newest (local files only)."""
    from ..statedir import list_snapshots

    databases = sorted({(project.service_x_atomic(s).get("migrate") or {}).get("database")
                        for s in project.services} - {None})
    directory = state.snapshot_dir(project)
    found = []
    for database in databases:
        snaps = list_snapshots(directory, database) if directory.is_dir() else []
        newest = snaps[-1] if snaps else None
        created = _parse_time(newest.manifest.get("created")) if newest else None
        found.append({"database": database, "count": len(snaps),
                      "bytes": sum(int(x.manifest.get("size") or 0) for x in snaps),
                      "newest": newest.name if newest else None,
                      "newest_age_seconds": round(now - created) if created else None})
    return found


def _disk(project: Project, root_dir: str | None, problems: list[str]) -> list[dict[str, Any]]:
    places = [("docker", "Docker's data root", docker_root_space(root_dir)),
              ("state", "state directory", statvfs(project.state_dir))]
    found = []
    for key, label, space in places:
        found.append({"place": key, "label": label, **space.as_dict()})
        if space.free is not None and space.total and space.free < space.total * LOW_FREE_SHARE:
            problems.append(f"{label} {space.path}: only {human(space.free)} free of {human(space.total)}; "
                            "`compose-atomic prune --dry-run` shows what can go")
    return found


def _reconcile(project: Project, problems: list[str]) -> None:
    holder = state.lock_holder(project)
    record = state.journal(project)
    if holder:
        problems.append(f"a deploy is running ({holder})")
    elif record:
        problems.append(f"a deploy of {record.get('service')} was interrupted at step {record.get('phase')!r}; "
                        "`compose-atomic up` finishes or undoes it")


# ---- rendering ----------------------------------------------------------------------------------


SYMBOLS = {"healthy": "✔", "running": "✔", "starting": "⠿", "unhealthy": "✘", "stopped": "✘", "missing": "✘"}
COLOURS = {"healthy": "green", "running": "green", "starting": "yellow", "unhealthy": "red",
           "stopped": "red", "missing": "red", "deployed": "green", "rolled-back": "yellow",
           "failed": "red", "rollback-failed": "red"}


def _short(image_id: str | None) -> str:
    if not image_id:
        return "-"
    return image_id[7:19] if image_id.startswith("sha256:") else image_id[:12]


def render(data: dict[str, Any], colour: bool) -> str:
    import click

    def paint(text: str, key: str | None = None, fg: str | None = None, bold: bool = False) -> str:
        if not colour:
            return text
        return click.style(text, fg=fg or COLOURS.get(key or ""), bold=bold)

    def mark(key: str) -> str:
        return paint(SYMBOLS.get(key, "-"), key) if colour else ""

    out = [paint(f"project {data['project']}", bold=True) + f"  at {data['time']}"]
    width = max([len(s["service"]) for s in data["services"]] + [7])
    for s in data["services"]:
        replicas = f"{s['replicas']['running']}/{s['replicas']['desired']}"
        since = f"up {ago(s['since_seconds'])}" if s["since_seconds"] is not None else "not running"
        digest = f"@{s['digest'][:19]}" if s["digest"] else ""
        health = f"{s['health']:<10}"  # padded before it is painted: escape codes have no width
        head = (f"{(mark(s['health']) + ' ') if colour else ''}{s['service']:<{width}}  "
                f"{paint(health, s['health'])} {replicas:<5} {since:<12}  "
                f"{s['image']} ({_short(s['image_id'])}{digest})")
        out.append(head)
        pad = " " * (width + (4 if colour else 2))
        route = s.get("route")
        if route:
            where = ",".join(route["hosts"]) or "*"
            where += route["path"] or ""
            dials = route["proxy_dials"]
            shown = " ".join(dials) if dials else "(no saved proxy configuration)"
            held = route.get("maintenance")
            if held is not None:
                shown = paint("in maintenance", fg="yellow") + f" (503, Retry-After {held.get('retry_after', '?')}s); " + shown
            out.append(f"{pad}route {where} :{route['port']} -> {shown}")
        last = s.get("last_deploy")
        if last:
            took = f" in {last['seconds']}s" if last.get("seconds") is not None else ""
            reason = f": {last['reason']}" if last.get("reason") else ""
            out.append(f"{pad}last deploy {last.get('time')} {paint(str(last.get('outcome')), last.get('outcome'))}"
                       f"{took}{reason}")
            if last.get("receipt"):
                from ..deploy.receipt import summary

                out.extend(f"{pad}  receipt {line}" for line in summary(last["receipt"]))
    if data.get("proxy"):
        out.append("proxy " + ", ".join(f"{p['role']} {p['name']} {p['state']}" for p in data["proxy"]))
    for b in data["backups"]:
        age = ago(b["newest_age_seconds"]) if b["newest_age_seconds"] is not None else "?"
        limit = f" (limit {ago(b['max_age_seconds'])})" if b["max_age_seconds"] else ""
        key = "healthy" if b["ok"] else "unhealthy" if b["ok"] is False else "starting"
        line = f"backup {b['database']}: newest verified {age} ago{limit}, schedule {b['schedule'] or '?'}"
        if b["newest_age_seconds"] is None:
            line = f"backup {b['database']}: {b['message']}"
        out.append(f"{(mark(key) + ' ') if colour else ''}{line}")
    for snap in data.get("snapshots") or []:
        if snap["count"]:
            out.append(f"snapshots {snap['database']}: {snap['count']} ({human(snap['bytes'])}), newest "
                       f"{snap['newest']} {ago(snap['newest_age_seconds'])} ago")
        else:
            out.append(f"snapshots {snap['database']}: none yet (the first migration takes one)")
    for d in data["disk"]:
        free = human(d["free_bytes"]) if d["free_bytes"] is not None else d.get("note", "?")
        total = f" of {human(d['total_bytes'])}" if d.get("total_bytes") else ""
        out.append(f"disk {d['label']} {d['path']}: {free} free{total}")
    if data["problems"]:
        out.append(paint("to look at:", fg="yellow", bold=True))
        out.extend(f"  {paint('!', fg='yellow') if colour else '-'} {p}" for p in data["problems"])
    return "\n".join(out)
