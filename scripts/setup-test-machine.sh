#!/usr/bin/env bash
# Prepare a fresh Debian 12 (bookworm) machine to run the test suite for real:
# a Docker engine with BuildKit and the containerd image store, a Debian base
# image made without a registry (Docker Hub is unreachable here), and a local
# registry with htpasswd auth. Idempotent: safe to run again.
#
# Everything here is what ../shared/reference/ci-machine.md verified on this
# kind of machine; the "why" of each step is noted beside it.
set -euo pipefail

STATE_DIR=${SKYRL_STACK_STATE:-/var/lib/skyrl-stack-test}
BASE_IMAGE=${SKYRL_STACK_TEST_BASE:-skyrl-stack/debian-base:bookworm}
REGISTRY_ADDR=${SKYRL_STACK_TEST_REGISTRY:-127.0.0.1:5000}
REGISTRY_USER=${SKYRL_STACK_TEST_REGISTRY_USER:-ci}
REGISTRY_PASSWORD=${SKYRL_STACK_TEST_REGISTRY_PASSWORD:-ci-password}

log() { printf '[setup] %s\n' "$*"; }
mkdir -p "$STATE_DIR"

add_trixie_suite() {
  # trixie carries docker.io 26 (BuildKit new enough for rewrite-timestamp).
  # A low pin keeps everything else on bookworm: `-t trixie` would pull in
  # trixie's libc6, systemd and perl.
  [ -f /etc/apt/sources.list.d/trixie.sources ] && return
  cat >/etc/apt/sources.list.d/trixie.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >/etc/apt/preferences.d/trixie-low <<'EOF'
Package: *
Pin: release n=trixie
Pin-Priority: 100
EOF
}

install_packages() {
  export DEBIAN_FRONTEND=noninteractive
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io/trixie)
  docker buildx version >/dev/null 2>&1 || need+=(docker-buildx/trixie)
  docker compose version >/dev/null 2>&1 || need+=(docker-compose/trixie)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v docker-registry >/dev/null || need+=(docker-registry)
  command -v htpasswd >/dev/null || need+=(apache2-utils)
  command -v curl >/dev/null || need+=(curl)
  # SkyPilot needs rsync on the launching machine, even for `sky launch --dryrun`
  # (tests/launch/test_launch_plan.py).
  command -v rsync >/dev/null || need+=(rsync)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing: ${need[*]}"
    case " ${need[*]} " in *"/trixie "*) add_trixie_suite ;; esac
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

start_dockerd() {
  if docker info >/dev/null 2>&1; then log "docker engine already running"; return; fi
  mkdir -p /etc/docker
  # The containerd image store is what makes rewrite-timestamp + SOURCE_DATE_EPOCH
  # give bit-identical digests; it also lets the engine keep OCI indexes.
  if [ ! -f /etc/docker/daemon.json ]; then
    echo '{"features": {"containerd-snapshotter": true}}' >/etc/docker/daemon.json
  fi
  # A daemon killed uncleanly (e.g. at the end of a previous session) leaves
  # its pid file behind, and a new dockerd refuses to start over it.
  for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then rm -f "$pidfile"; fi
  done
  log "starting dockerd (log: $STATE_DIR/dockerd.log)"
  # setsid: the daemon must outlive this script (no systemd on this machine).
  setsid dockerd >"$STATE_DIR/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { log "docker engine up"; return; }
    sleep 1
  done
  tail -n 30 "$STATE_DIR/dockerd.log" >&2
  echo "error: dockerd did not answer within 60 s" >&2
  exit 1
}

make_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $BASE_IMAGE present"; return
  fi
  local root="$STATE_DIR/rootfs"
  rm -rf "$root"
  log "debootstrap bookworm -> $BASE_IMAGE (about a minute)"
  # Python and venv so the rehearsal image can make its own environment;
  # ca-certificates so pip/uv trust PyPI through the build secret.
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian >"$STATE_DIR/debootstrap.log" 2>&1 \
    || { tail -n 20 "$STATE_DIR/debootstrap.log" >&2; exit 1; }
  tar -C "$root" -c . | docker import - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
  log "base image $BASE_IMAGE imported"
}

start_registry() {
  local dir="$STATE_DIR/registry"
  mkdir -p "$dir/data"
  htpasswd -Bbc "$dir/htpasswd" "$REGISTRY_USER" "$REGISTRY_PASSWORD" 2>/dev/null
  cat >"$dir/config.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
auth:
  htpasswd:
    realm: skyrl-stack-test
    path: $dir/htpasswd
EOF
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://$REGISTRY_ADDR/v2/" || true)
  if [ "$code" = 401 ]; then
    log "registry already answering on $REGISTRY_ADDR (with a login)"; return
  elif [ "$code" != 000 ]; then
    # Something else owns the port, e.g. the docker-registry package's own
    # service, which runs without a login: the tests need ours.
    echo "error: a registry without a login (HTTP $code) already listens on $REGISTRY_ADDR" >&2
    echo "hint: stop it (systemctl disable --now docker-registry) or set SKYRL_STACK_TEST_REGISTRY" >&2
    exit 1
  fi
  log "starting registry on $REGISTRY_ADDR (user $REGISTRY_USER)"
  setsid docker-registry serve "$dir/config.yml" >"$STATE_DIR/registry.log" 2>&1 < /dev/null &
  for _ in $(seq 1 30); do
    curl -s -o /dev/null "http://$REGISTRY_ADDR/v2/" && { log "registry up"; return; }
    sleep 1
  done
  tail -n 20 "$STATE_DIR/registry.log" >&2
  echo "error: registry did not answer on $REGISTRY_ADDR" >&2
  exit 1
}

install_packages
start_dockerd
make_base_image
start_registry
log "done"
