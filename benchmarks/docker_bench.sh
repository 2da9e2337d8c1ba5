#!/usr/bin/env bash
# CIS Docker Benchmark section 5 (container runtime: the apps' containers) with docker-bench-security,
# run inside a lab or molecule host that serves apps. docker-bench-security is not part of this
# repository: pass a checkout of https://github.com/docker/docker-bench-security (a work tree or a bare
# clone).
#   bash benchmarks/docker_bench.sh DOCKER_BENCH_CHECKOUT [CONTAINER]   (default: the lab, streamlit-lab)
# Prints every check of section 5 and a count per result; the full log stays in the host's /tmp. (Run
# with bash: a hardened host mounts /tmp noexec.)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

source_dir=${1:?usage: bash benchmarks/docker_bench.sh DOCKER_BENCH_CHECKOUT [CONTAINER]}
container=${2:-$LAB_CONTAINER}
[ "$(docker inspect -f '{{.State.Running}}' "$container" 2>/dev/null)" = true ] ||
  die "$container is not running (make lab, or molecule converge -s apps)"

step "docker-bench-security into $container"
docker exec "$container" sh -c 'rm -rf /tmp/docker-bench && mkdir -p /tmp/docker-bench'
if [ -f "$source_dir/HEAD" ] && [ ! -d "$source_dir/.git" ]; then
  git -C "$source_dir" archive HEAD | docker exec -i "$container" tar -C /tmp/docker-bench -xf -
  info "from $(git -C "$source_dir" rev-parse --short HEAD) (bare clone)"
else
  tar -C "$source_dir" --exclude=.git -cf - . | docker exec -i "$container" tar -C /tmp/docker-bench -xf -
  info "from $source_dir"
fi
info "containers checked: $(docker exec "$container" docker ps --format '{{.Names}}' | paste -sd ' ')"

step "Section 5: container runtime"
report=$(docker exec "$container" sh -c \
  'cd /tmp/docker-bench && bash ./docker-bench-security.sh -c container_runtime -l /tmp/docker-bench.log' \
  | sed 's/\x1b\[[0-9;]*m//g')
grep -E '^\[(PASS|WARN|INFO|NOTE)\] +(5\.|\*)' <<<"$report" || die "no section 5 results (see /tmp/docker-bench.log in $container)"
step "Summary"
grep -oE '^\[(PASS|WARN|INFO|NOTE)\] 5\.[0-9]+' <<<"$report" | cut -d' ' -f1 | sort | uniq -c
grep -E '^\[INFO\] (Checks|Score):' <<<"$report"
