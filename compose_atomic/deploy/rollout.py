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

A stop-first replacement (the service cannot run twice: a host port, ``network_mode:
host``, ``strategy: stop-first``) keeps the same order and the same undo, with one step
more: the new container is created but not started (a host port is only bound at start),
then the old one is stopped with its stop_grace_period and kept, stopped, until the
monitor window closes. Undo removes the new container first (it may hold the port) and
starts the old one again. Only ``container_name`` is recreated in place by Compose
(see :meth:`Replacement.recreate_in_place`).

A service whose containers were all dead before the deploy is recreated by Compose,
not started, and goes through the same gate before it is routed (:meth:`Replacement.revive`).

Every step is written to the journal first, so an interrupted deploy can be
finished or undone by the next ``up`` (see :func:`reconcile`).
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from .. import docker
from ..durations import format_duration, parse_duration
from ..errors import ComposeAtomicError, DeployFailed, Interrupted, OperationFailed, RollbackFailed, RolledBack
from ..plugins import call_hook
from ..progress import Progress
from ..project import Project
from ..settings import deploy_settings
from . import receipt as receipts
from .health import HealthFailed, trouble, wait_healthy
from .plan import STOP_FIRST, ServicePlan
from .routing import dials, set_aliases, upstreams_for
from .state import History, Journal, Phase
from .writehold import WriteHold, start_write_hold


#: Seconds a switch back waits for the requests still dialing a dead new container (see switch_back).
SWITCH_BACK_WAIT = 2.0


@dataclass
class Context:
    """What every step of a service replacement needs."""

    project: Project
    progress: Progress
    journal: Journal
    history: History
    proxy: Any = None  # CaddyProxy when x-atomic.proxy is set
    networks: list[str] = field(default_factory=list)
    hold_writes: float | None = None  # `up --hold-writes`: for every migration of this deploy


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


def compose_run(project: Project, *args: str) -> docker.Result:
    return docker.run(project.compose(*args))


def stop(grace: float, *ids: str) -> None:
    if ids:
        docker.run(docker.stop(grace, *ids))


def remove(*ids: str) -> None:
    if ids:
        docker.run(docker.remove(*ids))


def notify(name: str, progress: Progress, **kwargs: Any) -> None:
    """Call a notification hook; its failure is a warning in the deploy's progress."""
    call_hook(name, warn=lambda message: progress.warn(kwargs.get("service", "deploy"), message), **kwargs)


# ---- one service ------------------------------------------------------------------------


def running(info: dict[str, Any] | None) -> bool:
    return ((info or {}).get("State") or {}).get("Status") == "running"


