#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# firmware.sh BUILDDIR: build the x86 option ROMs (linuxboot_dma.bin,
# kvmvapic.bin, ...: -kernel needs them) and make them and Debian's seabios
# and ipxe-qemu firmware visible to a QEMU build tree.  Debian's +ds tarball
# ships no prebuilt firmware; a build tree looks for data files in
# qemu-bundle/<datadir>.

set -eu
b=$1
datadir=$(sed -n 's/^#define CONFIG_QEMU_DATADIR "\(.*\)"$/\1/p' "$b/config-host.h")
[ -n "$datadir" ] || { echo "firmware.sh: no CONFIG_QEMU_DATADIR in $b/config-host.h" >&2; exit 1; }
dst=$b/qemu-bundle$datadir
mkdir -p "$dst"
if [ ! -f "$b/pc-bios/optionrom/config.mak" ]; then
    echo "firmware.sh: QEMU's configure found no compiler for the x86 option ROMs:" >&2
    echo "  install gcc-multilib (make deps) and run ./configure again" >&2
    exit 1
fi
if ! make -s -C "$b/pc-bios/optionrom" > "$b/optionrom.log" 2>&1; then
    cat "$b/optionrom.log" >&2
    exit 1
fi
for f in /usr/share/seabios/*.bin /usr/lib/ipxe/qemu/*.rom "$b"/pc-bios/optionrom/*.bin; do
    [ -e "$f" ] || continue
    [ -e "$dst/$(basename "$f")" ] || ln -s "$f" "$dst/$(basename "$f")"
done
[ -e "$dst/bios-256k.bin" ] || {
    echo "firmware.sh: no bios-256k.bin: install Debian's seabios (make deps)" >&2
    exit 1
}
