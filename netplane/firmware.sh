#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# firmware.sh BUILDDIR: make Debian's seabios and ipxe-qemu firmware visible
# to a QEMU build tree.  Debian's +ds tarball ships no prebuilt firmware; a
# build tree looks for data files in qemu-bundle/<datadir>.

set -eu
b=$1
datadir=$(sed -n 's/^#define CONFIG_QEMU_DATADIR "\(.*\)"$/\1/p' "$b/config-host.h")
[ -n "$datadir" ] || { echo "firmware.sh: no CONFIG_QEMU_DATADIR in $b/config-host.h" >&2; exit 1; }
dst=$b/qemu-bundle$datadir
mkdir -p "$dst"
for f in /usr/share/seabios/*.bin /usr/lib/ipxe/qemu/*.rom; do
    [ -e "$f" ] || continue
    [ -e "$dst/$(basename "$f")" ] || ln -s "$f" "$dst/$(basename "$f")"
done
[ -e "$dst/bios-256k.bin" ] || {
    echo "firmware.sh: no bios-256k.bin: install Debian's seabios (make deps)" >&2
    exit 1
}
