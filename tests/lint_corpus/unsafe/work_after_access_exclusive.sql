-- expect: work-after-access-exclusive
BEGIN;
SET LOCAL lock_timeout = '2s';
ALTER TABLE users ADD COLUMN plan text;
UPDATE users SET plan = 'free' WHERE plan IS NULL;
COMMIT;
