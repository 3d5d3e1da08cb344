#!/bin/sh
# compose-atomic backup sidecar: verified, rotated, offsite PostgreSQL backups.
#
# Generated into compose.backup.yml by `compose-atomic backup generate`; the source
# is compose_atomic/backup/sidecar.sh. POSIX sh on purpose: it runs under Debian's
# dash (postgres:17), busybox ash (postgres:17-alpine, rclone/rclone) and bash.
#
#   serve               schedule loop (container main process)
#   now                 one backup run of every database, exit status = result
#   health              exit 0 when the newest verified backup is fresh and the last run passed
#   list                the manifest, one backup a line (tab separated)
#   verify FILE         checksum, pg_restore --list, restore into a throwaway server
#   restore FILE DB     restore FILE into the new database DB on the production server
#   offsite-serve       offsite loop (rclone sidecar), offsite-now: one offsite pass
#   cron-match EXPR MIN HOUR DOM MON DOW   exit 0 when the cron expression matches
#   gfs LAST DAILY WEEKLY MONTHLY          names on stdin (newest first) -> names to keep
#
# Why each step exists is in docs/backups.md. The rules it keeps:
# - pg_dump runs as a direct child writing to a temporary file; its exit status and
#   stderr decide, never a pipeline's status.
# - A backup gets its final name only after it was verified; a failed run deletes
#   nothing but its own temporary files.
# - Only files listed in the manifest are ever pruned, never the newest 3, never after
#   a failed run; offsite uses `rclone copy --immutable`, never `sync`.
# - The password comes from a file (Docker secret) through a 0600 PGPASSFILE: never
#   argv, never the environment.

set -u -f  # -f: no globbing anywhere (cron fields contain '*')
umask 077

BACKUP_DIR=${BACKUP_DIR:-/backups}
BACKUP_VERIFY=${BACKUP_VERIFY:-restore}
BACKUP_SCHEDULE=${BACKUP_SCHEDULE:-0 3 * * *}
BACKUP_KEEP_LAST=${BACKUP_KEEP_LAST:-3}
BACKUP_KEEP_DAILY=${BACKUP_KEEP_DAILY:-7}
BACKUP_KEEP_WEEKLY=${BACKUP_KEEP_WEEKLY:-4}
BACKUP_KEEP_MONTHLY=${BACKUP_KEEP_MONTHLY:-6}
BACKUP_MAX_AGE=${BACKUP_MAX_AGE:-129600}
BACKUP_VERIFY_DIR=${BACKUP_VERIFY_DIR:-/tmp}
BACKUP_VERIFY_JOBS=${BACKUP_VERIFY_JOBS:-2}
BACKUP_ALERT_WEBHOOK=${BACKUP_ALERT_WEBHOOK:-}
BACKUP_LABEL=${BACKUP_LABEL:-backup}
ALERT_SOURCE=$BACKUP_LABEL
BACKUP_OFFSITE_INTERVAL=${BACKUP_OFFSITE_INTERVAL:-300}
# A table lock held longer than this fails the run (pg_dump would otherwise wait forever).
BACKUP_LOCK_TIMEOUT=${BACKUP_LOCK_TIMEOUT:-10min}
BACKUP_OFFSITE_MAX_DELETE=${BACKUP_OFFSITE_MAX_DELETE:-20}
BACKUP_OFFSITE_STATE=${BACKUP_OFFSITE_STATE:-/tmp/compose-atomic-offsite}
FLOOR=3
MODE=run
MANIFEST="$BACKUP_DIR/manifest.tsv"
STATUS="$BACKUP_DIR/.status"
W=""
VPID=""
SESS_PID=""
PARTIAL=""
# A dead psql session must turn a write into an error we report, not a silent SIGPIPE death.
trap '' PIPE
# Row counts are compared byte for byte: every psql that prints table names speaks UTF8
# (PostgreSQL converts from LATIN1 and the others; SQL_ASCII passes its bytes through), and
# sorting is by bytes. The dumps keep the database's own encoding.
COUNT_ENCODING=UTF8

log() { printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$BACKUP_LABEL" "$*" >&2; }

# ---- small helpers ---------------------------------------------------------

cleanup() {
    if [ -n "$SESS_PID" ]; then kill "$SESS_PID" 2>/dev/null; wait "$SESS_PID" 2>/dev/null; SESS_PID=""; fi
    if [ -n "$VPID" ]; then kill -QUIT "$VPID" 2>/dev/null; wait "$VPID" 2>/dev/null; VPID=""; fi
    if [ -n "$PARTIAL" ]; then rm -f "$PARTIAL" "$PARTIAL.counts"; PARTIAL=""; fi
    if [ -n "$W" ] && [ -d "$W" ]; then rm -rf "$W"; fi
    W=""
}

workdir() {
    W=$(mktemp -d "${BACKUP_VERIFY_DIR%/}/compose-atomic-backup.XXXXXX") || return 1
}

# include shared.sh

now_ms() {
    # Milliseconds since the epoch where date knows %N (GNU, busybox), else whole seconds.
    t=$(date -u +%s%N 2>/dev/null)
    case "$t" in *N|'') echo $(( $(date -u +%s) * 1000 )) ;; *) echo $((t / 1000000)) ;; esac
}

secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

file_size() { wc -c <"$1" | tr -d ' '; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

fsync_path() {
    # coreutils and busybox (1.30+) sync accept file names; fall back to a full sync.
    sync "$@" 2>/dev/null || sync
}

free_bytes() {
    df -Pk "$1" | awk 'NR==2 { printf "%.0f\n", $4 * 1024 }'
}

set_status() {
    # set_status ok|failed MESSAGE: what `health` and `backup list` report.
    printf '%s\t%s\t%s\n' "$(date -u +%s)" "$1" "$2" >"$STATUS.tmp" && mv -f "$STATUS.tmp" "$STATUS"
}

fail() {
    # fail MESSAGE: record, alert, clean up our own temporary files; never touch a backup.
    log "FAILED: $*"
    # Scheduled runs and `now` record the failure for the health check; verify alerts
    # too; a refused restore is reported to the person at the terminal only.
    repeat=""
    if [ "$MODE" = run ] && [ -f "$STATUS" ]; then
        # A sidecar that cannot start is restarted by Docker every minute: alert once an
        # hour for the same failure, not each time.
        IFS=$(printf '\t') read -r p_when p_result p_message <"$STATUS"
        if [ "$p_result" = failed ] && [ "$p_message" = "$*" ] && [ $(( $(date -u +%s) - ${p_when:-0} )) -lt 3600 ]; then
            repeat=1
        fi
    fi
    if [ -z "$repeat" ]; then case "$MODE" in run) set_status failed "$*" ;; esac; fi
    if [ -n "$repeat" ]; then
        log "same failure as less than an hour ago: alert not repeated"
    else
        case "$MODE" in run|verify) alert failure "$*" ;; esac
    fi
    printf 'FAILED\t%s\n' "$(printf '%s' "$*" | tr '\n\t' '  ')"
    cleanup
    release_lock
    exit 1
}

pgpass_setup() {
    # A 0600 PGPASSFILE built from the secret file: the password never enters argv or env.
    [ -n "${BACKUP_PASSWORD_FILE:-}" ] || return 0
    [ -r "$BACKUP_PASSWORD_FILE" ] || fail "cannot read the password file $BACKUP_PASSWORD_FILE"
    PGPASSFILE="$W/pgpass"
    pw=$(sed -e 's/\\/\\\\/g' -e 's/:/\\:/g' "$BACKUP_PASSWORD_FILE" | head -n 1)
    printf '*:*:*:*:%s\n' "$pw" >"$PGPASSFILE"
    pw=""
    chmod 600 "$PGPASSFILE"
    export PGPASSFILE
}

LOCKDIR="$BACKUP_DIR/.lock"
HAVE_LOCK=""
HEART_PID=""
take_lock() {
    # mkdir is atomic on every filesystem. The holder touches the lock every 30s, so a
    # lock left by a killed container (any container on this volume) is stale after 3 min.
    if ! mkdir "$LOCKDIR" 2>/dev/null; then
        beat="$LOCKDIR/owner"
        [ -f "$beat" ] || beat=$LOCKDIR
        [ -n "$(find "$beat" -maxdepth 0 -mmin +3 2>/dev/null)" ] || return 1
        log "removing a stale lock left by $(cat "$LOCKDIR/owner" 2>/dev/null || echo 'an unknown run')"
        rm -rf "$LOCKDIR"
        mkdir "$LOCKDIR" 2>/dev/null || return 1
    fi
    HAVE_LOCK=1
    printf '%s %s\n' "$(hostname 2>/dev/null || echo unknown)" "$$" >"$LOCKDIR/owner"
    ( while :; do sleep 30; touch "$LOCKDIR/owner" 2>/dev/null || exit 0; done ) >/dev/null 2>&1 &
    HEART_PID=$!
    # Temporary files of a run that was killed (SIGKILL, power loss): ours by name, never a backup.
    find "$BACKUP_DIR" -maxdepth 1 -type f -name '.*.partial*' -exec rm -f {} \; 2>/dev/null
    return 0
}
release_lock() {
    if [ -n "$HEART_PID" ]; then kill "$HEART_PID" 2>/dev/null; wait "$HEART_PID" 2>/dev/null; HEART_PID=""; fi
    if [ -n "$HAVE_LOCK" ]; then rm -rf "$LOCKDIR"; HAVE_LOCK=""; fi
}

# ---- versions ----------------------------------------------------------------

client_major() {
    pg_dump --version | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+(\.[0-9]+)*$/) { split($i, v, "."); print v[1]; exit } }'
}

