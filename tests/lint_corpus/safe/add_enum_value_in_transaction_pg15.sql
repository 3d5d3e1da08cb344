-- expect:
-- options: --assume-in-transaction
ALTER TYPE mood ADD VALUE IF NOT EXISTS 'meh' AFTER 'ok';
