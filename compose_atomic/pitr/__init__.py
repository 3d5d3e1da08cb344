"""Point-in-time recovery for PostgreSQL services with ``x-atomic.backup.pitr`` (docs/backups.md)."""
