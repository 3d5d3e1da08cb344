-- expect: unused-ignore
-- squawk-ignore ban-drop-column, no-such-rule
ALTER TABLE users DROP COLUMN IF EXISTS legacy_flag;
