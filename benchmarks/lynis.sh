#!/usr/bin/env bash
# Lynis on the host baseline: converges the molecule/baseline instance (hardening, audit, docker) unless
# it is already up, installs Lynis inside it and runs `lynis audit system --quick`; prints the hardening
# index, the warnings and the remaining suggestions. The instance is left running for a look
# (docker exec -it instance-baseline bash); `--destroy` removes it afterwards.
#   bash benchmarks/lynis.sh [--destroy]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"

INSTANCE=instance-baseline
export PATH="$VENV/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$REPO_ROOT/collections"
bash scripts/setup.sh >/dev/null

if [ "$(docker inspect -f '{{.State.Running}}' "$INSTANCE" 2>/dev/null)" != true ]; then
  step "Converging $INSTANCE (molecule/baseline)"
  start=$SECONDS
  molecule create -s baseline >/dev/null
  molecule prepare -s baseline >/dev/null
  molecule converge -s baseline >/dev/null
  info "converged in $((SECONDS - start)) s"
fi

step "Lynis in $INSTANCE"
docker exec "$INSTANCE" sh -c 'command -v lynis >/dev/null || (apt-get update -qq && apt-get install -y -qq lynis >/dev/null)'
docker exec "$INSTANCE" lynis --version | sed 's/^/    lynis /'
start=$SECONDS
docker exec "$INSTANCE" lynis audit system --quick --no-colors >/tmp/lynis-baseline.log 2>&1 || true
info "audit took $((SECONDS - start)) s (full output: /tmp/lynis-baseline.log)"
report=$(docker exec "$INSTANCE" cat /var/log/lynis-report.dat)

step "Result"
info "hardening index: $(grep '^hardening_index=' <<<"$report" | cut -d= -f2)"
info "warnings: $(grep -c '^warning\[\]=' <<<"$report" || true)"
grep '^warning\[\]=' <<<"$report" | cut -d= -f2- | sed 's/^/      /' || true
info "suggestions: $(grep -c '^suggestion\[\]=' <<<"$report" || true)"
grep '^suggestion\[\]=' <<<"$report" | cut -d= -f2- | sed 's/^/      /' || true

if [ "${1:-}" = --destroy ]; then
  molecule destroy -s baseline >/dev/null
  info "removed $INSTANCE"
fi
