#!/usr/bin/env bash
# The lab's figures (docs/benchmarks.md, "The lab: an app from its own git server"):
#   benchmarks/lab_push.sh           push -> serving, 5 pushes to the running lab (make lab first)
#   benchmarks/lab_push.sh --fresh   first make lab-down, then: make lab (wall time), its re-run (wall
#                                    time, changed=), then the 5 pushes
# A push's time runs from `git push` returning to Chromium showing the new version through the edge
# (scripts/lab_push.py): the monitor's poll, the deployer's fetch, build, health and readiness gate,
# the switch, and Streamlit's first render.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PUSHES="${PUSHES:-5}"

lab_up() {
  local start out
  start=$(date +%s.%N)
  out=$(bash scripts/lab.sh up 2>&1) || { printf '%s\n' "$out" | tail -40; exit 1; }
  printf '%s: %.0f s, %s\n' "$1" "$(echo "$(date +%s.%N) - $start" | awk '{print $1 - $3}')" \
    "$(printf '%s\n' "$out" | sed -n 's/.*What is where (\(changed=[0-9]*\)).*/\1/p')"
}

if [ "${1:-}" = --fresh ]; then
  bash scripts/lab.sh down >/dev/null
  lab_up "make lab, lab down first"
  lab_up "make lab, re-run"
fi

times=()
for i in $(seq 1 "$PUSHES"); do
  out=$(bash scripts/lab.sh push 2>&1) || { printf '%s\n' "$out"; exit 1; }
  t=$(printf '%s\n' "$out" | sed -n 's/^version [0-9]* serving \([0-9.]*\) s after the push$/\1/p')
  echo "push $i: $t s"
  times+=("$t")
done
printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END {
  m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
  printf "push -> serving: median %.1f s of %d (min %.1f, max %.1f)\n", m, NR, a[1], a[NR] }'
