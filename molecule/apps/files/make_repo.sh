#!/usr/bin/env bash
# A bare repository of a tiny Streamlit app: main and stable at v1; branch next at v2; branch broken at a commit
# whose app never becomes healthy (its .streamlit/config.toml names TLS files that do not exist:
# streamlit exits at start);
# branch nobuild at a commit without the entrypoint (the image build fails); branch raises at a commit whose
# script fails at import (the readiness gate refuses it). The SHAs are written to
# /srv/git/shas/<name> for the tests.
set -euo pipefail
bare=$1
work=$(mktemp -d)
mkdir -p "$(dirname "$bare")" /srv/git/shas
git init -q --bare -b main "$bare"
git init -q -b main "$work"
cd "$work"
git config user.name "Molecule" && git config user.email "molecule@lab.test"
commit() { git add -A && git commit -q -m "$1" && git rev-parse HEAD >"/srv/git/shas/$2"; }

cat >streamlit_app.py <<'PY'
import os

import streamlit as st

st.title("hello v1")
st.write(os.environ.get("GREETING", ""))
PY
# The driver the database tests use inside the container (the app's own requirement, as a real app's).
printf 'psycopg[binary]==3.3.9\n' >requirements.txt
commit "v1" v1
git push -q "$bare" main HEAD:refs/heads/stable

sed -i 's/hello v1/hello v2/' streamlit_app.py
commit "v2" v2
git push -q "$bare" HEAD:refs/heads/next

mkdir -p .streamlit
printf '[server]\nsslCertFile = "/nonexistent.pem"\nsslKeyFile = "/nonexistent.key"\n' >.streamlit/config.toml
commit "broken: TLS files that do not exist" broken
git push -q "$bare" HEAD:refs/heads/broken

git rm -q -r .streamlit streamlit_app.py
commit "broken: no entrypoint" nobuild
git push -q "$bare" HEAD:refs/heads/nobuild

# From v2: a script that fails at import. Streamlit's health endpoint answers before any script runs,
# so only the readiness gate (the script run once) can refuse it.
git checkout -q "$(cat /srv/git/shas/v2)" -- streamlit_app.py
sed -i '1i import clinic_risk_scores' streamlit_app.py
commit "broken: imports a module that does not exist" raises
git push -q "$bare" HEAD:refs/heads/raises
rm -rf "$work"
