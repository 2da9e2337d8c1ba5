#!/usr/bin/env bash
# The built-in lab: a local systemd "lab host" container (Debian 12, ports on localhost) that
# site.yml provisions with the shipped inventory.
#   scripts/lab.sh up     create the lab host if needed and run `ansible-playbook site.yml` on it
#   scripts/lab.sh down   remove the lab host and its data
#   scripts/lab.sh push [--broken]   push a new version of the example app to the lab git server and
#                         time it to serving through the edge (scripts/lab_push.py)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

LAB_HTTP_PORT="${SSH_LAB_HTTP_PORT:-8080}"
LAB_HTTPS_PORT="${SSH_LAB_HTTPS_PORT:-8443}"
LAB_SANDBOX_PORT="${SSH_LAB_SANDBOX_PORT:-9443}"
LAB_VOLUME="$LAB_CONTAINER-docker"
# What the controller keeps of a lab (its CA), per lab container.
LAB_DIR="$CACHE_DIR/lab/$LAB_CONTAINER"
# The status app's lab admin (inventory/group_vars/streamlit_hosts/apps.yml reads the password from this
# file through SSH_LAB_STATUS_PASSWORD_FILE): made once per lab, readable by its owner alone.
LAB_STATUS_USER=lab-admin
LAB_STATUS_PASSWORD_FILE="$LAB_DIR/status-admin.password"
export SSH_LAB_STATUS_PASSWORD_FILE="$LAB_STATUS_PASSWORD_FILE"

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

# A random password for the status app's lab admin, written with no moment at a wider mode.
status_password() {
  mkdir -p "$LAB_DIR"
  chmod 0700 "$LAB_DIR"
  if [ ! -s "$LAB_STATUS_PASSWORD_FILE" ]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$LAB_STATUS_PASSWORD_FILE")
  fi
  chmod 0600 "$LAB_STATUS_PASSWORD_FILE"
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
  status_password

  # Each play's recap line ("lab : ok=... changed=..."), summed for the summary.
  local log
  log=$(mktemp)
  step "Lab git server (playbooks/lab_git_server.yml)"
  "$VENV/bin/ansible-playbook" playbooks/lab_git_server.yml "$@" | tee "$log"
  step "ansible-playbook site.yml (inventory/hosts.yml)"
  "$VENV/bin/ansible-playbook" site.yml "$@" | tee -a "$log"
  local changed
  changed=$(awk '/^lab[[:space:]]+:/ { for (i = 1; i <= NF; i++) if ($i ~ /^changed=/) { sub("changed=", "", $i); n += $i } } END { print n + 0 }' "$log")
  rm -f "$log"

  mkdir -p "$LAB_DIR"
  docker exec "$LAB_CONTAINER" cat /etc/streamlit-edge/ca.crt >"$LAB_DIR/ca.crt"
  step "What is where (changed=$changed)"
  info "the example app:          https://localhost:$LAB_HTTPS_PORT/hello/"
  info "the lab CA:               $LAB_DIR/ca.crt (in the lab host: /etc/streamlit-edge/ca.crt)"
  info "  trust it for curl:      curl --cacert $LAB_DIR/ca.crt https://localhost:$LAB_HTTPS_PORT/hello/"
  info "  or system-wide:         sudo cp $LAB_DIR/ca.crt /usr/local/share/ca-certificates/streamlit-lab.crt && sudo update-ca-certificates"
  info "  in a browser:           import it as an authority (Chromium: Settings > Privacy and security > Security > Manage certificates)"
  info "the status app:           https://localhost:$LAB_HTTPS_PORT/status/ (user $LAB_STATUS_USER, password in $LAB_STATUS_PASSWORD_FILE)"
  info "  the same on the host:   docker exec $LAB_CONTAINER secure-streamlit status"
  info "its git repository:       http://127.0.0.1:3000/lab/hello.git in the lab host (git-http-backend, lab-git.service)"
  info "push a new version:       make lab-push          (prints the seconds from push to serving)"
  info "push a broken version:    make lab-push-broken   (the old one keeps serving; prints the deploy record)"
  info "deploy records:           docker exec $LAB_CONTAINER tail -n 3 /var/log/streamlit/deploys.log"
  info "the monitor's audit log:  docker exec $LAB_CONTAINER tail -n 3 /var/log/github-repo-monitor/audit.jsonl"
  info "shell on the lab host:    docker exec -it $LAB_CONTAINER bash"
  info "HTTP (redirects):         http://localhost:$LAB_HTTP_PORT -> https://localhost:$LAB_HTTPS_PORT"
  info "tear down:                make lab-down"
}

push() {
  [ "$(docker inspect -f '{{.State.Running}}' "$LAB_CONTAINER" 2>/dev/null)" = true ] || die "no lab host: run make lab first"
  mkdir -p "$LAB_DIR"
  docker exec "$LAB_CONTAINER" cat /etc/streamlit-edge/ca.crt >"$LAB_DIR/ca.crt"
  "$COMPONENT_VENV/bin/python" scripts/lab_push.py --container "$LAB_CONTAINER" --ca "$LAB_DIR/ca.crt" \
    --url "https://localhost:$LAB_HTTPS_PORT/hello/" "$@"
}

down() {
  step "Removing the lab host"
  docker rm -f "$LAB_CONTAINER" >/dev/null 2>&1 && info "removed $LAB_CONTAINER" || info "no lab host"
  docker volume rm "$LAB_VOLUME" >/dev/null 2>&1 && info "removed volume $LAB_VOLUME" || true
}

case "${1:-up}" in
  up) shift || true; up "$@" ;;
  down) down; rm -rf "$LAB_DIR" ;;
  push) shift; push "$@" ;;
  *) die "usage: scripts/lab.sh up [ansible-playbook options] | down | push [--broken]" ;;
esac
