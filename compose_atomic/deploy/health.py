"""The health gate a new container must pass, and the watch over it after the switch.

One clock, derived from the container's own healthcheck: the gate waits at
least ``start_period + retries x interval + timeout`` (plus a margin) so that a
slow but healthy boot is never cut short by a second, shorter timer (the
aegis-stack#714 trap), and at least ``x-atomic.health.timeout``.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .. import docker
from ..errors import HealthFailed
from ..settings import HealthSettings

NS = 1e-9


def gate_deadline(info: dict[str, Any], settings: HealthSettings) -> float:
    """Seconds the gate may wait for this container."""
    hc = info.get("Config", {}).get("Healthcheck") or {}
    if hc.get("Test") and hc["Test"][0] != "NONE":
        interval = (hc.get("Interval") or 30e9) * NS
        timeout = (hc.get("Timeout") or 30e9) * NS
        retries = hc.get("Retries") or 3
        start = (hc.get("StartPeriod") or 0) * NS
        derived = start + retries * (interval + timeout) + interval + 5
        return max(settings.timeout, derived)
    return settings.timeout


def container_ip(info: dict[str, Any]) -> str | None:
    if (info.get("HostConfig") or {}).get("NetworkMode") == "host":
        return "127.0.0.1"  # network_mode: host has no address of its own: it listens on the host's
    for net in (info.get("NetworkSettings", {}).get("Networks") or {}).values():
        if net.get("IPAddress"):
            return net["IPAddress"]
    return None


def failure_report(cid: str, info: dict[str, Any] | None) -> str:
    """The health log and the tail of the container's logs, for the user to read."""
    parts = []
    health = ((info or {}).get("State") or {}).get("Health") or {}
    log = health.get("Log") or []
    if log:
        parts.append("health log (last checks):")
        for entry in log[-3:]:
            output = " ".join((entry.get("Output") or "").split())[:200]
            parts.append(f"  exit {entry.get('ExitCode')}: {output}")
    logs = docker.run(docker.logs_tail(cid))
    tail = (logs.stdout + logs.stderr).rstrip()
    if tail:
        parts.append("container log (tail):")
        parts += [f"  {line}" for line in tail.splitlines()[-20:]]
    return "\n".join(parts)


def trouble(info: dict[str, Any] | None, restarts: int = 0) -> str | None:
    """Why a container can no longer serve, or None while it can."""
    if info is None:
        return "the container disappeared"
    state = info["State"]
    if state["Status"] in ("exited", "dead") or (state["Status"] != "running" and not state.get("Restarting")):
        return f"the container exited with code {state.get('ExitCode')}"
    if state.get("Restarting") or info.get("RestartCount", 0) > restarts:
        return f"the container crashed (exit code {state.get('ExitCode')}) and is restarting"
    if (state.get("Health") or {}).get("Status") == "unhealthy":
        return "the container turned unhealthy"
    return None


def http_probe(info: dict[str, Any], settings: HealthSettings) -> tuple[bool, str]:
    """One GET to the container over its network (the host reaches bridge networks)."""
    import httpx

    ip = container_ip(info)
    if not ip or not settings.port:
        return False, "no address to probe"
    url = f"http://{ip}:{settings.port}{settings.path}"
    try:
        response = httpx.get(url, timeout=min(5.0, max(1.0, settings.interval * 2)))
    except httpx.HTTPError as exc:
        return False, f"GET {settings.path}: {type(exc).__name__}"
    ok = response.status_code == settings.status if settings.status else 200 <= response.status_code < 400
    return ok, f"GET {settings.path}: {response.status_code}"


def wait_healthy(cid: str, settings: HealthSettings, *, custom: Callable[[], bool | None] | None = None) -> float:
    """Block until the container passes every check; raise HealthFailed at once when it cannot.

    Returns the seconds waited.
    """
    started = time.monotonic()
    info = docker.inspect_one(cid)
    deadline = started + gate_deadline(info or {}, settings)
    next_probe = 0.0
    probe_ok, probe_note = settings.path is None, ""
    while True:
        info = docker.inspect_one(cid)
        why = trouble(info)
        if why:
            raise HealthFailed(why, failure_report(cid, info))
        health = (info["State"].get("Health") or {}).get("Status")
        docker_ok = health in (None, "healthy")
        now = time.monotonic()
        if settings.path is not None and now >= next_probe:
            probe_ok, probe_note = http_probe(info, settings)
            next_probe = now + settings.interval
        if docker_ok and probe_ok:
            verdict = custom() if custom else None
            if verdict is False:
                raise HealthFailed("a check_health hook judged it unhealthy", failure_report(cid, info))
            return time.monotonic() - started
        if now >= deadline:
            waiting = "Docker health is " + (health or "none") if not docker_ok else probe_note
            raise HealthFailed(f"not healthy after {now - started:.0f}s ({waiting})", failure_report(cid, info))
        time.sleep(0.25)
