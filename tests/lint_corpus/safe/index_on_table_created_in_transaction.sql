-- expect:
BEGIN;
SET LOCAL lock_timeout = '2s';
CREATE TABLE invoices (id bigint PRIMARY KEY, user_id bigint NOT NULL);
CREATE INDEX invoices_user_idx ON invoices (user_id);
ALTER TABLE invoices ADD CONSTRAINT invoices_user_fk FOREIGN KEY (user_id) REFERENCES users (id);
COMMIT;
