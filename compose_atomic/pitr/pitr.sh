#!/bin/sh
# compose-atomic PITR sidecar: continuous WAL, base backups, restore to a moment, verification.
#
# Generated into compose.backup.yml by `compose-atomic backup generate` when a service has
# x-atomic.backup.pitr; the source is compose_atomic/pitr/pitr.sh. POSIX sh (dash, busybox ash).
# It runs in the database's own image, so pg_receivewal, pg_basebackup, pg_combinebackup and
# the throwaway server match the production major version.
#
#   serve                    pg_receivewal (slot) in the background, base backups and
#                            verification on their schedules, freshness status every 10s
#   base                     one base backup now (incremental on PostgreSQL 17 where possible)
#   verify                   restore the newest base + WAL into a throwaway server up to the
#                            server's current LSN and compare per-table row counts
#   restore DEST time EPOCH ISO | DEST latest | DEST lsn LSN | DEST name RESTORE_POINT
#                            restore into the empty directory DEST (a new volume), verified
#   fetch-wal FILE PATH      restore_command of the restored server (.partial aware)
#   list                     base backups, window, statuses (tab separated)
#   health                   exit 0 when the WAL is fresh and the last verification passed
#   offsite-serve|offsite-now|offsite-health   rclone copy --immutable of wal/ and base/
#
# Layout of the volume (PITR_DIR): wal/ (pg_receivewal), base/<UTC name>/ (pg_basebackup -Fp,
# with compose-atomic.info), status/ (receive, base, verify, offsite), .lock.
# Rules: the password only from a file through a 0600 PGPASSFILE; a failed base backup or
# verification deletes nothing but its own temporary directory; WAL and base backups are pruned
# only after a successful base backup, and never what the restorable window still needs.

set -u -f
umask 077

PITR_DIR=${PITR_DIR:-/pitr}
WAL="$PITR_DIR/wal"
BASE="$PITR_DIR/base"
ST="$PITR_DIR/status"
PITR_SLOT=${PITR_SLOT:-compose_atomic_pitr}
PITR_APP=compose-atomic-pitr
PITR_SCHEDULE=${PITR_SCHEDULE:-0 3 * * *}
PITR_VERIFY_SCHEDULE=${PITR_VERIFY_SCHEDULE:-30 4 * * *}
PITR_KEEP=${PITR_KEEP:-604800}
PITR_MAX_LAG=${PITR_MAX_LAG:-120}
PITR_FULL_EVERY=${PITR_FULL_EVERY:-7}
PITR_INCREMENTAL=${PITR_INCREMENTAL:-auto}
PITR_RESTORE_TIMEOUT=${PITR_RESTORE_TIMEOUT:-3600}
PITR_OFFSITE_INTERVAL=${PITR_OFFSITE_INTERVAL:-60}
PITR_OFFSITE_STATE=${PITR_OFFSITE_STATE:-/tmp/compose-atomic-pitr-offsite}
PITR_SCRIPT=${PITR_SCRIPT:-/usr/local/bin/compose-atomic-pitr}
BACKUP_SCRIPT=${BACKUP_SCRIPT:-/usr/local/bin/compose-atomic-backup}
BACKUP_DATABASES=${BACKUP_DATABASES:-${PGDATABASE:-postgres}}
BACKUP_ALERT_WEBHOOK=${BACKUP_ALERT_WEBHOOK:-}
BACKUP_LABEL=${BACKUP_LABEL:-pitr}
ALERT_SOURCE="$BACKUP_LABEL pitr"
PGAPPNAME=$PITR_APP
export PGAPPNAME
W=""
VPID=""
RPID=""
LOCKED=""
trap '' PIPE

log() { printf '%s %s pitr: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$BACKUP_LABEL" "$*" >&2; }

now() { date -u +%s; }

now_ms() {
    t=$(date -u +%s%N 2>/dev/null)
    case "$t" in *N|'') echo $(( $(date -u +%s) * 1000 )) ;; *) echo $((t / 1000000)) ;; esac
}

# include shared.sh

set_status() {
    # set_status NAME ok|failed MESSAGE [EXTRA]: one line, replaced atomically.
    mkdir -p "$ST" 2>/dev/null
    printf '%s\t%s\t%s\t%s\n' "$(now)" "$2" "$(printf '%s' "$3" | tr '\n\t' '  ')" "${4:-}" >"$ST/.$1.tmp" &&
        mv -f "$ST/.$1.tmp" "$ST/$1"
}

status_field() {
    # status_field NAME N: field N (1 epoch, 2 result, 3 message, 4 extra) of a status file.
    [ -f "$ST/$1" ] || return 1
    cut -f "$2" "$ST/$1"
}

