#!/usr/bin/env bash
# The layers every app image starts with (the OS packages, the app user, the venv, Streamlit: the text of
# cache_image_dockerfile() in plugins/module_utils/_deploy.py), built on this machine's engine from the
# base image and saved as a tar beside the base image's (.cache/images/app-cache.tar). An engine inside
# an instance loads it (the apps role's apps_build_cache_image_archive) and its first app build reuses
# these layers instead of running apt and pip again (docs/testing.md, "The app cache image").
#   scripts/app-cache-image.sh      build (if its inputs changed) and save
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

APP_CACHE_IMAGE="${SSH_APP_CACHE_IMAGE:-secure-streamlit/app-cache:bookworm}"

step "App cache image ($APP_CACHE_IMAGE: the first layers of every app image)"
ctx=$(mktemp -d)
cid=""
cleanup() {
  rm -rf "$ctx"
  [ -z "$cid" ] || docker rm "$cid" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The deploy engine's own text, with the settings' defaults (the apps role's defaults are the same).
PYTHONPATH="$REPO_ROOT/collections" "$VENV/bin/python" - "$BASE_IMAGE" >"$ctx/Dockerfile" <<'EOF'
import sys

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import Settings, cache_image_dockerfile

print(cache_image_dockerfile(Settings(base_image=sys.argv[1])), end="")
EOF

# The extra CAs an instance's deploy engine sends (its /usr/local/share/ca-certificates/*.crt: the base
# image's), with the modes it gives its build context (directories 0700, files 0644): COPY's cache key
# covers names, contents and modes.
mkdir -m 0700 "$ctx/extra-ca" "$ctx/base-ca"
cid=$(docker create "$BASE_IMAGE" /bin/true)
docker cp "$cid:/usr/local/share/ca-certificates/." "$ctx/base-ca/"
find "$ctx/base-ca" -maxdepth 1 -name '*.crt' -type f -exec cp {} "$ctx/extra-ca/" \;
rm -rf "$ctx/base-ca"
find "$ctx" -type f -exec chmod 0644 {} +

fp=$({
  docker image inspect --format '{{.Id}}' "$BASE_IMAGE"
  cat "$ctx/Dockerfile"
  find "$ctx/extra-ca" -type f | sort | xargs -r sha256sum | sed "s|$ctx/||"
} | sha256sum | cut -c1-16)
tar="$CACHE_DIR/images/app-cache-$fp.tar"

# The engine that builds the apps' images is the classic builder (the Docker SDK's build): build with it
# here too, so that the layers' history (what --cache-from compares) is the same.
if [ "$(docker image inspect --format '{{index .Config.Labels "org.secure-streamlit.fingerprint"}}' "$APP_CACHE_IMAGE" 2>/dev/null)" != "$fp" ]; then
  info "building (apt and pip inside: a few minutes the first time)"
  DOCKER_BUILDKIT=0 docker build -q --label "org.secure-streamlit.fingerprint=$fp" -t "$APP_CACHE_IMAGE" "$ctx" \
    >"$CACHE_DIR/app-cache-build.log" 2>&1 || die "building the app cache image failed; see $CACHE_DIR/app-cache-build.log"
fi
if [ ! -s "$tar" ]; then
  mkdir -p "$CACHE_DIR/images"
  rm -f "$CACHE_DIR"/images/app-cache-*.tar
  docker save "$APP_CACHE_IMAGE" -o "$tar.tmp" && mv "$tar.tmp" "$tar"
fi
ln -sfn "$(basename "$tar")" "$CACHE_DIR/images/app-cache.tar"
info "saved for inner engines: $CACHE_DIR/images/app-cache.tar (fingerprint $fp)"
