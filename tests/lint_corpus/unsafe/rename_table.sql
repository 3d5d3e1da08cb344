-- expect: renaming-table
ALTER TABLE users RENAME TO accounts;
