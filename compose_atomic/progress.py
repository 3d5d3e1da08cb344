"""Progress on stderr in Compose's style; stdout stays for data.

Three modes, as Compose has them: ``tty`` (glyphs and colour), ``plain`` (the same
lines without colour, for CI logs and NO_COLOR) and ``json`` (one object per line,
with Compose's field names).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import IO

GLYPHS = {"done": "✔", "warning": "!", "error": "✘", "working": "⠿", "info": " "}
COLOURS = {"done": "green", "warning": "yellow", "error": "red", "working": "blue", "info": None}


def detect_mode(requested: str | None = None, stream: IO[str] | None = None) -> str:
    """Pick tty, plain or json from --progress / COMPOSE_PROGRESS, NO_COLOR and the terminal."""
    stream = stream or sys.stderr
    mode = requested or os.environ.get("COMPOSE_PROGRESS") or "auto"
    if mode in ("tty", "plain", "json", "quiet"):
        return mode
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return "plain"
    return "tty" if hasattr(stream, "isatty") and stream.isatty() else "plain"


class Progress:
    """Writes one line per event about a resource (a container, the proxy, a snapshot)."""

    def __init__(self, mode: str | None = None, stream: IO[str] | None = None, dry_run: bool = False):
        self.stream = stream or sys.stderr
        self.mode = detect_mode(mode, self.stream)
        self.dry_run = dry_run
        self.started = time.monotonic()

    def event(self, resource: str, status: str, details: str = "", *, state: str = "done",
              elapsed: float | None = None) -> None:
        """Report that ``resource`` reached ``status`` (Compose: ``Container x  Started``)."""
        if self.mode == "quiet":
            return
        if self.mode == "json":
            record = {"dry-run": self.dry_run, "id": resource, "status": status,
                      "text": status, "details": details, "state": state}
            print(json.dumps(record), file=self.stream, flush=True)
            return
        prefix = "DRY-RUN MODE - " if self.dry_run else ""
        timing = f"  {elapsed:.1f}s" if elapsed is not None else ""
        extra = f"  {details}" if details else ""
        if self.mode == "tty":
            import click

            glyph = click.style(GLYPHS.get(state, " "), fg=COLOURS.get(state))
            line = f" {glyph} {prefix}{resource}  {click.style(status, fg=COLOURS.get(state))}{extra}{timing}"
        else:
            line = f"{prefix}{resource}  {status}{extra}{timing}"
        print(line, file=self.stream, flush=True)

    def step(self, text: str) -> None:
        """A header for a group of events, like Compose's ``[+] Running 2/2``."""
        if self.mode in ("quiet", "json"):
            if self.mode == "json":
                print(json.dumps({"dry-run": self.dry_run, "id": "", "status": text, "text": text,
                                  "details": "", "state": "info"}), file=self.stream, flush=True)
            return
        prefix = "DRY-RUN MODE - " if self.dry_run else ""
        print(f"[+] {prefix}{text}", file=self.stream, flush=True)

    def warn(self, resource: str, text: str) -> None:
        self.event(resource, "Warning", text, state="warning")

    def fail(self, resource: str, text: str) -> None:
        self.event(resource, "Error", text, state="error")


def error_line(message: str) -> str:
    """Format a fatal error for stderr, coloured only on a terminal without NO_COLOR."""
    if detect_mode() == "tty":
        import click

        return click.style("✘ ", fg="red") + message
    return "error: " + message
