-- expect: adding-foreign-key-constraint
-- With a default every existing row gets a value, which PostgreSQL validates against accounts.
ALTER TABLE orders ADD COLUMN account_id bigint DEFAULT 1 REFERENCES accounts (id);