cleanup() {
    if [ -n "$VPID" ]; then kill -INT "$VPID" 2>/dev/null; wait "$VPID" 2>/dev/null; VPID=""; fi
    if [ -n "$W" ] && [ -d "$W" ]; then rm -rf "$W"; fi
    W=""
    release_lock
}

fail() {
    # fail KIND MESSAGE: record (base/verify), alert, clean our own temporary files, exit 1.
    kind=$1; shift
    log "FAILED: $*"
    case "$kind" in base|verify) set_status "$kind" failed "$*" ;; esac
    case "$kind" in base|verify|receive) alert failure "$*" ;; esac
    printf 'FAILED\t%s\n' "$(printf '%s' "$*" | tr '\n\t' '  ')"
    cleanup
    exit 1
}

take_lock() {
    # One base backup or verification at a time (mkdir is atomic); a stale lock of a dead
    # process is taken over.
    if mkdir "$PITR_DIR/.lock" 2>/dev/null; then echo $$ >"$PITR_DIR/.lock/pid"; LOCKED=1; return 0; fi
    other=$(cat "$PITR_DIR/.lock/pid" 2>/dev/null)
    if [ -n "$other" ] && ! kill -0 "$other" 2>/dev/null; then
        rm -rf "$PITR_DIR/.lock"; mkdir "$PITR_DIR/.lock" 2>/dev/null && echo $$ >"$PITR_DIR/.lock/pid" && LOCKED=1 && return 0
    fi
    return 1
}

release_lock() {
    if [ -n "$LOCKED" ]; then rm -rf "$PITR_DIR/.lock"; LOCKED=""; fi
}

pgpass() {
    # The password file (a Docker secret) into a 0600 PGPASSFILE: never argv, never the environment.
    [ -n "${BACKUP_PASSWORD_FILE:-}" ] || return 0
    [ -r "$BACKUP_PASSWORD_FILE" ] || fail receive "cannot read the password file $BACKUP_PASSWORD_FILE"
    f=/tmp/.compose-atomic-pitr.pgpass
    pw=$(head -n 1 "$BACKUP_PASSWORD_FILE" | sed -e 's/\\/\\\\/g' -e 's/:/\\:/g')
    (umask 077; printf '*:*:*:*:%s\n' "$pw" >"$f")
    PGPASSFILE=$f
    export PGPASSFILE
}

q() {
    # q DB SQL: one value or rows, tab separated, no headers.
    psql -X -q -At -F "$(printf '\t')" -v ON_ERROR_STOP=1 -d "$1" -c "$2"
}

server_num() { q postgres "SHOW server_version_num"; }

# ---- continuous WAL ------------------------------------------------------------------

receive_loop() {
    # pg_receivewal with a replication slot: while this loop (or the container) is down the
    # server keeps the WAL for us, up to max_slot_wal_keep_size; nothing is lost on a restart.
    mkdir -p "$WAL"
    while :; do
        if pg_receivewal --create-slot --if-not-exists -S "$PITR_SLOT" 2>"$ST/.slot.err"; then
            log "receiving WAL into $WAL (slot $PITR_SLOT, --synchronous)"
            pg_receivewal -D "$WAL" -S "$PITR_SLOT" --synchronous --no-loop -s 5 2>>"$ST/receivewal.log"
            rc=$?
            tail -c 65536 "$ST/receivewal.log" >"$ST/.rw" 2>/dev/null && mv -f "$ST/.rw" "$ST/receivewal.log"
            log "pg_receivewal exited ($rc): $(tail -n 1 "$ST/receivewal.log" 2>/dev/null)"
        else
            log "cannot create or check the replication slot: $(tail -n 1 "$ST/.slot.err")"
        fi
        sleep 2
    done
}

