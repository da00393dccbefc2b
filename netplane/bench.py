#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
netplane's benchmark (make bench): upstream QEMU and netplane side by side
in one run.

Every variant boots the tiny guest under TCG with a virtio-net-pci NIC on
tap in a private namespace (or on af-packet on a veth leg), with or without
an IOThread, and the guest runs the same nptraffic tests against a peer in
that namespace: UDP floods both ways, the same at a fixed 20,000 pkt/s,
request/response and a burst.  Variants alternate within each repetition
(and the order rotates between repetitions) so that the noise of this
machine falls on all of them alike; each number is the median over the
repetitions, throughput and latency with their spread (min..max).

Per test and variant: packets/s (delivered), loss, guest interrupts per
packet by queue (the guest's /proc/interrupts) and guest kicks per packet
by queue (virtio_net's ethtool counters in the guest), QEMU CPU time per
packet by thread class (main loop, IOThreads, both, vCPUs), the main
loop's busy %, each class's run-queue wait (schedstat: time runnable but
not running, which is CPU congestion on a 2-core machine), the thread that
limits the number (the busiest thread, from schedstat), the host's drop
counters (tap, UDP socket buffers, af-packet), and for request/response
transactions/s and latency.  With an IOThread, QEMU's own virtio-net
dataplane counters (query-stats provider virtio-net) as well.
"""

import argparse
import json
import os
import re
import statistics
import sys
import time

import harness

CLASSES = ('main', 'vcpu', 'iothread', 'other')
IOTHREAD = ('-object', 'iothread,id=io0')
# The fixed "moderate" rate of the paced UDP tests
RATE = 20000
# A thread this busy (% of one CPU) is what limits a number
SATURATED = 85
# Fewer packets in a direction than this: its dataplane ratios are noise
DEV_MIN_PACKETS = 1000
# Fewer guest interrupts than this: no main-loop time per interrupt
MIN_IRQS = 1000
# The guest's ethtool -C of the coalescing variants: rx/tx-frames and
# rx/tx-usecs (issue 12's setting is 32 and 200)
COAL_SETTINGS = ((8, 50), (32, 200), (128, 1000))


def coal_variants(np_):
    """netplane ethtool -C F Uus, without and with an IOThread"""
    out = []
    for frames, usecs in COAL_SETTINGS:
        words = 'np.coal=' + ':'.join('%s:%d' % kv for kv in (
            ('rx-usecs', usecs), ('rx-frames', frames),
            ('tx-usecs', usecs), ('tx-frames', frames)))
        for io, dev, args in (('', '', ()),
                              (' iothread', 'iothread=io0,', IOTHREAD)):
            out.append(('netplane%s ethtool -C %d %dus' % (io, frames, usecs),
                        np_, 'virtio-net-pci,%snotf_coal=on' % dev, 'tap',
                        '', args, words))
    return out


def variants(build):
    up = os.path.join(build, 'upstream', 'qemu', 'qemu-system-x86_64')
    np_ = os.path.join(build, 'qemu', 'qemu-system-x86_64')
    return [
        # name, binary, device, backend, backend options, QEMU arguments
        # [, the guest's kernel command line words]
        ('upstream tx=bh', up, 'virtio-net-pci', 'tap', '', ()),
        ('upstream tx=timer', up, 'virtio-net-pci,tx=timer', 'tap', '', ()),
        # netplane without an IOThread: its hooks cost nothing (= tx=bh)
        ('netplane', np_, 'virtio-net-pci', 'tap', '', ()),
        ('netplane iothread', np_, 'virtio-net-pci,iothread=io0', 'tap', '',
         IOTHREAD),
        # No IOThread polling: every TX round starts from a kick
        ('netplane iothread no polling', np_, 'virtio-net-pci,iothread=io0',
         'tap', '', ('-object', 'iothread,id=io0,poll-max-ns=0')),
        # Longer IOThread polling: the guest need not kick while it lasts
        ('netplane iothread poll 200us', np_, 'virtio-net-pci,iothread=io0',
         'tap', '', ('-object', 'iothread,id=io0,poll-max-ns=200000')),
        ('netplane af-packet', np_, 'virtio-net-pci', 'af-packet', '', ()),
        ('netplane af-packet iothread', np_, 'virtio-net-pci,iothread=io0',
         'af-packet', '', IOTHREAD),
        # A TX round's frames with one sendmmsg() (by default, each frame
        # with a system call of its own)
        ('af-packet iothread tx-batch=64', np_,
         'virtio-net-pci,iothread=io0', 'af-packet', ',tx-batch=64',
         IOTHREAD),
        # A ring of blocks, each handed over when full or after its 1 ms
        # timer (the default is a ring of frames, each handed over at once)
        ('af-packet v3 iothread', np_, 'virtio-net-pci,iothread=io0',
         'af-packet', ',tpacket-version=3', IOTHREAD),
        # A plain packet socket's receive buffer instead of the ring
        # (net.core.rmem_default): what the ring is measured against.
        ('af-packet no ring', np_, 'virtio-net-pci', 'af-packet',
         ',rx-ring-size=0', ()),
        # Without adaptive interrupt moderation: each TX round and RX
        # batch notifies at its end
        ('netplane iothread adaptive-coal=off', np_,
         'virtio-net-pci,iothread=io0,adaptive-coal=off', 'tap', '',
         IOTHREAD),
        # A guest with one vCPU: the IOThread and the vCPU do not fight
        # a second vCPU for the host's CPUs
        ('upstream tx=bh 1 vCPU', up, 'virtio-net-pci', 'tap', '',
         ('-smp', '1')),
        ('upstream tx=timer 1 vCPU', up, 'virtio-net-pci,tx=timer', 'tap',
         '', ('-smp', '1')),
        ('netplane iothread 1 vCPU', np_, 'virtio-net-pci,iothread=io0',
         'tap', '', IOTHREAD + ('-smp', '1')),
        ('netplane iothread adaptive-coal=off 1 vCPU', np_,
         'virtio-net-pci,iothread=io0,adaptive-coal=off', 'tap', '',
         IOTHREAD + ('-smp', '1')),
        # Notification coalescing offered; the guest keeps its defaults
        # (none), or sets COAL_SETTINGS as ethtool -C would
        ('netplane notf_coal', np_, 'virtio-net-pci,notf_coal=on', 'tap',
         '', ()),
        ('netplane iothread notf_coal', np_,
         'virtio-net-pci,iothread=io0,notf_coal=on', 'tap', '', IOTHREAD),
        # TX interrupts held 1 ms (the guest's RX NAPI cleans TX, so a
        # reply that comes first makes the TX interrupt unwanted): what the
        # TX completion interrupt costs request/response
        ('netplane iothread ethtool -C tx 64 1000us', np_,
         'virtio-net-pci,iothread=io0,notf_coal=on', 'tap', '', IOTHREAD,
         'np.coal=tx-usecs:1000:tx-frames:64'),
    ] + coal_variants(np_)


# What make bench runs without --only: upstream's two TX modes, and
# netplane's data paths with their defaults and main alternatives
MAIN_VARIANTS = ['upstream tx=bh', 'upstream tx=timer', 'netplane',
                 'netplane iothread', 'netplane iothread no polling',
                 'netplane af-packet', 'netplane af-packet iothread',
                 'af-packet v3 iothread', 'af-packet no ring']


def test_key(kind, size, rate=0):
    """'udp-tx:64', or 'udp-tx:64@20000' for a paced test."""
    key = '%s:%s' % (kind, size)
    return '%s@%d' % (key, int(rate)) if rate and int(rate) else key


def spec_key(spec):
    """The test_key() of an nptraffic test spec."""
    p = spec.split(':')
    if p[0] in ('tcp-tx', 'tcp-rx'):
        return test_key(p[0], 0)
    rate = p[3] if p[0] in ('udp-tx', 'udp-rx') and len(p) > 3 else 0
    return test_key(p[0], p[1], rate)


def test_title(key):
    if '@' in key:
        return '%s at %s pkt/s (paced)' % tuple(key.split('@'))
    return key


def result_key(res):
    return test_key(res['test'], res.get('size', ''), res.get('rate', 0))


def metrics(res):
    """The numbers of one NPRESULT (with its phase counters)."""
    m = {}
    test = res['test']
    if test == 'rr':
        n = int(res.get('trans', 0))
        m['tps'] = float(res.get('tps', 0))
        m['p50_us'] = float(res.get('p50_us', 0))
        m['p99_us'] = float(res.get('p99_us', 0))
        m['lost'] = float(res.get('lost', 0))
    elif test.startswith('tcp'):
        # a stream counts no packets: per 1448-byte segment (MSS at MTU
        # 1500 with timestamps) of what arrived
        m['mbps'] = float(res.get('mbps', 0))
        n = int(m['mbps'] * 1e6 / 8 * res.get('_wall', 0) / 1448)
    else:
        n = int(res.get('recv', 0))
        m['pps'] = float(res.get('pps', 0))
        m['mbps'] = float(res.get('mbps', 0))
        m['lost'] = float(res.get('lost', 0))
        sent = max(1, int(res.get('sent', 0)))
        m['loss_pct'] = 100.0 * float(res.get('lost', 0)) / sent
    if 'irq_per_pkt' in res:
        m['irq_per_pkt'] = float(res['irq_per_pkt'])
        for q in ('rx', 'tx'):
            m['irq_%s_per_pkt' % q] = \
                float(res.get('irq_' + q, 0)) / max(1, n)
    # Guest kicks (virtio_net's ethtool counters) per packet of the test:
    # for udp-tx per packet the guest sent, as the device saw them all.
    if 'kicks_tx' in res:
        nk = int(res.get('sent', n)) if test == 'udp-tx' else n
        for q in ('tx', 'rx'):
            m['kicks_%s_per_pkt' % q] = \
                float(res['kicks_' + q]) / max(1, nk)
    # QEMU's dataplane counters, each direction per its own packets
    dev = res.get('_device', {})
    for q in ('tx', 'rx') if dev else ():
        pk = max(1, dev.get(q + '-packets', 0))
        m['dev_%s_packets' % q] = dev.get(q + '-packets', 0)
        m['dev_%s_kicks_per_pkt' % q] = dev.get(q + '-kicks', 0) / pk
        # share of TX rounds that IOThread polling started (no kick)
        if q + '-polled' in dev:
            m['dev_%s_polled_pct' % q] = 100.0 * dev[q + '-polled'] / max(
                1, dev[q + '-polled'] + dev.get(q + '-kicks', 0))
        # a held interrupt that the coalescing timer sent counts only in
        # *-coal-interrupts-usecs (docs/system/devices/virtio/virtio-net.rst)
        m['dev_%s_irq_per_pkt' % q] = (
            dev.get(q + '-interrupts', 0) +
            dev.get(q + '-coal-interrupts-usecs', 0)) / pk
        m['dev_%s_pkts_per_batch' % q] = \
            dev.get(q + '-packets', 0) / max(1, dev.get(q + '-batches', 0))
        # what woke the IOThread for the queue: kicks, the TX stream
        # timer, bottom halves (polling is not a wake-up)
        if q + '-bh-runs' in dev:
            m['dev_%s_wakeups_per_pkt' % q] = (
                dev.get(q + '-kicks', 0) + dev.get(q + '-waited', 0) +
                dev[q + '-bh-runs']) / pk
        for c in ('dropped', 'budget-exhausted', 'backend-busy',
                  'no-buffers', 'interrupts-suppressed'):
            if q + '-' + c in dev:
                m['dev_%s_%s' % (q, c)] = dev[q + '-' + c]
    if '_threads' not in res:
        # QEMU was gone when the phase ended: the guest's numbers only
        return m
    threads = res['_threads']
    wall = max(res.get('_wall', 0), 1e-9)
    for cls in CLASSES:
        run_ns, wait_ns = threads.get(cls, [0, 0])
        m['cpu_us_per_pkt_' + cls] = run_ns / 1e3 / max(1, n)
        m['cpu_pct_' + cls] = 100.0 * run_ns / 1e9 / wall
        m['rqwait_pct_' + cls] = 100.0 * wait_ns / 1e9 / wall
    # outside the vCPUs: what the dataplane moves out of the main loop
    m['cpu_us_per_pkt_mainio'] = (m['cpu_us_per_pkt_main'] +
                                  m['cpu_us_per_pkt_iothread'])
    # main-loop time per guest interrupt: without irqfd (TCG) every
    # interrupt an IOThread raises is injected by the main loop
    irqs = int(res.get('irq_rx', 0)) + int(res.get('irq_tx', 0))
    if irqs >= MIN_IRQS:
        m['main_us_per_irq'] = threads.get('main', [0, 0])[0] / 1e3 / irqs
    if '_host_busy' in res:
        m['host_busy_pct'] = 100.0 * max(0.0, res['_host_busy'])
    # per thread (QEMU's, the traffic peer, ksoftirqd/N): which one limits
    for label, (run_ns, wait_ns) in res.get('_busy', {}).items():
        m['busy_pct:' + label] = 100.0 * run_ns / 1e9 / wall
        m['wait_pct:' + label] = 100.0 * wait_ns / 1e9 / wall
    for k, v in res.get('_tap', {}).items():
        if k.endswith('dropped'):
            m['tap_' + k] = v
    for k, v in res.get('_udp', {}).items():
        m[k] = v
    be = res.get('_backend', {})
    for k in ('rx-dropped', 'rx-ring-full', 'rx-oversize', 'rx-truncated',
              'tx-errors'):
        if k in be:
            m['ap_' + k] = be[k]
    # af-packet: frames per system call that sent them (tx-batch)
    if be.get('tx-calls'):
        m['backend_tx_pkts_per_call'] = be.get('tx-packets', 0) / \
            be['tx-calls']
    if '_softnet' in res:
        m['softnet_dropped'] = res['_softnet']
    for k in ('udp_rcvbuf_errors', 'udp_in_errors'):
        if k in res:
            m['guest_' + k] = float(res[k])
    if test == 'udp-burst':
        m['delivered'] = n
        m['guest_lost'] = float(res.get('lost', 0))
    return m


def summarize(samples):
    """{metric: (median, min, max)} over a list of metric dicts."""
    out = {}
    keys = sorted({k for s in samples for k in s})
    for k in keys:
        vals = [s[k] for s in samples if k in s]
        out[k] = (statistics.median(vals), min(vals), max(vals))
    return out


def fmt(v, digits=0):
    med, lo, hi = v
    if digits == 0:
        return '%d (%d..%d)' % (round(med), round(lo), round(hi))
    return '%.*f (%.*f..%.*f)' % (digits, med, digits, lo, digits, hi)


def med(s, key, digits=0):
    """The median of @key in summary @s, or '-'."""
    return '%.*f' % (digits, s[key][0]) if key in s else '-'


def limit(s):
    """Which thread limits a test's numbers, from per-thread schedstat
    over the traffic phase: the busiest thread if it runs SATURATED % of a
    CPU; else the thread that was runnable (running or waiting for a CPU)
    the longest if that is SATURATED %, which means the host's CPUs limit
    (it would run if it could); else nothing is saturated (a paced test, or
    latency-bound).  The host's overall CPU use follows."""
    busy = {k.split(':', 1)[1]: v[0] for k, v in s.items()
            if k.startswith('busy_pct:')}
    if not busy:
        return '-'
    wait = {k: s.get('wait_pct:' + k, (0, 0, 0))[0] for k in busy}
    top = max(busy, key=busy.get)
    ready = max(busy, key=lambda k: busy[k] + wait[k])
    if busy[top] >= SATURATED:
        text = '%s %.0f%%' % (top, busy[top])
    elif busy[ready] + wait[ready] >= SATURATED:
        text = 'host CPUs: %s %.0f%%+%.0f%% wait' % (ready, busy[ready],
                                                    wait[ready])
    else:
        text = 'none (%s %.0f%%)' % (top, busy[top])
    if 'host_busy_pct' in s:
        text += ', host %.0f%%' % s['host_busy_pct'][0]
    return text


def summary_table(summary, names, tests):
    """The requirement's numbers in one compact table."""
    tx, rx, rr = 'udp-tx:64', 'udp-rx:64', 'rr:64'
    txr, rxr = test_key('udp-tx', 64, RATE), test_key('udp-rx', 64, RATE)
    cols = []
    if tx in tests:
        cols.append(('TX 64 pkt/s', lambda s: fmt_pair(s.get(tx), 'pps')))
    if rx in tests:
        cols.append(('RX 64 pkt/s', lambda s: fmt_pair(s.get(rx), 'pps')))
    if rr in tests:
        cols.append(('rr trans/s, p50/p99 µs', lambda s: '%s, %s/%s' % (
            med(s.get(rr, {}), 'tps'), med(s.get(rr, {}), 'p50_us'),
            med(s.get(rr, {}), 'p99_us'))))
    pairs = [k for k in (tx, rx) if k in tests]
    if pairs:
        which = '/'.join(k.split(':')[0][-2:].upper() for k in pairs)
        cols += [
            ('vCPU µs/pkt ' + which, lambda s: '/'.join(
                med(s.get(k, {}), 'cpu_us_per_pkt_vcpu', 1)
                for k in pairs)),
            ('main+IO µs/pkt ' + which, lambda s: '/'.join(
                med(s.get(k, {}), 'cpu_us_per_pkt_mainio', 1)
                for k in pairs)),
            ('main busy % ' + which, lambda s: '/'.join(
                med(s.get(k, {}), 'cpu_pct_main') for k in pairs)),
            ('irq/pkt ' + which, lambda s: '/'.join(
                med(s.get(k, {}), 'irq_per_pkt', 3) for k in pairs))]
    kk = [k for k in (tx, txr) if k in tests]
    if kk:
        cols.append(('TX kicks/pkt ' + ', '.join(
            'max' if k == tx else '%dk/s' % (RATE // 1000) for k in kk),
            lambda s, kk=kk: ', '.join(
                med(s.get(k, {}), 'kicks_tx_per_pkt', 3) for k in kk)))
    kk = [k for k in (txr, rxr) if k in tests]
    if kk:
        cols.append(('irq/pkt %dk/s %s' % (RATE // 1000, '/'.join(
            k.split(':')[0][-2:].upper() for k in kk)),
            lambda s, kk=kk: '/'.join(
                med(s.get(k, {}), 'irq_per_pkt', 3) for k in kk)))
    for k in pairs:
        cols.append(('limit ' + k.split(':')[0][-2:].upper(),
                     lambda s, k=k: limit(s.get(k, {}))))
    if not cols:
        return ''
    lines = ['', '**Summary** (medians; TX/RX: udp-tx/udp-rx, 64 bytes, '
             'unpaced unless a rate is given)', '',
             '| variant | ' + ' | '.join(c[0] for c in cols) + ' |',
             '|---' * (len(cols) + 1) + '|']
    for name in names:
        s = summary.get(name, {})
        lines.append('| %s | ' % name +
                     ' | '.join(f(s) for _, f in cols) + ' |')
    return '\n'.join(lines)


def fmt_pair(s, key):
    return fmt(s[key]) if s and key in s else '-'


def table(summary, names, tests):
    lines = []
    for test in tests:
        rr = test.startswith('rr')
        lines.append('')
        lines.append('**%s**' % test_title(test))
        lines.append('')
        if test.startswith('udp-burst'):
            cols = [('delivered', 'delivered', 0),
                    ('not delivered (end to end)', 'guest_lost', 0),
                    ('host link drops', 'tap_tx_dropped', 0),
                    ('host backlog drops', 'softnet_dropped', 0),
                    ('guest UDP buffer drops', 'guest_udp_rcvbuf_errors', 0),
                    ('af-packet rx-dropped', 'ap_rx-dropped', 0),
                    ('af-packet ring-full', 'ap_rx-ring-full', 0)]
            lines.append('| variant | ' + ' | '.join(c[0] for c in cols) +
                         ' |')
            lines.append('|---' * (len(cols) + 1) + '|')
            for name in names:
                s = summary.get(name, {}).get(test, {})
                lines.append('| %s | ' % name + ' | '.join(
                    fmt(s[key], digits) if key in s else '-'
                    for _, key, digits in cols) + ' |')
            continue
        # (title, metric or a function of the summary, digits, spread?)
        if rr:
            cols = [('trans/s', 'tps', 0, True), ('p50 µs', 'p50_us', 0, True),
                    ('p99 µs', 'p99_us', 0, True)]
        elif test.startswith('tcp'):
            cols = [('Mbit/s', 'mbps', 0, True)]
        else:
            cols = [('pkt/s', 'pps', 0, True),
                    ('loss %', 'loss_pct', 1, False)]
        cols += [('irq/pkt rx/tx', lambda s: '%s/%s' % (
                      med(s, 'irq_rx_per_pkt', 3),
                      med(s, 'irq_tx_per_pkt', 3)), 0, False),
                 ('kicks/pkt tx/rx', lambda s: '%s/%s' % (
                      med(s, 'kicks_tx_per_pkt', 3),
                      med(s, 'kicks_rx_per_pkt', 3)), 0, False),
                 ('main µs/pkt', 'cpu_us_per_pkt_main', 1, False),
                 ('IOThread µs/pkt', 'cpu_us_per_pkt_iothread', 1, False),
                 ('main+IO µs/pkt', 'cpu_us_per_pkt_mainio', 1, False),
                 ('vCPU µs/pkt', 'cpu_us_per_pkt_vcpu', 1, False),
                 ('main busy %', 'cpu_pct_main', 0, False),
                 ('limit', limit, 0, False),
                 ('rq-wait % main/vCPU/IO', lambda s: '/'.join(
                      med(s, 'rqwait_pct_' + c)
                      for c in ('main', 'vcpu', 'iothread')), 0, False),
                 ('drops link/udp/af-packet', drops, 0, False)]
        lines.append('| variant | ' + ' | '.join(c[0] for c in cols) + ' |')
        lines.append('|---' * (len(cols) + 1) + '|')
        for name in names:
            s = summary.get(name, {}).get(test)
            if not s:
                lines.append('| %s |' % name + ' n/a |' * len(cols))
                continue
            row = []
            for _, key, digits, spread in cols:
                if callable(key):
                    row.append(key(s))
                elif key in s:
                    row.append(fmt(s[key], digits) if spread
                               else med(s, key, digits))
                else:
                    row.append('-')
            lines.append('| %s | ' % name + ' | '.join(row) + ' |')
    return '\n'.join(lines)


def drops(s):
    tap = sum(v[0] for k, v in s.items() if k.startswith('tap_'))
    udp = s.get('udp_rcvbuf_errors', (0, 0, 0))[0]
    ap = sum(v[0] for k, v in s.items() if k.startswith('ap_'))
    return '%d/%d/%d' % (tap, udp, ap)


def device_table(summary, names, tests):
    """QEMU's virtio-net dataplane counters (IOThread variants only)."""
    cols = [('TX kicks/pkt', 'dev_tx_kicks_per_pkt', 3),
            ('TX polled %', 'dev_tx_polled_pct', 0),
            ('TX pkts/batch', 'dev_tx_pkts_per_batch', 1),
            ('TX wake-ups/pkt', 'dev_tx_wakeups_per_pkt', 3),
            ('TX irq/pkt', 'dev_tx_irq_per_pkt', 3),
            ('TX irqs suppressed', 'dev_tx_interrupts-suppressed', 0),
            ('TX budget exhausted', 'dev_tx_budget-exhausted', 0),
            ('TX backend busy', 'dev_tx_backend-busy', 0),
            ('TX pkts/call', 'backend_tx_pkts_per_call', 1),
            ('RX kicks/pkt', 'dev_rx_kicks_per_pkt', 3),
            ('RX pkts/batch', 'dev_rx_pkts_per_batch', 1),
            ('RX wake-ups/pkt', 'dev_rx_wakeups_per_pkt', 3),
            ('RX irq/pkt', 'dev_rx_irq_per_pkt', 3),
            ('RX no buffers', 'dev_rx_no-buffers', 0),
            ('RX dropped', 'dev_rx_dropped', 0)]
    rows = []
    for test in tests:
        for name in names:
            s = summary.get(name, {}).get(test, {})
            if 'dev_tx_kicks_per_pkt' not in s:
                continue
            # a direction with a few control packets only: no ratios
            few = [q for q in ('tx', 'rx')
                   if s.get('dev_%s_packets' % q, (0,))[0] < DEV_MIN_PACKETS]
            rows.append('| %s | %s | ' % (test, name) + ' | '.join(
                '-' if key[4:6] in few else med(s, key, digits)
                for _, key, digits in cols) +
                ' | %s |' % med(s, 'main_us_per_irq', 1))
    if not rows:
        return ''
    return '\n'.join(
        ['', "**QEMU's virtio-net dataplane counters** (query-stats provider "
         'virtio-net, medians; per packet of the same direction)', '',
         '| test | variant | ' + ' | '.join(c[0] for c in cols) +
         ' | main µs/irq |', '|---' * (len(cols) + 3) + '|'] + rows)


LEGEND = """
Columns: irq/pkt and kicks/pkt per packet of the test (per transaction
for rr, per 1448 bytes received for tcp; guest kicks for udp-tx per
packet sent), by virtio queue: guest
interrupts from /proc/interrupts, guest kicks from virtio_net's ethtool
counters (tx_queue_N_kicks: TX notifications; rx_queue_N_kicks: RX
buffers refilled and the device notified).  µs/pkt: QEMU CPU time per
packet by thread class, main+IO is everything outside the vCPUs.  limit:
the busiest thread over the traffic phase (QEMU's main, vcpuN, the
IOThread io0, the traffic peer on the host, ksoftirqd/N) by schedstat run
time, if it runs at least %d%% of a CPU; "host CPUs: T a%%+b%% wait":
no thread ran that much, but T was runnable that long (running a%%,
waiting for a CPU b%%), so the host's CPUs limit; "none (T a%%)": nothing
saturated (a paced test, or latency-bound); "host N%%": all of the host's
CPUs over the phase, other processes included.  Backend work (tap,
af-packet, veth) runs in the QEMU thread that calls it and counts there.
main µs/irq: main-loop CPU time per guest interrupt (without KVM's irqfd,
an interrupt raised in an IOThread is injected by the main loop).
""" % SATURATED


COLORS = {'upstream tx=bh': '#999999', 'upstream tx=timer': '#c4c4c4',
          'netplane': '#8fbfdf', 'netplane iothread': '#1f6aa5',
          'netplane iothread poll 200us': '#0b3d6b',
          'netplane iothread no polling': '#6f9fc8',
          'netplane af-packet': '#f2bb80',
          'netplane af-packet iothread': '#c96d12',
          'af-packet v3 iothread': '#8c3f0a',
          'af-packet no ring': '#4a9a4a',
          'netplane notf_coal': '#b39ddb',
          'netplane ethtool -C 32 200us': '#7e57c2',
          'netplane iothread notf_coal': '#9575cd',
          'netplane iothread ethtool -C 32 200us': '#4527a0',
          'netplane ethtool -C 8 50us': '#d1c4e9',
          'netplane iothread ethtool -C 8 50us': '#7986cb',
          'netplane ethtool -C 128 1000us': '#5e35b1',
          'netplane iothread ethtool -C 128 1000us': '#1a237e'}


PANEL_UNITS = {'pps': 'pkt/s delivered', 'tps': 'transactions/s',
               'delivered': 'frames delivered',
               'cpu_us_per_pkt_mainio': 'QEMU µs/pkt, main loop + IOThread',
               'kicks_tx_per_pkt': 'guest TX kicks/pkt'}


def pyplot():
    """matplotlib.pyplot without a display, or None (with a word)"""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('bench: no matplotlib, no plot', file=sys.stderr)
        return None
    return plt


def plot(summary, names, tests, path):
    plt = pyplot()
    if not plt:
        return
    panels = [(t, 'tps' if t.startswith('rr') else
               'delivered' if t.startswith('udp-burst') else 'pps')
              for t in tests]
    panels += [(t, 'cpu_us_per_pkt_mainio') for t in tests
               if t in ('udp-tx:64', 'udp-rx:64')]
    panels += [(t, 'kicks_tx_per_pkt') for t in tests if t == 'udp-tx:64']
    ncols = min(len(panels), 5)
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=(3.2 * ncols, 3.9 * nrows))
    axes = [ax for row in axes for ax in row]
    for ax in axes[len(panels):]:
        ax.axis('off')
    for ax, (test, key) in zip(axes, panels):
        meds, errs = [], [[], []]
        for name in names:
            v = summary.get(name, {}).get(test, {}).get(key, (0, 0, 0))
            meds.append(v[0])
            errs[0].append(v[0] - v[1])
            errs[1].append(v[2] - v[0])
        ax.bar(range(len(names)), meds, yerr=errs, capsize=3,
               color=[COLORS.get(n, '#777777') for n in names])
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha='right', fontsize=6.5)
        ax.set_title('%s\n%s' % (test_title(test), PANEL_UNITS.get(key, key)),
                     fontsize=8)
        ax.tick_params(axis='y', labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


COAL_RE = re.compile(r'^netplane( iothread)? (?:notf_coal|'
                     r'ethtool -C (\d+) (\d+)us)$')


def plot_coal(summary, names, path):
    """Packets per guest RX interrupt at RATE and rr's p99 against the
    guest's ethtool -C, without and with an IOThread; False if the run
    has too few coalescing variants."""
    rxr = test_key('udp-rx', 64, RATE)
    lines, settings = {}, set()
    for name in names:
        m = COAL_RE.match(name)
        if not m:
            continue
        setting = (int(m.group(2) or 0), int(m.group(3) or 0))
        settings.add(setting)
        s = summary.get(name, {})
        irq = s.get(rxr, {}).get('irq_per_pkt', (0,))[0]
        lines.setdefault('IOThread' if m.group(1) else 'main loop', {})[
            setting] = (1 / irq if irq else None,
                        s.get('rr:64', {}).get('p99_us', (None,))[0])
    if len(settings) < 3:
        return False
    plt = pyplot()
    if not plt:
        return False
    settings = sorted(settings, key=lambda fu: (fu[1], fu[0]))
    labels = ['off' if not f else '%d / %d µs' % (f, u) for f, u in settings]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.6))
    for i, (ax, title) in enumerate(zip(axes, (
            'host→guest UDP at %d pkt/s\npackets per guest RX interrupt'
            % RATE, 'rr 64 bytes\np99 latency, µs'))):
        for where, pts in sorted(lines.items()):
            xy = [(x, pts[fu][i]) for x, fu in enumerate(settings)
                  if fu in pts and pts[fu][i]]
            ax.plot([p[0] for p in xy], [p[1] for p in xy], marker='o',
                    label='netplane ' + where,
                    color='#4527a0' if where == 'IOThread' else '#b39ddb')
        up = summary.get('upstream tx=bh', {})
        ref = (up.get(rxr, {}).get('irq_per_pkt', (0,))[0],
               up.get('rr:64', {}).get('p99_us', (0,))[0])[i]
        if ref:
            ax.axhline(1 / ref if i == 0 else ref, color='#999999',
                       linestyle='--', label='upstream tx=bh')
        ax.set_xticks(range(len(settings)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_xlabel('guest ethtool -C rx/tx-frames / rx/tx-usecs',
                      fontsize=7)
        ax.set_title(title, fontsize=8)
        ax.tick_params(axis='y', labelsize=7)
        ax.legend(fontsize=6.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().split('\n')[0])
    ap.add_argument('--build', default=os.path.join(harness.ROOT, 'build'))
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--secs', type=int, default=5,
                    help='seconds of traffic per test')
    ap.add_argument('--only', help='comma-separated variant names, or '
                    '"all" (default: %s)' % ', '.join(MAIN_VARIANTS))
    ap.add_argument('--tests', help='comma-separated nptraffic tests '
                    '(default: the burst, UDP both ways at 64 and 1400 '
                    'bytes and at 64 bytes paced to %d pkt/s, rr)' % RATE)
    ap.add_argument('--out', help='output folder (default BUILD/bench)')
    ap.add_argument('--binary', action='append', default=[],
                    metavar='NAME=QEMU',
                    help='also run "VARIANT @NAME" with the QEMU binary '
                    'QEMU, for each --only variant of netplane (A/B '
                    'against another build; repeatable)')
    ap.add_argument('--render', metavar='JSON',
                    help='only render the table and plot of an earlier run')
    args = ap.parse_args()
    out = args.out or os.path.join(args.build, 'bench')
    if args.render:
        with open(args.render) as f:
            data = json.load(f)
        os.makedirs(out, exist_ok=True)
        report(out, data)
        return 0

    s = args.secs
    tests = (args.tests.split(',') if args.tests else
             # The burst first, on a quiet guest; the floods of udp-rx last,
             # so that no test's drops spill into the next one's counters.
             ['udp-burst:64:10000', 'udp-tx:64:%d' % s,
              'udp-tx:64:%d:%d' % (s, RATE), 'udp-tx:1400:%d' % s,
              'rr:64:%d' % s, 'udp-rx:64:%d:%d' % (s, RATE),
              'udp-rx:64:%d' % s, 'udp-rx:1400:%d' % s])
    vs = variants(args.build)
    if args.only != 'all':
        keep = args.only.split(',') if args.only else MAIN_VARIANTS
        unknown = set(keep) - {v[0] for v in vs}
        if unknown:
            ap.error('no variant %s; there are: %s'
                     % (', '.join(sorted(unknown)),
                        ', '.join(v[0] for v in vs)))
        vs = [v for v in vs if v[0] in keep]
    np_ = os.path.join(args.build, 'qemu', 'qemu-system-x86_64')
    for spec in args.binary:
        label, _, path = spec.partition('=')
        vs += [('%s @%s' % (v[0], label), os.path.abspath(path)) + v[2:]
               for v in list(vs) if v[1] == np_ and '@' not in v[0]]
    os.makedirs(out, exist_ok=True)
    guest = os.path.join(args.build, 'guest')

    raw = {v[0]: {} for v in vs}
    boots = {v[0]: [] for v in vs}
    failures = []
    started = time.time()
    for rep in range(args.reps):
        order = vs[rep % len(vs):] + vs[:rep % len(vs)]
        for name, qemu, device, backend, opts, qemu_args, *words in order:
            t0 = time.monotonic()
            logpath = os.path.join(out, 'console-%s-%d.log'
                                   % (name.replace(' ', '_'), rep))
            run = harness.GuestRun(qemu, guest, tests, device=device,
                                   backend=backend, netdev_opts=opts,
                                   extra_args=qemu_args,
                                   guest_args=' '.join(words))
            error = None
            with open(logpath, 'w') as log:
                run.log = log
                try:
                    run.run()
                except (OSError, RuntimeError) as e:
                    # one failed boot must not cost the whole run: keep
                    # the tests that completed, say so in the results
                    error = str(e).split('\n')[0]
                    log.write('bench: %s\n' % e)
                    failures.append('rep %d %s: %s' % (rep + 1, name, error))
            if run.boot_seconds:
                boots[name].append(run.boot_seconds)
            for res in run.results:
                raw[name].setdefault(result_key(res), []).append(
                    metrics(res))
            print('bench: rep %d %-27s %3.0fs  %s%s' % (
                rep + 1, name, time.monotonic() - t0,
                '  '.join('%s=%s' % (result_key(r),
                                     r.get('pps', r.get('tps')))
                          for r in run.results),
                '  FAILED: %s (%s)' % (error, logpath) if error else ''),
                flush=True)

    keys = [spec_key(t) for t in tests]
    data = {'tests': keys, 'variants': [v[0] for v in vs], 'raw': raw,
            'boot_seconds': boots, 'secs': s, 'reps': args.reps,
            'host_cpus': os.cpu_count(), 'failures': failures,
            'date': time.strftime('%Y-%m-%d %H:%M'),
            'elapsed': time.time() - started}
    report(out, data)
    return 0


def report(out, data):
    """Print and write the table, the JSON and the plot of a run."""
    keys, names, raw = data['tests'], data['variants'], data['raw']
    summary = {name: {k: summarize(v) for k, v in per.items()}
               for name, per in raw.items()}
    md = ['netplane benchmark, %s, %d repetitions x %d s per test, '
          'median (min..max)' % (data.get('date', '?'), data['reps'],
                                 data['secs']),
          '',
          'Guest: tiny Debian kernel + busybox, TCG, 2 vCPUs, 256 MiB, '
          'virtio-net-pci; tap variants: tap in a private namespace, '
          'af-packet variants: a veth leg, the peer in a second namespace; '
          'iothread variants: `-object iothread,id=io0` and `iothread=io0` '
          '(default polling). Host: %s CPUs. Boot to ready: '
          % data.get('host_cpus', '?') +
          ', '.join('%s %.0fs' % (n, statistics.median(b))
                    for n, b in data['boot_seconds'].items() if b),
          ''.join('\nFailed run (its completed tests count): %s\n' % f
                  for f in data.get('failures', [])),
          summary_table(summary, names, keys),
          table(summary, names, keys),
          device_table(summary, names, keys),
          LEGEND]
    text = '\n'.join(md) + '\n'
    print(text)
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write(text)
    data = dict(data, summary=summary)
    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump(data, f, indent=1)
    plot(summary, names, keys, os.path.join(out, 'bench.png'))
    coal = plot_coal(summary, names, os.path.join(out, 'coal.png'))
    print('bench: results in %s (results.md, results.json, bench.png%s)'
          % (out, ', coal.png' if coal else ''))


if __name__ == '__main__':
    sys.exit(main())
