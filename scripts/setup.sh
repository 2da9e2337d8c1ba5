#!/usr/bin/env bash
# Everything the README's commands need, idempotent and quick when already done:
# the Python tools (pinned, in .venv), the Ansible collections, a Docker engine, the base image.
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

step "Ansible collections (galaxy.yml dependencies)"
"$VENV/bin/python" scripts/install_collections.py

bash scripts/docker-engine.sh
bash scripts/base-image.sh save
