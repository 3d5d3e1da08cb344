-- expect: ban-drop-database
DROP DATABASE IF EXISTS staging;