check_versions() {
    # pg_dump reads servers of its own major version or older, never newer.
    # A server that is restarting (or a resolver hiccup) gets a few seconds; a refused
    # password or a missing database fails at once.
    tries=0
    until server=$(psql -X -At -d "$1" -c 'show server_version_num' 2>"$W/version.err"); do
        tries=$((tries + 1))
        if [ "$tries" -ge "${BACKUP_CONNECT_TRIES:-5}" ] || grep -qiE 'authentication|does not exist|permission denied' "$W/version.err"; then
            fail "cannot connect to database $1: $(head -n 3 "$W/version.err" | tr '\n' ' ')"
        fi
        sleep 2
    done
    client=$(client_major)
    smajor=$((server / 10000))
    if [ -z "$client" ] || [ "$smajor" -gt "$client" ]; then
        fail "server is PostgreSQL $smajor but this sidecar's pg_dump is ${client:-unknown}: pg_dump cannot back up a newer server. Use the database service's own image for the sidecar (regenerate with compose-atomic backup generate)."
    fi
}

# ---- row counts, at dump time and after restore ------------------------------

COUNT_SQL="SELECT format('SELECT %L || ''|'' || count(*) FROM %I.%I;', n.nspname || '.' || c.relname, n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1"

start_snapshot() {
    # A psql session holds a REPEATABLE READ transaction: pg_dump uses its exported
    # snapshot and the same session counts every table's rows, so both see one state.
    mkfifo "$W/ctl"
    PGCLIENTENCODING=$COUNT_ENCODING psql -X -q -At -v ON_ERROR_STOP=1 -d "$1" <"$W/ctl" >"$W/session.out" 2>"$W/session.err" &
    SESS_PID=$!
    exec 3>"$W/ctl"
    printf '%s\n' "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;" "SET LOCAL lock_timeout = '$BACKUP_LOCK_TIMEOUT';" \
        "SELECT pg_export_snapshot();" >&3
    i=0
    while [ ! -s "$W/session.out" ]; do
        kill -0 "$SESS_PID" 2>/dev/null || fail "cannot open a snapshot on $1: $(head -n 3 "$W/session.err")"
        i=$((i + 1)); [ "$i" -lt 600 ] || fail "timed out opening a snapshot on $1"
        sleep 0.1
    done
    SNAP=$(head -n 1 "$W/session.out")
    printf '%s\n' "\\o $W/counts.raw" "$COUNT_SQL" '\gexec' "SELECT 'END-OF-COUNTS';" '\o' >&3
}

finish_snapshot() {
    printf '%s\n' "COMMIT;" '\q' >&3
    exec 3>&-
    wait "$SESS_PID"; rc=$?
    SESS_PID=""
    [ "$rc" -eq 0 ] || fail "counting rows on $1 failed: $(head -n 3 "$W/session.err")"
    tail -n 1 "$W/counts.raw" | grep -qx 'END-OF-COUNTS' || fail "row counts on $1 are incomplete"
    sed '/^END-OF-COUNTS$/d' "$W/counts.raw" | LC_ALL=C sort >"$W/counts.src"
}

count_rows() {
    # count_rows HOST DB OUT
    PGCLIENTENCODING=$COUNT_ENCODING psql -X -q -At -v ON_ERROR_STOP=1 -h "$1" -U postgres -d "$2" -c "$COUNT_SQL" -o "$W/count.sql" &&
        PGCLIENTENCODING=$COUNT_ENCODING psql -X -q -At -v ON_ERROR_STOP=1 -h "$1" -U postgres -d "$2" -f "$W/count.sql" -o "$3.raw" &&
        LC_ALL=C sort "$3.raw" >"$3"
}

# ---- restore into a throwaway server -------------------------------------------

start_throwaway() {
    # initdb a cluster in the work dir, listening on a socket only: no network, no
    # password, the same binaries (same major version) as production.
    initdb -D "$W/pg" -U postgres -A trust -N >"$W/initdb.log" 2>&1 ||
        fail "initdb for the verification server failed: $(tail -n 3 "$W/initdb.log")"
    postgres -D "$W/pg" -k "$W" -c listen_addresses= -c fsync=off -c full_page_writes=off \
        -c synchronous_commit=off -c wal_level=minimal -c max_wal_senders=0 -c autovacuum=off \
        -c max_wal_size=4GB -c maintenance_work_mem=128MB -c logging_collector=off \
        >"$W/postgres.log" 2>&1 &
    VPID=$!
    i=0
    until pg_isready -q -h "$W" -U postgres -d postgres 2>/dev/null; do
        kill -0 "$VPID" 2>/dev/null || fail "the verification server did not start: $(tail -n 3 "$W/postgres.log")"
        i=$((i + 1)); [ "$i" -lt 600 ] || fail "the verification server did not start within 60s"
        sleep 0.1
    done
}

dump_encoding() {
    # The database encoding a pg_dump archive was taken in (SQL_ASCII, LATIN1, UTF8, ...).
    pg_restore --list "$1" 2>/dev/null | sed -n 's/^;[[:space:]]*Encoding:[[:space:]]*//p' | head -n 1
}

create_verify_db() {
    # The throwaway database has the dump's encoding (locale C goes with every encoding), so
    # a SQL_ASCII or LATIN1 database restores byte for byte, as it would on its own server.
    enc=$(dump_encoding "$1")
    createdb -h "$W" -U postgres -T template0 ${enc:+-E "$enc"} -l C verify 2>"$W/createdb.err" ||
        fail "createdb in the verification server failed: $(head -n 2 "$W/createdb.err")"
}

