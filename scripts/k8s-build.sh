#!/usr/bin/env bash
# Build, once per version, the binaries of the local Kubernetes control plane (scripts/k8s.sh) from the Go
# module proxy: kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (Kubernetes), kwok (a fake
# kubelet, so pods reach Running without a container runtime) and helm. They land in a cache folder keyed by
# version (default .cache/k8s/, ignored by git); a later run finds them and returns at once.
#
# Cold, this took 18 min on 2 busy shared cores (~13 min of CPU) one package at a time, and leaves ~5.5 GB
# of Go module and build caches; with those caches warm (a new worktree) ~100 s. It runs under `nice -n 19`
# (any other work on the machine comes first) with one package per core at once (DSCORE_K8S_BUILD_JOBS):
# `make test` runs it before the tests start, when nothing else wants the cores, and a new machine's cold
# build is CPU-bound.
#
#   scripts/k8s-build.sh           build whatever is missing (nothing to do, and silent, when all is cached)
#   scripts/k8s-build.sh path X    print the path of binary X (kube-apiserver, kwok, helm, kubectl, ...)
#
# Settings (environment): DSCORE_K8S_VERSION (v1.35.4), DSCORE_KWOK_VERSION (v0.8.0),
# DSCORE_HELM_VERSION (v3.22.0), DSCORE_K8S_CACHE (<repo>/.cache/k8s), DSCORE_K8S_BUILD_JOBS (packages
# compiled at once; default: the number of cores).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
k8s_version="${DSCORE_K8S_VERSION:-v1.35.4}"
kwok_version="${DSCORE_KWOK_VERSION:-v0.8.0}"
helm_version="${DSCORE_HELM_VERSION:-v3.22.0}"
cache="${DSCORE_K8S_CACHE:-$repo_root/.cache/k8s}"

kube_dir="$cache/kubernetes-$k8s_version"
kwok_dir="$cache/kwok-$kwok_version"
helm_dir="$cache/helm-$helm_version"
kube_binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

die() {
    echo "k8s-build: $*" >&2
    exit 1
}
log() { echo "k8s-build: $*" >&2; }

binary_path() {
    case "$1" in
        kube-apiserver | kube-controller-manager | kube-scheduler | kubectl) echo "$kube_dir/$1" ;;
        kwok) echo "$kwok_dir/kwok" ;;
        kwok-stages.yaml) echo "$kwok_dir/kwok-stages.yaml" ;;
        helm) echo "$helm_dir/helm" ;;
        *) die "unknown binary '$1'" ;;
    esac
}

check_go() {
    command -v go >/dev/null 2>&1 ||
        die "go not found: install Go >= 1.25 (https://go.dev/dl/) and put it on PATH"
    local minor
    minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
    [[ "$minor" =~ ^[0-9]+$ && "$minor" -ge 25 ]] ||
        die "Kubernetes $k8s_version needs Go >= 1.25, found $(go env GOVERSION) (https://go.dev/dl/)"
}

# Frugal Go: lowest priority, one package per core, no VCS stamping, reproducible paths.
build_jobs="${DSCORE_K8S_BUILD_JOBS:-$(nproc 2>/dev/null || echo 1)}"
[[ "$build_jobs" =~ ^[1-9][0-9]*$ ]] || die "DSCORE_K8S_BUILD_JOBS must be a positive integer, not '$build_jobs'"
gobuild() {
    GOFLAGS="${GOFLAGS:-} -p=$build_jobs -buildvcs=false -trimpath" nice -n 19 go "$@"
}

