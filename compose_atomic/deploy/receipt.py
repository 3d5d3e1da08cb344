"""A receipt for every deploy: what the proxy saw, per version, while a service was switched and watched.

The switch (the Caddy that holds the routes, see :mod:`compose_atomic.proxy.caddy`) writes one
JSON line per request it handled (its access log) and one per attempt its reverse proxy made on
a container ("upstream roundtrip", Caddy's debug line), to ``<state_dir>/proxy/run/receipt-<slot>.log``.
Each answer carries tags the switch sets for this log only (the edge deletes them): the route, the
container that answered or was tried last, and two timings. A deploy marks where the log ends
when it switches (:func:`mark`), and once the old version has stopped (or the new one was removed)
reads what was written since (:func:`read_since`) into a :class:`Receipt` (:func:`tally`, a pure
function over lines). Counts are the proxy's own, not estimates:

- ``requests``: answers the switch gave for the route from that version's containers (a request
  still open at the end is not in the log yet: ``in_flight_at_stop`` counts those, from the
  proxy's own count at that moment);
- ``5xx``: of those, status 500-599 (the app's own, or the proxy's 502/503 after trying it);
- ``upstream_errors``: attempts on the version's containers that failed (a refused or timed-out
  dial, a connection reset, an incomplete answer), also the ones the proxy then retried elsewhere;
- ``held_or_retried``: requests that spent ``HELD_MS`` or more in the proxy before the attempt that
  answered (every retry waits ``try_interval``, at least 50 ms; a request held while no container
  was up waits longer);
- latency: the switch's time for the request (what the client waited, less the edge's hop), p50,
  p95 (within 2 %: a log-bucketed histogram keeps the parse's memory bounded) and max.

Requests the proxy answered itself (no container up, maintenance) are ``unrouted``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..proxy.caddy import ERROR_TAG, HOLD_TAG, ROUTE_TAG, TIMING_TAG, UPSTREAM_TAG

#: A request that waited this long in the proxy before the attempt that answered was held or retried
#: (every retry first waits try_interval, 50 ms at least; a busy machine adds a few ms to any request).
HELD_MS = 40.0
#: Histogram buckets grow by this ratio: percentiles are exact within 2 %.
RATIO = 1.02
_FLOOR_MS = 0.01
ACCESS_LOGGER = "http.log.access"
PROXY_LOGGER = "http.handlers.reverse_proxy"


class Histogram:
    """Latencies in milliseconds, in log-spaced buckets: bounded memory whatever the count."""

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.max = 0.0

    def add(self, ms: float) -> None:
        index = -1 if ms < _FLOOR_MS else int(math.log(ms / _FLOOR_MS, RATIO))
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.count += 1
        self.max = max(self.max, ms)

    def quantile(self, q: float) -> float | None:
        """The nearest-rank ``q`` quantile (upper edge of its bucket, never above the max)."""
        if not self.count:
            return None
        rank, seen = max(1, math.ceil(q * self.count)), 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                edge = _FLOOR_MS if index < 0 else _FLOOR_MS * RATIO ** (index + 1)
                return min(edge, self.max)
        return self.max


@dataclass
class Tally:
    """What the proxy saw of one version (or of no version: ``unrouted``)."""

    version: str
    containers: list[str] = field(default_factory=list)
    image_id: str | None = None
    requests: int = 0
    status_5xx: int = 0
    upstream_errors: int = 0
    held_or_retried: int = 0
    in_flight_at_stop: int | None = None
    latency: Histogram = field(default_factory=Histogram)

    def to_dict(self) -> dict[str, Any]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 2)

        return {"version": self.version, "containers": self.containers, "image_id": self.image_id,
                "requests": self.requests, "5xx": self.status_5xx, "upstream_errors": self.upstream_errors,
                "held_or_retried": self.held_or_retried, "in_flight_at_stop": self.in_flight_at_stop,
                "latency_ms": {"p50": ms(self.latency.quantile(0.5)), "p95": ms(self.latency.quantile(0.95)),
                               "max": ms(self.latency.max if self.latency.count else None)}}


@dataclass
class Receipt:
    service: str
    started: float
    ended: float
    versions: list[Tally]
    unrouted: Tally
    lines: int = 0
    #: Why there are no counts (the log could not be read), or None.
    missing: str | None = None
    #: Why the counts may be short (the log rolled away during the window), or None.
    partial: str | None = None

    def to_dict(self) -> dict[str, Any]:
        def iso(t: float) -> str:
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"

        unrouted = self.unrouted.to_dict()
        return {"source": "proxy", "started": iso(self.started), "ended": iso(self.ended),
                "started_epoch": round(self.started, 3), "ended_epoch": round(self.ended, 3),
                "seconds": round(self.ended - self.started, 2),
                "versions": [v.to_dict() for v in self.versions],
                "unrouted": {k: unrouted[k] for k in ("requests", "5xx", "held_or_retried")},
                **({"missing": self.missing} if self.missing else {}),
                **({"partial": self.partial} if self.partial else {})}


def failed_requests(receipt: dict[str, Any] | None) -> int:
    """Requests a receipt (as stored) shows failed: 5xx answers, unrouted ones included."""
    if not receipt:
        return 0
    return sum(v.get("5xx") or 0 for v in receipt.get("versions") or []) + ((receipt.get("unrouted") or {}).get("5xx") or 0)


def summary(receipt: dict[str, Any]) -> list[str]:
    """One line per version (and the unrouted answers, if any), for progress and webhooks."""
    if receipt.get("missing"):
        return [f"no receipt: {receipt['missing']}"]
    lines = []
    for v in receipt.get("versions") or []:
        lat = v.get("latency_ms") or {}
        timing = (f", p50 {_ms(lat.get('p50'))}, p95 {_ms(lat.get('p95'))}, max {_ms(lat.get('max'))}"
                  if lat.get("max") is not None else "")
        flight = v.get("in_flight_at_stop")
        lines.append(f"{v['version']} {', '.join(v.get('containers') or []) or '?'}: {v['requests']} requests, "
                     f"{v['5xx']} 5xx, {v['upstream_errors']} upstream errors, {v['held_or_retried']} held or retried"
                     f"{timing}" + (f", {flight} in flight at the stop" if flight else ""))
    unrouted = receipt.get("unrouted") or {}
    if unrouted.get("requests"):
        lines.append(f"answered by the proxy itself (no container to send to): {unrouted['requests']} requests, "
                     f"{unrouted['5xx']} 5xx")
    if receipt.get("partial"):
        lines.append(f"partial: {receipt['partial']}")
    return lines or ["no request reached the proxy"]


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f}s" if value >= 1000 else f"{value:.1f}ms"


# ---- the pure part: lines in, counts out -------------------------------------------------


def tally(lines: Iterable[str], service: str, dials: dict[str, list[str]], since: float,
          until: float | None = None) -> tuple[dict[str, Tally], Tally, int]:
    """Count the switch's log lines written in [since, until] for ``service``.

    ``dials``: version -> the dial addresses of its containers ("ip:port", "name:port").
    Returns (tally per version, the unrouted tally, lines read). Lines that are not JSON, or not
    about this service, are skipped; nothing is kept per request.
    """
    versions = {v: Tally(v) for v in dials}
    unrouted = Tally("unrouted")
    owner = {d: v for v, ds in dials.items() for d in ds}
    read = 0
    for line in lines:
        read += 1
        # Most lines are the proxy's other debug lines or attempts that succeeded: skip them unparsed.
        if '"handled request"' not in line and ('"upstream roundtrip"' not in line or '"error"' not in line):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        ts = entry.get("ts")
        if not isinstance(ts, (int, float)) or ts < since or (until is not None and ts > until):
            continue
        logger = str(entry.get("logger") or "")
        if logger == PROXY_LOGGER:
            if entry.get("msg") == "upstream roundtrip" and entry.get("error"):
                version = owner.get(str(entry.get("upstream") or ""))
                if version and "context canceled" not in str(entry["error"]):
                    versions[version].upstream_errors += 1
            continue
        if not logger.startswith(ACCESS_LOGGER):
            continue
        headers = entry.get("resp_headers") or {}
        if _header(headers, ROUTE_TAG) != service or _header(headers, HOLD_TAG):
            continue  # another route, or a held request's first pass (its second one counts)
        target = versions.get(owner.get(_header(headers, UPSTREAM_TAG) or "", ""), unrouted)
        status = entry.get("status") or 0
        seconds = entry.get("duration") or 0.0
        target.requests += 1
        if isinstance(status, int) and 500 <= status <= 599:
            target.status_5xx += 1
        if isinstance(seconds, (int, float)):
            target.latency.add(seconds * 1000)
        if _held(headers, seconds):
            target.held_or_retried += 1
    return versions, unrouted, read


def _header(headers: dict[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


def _held(headers: dict[str, Any], seconds: Any) -> bool:
    """The request waited in the proxy before the attempt that answered (or before it gave up)."""
    timing = _header(headers, TIMING_TAG)
    if timing:
        try:
            before, latency = (float(x) for x in timing.split())
        except ValueError:
            return False
        return before - latency >= HELD_MS
    error = _header(headers, ERROR_TAG) or ""
    # The proxy gave up: after retrying (a dial failed, no container up) if it took that long.
    return error.startswith(("dial ", "no upstreams")) and isinstance(seconds, (int, float)) \
        and seconds * 1000 >= HELD_MS


# ---- the log files ------------------------------------------------------------------------


@dataclass
class Mark:
    """Where the switch's log ended at the switch: the time and the size of each file (by inode)."""

    log: Path
    time: float
    offsets: dict[int, int]
    current: int = 0  # the inode of the log itself then (0: none yet)
    #: The first bytes of each file: an inode the file system reused for a new file is not the same file.
    heads: dict[int, bytes] = field(default_factory=dict)