verify_restore() {
    # verify_restore ARCHIVE EXPECTED_COUNTS: restore into a throwaway server and compare.
    start_throwaway
    create_verify_db "$1"
    pg_restore -h "$W" -U postgres -d verify --exit-on-error --no-owner --no-privileges \
        -j "$BACKUP_VERIFY_JOBS" "$1" 2>"$W/restore.err" ||
        fail "restore-verification of $(basename "$1") failed: $(head -n 3 "$W/restore.err")"
    count_rows "$W" verify "$W/counts.restored" || fail "counting restored rows failed"
    LC_ALL=C sort "$2" >"$W/counts.expected"  # files written before byte order was the rule
    if ! cmp -s "$W/counts.expected" "$W/counts.restored"; then
        fail "restored row counts differ from the source at dump time: $(diff "$W/counts.expected" "$W/counts.restored" | grep '^[<>]' | head -n 4 | tr '\n' ' ')"
    fi
    kill -QUIT "$VPID" 2>/dev/null; wait "$VPID" 2>/dev/null; VPID=""
    rm -rf "$W/pg"
}

# ---- manifest -----------------------------------------------------------------
# name  database  epoch  size  sha256  verified(restore|list)  seconds

manifest_for() { [ -f "$MANIFEST" ] && awk -F '\t' -v db="$1" '$2 == db' "$MANIFEST" | sort -t "$(printf '\t')" -k3,3nr; }

manifest_add() {
    { [ -f "$MANIFEST" ] && cat "$MANIFEST"; printf '%s\n' "$1"; } >"$MANIFEST.tmp" &&
        fsync_path "$MANIFEST.tmp" && mv -f "$MANIFEST.tmp" "$MANIFEST" && fsync_path "$BACKUP_DIR"
}

manifest_drop() {
    # manifest_drop FILE_WITH_NAMES
    awk -F '\t' 'NR == FNR { gone[$1] = 1; next } !($1 in gone)' "$1" "$MANIFEST" >"$MANIFEST.tmp" &&
        fsync_path "$MANIFEST.tmp" && mv -f "$MANIFEST.tmp" "$MANIFEST"
}

# ---- retention ----------------------------------------------------------------

