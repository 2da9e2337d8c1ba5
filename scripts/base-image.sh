#!/usr/bin/env bash
# Build (or reuse) the Debian 12 + systemd + python3 base image for lab and test hosts.
# Cached by a fingerprint of its recipe, of the host's extra CA certificates and of the ISO week: when
# nothing changed this is one `docker image inspect`; a new week rebuilds it with that week's
# bookworm-security and bookworm-updates applied (so the hardening role's upgrade finds little). Where a registry answers the root fs is pulled, else debootstrap
# makes it; the same Dockerfile finishes both.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RECIPE_DIR="$REPO_ROOT/images/base"
EXTRA_CA_DIR="${SSH_EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"
SUITE=bookworm
PULL_IMAGE="${SSH_BASE_PULL_IMAGE:-debian:bookworm}"
# Bump when the way the image is made (not only its inputs below) changes.
RECIPE_VERSION=2
# SSH_BASE_UPDATES_WEEK pins the week (e.g. to rebuild the same image); by default the current one.
UPDATES_WEEK="${SSH_BASE_UPDATES_WEEK:-$(date -u +%G-W%V)}"
[[ "$UPDATES_WEEK" =~ ^[0-9]{4}-W[0-9]{2}$ ]] || die "SSH_BASE_UPDATES_WEEK must look like 2026-W49, not '$UPDATES_WEEK'"

fingerprint() {
  {
    echo "recipe=$RECIPE_VERSION suite=$SUITE pull=$PULL_IMAGE updates=$UPDATES_WEEK"
    cat "$RECIPE_DIR/packages.txt" "$RECIPE_DIR/sources.list" "$RECIPE_DIR/Dockerfile" "$RECIPE_DIR"/*.service
    find "$EXTRA_CA_DIR" -maxdepth 1 -name '*.crt' -type f 2>/dev/null | sort | xargs -r cat
  } | sha256sum | cut -c1-16
}

debian_mirror() {
  local uri
  uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/debian.sources | awk '{print $2}' | grep -v security | head -1)
  [ -n "$uri" ] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -1)
  echo "${uri:-http://deb.debian.org/debian}"
}

rootfs_by_debootstrap() {
  local tag=$1 dir
  command -v debootstrap >/dev/null || {
    [ "$(id -u)" -eq 0 ] || die "debootstrap is missing: sudo apt-get install debootstrap"
    info "installing debootstrap"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  dir=$(mktemp -d /var/tmp/ssh-rootfs.XXXXXX)
  local include
  include=$(grep -v '^#' "$RECIPE_DIR/packages.txt" | paste -sd, -)
  info "debootstrap $SUITE from $(debian_mirror) (about 1-2 minutes)"
  debootstrap --variant=minbase --include="$include" "$SUITE" "$dir" "$(debian_mirror)" >"$CACHE_DIR/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $CACHE_DIR/debootstrap.log"
  # The week's security and point-release updates go into the root fs itself: applied in the
  # Dockerfile's layer instead, the replaced files would stay in the layer below (~65 MB more).
  info "applying bookworm-security and bookworm-updates of $UPDATES_WEEK"
  cp "$RECIPE_DIR/sources.list" "$dir/etc/apt/sources.list"
  cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
  { chroot "$dir" apt-get update -q \
      && DEBIAN_FRONTEND=noninteractive chroot "$dir" apt-get -o Dpkg::Options::=--force-confold upgrade -y -q; } \
    >>"$CACHE_DIR/debootstrap.log" 2>&1 || die "upgrading the root fs failed; see $CACHE_DIR/debootstrap.log"
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | docker import - "$tag" >/dev/null
  rm -rf "$dir"
}

main() {
  step "Base image (Debian 12, systemd, python3)"
  mkdir -p "$CACHE_DIR"
  local fp tag
  fp=$(fingerprint)
  tag="$BASE_IMAGE_REPO:$fp"
  if docker image inspect "$tag" >/dev/null 2>&1; then
    docker tag "$tag" "$BASE_IMAGE"
    info "up to date: $BASE_IMAGE (fingerprint $fp)"
    return
  fi
  local rootfs="$BASE_IMAGE_REPO-rootfs:$fp"
  if ! docker image inspect "$rootfs" >/dev/null 2>&1; then
    if timeout 20 docker pull -q "$PULL_IMAGE" >/dev/null 2>&1; then
      info "pulled $PULL_IMAGE from a registry"
      docker tag "$PULL_IMAGE" "$rootfs"
    else
      info "no registry answers: building the root fs locally"
      rootfs_by_debootstrap "$rootfs"
    fi
  fi
  local ctx
  ctx=$(mktemp -d)
  cp "$RECIPE_DIR/Dockerfile" "$RECIPE_DIR/packages.txt" "$RECIPE_DIR/sources.list" "$RECIPE_DIR"/*.service "$ctx/"
  mkdir "$ctx/extra-ca"
  find "$EXTRA_CA_DIR" -maxdepth 1 -name '*.crt' -type f -exec cp {} "$ctx/extra-ca/" \; 2>/dev/null || true
  info "finishing layer (updates of $UPDATES_WEEK, CA certificates, stale apt lists, systemd command)"
  DOCKER_BUILDKIT=0 docker build -q --build-arg ROOTFS="$rootfs" --build-arg UPDATES_WEEK="$UPDATES_WEEK" \
    --label "org.secure-streamlit.fingerprint=$fp" --label "org.secure-streamlit.updates-week=$UPDATES_WEEK" -t "$tag" -t "$BASE_IMAGE" "$ctx" >"$CACHE_DIR/base-build.log" 2>&1 \
    || { rm -rf "$ctx"; die "building the base image failed; see $CACHE_DIR/base-build.log"; }
  rm -rf "$ctx"
  docker rmi "$rootfs" >/dev/null 2>&1 || true
  # Older fingerprints are dead weight now.
  docker images --format '{{.Repository}}:{{.Tag}}' "$BASE_IMAGE_REPO" \
    | grep -vxF -e "$tag" -e "$BASE_IMAGE" | xargs -r docker rmi >/dev/null 2>&1 || true
  info "built $BASE_IMAGE (fingerprint $fp)"
}

# `base-image.sh save`: the image as a tar for engines inside instances (they cannot pull either).
save_tar() {
  local fp; fp=$(fingerprint)
  local tar="$CACHE_DIR/images/base-$fp.tar"
  if [ ! -s "$tar" ]; then
    mkdir -p "$CACHE_DIR/images"
    rm -f "$CACHE_DIR"/images/base-*.tar
    docker save "$BASE_IMAGE" -o "$tar.tmp" && mv "$tar.tmp" "$tar"
  fi
  ln -sfn "$(basename "$tar")" "$CACHE_DIR/images/base.tar"
  info "saved for inner engines: $CACHE_DIR/images/base.tar"
}

main
[ "${1:-}" = save ] && save_tar
exit 0