def _files(log: Path) -> list[Path]:
    """The log and its rolled files (``receipt-a-<time>.log``), oldest first."""
    found = [p for p in log.parent.glob(f"{log.stem}-*{log.suffix}")]
    if log.exists():
        found.append(log)
    return sorted(found, key=lambda p: _stat(p)[1])


def _stat(path: Path) -> tuple[int, float]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0.0)
    return (st.st_ino, st.st_mtime)


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(HEAD)
    except OSError:
        return b""


HEAD = 128


def mark(log: Path) -> Mark:
    offsets, heads = {}, {}
    for path in _files(log):
        try:
            st = os.stat(path)
        except OSError:
            continue
        offsets[st.st_ino], heads[st.st_ino] = st.st_size, _head(path)
    return Mark(log, time.time(), offsets, _stat(log)[0] if log.exists() else 0, heads)


def _offset(start: Mark, path: Path, inode: int) -> int | None:
    """Where to read ``path`` from: the marked size if it is the file that was marked, else 0."""
    if inode not in start.offsets:
        return None
    head = start.heads.get(inode, b"")
    return start.offsets[inode] if _head(path)[:len(head)] == head else None


def read_since(start: Mark) -> Iterator[str]:
    """The lines written since ``start``, streamed (the log's roll is followed by inode)."""
    for path in _files(start.log):
        inode, mtime = _stat(path)
        if mtime and mtime < start.time - 1:
            continue
        with open(path, "rb") as handle:
            handle.seek(_offset(start, path, inode) or 0)
            for raw in handle:
                yield raw.decode("utf-8", "replace")


