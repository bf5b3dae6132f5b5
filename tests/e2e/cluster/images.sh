#!/usr/bin/env bash
# Build the cluster's container images locally (no registry pulls are possible here) and
# import them into the cluster's containerd (if it is running):
#   - docker.io/library/debian:bookworm-slim  from a debootstrap'ed Debian rootfs (the base
#     image the project's Dockerfiles start FROM),
#   - registry.k8s.io/pause:3.10              a static pause binary in a scratch image,
#   - localhost/agentflow-operator:dev        from ./Dockerfile,
#   - localhost/agentflow-runtime:dev         from ./runtime-image/Dockerfile.
# Both project images are also tagged with the agentflow chart's appVersion (charts/agentflow/Chart.yaml) in
# containerd, the tags the chart uses by default: `helm install charts/agentflow` runs the local build as it is.
# Everything is cached under $AGENTFLOW_CACHE/images; project images are rebuilt only when
# their inputs change. Usage: images.sh [--no-import] [--only base|pause|cluster|project]
#   (cluster = base + pause: what the cluster and its tests need; project = the two project images)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMPORT=1; ONLY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-import) IMPORT=0 ;;
    --only) ONLY="$2"; shift ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done

BUILDAH_ROOT="$CACHE/buildah/storage"
BUILDAH_RUNROOT="$RUN_DIR/buildah"
STORAGE_DRIVER="${AGENTFLOW_BUILDAH_DRIVER:-overlay}"
bah() { buildah --root "$BUILDAH_ROOT" --runroot "$BUILDAH_RUNROOT" --storage-driver "$STORAGE_DRIVER" "$@"; }
mkdir -p "$IMAGES_DIR" "$BUILDAH_ROOT" "$BUILDAH_RUNROOT"

# Build-time access to PyPI from inside RUN steps: the host's network and, if the host trusts
# an extra CA (TLS-inspecting egress), that CA bundle, mounted read-only and named by PIP_CERT.
BUILD_NET_ARGS=(--network=host)
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
  BUILD_NET_ARGS+=(--volume /etc/ssl/certs/ca-certificates.crt:/run/host-ca/ca-certificates.crt:ro
                   --build-arg PIP_CERT=/run/host-ca/ca-certificates.crt)
fi
[[ -n "${PIP_INDEX_URL:-}" ]] && BUILD_NET_ARGS+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")

has_image() { bah images --quiet "$1" >/dev/null 2>&1; }

save_archive() { # image archive.tar
  rm -f "$2.tmp"
  bah push --quiet "$1" "docker-archive:$2.tmp:$1" >/dev/null
  mv "$2.tmp" "$2"
}

base_image() {
  local rootfs="$IMAGES_DIR/debian-$DEBIAN_SUITE-rootfs.tar.gz"
  if [[ ! -s "$rootfs" ]]; then
    log "base: debootstrap $DEBIAN_SUITE (minbase) from $DEBIAN_MIRROR"
    local dir; dir="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    debootstrap --variant=minbase --components=main "$DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR" \
      > "$CACHE/logs/debootstrap.log" 2>&1 || { tail -20 "$CACHE/logs/debootstrap.log"; die "debootstrap failed"; }
    # Slim it down like debian:*-slim: no apt lists, caches, docs or man pages.
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
           "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/var/log/*.log
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$DEBIAN_MIRROR" "$DEBIAN_SUITE" "$DEBIAN_SUITE" > "$dir/etc/apt/sources.list.d/debian.sources"
    rm -f "$dir/etc/apt/sources.list"
    tar -C "$dir" --numeric-owner -czf "$rootfs.tmp" . && mv "$rootfs.tmp" "$rootfs"
    rm -rf "$dir"
  fi
  if ! has_image "$BASE_IMAGE"; then
    log "base: committing $BASE_IMAGE from $rootfs"
    local c; c="$(bah from scratch)"
    bah add "$c" "$rootfs" / >/dev/null
    bah config --cmd '["bash"]' --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --label org.opencontainers.image.description="Debian $DEBIAN_SUITE minbase, debootstrapped locally" "$c"
    bah commit --quiet "$c" "$BASE_IMAGE" >/dev/null
    bah rm "$c" >/dev/null
  fi
  # Test pods run this image too (imagePullPolicy IfNotPresent: same name as Docker Hub's).
  [[ -s "$IMAGES_DIR/base.tar" ]] || save_archive "$BASE_IMAGE" "$IMAGES_DIR/base.tar"
}

pause_image() {
  local tar="$IMAGES_DIR/pause.tar"
  [[ -s "$tar" ]] && has_image "$PAUSE_IMAGE" && return
  log "pause: building static pause and $PAUSE_IMAGE"
  local tmp; tmp="$(mktemp -d)"
  gcc -Os -static -o "$tmp/pause" "$CLUSTER_DIR/pause/pause.c"
  strip "$tmp/pause"
  local c; c="$(bah from scratch)"
  bah copy "$c" "$tmp/pause" /pause >/dev/null
  bah config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  bah commit --quiet "$c" "$PAUSE_IMAGE" >/dev/null
  bah rm "$c" >/dev/null
  rm -rf "$tmp"
  save_archive "$PAUSE_IMAGE" "$tar"
}

