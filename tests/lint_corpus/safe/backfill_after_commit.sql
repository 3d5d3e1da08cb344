-- expect:
BEGIN;
SET LOCAL lock_timeout = '2s';
ALTER TABLE users ADD COLUMN plan text;
ALTER TABLE users ALTER COLUMN plan SET DEFAULT 'free';
COMMIT;
UPDATE users SET plan = 'free' WHERE plan IS NULL AND id < 10000;
