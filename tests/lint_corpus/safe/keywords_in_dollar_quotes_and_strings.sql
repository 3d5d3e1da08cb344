-- expect:
BEGIN;
CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  -- CREATE INDEX i ON users (email); DROP TABLE users;
  EXECUTE 'CREATE INDEX i ON users (email)';
  NEW.updated_at := now();
  RETURN NEW;
END
$body$;
INSERT INTO notes (body) VALUES ('DROP TABLE users; ALTER TABLE users DROP COLUMN x;'), ($$VACUUM FULL; COMMIT;$$);
COMMIT;
