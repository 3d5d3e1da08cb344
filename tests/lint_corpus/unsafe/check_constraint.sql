-- expect: constraint-missing-not-valid
ALTER TABLE orders ADD CONSTRAINT amount_positive CHECK (amount > 0);
