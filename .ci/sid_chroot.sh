#!/usr/bin/env bash
# Make (once) a Debian sid chroot with CPython 3.13, 3.14 and 3.15, for the
# matrix gate of .ci/run.  Prints the chroot's path.
#
# The chroot is a cache outside the clone, keyed by what it contains (the
# package list and this script's recipe version), so a developer machine
# builds it once and later runs reuse it.  A half-made one is never used:
# it is built under a temporary name and renamed when complete.
#
#   bash .ci/sid_chroot.sh            make it if missing, print its path
#   CFUTURES_CACHE=/dir               where caches live (/var/cache/cfutures)
set -euo pipefail

PACKAGES=(python3.13 python3.13-dev python3.13-venv
          python3.14 python3.14-dev python3.14-venv
          python3.15 python3.15-dev python3.15-venv
          gcc libc6-dev ca-certificates)
RECIPE=1   # bump when the steps below change what the chroot holds
CACHE=${CFUTURES_CACHE:-/var/cache/cfutures}
key=$(printf '%s\n' "$RECIPE" "${PACKAGES[@]}" | sha256sum | cut -c1-12)
DIR=$CACHE/sid-$key

if [[ -x $DIR/usr/bin/python3.15 && -e $DIR/.complete ]]; then
    echo "$DIR"
    exit 0
fi

mkdir -p "$CACHE"
TMP=$(mktemp -d "$CACHE/sid-tmp.XXXXXX")
unmount_all() {
    local m
    for m in sys dev/pts dev proc; do
        mountpoint -q "$TMP/$m" 2>/dev/null && umount -l "$TMP/$m" || true
    done
}
trap 'unmount_all; rm -rf --one-file-system "$TMP"' EXIT

command -v debootstrap >/dev/null || {
    apt-get update -q >&2 && apt-get install -y -q debootstrap >&2
}
for try in 1 2 3; do  # a mirror hiccup should not fail CI
    debootstrap --variant=minbase sid "$TMP" http://deb.debian.org/debian >&2 &&
        break
    ((try < 3)) || exit 1
    rm -rf --one-file-system "$TMP" && mkdir -p "$TMP"
    sleep $((try * 5))
done
# sid's Release files can be past Valid-Until on a snapshot mirror.
echo 'Acquire::Check-Valid-Until "false";' >"$TMP/etc/apt/apt.conf.d/99cfutures"
mount -t proc proc "$TMP/proc"
mount --bind /dev "$TMP/dev"
mount --bind /sys "$TMP/sys"
for try in 1 2 3; do
    chroot "$TMP" env DEBIAN_FRONTEND=noninteractive sh -c \
        "apt-get update -q && apt-get install -y -q --no-install-recommends ${PACKAGES[*]}" >&2 &&
        break
    ((try < 3)) || exit 1
    sleep $((try * 5))
done
# pip inside the chroot reaches the package index through the host's CAs.
cp /etc/ssl/certs/ca-certificates.crt "$TMP/etc/host-ca.crt"
printf '[global]\ncert = /etc/host-ca.crt\n' >"$TMP/etc/pip.conf"
chroot "$TMP" apt-get clean >&2
unmount_all
touch "$TMP/.complete"
rm -rf --one-file-system "$DIR"
mv "$TMP" "$DIR"
trap - EXIT
echo "$DIR"
