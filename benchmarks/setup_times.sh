#!/usr/bin/env bash
# Figures for the foundation: how long the set-up steps take when nothing changed (the common case),
# and, with --cold, how long the base image takes to build from nothing.
#   bash benchmarks/setup_times.sh [--cold]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"

bash scripts/setup.sh >/dev/null   # make sure everything exists before timing the warm path

ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N); echo $(((t1 - t0) / 1000000)); }

best_of_3() {
  local best=999999 t
  for _ in 1 2 3; do t=$(ms "$@"); [ "$t" -lt "$best" ] && best=$t; done
  echo "$best"
}

printf '%-48s %8s\n' "step (nothing changed, best of 3)" "ms"
printf '%-48s %8s\n' "base image (scripts/base-image.sh)" "$(best_of_3 bash scripts/base-image.sh)"
printf '%-48s %8s\n' "base image + tar for inner engines (save)" "$(best_of_3 bash scripts/base-image.sh save)"
printf '%-48s %8s\n' "collections (scripts/install_collections.py)" "$(best_of_3 "$VENV/bin/python" scripts/install_collections.py)"
printf '%-48s %8s\n' "Docker engine (scripts/docker-engine.sh)" "$(best_of_3 bash scripts/docker-engine.sh)"
printf '%-48s %8s\n' "whole set-up (scripts/setup.sh)" "$(best_of_3 bash scripts/setup.sh)"

if [ "${1:-}" = --cold ]; then
  docker images -q "$BASE_IMAGE_REPO" | sort -u | xargs -r docker rmi -f >/dev/null
  rm -f "$CACHE_DIR"/images/base*.tar
  printf '%-48s %8s\n' "base image from nothing (debootstrap + save)" "$(ms bash scripts/base-image.sh save)"
  printf '%-48s %8s\n' "base image size (MB)" "$(($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE") / 1000000))"
fi
