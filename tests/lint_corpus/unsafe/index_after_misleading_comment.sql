-- expect: require-concurrent-index-creation
/* CREATE INDEX CONCURRENTLY is what we should write */ CREATE INDEX orders_created_idx ON orders (created_at); -- CONCURRENTLY
