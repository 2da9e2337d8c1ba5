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
  step "Lint: ansible-lint (production profile)"
  ansible-lint --profile production
}

unit() {
  step "Unit and integration tests (pytest tests/)"
  pytest -q tests
}

component() {
  step "Component: vitest (frontend/)"
  (cd frontend && npx vitest run --reporter=dot)
  step "Component: pytest in headless Chromium (component/tests, $COMPONENT_VENV)"
  "$COMPONENT_VENV/bin/python" -m pytest -q component/tests
}

molecule_all() {
  local scenario=${1:-}
  step "Molecule ${scenario:-(every scenario)}"
  if [ -n "$scenario" ]; then
    molecule test -s "$scenario"
  else
    molecule test --all
  fi
}

timed() {
  local start=$SECONDS
  "$@"
  info "$1: $((SECONDS - start)) s"
}

what=${1:-all}
bash scripts/setup.sh
case "$what" in
  lint) timed lint ;;
  unit) timed unit ;;
  component) timed component ;;
  molecule) shift; timed molecule_all "${1:-}" ;;
  all) timed lint; timed unit; timed component; timed molecule_all ;;
  *) die "usage: scripts/test.sh [lint|unit|component|molecule [scenario]]" ;;
esac
step "Passed: $what ($SECONDS s)"
