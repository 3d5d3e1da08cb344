"""The receipt's parse (pure): the switch's log lines in, counts per version out."""

from __future__ import annotations

import json
import os
import random

from compose_atomic.deploy import receipt as receipts
from compose_atomic.deploy.alert import with_receipt
from compose_atomic.deploy.receipt import Histogram, Mark, read_since, summary, tally

OLD, NEW = ["192.168.144.2:8080", "p-web-1:8080"], ["192.168.144.4:8080", "p-web-2:8080"]
REQUEST = {"remote_ip": "@", "remote_port": "", "client_ip": "", "proto": "HTTP/1.1", "method": "GET",
           "host": "127.0.0.1:51013"}


def access(ts, status, upstream=None, *, route="web", timing=None, error=None, duration=0.0028, hold=False):
    """An access line as Caddy 2.11 writes it with the switch's tags (see tests/test_receipt.py)."""
    headers = {"X-Compose-Atomic-Route": [route], "Content-Type": ["text/plain"], "Via": ["1.1 Caddy"]}
    if upstream is not None:
        headers["X-Compose-Atomic-Upstream"] = [upstream]
    if timing is not None:
        headers["X-Compose-Atomic-Timing"] = [timing]
    if error is not None:
        headers["X-Compose-Atomic-Error"] = [error]
    if hold:
        headers["X-Compose-Atomic-Hold"] = ["1"]
    return json.dumps({"level": "info" if status < 400 else "error", "ts": ts, "logger": "http.log.access.ca_receipt",
                       "msg": "handled request", "request": REQUEST, "bytes_read": 0, "user_id": "",
                       "duration": duration, "size": 3, "status": status, "resp_headers": headers})


def attempt(ts, upstream, error=None):
    entry = {"level": "debug", "ts": ts, "logger": "http.handlers.reverse_proxy", "msg": "upstream roundtrip",
             "upstream": upstream, "duration": 0.2, "request": REQUEST}
    if error:
        entry["error"] = error
    else:
        entry["status"] = 200
    return json.dumps(entry)


SAMPLE = [
    access(99.0, 200, OLD[0], timing="2.4 2.2"),                      # before the window: not counted
    access(100.1, 200, OLD[0], timing="2.497299 2.215847"),
    attempt(100.2, NEW[0]),
    access(100.2, 200, NEW[0], timing="1.9 1.7", duration=0.0019),
    attempt(100.3, NEW[0], "dial tcp 192.168.144.4:8080: connect: connection refused"),
    access(100.4, 200, OLD[0], timing="152.0 2.0", duration=0.154),  # retried on the old one
    attempt(100.5, NEW[0], "EOF"),
    access(100.5, 502, NEW[0], error="EOF", duration=0.18),          # a POST inside the dying container
    attempt(100.6, NEW[1], "context canceled"),                     # the client left: not the upstream's fault
    access(100.7, 503, "", error="no upstreams available", duration=0.21),  # nothing up: held, then 503
    access(100.8, 503, route="web"),                                 # maintenance page: no upstream at all
    access(100.9, 200, OLD[0], route="api", timing="1 1"),          # another route
    access(101.0, 200, NEW[0], timing="900.0 1.0", hold=True),       # a held request's first pass
    "not json {",
    access(103.0, 200, NEW[0], timing="1 1"),                        # after the window
]


def test_counts_per_version_from_a_sample_of_the_switchs_log():
    versions, unrouted, read = tally(SAMPLE, "web", {"old": OLD, "new": NEW}, since=100.0, until=102.0)
    old, new = versions["old"], versions["new"]
    assert read == len(SAMPLE)
    assert (old.requests, old.status_5xx, old.upstream_errors, old.held_or_retried) == (2, 0, 0, 1)
    assert (new.requests, new.status_5xx, new.upstream_errors, new.held_or_retried) == (2, 1, 2, 0)
    assert (unrouted.requests, unrouted.status_5xx, unrouted.held_or_retried) == (2, 2, 1)
    assert new.latency.max == 180.0 and old.latency.max == 154.0
    assert abs(old.latency.quantile(0.5) - 2.8) < 2.8 * 0.021


def test_latency_percentiles_are_within_two_percent_and_memory_stays_bounded():
    rng = random.Random(7)
    values = [rng.lognormvariate(1.5, 1.2) for _ in range(50_000)]
    hist = Histogram()
    for v in values:
        hist.add(v)
    exact = sorted(values)
    for q in (0.5, 0.95, 0.99):
        truth = exact[max(0, int(q * len(exact) + 0.999999) - 1)]
        assert abs(hist.quantile(q) - truth) <= truth * 0.021, (q, hist.quantile(q), truth)
    assert hist.max == max(values) and len(hist.buckets) < 1000
    assert Histogram().quantile(0.5) is None


def test_the_log_is_read_from_the_mark_and_its_roll_is_followed(tmp_path):
    log = tmp_path / "receipt-a.log"
    log.write_text(access(100.1, 200, OLD[0], timing="1 1") + "\n")
    start = receipts.mark(log)
    with open(log, "a") as handle:
        handle.write(access(100.2, 200, NEW[0], timing="1 1") + "\n")
    os.rename(log, tmp_path / "receipt-a-2026-12-01T23-59-59.000.log")  # Caddy rolls it
    log.write_text(access(100.3, 200, NEW[0], timing="1 1") + "\n")
    lines = list(read_since(Mark(log, 100.0, start.offsets)))
    assert [json.loads(x)["ts"] for x in lines] == [100.2, 100.3]


def test_summary_lines_and_the_webhook_message():
    versions, unrouted, _ = tally(SAMPLE, "web", {"old": OLD, "new": NEW}, since=100.0, until=102.0)
    versions["new"].containers, versions["old"].containers = ["p-web-2"], ["p-web-1"]
    versions["old"].in_flight_at_stop = 1
    stored = receipts.Receipt("web", 100.0, 102.0, list(versions.values()), unrouted).to_dict()
    assert stored["started"] == "1970-01-01T00:01:40.000Z" and stored["seconds"] == 2.0
    lines = summary(stored)
    assert lines[0].startswith("old p-web-1: 2 requests, 0 5xx, 0 upstream errors, 1 held or retried, p50 ")
    assert lines[0].endswith(", 1 in flight at the stop")
    assert lines[1].startswith("new p-web-2: 2 requests, 1 5xx, 2 upstream errors")
    assert lines[2] == "answered by the proxy itself (no container to send to): 2 requests, 2 5xx"
    assert receipts.failed_requests(stored) == 3 and receipts.failed_requests(None) == 0
    message = with_receipt(":warning: shop/web: deploy rolled back: crashed", stored)
    assert message.splitlines()[1] == "> " + lines[0]
    assert with_receipt("text", None) == "text"
    assert summary({"missing": "the proxy's log could not be read"}) == ["no receipt: the proxy's log could not be read"]


def test_a_log_that_rolled_away_during_the_window_makes_a_partial_receipt(tmp_path):
    log = tmp_path / "receipt-a.log"
    log.write_text(access(100.1, 200, OLD[0], timing="1 1") + "\n")
    start = receipts.mark(log)
    log.unlink()  # rolled, and the rolled file removed by roll_keep
    log.write_text(access(start.time, 200, NEW[0], timing="1 1") + "\n")
    taken = receipts.take(start, "web", {"old": {"dials": OLD}, "new": {"dials": NEW}}, settle=0).to_dict()
    assert taken["versions"][1]["requests"] == 1 and "rolled over" in taken["partial"]
    assert summary(taken)[-1].startswith("partial: ")
