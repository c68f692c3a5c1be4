#!/usr/bin/env bash
# Build Marquee's container images with podman from deploy/Containerfile: one target per
# service, all sharing one Python layer.  No image registry is reachable here, so the base is
# a Debian 12 root filesystem made with debootstrap and imported once (tagged by a hash of
# its recipe), and uv comes from the host's pinned uv binary; Python packages come from the
# host's uv cache when it has them (offline), else from PyPI.
#
#   scripts/images.sh build [target...]   # default: every target
#   scripts/images.sh base                # only the base image
#   scripts/images.sh list                # the image names and tag
#   scripts/images.sh podman <args>       # podman with the same settings (runtime, cgroups)
#
# Environment (all optional):
#   MARQUEE_IMAGE_TAG     tag of the service images             (default dev)
#   MARQUEE_IMAGE_PREFIX  name prefix                           (default localhost/marquee-)
#   MARQUEE_IMAGE_BASE    use this base image instead of debootstrap's (e.g. debian:bookworm-slim)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG="${MARQUEE_IMAGE_TAG:-dev}"
PREFIX="${MARQUEE_IMAGE_PREFIX:-localhost/marquee-}"
TARGETS_ALL=(recommender router ingest monitor simulator trainer)
SUITE=bookworm
STAMPS="$ROOT/.cache/images"  # per target: the inputs hash it was built from, and its image id
# The Debian mirror this host's apt already uses (deb822 or one-line sources), so the base image
# comes from wherever the machine is allowed to fetch packages; DEBIAN_MIRROR overrides it.
host_mirror() {
  local uri
  uri="$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)[[:space:]]*$/\1/p' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)"
  [[ -n "$uri" ]] || uri="$(sed -n 's/^deb[[:space:]]\+\([^[:space:]]*\/debian\)[[:space:]].*/\1/p' \
    /etc/apt/sources.list 2>/dev/null | head -n1)"
  echo "$uri"
}
MIRROR="${DEBIAN_MIRROR:-$(host_mirror)}"
# The podman runtime settings that work on hosts like this one (docs: deploy/README.md).
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}"

log() { echo "images.sh: $*" >&2; }

pm() { podman --runtime runc "$@"; }

need() {
  local tool
  for tool in podman runc; do
    command -v "$tool" >/dev/null || { log "$tool is required (Debian packages podman runc debootstrap; make setup)"; exit 1; }
  done
}

base_image() {
  if [[ -n "${MARQUEE_IMAGE_BASE:-}" ]]; then echo "$MARQUEE_IMAGE_BASE"; return; fi
  # The recipe is this function's inputs: a change to any of them makes a new base.
  local recipe="debootstrap --variant=minbase $SUITE $MIRROR"
  echo "localhost/marquee-base:$SUITE-$(echo "$recipe" | sha256sum | cut -c1-12)"
}

ensure_base() {
  local image; image="$(base_image)"
  if [[ -n "${MARQUEE_IMAGE_BASE:-}" ]] || pm image exists "$image"; then return 0; fi
  command -v debootstrap >/dev/null || { log "debootstrap is required (make setup)"; exit 1; }
  local dir; dir="$(mktemp -d /var/tmp/marquee-rootfs.XXXXXX)"
  log "creating base image $image with debootstrap (about a minute, once)"
  [[ -n "$MIRROR" ]] || { log "no Debian mirror in this host's apt sources; set DEBIAN_MIRROR"; exit 2; }
  if ! nice -n 19 debootstrap --variant=minbase "$SUITE" "$dir" "$MIRROR" >/dev/null; then
    rm -rf "$dir"; log "debootstrap failed"; exit 1
  fi
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | pm import --quiet --message "debootstrap --variant=minbase $SUITE" - "$image" >/dev/null
  rm -rf "$dir"
}

# The uv executable itself (pyenv and similar put a shell shim first on PATH).
uv_bin() {
  local b; b="$(command -v uv)"
  if [[ "$(head -c 4 "$b" | tr -d '\177')" != "ELF" ]]; then
    b="$(pyenv which uv 2>/dev/null || uv python find 2>/dev/null || true)"
    b="$(dirname "$b")/uv"
  fi
  [[ -x "$b" ]] || { log "cannot find the uv executable (make setup installs it)"; exit 1; }
  echo "$b"
}

