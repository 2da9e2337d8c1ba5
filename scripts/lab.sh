#!/usr/bin/env bash
# The built-in lab: a local systemd "lab host" container (Debian 12, ports on localhost) that
# site.yml provisions with the shipped inventory.
#   scripts/lab.sh up     create the lab host if needed and run `ansible-playbook site.yml` on it
#   scripts/lab.sh down   remove the lab host and its data
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

LAB_HTTP_PORT="${SSH_LAB_HTTP_PORT:-8080}"
LAB_HTTPS_PORT="${SSH_LAB_HTTPS_PORT:-8443}"
LAB_SANDBOX_PORT="${SSH_LAB_SANDBOX_PORT:-9443}"
LAB_VOLUME="$LAB_CONTAINER-docker"

# The settings measured to run systemd as PID 1 and a Docker engine inside a container here
# (docs/lab-and-tests.md, "The lab and the test bench"). .config/molecule/config.yml holds the same for the tests.
lab_create() {
  docker run -d --name "$LAB_CONTAINER" --hostname "$LAB_CONTAINER" \
    --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add DAC_READ_SEARCH --cap-add SYS_PTRACE \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
    --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
    -v "$LAB_VOLUME:/var/lib/docker" \
    -v "$CACHE_DIR/images:/opt/images:ro" \
    --stop-signal SIGRTMIN+3 \
    -p "127.0.0.1:$LAB_HTTP_PORT:80" -p "127.0.0.1:$LAB_HTTPS_PORT:443" \
    -p "127.0.0.1:$LAB_SANDBOX_PORT:9443" \
    --label org.secure-streamlit.role=lab \
    "$BASE_IMAGE" >/dev/null
}

wait_for_systemd() {
  local state
  for _ in $(seq 1 60); do
    state=$(docker exec "$LAB_CONTAINER" systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) info "systemd: $state"; return 0 ;; esac
    sleep 1
  done
  die "systemd in $LAB_CONTAINER did not come up (state: ${state:-none}); see: docker logs $LAB_CONTAINER"
}

up() {
  bash scripts/setup.sh
  step "Lab host ($LAB_CONTAINER)"
  if [ "$(docker inspect -f '{{.State.Running}}' "$LAB_CONTAINER" 2>/dev/null)" = true ]; then
    info "running"
  else
    docker rm -f "$LAB_CONTAINER" >/dev/null 2>&1 || true
    lab_create
    info "created from $BASE_IMAGE"
  fi
  wait_for_systemd

  step "ansible-playbook site.yml (inventory/hosts.yml)"
  "$VENV/bin/ansible-playbook" site.yml "$@"

  step "Where to look"
  info "shell on the lab host:    docker exec -it $LAB_CONTAINER bash"
  info "its Docker engine:        docker exec $LAB_CONTAINER docker info"
  info "its daemon.json:          docker exec $LAB_CONTAINER cat /etc/docker/daemon.json"
  info "HTTP/HTTPS (once the edge lands): http://127.0.0.1:$LAB_HTTP_PORT https://127.0.0.1:$LAB_HTTPS_PORT"
  info "tear down:                make lab-down"
}

down() {
  step "Removing the lab host"
  docker rm -f "$LAB_CONTAINER" >/dev/null 2>&1 && info "removed $LAB_CONTAINER" || info "no lab host"
  docker volume rm "$LAB_VOLUME" >/dev/null 2>&1 && info "removed volume $LAB_VOLUME" || true
}

case "${1:-up}" in
  up) shift || true; up "$@" ;;
  down) down ;;
  *) die "usage: scripts/lab.sh up [ansible-playbook options] | down" ;;
esac
