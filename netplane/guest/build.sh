#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# build.sh OUTDIR: build netplane's tiny guest from Debian packages.
#
#   OUTDIR/vmlinuz            Debian's current bookworm kernel: the package
#                             linux-image-amd64 depends on, fetched with
#                             apt-get download and unpacked with dpkg-deb
#                             (never installed on the host)
#   OUTDIR/initramfs.cpio.gz  /init (netplane/guest/init), busybox from
#                             busybox-static with a link per applet, the
#                             static traffic tool /bin/nptraffic, and the
#                             kernel modules a virtio-net-pci NIC needs:
#                             virtio_net, virtio_pci (and af_packet) unless
#                             built in, plus their dependencies from
#                             modules.dep, uncompressed for busybox insmod,
#                             in load order in /lib/modules/load.order
#   OUTDIR/nptraffic-host     nptraffic built natively (dynamically linked)
#                             for the host side
#   OUTDIR/vmlinux            the same kernel uncompressed, an ELF that QEMU
#                             boots through its PVH entry point: -kernel
#                             vmlinux instead of vmlinuz boots about 3 s
#                             faster under TCG (not made if the kernel is not
#                             xz-compressed or lacks CONFIG_PVH)
#   OUTDIR/guest.info         what went in: kernel package, modules
#
# Cache ($NETPLANE_CACHE, default ~/.cache/netplane): the kernel .deb, and
# next to it the few files taken from it (vmlinuz, the modules), so that a
# rebuild does not unpack the whole package again.  Nothing is rebuilt while
# the outputs are newer than init, nptraffic.c and this script and were
# made from the kernel package apt currently resolves.

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
# Modules for virtio-net on a PCI machine (any of them may be built in);
# their dependencies come from modules.dep.
roots='virtio_pci virtio_net af_packet'

PATH=$PATH:/usr/sbin:/sbin
export PATH

for f in "$init" "$src"; do
    [ -f "$f" ] || die "missing $f"
done

# The kernel package linux-image-amd64 (its candidate version) depends on,
# e.g. "Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)".
dep=$(apt-cache show --no-all-versions linux-image-amd64 2>/dev/null |
      sed -n 's/^Depends: //p' | sed 's/[,|]/\n/g' |
      sed -n 's/^ *\(linux-image-[^ ]*\) *(= *\([^)]*\)).*/\1 \2/p' |
      head -n 1)
