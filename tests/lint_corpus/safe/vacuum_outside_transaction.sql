-- expect:
VACUUM (ANALYZE) users;
