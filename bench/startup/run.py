"""Start-up time of compose-atomic against `docker compose`, measured in one run.

    .venv/bin/python bench/startup/run.py [--runs 30]

Reports the median wall time and peak RSS of each command and the ratio to its
Compose counterpart. Pass-through commands pay our start-up plus Compose's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAIRS = [
    ("compose-atomic --help", [sys.executable, "-m", "compose_atomic", "--help"],
     "docker compose version", ["docker", "compose", "version"]),
    ("compose-atomic version (pass-through)", [sys.executable, "-m", "compose_atomic", "version"],
     "docker compose version", ["docker", "compose", "version"]),
    ("compose-atomic ps (pass-through)", [sys.executable, "-m", "compose_atomic", "ps"],
     "docker compose ps", ["docker", "compose", "ps"]),
]


def measure(argv: list[str], runs: int, cwd: str) -> tuple[float, float]:
    times, peak = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, _, usage = os.wait4(proc.pid, 0)
        times.append(time.perf_counter() - start)
        peak = max(peak, usage.ru_maxrss)
    return statistics.median(times), peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "compose.yaml").write_text("services:\n  web:\n    image: busybox\n")
        rows = []
        for ours_name, ours, theirs_name, theirs in PAIRS:
            ours_t, ours_mem = measure(ours, args.runs, tmp)
            theirs_t, theirs_mem = measure(theirs, args.runs, tmp)
            rows.append({"command": ours_name, "median_s": round(ours_t, 4), "peak_rss_mb": round(ours_mem, 1),
                         "peer": theirs_name, "peer_median_s": round(theirs_t, 4),
                         "peer_peak_rss_mb": round(theirs_mem, 1), "ratio": round(ours_t / theirs_t, 2)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'command':40} {'median':>8} {'RSS MB':>7}   {'peer':26} {'median':>8} {'RSS MB':>7} {'ratio':>6}")
    for r in rows:
        print(f"{r['command']:40} {r['median_s']:8.3f} {r['peak_rss_mb']:7.1f}   {r['peer']:26} "
              f"{r['peer_median_s']:8.3f} {r['peer_peak_rss_mb']:7.1f} {r['ratio']:6.2f}")


if __name__ == "__main__":
    main()
