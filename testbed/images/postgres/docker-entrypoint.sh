#!/bin/bash
# A small stand-in for the official postgres image's entrypoint, shared by the
# test bed's PostgreSQL 15 and 17 images: the same variables (POSTGRES_PASSWORD
# [_FILE], POSTGRES_USER[_FILE], POSTGRES_DB[_FILE], POSTGRES_INITDB_ARGS,
# POSTGRES_HOST_AUTH_METHOD, PGDATA) and /docker-entrypoint-initdb.d, so compose
# files written for postgres:17-alpine run unchanged on these locally built images.
# The cluster is UTF8 (LANG=C.UTF-8) unless POSTGRES_INITDB_ARGS says otherwise.
set -euo pipefail
case "${1:-}" in -*) set -- postgres "$@" ;; esac
if [ "${1:-postgres}" != "postgres" ]; then exec "$@"; fi
file_env() {  # VAR or VAR_FILE, as the official image
    local var="$1" file="${1}_FILE"
    if [ -n "${!file:-}" ]; then
        if [ -n "${!var:-}" ]; then echo "error: both $var and $file are set" >&2; exit 1; fi
        printf -v "$var" '%s' "$(< "${!file}")"
    fi
}
: "${PGDATA:=/var/lib/postgresql/data}"
file_env POSTGRES_PASSWORD
file_env POSTGRES_USER
: "${POSTGRES_USER:=postgres}"
file_env POSTGRES_DB
: "${POSTGRES_DB:=$POSTGRES_USER}"
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA" /var/run/postgresql
chown -R postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != "trust" ]; then
        echo "error: database is uninitialized and POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    pwfile="$(mktemp)"; chown postgres "$pwfile"; chmod 600 "$pwfile"
    printf '%s\n' "${POSTGRES_PASSWORD:-}" > "$pwfile"
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words, as in the official image
    as_pg initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" \
        ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    echo "host all all all ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >> "$PGDATA/pg_hba.conf"
    # Debian's libpq looks for the socket in /var/run/postgresql, the PostgreSQL 17
    # build's in /tmp: serve both, so either version's client tools connect.
    echo "unix_socket_directories = '/var/run/postgresql,/tmp'" >> "$PGDATA/postgresql.conf"
    as_pg pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "$POSTGRES_DB" != "postgres" ]; then
        as_pg psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -q \
            -c "CREATE DATABASE \"$POSTGRES_DB\"" >/dev/null
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sql) as_pg psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -q -f "$f" ;;
            *.sql.gz) gunzip -c "$f" | as_pg psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -q ;;
            *.sh) if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
        esac
    done
    as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "PostgreSQL init process complete; ready for start up." >&2
fi
shift || true
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c listen_addresses='*' "$@"
