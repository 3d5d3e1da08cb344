-- expect:
REINDEX INDEX CONCURRENTLY users_email_idx;
