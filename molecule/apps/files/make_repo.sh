#!/usr/bin/env bash
# A bare repository of a tiny Streamlit app: main and stable at v1; branch next at v2; branch broken at a commit
# whose app never becomes healthy (its .streamlit/config.toml names TLS files that do not exist:
# streamlit exits at start);
# branch nobuild at a commit without the entrypoint (the image build fails). The SHAs are written to
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
printf '# no extra requirements\n' >requirements.txt
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
rm -rf "$work"
