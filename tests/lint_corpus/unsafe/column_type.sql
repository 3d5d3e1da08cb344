-- expect: changing-column-type
ALTER TABLE orders ALTER COLUMN id TYPE bigint;
