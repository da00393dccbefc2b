#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# build.sh OUTDIR: build netplane's tiny guest from Debian packages.
#
#   OUTDIR/vmlinuz            Debian's current bookworm kernel: the package
#                             linux-image-amd64 depends on, downloaded with
#                             apt-get download into a cache and unpacked with
#                             dpkg-deb (never installed on the host)
#   OUTDIR/initramfs.cpio.gz  /init (netplane/guest/init), a static busybox
#                             (busybox-static) with applet links, the static
#                             traffic tool /bin/nptraffic, and the kernel
#                             modules a virtio-net-pci NIC needs (virtio_net,
#                             virtio_pci and their dependencies from
#                             modules.dep; whatever is built in is skipped),
#                             decompressed so busybox insmod can load them,
#                             listed in load order in /lib/modules/load.order
#   OUTDIR/nptraffic-host     nptraffic built natively (dynamically linked)
#                             for the host side
#   OUTDIR/guest.info         what went in: kernel package, version, modules
#
# The kernel package is cached in $NETPLANE_CACHE (default
# ~/.cache/netplane).  Nothing is rebuilt while the outputs are newer than
# init, nptraffic.c and this script and were made from the kernel package
# apt currently resolves.

set -eu

me=netplane/guest/build.sh
die() { echo "$me: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $me OUTDIR"
out=$1
here=$(cd "$(dirname "$0")" && pwd)
init=$here/init
src=$here/nptraffic.c
self=$here/build.sh
cache=${NETPLANE_CACHE:-${HOME:-/root}/.cache/netplane}
CC=${CC:-gcc}
# Modules for virtio-net on a PCI machine; their dependencies come from
# modules.dep.  Any of them may be built into the kernel.
roots='virtio_pci virtio_net af_packet'

PATH=$PATH:/usr/sbin:/sbin
export PATH

for f in "$init" "$src"; do
    [ -f "$f" ] || die "missing $f"
done

# The kernel package linux-image-amd64 currently depends on.
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
      sed -n 's/^ *|\{0,1\}Depends: \(linux-image-[^ ]*\).*/\1/p' | head -n 1)
[ -n "$pkg" ] || die "cannot resolve the kernel package of linux-image-amd64 (apt-get update?)"
ver=$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')
case $ver in ''|'(none)') die "no installable version of $pkg (apt-get update?)" ;; esac
arch=$(dpkg --print-architecture)
deb=$cache/${pkg}_$(echo "$ver" | sed 's/:/%3a/g')_$arch.deb

# Up to date?
if [ -f "$deb" ] && [ -f "$out/guest.info" ] &&
   grep -qxF "deb=$(basename "$deb")" "$out/guest.info"; then
    fresh=1
    for o in vmlinuz initramfs.cpio.gz nptraffic-host guest.info; do
        for i in "$init" "$src" "$self"; do
            [ -f "$out/$o" ] && [ "$out/$o" -nt "$i" ] || fresh=0
        done
    done
    if [ $fresh = 1 ]; then
        echo "guest up to date"
        exit 0
    fi
fi

mkdir -p "$cache" "$out"
cache=$(cd "$cache" && pwd)
out=$(cd "$out" && pwd)
deb=$cache/$(basename "$deb")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/netplane-guest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

