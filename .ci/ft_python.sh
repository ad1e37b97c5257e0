#!/usr/bin/env bash
# Build (once) a free-threaded CPython (--disable-gil) inside the sid chroot
# of .ci/sid_chroot.sh, from Debian's source package, for the free-threaded
# and tsan gates of .ci/run.  Prints the interpreter's path inside the
# chroot.
#
#   bash .ci/ft_python.sh CHROOT [plain|tsan]
#
# The build lives in the chroot (it links against the chroot's libraries),
# under /opt/cfutures-<flavour>-<key>, keyed by the source version and
# this recipe; a half-made one is never used.  proc/dev/sys must be mounted
# in the chroot (the caller does that).
set -euo pipefail
CHROOT=$1
FLAVOUR=${2:-plain}
SRCPKG=python3.13
RECIPE=1
case $FLAVOUR in
    plain) CONFIGURE="--disable-gil" ;;
    # TSan wants no optimisation surprises and debug info for its reports.
    tsan) CONFIGURE="--disable-gil --with-thread-sanitizer" ;;
    *) echo "unknown flavour $FLAVOUR" >&2; exit 2 ;;
esac
in_chroot() {
    chroot "$CHROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}
BUILD_DEPS="make pkg-config xz-utils libssl-dev libffi-dev
    zlib1g-dev libbz2-dev liblzma-dev libsqlite3-dev"

# Debian's archive keeps this orig tarball (not every newer one: sid's
# current python3.13 source was a 404 here), so the version is pinned and
# its checksum checked.
VERSION=3.13.15
URL=http://deb.debian.org/debian/pool/main/p/python3.13/python3.13_$VERSION.orig.tar.xz
SHA256=1e66a7945a48390ee4c2a4268a0e4185884059a13c4aab6d148aa208deea4a76
key=$(printf '%s\n' "$RECIPE" "$FLAVOUR" "$VERSION" "$CONFIGURE" |
    sha256sum | cut -c1-12)
PREFIX=/opt/cfutures-$FLAVOUR-$key
if [[ -e $CHROOT$PREFIX/.complete ]]; then
    echo "$PREFIX/bin/python3.13t"
    exit 0
fi

for try in 1 2 3; do
    in_chroot apt-get install -y -q --no-install-recommends $BUILD_DEPS >&2 &&
        break
    ((try < 3)) || exit 1
    sleep $((try * 5))
done
BUILD=/tmp/ft-build-$FLAVOUR-$$
trap 'rm -rf "$CHROOT$BUILD"' EXIT
mkdir -p "$CHROOT$BUILD"
for try in 1 2 3; do
    curl -fsS -o "$CHROOT$BUILD/src.tar.xz" "$URL" && break
    ((try < 3)) || exit 1
    sleep $((try * 5))
done
echo "$SHA256  $CHROOT$BUILD/src.tar.xz" | sha256sum -c - >&2
# TSan: reports from the build's own steps (the interpreter runs during
# the build) are not what the gate looks for, and must not fail it.
BUILD_ENV=
if [[ $FLAVOUR == tsan ]]; then
    BUILD_ENV="TSAN_OPTIONS=report_bugs=0"
fi
in_chroot sh -c "cd $BUILD && tar -xf src.tar.xz &&
    cd \$(ls -d */ | grep -i python | head -1) &&
    ./configure -q --prefix=$PREFIX $CONFIGURE &&
    $BUILD_ENV make -s -j\$(nproc) &&
    $BUILD_ENV make -s altinstall &&
    if [ $FLAVOUR = tsan ]; then
        cp Tools/tsan/suppressions_free_threading.txt \
            $PREFIX/tsan_suppressions_cpython.txt
    fi" >&2
touch "$CHROOT$PREFIX/.complete"
echo "$PREFIX/bin/python3.13t"
