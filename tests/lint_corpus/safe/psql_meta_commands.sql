-- expect: not-analysed
-- Modelled on OpenReplay's psql-run schema files (openreplay/openreplay, scripts/schema/db/init_dbs/postgresql/*.sql):
-- psql variables and meta-commands, a \gexec without a semicolon, COPY data rows.
\set ON_ERROR_STOP true
\set or_version 'v1.20.0'
SET lock_timeout = '2s';
SELECT format($fn_def$ CREATE OR REPLACE FUNCTION openreplay_version() RETURNS text AS $$ SELECT '%1$s' $$ LANGUAGE sql IMMUTABLE; $fn_def$, :'or_version')
\gexec
\if :{?skip_seed}
\echo skipping seed data
\else
COPY public.roles (role_id, name) FROM stdin;
1	DROP TABLE users;
2	member
\.
\endif
CREATE TABLE IF NOT EXISTS public.sessions_notes (note_id integer PRIMARY KEY, message text NOT NULL);
