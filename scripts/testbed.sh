#!/usr/bin/env bash
# Prepare this machine to run compose-atomic for real: a Docker Engine, the
# Compose v2 plugin, and locally built images (no registry is reachable here).
# Every step checks first and skips what is already there, so a warm machine
# re-runs in seconds. Needs root on Debian 12 (apt-get).
#
#   scripts/testbed.sh            set everything up, start dockerd if needed
#   scripts/testbed.sh stop       stop the dockerd that this script started
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${COMPOSE_ATOMIC_TESTBED_STATE:-/var/lib/compose-atomic-testbed}"
VENV="${COMPOSE_ATOMIC_VENV:-$ROOT/.venv}"
DOCKERD_PID="$STATE/dockerd.pid"
APT_PACKAGES=(docker.io busybox-static caddy debootstrap rclone hey postgresql-client)

export IMAGE_BUSYBOX="compose-atomic-testbed/busybox:1"
export IMAGE_CADDY="compose-atomic-testbed/caddy:2"
export IMAGE_POSTGRES="compose-atomic-testbed/postgres:15"

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
    setsid dockerd >/var/log/compose-atomic-dockerd.log 2>&1 </dev/null &
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

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_busybox() {
    have_image "$IMAGE_BUSYBOX" && return
    log "building $IMAGE_BUSYBOX"
    local ctx; ctx="$(mktemp -d)"
    cp "$ROOT/testbed/images/busybox/Dockerfile" "$ctx/"
    cp /bin/busybox "$ctx/busybox"
    docker build -q -t "$IMAGE_BUSYBOX" "$ctx" >/dev/null 2>&1
    rm -rf "$ctx"
}

build_caddy() {
    have_image "$IMAGE_CADDY" && return
    log "building $IMAGE_CADDY from Debian's caddy"
    local ctx lib; ctx="$(mktemp -d)"
    mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/etc/caddy" "$ctx/rootfs/config" "$ctx/rootfs/data" "$ctx/rootfs/tmp"
    cp /usr/bin/caddy "$ctx/rootfs/usr/bin/caddy"
    for lib in $(ldd /usr/bin/caddy | grep -o '/[^ ]*'); do
        mkdir -p "$ctx/rootfs$(dirname "$lib")"
        cp -L "$lib" "$ctx/rootfs$lib"
    done
    printf ':80 {\n\trespond "compose-atomic test caddy" 200\n}\n' >"$ctx/rootfs/etc/caddy/Caddyfile"
    cp "$ROOT/testbed/images/caddy/Dockerfile" "$ctx/"
    docker build -q -t "$IMAGE_CADDY" "$ctx" >/dev/null 2>&1
    rm -rf "$ctx"
}

build_postgres() {
    have_image "$IMAGE_POSTGRES" && return
    local base="compose-atomic-testbed/postgres-base:15" rootfs mirror
    if ! have_image "$base"; then
        log "building $base with debootstrap (about a minute)"
        rootfs="$(mktemp -d)"
        mirror="$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
        debootstrap --variant=minbase --include=postgresql-15,ca-certificates bookworm "$rootfs" \
            "${mirror:-http://deb.debian.org/debian}" >/dev/null
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
        rm -rf "$rootfs"
    fi
    log "building $IMAGE_POSTGRES"
    docker build -q --build-arg "BASE=$base" -t "$IMAGE_POSTGRES" "$ROOT/testbed/images/postgres" >/dev/null 2>&1
}

case "${1:-up}" in
    up)
        install_packages
        python_env
        compose_plugin
        start_dockerd
        build_busybox
        build_caddy
        build_postgres
        log "ready: $IMAGE_BUSYBOX $IMAGE_CADDY $IMAGE_POSTGRES"
        ;;
    stop) stop_dockerd ;;
    *) echo "usage: $0 [up|stop]" >&2; exit 2 ;;
esac
