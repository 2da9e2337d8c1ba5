#!/usr/bin/env bash
# A bare repository of a tiny Streamlit app for the swarm's replicated app: main at v1; v2 a code-only
# change; raises a commit whose script fails at import (only the readiness gate can refuse it: Streamlit's
# health endpoint answers before any script runs). No requirements: the image build stays small.
# The SHAs are written to /srv/git/shas/<name> for the tests.
set -euo pipefail
bare=$1
work=$(mktemp -d)
mkdir -p "$(dirname "$bare")" /srv/git/shas
git init -q --bare -b main "$bare"
git init -q -b main "$work"
cd "$work"
git config user.name "Molecule" && git config user.email "molecule@lab.test"
commit() { git add -A && git commit -q -m "$1" && git rev-parse HEAD >"/srv/git/shas/$2"; }

printf 'import streamlit as st\n\nst.title("replicas v1")\n' >streamlit_app.py
: >requirements.txt
commit "v1" v1
git push -q "$bare" main

sed -i 's/replicas v1/replicas v2/' streamlit_app.py
commit "v2" v2
git push -q "$bare" HEAD:refs/heads/next

sed -i '1i import clinic_risk_scores' streamlit_app.py
commit "broken: imports a module that does not exist" raises
git push -q "$bare" HEAD:refs/heads/raises
rm -rf "$work"
