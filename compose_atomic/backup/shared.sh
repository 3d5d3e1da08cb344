# Shared by the backup and PITR sidecars' scripts: generate.py puts it in place of their
# "# include shared.sh" line. ALERT_SOURCE names the sender in alert messages.

json_escape() {
    # Escape a string for a JSON value: backslash, quote, control characters as spaces.
    printf '%s' "$1" | tr '\n\r\t' '   ' | tr -d '\000-\010\013\014\016-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}

alert() {
    # alert LEVEL TEXT: POST a Slack/Discord compatible JSON body to $BACKUP_ALERT_WEBHOOK.
    [ -n "$BACKUP_ALERT_WEBHOOK" ] || return 0
    text="[$1] compose-atomic $ALERT_SOURCE on $(hostname 2>/dev/null || echo sidecar): $2"
    body=$(printf '{"text":"%s","content":"%s"}' "$(json_escape "$text")" "$(json_escape "$text")")
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -m 20 -H 'Content-Type: application/json' --data-binary "$body" \
            "$BACKUP_ALERT_WEBHOOK" >/dev/null 2>&1 && return 0
    elif command -v wget >/dev/null 2>&1; then
        wget -q -T 20 -O /dev/null --header 'Content-Type: application/json' \
            --post-data "$body" "$BACKUP_ALERT_WEBHOOK" 2>/dev/null && return 0
    elif command -v perl >/dev/null 2>&1; then
        # Debian's postgres images have perl (postgresql-common) but neither curl nor wget.
        ALERT_BODY=$body perl -MHTTP::Tiny -e '
            my $r = HTTP::Tiny->new(timeout => 20)->post($ARGV[0],
                {headers => {"Content-Type" => "application/json"}, content => $ENV{ALERT_BODY}});
            exit($r->{success} ? 0 : 1);' "$BACKUP_ALERT_WEBHOOK" 2>/dev/null && return 0
    fi
    log "ALERT NOT DELIVERED (no working curl, wget or perl HTTP client for the webhook): $text"
    return 1
}

drop_to_postgres() {
    # drop_to_postgres DIR ARGS...: start as root to own the sidecar's volume DIR, then run this
    # script again with ARGS as the image's postgres user (initdb and postgres refuse root).
    dir=$1; shift
    [ "$(id -u)" = 0 ] || return 0
    id postgres >/dev/null 2>&1 || return 0
    mkdir -p "$dir" && chown postgres "$dir" && chmod 700 "$dir"
    if [ -n "${BACKUP_PASSWORD_FILE:-}" ] && [ -f "$BACKUP_PASSWORD_FILE" ]; then
        # Compose mounts file secrets read-only as they are on the host; copy for the postgres user.
        cp "$BACKUP_PASSWORD_FILE" /tmp/.compose-atomic-pw 2>/dev/null && chown postgres /tmp/.compose-atomic-pw &&
            chmod 600 /tmp/.compose-atomic-pw && BACKUP_PASSWORD_FILE=/tmp/.compose-atomic-pw && export BACKUP_PASSWORD_FILE
    fi
    # gosu (Debian postgres images), su-exec (Alpine ones), util-linux setpriv (others).
    # Absolute paths: busybox's own setpriv applet lacks --reuid.
    for tool in $(command -v gosu su-exec 2>/dev/null) /usr/local/bin/gosu /usr/sbin/gosu /sbin/su-exec \
                /usr/bin/su-exec /usr/local/bin/su-exec /usr/bin/setpriv /bin/setpriv; do
        [ -x "$tool" ] || continue
        case "$tool" in
            */setpriv)
                "$tool" --help 2>&1 | grep -q -- --reuid || continue
                exec "$tool" --reuid=postgres --regid=postgres --init-groups ${BACKUP_SHELL:-sh} "$0" "$@" ;;
            *) exec "$tool" postgres ${BACKUP_SHELL:-sh} "$0" "$@" ;;
        esac
    done
    echo "cannot drop privileges to postgres: no setpriv, gosu or su-exec in this image" >&2
    exit 1
}
