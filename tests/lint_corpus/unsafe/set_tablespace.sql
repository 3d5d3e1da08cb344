-- expect: table-rewrite
ALTER TABLE users SET TABLESPACE fast_ssd;
