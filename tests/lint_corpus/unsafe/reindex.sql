-- expect: require-concurrent-reindex
REINDEX INDEX users_email_idx;