check_receiver() {
    # Freshness: the receiver has flushed up to where the server was at the previous check.
    # An idle server counts as fresh; a stuck or absent receiver ages until PITR_MAX_LAG.
    row=$(q postgres "SELECT pg_current_wal_lsn(),
            coalesce((SELECT flush_lsn::text FROM pg_stat_replication WHERE application_name = '$PITR_APP'
                      AND flush_lsn IS NOT NULL ORDER BY flush_lsn DESC LIMIT 1), ''),
            coalesce((SELECT wal_status || ' ' || coalesce(safe_wal_size::text, '-')
                      FROM pg_replication_slots WHERE slot_name = '$PITR_SLOT'), 'missing -'),
            current_setting('max_slot_wal_keep_size')" 2>/dev/null) || {
        set_status receive failed "cannot query the database server" "$(status_field receive 4 2>/dev/null)"; return; }
    cur=$(printf '%s' "$row" | cut -f1); flush=$(printf '%s' "$row" | cut -f2)
    slot=$(printf '%s' "$row" | cut -f3); bound=$(printf '%s' "$row" | cut -f4)
    t=$(now)
    fresh_at=$(status_field receive 4 2>/dev/null | cut -d' ' -f1); fresh_at=${fresh_at:-$t}
    prev=$(cat "$ST/.prev_lsn" 2>/dev/null)
    if [ -n "$flush" ] && { [ -z "$prev" ] || [ "$(q postgres "SELECT '$flush'::pg_lsn >= '$prev'::pg_lsn")" = t ]; }; then
        fresh_at=$t
    fi
    printf '%s\n' "$cur" >"$ST/.prev_lsn"
    age=$((t - fresh_at))
    case "$slot" in
        lost*)
            msg="replication slot $PITR_SLOT was given up by the server (more than max_slot_wal_keep_size=$bound of WAL waited for this sidecar): the WAL chain has a gap; restorable up to the gap, a new chain starts with a new slot and a new base backup"
            [ -f "$ST/gap" ] || alert failure "$msg"
            set_status receive failed "$msg" "$fresh_at $age"
            new_chain "$msg"
            return ;;
        unreserved*|missing*)
            msg="replication slot $PITR_SLOT is $slot (bound max_slot_wal_keep_size=$bound): WAL may be missing from the chain"
            [ "$(status_field receive 2 2>/dev/null)" = failed ] || alert failure "$msg"
            set_status receive failed "$msg" "$fresh_at $age"; return ;;
    esac
    if [ -f "$ST/gap" ]; then
        # Unhealthy until the new chain has its first base backup.
        since=$(cut -f1 "$ST/gap")
        newest=$(bases | tail -n 1)
        if [ -n "$newest" ] && [ "$(info "$newest" start_epoch)" -ge "$since" ]; then
            rm -f "$ST/gap"; log "the new WAL chain starts with base backup $newest"
        else
            set_status receive failed "$(cut -f2 "$ST/gap")" "$fresh_at $age"; return
        fi
    fi
    if [ "$age" -gt "$PITR_MAX_LAG" ]; then
        msg="newest WAL received ${age}s ago (bound ${PITR_MAX_LAG}s); receiver at ${flush:-none}, server at $cur, slot $slot"
        [ "$(status_field receive 2 2>/dev/null)" = failed ] || alert failure "$msg"
        set_status receive failed "$msg" "$fresh_at $age"
    else
        set_status receive ok "received up to ${flush:-?} (server at $cur), slot $slot" "$fresh_at $age"
    fi
}

new_chain() {
    # The slot is gone: keep the WAL we have (restorable up to the gap) in wal-before-<UTC>/,
    # drop the lost slot; the receive loop creates a new one and streams into an empty wal/,
    # and the next loop turn takes the base backup that starts the new chain.
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    [ -f "$ST/gap" ] || printf '%s\t%s\n' "$(now)" "$1" >"$ST/gap"
    q postgres "SELECT pg_drop_replication_slot('$PITR_SLOT')" >/dev/null 2>&1
    if [ -n "$(ls -A "$WAL" 2>/dev/null)" ]; then
        mv "$WAL" "$PITR_DIR/wal-before-$stamp" && mkdir -p "$WAL" && log "WAL before the gap kept in wal-before-$stamp"
    fi
}

wal_dirs() {
    # Every directory that holds WAL: the current chain, then the ones before a gap.
    printf '%s\n' "$WAL"
    find "$PITR_DIR" -mindepth 1 -maxdepth 1 -type d -name 'wal-before-*' 2>/dev/null | sort -r
}

# ---- base backups ----------------------------------------------------------------------

info() {
    # info BASE_NAME KEY: a value of base/NAME/compose-atomic.info (key=value lines).
    sed -n "s/^$2=//p" "$BASE/$1/compose-atomic.info" 2>/dev/null | head -n 1
}

bases() {
    # Complete base backups, oldest first (names are UTC times, so they sort).
    [ -d "$BASE" ] || return 0
    ls -1 "$BASE" 2>/dev/null | grep -E '^[0-9]{8}T[0-9]{6}Z$' | while read -r b; do
        [ -f "$BASE/$b/compose-atomic.info" ] && printf '%s\n' "$b"
    done
}

chain_of() {
    # chain_of NAME: the base backups to combine, the full one first.
    c=$1; out=$1
    while [ "$(info "$c" kind)" = incremental ]; do
        c=$(info "$c" parent)
        [ -n "$c" ] && [ -f "$BASE/$c/compose-atomic.info" ] || return 1
        out="$c $out"
    done
    printf '%s\n' "$out"
}

