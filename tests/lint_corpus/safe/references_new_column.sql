-- expect:
-- A new column is all NULL: PostgreSQL does not scan to validate its foreign key.
SET lock_timeout = '2s';
ALTER TABLE orders ADD COLUMN IF NOT EXISTS account_id bigint REFERENCES accounts (id);
