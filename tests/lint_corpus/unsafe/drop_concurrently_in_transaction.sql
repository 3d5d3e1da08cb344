-- expect: ban-concurrent-index-creation-in-transaction
BEGIN;
SET LOCAL lock_timeout = '2s';
DROP INDEX CONCURRENTLY IF EXISTS users_email_idx;
COMMIT;