base_cmd() {
    take_lock || fail none "another base backup or verification is running"
    mkdir -p "$BASE" "$WAL"
    wl=$(q postgres "SHOW wal_level") || fail base "cannot reach the database server"
    [ "$wl" != minimal ] || fail base "wal_level is minimal: PITR needs replica or logical"
    name=$(date -u +%Y%m%dT%H%M%SZ)
    while [ -e "$BASE/$name" ]; do sleep 1; name=$(date -u +%Y%m%dT%H%M%SZ); done
    tmp="$BASE/.partial-$name"
    find "$BASE" -maxdepth 1 -name '.partial-*' -exec rm -rf {} + 2>/dev/null
    kind=full; parent=""; extra=""
    prev=$(bases | tail -n 1)
    # After a gap (lost slot) the new chain starts with a full backup.
    if [ -n "$prev" ] && [ ! -f "$ST/gap" ] && [ "$PITR_INCREMENTAL" != off ] && [ "$(server_num)" -ge 170000 ] &&
       [ "$(q postgres "SHOW summarize_wal")" = on ]; then
        n=0; c=$prev
        while [ "$(info "$c" kind)" = incremental ]; do n=$((n + 1)); c=$(info "$c" parent); done
        if [ $((n + 1)) -lt "$PITR_FULL_EVERY" ]; then
            kind=incremental; parent=$prev; extra="--incremental=$BASE/$prev/backup_manifest"
        fi
    fi
    start=$(now); t0=$(now_ms)
    log "base backup $name ($kind${parent:+ on $parent})"
    # -X stream: the WAL the backup needs to be consistent is inside it; the rest comes from wal/.
    # shellcheck disable=SC2086
    pg_basebackup -D "$tmp" -X stream -c fast --no-sync -l "compose-atomic $name" $extra 2>"$ST/.base.err" ||
        { rm -rf "$tmp"; fail base "pg_basebackup failed: $(tail -n 3 "$ST/.base.err" | tr '\n' ' ')"; }
    end=$(now)
    if [ "$kind" = full ]; then
        pg_verifybackup -q "$tmp" 2>"$ST/.base.err" ||
            { rm -rf "$tmp"; fail base "the new base backup does not verify: $(tail -n 2 "$ST/.base.err" | tr '\n' ' ')"; }
    fi
    startwal=$(sed -n 's/^START WAL LOCATION: .*(file \([0-9A-F]*\)).*/\1/p' "$tmp/backup_label")
    startlsn=$(sed -n 's/^START WAL LOCATION: \([0-9A-F/]*\) .*/\1/p' "$tmp/backup_label")
    size=$(du -sk "$tmp" | cut -f1)
    {
        echo "kind=$kind"; echo "parent=$parent"; echo "start_epoch=$start"; echo "end_epoch=$end"
        echo "start_wal=$startwal"; echo "start_lsn=$startlsn"; echo "size_kb=$size"
        echo "server_version_num=$(server_num)"; echo "seconds_ms=$(($(now_ms) - t0))"
    } >"$tmp/compose-atomic.info"
    sync
    mv "$tmp" "$BASE/$name" || fail base "cannot rename $tmp"
    sync
    set_status base ok "base backup $name ($kind, ${size} kB)" "$name"
    printf 'BASE\t%s\t%s\t%s\t%s\n' "$name" "$kind" "$size" "$(($(now_ms) - t0))"
    prune
    release_lock
}

prune() {
    # Keep every base backup (and its chain) needed to restore to any moment of the last
    # PITR_KEEP seconds, never fewer than two; then drop WAL older than the oldest kept one.
    limit=$(($(now) - PITR_KEEP))
    all=$(bases)
    count=$(printf '%s\n' "$all" | grep -c .)
    [ "$count" -gt 2 ] || { log "prune: $count base backup(s), floor 2, nothing removed"; return 0; }
    anchor=""
    for b in $all; do
        e=$(info "$b" end_epoch)
        [ "${e:-0}" -le "$limit" ] && anchor=$b
    done
    [ -n "$anchor" ] || anchor=$(printf '%s\n' "$all" | head -n 1)
    anchor=$(chain_of "$anchor" | cut -d' ' -f1)
    # The floor: the second newest full chain is never removed.
    floor=$(printf '%s\n' "$all" | tail -n 2 | head -n 1)
    floor=$(chain_of "$floor" | cut -d' ' -f1)
    [ "$floor" \< "$anchor" ] && anchor=$floor
    for b in $all; do
        [ "$b" \< "$anchor" ] || continue
        rm -rf "${BASE:?}/$b" && log "prune: removed base backup $b (older than the window)"
    done
    seg=$(info "$anchor" start_wal)
    if [ -n "$seg" ]; then
        for d in $(wal_dirs); do
            pg_archivecleanup "$d" "$seg" 2>/dev/null && log "prune: WAL before $seg removed from $d (oldest base $anchor)"
            [ "$d" = "$WAL" ] || rmdir "$d" 2>/dev/null || true
        done
    fi
}

