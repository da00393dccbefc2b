# SPDX-License-Identifier: GPL-2.0-or-later
#
# Sourced by configure and the Makefile helpers: which QEMU netplane is
# built on, how to obtain it, and how to run its configure.

QEMU_VERSION=10.2.2
QEMU_DEBIAN_VERSION=1:10.2.2+ds-1

# Default QEMU configure arguments: one target and only what netplane and
# its tests need, so that a cold build stays fast.  qemu_configure adds
# ccache when it is installed.
QEMU_DEFAULT_ARGS="'--target-list=x86_64-softmmu' '--disable-docs' \
'--disable-guest-agent' '--disable-tools' '--disable-slirp' \
'--disable-download' '--disable-install-blobs' '--disable-werror'"

# Tarballs netplane accepts, by sha256.  Debian's repacked release comes
# with its own checksums (its .dsc); upstream's is the release tarball.
UPSTREAM_TARBALLS="
be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb qemu_10.2.2+ds.orig.tar.xz
784b296ff29c1417aa72323abcb2d2ea9ab9771724f577dcd785c3b04f21e176 qemu-10.2.2.tar.xz
"
UPSTREAM_URL=https://download.qemu.org/qemu-$QEMU_VERSION.tar.xz

NETPLANE_CACHE=${NETPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netplane}

# debian_mirror: print the URI of the machine's Debian mirror for bookworm.
debian_mirror() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
             /Suites:[^\n]*bookworm([ \n]|$)/ {
                 for (i = 1; i <= NF; i++) {
                     if ($i ~ /^URIs:/) {
                         sub(/^URIs:[ \t]*/, "", $i)
                         split($i, u, " ")
                         print u[1]
                         exit
                     }
                 }
             }' "$f"
    done
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" && / bookworm( |$)/ {
                 for (i = 2; i <= NF; i++) {
                     if ($i ~ /:\/\//) { print $i; exit }
                 }
             }'
}

# upstream_verify FILE: succeed if FILE is a tarball netplane knows.
upstream_verify() {
    [ -f "$1" ] || return 1
    sum=$(sha256sum "$1" | cut -d' ' -f1)
    printf '%s\n' "$UPSTREAM_TARBALLS" | grep -q "^$sum "
}

# upstream_cache FILE: copy a verified FILE into the cache, print its path.
upstream_cache() {
    mkdir -p "$NETPLANE_CACHE"
    dst=$NETPLANE_CACHE/$(basename "$1")
    if [ "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")" != "$dst" ]; then
        cp "$1" "$dst.tmp" && mv "$dst.tmp" "$dst"
    fi
    echo "$dst"
}

# upstream_from_debian DIR: download Debian's source package into DIR.
upstream_from_debian() {
    [ "$(id -u)" = 0 ] || return 1
    command -v apt-get >/dev/null 2>&1 || return 1
    list=/etc/apt/sources.list.d/netplane-src.sources
    if [ ! -f "$list" ]; then
        uri=$(debian_mirror | head -n 1)
        [ -n "$uri" ] || return 1
        printf 'Types: deb-src\nURIs: %s\nSuites: unstable\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$uri" > "$list"
    fi
    timeout 300 apt-get update -q >&2 || return 1
    (cd "$1" && timeout 600 apt-get source -q --download-only \
        "qemu=$QEMU_DEBIAN_VERSION") >&2
}

# upstream_obtain [FILE]: print the path of a verified QEMU tarball.
upstream_obtain() {
    if [ -n "$1" ]; then
        [ -f "$1" ] || { echo "configure: error: --qemu-tarball=$1: no such file" >&2; return 1; }
        if ! upstream_verify "$1"; then
            echo "configure: error: --qemu-tarball=$1: sha256 does not match QEMU $QEMU_VERSION" >&2
            echo "  (accepted: $(printf '%s' "$UPSTREAM_TARBALLS" | awk 'NF { printf "%s ", $2 }'))" >&2
            return 1
        fi
        upstream_cache "$1"
        return 0
    fi

    for f in $(printf '%s\n' "$UPSTREAM_TARBALLS" | awk 'NF { print $2 }'); do
        if upstream_verify "$NETPLANE_CACHE/$f"; then
            echo "$NETPLANE_CACHE/$f"
            return 0
        fi
    done

    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "configure: fetching QEMU $QEMU_VERSION (Debian source package $QEMU_DEBIAN_VERSION)" >&2
    if upstream_from_debian "$tmp" &&
       upstream_verify "$tmp/qemu_$QEMU_VERSION+ds.orig.tar.xz"; then
        upstream_cache "$tmp/qemu_$QEMU_VERSION+ds.orig.tar.xz"
        return 0
    fi
    echo "configure: fetching $UPSTREAM_URL" >&2
    if command -v curl >/dev/null 2>&1 &&
       curl -fsSL --connect-timeout 10 --max-time 900 -o "$tmp/qemu-$QEMU_VERSION.tar.xz" "$UPSTREAM_URL" &&
       upstream_verify "$tmp/qemu-$QEMU_VERSION.tar.xz"; then
        upstream_cache "$tmp/qemu-$QEMU_VERSION.tar.xz"
        return 0
    fi
    mirror=${NETPLANE_UPSTREAM_MIRROR:-$srcdir/../shared/upstream}
    for f in $(printf '%s\n' "$UPSTREAM_TARBALLS" | awk 'NF { print $2 }'); do
        if upstream_verify "$mirror/$f"; then
            echo "configure: using the local copy $mirror/$f" >&2
            upstream_cache "$mirror/$f"
            return 0
        fi
    done

    cat >&2 <<EOM
configure: error: could not obtain QEMU $QEMU_VERSION.  Tried:
  - the cache $NETPLANE_CACHE
  - Debian's source package qemu=$QEMU_DEBIAN_VERSION (apt-get source, as root)
  - $UPSTREAM_URL
  - a local copy in $mirror (set NETPLANE_UPSTREAM_MIRROR)
Pass one of:
  --qemu-tarball=FILE  qemu_$QEMU_VERSION+ds.orig.tar.xz or qemu-$QEMU_VERSION.tar.xz
  --qemu-src=DIR       an unpacked QEMU $QEMU_VERSION tree
EOM
    return 1
}

# qemu_configure SRC BUILDDIR ARGS: run QEMU's configure unless BUILDDIR
# is already configured with ARGS.  A failed configure leaves no build dir.
qemu_configure() {
    # (A clang build has no option ROMs: it borrows the gcc build's.)
    if [ -f "$2/build.ninja" ] && [ -f "$2/netplane.args" ] &&
       { [ -f "$2/pc-bios/optionrom/config.mak" ] ||
         case "$3" in *"'--cc="*) true ;; *) false ;; esac; } &&
       [ "$(cat "$2/netplane.args")" = "$3" ]; then
        return 0
    fi
    rm -rf "$2"
    mkdir -p "$2"
    cc=
    case "$3" in
    *"'--cc="*) ;;
    *) command -v ccache >/dev/null 2>&1 && cc="'--cc=ccache cc'" ;;
    esac
    if ! (cd "$2" && eval "\"$1/configure\" --python=/usr/bin/python3 $cc $3"); then
        rm -rf "$2"
        return 1
    fi
    printf '%s\n' "$3" > "$2/netplane.args"
}
