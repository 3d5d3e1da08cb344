"""Replace one service: start-first beside the old container, or stop-first.

The order of a start-first replacement, and what undoes each step:

1. ``before_deploy`` hooks (a raise stops here; nothing to undo).
2. Compose creates the new container (``up --no-start --scale N+1 --no-recreate``), so it
   carries every compose label and Compose counts it; it leaves the service's DNS aliases
   until it is healthy, then starts.                    undo: remove it
3. Health gate.                                         undo: remove it
4. Switch: one PATCH of the proxy's upstreams (or, without a proxy, the new container
   takes the service aliases and the old one gives them up).   undo: switch back
5. Monitor window; the old container keeps running, unrouted, and drains.
                                                         undo: switch back, remove new
6. Stop the old container with its stop_grace_period, remove it.   (committed)

Every step is written to the journal first, so an interrupted deploy can be
finished or undone by the next ``up`` (see :func:`reconcile`).
"""

from __future__ import annotations

import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..durations import format_duration, parse_duration
from ..errors import (ComposeAtomicError, Interrupted, OperationFailed, RollbackFailed, RolledBack)
from ..plugins import pm
from ..progress import Progress
from ..project import Project
from . import engine
from .health import HealthFailed, HealthSettings, trouble, wait_healthy
from .plan import STOP_FIRST, ServicePlan
from .state import History, Journal

DEFAULT_MONITOR = "10s"
DEFAULT_DRAIN = "30s"


class DeployFailed(OperationFailed):
    """The new version failed before it took traffic; the old one never stopped serving."""


@dataclass
class Context:
    """What every step of a service replacement needs."""

    project: Project
    progress: Progress
    journal: Journal
    history: History
    proxy: Any = None  # CaddyProxy when x-atomic.proxy is set
    networks: list[str] = field(default_factory=list)


@contextmanager
def shielded() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while cleaning up, so a second Ctrl-C cannot leave a half state."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def grace_period(project: Project, service: str) -> float:
    value = project.services[service].get("stop_grace_period")
    if value is None:
        return 10.0
    try:
        return parse_duration(str(value))
    except ValueError:
        return 10.0


def dials(info: dict[str, Any], port: int, networks: list[str]) -> list[str]:
    """Where the proxy reaches a container: its address on a network the proxy shares, then its name.

    The address first: no DNS lookup per connection (Docker's embedded DNS was seen timing out
    on a busy engine, which turned into 502s); the name second, as the fallback that follows the
    container if a restart gave it another address.
    """
    found = []
    joined = (info.get("NetworkSettings") or {}).get("Networks") or {}
    for net in networks:
        ip = (joined.get(net) or {}).get("IPAddress")
        if ip:
            found.append(f"{ip}:{port}")
            break
    found.append(f"{engine.name_of(info)}:{port}")
    return found


def compose_run(project: Project, *args: str) -> subprocess.CompletedProcess:
    cmd = [a for a in project.compose(*args) if a != "--dry-run"]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def call_hook(name: str, **kwargs: Any) -> Any:
    """Run a hook; a plugin's own exception becomes an OperationFailed naming the hook."""
    try:
        return getattr(pm.hook, name)(**kwargs)
    except ComposeAtomicError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin bug must not become a traceback
        raise OperationFailed(f"{kwargs.get('service')}: the {name} hook failed: {type(exc).__name__}: {exc}")


def quiet_hook(name: str, progress: Progress, **kwargs: Any) -> None:
    """Run a hook whose failure must not change the outcome (on_rollback, after_deploy)."""
    try:
        getattr(pm.hook, name)(**kwargs)
    except Exception as exc:  # noqa: BLE001
        progress.warn(kwargs.get("service", "deploy"), f"{name} hook failed: {type(exc).__name__}: {exc}")


# ---- aliases: the new container is reachable by service name only once healthy ----------


def service_aliases(project: Project, service: str, network_key: str) -> list[str]:
    aliases = [service]
    nets = project.services[service].get("networks") or {}
    conf = nets.get(network_key) if isinstance(nets, dict) else None
    aliases += list((conf or {}).get("aliases") or [])
    return aliases


def network_keys(project: Project) -> dict[str, str]:
    """Engine network name -> compose network key."""
    found = {}
    for key, net in (project.config.get("networks") or {}).items():
        found[(net or {}).get("name") or f"{project.name}_{key}"] = key
    return found


