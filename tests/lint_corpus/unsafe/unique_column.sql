-- expect: disallowed-unique-constraint
ALTER TABLE users ADD COLUMN handle text UNIQUE;
