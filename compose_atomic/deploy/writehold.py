"""The opt-in write hold of a migration (``x-atomic.migrate.hold_writes``, docs/migrations.md).

From before the snapshot until the release is decided (the failed migration settled, or the
new version's health gate passed, just before the switch, or failed and rolled back), the proxy
holds every request to the routes of the services that use the database (as ``compose-atomic
pause`` does, with the bodies of writes buffered), so no write lands after the snapshot: when only a restore can undo
a failed migration, it discards nothing. Requests are delayed, never failed. The hold is bounded:
once ``hold_writes`` has passed, the held requests are let through and the guard's usual rules
apply to whatever they write.
"""

from __future__ import annotations

import threading
import time

from ..progress import Progress
from ..settings import WriteHoldSettings

#: How much longer than ``hold_writes`` the proxy holds a request: the release is ours to make.
PROXY_MARGIN = 30.0
#: How long the hold waits for the requests already inside the app to finish before the snapshot.
IN_FLIGHT_WAIT = 10.0


class WriteHold:
    """Hold the routes at the proxy; release them once, by the deploy or when the time is up."""

    def __init__(self, project, service: str, proxy, networks: list[str], settings: WriteHoldSettings,
                 progress: Progress) -> None:
        self.project, self.service = project, service
        self.proxy, self.networks, self.settings, self.progress = proxy, networks, settings, progress
        self.services = [s for s in settings.services if s in proxy.routes]
        self.lock = threading.Lock()
        self.released = False
        self.started = 0.0
        self.timer: threading.Timer | None = None

    @property
    def resource(self) -> str:
        return f"Database {self.settings.database}"

    def start(self) -> None:
        """Hold the routes, then wait for the requests already in the app to finish."""
        self.proxy.check_write_hold()  # before anything changes: Caddy 2.6 cannot hold a body
        self.proxy.set_paused(self.services, self.settings.timeout + PROXY_MARGIN, self.networks, writes=True)
        self.started = time.monotonic()
        self.timer = threading.Timer(self.settings.timeout, self._expired)
        self.timer.daemon = True
        self.timer.start()
        dials = [d for s in self.services for d in self.proxy.routes[s].upstreams]
        deadline = self.started + IN_FLIGHT_WAIT
        while (self.proxy.open_requests(dials) or 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.proxy.open_requests(dials)
        self.progress.event(self.resource, "Holding writes",
                            f"requests to {', '.join(self.services)} wait at the proxy, up to "
                            f"{self.settings.timeout:g}s"
                            + (f" ({left} still inside the app after {IN_FLIGHT_WAIT:g}s: "
                               "their writes count as written after the snapshot)" if left else ""),
                            state="working" if not left else "warning")

    def _expired(self) -> None:
        self.release(f"hold_writes ({self.settings.timeout:g}s) passed before the release was decided: "
                     "held requests let through; what they write counts against a restore "
                     "(the guard's usual rules apply)", state="warning", timed_out=True)

    def release(self, why: str = "", state: str = "done", *, timed_out: bool = False) -> None:
        """Let the held requests through (to whatever the routes point at now); once."""
        from ..plugins import call_hook

        with self.lock:
            if self.released:
                return
            self.released = True
            if self.timer is not None:
                self.timer.cancel()
            # First: from now on the app may write, and the migration guard must know it.
            call_hook("after_write_hold", warn=lambda m: self.progress.warn(self.resource, m),
                      project=self.project, service=self.service, database=self.settings.database,
                      timed_out=timed_out)
            try:
                self.proxy.set_paused(self.services, None, self.networks)
            except Exception as exc:  # noqa: BLE001 - say it; `compose-atomic resume` does the same
                self.progress.fail(self.resource, f"releasing the held requests failed: "
                                                  f"{getattr(exc, 'message', exc)}; run "
                                                  f"compose-atomic resume {' '.join(self.services)}")
                return
            held = time.monotonic() - self.started
            self.progress.event(self.resource, "Released writes",
                                why or f"held requests go through after {held:.1f}s, to the version "
                                       "that serves now", state=state)


def start_write_hold(project, service: str, proxy, networks: list[str], progress: Progress, *,
                     timeout: float | None = None) -> WriteHold | None:
    """The write hold ``service``'s migration asks for (``timeout``: ``up --hold-writes``, for any
    migration), started; None when none is asked."""
    from ..errors import UsageError
    from ..settings import write_hold_settings

    settings = write_hold_settings(project, service, timeout=timeout)
    if settings is None:
        return None
    if proxy is None:
        raise UsageError(f"{service}: x-atomic.migrate.hold_writes needs the managed proxy (x-atomic.proxy): "
                         "the requests are held there",
                         hint="Add x-atomic.proxy, or remove hold_writes. Nothing was changed.")
    hold = WriteHold(project, service, proxy, networks, settings, progress)
    if not hold.services:
        progress.warn(service, "hold_writes: no routed service uses the database; nothing to hold")
        return None
    hold.start()
    return hold
