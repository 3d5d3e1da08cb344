-- expect:
-- squawk-ignore-file
CREATE INDEX users_email_idx ON users (email);
DROP TABLE sessions;
