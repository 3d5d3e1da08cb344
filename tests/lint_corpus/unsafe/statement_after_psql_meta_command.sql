-- expect: ban-drop-column
-- A meta-command line used to swallow the statement after it (issue #14): psql sends this DROP COLUMN.
\set ON_ERROR_STOP on
BEGIN;
SET LOCAL lock_timeout = '2s';
ALTER TABLE users DROP COLUMN legacy_flag;
COMMIT;