pkg=${dep% *}
ver=${dep#* }
if [ -z "$dep" ] || [ "$pkg" = "$ver" ]; then
    die "cannot resolve the kernel package of linux-image-amd64 (is it in apt's lists? apt-get update)"
fi
arch=$(dpkg --print-architecture)
debname=${pkg}_$(echo "$ver" | sed 's/:/%3a/g')_$arch.deb
deb=$cache/$debname
kc=$cache/${debname%.deb}

# Up to date?
newer() { [ -n "$(find "$1" -prune -newer "$2" 2>/dev/null)" ]; }
if [ -f "$deb" ] && [ -f "$out/guest.info" ] &&
   grep -qxF "deb=$debname" "$out/guest.info"; then
    fresh=1
    for o in vmlinuz initramfs.cpio.gz nptraffic-host guest.info; do
        for i in "$init" "$src" "$self"; do
            newer "$out/$o" "$i" || fresh=0
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
deb=$cache/$debname
kc=$cache/${debname%.deb}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/netplane-guest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

if [ ! -f "$deb" ]; then
    echo "guest: downloading $pkg $ver"
    mkdir "$tmp/dl"
    sandbox=
    # apt's download sandbox user may not write to root's cache dir.
    [ "$(id -u)" = 0 ] && sandbox='-o APT::Sandbox::User=root'
    # shellcheck disable=SC2086
    (cd "$tmp/dl" && apt-get -q $sandbox download "$pkg=$ver") ||
        die "cannot download the kernel package $pkg $ver with apt-get download (Debian's archive unreachable?)"
    got=$(find "$tmp/dl" -name '*.deb' | head -n 1)
    [ -n "$got" ] || die "apt-get download $pkg left no .deb"
    mv "$got" "$deb"
fi

# Take vmlinuz and the modules out of the package, unless a previous run
# did so for the same package and module list.
stamp="format=2 roots=$roots"
if [ ! -f "$kc/stamp" ] || [ "$(cat "$kc/stamp")" != "$stamp" ]; then
    echo "guest: unpacking $debname"
    dpkg-deb -x "$deb" "$tmp/k" || die "cannot unpack $deb"
    moddir=
    for d in "$tmp"/k/lib/modules/* "$tmp"/k/usr/lib/modules/*; do
        [ -d "$d" ] && { moddir=$d; break; }
    done
    [ -n "$moddir" ] || die "no lib/modules in $deb"
    kver=$(basename "$moddir")
    [ -f "$tmp/k/boot/vmlinuz-$kver" ] || die "no boot/vmlinuz-$kver in $deb"
    if [ ! -f "$moddir/modules.dep" ]; then
        # Debian generates modules.dep when the package is installed; do
        # it here, in the unpacked tree only.
        depmod -b "${moddir%/lib/modules/"$kver"}" "$kver" ||
            die "depmod failed for $kver"
    fi

    new=$tmp/kc
    mkdir -p "$new/modules"
    cp "$tmp/k/boot/vmlinuz-$kver" "$new/vmlinuz"
    echo "$kver" > "$new/kver"
    # Load order: modules.dep lists a module's dependencies such that
    # they load last to first.
    order=
    builtin=
    for m in $roots; do
        pat=$(echo "$m" | sed 's/[-_]/[-_]/g')
        if grep -Eq "(^|/)$pat\.ko$" "$moddir/modules.builtin" 2>/dev/null; then
            builtin="${builtin:+$builtin }$m"
            continue
        fi
        line=$(grep -E "(^|/)$pat\.ko(\.(xz|zst|gz))?:" "$moddir/modules.dep" |
               head -n 1)
        [ -n "$line" ] || die "module $m is neither built into $kver nor in its modules.dep"
        deps=
        for d in ${line#*:}; do
            deps="$d${deps:+ $deps}"
        done
        for p in $deps ${line%%:*}; do
            case " $order " in *" $p "*) continue ;; esac
            order="${order:+$order }$p"
        done
    done
    echo "$builtin" > "$new/builtin"
    : > "$new/modules/load.order"
    for p in $order; do
        f=$moddir/$p
        name=$(basename "$p")
        case $name in
        *.ko.xz)  name=${name%.xz}; xz -dc "$f" > "$new/modules/$name" ;;
        *.ko.zst) name=${name%.zst}
                  command -v zstd > /dev/null ||
                      die "$p is zstd-compressed: install zstd"
                  zstd -qdc "$f" > "$new/modules/$name" ;;
        *.ko.gz)  name=${name%.gz}; gzip -dc "$f" > "$new/modules/$name" ;;
        *.ko)     cp "$f" "$new/modules/$name" ;;
        *)        die "unexpected module file $p" ;;
        esac
        echo "$name" >> "$new/modules/load.order"
    done
    # The kernel proper as an ELF with a PVH entry point (CONFIG_PVH): QEMU
    # boots it directly, skipping the bzImage's self-decompression, which
    # takes about 3 s under TCG.  Only for xz-compressed kernels.
    off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$new/vmlinuz" 2>/dev/null |
          head -n 1 | cut -d: -f1)
    if [ -n "$off" ] &&
       tail -c +$((off + 1)) "$new/vmlinuz" |
           xz -dc --single-stream > "$new/vmlinux" 2>/dev/null &&
       LC_ALL=C readelf -nW "$new/vmlinux" 2>/dev/null |
           grep -q 'Xen.*(0x00000012)'; then
        :
    else
        echo "guest: note: no PVH vmlinux from $kver's vmlinuz (not xz, or no CONFIG_PVH)"
        rm -f "$new/vmlinux"
    fi
    echo "$stamp" > "$new/stamp"
    rm -rf "$kc" "$tmp/k"
    mv "$new" "$kc"
fi
kver=$(cat "$kc/kver")
builtin=$(cat "$kc/builtin")

stage=$tmp/root
mkdir -p "$stage"
cd "$stage"
mkdir -p bin sbin usr/bin usr/sbin dev proc sys tmp etc lib run
chmod 1777 tmp
cp -R "$kc/modules" lib/modules
names=$(sed 's/\.ko$//' lib/modules/load.order | tr '\n' ' ' | sed 's/ $//')

# busybox, statically linked, with a link for each of its applets.
bb=/bin/busybox
[ -x "$bb" ] || die "no $bb: install busybox-static"
if command -v readelf > /dev/null; then
    if LC_ALL=C readelf -lW "$bb" | grep -q 'program interpreter'; then
        die "$bb is dynamically linked: install busybox-static"
    fi
fi
cp "$bb" bin/busybox
"$bb" --list-full | while read -r a; do
    case $a in
    bin/busybox) ;;
    bin/*|sbin/*|usr/bin/*|usr/sbin/*) [ -e "$a" ] || ln -s /bin/busybox "$a" ;;
    esac
done
# What /init uses.
for a in sh mount insmod ip ping cat sleep poweroff reboot; do
    [ -e "bin/$a" ] || [ -e "sbin/$a" ] || [ -e "usr/bin/$a" ] ||
        [ -e "usr/sbin/$a" ] || die "$bb has no '$a' applet"
done

cp "$init" init
chmod 755 init
echo "$kver" > etc/netplane-kernel
# The kernel opens /dev/console for /init before /init can mount devtmpfs;
# without the node (unprivileged builds) /init reopens it itself.
if [ "$(id -u)" = 0 ]; then
    mknod -m 600 dev/console c 5 1
fi

echo "guest: compiling nptraffic"
"$CC" -O2 -Wall -static -o bin/nptraffic "$src" ||
    die "cannot build static nptraffic (needs glibc's static libraries, libc6-dev)"
"$CC" -O2 -Wall -o "$tmp/nptraffic-host" "$src" ||
    die "cannot build nptraffic-host"

find . -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet |
    gzip -9n > "$tmp/initramfs.cpio.gz"
cd /

cp "$kc/vmlinuz" "$tmp/vmlinuz"
rm -f "$out/vmlinux"
[ ! -f "$kc/vmlinux" ] || cp "$kc/vmlinux" "$tmp/vmlinux"
{
    echo "kernel_pkg=$pkg"
    echo "kernel_version=$ver"
    echo "deb=$debname"
    echo "kver=$kver"
    echo "modules=$names"
    echo "builtin=$builtin"
    echo "pvh_vmlinux=$([ -f "$tmp/vmlinux" ] && echo 1 || echo 0)"
} > "$tmp/guest.info"
for o in nptraffic-host vmlinux vmlinuz initramfs.cpio.gz guest.info; do
    [ ! -f "$tmp/$o" ] || mv -f "$tmp/$o" "$out/$o"
done
echo "guest: $out: kernel $kver, modules ${names:-none}${builtin:+ (built in: $builtin)}"
