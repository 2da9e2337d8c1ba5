#!/usr/bin/env bash
# Regenerates each role's README from its meta/argument_specs.yml (aar-doc, between the
# BEGIN_ANSIBLE_DOCS/END_ANSIBLE_DOCS markers; the text outside them is kept).
# tests/unit/test_role_docs.py fails when a README is out of date.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

step "Role READMEs from meta/argument_specs.yml (aar-doc)"
for role in roles/*/; do
  role=${role%/}
  if [ ! -f "$role/README.md" ]; then
    printf '<!-- BEGIN_ANSIBLE_DOCS -->\n<!-- END_ANSIBLE_DOCS -->\n' >"$role/README.md"
  fi
  "$VENV/bin/aar-doc" "$role" markdown >/dev/null
  info "$role/README.md"
done