if [ ! -f "$deb" ]; then
    echo "guest: downloading $pkg $ver"
    mkdir "$tmp/dl"
    sandbox=
    # apt's download sandbox user cannot write to root's cache dir.
    [ "$(id -u)" = 0 ] && sandbox='-o APT::Sandbox::User=root'
    # shellcheck disable=SC2086
    (cd "$tmp/dl" && apt-get -q $sandbox download "$pkg=$ver") ||
        die "cannot download the kernel package $pkg $ver (needs Debian's apt archive; see apt-get download)"
    got=$(ls "$tmp/dl"/*.deb 2>/dev/null | head -n 1)
    [ -n "$got" ] || die "apt-get download $pkg left no .deb"
    mv "$got" "$deb"
fi

echo "guest: unpacking $(basename "$deb")"
dpkg-deb -x "$deb" "$tmp/k" || die "cannot unpack $deb"
moddir=
for d in "$tmp"/k/lib/modules/* "$tmp"/k/usr/lib/modules/*; do
    [ -d "$d" ] && { moddir=$d; break; }
done
[ -n "$moddir" ] || die "no lib/modules in $deb"
kver=$(basename "$moddir")
vmlinuz=$tmp/k/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || die "no boot/vmlinuz-$kver in $deb"
if [ ! -f "$moddir/modules.dep" ]; then
    # Debian generates modules.dep at install time; do it here, in the
    # unpacked tree only.
    depmod -b "${moddir%/lib/modules/$kver}" "$kver" ||
        die "depmod failed for $kver"
fi

stage=$tmp/root
mkdir -p "$stage"
cd "$stage"
mkdir -p bin sbin usr/bin usr/sbin dev proc sys tmp etc lib/modules run
chmod 1777 tmp

# Modules, in load order: modules.dep lists a module's dependencies such
# that they load last to first.
order=
builtin=
add_ko() {
    case " $order " in *" $1 "*) return ;; esac
    order="${order:+$order }$1"
}
for m in $roots; do
    pat=$(echo "$m" | sed 's/[-_]/[-_]/g')
    if grep -Eq "(^|/)$pat\.ko$" "$moddir/modules.builtin" 2>/dev/null; then
        builtin="${builtin:+$builtin }$m"
        continue
    fi
    line=$(grep -E "(^|/)$pat\.ko(\.(xz|zst|gz))?:" "$moddir/modules.dep" | head -n 1)
    [ -n "$line" ] || die "module $m is neither built into $kver nor in modules.dep"
    deps=
    for d in ${line#*:}; do
        deps="$d${deps:+ $deps}"
    done
    for d in $deps; do
        add_ko "$d"
    done
    add_ko "${line%%:*}"
done
: > lib/modules/load.order
names=
for p in $order; do
    f=$moddir/$p
    name=$(basename "$p")
    case $name in
    *.ko.xz)  name=${name%.xz};  xz -dc "$f" > "lib/modules/$name" ;;
    *.ko.zst) name=${name%.zst}
              command -v zstd >/dev/null || die "$p is zstd-compressed: install zstd"
              zstd -qdc "$f" > "lib/modules/$name" ;;
    *.ko.gz)  name=${name%.gz};  gzip -dc "$f" > "lib/modules/$name" ;;
    *.ko)     cp "$f" "lib/modules/$name" ;;
    *)        die "unexpected module file $p" ;;
    esac
    echo "$name" >> lib/modules/load.order
    names="${names:+$names }${name%.ko}"
done

# busybox, statically linked, with a link for each of its applets.
bb=/bin/busybox
[ -x "$bb" ] || die "no $bb: install busybox-static"
if command -v readelf >/dev/null; then
    LC_ALL=C readelf -lW "$bb" | grep -q 'program interpreter' &&
        die "$bb is dynamically linked: install busybox-static"
fi
cp "$bb" bin/busybox
"$bb" --list-full | while read -r a; do
    case $a in
    bin/busybox) ;;
    bin/*|sbin/*|usr/bin/*|usr/sbin/*) [ -e "$a" ] || ln -s /bin/busybox "$a" ;;
    esac
done
for a in sh mount mkdir insmod ip ping cat sleep poweroff reboot; do
    [ -e "bin/$a" ] || [ -e "sbin/$a" ] || [ -e "usr/bin/$a" ] ||
        [ -e "usr/sbin/$a" ] || die "$bb has no '$a' applet"
done

cp "$init" init
chmod 755 init
echo "$kver" > etc/netplane-kernel
# The kernel opens /dev/console for /init before /init can mount devtmpfs;
# without the node (unprivileged builds), /init reopens it itself.
[ "$(id -u)" = 0 ] && mknod -m 600 dev/console c 5 1 2>/dev/null || true

echo "guest: compiling nptraffic"
"$CC" -O2 -Wall -static -o bin/nptraffic "$src" ||
    die "cannot build static nptraffic (glibc static libraries: libc6-dev)"
"$CC" -O2 -Wall -o "$tmp/nptraffic-host" "$src" ||
    die "cannot build nptraffic-host"

find . -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet |
    gzip -9n > "$tmp/initramfs.cpio.gz"
cd /

cp "$vmlinuz" "$tmp/vmlinuz"
{
    echo "kernel_pkg=$pkg"
    echo "kernel_version=$ver"
    echo "deb=$(basename "$deb")"
    echo "kver=$kver"
    echo "modules=$names"
    echo "builtin=$builtin"
} > "$tmp/guest.info"
for o in nptraffic-host vmlinuz initramfs.cpio.gz guest.info; do
    mv -f "$tmp/$o" "$out/$o"
done
echo "guest: $out: kernel $kver, modules: ${names:-none}${builtin:+ (built in: $builtin)}"
