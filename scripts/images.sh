#!/usr/bin/env bash
# dscore's container images (podman; no Docker engine, no registry, no network inside a build).
#
#   scripts/images.sh build [SERVICE...]   build the base if needed, then each service's image (default:
#                                          every service that has both services/NAME/ and
#                                          images/NAME/Containerfile); prints one image reference a line
#   scripts/images.sh base [--refresh]     only the base image; --refresh rebuilds it from the mirror
#   scripts/images.sh ref SERVICE          the reference `build` gives SERVICE for this tree (not built)
#   scripts/images.sh services             the services that have an image
#   scripts/images.sh sizes                size of each dscore image (podman's, and gzip'ed as a registry
#                                          would store it)
#   scripts/images.sh run-flags            the `podman run` flags every dscore container needs here
#   scripts/images.sh prune                untag dscore images other than each service's :dev and this
#                                          tree's tag (and bases of other recipes), then remove the
#                                          untagged images built on a dscore base (old builds' layer cache)
#
# Images: localhost/dscore/base:<recipe hash>, localhost/dscore/<service>:<git sha> and :dev (the last
# build). The git sha is HEAD's (12 hex digits), with `-dirty` when the tree differs from it in what goes
# into an image. Only image references go to stdout; progress goes to stderr.
#
# How (images/README.md says why):
#   1. base: images/base/mkrootfs.sh (debootstrap minbase bookworm + Debian's python3.11, tini,
#      ca-certificates; user dscore 10001; trimmed) into .cache/images/base-<hash>/rootfs, then
#      `podman import`. <hash> is the recipe's hash: a changed recipe builds a new base, an unchanged one
#      is reused (the folder and the image are both the cache).
#   2. per service: `uv sync --frozen` (uv.lock) of the service's package, outside any container, into a
#      virtual environment for the base's own /usr/bin/python3.11 (run from the cached root file system):
#      third-party dependencies first (layer `deps/`), then dscore and the service (layer `app/`), made to
#      live at /opt/dscore (shebangs, the interpreter link, pyvenv.cfg), compiled to bytecode;
#      then `podman build` of images/<service>/Containerfile, which only COPYs them (no RUN).
#   3. an image whose inputs (base, Containerfile, this script, uv.lock, every file under libs/ and
#      services/) are unchanged is not rebuilt: its label dev.dscore.inputs holds their hash.
#
# Settings (environment): DSCORE_CACHE_DIR (.cache; images under .cache/images/), DSCORE_DEBIAN_MIRROR,
# DSCORE_DEBIAN_SECURITY_MIRROR (images/base/mkrootfs.sh), DSCORE_IMAGE_TAG (instead of the git sha).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGES_SRC=$REPO_ROOT/images
IMAGES_CACHE=$CACHE_DIR/images
UV=$REPO_ROOT/.tools/bin/uv
# Where the environment lives in every image.
ENV_PREFIX=/opt/dscore
# Every file of an image's environment gets this modification time, so unchanged content is an unchanged
# layer (podman's cache) and the bytecode does not depend on it (unchecked-hash .pyc files).
FILE_EPOCH=315532800 # 1980-01-01

# Flags for every `podman run` of a dscore image on this machine: runc (crun fails on this kernel's
# cgroups) and explicit ulimits (podman's defaults are above the hard limits here).
RUN_FLAGS=(--runtime runc --ulimit nofile=16384:16384 --ulimit nproc=8192:8192)

sha256() { sha256sum | cut -c1-"${1:-64}"; }

check_tools() {
  need podman podman "podman (to build and run container images)"
  need runc runc "runc (the OCI runtime podman uses here)"
  need debootstrap debootstrap "debootstrap (to build the base image)"
  [[ -x $UV ]] || die "no $UV: run 'make sync' first"
  ((EUID == 0)) || die "building images needs root (debootstrap, chroot; podman's store)"
}

lock() {
  mkdir -p "$IMAGES_CACHE"
  exec 8>"$IMAGES_CACHE/.lock"
  flock -w 1800 8 || die "another scripts/images.sh held $IMAGES_CACHE/.lock for 30 minutes"
}

image_exists() { podman image exists "$1"; }
label_of() { podman image inspect --format "{{ index .Labels \"$2\" }}" "$1" 2>/dev/null || true; }

# --- base ---------------------------------------------------------------------------------------------

base_hash() { sha256 12 <"$IMAGES_SRC/base/mkrootfs.sh"; }
base_ref() { echo "localhost/dscore/base:$(base_hash)"; }
base_dir() { echo "$IMAGES_CACHE/base-$(base_hash)"; }
base_python() { echo "$(base_dir)/rootfs/usr/bin/python3.11"; }

