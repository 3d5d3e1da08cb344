"""compose-atomic lint vs squawk, in one run: wall time and peak memory.

    .venv/bin/python bench/lint/run.py [--repeat 7]

Inputs are generated (bench/lint/generate.py): a 5,000-statement file (~370 KB) and a
typical 50-statement migration. Both tools run as a user runs them (a fresh process,
JSON output, interpreter start included). Peak memory is the child's max RSS from
GNU time. We report the median of --repeat runs and the ratio to squawk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from generate import generate, history  # noqa: E402


def measure(argv: list[str]) -> tuple[float, int, int, bytes, float]:
    """(wall seconds, peak RSS in KiB, exit code, stdout, CPU seconds) of one process.

    Peak RSS comes from GNU time's %M: GNU time's ru_maxrss would include the pages the
    forked child shares with this Python process before it execs."""
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", *argv], capture_output=True)
    wall = time.perf_counter() - started
    rss, user, system = proc.stderr.decode().strip().splitlines()[-1].split()
    return wall, int(rss), proc.returncode, proc.stdout, float(user) + float(system)


def instructions(argv: list[str]) -> int | None:
    """Instructions the process executes (valgrind's callgrind, about 50x slower): a figure the
    load of a shared machine does not change, unlike wall and CPU time."""
    import re
    import shutil

    if not shutil.which("valgrind"):
        return None
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
                          capture_output=True, timeout=3600)
    found = re.search(rb"Collected : (\d+)", proc.stderr)
    return int(found.group(1)) if found else None


def tool_argv(tool: str, path: Path) -> list[str]:
    """Each tool's command as a user types it (compose-atomic's console script, not ``python -m``,
    which also imports runpy). squawk takes files, not directories: both get the same files (a
    directory as its sorted *.sql)."""
    paths = sorted(str(p) for p in path.glob("*.sql")) if path.is_dir() else [str(path)]
    if tool == "compose-atomic":
        return [str(Path(sys.executable).parent / "compose-atomic"), "lint", "--format", "json", *paths]
    squawk = Path(sys.executable).parent / "squawk"
    return [str(squawk), "--reporter", "json", *paths]


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.sql")) if path.is_dir() else path.stat().st_size


# Targets from issue 14 (wall time, fresh process): within 2x of squawk on the history file and the
# directory, under 120 ms for one small file.
TARGETS = {"history, concatenated": ("ratio", 2.0), "history, 342 files": ("ratio", 2.0),
           "one 33 KB file": ("ms", 120)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--instructions", action="store_true",
                        help="also count executed instructions with valgrind (load-independent, slow)")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    env_note = {"NO_COLOR": "1"}
    os.environ.update(env_note)
    # Bytecode as an installed package has it (pip compiles at install): without this, an
    # editable checkout under PYTHONDONTWRITEBYTECODE recompiles every module in every run.
    import compose_atomic

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(compose_atomic.__file__).parent)],
                   capture_output=True, timeout=300)
    with tempfile.TemporaryDirectory() as tmp:  # no compose file around: pure lint
        os.chdir(tmp)
        inputs = {"5,000 statements": Path(tmp) / "big.sql", "50-statement migration": Path(tmp) / "migration.sql",
                  "history, concatenated": Path(tmp) / "history.sql", "history, 342 files": Path(tmp) / "history",
                  "one 33 KB file": Path(tmp) / "one.sql"}
        inputs["5,000 statements"].write_text(generate(5000))
        inputs["50-statement migration"].write_text(generate(50))
        files = history()
        inputs["history, 342 files"].mkdir()
        for i, text in enumerate(files):
            (inputs["history, 342 files"] / f"{i:04d}_migration.sql").write_text(text)
        inputs["history, concatenated"].write_text("".join(files))
        inputs["one 33 KB file"].write_text("".join(history(files=1, target_bytes=33_000, seed=3, vary=False)))
        rows = []
        for label, path in inputs.items():
            results = {}
            for tool in ("compose-atomic", "squawk"):
                measure(tool_argv(tool, path))  # warm the page cache
                runs = [measure(tool_argv(tool, path)) for _ in range(args.repeat)]
                findings = len(json.loads(runs[0][3] or b"[]"))
                results[tool] = (statistics.median(r[0] for r in runs), max(r[1] for r in runs), findings,
                                 statistics.median(r[4] for r in runs),
                                 instructions(tool_argv(tool, path)) if args.instructions else None)
            rows.append((label, size_of(path), results))
    import pglast
    import sqlparse

    squawk_version = subprocess.run(tool_argv("squawk", Path("x"))[:1] + ["--version"], capture_output=True,
                                    text=True).stdout.strip()
    print(f"# compose-atomic lint vs squawk ({time.strftime('%Y-%m-%d')})\n")
    print(f"Python {platform.python_version()}, pglast {pglast.__version__}, sqlparse {sqlparse.__version__}, "
          f"{squawk_version}; {platform.machine()} {os.cpu_count()} CPUs; median of {args.repeat} runs, "
          "fresh process each (interpreter start included), JSON output.\n")
    print(f"Load average at the start: {load_start:.2f}, at the end: {os.getloadavg()[0]:.2f} (the machine is shared: CPU time is the steadier figure).\n")
    print("| input | size | tool | wall | CPU | peak RSS | findings | wall ratio | CPU ratio | instructions "
          "| instr. ratio | memory ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for label, size, results in rows:
        sq_wall, sq_rss, _, sq_cpu, sq_ins = results["squawk"]
        for tool, (wall, rss, findings, cpu, ins) in results.items():
            cpu_ratio = f"{cpu / sq_cpu:.2f}x" if sq_cpu else "-"
            ins_text = f"{ins / 1e6:,.0f} M" if ins else "-"
            ins_ratio = f"{ins / sq_ins:.2f}x" if ins and sq_ins else "-"
            print(f"| {label} | {size / 1024:.0f} KB | {tool} | {wall * 1000:.0f} ms | {cpu * 1000:.0f} ms | "
                  f"{rss / 1024:.1f} MiB | {findings} | {wall / sq_wall:.2f}x | {cpu_ratio} | {ins_text} | {ins_ratio} "
                  f"| {rss / sq_rss:.2f}x |")
        if label in TARGETS:
            kind, limit = TARGETS[label]
            wall, ins = results["compose-atomic"][0], results["compose-atomic"][4]
            value = wall / sq_wall if kind == "ratio" else wall * 1000
            shown = f"{value:.2f}x squawk" if kind == "ratio" else f"{value:.0f} ms"
            want = f"within {limit:g}x" if kind == "ratio" else f"under {limit:g} ms"
            extra = f"; {ins / sq_ins:.2f}x squawk in instructions" if kind == "ratio" and ins and sq_ins else ""
            verdicts.append(f"- {label}: {shown} wall ({want}): {'met' if value <= limit else 'NOT met'}{extra}")
    print("\nTargets (issue 14):\n")
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
