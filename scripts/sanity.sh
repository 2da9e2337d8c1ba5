#!/usr/bin/env bash
# ansible-test sanity on the collection as it ships: the tarball galaxy.yml's allow-list builds,
# unpacked under ansible_collections/secure_streamlit/hosting (ansible-test needs that path), with the
# ignore files of tests/sanity/. The venv form (--venv): each test in a virtual environment of its own
# with the versions ansible-test pins for it; the ansible-test is requirements-dev.txt's ansible-core.
# Its venvs and caches live in $CACHE_DIR/ansible-test (HOME for it), not in ~/.ansible.
#   bash scripts/sanity.sh [ansible-test sanity arguments, e.g. --test pylint]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

python_version=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
ansible_test_home="$CACHE_DIR/ansible-test"
# ansible-test's pip bootstrap script comes from a host these machines cannot reach: a stand-in.
pip_version=$("$VENV/bin/python" -c 'from ansible_test._internal.python_requirements import get_venv_packages
from ansible_test._internal.host_configs import NativePythonConfig
print(get_venv_packages(NativePythonConfig(version="'"$python_version"'"))["pip"])')
get_pip="$ansible_test_home/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if [ ! -f "$get_pip" ]; then
  mkdir -p "$(dirname "$get_pip")"
  cp scripts/get_pip_shim.py "$get_pip"
fi

# Outside the repository: inside a git work tree ansible-test lists only tracked files (none here).
stage=$(mktemp -d "${TMPDIR:-/tmp}/secure-streamlit-sanity.XXXXXX")
trap 'rm -rf "$stage"' EXIT
collection="$stage/ansible_collections/secure_streamlit/hosting"
mkdir -p "$collection" "$stage/dist"
"$VENV/bin/ansible-galaxy" collection build --output-path "$stage/dist" . >/dev/null
tar -xzf "$stage"/dist/secure_streamlit-hosting-*.tar.gz -C "$collection"
mkdir -p "$collection/tests/sanity"
cp tests/sanity/ignore-*.txt "$collection/tests/sanity/"

cd "$collection"
HOME="$ansible_test_home" "$VENV/bin/ansible-test" sanity --venv --python "$python_version" --color no "$@"
