#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Fuzz netplane's QEMU with libFuzzer (make fuzz, make check-fuzz).
#
#   fuzz.sh run FUZZER BUILD SECS   fuzz for SECS seconds, shared by the targets
#   fuzz.sh replay FUZZER BUILD     run every input of netplane/fuzz/ once
#
# FUZZER is qemu-fuzz-x86_64 of a --enable-fuzzing build (ASan, UBSan).
# Targets:
#
#   dataplane   upstream's generic-fuzz on a virtio-net-pci device with two
#               queue pairs in two IOThreads (iothread-vq-mapping) over a
#               two-queue tap: the fuzzer drives PCI config space, the
#               legacy and modern BARs, MSI-X and guest memory (rings and
#               buffers).  The tap lives in a network namespace of its own,
#               where a tc mirred action sends every frame the guest
#               transmits straight back, so receive sees guest-made frames.
#   af-packet   the same device over a two-queue -netdev af-packet on one
#               leg of a veth pair whose other leg sends every frame back
#               (tc mirred), so the backend's ring, fanout and write paths
#               run in the IOThreads too.
#   main-loop   generic-fuzz on virtio-net-pci without an IOThread over
#               the looped tap: the main-loop path with netplane's hooks.
#               (Upstream's virtio-net-socket-check-used target never
#               reads the socket pair it gives QEMU, so once that fills,
#               every transmit waits and its 30 s check fires; and its
#               generic-fuzz-virtio-net-pci-slirp config needs slirp,
#               which Debian's build lacks.  This is the same device.)
#
# Inputs that find new coverage go to BUILD/fuzz-corpus/TARGET (start from
# netplane/fuzz/TARGET), crashes, hangs and sanitizer reports to
# BUILD/fuzz-crashes/.  A hang (one input running longer than 30 s) is a
# failure: a guest must not be able to stall QEMU.

set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cmd=$1
fuzzer=$2
build=$3
secs=${4:-0}

targets="dataplane af-packet main-loop"

export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:symbolize=1
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1

# Run "$@" in a new network namespace (gone when it exits) with the looped
# tap fz0 and the veth pair fa0 (for af-packet) / fb0 (sends back).
in_netns() {
    unshare -n /bin/sh -euc '
        ip link set lo up
        ip tuntap add dev fz0 mode tap multi_queue
        ip link add fa0 type veth peer name fb0
        for dev in fz0 fb0; do
            ip link set $dev up
            tc qdisc add dev $dev ingress
            tc filter add dev $dev parent ffff: protocol all \
                u32 match u32 0 0 action mirred egress redirect dev $dev
        done
        ip link set fa0 up
        exec "$@"' sh "$@"
}

# The device of the IOThread targets, over netdev n0 (every target offers
# notification coalescing, so that its control commands and timers are
# fuzzed too)
DP_DEVICE="-object iothread,id=io0 -object iothread,id=io1 \
    -device '{\"driver\":\"virtio-net-pci\",\"netdev\":\"n0\",\"mq\":true,\"vectors\":6,\"notf_coal\":true,\"vq_notf_coal\":true,\"iothread-vq-mapping\":[{\"iothread\":\"io0\"},{\"iothread\":\"io1\"}]}'"

# The libFuzzer command line of target $1, with more arguments after it.
fuzz_target() {
    local t=$1 args
    shift
    case "$t" in
    dataplane)
        args="$DP_DEVICE \
            -netdev tap,id=n0,ifname=fz0,script=no,downscript=no,vhost=off,queues=2" ;;
    af-packet)
        args="$DP_DEVICE \
            -netdev af-packet,id=n0,ifname=fa0,queues=2,vnet-hdr=on,rx-ring-size=1M,spoofchk=off,trust=on" ;;
    main-loop)
        args="-netdev tap,id=n0,ifname=fz0,script=no,downscript=no,vhost=off,queues=2 \
            -device virtio-net-pci,netdev=n0,mq=on,vectors=6,notf_coal=on,vq_notf_coal=on" ;;
    *)
        echo "fuzz.sh: unknown target '$t'" >&2
        exit 2 ;;
    esac
    export QEMU_FUZZ_OBJECTS='virtio*'
    export QEMU_FUZZ_ARGS="-M pc -nodefaults $args"
    in_netns "$fuzzer" --fuzz-target=generic-fuzz "$@"
}

case "$cmd" in
run)
    mkdir -p "$build/fuzz-crashes"
    set -- $targets
    secs=$((secs / $#))
    for t in $targets; do
        mkdir -p "$build/fuzz-corpus/$t" "$root/netplane/fuzz/$t"
        # Crash files of earlier runs stay as evidence: count the new ones
        before=$(find "$build/fuzz-crashes" -name "$t-*" | wc -l)
        echo "== fuzz $t for ${secs}s"
        fuzz_target "$t" "$build/fuzz-corpus/$t" "$root/netplane/fuzz/$t" \
            -max_total_time="$secs" -timeout=30 -rss_limit_mb=4096 \
            -artifact_prefix="$build/fuzz-crashes/$t-" -print_final_stats=1 \
            2>&1 | tee "$build/fuzz-$t.log" | grep -E '^(#[0-9]+.*(pulse|DONE)|==|SUMMARY|stat::)' || true
        if [ "$(find "$build/fuzz-crashes" -name "$t-*" | wc -l)" -gt "$before" ]; then
            echo "fuzz.sh: $t: crashes in $build/fuzz-crashes (log $build/fuzz-$t.log)"
            exit 1
        fi
        # Keep in the repository only inputs that add coverage to it.
        fuzz_target "$t" -merge=1 "$root/netplane/fuzz/$t" \
            "$build/fuzz-corpus/$t" > "$build/fuzz-merge-$t.log" 2>&1
        echo "fuzz.sh: $t: netplane/fuzz/$t holds" \
            "$(find "$root/netplane/fuzz/$t" -type f | wc -l) inputs"
    done
    ;;
replay)
    pass=0
    fail=0
    for t in $targets; do
        n=$(find "$root/netplane/fuzz/$t" -type f | wc -l)
        if fuzz_target "$t" "$root/netplane/fuzz/$t" -runs=0 -timeout=30 \
               -rss_limit_mb=4096 > "$build/fuzz-replay-$t.log" 2>&1; then
            echo "ok   fuzz corpus $t ($n inputs)"
            pass=$((pass + 1))
        else
            tail -40 "$build/fuzz-replay-$t.log"
            echo "FAIL fuzz corpus $t ($n inputs, log $build/fuzz-replay-$t.log)"
            fail=$((fail + 1))
        fi
    done
    echo "check-fuzz: $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    ;;
*)
    echo "usage: fuzz.sh run FUZZER BUILD SECS | replay FUZZER BUILD" >&2
    exit 2
    ;;
esac
