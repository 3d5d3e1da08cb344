-- expect: table-rewrite
VACUUM FULL users;