class Replacement:
    """The replacement of one service, with everything needed to undo it."""

    def __init__(self, ctx: Context, plan: ServicePlan) -> None:
        self.ctx = ctx
        self.plan = plan
        self.project = ctx.project
        self.service = plan.service
        self.settings = deploy_settings(ctx.project, plan.service)
        self.route = self.settings.route
        self.health = self.settings.health
        self.old: list[dict[str, Any]] = plan.old
        self.new_ids: list[str] = []
        self.phase = Phase.PLANNED
        self.started = time.monotonic()
        self.proxied = bool(ctx.proxy and self.route)
        self.stop_first_mode = plan.strategy == STOP_FIRST
        # Compose refuses to scale a service with container_name, so it can only recreate it in place.
        self.in_place = self.stop_first_mode and bool(self.project.services.get(self.service, {}).get("container_name"))
        self.old_stopped = False
        self.undo_error: ComposeAtomicError | None = None  # what rollback_deploy could not undo
        # The receipt (see .receipt): where the proxy's log stood at the switch, which dials are
        # which version, what was open at the stop, and the receipt itself once taken.
        self.receipt_mark: receipts.Mark | None = None
        self.receipt_versions: dict[str, dict[str, Any]] = {}
        self.stop_in_flight: dict[str, int | None] = {}
        self.receipt: dict[str, Any] | None = None
        self.hold: WriteHold | None = None  # x-atomic.migrate.hold_writes, while it holds

    # -- bookkeeping --

    def record(self, phase: Phase) -> None:
        self.phase = phase
        self.ctx.journal.write({"service": self.service, "phase": phase.value, "action": self.plan.action,
                                "strategy": self.plan.strategy,
                                "old": [c["Id"] for c in self.old], "new": self.new_ids,
                                "proxied": self.proxied, "image": self.plan.image})

    def hook_args(self) -> dict[str, Any]:
        return {"project": self.project, "service": self.service,
                "old_container": docker.container_object(self.old[0]["Id"] if self.old else None),
                "new_container": docker.container_object(self.new_ids[0] if self.new_ids else None)}

    def finish(self, outcome: str, reason: str = "") -> None:
        new_info = docker.inspect_one(self.new_ids[0]) if self.new_ids else None
        self.ctx.history.append({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "service": self.service, "outcome": outcome,
            "reason": reason, "image": self.plan.image,
            "old_image_id": self.old[0]["Image"] if self.old else None,
            "new_image_id": (new_info or {}).get("Image") or docker.image_id(self.plan.image),
            "old_container": docker.name_of(self.old[0]) if self.old else None,
            "new_container": docker.name_of(new_info) if new_info else None,
            "strategy": self.plan.strategy, "seconds": round(time.monotonic() - self.started, 2),
            **({"notes": self.plan.notes} if self.plan.notes else {}),
            **({"receipt": self.take_receipt()} if self.receipt_mark else {}),
        })
        self.ctx.journal.clear()

    # -- the receipt --

    def start_receipt(self) -> None:
        """Just before the switch: mark the proxy's log and note which dials are which version."""
        if not self.proxied:
            return
        self.note_versions(docker.inspect(*self.new_ids))
        log = getattr(self.ctx.proxy, "receipt_log", None)  # a stand-in proxy keeps no log
        try:
            self.receipt_mark = receipts.mark(log()) if log else None
        except OSError as exc:  # an observation: never the deploy's outcome
            self.ctx.progress.warn(self.service, f"no receipt for this deploy: {exc}")
            self.receipt_mark = None

    def note_versions(self, new: list[dict[str, Any]]) -> None:
        """Which dials are which version (the new ones again after the switch moved the aliases:
        a reconnect may have given a container another address; the earlier ones are kept)."""
        port, nets = self.route.port, self.ctx.networks
        before = (self.receipt_versions.get("new") or {}).get("dials") or []
        self.receipt_versions = {
            "old": {"dials": [d for c in self.old for d in dials(c, port, nets)],
                    "containers": [docker.name_of(c) for c in self.old],
                    "image_id": self.old[0]["Image"] if self.old else None},
            "new": {"dials": list(dict.fromkeys(before + [d for i in new for d in dials(i, port, nets)])),
                    "containers": [docker.name_of(i) for i in new],
                    "image_id": new[0].get("Image") if new else None},
        }

    def note_in_flight(self) -> None:
        """What the proxy has open to each version now (the stop of the watch)."""
        if not self.receipt_mark:
            return
        for version, info in self.receipt_versions.items():
            counts = [self.ctx.proxy.in_flight(d) for d in info["dials"]]
            known = [c for c in counts if c is not None]
            self.stop_in_flight[version] = sum(known) if known else None

    def take_receipt(self) -> dict[str, Any] | None:
        if self.receipt is None and self.receipt_mark is not None:
            try:
                self.receipt = receipts.take(self.receipt_mark, self.service, self.receipt_versions,
                                             in_flight=self.stop_in_flight).to_dict()
            except Exception as exc:  # noqa: BLE001 - an observation: never the deploy's outcome
                self.receipt_mark = None
                self.ctx.progress.warn(self.service, f"no receipt for this deploy: {type(exc).__name__}: {exc}")
        return self.receipt

    def print_receipt(self) -> None:
        if not self.receipt:
            return
        troubled = receipts.failed_requests(self.receipt) or self.receipt.get("missing") or self.receipt.get("partial")
        state = "warning" if troubled else "done"
        for line in receipts.summary(self.receipt):
            self.ctx.progress.event(self.service, "Receipt", line, state=state)

    def route_to(self, ids: list[str], leaving: list[str] | None = None, *, fallback: bool = False) -> None:
        """Point the proxy at containers as they are now (a restart may have moved an address).

        ``leaving`` are containers that stop being routed; the proxy keeps counting their open
        requests (see :meth:`drain`). With ``fallback`` a single new container gets their dials
        after its own (the first one up serves, so they take over at once if it fails);
        replicas never get a fallback (a failed replica is skipped; the monitor switches back).
        """
        port, nets = self.route.port, self.ctx.networks
        upstreams, balance = upstreams_for(docker.inspect(*ids), port, nets)
        gone = self.dials_of(leaving or [])
        if fallback and not balance:
            upstreams += gone
        self.ctx.proxy.set_upstreams(self.service, upstreams, nets, balance=balance, draining=gone)

    def dials_of(self, ids: list[str]) -> list[str]:
        return [d for i in docker.inspect(*ids) for d in dials(i, self.route.port, self.ctx.networks)]

    def drained(self, leaving: list[str]) -> bool:
        """No request is open to any of these dials, as far as the proxy can tell (unknown: not drained)."""
        return all(self.ctx.proxy.in_flight(d) == 0 for d in leaving)

    # -- the flow --

    def run(self) -> str:
        """Replace the service; return the outcome or raise with the right exit code."""
        progress = self.ctx.progress
        if self.stop_first_mode:
            self.announce_stop_first()
        else:
            progress.event(self.service, "Replacing", f"start-first ({self.plan.reason})", state="working")
        if self.plan.needs_pull:
            self.pull()
        try:
            self.before_deploy()
            return self.replace()
        finally:
            self.release_hold()

    def replace(self) -> str:
        try:
            if self.in_place:
                return self.recreate_in_place()
            return self.roll()
        except KeyboardInterrupt:
            if self.in_place:
                # Compose already removed the old container: keep whatever it started.
                self.finish("failed", "interrupted during a stop-first replacement")
                raise Interrupted(f"{self.service}: interrupted during a stop-first replacement",
                                  hint="Run `compose-atomic up` again to finish it.") from None
            with shielded():
                self.undo("interrupted")
            raise Interrupted(f"{self.service}: interrupted; the previous version serves again") from None

    def announce_stop_first(self) -> None:
        changed, _, why = self.plan.reason.partition("; ")
        kept = ("Compose recreates it in place, so a failed new version has nothing to return to"
                if self.in_place else "the old container is kept, stopped, until the new one proves itself")
        self.ctx.progress.event(self.service, "Stop-first",
                                f"{why}: replaced stop-first ({changed}); it is down while it restarts; {kept}",
                                state="warning")

    def release_hold(self, why: str = "") -> None:
        if self.hold is not None:
            self.hold.release(why)

    def before_deploy(self, *, hold: bool = True) -> None:
        try:
            # The write hold (opt-in) starts before the snapshot and ends once the release is
            # decided: switched to the new version, or the old one serving again. (Not for a
            # dead service being recreated: nothing of it serves, there is nothing to switch from.)
            if hold:
                self.hold = start_write_hold(self.project, self.service, self.ctx.proxy, self.ctx.networks,
                                             self.ctx.progress, timeout=self.ctx.hold_writes)
            call_hook("before_deploy", project=self.project, service=self.service,
                      old_container=docker.container_object(self.old[0]["Id"] if self.old else None),
                      new_image=self.plan.image)
        except ComposeAtomicError as exc:
            self.finish("failed", str(exc.message))
            notify("after_deploy", self.ctx.progress, **self.hook_args(), outcome="failed", receipt=None)
            raise

    def pull(self) -> None:
        proc = compose_run(self.project, "pull", "--quiet", self.service)
        if proc.returncode != 0 or docker.image_id(self.plan.image) is None:
            self.finish("failed", "image not found")
            notify("after_deploy", self.ctx.progress, **self.hook_args(), outcome="failed", receipt=None)
            raise OperationFailed(
                f"{self.service}: image {self.plan.image} could not be pulled: "
                f"{proc.last_line() or 'not found'}",
                hint="Nothing was changed; the running version keeps serving.")

    def create_new(self) -> None:
        """Compose creates the new containers beside the old ones, not started, out of the aliases.

        Not started, so that a host port (bound only at start) or anything else that cannot
        exist twice does not clash while the old container still runs.
        """
        self.record(Phase.CREATING)
        complaint = self.compose_create(Phase.CREATED, "--no-recreate", "--scale", f"{self.service}={len(self.old) * 2}")
        if complaint:
            raise DeployFailed(f"{self.service}: Compose could not create the new container: {complaint}")

    def compose_create(self, phase: Phase, *args: str) -> str:
        """``up --no-start`` the service's containers that are not the old ones, out of the aliases.

        Records ``phase`` once the new ids are known (for reconcile); returns Compose's
        complaint, or "" when it created them.
        """
        proc = compose_run(self.project, "up", "--no-start", "--no-deps", *args, self.service)
        old_ids = {c["Id"] for c in self.old}
        self.new_ids = [c["Id"] for c in docker.service_containers(self.project.name, self.service)
                        if c["Id"] not in old_ids]
        self.record(phase)
        if proc.returncode != 0 or not self.new_ids:
            return proc.last_line() or "Compose failed"
        for info in docker.inspect(*self.new_ids):
            set_aliases(self.project, self.service, info, with_service=False)
        return ""

    def stop_old(self) -> None:
        """Stop-first: the old containers stop (their own grace period) but stay, to be started again."""
        self.record(Phase.OLD_STOPPED)
        self.old_stopped = True
        stop(grace_period(self.project, self.service), *[c["Id"] for c in self.old])
        for info in self.old:
            self.ctx.progress.event(f"Container {docker.name_of(info)}", "Stopped", "kept until the new one is healthy")

    def start_new(self) -> None:
        proc = docker.run(docker.start(*self.new_ids))
        if not proc.ok:
            raise HealthFailed(f"the new container did not start: {proc.last_line()}")

    def gate(self) -> None:
        self.record(Phase.GATING)
        first = docker.inspect_one(self.new_ids[0]) or {}
        test = ((first.get("Config") or {}).get("Healthcheck") or {}).get("Test") or ["NONE"]
        if test[0] == "NONE" and self.health.path is None:
            self.ctx.progress.warn(self.service, "no healthcheck and no x-atomic.health: the gate only "
                                                 "checks that the container keeps running")
        for cid in self.new_ids:
            def custom(cid=cid):
                return call_hook("check_health", project=self.project, service=self.service,
                                 container=docker.container_object(cid))
            waited = wait_healthy(cid, self.health, custom=custom)
            name = docker.name_of(docker.inspect_one(cid) or {"Name": cid})
            self.ctx.progress.event(f"Container {name}", "Healthy", elapsed=waited)

    def switch_to_new(self) -> None:
        for info in docker.inspect(*self.new_ids):
            set_aliases(self.project, self.service, info, with_service=True)
        new = docker.inspect(*self.new_ids)  # after the reconnect: addresses may have changed
        if self.receipt_mark:
            self.note_versions(new)
        if self.proxied:
            # New first, old as the fallback the proxy itself fails over to (policy "first");
            # a stopped old container (stop-first) is no fallback.
            self.route_to(self.new_ids, [] if self.stop_first_mode else [c["Id"] for c in self.old], fallback=True)
        elif not self.stop_first_mode:
            # A stopped container is not in Docker's DNS: stop-first leaves the old aliases as they are.
            for info in self.old:
                set_aliases(self.project, self.service, info, with_service=False)
        self.record(Phase.SWITCHED)
        self.ctx.progress.event(self.service, "Switched", "traffic goes to " +
                                ", ".join(docker.name_of(i) for i in new))

    def switch_back(self) -> None:
        """Route to the old containers again (they kept running)."""
        if not self.old:
            return
        alive = [c["Id"] for c in self.old if running(docker.inspect_one(c["Id"]))]
        if not alive:
            docker.run(docker.start(*[c["Id"] for c in self.old]))
        if self.proxied:
            if alive and not self.plan_is_replicas():
                # The proxy already fails over to the old container by itself (it is the fallback,
                # and a failed dial marks the new one down). Changing its configuration now would
                # end the retries of requests still dialing the dead container (Caddy cancels
                # those of a replaced configuration): wait until none is open to the new one.
                # What the proxy dials now, less the old container: a dead container's inspection
                # no longer shows its address, so the new one's dials cannot be read again.
                old_dials = set(self.dials_of([c["Id"] for c in self.old]))
                routed = self.ctx.proxy.routes[self.service].upstreams
                self.wait_until_drained([d for d in routed if d not in old_dials], SWITCH_BACK_WAIT)
            self.route_to([c["Id"] for c in self.old], self.new_ids)
        else:
            for info in docker.inspect(*[c["Id"] for c in self.old]):
                set_aliases(self.project, self.service, info, with_service=True)

    def plan_is_replicas(self) -> bool:
        return len(self.old) > 1

    def restore_old(self) -> None:
        """Stop-first undo: start the stopped old containers again, route to them, check them.

        Routed at once (the proxy holds requests while the dial fails) and then checked like
        any deploy, so that "rolled back" is only said of an old version that serves.
        """
        stopped = [c["Id"] for c in self.old if not running(docker.inspect_one(c["Id"]))]
        if not stopped and self.phase != Phase.SWITCHED:
            return  # it never stopped, and the proxy never left it
        if stopped:
            proc = docker.run(docker.start(*stopped))
            if not proc.ok:
                raise OperationFailed(f"the old container did not start again: {proc.last_line()}")
        if self.proxied:
            self.route_to([c["Id"] for c in self.old])
        for cid in stopped:
            waited = wait_healthy(cid, self.health)
            name = docker.name_of(docker.inspect_one(cid) or {"Name": cid})
            self.ctx.progress.event(f"Container {name}", "Started again", "healthy", elapsed=waited)

    def monitor(self) -> None:
        """Watch the new containers for ``monitor`` while the old ones drain."""
        window, drain = self.settings.monitor, self.settings.drain
        start = time.monotonic()
        old_dials = [d for c in self.old for d in dials(c, self.route.port, self.ctx.networks)] \
            if self.proxied and not self.stop_first_mode else []
        drained = not old_dials or drain <= 0
        restarts = {i: (docker.inspect_one(i) or {}).get("RestartCount", 0) for i in self.new_ids}
        self.ctx.progress.event(self.service, "Monitoring", f"for {format_duration(window)}", state="working")
        while True:
            for cid in self.new_ids:
                why = trouble(docker.inspect_one(cid), restarts[cid])
                if why:
                    raise HealthFailed(f"{why} {time.monotonic() - start:.1f}s after the switch")
            now = time.monotonic()
            if not drained:
                drained = now - start >= drain or self.drained(old_dials)
            if now - start >= window and drained:
                return
            time.sleep(0.2)

    def retire_old(self) -> None:
        """Take the old containers out of the routes, wait for their open requests, stop them."""
        self.record(Phase.COMMITTED)
        old_ids = [c["Id"] for c in self.old]
        if self.proxied and self.new_ids and not self.stop_first_mode:
            # The window closed: the old container stops being the fallback before it stops,
            # and is stopped only once the proxy has no request open to it (or drain runs out).
            try:
                self.route_to(self.new_ids, old_ids)
                self.drain(self.dials_of(old_ids))
                self.note_in_flight()
                self.route_to(self.new_ids)
            except ComposeAtomicError as exc:  # [new, old] still routes to new first; the next up tidies
                self.ctx.progress.warn(self.service, f"could not drop the old upstream: {exc.message}")
        stop(grace_period(self.project, self.service), *old_ids)
        for info in self.old:
            remove(info["Id"])
            self.ctx.progress.event(f"Container {docker.name_of(info)}", "Removed")

    def drain(self, leaving: list[str]) -> None:
        """Wait until no request is open to ``leaving`` (unknown counts as open), at most ``drain``."""
        self.wait_until_drained(leaving, self.settings.drain)

    def wait_until_drained(self, leaving: list[str], bound: float) -> None:
        deadline = time.monotonic() + bound
        while leaving and not self.drained(leaving) and time.monotonic() < deadline:
            time.sleep(0.05)

    def undo(self, reason: str) -> str:
        """Bring the old version back and remove the new one; return the outcome."""
        args = self.hook_args()
        try:
            if self.stop_first_mode:
                remove(*self.new_ids)  # first: it may hold the host port the old one needs
                self.restore_old()
            else:
                if self.phase == Phase.SWITCHED:
                    self.switch_back()
                self.note_in_flight()
                remove(*self.new_ids)  # only once the old one is routed again
            outcome = "rolled-back"
        except Exception as exc:  # noqa: BLE001 - report it, the caller raises RollbackFailed
            self.ctx.progress.fail(self.service, f"putting the previous version back failed: "
                                                 f"{getattr(exc, 'message', exc)}")
            outcome = "rollback-failed"
        if outcome == "rolled-back":
            # The old containers serve again; now what before_deploy changed (the migration).
            try:
                call_hook("rollback_deploy", project=self.project, service=self.service, reason=reason)
            except ComposeAtomicError as exc:
                self.undo_error = exc
                outcome = "rollback-failed"
        if outcome == "rolled-back":
            self.take_receipt()
            notify("on_rollback", self.ctx.progress, **args, reason=reason, receipt=self.receipt)
        self.finish(outcome, reason)
        self.print_receipt()
        notify("after_deploy", self.ctx.progress, **args, outcome=outcome, receipt=self.receipt)
        return outcome

    def say_failed(self, exc: ComposeAtomicError, report: str = "") -> str:
        """Print why the new version failed (and its health log); return the reason."""
        reason = str(exc.message)
        self.ctx.progress.fail(self.service, reason)
        if report:
            print(report, file=self.ctx.progress.stream, flush=True)
        return reason

    def fail(self, exc: ComposeAtomicError, report: str = "") -> None:
        reason = self.say_failed(exc, report)
        with shielded():
            outcome = self.undo(reason)
        if outcome == "rollback-failed" and self.undo_error is not None:
            names = ", ".join(docker.name_of(c) for c in self.old) or "nothing"
            raise RollbackFailed(f"{self.service}: the new version failed ({reason}); {names} serves again, "
                                 f"but {self.undo_error.message}", hint=self.undo_error.hint)
        if outcome == "rollback-failed":
            raise RollbackFailed(f"{self.service}: {reason}; putting the previous version back failed too",
                                 hint="Check `compose-atomic ps` and the proxy, then run `compose-atomic up` again.")
        names = ", ".join(docker.name_of(c) for c in self.old) or "nothing"
        if self.old_stopped:
            raise RolledBack(f"{self.service}: the new version failed ({reason}); rolled back: "
                             f"{names} was started again and serves")
        raise RolledBack(f"{self.service}: the new version failed ({reason}); rolled back, {names} serves")

    def roll(self) -> str:
        """Create, (stop-first: stop the old,) start, gate, switch, watch; undo on any failure."""
        try:
            self.create_new()
            if self.stop_first_mode:
                self.stop_old()
            self.start_new()
            self.gate()
            call_hook("before_switch", **self.hook_args())
            # Released before the switch: a change of the proxy's configuration ends the requests
            # it is still holding (see `pause`), so they go to the old version, then new ones to the new.
            self.release_hold()
            self.start_receipt()
            self.switch_to_new()
            notify("after_switch", self.ctx.progress, **self.hook_args())
            self.monitor()
        except HealthFailed as exc:
            self.fail(exc, exc.report)
        except ComposeAtomicError as exc:
            self.fail(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. the proxy's admin API failing mid-switch
            self.fail(DeployFailed(f"{type(exc).__name__}: {exc}"))
        args = self.hook_args()
        with shielded():
            self.retire_old()
        self.finish("deployed")
        notify("after_deploy", self.ctx.progress, **args, outcome="deployed", receipt=self.receipt)
        self.ctx.progress.event(self.service, "Deployed", self.plan.strategy,
                                elapsed=time.monotonic() - self.started)
        self.print_receipt()
        return "deployed"

    def recreate_in_place(self) -> str:
        """container_name: Compose recreates the service in place; there is no old version to return to.

        Compose finds a service's containers by label, not by name, and refuses to scale a
        service that sets container_name: creating the new container means recreating the
        old one, which removes it even when it was renamed aside first.
        """
        self.record(Phase.IN_PLACE)
        proc = compose_run(self.project, "up", "-d", "--no-deps", self.service)
        self.new_ids = [c["Id"] for c in docker.service_containers(self.project.name, self.service)
                        if c["Id"] not in {o["Id"] for o in self.old}]
        if proc.returncode != 0 or not self.new_ids:
            return self.in_place_failed(proc.last_line() or "Compose failed")
        try:
            self.gate()
        except HealthFailed as exc:
            print(exc.report, file=self.ctx.progress.stream, flush=True)
            return self.in_place_failed(str(exc.message))
        if self.proxied:
            self.route_to(self.new_ids)
        self.finish("deployed")
        notify("after_deploy", self.ctx.progress, **self.hook_args(), outcome="deployed", receipt=None)
        self.ctx.progress.event(self.service, "Deployed", "stop-first", elapsed=time.monotonic() - self.started)
        return "deployed"

    def in_place_failed(self, reason: str) -> str:
        self.old = []
        self.finish("failed", reason)
        notify("after_deploy", self.ctx.progress, **self.hook_args(), outcome="failed", receipt=None)
        raise RollbackFailed(
            f"{self.service}: the new version failed ({reason}); it sets container_name, so Compose "
            "recreated it in place and no old version is left to return to",
            hint="Fix the service and run `compose-atomic up` again, or `compose-atomic rollback "
                 f"{self.service}` to start the previous image.")

    # -- a service with no running container before the deploy --

    def revive(self) -> str:
        """Recreate a service whose containers are all dead, gated before it is routed.

        Compose creates (or keeps, when nothing changed) the containers without starting
        them; they start out of the service's aliases and join them, and the proxy's route,
        only once healthy. Nothing was serving before, so there is nothing to roll back to:
        containers that never get healthy are stopped (kept for their logs, never routed, and
        gated again by the next ``up``) and the command fails with exit 1.
        """
        self.ctx.progress.event(self.service, "Recreating", f"{self.plan.reason}; routed once healthy",
                                state="warning")
        if self.plan.needs_pull:
            self.pull()
        try:
            self.before_deploy(hold=False)
            return self.revive_new()
        finally:
            self.release_hold()

    def revive_new(self) -> str:
        try:
            self.record(Phase.REVIVING)
            complaint = self.compose_create(Phase.REVIVING)
            if complaint:
                raise OperationFailed(f"{self.service}: Compose could not recreate it: {complaint}")
            self.start_new()
            self.gate()
            self.switch_to_new()
        except HealthFailed as exc:
            self.revive_failed(exc, exc.report)
        except ComposeAtomicError as exc:
            self.revive_failed(exc)
        except KeyboardInterrupt:
            with shielded():
                self.park_new()
                self.finish("failed", "interrupted while recreating a dead service")
            raise Interrupted(f"{self.service}: interrupted; it was not serving before and is stopped again",
                              hint="Run `compose-atomic up` again to recreate it.") from None
        self.finish("deployed", "recreated: no container was running")
        notify("after_deploy", self.ctx.progress, **self.hook_args(), outcome="deployed", receipt=None)
        self.ctx.progress.event(self.service, "Deployed", "recreated", elapsed=time.monotonic() - self.started)
        return "deployed"

    def park_new(self) -> None:
        """Stop containers that never became healthy; kept for `docker logs`, never routed."""
        stop(grace_period(self.project, self.service), *self.new_ids)

    def revive_failed(self, exc: ComposeAtomicError, report: str = "") -> None:
        reason = self.say_failed(exc, report)
        with shielded():
            self.park_new()
            self.finish("failed", reason)
        notify("after_deploy", self.ctx.progress, **self.hook_args(), outcome="failed", receipt=None)
        raise OperationFailed(
            f"{self.service}: the recreated container did not get healthy ({reason}); nothing was serving "
            "before, so there is nothing to roll back to: it is stopped and not routed",
            hint="See `docker logs` of it, fix the service and run `compose-atomic up` again.")