build_base() {
  local refresh=${1:-} ref dir started
  ref=$(base_ref)
  dir=$(base_dir)
  if [[ $refresh == --refresh ]]; then
    say "base: rebuilding $ref from the mirror (--refresh)"
    rm -rf "$dir"
    if image_exists "$ref"; then podman untag "$ref" >&2 || true; fi
  fi
  if [[ ! -f $dir/rootfs.complete ]]; then
    started=$SECONDS
    rm -rf "$dir/rootfs"
    mkdir -p "$dir"
    say "base: building the root file system in $dir/rootfs (images/base/mkrootfs.sh)"
    nice bash "$IMAGES_SRC/base/mkrootfs.sh" "$dir/rootfs" "$IMAGES_CACHE/debs" ||
      die "images/base/mkrootfs.sh failed (its output is above)"
    # shellcheck disable=SC2016 # dpkg-query's format, not the shell's
    chroot "$dir/rootfs" dpkg-query -W -f '${Package} ${Version}\n' >"$dir/packages.txt"
    date -u +%Y-%m-%dT%H:%M:%SZ >"$dir/created"
    touch "$dir/rootfs.complete"
    say "base: root file system built in $((SECONDS - started)) s ($(du -sh "$dir/rootfs" | cut -f1))"
    if image_exists "$ref"; then podman untag "$ref" >&2 || true; fi
  fi
  if ! image_exists "$ref"; then
    started=$SECONDS
    local created python_version
    created=$(cat "$dir/created")
    python_version=$(awk '$1 == "python3.11" {print $2}' "$dir/packages.txt")
    # ./dev stays an empty folder; --numeric-owner: the root file system's own ids, not the host's names.
    tar --numeric-owner --xattrs -C "$dir/rootfs" -cf - . | podman import \
      --change "ENV LANG=C.UTF-8" \
      --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
      --change "LABEL org.opencontainers.image.title=dscore-base" \
      --change "LABEL org.opencontainers.image.description=Debian bookworm (minbase, trimmed) with python3.11 $python_version, tini and user dscore (10001)" \
      --change "LABEL org.opencontainers.image.created=$created" \
      --change "LABEL org.opencontainers.image.vendor=dscore" \
      --change "LABEL dev.dscore.recipe=images/base/mkrootfs.sh@$(base_hash)" \
      --message "images/base/mkrootfs.sh $(base_hash)" \
      - "$ref" >/dev/null || die "podman import of $dir/rootfs failed"
    say "base: imported $ref in $((SECONDS - started)) s"
  fi
  echo "$ref"
}

# --- services -----------------------------------------------------------------------------------------

