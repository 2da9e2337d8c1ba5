#!/usr/bin/env bash
# The whole test suite: lint, unit and integration tests, every molecule scenario.
#   scripts/test.sh            everything
#   scripts/test.sh lint|unit|component|molecule [scenario]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

export PATH="$VENV/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$REPO_ROOT/collections"
export ANSIBLE_FORCE_COLOR="${ANSIBLE_FORCE_COLOR:-$([ -t 1 ] && echo 1 || echo 0)}"
export PY_COLORS="${PY_COLORS:-$ANSIBLE_FORCE_COLOR}"

lint() {
  step "Lint: yamllint"
  yamllint --strict .
  step "Lint: ruff"
  ruff check .
  ruff format --check .
  step "Lint: changelog fragments (antsibull-changelog)"
  antsibull-changelog lint
  step "Lint: ansible-lint (production profile)"
  ansible-lint --profile production
  step "Lint: ansible-test sanity (the collection as it ships)"
  bash scripts/sanity.sh
}

unit() {
  # One worker per test file: the lab, the bad-input plays and the unit tests run side by side.
  local workers=${PYTEST_WORKERS:-3}
  step "Unit and integration tests (pytest tests/, $workers workers)"
  pytest -q -n "$workers" --dist loadfile --durations=10 tests
}

component() {
  step "Component: vitest (frontend/)"
  (cd frontend && npx vitest run --reporter=dot)
  step "Component: pytest in headless Chromium (component/tests, $COMPONENT_VENV)"
  local pytest=("$COMPONENT_VENV/bin/python" -m pytest -q component/tests)
  if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
    # In a network namespace of its own, with only loopback: everything the suite talks to is local.
    # Beside it, molecule creates and removes Docker networks, and Chromium aborts every load in
    # flight when an interface changes (net::ERR_NETWORK_CHANGED).
    unshare --net sh -c 'ip link set lo up && exec "$@"' sh "${pytest[@]}"
  else
    "${pytest[@]}"
  fi
}

# One scenario, its output in a log file; the verdict goes to a file of its own so that the caller
# can collect it after `wait`.
molecule_one() {
  local scenario=$1 logs=$2 start=$SECONDS
  if molecule test -s "$scenario" >"$logs/$scenario.log" 2>&1; then
    echo passed >"$logs/$scenario.status"
    info "molecule $scenario: passed in $((SECONDS - start)) s"
  else
    echo failed >"$logs/$scenario.status"
    info "molecule $scenario: FAILED after $((SECONDS - start)) s"
  fi
}

molecule_all() {
  local scenario=${1:-}
  if [ -n "$scenario" ]; then
    step "Molecule $scenario"
    molecule test -s "$scenario"
    return
  fi
  # Every scenario, MOLECULE_JOBS at a time (each has its own instance, named after it), the
  # longest first. Each log is printed whole if its scenario fails.
  local jobs=${MOLECULE_JOBS:-2} logs="$CACHE_DIR/molecule-logs" failed=0 name
  local -a scenarios=()
  for name in apps baseline contingency swarm tls monitor docker $(ls molecule); do
    [ -f "molecule/$name/molecule.yml" ] && [[ ! " ${scenarios[*]} " =~ " $name " ]] && scenarios+=("$name")
  done
  step "Molecule: ${scenarios[*]} ($jobs at a time; logs in $logs)"
  rm -rf "$logs" && mkdir -p "$logs"
  for name in "${scenarios[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 2; done
    molecule_one "$name" "$logs" &
  done
  wait
  for name in "${scenarios[@]}"; do
    if [ "$(cat "$logs/$name.status" 2>/dev/null)" != passed ]; then
      failed=1
      step "Molecule $name failed: its log"
      cat "$logs/$name.log"
    fi
  done
  [ "$failed" = 0 ] || die "molecule: a scenario failed (logs in $logs)"
}

# Molecule's scenarios spend much of their time waiting (package and PyPI downloads, image builds,
# health checks, polls): pytest and the component suite run beside them. Each side runs as a job of
# its own, so `set -e` stops that side at its first failure and `wait` reports it.
all_side_by_side() {
  local failed=0 molecule_pid tests_pid
  timed lint
  timed molecule_all &
  molecule_pid=$!
  (timed unit; timed component) &
  tests_pid=$!
  wait "$tests_pid" || failed=1
  wait "$molecule_pid" || failed=1
  [ "$failed" = 0 ] || die "make test: a part failed (its output is above)"
}

timed() {
  local start=$SECONDS
  "$@"
  info "$1: $((SECONDS - start)) s"
}

what=${1:-all}
case "$what" in
  lint | component) bash scripts/setup.sh --no-docker ;;
  *) bash scripts/setup.sh ;;
esac
case "$what" in
  lint) timed lint ;;
  unit) timed unit ;;
  component) timed component ;;
  molecule) shift; timed molecule_all "${1:-}" ;;
  all) all_side_by_side ;;
  *) die "usage: scripts/test.sh [lint|unit|component|molecule [scenario]]" ;;
esac
step "Passed: $what ($SECONDS s)"
