"""Verified, rotated, offsite PostgreSQL backups run by generated Compose sidecars.

- :mod:`.generate` writes the override file (``backup generate``);
- ``sidecar.sh`` is what the sidecars run (dump, verify, retention, offsite, health), with
  ``shared.sh`` (the alert and the drop to the postgres user it shares with the PITR sidecar)
  put in place by :mod:`.generate`;
- :mod:`.host` drives the sidecar from the host (``backup now|list|verify|restore``);
- :mod:`.plugin` registers the commands, the built-in rclone target and the checks.
"""

from __future__ import annotations

from typing import Any, Callable

#: Functions (project, document) that add to the override once it is built; a capability built
#: on backups (compose_atomic.pitr) appends its own, so backup never imports it. Here rather than
#: in :mod:`.generate` so that registering one imports nothing heavy (yaml, the generator).
EXTENSIONS: list[Callable[[Any, dict[str, Any]], None]] = []
