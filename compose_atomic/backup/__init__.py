"""Verified, rotated, offsite PostgreSQL backups run by generated Compose sidecars.

- :mod:`.generate` writes the override file (``backup generate``);
- ``sidecar.sh`` is what the sidecars run (dump, verify, retention, offsite, health), with
  ``shared.sh`` (the alert and the drop to the postgres user it shares with the PITR sidecar)
  put in place by :mod:`.generate`;
- :mod:`.host` drives the sidecar from the host (``backup now|list|verify|restore``);
- :mod:`.plugin` registers the commands, the built-in rclone target and the checks.
"""
