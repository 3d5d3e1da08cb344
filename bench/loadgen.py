"""A bounded HTTP load generator for loopback targets (stdlib only).

    python bench/loadgen.py --url http://127.0.0.1:8088/cgi-bin/version --seconds 30 --json

Runs GET and POST clients at a fixed rate each, plus clients that always keep one
long request in flight, until --seconds pass or SIGTERM/SIGINT arrives. A request
fails on a connection error, a timeout, or a status other than 2xx. Prints a JSON
summary with failures, latencies and which versions answered (the first word after
"version" in the body).
"""

from __future__ import annotations

import argparse
import http.client
import json
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
            if ok and body.startswith("version "):
                version = body.split()[1]
                self.versions[version] += 1
                self.first_seen.setdefault(version, time.time())
                self.last_version = version


def one_request(target, method: str, path: str, timeout: float) -> tuple[bool, str, str]:
    conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=timeout)
    try:
        body = b"note=hello" if method == "POST" else None
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


def client(stats: Stats, stop: threading.Event, target, kind: str, rate: float, timeout: float) -> None:
    path = target.path or "/"
    if kind == "long":
        path += ("&" if "?" in path else "?") + "slow"
    method = "POST" if kind == "post" else "GET"
    interval = 1.0 / rate if rate else 0.0
    next_at = time.monotonic()
    while not stop.is_set():
        start = time.monotonic()
        ok, body, reason = one_request(target, method, path, timeout)
        stats.record(kind, ok, time.monotonic() - start, body, reason)
        if interval:
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))


def run(url: str, seconds: float, get_clients: int, post_clients: int, long_clients: int,
        rate: float, timeout: float) -> dict:
    target = urlsplit(url)
    stats, stop = Stats(), threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = [threading.Thread(target=client, args=(stats, stop, target, kind, r, timeout), daemon=True)
               for kind, count, r in (("get", get_clients, rate), ("post", post_clients, rate),
                                      ("long", long_clients, 0.0))
               for _ in range(count)]
    started = time.time()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(timeout + 1)
    lat = sorted(stats.latencies) or [0.0]
    short = sorted(l for l in stats.latencies if l < 2.5) or [0.0]
    return {
        "seconds": round(time.time() - started, 2),
        "requests": sum(stats.requests.values()),
        "by_kind": dict(stats.requests),
        "failed": sum(stats.failures.values()),
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
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    host = urlsplit(args.url).hostname or ""
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        parser.error("load is only ever sent to loopback addresses")
    result = run(args.url, args.seconds, args.get_clients, args.post_clients, args.long_clients,
                 args.rate, args.timeout)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
