-- expect: adding-field-with-default
ALTER TABLE orders ADD COLUMN total_cents bigint GENERATED ALWAYS AS (qty * price_cents) STORED;
