#!/usr/bin/env bash
# Everything the README's commands need, idempotent and quick when already done:
# the Python tools (pinned, in .venv), the Ansible collections, a Docker engine, the base image.
# --no-docker: all but the Docker engine and the base image (lint and the component suite need neither).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

step "Python tools (.venv)"
req_hash=$(sha256sum requirements-dev.txt | cut -c1-16)
if [ "$(cat "$VENV/.requirements" 2>/dev/null)" = "$req_hash" ]; then
  info "up to date ($VENV)"
else
  PYTHON="${PYTHON:-python3}"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or newer is needed (set PYTHON=...)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  info "installing requirements-dev.txt (about 20 s)"
  # (This machine kind's pip config names local indexes that may be absent: drop that noise only.)
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$req_hash" >"$VENV/.requirements"
fi

# sslyze pins an older cryptography than ansible-lint accepts: it gets a venv of its own.
step "TLS scanner (sslyze, in $SSLYZE_VENV)"
sslyze_hash=$(sha256sum scripts/requirements-sslyze.txt | cut -c1-16)
if [ "$(cat "$SSLYZE_VENV/.requirements" 2>/dev/null)" = "$sslyze_hash" ]; then
  info "up to date"
else
  [ -x "$SSLYZE_VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$SSLYZE_VENV"
  "$SSLYZE_VENV/bin/python" -m pip install -q --disable-pip-version-check -r scripts/requirements-sslyze.txt \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$sslyze_hash" >"$SSLYZE_VENV/.requirements"
fi

step "Secure component (frontend build, wheel, test venv $COMPONENT_VENV)"
command -v npm >/dev/null || { info "installing nodejs and npm"; apt_install nodejs npm; }
command -v chromium >/dev/null || { info "installing chromium (browser tests)"; apt_install chromium; }
# The edge's headers are tested in front of a real Streamlit app (component/tests/test_edge_csp.py).
command -v nginx >/dev/null || { info "installing nginx (browser test of the edge's headers)"; apt_install nginx; }
# The plain-git provider is tested over SSH against a real sshd (tests/unit/.../test__git_source.py).
[ -x /usr/sbin/sshd ] || { info "installing openssh-server (the git provider's SSH test)"; apt_install openssh-server; }
# The backup library is tested against a real restic repository (tests/unit/.../test__backup.py).
command -v restic >/dev/null || { info "installing restic (the backup library's tests)"; apt_install restic; }
component_hash=$(cat frontend/package-lock.json frontend/package.json frontend/*.ts frontend/index.html \
  frontend/scripts/* frontend/src/* component/pyproject.toml component/requirements-test.txt \
  component/streamlit_secure_context/*.py component/examples/make_models.py | sha256sum | cut -c1-16)
if [ "$(cat "$COMPONENT_VENV/.component" 2>/dev/null)" = "$component_hash" ] \
  && [ -f component/streamlit_secure_context/frontend/index.html ]; then
  info "up to date"
else
  info "npm install and vite build (about 30 s)"
  # npm install, not npm ci: npm 11 here writes lock files without the other platforms' optional
  # rollup packages and then refuses them in ci. The lock file still fixes every version.
  (cd frontend && npm install --no-audit --no-fund --loglevel=error && npm run --silent build)
  [ -x "$COMPONENT_VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$COMPONENT_VENV"
  info "installing component/requirements-test.txt (about 1 min)"
  "$COMPONENT_VENV/bin/python" -m pip install -q --disable-pip-version-check -r component/requirements-test.txt \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  rm -rf "$CACHE_DIR/dist" && mkdir -p "$CACHE_DIR/dist"
  "$COMPONENT_VENV/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps ./component \
    -w "$CACHE_DIR/dist" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  rm -rf component/build component/*.egg-info
  "$COMPONENT_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall \
    "$CACHE_DIR"/dist/streamlit_secure_context-*.whl 2> >(grep -v "is ignored" >&2)
  "$COMPONENT_VENV/bin/python" component/examples/make_models.py component/examples/static
  echo "$component_hash" >"$COMPONENT_VENV/.component"
fi
info "wheel: $(ls "$CACHE_DIR"/dist/streamlit_secure_context-*.whl)"

# The edge tests grade its headers with the MDN HTTP Observatory's own scanner (npm). Its install
# scripts download lists from outside hosts; scan.mjs needs neither, so they are skipped.
step "HTTP Observatory grader (scripts/observatory)"
observatory_hash=$(cat scripts/observatory/package.json scripts/observatory/package-lock.json | sha256sum | cut -c1-16)
if [ "$(cat scripts/observatory/node_modules/.secure-streamlit 2>/dev/null)" = "$observatory_hash" ]; then
  info "up to date"
else
  (cd scripts/observatory && npm install --no-audit --no-fund --loglevel=error --ignore-scripts)
  echo "$observatory_hash" >scripts/observatory/node_modules/.secure-streamlit
fi

# The edge's single sign-on test (tests/integration/test_sso_edge.py): a real OpenID provider from npm,
# the relying party on Debian's Authlib as on a host.
step "OpenID provider for the SSO test (tests/sso_idp)"
dpkg -s python3-authlib python3-requests >/dev/null 2>&1 || apt_install python3-authlib python3-requests
idp_hash=$(cat tests/sso_idp/package.json tests/sso_idp/package-lock.json | sha256sum | cut -c1-16)
if [ "$(cat tests/sso_idp/node_modules/.secure-streamlit 2>/dev/null)" = "$idp_hash" ]; then
  info "up to date"
else
  (cd tests/sso_idp && npm install --no-audit --no-fund --loglevel=error --ignore-scripts)
  echo "$idp_hash" >tests/sso_idp/node_modules/.secure-streamlit
fi

step "Ansible collections (galaxy.yml dependencies)"
"$VENV/bin/python" scripts/install_collections.py

# Lint and the component's tests need no Docker engine (scripts/test.sh passes --no-docker).
if [ "${1:-}" != "--no-docker" ]; then
  bash scripts/docker-engine.sh
  bash scripts/base-image.sh save
  bash scripts/app-cache-image.sh
fi
