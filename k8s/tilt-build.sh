#!/usr/bin/env bash
# Tilt's image build (custom_build in the Tiltfile): builds dscore/<service> with scripts/images.sh (podman,
# see images/README.md), tags it as Tilt's $EXPECTED_REF and hands it to the cluster: `kind load` on a kind
# cluster, otherwise a push (Tilt puts its registry in $EXPECTED_REF when one is set, e.g. with ctlptl).
#
#   EXPECTED_REF=dscore/node:tilt-abc k8s/tilt-build.sh node
set -euo pipefail
service="${1:?usage: tilt-build.sh SERVICE}"
ref="${EXPECTED_REF:?set by Tilt}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
images="$root/scripts/images.sh"

[[ -x "$images" ]] || {
    echo "tilt-build: $images is missing (the images branch); it builds dscore's images with podman" >&2
    exit 1
}
built="$("$images" build "$service" | tail -n 1)"
podman tag "$built" "$ref"
context="$(kubectl config current-context)"
if [[ "$context" == kind-* ]]; then
    archive="$(mktemp)"
    trap 'rm -f "$archive"' EXIT
    podman save --format docker-archive -o "$archive" "$ref"
    kind load image-archive "$archive" --name "${context#kind-}"
else
    podman push "$ref"
fi
echo "tilt-build: $ref ready for $context" >&2
