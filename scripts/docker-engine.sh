#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine: the running one; else, on Debian/Ubuntu,
# install docker.io and start dockerd (in the background where systemd is not PID 1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

engine_answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

step "Docker engine"
if engine_answers; then
  info "running: $(docker version --format 'engine {{.Server.Version}}')"
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  if [ -r /etc/os-release ] && grep -qiE '^(ID|ID_LIKE)=.*(debian|ubuntu)' /etc/os-release; then
    [ "$(id -u)" -eq 0 ] || die "dockerd is missing; run as root or: sudo apt-get install docker.io"
    info "installing docker.io from the distribution"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
  else
    die "no Docker engine answers and this is not Debian/Ubuntu: install Docker Engine (https://docs.docker.com/engine/install/) and start it"
  fi
fi
command -v docker >/dev/null 2>&1 || die "the docker client is missing: apt-get install docker.io"

if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
  info "starting docker with systemd"
  systemctl start docker
else
  info "systemd is not PID 1: starting dockerd in the background (log: /var/log/dockerd.log)"
  [ "$(id -u)" -eq 0 ] || die "starting dockerd needs root"
  setsid nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null &
fi
for _ in $(seq 1 60); do
  engine_answers && { info "running: $(docker version --format 'engine {{.Server.Version}}')"; exit 0; }
  sleep 1
done
die "dockerd did not answer within 60 s; see /var/log/dockerd.log"
