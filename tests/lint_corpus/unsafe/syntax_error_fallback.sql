-- expect: syntax-error require-concurrent-index-creation
CREATE INDEX users_name_idx ON users (name) WITH BOGUS SYNTAX HERE;
SELECT 1;
