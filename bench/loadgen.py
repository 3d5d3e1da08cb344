"""A bounded HTTP load generator for loopback targets (stdlib only).

    python bench/loadgen.py --url http://127.0.0.1:8088/cgi-bin/version --seconds 30 --json

Runs GET and POST clients at a fixed rate each, plus clients that always keep one
long request in flight (--long-path, default the URL's path with ?slow), until --seconds
pass or SIGTERM/SIGINT arrives. A request fails on a connection error, a timeout, or a
status other than 2xx. Prints a JSON summary with failures, latencies and which versions
answered (the first word after "version" in a text body, or a JSON body's "version").

Every POST carries its own key (`note=<key>`). With --acked FILE, each POST the app
acknowledged (2xx) is written there as a line `<key> <id>` (the id from a JSON body's
"id", or `-`), so that the caller can check afterwards that every acknowledged write is
still in the database.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import signal
import statistics
import threading
import time
from collections import Counter
from urllib.parse import urlsplit


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.long_completed = 0
        self.long_failed = 0
        self.first_seen: dict[str, float] = {}
        self.last_version = ""
        self.acked: list[tuple[str, str]] = []

    def record(self, kind: str, ok: bool, latency: float, body: str, reason: str = "") -> None:
        with self.lock:
            self.requests[kind] += 1
            self.latencies.append(latency)
            if not ok:
                self.failures[f"{kind}: {reason}"] += 1
            if kind == "long":
                if ok:
                    self.long_completed += 1
                else:
                    self.long_failed += 1
            version = _version(body) if ok else ""
            if version:
                self.versions[version] += 1
                self.first_seen.setdefault(version, time.time())
                self.last_version = version


    def ack(self, key: str, body: str) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        ident = data.get("id") if isinstance(data, dict) else None
        with self.lock:
            self.acked.append((key, "-" if ident is None else str(ident)))


def _version(body: str) -> str:
    """The version that answered: "version 2" in a text body, or a JSON body's "version"."""
    if body.startswith("version "):
        return body.split()[1] if len(body.split()) > 1 else ""
    if body.startswith("{"):
        try:
            data = json.loads(body)
        except ValueError:
            return ""
        if isinstance(data, dict) and data.get("version") is not None:
            return str(data["version"])
    return ""


def one_request(target, method: str, path: str, timeout: float, key: str = "hello") -> tuple[bool, str, str]:
    conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=timeout)
    try:
        body = f"note={key}".encode() if method == "POST" else None
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode(errors="replace").strip()
        if 200 <= response.status < 300:
            return True, text, ""
        return False, text, f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as exc:
        return False, "", type(exc).__name__
    finally:
        conn.close()


def client(stats: Stats, stop: threading.Event, target, kind: str, rate: float, timeout: float,
           long_path: str | None = None, name: str = "c") -> None:
    path = target.path or "/"
    if target.query:
        path += "?" + target.query
    if kind == "long":
        path = long_path or path + ("&" if "?" in path else "?") + "slow"
    method = "POST" if kind == "post" else "GET"
    interval = 1.0 / rate if rate else 0.0
    next_at = time.monotonic()
    for n in itertools.count(1):
        if stop.is_set():
            break
        key = f"{name}-{n}"
        start = time.monotonic()
        ok, body, reason = one_request(target, method, path, timeout, key)
        stats.record(kind, ok, time.monotonic() - start, body, reason)
        if ok and method == "POST":
            stats.ack(key, body)
        if interval:
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))


def run(url: str, seconds: float, get_clients: int, post_clients: int, long_clients: int,
        rate: float, timeout: float, long_path: str | None = None, acked: str | None = None) -> dict:
    target = urlsplit(url)
    stats, stop = Stats(), threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_id = f"{os.getpid()}-{int(time.time())}"  # keys unique across runs against one database
    threads = [threading.Thread(target=client, daemon=True,
                                args=(stats, stop, target, kind, r, timeout, long_path, f"{run_id}-{kind}{i}"))
               for kind, count, r in (("get", get_clients, rate), ("post", post_clients, rate),
                                      ("long", long_clients, 0.0))
               for i in range(count)]
    started = time.time()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(timeout + 1)
    if acked:
        with open(acked, "w") as fh:
            fh.writelines(f"{key} {ident}\n" for key, ident in stats.acked)
    lat = sorted(stats.latencies) or [0.0]
    short = sorted(l for l in stats.latencies if l < 2.5) or [0.0]
    return {
        "seconds": round(time.time() - started, 2),
        "requests": sum(stats.requests.values()),
        "by_kind": dict(stats.requests),
        "failed": sum(stats.failures.values()),
        "writes_acknowledged": len(stats.acked),
        "failures": dict(stats.failures),
        "long_completed": stats.long_completed,
        "long_failed": stats.long_failed,
        "p50_ms": round(statistics.median(short) * 1000, 1),
        "p99_ms": round(short[int(len(short) * 0.99) - 1 if len(short) > 1 else 0] * 1000, 1),
        "max_short_ms": round(short[-1] * 1000, 1),
        "max_ms": round(lat[-1] * 1000, 1),
        "versions": dict(stats.versions),
        "first_seen": {v: round(t - started, 2) for v, t in stats.first_seen.items()},
        "last_version": stats.last_version,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--get-clients", type=int, default=4)
    parser.add_argument("--post-clients", type=int, default=4)
    parser.add_argument("--long-clients", type=int, default=2)
    parser.add_argument("--rate", type=float, default=25.0, help="requests per second per client")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--long-path", help="path (and query) of the long requests; default: the URL's with ?slow")
    parser.add_argument("--acked", metavar="FILE", help="write each acknowledged POST's key and id there")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    host = urlsplit(args.url).hostname or ""
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        parser.error("load is only ever sent to loopback addresses")
    result = run(args.url, args.seconds, args.get_clients, args.post_clients, args.long_clients,
                 args.rate, args.timeout, args.long_path, args.acked)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