gfs() {
    # Names on stdin, newest first, each carrying a UTC stamp YYYYMMDDTHHMMSSZ; prints
    # the names to keep: the newest max(LAST, 3), then the newest of each of the last
    # DAILY days, WEEKLY ISO weeks (Monday) and MONTHLY months (restic's rules).
    awk -v last="$1" -v daily="$2" -v weekly="$3" -v monthly="$4" -v floor="$FLOOR" '
    function days(y, m, d) { # days from 1970-01-01 (Howard Hinnant days_from_civil)
        y -= (m <= 2); era = int(y / 400); yoe = y - era * 400
        doy = int((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1
        doe = yoe * 365 + int(yoe / 4) - int(yoe / 100) + doy
        return era * 146097 + doe - 719468
    }
    {
        if (!match($0, /[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z/)) next
        s = substr($0, RSTART, 16); y = substr(s, 1, 4) + 0; m = substr(s, 5, 2) + 0; d = substr(s, 7, 2) + 0
        day = days(y, m, d); week = int((day + 3) / 7); month = y * 12 + m
        keep = 0; n++
        if (n <= (last > floor ? last : floor)) keep = 1
        if (dn < daily && day != lday) { keep = 1; dn++; lday = day }
        if (wn < weekly && week != lweek) { keep = 1; wn++; lweek = week }
        if (mn < monthly && month != lmonth) { keep = 1; mn++; lmonth = month }
        if (keep) print
    }'
}

prune_local() {
    db=$1
    # Only names this tool gives its archives are candidates; anything else is never pruned.
    manifest_for "$db" | cut -f1 | grep -E "^$db-[0-9]{8}T[0-9]{6}Z\.dump\$" >"$W/all.$db" || true
    gfs "$BACKUP_KEEP_LAST" "$BACKUP_KEEP_DAILY" "$BACKUP_KEEP_WEEKLY" "$BACKUP_KEEP_MONTHLY" <"$W/all.$db" >"$W/keep.$db"
    kept=$(wc -l <"$W/keep.$db")
    [ "$kept" -ge "$FLOOR" ] || [ "$kept" -eq "$(wc -l <"$W/all.$db")" ] || return 0
    grep -vxF -f "$W/keep.$db" "$W/all.$db" >"$W/drop.$db" || true
    [ -s "$W/drop.$db" ] || return 0
    manifest_drop "$W/drop.$db" || return 1
    while IFS= read -r name; do
        case "$name" in "$db"-*T*Z.dump) ;; *) continue ;; esac
        rm -f "$BACKUP_DIR/$name" "$BACKUP_DIR/$name.counts"
        log "pruned $name"
    done <"$W/drop.$db"
}

# ---- one backup run -------------------------------------------------------------

backup_db() {
    db=$1
    stamp=$(date -u +%Y%m%dT%H%M%SZ); epoch=$(date -u +%s); started=$epoch
    name="$db-$stamp.dump"
    tmp="$BACKUP_DIR/.$name.partial"
    PARTIAL=$tmp
    check_versions "$db"

    prev=$(manifest_for "$db" | head -n 1 | cut -f4)
    prev=${prev:-0}
    need=$((prev + prev / 10 + 1048576))
    free=$(free_bytes "$BACKUP_DIR")
    [ "${free:-0}" -ge "$need" ] ||
        fail "not enough free space in $BACKUP_DIR for $db: $free bytes free, the last dump was $prev bytes (need $need); nothing was deleted to make room"

    SNAP=""
    if [ "$BACKUP_VERIFY" = restore ]; then start_snapshot "$db"; fi
    log "dumping $db"
    t0=$(now_ms)
    if [ -n "$SNAP" ]; then
        pg_dump -Fc -d "$db" --lock-wait-timeout="$BACKUP_LOCK_TIMEOUT" --snapshot="$SNAP" -f "$tmp" 2>"$W/dump.err"; rc=$?
    else
        pg_dump -Fc -d "$db" --lock-wait-timeout="$BACKUP_LOCK_TIMEOUT" -f "$tmp" 2>"$W/dump.err"; rc=$?
    fi
    if [ "$rc" -ne 0 ] || grep -qiE 'error|fatal|could not' "$W/dump.err"; then
        rm -f "$tmp"
        fail "pg_dump of $db exited with status $rc: $(head -n 3 "$W/dump.err" | tr '\n' ' ')"
    fi
    if [ -n "$SNAP" ]; then finish_snapshot "$db"; fi
    log "pg_dump of $db took $(secs $(( $(now_ms) - t0 )))s"
    [ -s "$tmp" ] || { rm -f "$tmp"; fail "pg_dump of $db wrote an empty file"; }
    pg_restore --list "$tmp" >"$W/toc" 2>"$W/list.err" ||
        { rm -f "$tmp"; fail "pg_restore --list rejects the dump of $db: $(head -n 3 "$W/list.err")"; }
    # Checksum first: the bytes the restore-verification reads are the bytes recorded.
    chmod 600 "$tmp"
    fsync_path "$tmp" || fail "fsync of the dump of $db failed"
    size=$(file_size "$tmp")
    sum=$(sha256_of "$tmp")
    if [ "$BACKUP_VERIFY" = restore ]; then
        t1=$(now_ms)
        verify_restore "$tmp" "$W/counts.src"
        log "restore-verification of $db took $(secs $(( $(now_ms) - t1 )))s (this is the restore time to expect: RTO)"
    fi
    if [ "$BACKUP_VERIFY" = restore ]; then
        cp "$W/counts.src" "$tmp.counts" && chmod 600 "$tmp.counts" && fsync_path "$tmp.counts" &&
            mv -f "$tmp.counts" "$BACKUP_DIR/$name.counts" || fail "cannot write the row counts of $db"
    fi
    mv -f "$tmp" "$BACKUP_DIR/$name" || fail "cannot rename the dump of $db"
    PARTIAL=""
    fsync_path "$BACKUP_DIR"
    seconds=$(( $(date -u +%s) - started ))
    manifest_add "$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s' "$name" "$db" "$epoch" "$size" "$sum" "$BACKUP_VERIFY" "$seconds")" ||
        fail "cannot update the manifest for $name"
    log "backed up $db to $name ($size bytes, sha256 $sum, verified: $BACKUP_VERIFY, ${seconds}s)"
    printf 'OK\t%s\t%s\t%s\t%s\t%s\n' "$BACKUP_DIR/$name" "$size" "$sum" "$BACKUP_VERIFY" "$seconds"
    if [ "$prev" -gt 0 ] && [ $((size * 2)) -lt "$prev" ]; then
        alert warning "the dump of $db shrank by more than half: $size bytes, the previous one was $prev bytes"
    fi
}

run_once() {
    [ -d "$BACKUP_DIR" ] || fail "backup directory $BACKUP_DIR does not exist"
    take_lock || { log "another backup run holds $LOCKDIR; skipping"; printf 'FAILED\tanother run holds the lock\n'; exit 1; }
    workdir || fail "cannot create a work directory in $BACKUP_VERIFY_DIR"
    pgpass_setup
    for db in ${BACKUP_DATABASES:-${PGDATABASE:-postgres}}; do
        backup_db "$db"
    done
    # Prune only after every database succeeded (fail() exits before this).
    for db in ${BACKUP_DATABASES:-${PGDATABASE:-postgres}}; do
        prune_local "$db" || log "pruning $db failed; nothing else was removed"
    done
    set_status ok "backed up ${BACKUP_DATABASES:-${PGDATABASE:-postgres}}"
    cleanup
    release_lock
}

# ---- schedule -------------------------------------------------------------------

field_match() {
    # field_match VALUE FIELD: one cron field (*, a, a-b, */n, a-b/n, lists) against VALUE.
    v=$1
    oldifs=$IFS; IFS=,
    for part in $2; do
        IFS=$oldifs
        step=1
        case "$part" in */*) step=${part#*/}; part=${part%/*} ;; esac
        case "$part" in
            '*') lo=0; hi=99 ;;
            *-*) lo=${part%-*}; hi=${part#*-} ;;
            *) lo=$part; if [ "$step" -gt 1 ]; then hi=99; else hi=$part; fi ;;
        esac
        if [ "$v" -ge "$lo" ] && [ "$v" -le "$hi" ] && [ $(((v - lo) % step)) -eq 0 ]; then return 0; fi
    done
    IFS=$oldifs
    return 1
}

schedule_match() {
    # schedule_match EXPR MIN HOUR DOM MON DOW
    expr_=$1; shift
    min=$1; hour=$2; dom=$3; mon=$4; dow=$5
    set -- $expr_
    [ "$#" -eq 5 ] || return 2
    case "$5" in *7*) dow7=$(echo "$5" | sed 's/7/0/g') ;; *) dow7=$5 ;; esac
    field_match "$min" "$1" || return 1
    field_match "$hour" "$2" || return 1
    field_match "$mon" "$4" || return 1
    if [ "$3" != '*' ] && [ "$dow7" != '*' ]; then
        field_match "$dom" "$3" || field_match "$dow" "$dow7" || return 1
    else
        field_match "$dom" "$3" || return 1
        field_match "$dow" "$dow7" || return 1
    fi
    return 0
}

strip0() { v=$1; while [ "${#v}" -gt 1 ] && [ "${v#0}" != "$v" ]; do v=${v#0}; done; printf '%s' "$v"; }

serve() {
    log "starting: databases ${BACKUP_DATABASES:-${PGDATABASE:-postgres}}, schedule '$BACKUP_SCHEDULE', verify $BACKUP_VERIFY"
    [ -f "$STATUS" ] || set_status ok "started; no run yet"
    # Fail loudly at start, not at 03:00, when this pg_dump cannot read the server.
    workdir || exit 1
    pgpass_setup
    tries=0
    for db in ${BACKUP_DATABASES:-${PGDATABASE:-postgres}}; do
        until psql -X -At -d "$db" -c 'select 1' >/dev/null 2>"$W/wait.err"; do
            # Wait for a starting server (up to 2 min), not for a refused password.
            grep -qiE 'authentication|does not exist|permission denied' "$W/wait.err" && break
            tries=$((tries + 1)); [ "$tries" -lt 60 ] || break
            sleep 2
        done
        check_versions "$db"
    done
    cleanup
    last=""
    while :; do
        set -- $(date +'%M %H %d %m %w %S')
        now="$1 $2 $3 $4"
        if [ "$now" != "$last" ] && schedule_match "$BACKUP_SCHEDULE" "$(strip0 "$1")" "$(strip0 "$2")" \
            "$(strip0 "$3")" "$(strip0 "$4")" "$5"; then
            last=$now
            ( run_once ) >/dev/null || log "backup run failed (see above); the next run is at the next scheduled time"
        fi
        sleep $((60 - $(strip0 "$6") )) &
        wait $!
    done
}

# ---- health, list, verify, restore ------------------------------------------

health() {
    [ -f "$STATUS" ] || { echo "no status yet"; exit 1; }
    IFS=$(printf '\t') read -r when result message <"$STATUS"
    if [ "$result" = failed ]; then echo "last run failed: $message"; exit 1; fi
    now=$(date -u +%s)
    newest=$( [ -f "$MANIFEST" ] && cut -f3 "$MANIFEST" | sort -n | tail -n 1)
    if [ -z "$newest" ]; then
        # No backup yet: healthy until one schedule interval (x1.5) has passed since start.
        started=$(cat "$BACKUP_DIR/.started" 2>/dev/null || echo "$when")
        if [ $((now - started)) -gt "$BACKUP_MAX_AGE" ]; then echo "no verified backup yet"; exit 1; fi
        echo "waiting for the first backup"; exit 0
    fi
    age=$((now - newest))
    if [ "$age" -gt "$BACKUP_MAX_AGE" ]; then echo "newest verified backup is ${age}s old (limit ${BACKUP_MAX_AGE}s)"; exit 1; fi
    echo "ok: newest verified backup is ${age}s old"
}

resolve_file() {
    # An archive named in the manifest (a bare name or a path inside BACKUP_DIR), checked
    # against its recorded sha256; or an absolute path elsewhere (a copy fetched from
    # offsite, mounted into the container), checked by pg_restore --list and restore only.
    case "$1" in
        /*) if [ "$(dirname "$1")" != "${BACKUP_DIR%/}" ] && [ -f "$1" ]; then
                FILE=$1
                log "$1 is not in the manifest: no recorded checksum; checking the archive itself"
                pg_restore --list "$FILE" >/dev/null 2>"$W/list.err" || fail "pg_restore --list rejects $1: $(head -n 2 "$W/list.err")"
                return 0
            fi ;;
    esac
    name=$(basename "$1")
    line=$(awk -F '\t' -v n="$name" '$1 == n' "$MANIFEST" 2>/dev/null | tail -n 1)
    [ -n "$line" ] || fail "$name is not a backup listed in $MANIFEST"
    FILE="$BACKUP_DIR/$name"
    [ -f "$FILE" ] || fail "$name is listed in the manifest but $FILE is missing"
    want=$(printf '%s\n' "$line" | cut -f5)
    got=$(sha256_of "$FILE")
    [ "$got" = "$want" ] || fail "checksum mismatch for $name: sha256 $got, the manifest recorded $want (the file is damaged)"
    pg_restore --list "$FILE" >/dev/null 2>"$W/list.err" || fail "pg_restore --list rejects $name: $(head -n 2 "$W/list.err")"
}

latest() { [ -f "$MANIFEST" ] && sort -t "$(printf '\t')" -k3,3n "$MANIFEST" | tail -n 1 | cut -f1; }

verify_cmd() {
    workdir || exit 1
    target=${1:-$(latest)}
    [ -n "$target" ] || fail "there is no backup to verify"
    resolve_file "$target"
    if [ -f "$FILE.counts" ]; then
        verify_restore "$FILE" "$FILE.counts"
    else
        start_throwaway
        create_verify_db "$FILE"
        pg_restore -h "$W" -U postgres -d verify --exit-on-error --no-owner --no-privileges "$FILE" 2>"$W/restore.err" ||
            fail "restore-verification of $(basename "$FILE") failed: $(head -n 3 "$W/restore.err")"
    fi
    printf 'VERIFIED\t%s\n' "$FILE"
    log "verified $(basename "$FILE"): checksum, archive listing and a restore with matching row counts"
    cleanup
}

restore_cmd() {
    workdir || exit 1
    pgpass_setup
    target=$1; into=$2
    [ -n "$target" ] || target=$(latest)
    [ -n "$target" ] || fail "there is no backup to restore"
    resolve_file "$target"
    exists=$(psql -X -At -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$(printf '%s' "$into" | sed "s/'/''/g")'" 2>"$W/psql.err") ||
        fail "cannot connect to the server: $(head -n 2 "$W/psql.err")"
    [ -z "$exists" ] || fail "database $into already exists; restore goes into a new database only (choose another --target-db, or drop it first)"
    log "restoring $(basename "$FILE") into the new database $into: pg_restore -d $into --exit-on-error -j $BACKUP_VERIFY_JOBS $(basename "$FILE")"
    # In the dump's encoding when the server's locale allows it (SQL_ASCII always does), else
    # in the server's default: PostgreSQL converts, the row counts below still compare.
    enc=$(dump_encoding "$FILE")
    { [ -n "$enc" ] && createdb --maintenance-db=postgres -T template0 -E "$enc" "$into" 2>"$W/createdb.err"; } ||
        createdb --maintenance-db=postgres "$into" 2>"$W/createdb.err" || fail "createdb $into failed: $(head -n 2 "$W/createdb.err")"
    if ! pg_restore -d "$into" --exit-on-error -j "$BACKUP_VERIFY_JOBS" "$FILE" 2>"$W/restore.err"; then
        dropdb --maintenance-db=postgres "$into" 2>/dev/null
        fail "restore of $(basename "$FILE") into $into failed (the new database was dropped): $(head -n 3 "$W/restore.err")"
    fi
    if [ -f "$FILE.counts" ]; then
        PGCLIENTENCODING=$COUNT_ENCODING psql -X -q -At -v ON_ERROR_STOP=1 -d "$into" -c "$COUNT_SQL" -o "$W/count.sql" &&
            PGCLIENTENCODING=$COUNT_ENCODING psql -X -q -At -v ON_ERROR_STOP=1 -d "$into" -f "$W/count.sql" | LC_ALL=C sort >"$W/counts.restored" ||
            fail "counting rows in $into failed"
        LC_ALL=C sort "$FILE.counts" | cmp -s - "$W/counts.restored" || fail "row counts in $into differ from the source at dump time"
    fi
    printf 'RESTORED\t%s\t%s\n' "$FILE" "$into"
    cleanup
}

# ---- offsite (rclone sidecar) ---------------------------------------------------

offsite_pass() {
    remote=${BACKUP_OFFSITE_REMOTE:?BACKUP_OFFSITE_REMOTE is not set}
    workdir || return 1
    if [ ! -s "$MANIFEST" ]; then
        log "offsite: no local backup in $MANIFEST; nothing copied and nothing removed from $remote"
        cleanup; return 0
    fi
    : >"$W/files"
    while IFS=$(printf '\t') read -r name _rest; do
        [ -f "$BACKUP_DIR/$name" ] || continue
        printf '%s\n' "$name" >>"$W/files"
        [ -f "$BACKUP_DIR/$name.counts" ] && printf '%s\n' "$name.counts" >>"$W/files"
    done <"$MANIFEST"
    if [ ! -s "$W/files" ]; then
        log "offsite: the manifest lists no file present locally; nothing copied and nothing removed"
        cleanup; return 0
    fi
    # copy, never sync: files that vanished locally stay on the remote.
    rclone copy --immutable --files-from-raw "$W/files" "$BACKUP_DIR" "$remote" 2>"$W/copy.err" ||
        { msg="offsite copy to $remote failed: $(grep -i error "$W/copy.err" | head -n 2 | tr '\n' ' ')"; log "$msg"; printf 'failed\t%s\n' "$msg" >"$BACKUP_OFFSITE_STATE"; alert failure "$msg"; cleanup; return 1; }
    rclone check --one-way --files-from-raw "$W/files" "$BACKUP_DIR" "$remote" 2>"$W/check.err" ||
        { msg="offsite check of $remote failed: $(grep -iE 'error|differ|not found' "$W/check.err" | head -n 2 | tr '\n' ' ')"; log "$msg"; printf 'failed\t%s\n' "$msg" >"$BACKUP_OFFSITE_STATE"; alert failure "$msg"; cleanup; return 1; }
    # Remote retention: its own GFS pass over the remote listing, with the same floors.
    rclone lsf --files-only "$remote" >"$W/remote" 2>"$W/lsf.err" ||
        { msg="offsite listing of $remote failed"; printf 'failed\t%s\n' "$msg" >"$BACKUP_OFFSITE_STATE"; alert failure "$msg"; cleanup; return 1; }
    deleted=0
    for db in $(cut -f2 "$MANIFEST" | sort -u); do
        grep -E "^$db-[0-9]{8}T[0-9]{6}Z\.dump\$" "$W/remote" | sort -r >"$W/r.all" || true
        gfs "$BACKUP_KEEP_LAST" "$BACKUP_KEEP_DAILY" "$BACKUP_KEEP_WEEKLY" "$BACKUP_KEEP_MONTHLY" <"$W/r.all" >"$W/r.keep"
        [ "$(wc -l <"$W/r.keep")" -ge "$FLOOR" ] || continue
        grep -vxF -f "$W/r.keep" "$W/r.all" >"$W/r.drop" || true
        while IFS= read -r name; do
            [ "$deleted" -lt "$BACKUP_OFFSITE_MAX_DELETE" ] || { log "offsite: delete cap $BACKUP_OFFSITE_MAX_DELETE reached"; break; }
            rclone deletefile "$remote/$name" 2>/dev/null && deleted=$((deleted + 1)) && log "offsite: pruned $name"
            rclone deletefile "$remote/$name.counts" 2>/dev/null || true
        done <"$W/r.drop"
    done
    printf 'ok\t%s\n' "copied $(wc -l <"$W/files") files to $remote, pruned $deleted" >"$BACKUP_OFFSITE_STATE"
    log "offsite: $remote is up to date ($(wc -l <"$W/files") files checked, $deleted pruned)"
    cleanup
}

offsite_serve() {
    log "offsite: copying $BACKUP_DIR to ${BACKUP_OFFSITE_REMOTE:-?} every ${BACKUP_OFFSITE_INTERVAL}s when the manifest changed"
    done_sum=""; done_at=0
    while :; do
        sum=$(cksum "$MANIFEST" 2>/dev/null | cut -d' ' -f1)
        now=$(date -u +%s)
        state=$(cut -f1 "$BACKUP_OFFSITE_STATE" 2>/dev/null)
        if [ "$sum" != "$done_sum" ] || [ "$state" != ok ] || [ $((now - done_at)) -gt 86400 ]; then
            if offsite_pass; then done_sum=$sum; done_at=$now; fi
        fi
        sleep "$BACKUP_OFFSITE_INTERVAL" &
        wait $!
    done
}

offsite_health() {
    state=$(cut -f1 "$BACKUP_OFFSITE_STATE" 2>/dev/null)
    [ "$state" != failed ] || { cut -f2 "$BACKUP_OFFSITE_STATE"; exit 1; }
    echo "ok"
}

# ---- entry ------------------------------------------------------------------------

cmd=${1:-serve}
[ "$#" -gt 0 ] && shift
case "$cmd" in
    serve|now|verify|restore|list|health)
        case "$cmd" in serve|now|verify|restore) drop_to_postgres "$BACKUP_DIR" "$cmd" "$@" ;; esac ;;
esac
trap 'cleanup; release_lock; exit 130' INT TERM
case "$cmd" in
    serve) date -u +%s >"$BACKUP_DIR/.started" 2>/dev/null; serve ;;
    now) run_once ;;
    health) health ;;
    list) [ -f "$MANIFEST" ] && cat "$MANIFEST"; [ -f "$STATUS" ] && sed 's/^/#status\t/' "$STATUS"; exit 0 ;;
    verify) MODE=verify; verify_cmd "${1:-}" ;;
    restore) MODE=restore; restore_cmd "${1:-}" "${2:?usage: restore FILE|'' TARGET_DB}" ;;
    offsite-serve) offsite_serve ;;
    offsite-now) offsite_pass ;;
    offsite-health) offsite_health ;;
    cron-match) e=$1; shift; schedule_match "$e" "$@" ;;
    gfs) gfs "$@" ;;
    *) echo "unknown command: $cmd (serve, now, health, list, verify, restore, offsite-serve, offsite-now)" >&2; exit 2 ;;
esac