# Content hash of a project image's inputs (its Dockerfile and the build context it copies).
inputs_hash() {
  (cd "$REPO_ROOT" && { echo "$1"; git ls-files -co --exclude-standard -- "$1" .dockerignore pyproject.toml README.md operator runtime-image 2>/dev/null \
      | LC_ALL=C sort | while read -r f; do [[ -f "$f" ]] && sha256sum "$f"; done; } | sha256sum | cut -c1-16)
}

project_image() { # name dockerfile
  local image="$1" dockerfile="$2" key tar
  key="$(inputs_hash "$dockerfile")"
  tar="$IMAGES_DIR/$(basename "${image%%:*}")-$key.tar"
  if [[ -s "$tar" ]]; then log "$image: cached ($key)"; return; fi
  [[ -f "$REPO_ROOT/$dockerfile" ]] || die "$dockerfile not found"
  local f
  for f in pyproject.toml README.md operator; do
    if [[ ! -e "$REPO_ROOT/$f" ]]; then log "WARNING: $image not built: $f missing from the repository"; return; fi
  done
  log "$image: building from $dockerfile ($key)"
  (cd "$REPO_ROOT" && bah bud --pull=never --layers "${BUILD_NET_ARGS[@]}" -f "$dockerfile" -t "$image" .) \
    > "$CACHE/logs/build-$(basename "${image%%:*}").log" 2>&1 \
    || { tail -30 "$CACHE/logs/build-$(basename "${image%%:*}").log"; die "building $image failed"; }
  rm -f "$IMAGES_DIR/$(basename "${image%%:*}")"-*.tar
  save_archive "$image" "$tar"
}

import_all() {
  [[ -S "$CONTAINERD_SOCK" ]] || { log "containerd not running: images built, not imported"; return; }
  local t stamp present
  present=$(ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q)
  for t in "$IMAGES_DIR"/*.tar; do
    # containerd's root is kept between bring-ups: import an archive once, and again only if its images
    # are gone from containerd (removed by hand, or replaced by a build from another checkout).
    stamp="$CONTAINERD_ROOT/agentflow-imported/$(basename "$t")"
    if [[ -s "$stamp" && "$stamp" -nt "$t" ]] && all_present "$stamp" "$present"; then continue; fi
    log "import: $(basename "$t")"
    mkdir -p "$(dirname "$stamp")"
    ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$t" >/dev/null
    # The stamp names the archive's images (docker-archive manifest.json RepoTags), checked next time.
    tar -xOf "$t" manifest.json \
      | python3 -c 'import json, sys; print("\n".join(t for m in json.load(sys.stdin) for t in m.get("RepoTags") or []))' \
      > "$stamp.new"
    mv "$stamp.new" "$stamp"
  done
}

# The chart's default image references are REPOSITORY:appVersion: give the imported :dev images that tag as
# well (the :dev names stay what the tests and other checkouts use). Re-tagged on every import, so the
# appVersion tag always names the image :dev names.
tag_app_version() {
  [[ -S "$CONTAINERD_SOCK" ]] || return 0
  local app_version image present
  app_version="$(sed -nE 's/^appVersion:[[:space:]]*"?([^"[:space:]]+)"?.*$/\1/p' "$REPO_ROOT/charts/agentflow/Chart.yaml")"
  [[ -n "$app_version" ]] || die "no appVersion in charts/agentflow/Chart.yaml"
  present=$(ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q)
  for image in "$OPERATOR_IMAGE" "$RUNTIME_IMAGE"; do
    grep -qxF "$image" <<< "$present" || continue
    ctr --address "$CONTAINERD_SOCK" -n k8s.io images tag --force "$image" "${image%:*}:$app_version" >/dev/null
    log "tagged $image as ${image%:*}:$app_version (the chart's appVersion)"
  done
}

# all_present STAMP LIST: every image reference STAMP names is in LIST (one reference a line).
all_present() {
  local ref
  while read -r ref; do
    [[ -z "$ref" ]] && continue
    grep -qxF "$ref" <<< "$2" || return 1
  done < "$1"
}

case "$ONLY" in
  base) base_image ;;
  pause) pause_image ;;
  cluster) base_image; pause_image ;;
  project) base_image; project_image "$OPERATOR_IMAGE" Dockerfile; project_image "$RUNTIME_IMAGE" runtime-image/Dockerfile ;;
  "") base_image; pause_image
      project_image "$OPERATOR_IMAGE" Dockerfile
      project_image "$RUNTIME_IMAGE" runtime-image/Dockerfile ;;
  *) die "unknown --only $ONLY" ;;
esac
if [[ $IMPORT == 1 ]]; then import_all; tag_app_version; fi
# Each rebuild of a project image leaves the previous one dangling in buildah's store (with --layers, its
# layers too): tens of GB after a day of edits, until a build fails with "no space left on device".
bah rmi --prune >/dev/null 2>&1 || log "could not prune dangling images in $BUILDAH_ROOT"
log "images ready in $IMAGES_DIR"
