-- expect:
-- CREATE INDEX users_email_idx ON users (email);
/* DROP TABLE users;
   ALTER TABLE users RENAME TO people; */
SELECT 1;
