-- expect:
CREATE TABLE IF NOT EXISTS invoices (id bigint PRIMARY KEY, user_id bigint);
CREATE INDEX IF NOT EXISTS invoices_user_idx ON invoices (user_id);
ALTER TABLE invoices ALTER COLUMN user_id SET NOT NULL;
