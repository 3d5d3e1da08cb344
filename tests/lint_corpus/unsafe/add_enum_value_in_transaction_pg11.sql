-- expect: ban-concurrent-index-creation-in-transaction
-- options: --assume-in-transaction --pg-version 11
ALTER TYPE mood ADD VALUE 'meh' AFTER 'ok';