# ---- restore -----------------------------------------------------------------------------

COUNT_SQL="SELECT format('%I.%I', n.nspname, c.relname),
  (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I', n.nspname, c.relname),
   false, true, '')))[1]::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence = 'p'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1"

counts() {
    # counts DB OUT [psql options]: per-table row counts in one REPEATABLE READ snapshot.
    db=$1; out=$2; shift 2
    psql -X -q -At -F "$(printf '\t')" -v ON_ERROR_STOP=1 "$@" -d "$db" \
        -c "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" -c "$COUNT_SQL" -c "COMMIT" >"$out.raw" &&
        grep -v -e '^BEGIN$' -e '^COMMIT$' "$out.raw" | sort >"$out"
}

fetch_wal() {
    # restore_command: a complete segment, else the one pg_receivewal is still writing
    # (or was writing when a gap ended that chain).
    for d in $(wal_dirs); do
        if [ -f "$d/$1" ]; then exec cp "$d/$1" "$2"; fi
        if [ -f "$d/$1.partial" ]; then exec cp "$d/$1.partial" "$2"; fi
    done
    exit 1
}

pick_base() {
    # pick_base EPOCH|'': the newest base backup that ended before EPOCH (or the newest).
    found=""
    for b in $(bases); do
        if [ -z "$1" ] || [ "$(info "$b" end_epoch)" -lt "$1" ]; then found=$b; fi
    done
    printf '%s\n' "$found"
}

restore_to() {
    # restore_to DEST KIND [VALUE [ISO]] (KIND: time EPOCH ISO | lsn LSN | name POINT | latest): materialize
    # the base chain into DEST, replay WAL to the target, promote, count rows, stop cleanly.
    dest=$1; tkind=$2; tval=${3:-}; tiso=${4:-}
    case "$tkind" in time) b=$(pick_base "$tval") ;; *) b=$(pick_base "") ;; esac
    [ -n "$b" ] || {
        oldest=$(bases | head -n 1)
        if [ -n "$oldest" ]; then
            fail "$MODE" "no base backup ended before $tiso; the earliest moment to restore to is $(date -u -d "@$(info "$oldest" end_epoch)" '+%Y-%m-%d %H:%M:%SZ' 2>/dev/null || info "$oldest" end_epoch)"
        fi
        fail "$MODE" "there is no base backup yet (compose-atomic pitr base takes one)"; }
    chain=$(chain_of "$b") || fail "$MODE" "the incremental chain of base backup $b is broken (a parent is missing)"
    BASE_USED=$b
    t0=$(now_ms)
    for c in $chain; do
        if [ "$(info "$c" kind)" = full ]; then
            pg_verifybackup -q -i compose-atomic.info "$BASE/$c" 2>"$W/verifybackup.err" ||
                fail "$MODE" "base backup $c is damaged: $(head -n 2 "$W/verifybackup.err" | tr '\n' ' ')"
        else
            pg_verifybackup -q -n -i compose-atomic.info "$BASE/$c" 2>"$W/verifybackup.err" ||
                fail "$MODE" "base backup $c is damaged: $(head -n 2 "$W/verifybackup.err" | tr '\n' ' ')"
        fi
    done
    T_VERIFY=$(($(now_ms) - t0))
    mkdir -p "$dest" && chmod 700 "$dest"
    if [ "$(printf '%s\n' "$chain" | wc -w)" -eq 1 ]; then
        cp -R -p "$BASE/$b/." "$dest/" || fail "$MODE" "copying base backup $b failed"
    else
        # shellcheck disable=SC2046
        pg_combinebackup --no-sync -o "$dest" $(for c in $chain; do printf '%s ' "$BASE/$c"; done) 2>"$W/combine.err" ||
            fail "$MODE" "pg_combinebackup of $chain failed: $(tail -n 2 "$W/combine.err" | tr '\n' ' ')"
    fi
    rm -f "$dest/compose-atomic.info" "$dest/postmaster.pid" "$dest/standby.signal"
    {
        echo "# compose-atomic pitr restore: begin"
        echo "restore_command = 'sh $PITR_SCRIPT fetch-wal %f %p'"
        case "$tkind" in
            time) echo "recovery_target_time = '$tiso'"; echo "recovery_target_action = 'promote'" ;;
            lsn) echo "recovery_target_lsn = '$tval'"; echo "recovery_target_action = 'promote'" ;;
            name) echo "recovery_target_name = '$tval'"; echo "recovery_target_action = 'promote'" ;;
        esac
        echo "# compose-atomic pitr restore: end"
    } >>"$dest/postgresql.auto.conf"
    : >"$dest/recovery.signal"
    T_COPY=$(($(now_ms) - t0 - T_VERIFY))
    printf 'local all all trust\n' >"$W/hba.conf"
    major=$(postgres -V | sed 's/^[^0-9]*\([0-9]*\).*/\1/')
    nosum=""; [ "${major:-0}" -ge 17 ] && nosum="-c summarize_wal=off"
    # shellcheck disable=SC2086
    postgres -D "$dest" -k "$W" -c listen_addresses= -c port=5432 -c hba_file="$W/hba.conf" \
        -c archive_mode=off $nosum -c hot_standby=off \
        -c logging_collector=off -c log_min_messages=log >"$W/postgres.log" 2>&1 &
    VPID=$!
    i=0
    while :; do
        if ! kill -0 "$VPID" 2>/dev/null; then
            wait "$VPID" 2>/dev/null; VPID=""
            fail "$MODE" "recovery failed: $(grep -E 'FATAL|PANIC|invalid|recovery ended|DETAIL|HINT' "$W/postgres.log" | grep -v -e 'is starting up' -e 'not accepting connections' -e 'Hot standby mode is disabled' | tail -n 3 | tr '\n' ' ')"
        fi
        if [ "$(psql -X -At -h "$W" -U "$PGUSER" -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; then
            break
        fi
        i=$((i + 1))
        [ "$i" -lt $((PITR_RESTORE_TIMEOUT * 5)) ] || fail "$MODE" "recovery did not finish within ${PITR_RESTORE_TIMEOUT}s"
        sleep 0.2
    done
    RTO_MS=$(($(now_ms) - t0))
    T_REPLAY=$((RTO_MS - T_VERIFY - T_COPY))
    REACHED=$(grep -E 'recovery stopping|redo done|last completed transaction' "$W/postgres.log" | tail -n 1 | sed 's/^.*LOG: *//')
    for db in $BACKUP_DATABASES; do
        counts "$db" "$W/restored.$db" -h "$W" -U "$PGUSER" 2>"$W/count.err" ||
            fail "$MODE" "counting rows of $db in the restored server failed: $(head -n 2 "$W/count.err" | tr '\n' ' ')"
    done
    pg_ctl -D "$dest" -m fast -w stop >/dev/null 2>&1 || kill -INT "$VPID" 2>/dev/null
    wait "$VPID" 2>/dev/null; VPID=""
    # The restored directory is a plain data directory again: no restore settings left behind.
    sed -i '/^# compose-atomic pitr restore: begin$/,/^# compose-atomic pitr restore: end$/d' "$dest/postgresql.auto.conf"
}

