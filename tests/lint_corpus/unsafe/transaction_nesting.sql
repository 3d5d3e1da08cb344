-- expect: transaction-nesting
-- options: --assume-in-transaction
BEGIN;
ALTER TABLE users ADD COLUMN nickname text;
COMMIT;