# k8s.io/kubernetes replaces its staging modules (k8s.io/api, k8s.io/client-go, ...) with ./staging paths,
# so `go install k8s.io/kubernetes/cmd/...@version` fails. A scratch module that requires it and points each
# staging module at its published release (v0.<minor>.<patch>) builds.
build_kubernetes() {
    local staging_version="v0.${k8s_version#v1.}"
    local src="$cache/src/kubernetes-$k8s_version"
    local kube_mod
    mkdir -p "$src"
    log "downloading k8s.io/kubernetes@$k8s_version"
    kube_mod="$(cd "$src" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$k8s_version" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
    local staging
    staging="$(sed -nE 's#^[[:space:]]*(k8s\.io/[^[:space:]]+)[[:space:]]+=>[[:space:]]+\./staging/.*#\1#p' "$kube_mod")"
    [[ -n "$staging" ]] || die "no ./staging replace lines in $kube_mod: the recipe needs revisiting"
    {
        echo "module dscore.local/k8s-build"
        echo
        echo "go 1.25"
        echo
        echo "require k8s.io/kubernetes $k8s_version"
        echo
        echo "replace ("
        for name in $staging; do echo "	$name => $name $staging_version"; done
        echo ")"
    } >"$src/go.mod"
    {
        echo "//go:build tools"
        echo
        echo "// Package tools pins the Kubernetes commands this module builds."
        echo "package tools"
        echo
        echo "import ("
        for bin in "${kube_binaries[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$bin\""; done
        echo ")"
    } >"$src/tools.go"
    log "resolving modules (go mod tidy)"
    (cd "$src" && nice -n 19 go mod tidy)

    local major minor build_date pkg ldflags=(-s -w)
    major="${k8s_version#v}"
    minor="${major#*.}"
    minor="${minor%%.*}"
    major="${major%%.*}"
    build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    # Without these the server calls itself v0.0.0-master and helm's kubeVersion checks misbehave.
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=(-X "$pkg.gitVersion=$k8s_version" -X "$pkg.gitMajor=$major" -X "$pkg.gitMinor=$minor"
            -X "$pkg.gitTreeState=clean" -X "$pkg.buildDate=$build_date")
    done
    local out="$kube_dir.partial"
    rm -rf "$out"
    mkdir -p "$out"
    local pkgs=()
    for bin in "${kube_binaries[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$bin"); done
    log "building ${kube_binaries[*]} $k8s_version (cold: ~8 min on 2 busy cores; ~1 min with warm Go caches)"
    (cd "$src" && gobuild build -ldflags "${ldflags[*]}" -o "$out/" "${pkgs[@]}")
    rm -rf "$kube_dir"
    mv "$out" "$kube_dir"
}

build_kwok() {
    local out="$kwok_dir.partial" stages_dir bin
    rm -rf "$out"
    mkdir -p "$out"
    log "building kwok $kwok_version (cold: ~2-4 min)"
    GOBIN="$out" gobuild install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$kwok_version"
    # kwok exits with "no stages found" unless told how to move nodes and pods along: use its own "fast"
    # stages (node Ready at once, lease heartbeat, pods Running at once, deleted pods finalized).
    stages_dir="$(cd "$out" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kwok@$kwok_version" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/kustomize/stage"
    : >"$out/kwok-stages.yaml"
    for bin in node/fast node/heartbeat-with-lease pod/fast; do
        local f
        for f in "$stages_dir/$bin"/*.yaml; do
            [[ "$(basename "$f")" == kustomization.yaml ]] && continue
            { echo "---"; cat "$f"; } >>"$out/kwok-stages.yaml"
        done
    done
    grep -q "kind: Stage" "$out/kwok-stages.yaml" || die "no kwok stages found under $stages_dir"
    rm -rf "$kwok_dir"
    mv "$out" "$kwok_dir"
}

build_helm() {
    local out="$helm_dir.partial"
    rm -rf "$out"
    mkdir -p "$out"
    log "building helm $helm_version (cold: ~2-7 min)"
    GOBIN="$out" gobuild install \
        -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version" \
        "helm.sh/helm/v3/cmd/helm@$helm_version"
    rm -rf "$helm_dir"
    mv "$out" "$helm_dir"
}

missing() {
    local b
    for b in "$@"; do [[ -x "$(binary_path "$b")" ]] || return 0; done
    return 1
}

build_all() {
    if ! missing "${kube_binaries[@]}" kwok helm && [[ -s "$(binary_path kwok-stages.yaml)" ]]; then
        return 0
    fi
    check_go
    command -v python3 >/dev/null 2>&1 || die "python3 not found: apt-get install -y python3"
    mkdir -p "$cache"
    # Two test runs starting at once must not both build (or see a half-built folder).
    exec 9>"$cache/.build.lock"
    flock 9
    local started=$SECONDS
    if missing "${kube_binaries[@]}"; then build_kubernetes; fi
    if missing kwok || [[ ! -s "$(binary_path kwok-stages.yaml)" ]]; then build_kwok; fi
    if missing helm; then build_helm; fi
    log "done in $((SECONDS - started)) s; binaries under $cache"
}

case "${1:-build}" in
    build) build_all ;;
    path)
        [[ $# -eq 2 ]] || die "usage: $0 path <binary>"
        binary_path "$2"
        ;;
    *) die "usage: $0 [build | path <binary>]" ;;
esac
