#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Install every Debian package that netplane's build, tests, demo and
# benchmark need.  Safe to run again: it does nothing when all is present.
#
# meson >= 1.5 and python3-pycotap come from bookworm-backports, which is
# added (reusing the machine's configured Debian mirror) only when needed.

set -eu

PKGS="gcc make git patch xz-utils ca-certificates ccache ninja-build
pkg-config libglib2.0-dev libpixman-1-dev libfdt-dev zlib1g-dev flex bison
python3 python3-venv python3-distlib dpkg-dev cpio gcc-multilib
seabios ipxe-qemu
iproute2 iputils-ping ethtool procps util-linux kmod busybox-static libcap2-bin
python3-matplotlib valgrind
libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients"
BACKPORTS_PKGS="meson python3-pycotap"

# "deps.sh clang": also what the fuzzing and ThreadSanitizer builds need
# (make fuzz, make check-fuzz, make check-tsan); "deps.sh usdt": the
# dtrace trace backend and bpftrace (make usdt, make check-usdt).
for extra in "$@"; do
    case "$extra" in
    clang) PKGS="$PKGS clang llvm libclang-rt-14-dev" ;;
    usdt) PKGS="$PKGS systemtap-sdt-dev bpftrace" ;;
    *) echo "netplane/deps.sh: unknown group '$extra'" >&2; exit 1 ;;
    esac
done

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' ||
        missing="$missing $p"
done
meson_ok=false
if command -v meson >/dev/null 2>&1 &&
   dpkg --compare-versions "$(meson --version 2>/dev/null || echo 0)" ge 1.5; then
    meson_ok=true
fi
pycotap_ok=false
dpkg-query -W -f='${Status}\n' python3-pycotap 2>/dev/null |
    grep -q '^install ok installed' && pycotap_ok=true

# libvirtd (test_virtio_net_dataplane_libvirt) resolves its default QEMU
# user before it reads qemu.conf; libvirt-daemon-system, which would add
# it, pulls polkit and a network setup that the test does not need.
user_ok=true
getent passwd libvirt-qemu >/dev/null || user_ok=false

if [ -z "$missing" ] && $meson_ok && $pycotap_ok && $user_ok; then
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "netplane/deps.sh: missing packages:$missing${BACKPORTS_PKGS:+ (and from backports: $BACKPORTS_PKGS)}" >&2
    echo "netplane/deps.sh: run this script as root to install them" >&2
    exit 1
fi


. "$(dirname "$0")/upstream.sh"

BP=/etc/apt/sources.list.d/netplane-backports.sources
if [ ! -f "$BP" ]; then
    uri=$(debian_mirror | head -n 1)
    if [ -z "$uri" ]; then
        echo "netplane/deps.sh: no Debian bookworm mirror found in /etc/apt/sources.list*" >&2
        exit 1
    fi
    cat > "$BP" <<EOS
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -q -y --no-install-recommends $PKGS
# shellcheck disable=SC2086
apt-get install -q -y --no-install-recommends -t bookworm-backports $BACKPORTS_PKGS
getent passwd libvirt-qemu >/dev/null ||
    useradd --system --no-create-home --home-dir /var/lib/libvirt \
        --shell /usr/sbin/nologin libvirt-qemu