uv_image() {
  local version; version="$("$(uv_bin)" --version | awk '{print $2}')"
  echo "localhost/marquee-uv:$version"
}

ensure_uv() {
  local image; image="$(uv_image)"
  pm image exists "$image" && return 0
  local dir; dir="$(mktemp -d)"
  cp "$(uv_bin)" "$dir/uv"
  tar -C "$dir" -c uv | pm import --quiet - "$image" >/dev/null
  rm -rf "$dir"
}

# A hash of everything the images are built from: an image built from the same inputs (and
# still there) is not rebuilt; podman's own layer checks take ~25 s per target here.
inputs_hash() {
  (
    cd "$1"
    find services -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z \
      | xargs -0 sha256sum
    sha256sum deploy/Containerfile .containerignore pyproject.toml uv.lock README.md params.yaml
    echo "$(base_image) $(uv_image) $TAG"
  ) | sha256sum | cut -c1-16
}

build() {
  need
  local targets=("$@")
  [[ ${#targets[@]} -gt 0 ]] || targets=("${TARGETS_ALL[@]}")
  # One build at a time per clone (make test's background build, the tests' fixture): the
  # others wait, then find the images up to date.
  mkdir -p "$STAMPS"
  exec 8>"$STAMPS/.build.lock"
  flock 8
  ensure_base
  ensure_uv
  local cache offline=0 args=()
  cache="$(uv cache dir 2>/dev/null || true)"
  if [[ -n "$cache" && -d "$cache" ]]; then
    # The host's uv cache holds the locked wheels (make setup filled it): no network needed.
    offline=1
    args+=(--volume "$cache:/var/cache/uv")
  fi
  # The sources as they are now, copied once for every target: an edit while the targets build
  # must not give them different project layers, nor a stamp that does not match the image.
  ctx="$(mktemp -d)"  # global: the EXIT trap runs after this function has returned
  trap 'rm -rf "$ctx"' EXIT
  (cd "$ROOT" && tar -c --exclude=__pycache__ --exclude='*.pyc' pyproject.toml uv.lock README.md \
    params.yaml .containerignore services deploy/Containerfile) | tar -C "$ctx" -x
  local t start inputs stamp had id
  inputs="$(inputs_hash "$ctx")"
  for t in "${targets[@]}"; do
    start=$SECONDS
    stamp="$STAMPS/$t-$TAG"
    if [[ -f "$stamp" ]] && read -r had id < "$stamp" && [[ "$had" == "$inputs" ]] \
      && [[ "$(pm image inspect -f '{{.Id}}' "${PREFIX}$t:$TAG" 2>/dev/null)" == "$id" ]]; then
      log "${PREFIX}$t:$TAG is up to date"; continue
    fi
    nice -n 19 podman --runtime runc build --quiet --layers \
      -f "$ctx/deploy/Containerfile" --target "$t" \
      --build-arg BASE="$(base_image)" --build-arg UV_IMAGE="$(uv_image)" \
      --build-arg UV_OFFLINE="$offline" "${args[@]}" \
      --label "org.opencontainers.image.version=$TAG" \
      -t "${PREFIX}$t:$TAG" "$ctx" >/dev/null
    mkdir -p "$STAMPS"
    echo "$inputs $(pm image inspect -f '{{.Id}}' "${PREFIX}$t:$TAG")" > "$stamp"
    log "built ${PREFIX}$t:$TAG in $((SECONDS - start)) s"
  done
}

case "${1:-}" in
  build) shift; build "$@" ;;
  base) need; ensure_base; base_image ;;
  list) for t in "${TARGETS_ALL[@]}"; do echo "${PREFIX}$t:$TAG"; done ;;
  podman) shift; pm "$@" ;;
  *) echo "usage: $0 build [target...]|base|list|podman <args>" >&2; exit 2 ;;
esac
