-- expect:
SET lock_timeout = '2s';
-- squawk-ignore ban-drop-column, prefer-robust-stmts -- the app stopped using it in v41
ALTER TABLE users DROP COLUMN legacy_flag;
/* compose-atomic-ignore renaming-column */ ALTER TABLE users RENAME COLUMN name TO full_name;
