-- expect: require-lock-timeout
BEGIN;
ALTER TABLE users ADD COLUMN nickname text;
COMMIT;