restore_cmd() {
    MODE=restore
    dest=$1; shift
    [ -d "$dest" ] || fail restore "$dest is not a directory (mount the new volume there)"
    [ -z "$(ls -A "$dest" 2>/dev/null)" ] || fail restore "$dest is not empty: a restore only goes into a new, empty volume"
    W=$(mktemp -d /tmp/compose-atomic-pitr.XXXXXX)
    restore_to "$dest" "$@"
    for db in $BACKUP_DATABASES; do
        while IFS=$(printf '\t') read -r table n; do printf 'ROWS\t%s\t%s\t%s\n' "$db" "$table" "$n"; done <"$W/restored.$db"
    done
    printf 'RESTORED\t%s\t%s\t%s\t%s\t%s\t%s\n' "$BASE_USED" "$RTO_MS" "$REACHED" "$T_VERIFY" "$T_COPY" "$T_REPLAY"
    cleanup
}

verify_cmd() {
    MODE=verify
    take_lock || { echo "FAILED	another base backup or verification is running"; exit 1; }
    W=$(mktemp -d /tmp/compose-atomic-pitr.XXXXXX)
    for db in $BACKUP_DATABASES; do
        counts "$db" "$W/before.$db" 2>"$W/count.err" || fail verify "counting rows of $db failed: $(head -n 2 "$W/count.err")"
    done
    # A named restore point is the target: recovery stops exactly there (an LSN target at the very
    # end of the WAL would never be "reached": no record starts there yet).
    point="compose-atomic-verify-$(now)"
    lsn=$(q postgres "SELECT pg_create_restore_point('$point')") || fail verify "cannot create a restore point on the database server"
    lsn=$(q postgres "SELECT pg_current_wal_lsn()") || fail verify "cannot reach the database server"
    i=0
    until [ "$(q postgres "SELECT coalesce(max(flush_lsn) >= '$lsn', false) FROM pg_stat_replication WHERE application_name = '$PITR_APP'")" = t ]; do
        i=$((i + 1)); [ "$i" -lt 300 ] || fail verify "the WAL receiver did not receive up to $lsn within 60s"
        sleep 0.2
    done
    for db in $BACKUP_DATABASES; do
        counts "$db" "$W/after.$db" 2>"$W/count.err" || fail verify "counting rows of $db failed"
    done
    restore_to "$W/pg" name "$point"
    for db in $BACKUP_DATABASES; do
        # Counted before and after reading the LSN: a table being written may move in between,
        # so the restored count must lie between the two (equal on quiet tables).
        bad=$(awk -F '\t' -v db="$db" '
            FILENAME ~ /before/ { b[$1] = $2; k[$1] = 1; next }
            FILENAME ~ /after/ { a[$1] = $2; k[$1] = 1; next }
            { r[$1] = $2; k[$1] = 1 }
            END {
                for (t in k) {
                    if (!(t in r)) { if ((t in b) && (t in a)) print db "." t ": missing"; continue }
                    lo = (t in b) ? b[t] : a[t]; hi = (t in a) ? a[t] : b[t]
                    if (lo + 0 > hi + 0) { x = lo; lo = hi; hi = x }
                    if (!(t in b) && !(t in a)) { print db "." t ": not in the source"; continue }
                    if (r[t] + 0 < lo + 0 || r[t] + 0 > hi + 0) print db "." t ": " r[t] " rows, source " lo (lo == hi ? "" : ".." hi)
                }
            }' "$W/before.$db" "$W/after.$db" "$W/restored.$db" | head -n 5 | tr '\n' ';')
        [ -z "$bad" ] || fail verify "restored row counts differ from the source at $lsn: $bad"
    done
    tables=0
    for db in $BACKUP_DATABASES; do tables=$((tables + $(wc -l <"$W/restored.$db"))); done
    set_status verify ok "restored $BASE_USED + WAL to $lsn in $((RTO_MS / 1000)).$(printf '%03d' $((RTO_MS % 1000)))s; $tables tables match" "$RTO_MS $BASE_USED $lsn"
    printf 'VERIFIED\t%s\t%s\t%s\t%s\n' "$BASE_USED" "$lsn" "$RTO_MS" "$tables"
    cleanup
}

# ---- list and health -------------------------------------------------------------------

list_cmd() {
    for b in $(bases); do
        printf 'BASE\t%s\t%s\t%s\t%s\t%s\t%s\n' "$b" "$(info "$b" kind)" "$(info "$b" parent)" \
            "$(info "$b" start_epoch)" "$(info "$b" end_epoch)" "$(info "$b" size_kb)"
    done
    oldest=$(bases | head -n 1)
    newest_wal=$(ls -1t "$WAL" 2>/dev/null | grep -E '^[0-9A-F]{24}(\.partial)?$' | head -n 1)
    segments=$(ls -1 "$WAL" 2>/dev/null | grep -cE '^[0-9A-F]{24}(\.partial)?$')
    if [ -n "$oldest" ]; then
        wal_at=$(date -u -r "$WAL/$newest_wal" +%s 2>/dev/null || echo "")
        fresh=$(status_field receive 4 2>/dev/null | cut -d' ' -f1)
        printf 'WINDOW\t%s\t%s\t%s\n' "$(info "$oldest" end_epoch)" "${fresh:-${wal_at:-}}" "$segments"
    fi
    for s in receive base verify; do
        [ -f "$ST/$s" ] && printf 'STATUS\t%s\t%s\n' "$s" "$(cat "$ST/$s")"
    done
    return 0
}

health_cmd() {
    t=$(now)
    r=$(status_field receive 2 2>/dev/null) || { echo "no WAL status yet"; exit 1; }
    at=$(status_field receive 1)
    [ $((t - at)) -le 60 ] || { echo "the WAL status is $((t - at))s old: the sidecar's loop is stuck"; exit 1; }
    [ "$r" = ok ] || { echo "WAL: $(status_field receive 3)"; exit 1; }
    if [ "$(status_field verify 2 2>/dev/null)" = failed ]; then echo "verification failed: $(status_field verify 3)"; exit 1; fi
    if [ "$(status_field base 2 2>/dev/null)" = failed ]; then echo "base backup failed: $(status_field base 3)"; exit 1; fi
    [ -n "$(bases | tail -n 1)" ] || { echo "no base backup yet"; exit 1; }
    echo "ok: $(status_field receive 3)"
}

# ---- the loop ------------------------------------------------------------------------------

cron_due() {
    # cron_due EXPR: the dump sidecar's own cron matcher, on the current UTC-or-TZ minute.
    set -- "$1" $(date +'%M %H %d %m %w')
    sh "$BACKUP_SCRIPT" cron-match "$1" "$(($(echo "$2" | sed 's/^0//') + 0))" "$(($(echo "$3" | sed 's/^0//') + 0))" \
        "$(($(echo "$4" | sed 's/^0//') + 0))" "$(($(echo "$5" | sed 's/^0//') + 0))" "$6"
}

serve() {
    mkdir -p "$WAL" "$BASE" "$ST"
    rm -f "$ST/.prev_lsn"
    receive_loop &
    RPID=$!
    trap 'kill "$RPID" 2>/dev/null; cleanup; exit 0' INT TERM
    last_minute=""
    sleep 3
    while :; do
        check_receiver
        if [ -f "$ST/gap" ] && [ ! -d "$PITR_DIR/.lock" ]; then
            ( MODE=base; base_cmd ) >/dev/null &
        fi
        minute=$(date +%Y%m%d%H%M)
        if [ "$minute" != "$last_minute" ]; then
            last_minute=$minute
            # In the background: the freshness check goes on during a long base backup; the
            # lock keeps base backups and verifications one at a time.
            if [ -z "$(bases | tail -n 1)" ] || cron_due "$PITR_SCHEDULE"; then
                ( MODE=base; base_cmd ) >/dev/null &
            elif cron_due "$PITR_VERIFY_SCHEDULE"; then
                ( verify_cmd ) >/dev/null &
            fi
        fi
        sleep 10
    done
}

# ---- offsite (rclone image) -------------------------------------------------------------

offsite_pass() {
    remote=${PITR_OFFSITE_REMOTE:?PITR_OFFSITE_REMOTE is not set}
    # copy, never sync: a file removed (or never present) locally is never removed remotely;
    # --immutable: a file that changed after it was copied is an error, not an overwrite.
    for part in wal base; do
        [ -d "$PITR_DIR/$part" ] || { printf 'failed\t%s\n' "$PITR_DIR/$part is missing; nothing copied, nothing removed" >"$PITR_OFFSITE_STATE"; return 1; }
    done
    if ! rclone copy --immutable --exclude '*.partial' --exclude '.*' "$WAL" "$remote/wal" 2>/tmp/.pitr-copy.err ||
       ! rclone copy --immutable --exclude '.partial-*/**' --exclude '.*' "$BASE" "$remote/base" 2>>/tmp/.pitr-copy.err; then
        msg="offsite copy to $remote failed: $(grep -i error /tmp/.pitr-copy.err | head -n 2 | tr '\n' ' ')"
        log "$msg"; printf 'failed\t%s\n' "$msg" >"$PITR_OFFSITE_STATE"; alert failure "$msg"; return 1
    fi
    printf 'ok\t%s\t%s\n' "copied to $remote" "$(now)" >"$PITR_OFFSITE_STATE"
    log "offsite: $remote is up to date"
}

offsite_serve() {
    while :; do offsite_pass || true; sleep "$PITR_OFFSITE_INTERVAL"; done
}

offsite_health() {
    [ -f "$PITR_OFFSITE_STATE" ] || { echo "no offsite pass yet"; exit 1; }
    [ "$(cut -f1 "$PITR_OFFSITE_STATE")" = ok ] || { cut -f2 "$PITR_OFFSITE_STATE"; exit 1; }
    echo ok
}

# ---- entry -----------------------------------------------------------------------------------

drop_privileges() {
    # A restore target is the postgres user's too; the rest is the dump sidecar's (shared.sh).
    [ "$(id -u)" = 0 ] && [ "$1" = restore ] && [ -n "${2:-}" ] && [ -d "$2" ] && chown postgres "$2" && chmod 700 "$2"
    drop_to_postgres "$PITR_DIR" "$@"
}

MODE=none
cmd=${1:-serve}
[ "$#" -gt 0 ] && shift
case "$cmd" in serve|base|verify|restore) drop_privileges "$cmd" "$@" ;; esac
case "$cmd" in serve|base|verify|restore) pgpass ;; esac
trap 'cleanup; exit 130' INT TERM
case "$cmd" in
    serve) serve ;;
    base) MODE=base; base_cmd ;;
    verify) verify_cmd ;;
    restore) restore_cmd "$@" ;;
    fetch-wal) fetch_wal "$1" "$2" ;;
    list) list_cmd ;;
    health) health_cmd ;;
    offsite-serve) offsite_serve ;;
    offsite-now) offsite_pass ;;
    offsite-health) offsite_health ;;
    *) echo "unknown command: $cmd (serve, base, verify, restore, list, health, offsite-serve, offsite-now)" >&2; exit 2 ;;
esac