def set_aliases(project: Project, service: str, info: dict[str, Any], *, with_service: bool) -> None:
    """Reconnect a container to its networks with or without the service's aliases."""
    keys = network_keys(project)
    name = engine.name_of(info)
    for net, conf in (info["NetworkSettings"].get("Networks") or {}).items():
        if net not in keys:
            continue  # host, bridge, none or an external network we do not manage
        own = service_aliases(project, service, keys[net])
        current = [a for a in (conf.get("Aliases") or []) if a not in own and a != info["Id"][:12]]
        if name not in current:
            current.insert(0, name)
        wanted = current + (own if with_service else [])
        args = ["network", "connect"]
        for alias in wanted:
            args += ["--alias", alias]
        ipam = conf.get("IPAMConfig") or {}
        if ipam.get("IPv4Address"):
            args += ["--ip", ipam["IPv4Address"]]
        engine.docker("network", "disconnect", "--force", net, info["Id"])
        engine.docker(*args, net, info["Id"])


# ---- one service ------------------------------------------------------------------------


class Replacement:
    """The replacement of one service, with everything needed to undo it."""

    def __init__(self, ctx: Context, plan: ServicePlan) -> None:
        self.ctx = ctx
        self.plan = plan
        self.project = ctx.project
        self.service = plan.service
        self.annotation = ctx.project.service_x_atomic(plan.service)
        self.route = self.annotation.get("route")
        self.health = HealthSettings.from_annotation(self.annotation)
        self.old: list[dict[str, Any]] = plan.old
        self.new_ids: list[str] = []
        self.phase = "planned"
        self.started = time.monotonic()
        self.proxied = bool(ctx.proxy and self.route)

    # -- bookkeeping --

    def record(self, phase: str) -> None:
        self.phase = phase
        self.ctx.journal.write({"service": self.service, "phase": phase,
                                "old": [c["Id"] for c in self.old], "new": self.new_ids,
                                "proxied": self.proxied, "image": self.plan.image})

    def hook_args(self) -> dict[str, Any]:
        return {"project": self.project, "service": self.service,
                "old_container": engine.whale(self.old[0]["Id"] if self.old else None),
                "new_container": engine.whale(self.new_ids[0] if self.new_ids else None)}

    def finish(self, outcome: str, reason: str = "") -> None:
        new_info = engine.inspect_one(self.new_ids[0]) if self.new_ids else None
        self.ctx.history.append({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "service": self.service, "outcome": outcome,
            "reason": reason, "image": self.plan.image,
            "old_image_id": self.old[0]["Image"] if self.old else None,
            "new_image_id": (new_info or {}).get("Image") or engine.image_id(self.plan.image),
            "old_container": engine.name_of(self.old[0]) if self.old else None,
            "new_container": engine.name_of(new_info) if new_info else None,
            "strategy": self.plan.strategy, "seconds": round(time.monotonic() - self.started, 2),
        })
        self.ctx.journal.clear()

    # -- the flow --

    def run(self) -> str:
        """Replace the service; return the outcome or raise with the right exit code."""
        progress = self.ctx.progress
        if self.plan.strategy != STOP_FIRST:
            progress.event(self.service, "Replacing", f"start-first ({self.plan.reason})", state="working")
        if self.plan.needs_pull:
            self.pull()
        try:
            call_hook("before_deploy", project=self.project, service=self.service,
                      old_container=engine.whale(self.old[0]["Id"] if self.old else None),
                      new_image=self.plan.image)
        except ComposeAtomicError as exc:
            self.finish("failed", str(exc.message))
            quiet_hook("after_deploy", progress, **self.hook_args(), outcome="failed")
            raise
        try:
            if self.plan.strategy == STOP_FIRST:
                return self.stop_first()
            return self.start_first()
        except KeyboardInterrupt:
            if self.plan.strategy == STOP_FIRST:
                # Compose already removed the old container: keep whatever it started.
                self.finish("failed", "interrupted during a stop-first replacement")
                raise Interrupted(f"{self.service}: interrupted during a stop-first replacement",
                                  hint="Run `compose-atomic up` again to finish it.") from None
            with shielded():
                self.undo("interrupted")
            raise Interrupted(f"{self.service}: interrupted; the previous version serves again") from None

    def pull(self) -> None:
        proc = compose_run(self.project, "pull", "--quiet", self.service)
        if proc.returncode != 0 or engine.image_id(self.plan.image) is None:
            self.finish("failed", "image not found")
            raise OperationFailed(
                f"{self.service}: image {self.plan.image} could not be pulled: "
                f"{engine.last_line(proc.stderr) or 'not found'}",
                hint="Nothing was changed; the running version keeps serving.")

    def create_new(self) -> None:
        self.record("creating")
        scale = len(self.old) * 2
        proc = compose_run(self.project, "up", "--no-start", "--no-deps", "--no-recreate",
                           "--scale", f"{self.service}={scale}", self.service)
        old_ids = {c["Id"] for c in self.old}
        self.new_ids = [c["Id"] for c in engine.service_containers(self.project.name, self.service)
                        if c["Id"] not in old_ids]
        self.record("created")
        if proc.returncode != 0 or not self.new_ids:
            raise DeployFailed(f"{self.service}: Compose could not create the new container: "
                               f"{engine.last_line(proc.stderr) or engine.last_line(proc.stdout)}")
        for info in engine.inspect(*self.new_ids):
            set_aliases(self.project, self.service, info, with_service=False)
        proc = engine.docker("start", *self.new_ids)
        if proc.returncode != 0:
            raise HealthFailed(f"the new container did not start: {engine.last_line(proc.stderr)}",
                               "")

    def gate(self) -> None:
        self.record("gating")
        first = engine.inspect_one(self.new_ids[0]) or {}
        test = ((first.get("Config") or {}).get("Healthcheck") or {}).get("Test") or ["NONE"]
        if test[0] == "NONE" and self.health.path is None:
            self.ctx.progress.warn(self.service, "no healthcheck and no x-atomic.health: the gate only "
                                                 "checks that the container keeps running")
        for cid in self.new_ids:
            def custom(cid=cid):
                return call_hook("check_health", project=self.project, service=self.service,
                                 container=engine.whale(cid))
            waited = wait_healthy(cid, self.health, custom=custom)
            name = engine.name_of(engine.inspect_one(cid) or {"Name": cid})
            self.ctx.progress.event(f"Container {name}", "Healthy", elapsed=waited)

    def switch_to_new(self) -> None:
        for info in engine.inspect(*self.new_ids):
            set_aliases(self.project, self.service, info, with_service=True)
        new = engine.inspect(*self.new_ids)  # after the reconnect: addresses may have changed
        if self.proxied:
            # New first, old as the fallback the proxy itself fails over to (policy "first").
            nets, port = self.ctx.networks, self.route["port"]
            upstreams = [d for i in new for d in dials(i, port, nets)] + \
                [d for i in self.old for d in dials(i, port, nets)]
            self.ctx.proxy.set_upstreams(self.service, upstreams, nets)
        else:
            for info in self.old:
                set_aliases(self.project, self.service, info, with_service=False)
        self.record("switched")
        self.ctx.progress.event(self.service, "Switched", "traffic goes to " +
                                ", ".join(engine.name_of(i) for i in new))

    def switch_back(self) -> None:
        """Route to the old containers again (they kept running)."""
        if not self.old:
            return
        alive = [c["Id"] for c in self.old if (engine.inspect_one(c["Id"]) or {}).get("State", {}).get("Status") == "running"]
        if not alive:
            engine.docker("start", *[c["Id"] for c in self.old])
        old_now = engine.inspect(*[c["Id"] for c in self.old])
        if self.proxied:
            self.ctx.proxy.set_upstreams(self.service, [d for i in old_now for d in dials(i, self.route["port"], self.ctx.networks)],
                                         self.ctx.networks)
        else:
            for info in old_now:
                set_aliases(self.project, self.service, info, with_service=True)

    def monitor(self) -> None:
        """Watch the new containers for ``monitor`` while the old ones drain."""
        window = parse_duration(self.annotation.get("monitor", DEFAULT_MONITOR))
        drain = parse_duration(self.annotation.get("drain", DEFAULT_DRAIN))
        start = time.monotonic()
        old_dials = [d for c in self.old for d in dials(c, self.route["port"], self.ctx.networks)] \
            if self.proxied else []
        drained = not old_dials
        restarts = {i: (engine.inspect_one(i) or {}).get("RestartCount", 0) for i in self.new_ids}
        self.ctx.progress.event(self.service, "Monitoring", f"for {format_duration(window)}", state="working")
        while True:
            for cid in self.new_ids:
                why = trouble(engine.inspect_one(cid), restarts[cid])
                if why:
                    raise HealthFailed(f"{why} {time.monotonic() - start:.1f}s after the switch")
            now = time.monotonic()
            if not drained:
                drained = now - start >= drain or all(self.ctx.proxy.in_flight(d) == 0 for d in old_dials)
            if now - start >= window and drained:
                return
            time.sleep(0.2)

    def retire_old(self) -> None:
        self.record("committed")
        if self.proxied and self.new_ids:
            # The window closed: the old container stops being the fallback before it stops.
            new = engine.inspect(*self.new_ids)
            try:
                self.ctx.proxy.set_upstreams(self.service, [d for i in new for d in dials(i, self.route["port"], self.ctx.networks)],
                                             self.ctx.networks)
            except ComposeAtomicError as exc:  # [new, old] still routes to new first; the next up tidies
                self.ctx.progress.warn(self.service, f"could not drop the old upstream: {exc.message}")
        grace = grace_period(self.project, self.service)
        for info in self.old:
            engine.stop(info["Id"], grace)
            engine.remove(info["Id"])
        if self.old:
            self.ctx.progress.event(f"Container {engine.name_of(self.old[0])}", "Removed")

    def undo(self, reason: str) -> str:
        """Bring the old version back and remove the new one; return the outcome."""
        args = self.hook_args()
        outcome = "rolled-back"
        if self.phase == "switched":
            try:
                self.switch_back()
            except Exception as exc:  # noqa: BLE001
                self.ctx.progress.fail(self.service, f"switching back failed: {exc}")
                outcome = "rollback-failed"
        if outcome == "rolled-back":
            engine.remove(*self.new_ids)
            quiet_hook("on_rollback", self.ctx.progress, **args, reason=reason)
        self.finish(outcome, reason)
        quiet_hook("after_deploy", self.ctx.progress, **args, outcome=outcome)
        return outcome

    def fail(self, exc: ComposeAtomicError, report: str = "") -> None:
        progress = self.ctx.progress
        reason = str(exc.message)
        progress.fail(self.service, reason)
        if report:
            print(report, file=progress.stream, flush=True)
        with shielded():
            outcome = self.undo(reason)
        if outcome == "rollback-failed":
            raise RollbackFailed(f"{self.service}: {reason}; putting the previous version back failed too",
                                 hint="Check `compose-atomic ps` and the proxy, then run `compose-atomic up` again.")
        names = ", ".join(engine.name_of(c) for c in self.old) or "nothing"
        raise RolledBack(f"{self.service}: the new version failed ({reason}); rolled back, {names} serves")

    def start_first(self) -> str:
        try:
            self.create_new()
            self.gate()
            call_hook("before_switch", **self.hook_args())
            self.switch_to_new()
            quiet_hook("after_switch", self.ctx.progress, **self.hook_args())
            self.monitor()
        except HealthFailed as exc:
            self.fail(exc, exc.report)
        except ComposeAtomicError as exc:
            self.fail(exc)
        args = self.hook_args()
        with shielded():
            self.retire_old()
        self.finish("deployed")
        quiet_hook("after_deploy", self.ctx.progress, **args, outcome="deployed")
        self.ctx.progress.event(self.service, "Deployed",
                                elapsed=time.monotonic() - self.started)
        return "deployed"

    def stop_first(self) -> str:
        """Services that cannot run twice: Compose recreates them; no old version to return to."""
        changed, _, why = self.plan.reason.partition("; ")
        self.ctx.progress.event(self.service, "Stop-first",
                                f"{why}: replaced stop-first ({changed}); it is down while it restarts",
                                state="warning")
        self.record("stop-first")
        proc = compose_run(self.project, "up", "-d", "--no-deps", self.service)
        self.new_ids = [c["Id"] for c in engine.service_containers(self.project.name, self.service)
                        if c["Id"] not in {o["Id"] for o in self.old}]
        if proc.returncode != 0 or not self.new_ids:
            return self.stop_first_failed(engine.last_line(proc.stderr) or "Compose failed")
        try:
            self.gate()
        except HealthFailed as exc:
            print(exc.report, file=self.ctx.progress.stream, flush=True)
            return self.stop_first_failed(str(exc.message))
        if self.proxied:
            self.ctx.proxy.set_upstreams(self.service, [d for i in self.new_ids for d in dials(
                engine.inspect_one(i) or {"Name": i}, self.route["port"], self.ctx.networks)], self.ctx.networks)
        self.finish("deployed")
        quiet_hook("after_deploy", self.ctx.progress, **self.hook_args(), outcome="deployed")
        self.ctx.progress.event(self.service, "Deployed", "stop-first", elapsed=time.monotonic() - self.started)
        return "deployed"

    def stop_first_failed(self, reason: str) -> str:
        self.old = []
        self.finish("failed", reason)
        quiet_hook("after_deploy", self.ctx.progress, **self.hook_args(), outcome="failed")
        raise RollbackFailed(
            f"{self.service}: the new version failed ({reason}); it was replaced stop-first, so no old "
            "version is left to return to",
            hint="Fix the service and run `compose-atomic up` again, or `compose-atomic rollback "
                 f"{self.service}` to start the previous image.")
