-- expect: require-concurrent-index-deletion
DROP INDEX IF EXISTS users_email_idx;
