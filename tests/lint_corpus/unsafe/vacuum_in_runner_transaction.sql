-- expect: ban-concurrent-index-creation-in-transaction
-- options: --assume-in-transaction
VACUUM (ANALYZE) users;
