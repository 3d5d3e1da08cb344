"""Durations in Compose's (Go's) form: ``30s``, ``1m30s``, ``500ms``, ``1h``."""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Return seconds for a Go duration string; raise ValueError with the accepted forms."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{text!r} is not a duration; use forms like 30s, 1m30s or 500ms")
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"{text!r} is not a duration; use forms like 30s, 1m30s or 500ms")
    return total


def parse_positive_option(option: str, text: str) -> float:
    """Seconds for ``option``'s duration (``--timeout 30s``), which must be more than 0s; a
    ``UsageError`` naming the option otherwise."""
    from .errors import UsageError

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
    if seconds <= 0:
        raise UsageError(f"{option}: must be more than 0s")
    return seconds


def format_duration(seconds: float) -> str:
    """Short human form used in progress lines (``0.3s``, ``1m05s``)."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m{rest:02d}s"