def take(start: Mark, service: str, versions: dict[str, dict[str, Any]], *,
         in_flight: dict[str, int | None] | None = None, settle: float = 0.3) -> Receipt:
    """The receipt of ``service`` since ``start``.

    ``versions``: version -> {"dials": [...], "containers": [...], "image_id": ...};
    ``in_flight``: version -> requests the proxy had open to it at the stop.
    ``settle``: a request ends (and is logged) a moment after the container that answered it stops.
    """
    time.sleep(settle)
    ended = time.time()
    dials = {v: list(info.get("dials") or []) for v, info in versions.items()}
    try:
        counts, unrouted, read = tally(read_since(start), service, dials, start.time, ended)
        missing = None
    except OSError as exc:
        counts, unrouted, read = {v: Tally(v) for v in dials}, Tally("unrouted"), 0
        missing = f"the proxy's log {start.log} could not be read ({exc.strerror or exc})"
    partial = None
    if missing is None and start.current and not any(
            _stat(p)[0] == start.current and _offset(start, p, start.current) is not None for p in _files(start.log)):
        # Busy enough to roll the log past what Caddy keeps during the window: counts are low.
        partial = "the proxy's log rolled over more often than it keeps files during the window: counts are low"
    for version, info in versions.items():
        counts[version].containers = list(info.get("containers") or [])
        counts[version].image_id = info.get("image_id")
        counts[version].in_flight_at_stop = (in_flight or {}).get(version)
    return Receipt(service, start.time, ended, list(counts.values()), unrouted, read, missing, partial)
