-- expect: table-rewrite
CLUSTER users USING users_pkey;
