#!/usr/bin/env bash
# The recipe of dscore's base image: a trimmed Debian bookworm (minbase) root file system with Debian's
# CPython 3.11, tini and the CA certificates, and the unprivileged user `dscore` (uid/gid 10001).
#
#   images/base/mkrootfs.sh ROOTFS [DEB_CACHE]
#
# Builds into the empty (or absent) folder ROOTFS; downloaded .deb files are kept in DEB_CACHE (a later
# build with a changed recipe does not download them again). Run as root (debootstrap and chroot).
# scripts/images.sh runs it, and tags the image with a hash of this file: changing anything here makes the
# next `make images` build a new base. (Debian's own updates are not in that hash: `scripts/images.sh base
# --refresh` rebuilds the base with what the mirror serves now.)
#
# Settings (environment): DSCORE_DEBIAN_MIRROR (http://deb.debian.org/debian),
# DSCORE_DEBIAN_SECURITY_MIRROR (http://deb.debian.org/debian-security).
set -euo pipefail

rootfs=${1:?usage: mkrootfs.sh ROOTFS [DEB_CACHE]}
deb_cache=${2:-}
mirror=${DSCORE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DSCORE_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
suite=bookworm
# python3.11: Debian's interpreter, /usr/bin/python3.11 (the services' environment is built for it, see
# images/README.md); tini: PID 1 that forwards signals and reaps; ca-certificates: TLS to Kafka / Redis.
packages=python3.11,tini,ca-certificates
uid=10001

say() { printf 'mkrootfs: %s\n' "$*" >&2; }

[[ $EUID == 0 ]] || {
  say "must run as root (debootstrap, chroot)"
  exit 1
}
if [[ -e $rootfs ]] && [[ -n $(ls -A "$rootfs") ]]; then
  say "$rootfs is not empty"
  exit 1
fi
mkdir -p "$rootfs"
rootfs=$(cd "$rootfs" && pwd)
[[ $rootfs != / ]] || {
  say "refusing to build into /"
  exit 1
}

# /proc inside the chroot for apt's and dpkg's maintainer scripts; always unmounted, even on failure.
cleanup() { if mountpoint -q "$rootfs/proc"; then umount -l "$rootfs/proc"; fi; }
trap cleanup EXIT

cache_args=()
if [[ -n $deb_cache ]]; then
  mkdir -p "$deb_cache"
  cache_args=(--cache-dir="$(cd "$deb_cache" && pwd)")
fi
say "debootstrap --variant=minbase $suite (+ $packages) from $mirror"
debootstrap --variant=minbase --include="$packages" "${cache_args[@]}" "$suite" "$rootfs" "$mirror" >&2

# Security and point-release updates: debootstrap installs the suite as released, not its fixes.
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
EOF
# Never bring documentation back if someone extends the image with apt-get.
mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/01-dscore-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
mount -t proc proc "$rootfs/proc"
say "apt-get upgrade (bookworm-updates, bookworm-security)"
chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive LC_ALL=C apt-get -q update >&2
chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
  apt-get -q -y --no-install-recommends -o Dpkg::Options::=--force-confold upgrade >&2
chroot "$rootfs" env LC_ALL=C apt-get clean
umount "$rootfs/proc"

# The services' user: numeric ids (Kubernetes' runAsNonRoot checks the number), no home, no shell.
chroot "$rootfs" groupadd --gid "$uid" dscore
chroot "$rootfs" useradd --uid "$uid" --gid "$uid" --no-create-home --home-dir /nonexistent \
  --shell /usr/sbin/nologin dscore

say "trimming"
# Package lists and caches (the upgrade's lists are ~50 MB), logs of the build, backups of dpkg's state.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
  "$rootfs"/var/lib/dpkg/*-old "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.[!.]* 2>/dev/null || true
# Documentation, manuals, translations: the licences (copyright files) stay.
find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
  "$rootfs"/usr/share/lintian/*
# Device nodes come from the container runtime; a per-machine id must not be baked in.
rm -rf "${rootfs:?}"/dev/* "$rootfs/etc/machine-id" "$rootfs/var/lib/dbus/machine-id"
say "done: $(du -sh "$rootfs" | cut -f1) in $rootfs"
