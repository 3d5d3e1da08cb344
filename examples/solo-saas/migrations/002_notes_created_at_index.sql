-- Built without blocking writes: CONCURRENTLY cannot run inside a transaction,
-- so the runner applies this file on its own.
CREATE INDEX CONCURRENTLY IF NOT EXISTS notes_created_at_idx ON notes (created_at);
