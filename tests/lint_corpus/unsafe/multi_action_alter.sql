-- expect: adding-field-with-default adding-not-nullable-field ban-drop-column
ALTER TABLE users
    ADD COLUMN IF NOT EXISTS api_key text DEFAULT md5(random()::text),
    ALTER COLUMN email SET NOT NULL,
    DROP COLUMN IF EXISTS legacy_flag;
