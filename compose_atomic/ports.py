"""Compose's ``ports:`` syntax, read in one place (services' ports, ``x-atomic.proxy.ports``).

Short syntax ``[HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL]`` (``[::1]:8080:80``, ``8000-8001:8000-8001``)
or the long one (``{target, published, host_ip, protocol}``, what ``docker compose config`` prints).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Port:
    """One ``ports:`` entry."""

    raw: str
    target: int | None  # the container's port (the first of a range); None when unreadable
    published: str | None = None  # the host side as written, when the port is published on the host
    host_ip: str = ""  # without brackets (``::1``)
    protocol: str = "tcp"

    @property
    def listen_address(self) -> str:
        """``HOST_IP:PUBLISHED`` for a socket on the host (the target when nothing is published)."""
        ip = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{ip}:{int(first(self.published) or self.target or 0)}"


def first(value: str | None) -> str | None:
    """The first port of a range (``8000-8001``), or the value itself."""
    return value.split("-", 1)[0] if value else value


def as_int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def parse_port(entry: Any) -> Port:
    """One ``ports:`` entry, short or long syntax."""
    if isinstance(entry, dict):
        target, published = entry.get("target"), entry.get("published")
        raw = f"{published}:{target}" if published not in (None, "") else str(target)
        return Port(raw, as_int(target), str(published) if published not in (None, "") else None,
                    str(entry.get("host_ip") or ""), str(entry.get("protocol") or "tcp").lower())
    raw = str(entry)
    spec, _, protocol = raw.partition("/")
    host_ip = ""
    if spec.startswith("["):  # [::1]:8000:8000
        host_ip, _, spec = spec[1:].partition("]:")
    parts = spec.split(":")
    if len(parts) >= 3:
        host_ip, parts = parts[0], parts[-2:]
    published = parts[0] if len(parts) == 2 and parts[0] else None
    return Port(raw, as_int(first(parts[-1])), published, host_ip, (protocol or "tcp").lower())
