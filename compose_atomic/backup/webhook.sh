# Shared by the backup and PITR sidecars' scripts: generate.py puts it in place of their
# "# include webhook.sh" line. ALERT_SOURCE names the sender in the message.

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
