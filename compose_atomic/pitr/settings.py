"""``x-atomic.backup.pitr`` parsed once into a typed object (defaults in compose_atomic.settings)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..settings import DEFAULTS

if TYPE_CHECKING:
    from ..project import Project

_SPAN = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_SIZE = re.compile(r"^\d+(?:kB|MB|GB|TB)$")


def parse_span(text: Any, where: str) -> float:
    """``7d``, ``36h``, ``2m``, ``90s``, ``1d12h``: seconds."""
    match = _SPAN.match(str(text)) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise ConfigError(f"x-atomic.backup.pitr.{where}: {text!r} is not a duration; use forms like 7d, 36h, 2m or 90s.")
    d, h, m, s = (int(g or 0) for g in match.groups())
    return float(((d * 24 + h) * 60 + m) * 60 + s)


@dataclass(frozen=True)
class PitrSettings:
    keep: float
    max_wal_keep: str
    max_lag: float
    schedule: str
    verify_schedule: str
    full_every: int
    incremental: bool


def pitr_settings(project: Project, service: str) -> PitrSettings:
    from ..backup import cron

    backup = project.service_x_atomic(service).get("backup") or {}
    pitr = backup.get("pitr") or {}
    if pitr is True:
        pitr = {}
    size = str(pitr.get("max_wal_keep", DEFAULTS["backup.pitr.max_wal_keep"]))
    if not _SIZE.match(size):
        raise ConfigError(f'service "{service}": x-atomic.backup.pitr.max_wal_keep: {size!r} is not a size; '
                          "use a number with kB, MB, GB or TB (PostgreSQL's units), e.g. 4GB.")
    schedules = {}
    for key, value in (("schedule", backup.get("schedule", DEFAULTS["backup.schedule"])),
                       ("verify", pitr.get("verify", DEFAULTS["backup.pitr.verify"]))):
        try:
            schedules[key] = cron.normalize(str(value))
        except cron.CronError as error:
            raise ConfigError(f'service "{service}": x-atomic.backup.{"pitr." if key == "verify" else ""}{key}: {error}') from None
    return PitrSettings(
        keep=parse_span(pitr.get("keep", DEFAULTS["backup.pitr.keep"]), "keep"),
        max_wal_keep=size,
        max_lag=parse_span(pitr.get("max_lag", DEFAULTS["backup.pitr.max_lag"]), "max_lag"),
        schedule=schedules["schedule"],
        verify_schedule=schedules["verify"],
        full_every=int(pitr.get("full_every", DEFAULTS["backup.pitr.full_every"])),
        incremental=bool(pitr.get("incremental", DEFAULTS["backup.pitr.incremental"])),
    )
