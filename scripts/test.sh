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

# The quick linters (seconds) and the slow ones (ansible-lint and ansible-test sanity: minutes, most of
# the lint time), apart so that `make test` can run the slow ones beside the tests.
lint_quick() {
  step "Lint: yamllint"
  yamllint --strict .
  step "Lint: ruff"
  ruff check .
  ruff format --check .
  step "Lint: changelog fragments (antsibull-changelog)"
  antsibull-changelog lint
}

lint_slow() {
  step "Lint: ansible-lint (production profile)"
  # A home of its own: a copy of this collection installed under ~/.ansible/collections would be found
  # before collections/ (the checkout) and hide every module added since.
  mkdir -p "$CACHE_DIR/ansible-lint-home"
  ANSIBLE_HOME="$CACHE_DIR/ansible-lint-home" ansible-lint --profile production
  step "Lint: ansible-test sanity (the collection as it ships)"
  bash scripts/sanity.sh
}

lint() {
  lint_quick
  lint_slow
}

# One worker per test file: the bad-input plays and the unit tests run side by side. The lab (one file,
# most of the pytest time) runs in a pytest of its own: in one xdist run it started last, behind minutes of
# other files (xdist hands out the files with the most tests first). AFTER_LAB: integration files that
# run after the lab's, in its job, so that the job of the other files and then the swarm scenario (the
# longest) is shorter (docs/testing.md).
AFTER_LAB=(
  tests/integration/test_sso_edge.py
  tests/integration/test_status_swarm.py
  tests/integration/test_status_app_deploy.py
)

unit_rest() {
  local workers=${PYTEST_WORKERS:-3} file
  local -a ignore=(--ignore=tests/integration/test_lab.py)
  for file in "${AFTER_LAB[@]}"; do ignore+=("--ignore=$file"); done
  [ "$workers" -ge 2 ] || workers=2
  step "Unit and integration tests (pytest tests/ but the lab and ${#AFTER_LAB[@]} files after it, on $((workers - 1)) workers)"
  pytest -q -n "$((workers - 1))" --dist loadfile --durations=10 "${ignore[@]}" tests ||
    die "pytest: a test failed (its output is above)"
}

unit_lab() {
  local lab_log="$CACHE_DIR/pytest-lab.log" failed=0
  pytest -q --durations=5 tests/integration/test_lab.py >"$lab_log" 2>&1 || failed=1
  step "The lab's tests (tests/integration/test_lab.py; log in $lab_log)"
  cat "$lab_log"
  step "After the lab: ${AFTER_LAB[*]}"
  pytest -q --durations=5 "${AFTER_LAB[@]}" || failed=1
  [ "$failed" = 0 ] || die "pytest: a lab test or one after it failed (its output is above)"
}

unit() {
  local lab_pid failed=0
  unit_lab &
  lab_pid=$!
  (unit_rest) || failed=1 # a subshell: its `die` must not leave the lab running unwaited
  wait "$lab_pid" || failed=1
  [ "$failed" = 0 ] || die "pytest: a test failed (its output is above)"
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
  # MOLECULE_EXCLUDE: scenarios that `make test` runs in a slot of their own.
  local jobs=${MOLECULE_JOBS:-2} logs="$CACHE_DIR/molecule-logs" failed=0 name
  local -a scenarios=()
  for name in apps baseline contingency swarm tls monitor docker $(ls molecule); do
    [ -f "molecule/$name/molecule.yml" ] && [[ ! " ${scenarios[*]} ${MOLECULE_EXCLUDE:-} " =~ " $name " ]] &&
      scenarios+=("$name")
  done
  step "Molecule: ${scenarios[*]} ($jobs at a time; logs in $logs)"
  mkdir -p "$logs"
  for name in "${scenarios[@]}"; do rm -f "$logs/$name.log" "$logs/$name.status"; done
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
# health checks, polls): pytest, the slow linters and the component suite run beside them, in three
# jobs (docs/testing.md). The quick linters come first, so that most mistakes stop the run within a
# minute. Each job runs on its own, so `set -e` stops that job at its first failure and `wait`
# reports it.
# The swarm scenario (three hosts; much of its time is spent waiting on the swarm's rolling updates and
# failover) has a slot of its own (issue 23): after the tests beside the lab, not behind the other scenarios.
all_side_by_side() {
  local failed=0 pid
  local -a pids=()
  timed lint_quick
  MOLECULE_EXCLUDE=swarm timed molecule_all &
  pids+=($!)
  timed unit_lab &
  pids+=($!)
  # Each part runs whatever the other's verdict (a subshell: `die` ends only it).
  (
    rc=0
    (timed unit_rest) || rc=1
    (timed molecule_swarm_slot) || rc=1
    exit "$rc"
  ) &
  pids+=($!)
  (timed lint_slow; timed component) &
  pids+=($!)
  for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
  done
  [ "$failed" = 0 ] || die "make test: a part failed (its output is above)"
}

molecule_swarm_slot() {
  local logs="$CACHE_DIR/molecule-logs"
  mkdir -p "$logs"
  rm -f "$logs/swarm.log" "$logs/swarm.status"
  step "Molecule swarm (a slot of its own; log in $logs/swarm.log)"
  molecule_one swarm "$logs"
  if [ "$(cat "$logs/swarm.status")" != passed ]; then
    step "Molecule swarm failed: its log"
    cat "$logs/swarm.log"
    die "molecule: the swarm scenario failed (log in $logs/swarm.log)"
  fi
}

# CHILDREN_CPU: seconds of CPU this shell's finished child processes used (bash's `times`, second line).
# Called directly, never in $(...): a command substitution is a new process with no children of its own.
children_cpu() {
  local file="$CACHE_DIR/.times.$BASHPID"
  times >"$file"
  CHILDREN_CPU=$(awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); sum += t[1] * 60 + t[2] } }
    END { printf "%d", sum }' "$file")
  rm -f "$file"
}

# The wall time and the CPU time of a part: the controller's side (ansible, pytest, Chromium...); what runs
# inside the instances' containers is the engine's and not counted here.
timed() {
  local start=$SECONDS cpu_before
  children_cpu
  cpu_before=$CHILDREN_CPU
  "$@"
  children_cpu
  info "$1: $((SECONDS - start)) s (CPU on the controller's side: $((CHILDREN_CPU - cpu_before)) s)"
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
