# Shared helpers for the project's scripts. Sourced, not executed.
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SSH_VENV:-$REPO_ROOT/.venv}"
SSLYZE_VENV="$REPO_ROOT/.cache/venv-sslyze"
COMPONENT_VENV="$REPO_ROOT/.cache/venv-component"
CACHE_DIR="${SSH_CACHE_DIR:-$REPO_ROOT/.cache}"
# SSH_BASE_IMAGE_REPO builds into another repository (e.g. to try a recipe change beside the shared one).
BASE_IMAGE_REPO="${SSH_BASE_IMAGE_REPO:-secure-streamlit/base}"
# The tag every scenario and the lab use; setup points it at the current fingerprint.
BASE_IMAGE="$BASE_IMAGE_REPO:bookworm"
LAB_CONTAINER="${SSH_LAB_CONTAINER:-streamlit-lab}"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf '\033[31mERROR:\033[0m %s\n' "$*" >&2; exit 1; }

# Installs Debian packages quietly (root, non-interactive).
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; } \
    || die "could not install $*"
}