services() {
  local dir name
  for dir in "$REPO_ROOT"/services/*/; do
    name=$(basename "$dir")
    [[ -f $dir/pyproject.toml && -f $IMAGES_SRC/$name/Containerfile ]] && echo "$name"
  done
}

check_service() {
  local name=$1
  [[ $name =~ ^[a-z][a-z0-9-]*$ ]] || die "bad service name '$name'"
  [[ -f $IMAGES_SRC/$name/Containerfile ]] || die "no images/$name/Containerfile"
  [[ -f $REPO_ROOT/services/$name/pyproject.toml ]] ||
    die "services/$name does not exist on this branch: no dscore-$name to put in an image yet"
  grep -q "^dscore-$name = " "$REPO_ROOT/services/$name/pyproject.toml" ||
    die "services/$name/pyproject.toml declares no console script dscore-$name"
}

# The files an image is built from: what git tracks or would track under libs/ and services/.
source_files() {
  (cd "$REPO_ROOT" && git ls-files --cached --others --exclude-standard -- libs services | sort -u)
}

tag() {
  if [[ -n ${DSCORE_IMAGE_TAG:-} ]]; then
    [[ $DSCORE_IMAGE_TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "bad DSCORE_IMAGE_TAG"
    echo "$DSCORE_IMAGE_TAG"
    return
  fi
  local sha
  sha=$(cd "$REPO_ROOT" && git rev-parse --short=12 HEAD)
  if [[ -n $(cd "$REPO_ROOT" && git status --porcelain -- libs services uv.lock pyproject.toml images scripts/images.sh) ]]; then
    sha+=-dirty
  fi
  echo "$sha"
}

ref_of() { echo "localhost/dscore/$1:$(tag)"; }

# Hash of everything the image of service $1 is made of.
inputs_hash() {
  local name=$1 file
  {
    echo "base $(base_ref)"
    for file in "images/$name/Containerfile" scripts/images.sh uv.lock pyproject.toml; do
      echo "$file $(sha256 <"$REPO_ROOT/$file")"
    done
    while IFS= read -r file; do
      [[ -f $REPO_ROOT/$file ]] && echo "$file $(sha256 <"$REPO_ROOT/$file")"
    done < <(source_files)
  } | sha256 32
}

# Make the environment at $1 (built outside, at that path) live at ENV_PREFIX: scripts' shebangs, the
# interpreter link and pyvenv.cfg's home name the image's paths; uv's own files go.
relocate_env() {
  local env=$1 file
  for file in "$env"/bin/*; do
    [[ -f $file && ! -L $file ]] || continue
    if [[ $(head -c 2 "$file") == '#!' ]] && head -n 1 "$file" | grep -qF "$env/bin/python"; then
      sed -i "1s|^#!.*$|#!$ENV_PREFIX/bin/python|" "$file"
    fi
  done
  if [[ -L $env/bin/python ]]; then ln -sfn /usr/bin/python3.11 "$env/bin/python"; fi
  if [[ -f $env/pyvenv.cfg ]]; then sed -i "s|^home = .*$|home = /usr/bin|" "$env/pyvenv.cfg"; fi
  rm -f "$env"/bin/activate* "$env"/bin/deactivate* "$env"/bin/*.bat "$env/.lock" "$env/.gitignore" \
    "$env/CACHEDIR.TAG"
  if grep -rlF --exclude='*.pyc' --exclude='direct_url.json' --exclude=RECORD "$env" "$env" 2>/dev/null |
    head -n 5 | grep -q .; then
    die "the environment still names its build folder $env in: $(grep -rlF --exclude='*.pyc' --exclude='direct_url.json' --exclude=RECORD "$env" "$env" | head -n 5 | tr '\n' ' ')"
  fi
}

# Compile every .py under layer $1 (whose files live at $2 in the image) with the base's interpreter:
# unchecked-hash .pyc files (an image never changes; they do not depend on mtimes), the image's paths in
# tracebacks. A read-only root could not store them, and compiling at every start costs CPU.
compile_layer() {
  local layer=$1 prefix=$2
  [[ -d $layer$prefix ]] || return 0
  nice "$(base_python)" -m compileall -q -j 2 --invalidation-mode unchecked-hash \
    -s "$layer$prefix" -p "$prefix" "$layer$prefix" >&2 ||
    die "compiling $layer failed"
}

# Build the two layers of service $1's environment in context folder $2: deps/ (everything uv.lock pins
# for the service but the workspace's own packages) and app/ (dscore, the service, their scripts).
build_env() {
  local name=$1 ctx=$2 env=$2/env$ENV_PREFIX python
  python=$(base_python)
  local uv_sync=("$UV" sync --frozen --package "dscore-$name" --no-dev --no-editable --link-mode copy
    --python "$python" --no-python-downloads --quiet)
  rm -rf "$ctx"
  mkdir -p "$ctx/deps" "$ctx/app"
  UV_PROJECT_ENVIRONMENT=$env "${uv_sync[@]}" --no-install-workspace >&2 ||
    die "uv sync (dependencies of dscore-$name, from uv.lock) failed"
  (cd "$ctx/env" && find . ! -type d | sort) >"$ctx/deps.files"
  (cd "$ctx/env" && find . -type f -print0 | sort -z | xargs -0 md5sum) >"$ctx/deps.sums"
  # uv would reuse its cached build of a workspace package whose pyproject.toml did not change: refresh.
  UV_PROJECT_ENVIRONMENT=$env "${uv_sync[@]}" --refresh-package dscore --refresh-package "dscore-$name" >&2 ||
    die "uv sync (dscore-$name) failed"
  # app/: the files the second sync added; deps/: the rest. A file of the first sync that the second
  # changed would belong to both: refuse rather than ship layers that depend on their order.
  (cd "$ctx/env" && md5sum --check --quiet "$ctx/deps.sums" >&2) ||
    die "installing dscore-$name changed files of its dependencies (above): the layers cannot be split"
  relocate_env "$env"
  (cd "$ctx/env" && find . ! -type d | sort) >"$ctx/all.files"
  comm -13 "$ctx/deps.files" "$ctx/all.files" >"$ctx/app.files"
  comm -12 "$ctx/deps.files" "$ctx/all.files" >"$ctx/deps.kept"
  [[ -s $ctx/app.files ]] || die "uv sync installed nothing of dscore-$name"
  (cd "$ctx/env" && tar -cf - -T "$ctx/app.files") | tar -C "$ctx/app" -xf - || die "splitting app/ failed"
  (cd "$ctx/env" && tar -cf - -T "$ctx/deps.kept") | tar -C "$ctx/deps" -xf - || die "splitting deps/ failed"
  compile_layer "$ctx/deps" "$ENV_PREFIX"
  compile_layer "$ctx/app" "$ENV_PREFIX"
  grep -q "^\.$ENV_PREFIX/bin/dscore-$name$" "$ctx/app.files" || die "dscore-$name's console script is missing"
  rm -rf "$ctx/env"
  # Readable by all, writable by root only (the services run as 10001); one mtime for everything.
  chmod -R u=rwX,go=rX "$ctx/deps" "$ctx/app"
  find "$ctx/deps" "$ctx/app" -exec touch -h -d "@$FILE_EPOCH" {} +
}

build_service() {
  local name=$1 ref inputs dev started ctx revision created version
  check_service "$name"
  ref=$(ref_of "$name")
  dev=localhost/dscore/$name:dev
  inputs=$(inputs_hash "$name")
  if image_exists "$ref" && [[ $(label_of "$ref" dev.dscore.inputs) == "$inputs" ]]; then
    podman tag "$ref" "$dev"
    say "$name: $ref is up to date"
    echo "$ref"
    return 0
  fi
  started=$SECONDS
  ctx=$IMAGES_CACHE/ctx-$name
  say "$name: building the environment from uv.lock for $(base_ref)'s python3.11"
  build_env "$name" "$ctx"
  local env_s=$((SECONDS - started))
  revision=$(cd "$REPO_ROOT" && git rev-parse HEAD)
  created=$(cd "$REPO_ROOT" && git log -1 --format=%cI HEAD)
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO_ROOT/services/$name/pyproject.toml" | head -n 1)
  say "$name: podman build $ref"
  podman build --pull=never --layers --format oci \
    -f "$IMAGES_SRC/$name/Containerfile" \
    --build-arg "BASE_IMAGE=$(base_ref)" \
    --build-arg "REVISION=$revision" \
    --build-arg "CREATED=$created" \
    --build-arg "VERSION=$version" \
    --label "dev.dscore.inputs=$inputs" \
    -t "$ref" -t "$dev" "$ctx" >&2 || die "podman build of $name failed"
  say "$name: built $ref in $((SECONDS - started)) s (environment $env_s s)"
  echo "$ref"
}

build() {
  local names=("$@") name
  check_tools
  lock
  if [[ ${#names[@]} == 0 ]]; then
    mapfile -t names < <(services)
    [[ ${#names[@]} -gt 0 ]] || die "no service has an image (services/NAME/ with images/NAME/Containerfile)"
  fi
  for name in "${names[@]}"; do check_service "$name"; done
  build_base >/dev/null
  for name in "${names[@]}"; do build_service "$name"; done
}

sizes() {
  local ref size gz
  printf '%-45s %10s %14s\n' IMAGE SIZE GZIP >&2
  while read -r ref; do
    [[ -n $ref ]] || continue
    size=$(podman image inspect --format '{{.Size}}' "$ref")
    gz=$(podman save --format oci-archive "$ref" 2>/dev/null | gzip -c | wc -c)
    printf '%-45s %8s MB %11s MB\n' "$ref" "$((size / 1000000))" "$((gz / 1000000))"
  done < <(podman images --format '{{.Repository}}:{{.Tag}}' --filter reference='localhost/dscore/*' | sort)
}

prune() {
  local ref repo tag keep
  need podman podman "podman"
  while read -r ref; do
    [[ -n $ref ]] || continue
    repo=${ref%:*}
    tag=${ref##*:}
    case $repo in
      localhost/dscore/base) keep=$(base_hash) ;;
      *) keep=$(tag) ;;
    esac
    if [[ $tag != dev && $tag != "$keep" ]]; then
      podman untag "$ref" >&2 && say "untagged $ref"
    fi
  done < <(podman images --format '{{.Repository}}:{{.Tag}}' --filter reference='localhost/dscore/*')
  # Only images descended from a dscore base carry its label: nobody else's are touched.
  podman image prune --force --filter label=dev.dscore.recipe >&2
}

case ${1:-} in
  build)
    shift
    build "$@"
    ;;
  base)
    check_tools
    lock
    build_base "${2:-}"
    ;;
  ref)
    [[ $# == 2 ]] || die "usage: scripts/images.sh ref SERVICE"
    ref_of "$2"
    ;;
  services) services ;;
  sizes) sizes ;;
  run-flags) echo "${RUN_FLAGS[*]}" ;;
  prune) prune ;;
  *) die "usage: scripts/images.sh build [SERVICE...] | base [--refresh] | ref SERVICE | services | sizes | run-flags | prune" ;;
esac
