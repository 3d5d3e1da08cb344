-- expect: ban-drop-table
DROP TABLE IF EXISTS sessions;
