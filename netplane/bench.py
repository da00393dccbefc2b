#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
netplane's benchmark (make bench): upstream QEMU and netplane side by side
in one run.

Every variant boots the tiny guest under TCG with a virtio-net-pci NIC on
tap in a private namespace, and the guest runs the same nptraffic tests
against a peer in that namespace.  Variants alternate within each
repetition (and the order rotates between repetitions) so that the noise of
this machine falls on all of them alike; each number is the median over the
repetitions with its spread (min..max).

Per test and variant: packets/s and Mbit/s (delivered), loss, guest
interrupts per packet (the guest's /proc/interrupts), QEMU CPU time per
packet by thread class (main loop, vCPUs, IOThreads, other) and each
class's run-queue wait (schedstat: time runnable but not running, which is
CPU congestion on a 2-core machine), the host's drop counters (tap, UDP
socket buffers), and for request/response transactions/s and latency.
"""

import argparse
import json
import os
import statistics
import sys
import time

import harness

CLASSES = ('main', 'vcpu', 'iothread', 'other')


def variants(build):
    up = os.path.join(build, 'upstream', 'qemu', 'qemu-system-x86_64')
    np_ = os.path.join(build, 'qemu', 'qemu-system-x86_64')
    return [
        # name, binary, device, backend, backend options
        ('upstream tx=bh', up, 'virtio-net-pci', 'tap', ''),
        ('upstream tx=timer', up, 'virtio-net-pci,tx=timer', 'tap', ''),
        ('netplane', np_, 'virtio-net-pci', 'tap', ''),
        ('netplane af-packet', np_, 'virtio-net-pci', 'af-packet', ''),
        # A plain packet socket's receive buffer instead of the ring
        # (net.core.rmem_default): what the ring is measured against.
        ('af-packet no ring', np_, 'virtio-net-pci', 'af-packet',
         ',rx-ring-size=0'),
    ]


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
    else:
        n = int(res.get('recv', 0))
        m['pps'] = float(res.get('pps', 0))
        m['mbps'] = float(res.get('mbps', 0))
        m['lost'] = float(res.get('lost', 0))
        sent = max(1, int(res.get('sent', 0)))
        m['loss_pct'] = 100.0 * float(res.get('lost', 0)) / sent
    if 'irq_per_pkt' in res:
        m['irq_per_pkt'] = float(res['irq_per_pkt'])
    threads = res.get('_threads', {})
    wall = max(res.get('_wall', 0), 1e-9)
    for cls in CLASSES:
        run_ns, wait_ns = threads.get(cls, [0, 0])
        m['cpu_us_per_pkt_' + cls] = run_ns / 1e3 / max(1, n)
        m['cpu_pct_' + cls] = 100.0 * run_ns / 1e9 / wall
        m['rqwait_pct_' + cls] = 100.0 * wait_ns / 1e9 / wall
    for k, v in res.get('_tap', {}).items():
        if k.endswith('dropped'):
            m['tap_' + k] = v
    for k, v in res.get('_udp', {}).items():
        m[k] = v
    for k in ('rx-dropped', 'rx-ring-full', 'rx-oversize', 'rx-truncated',
              'tx-errors'):
        if k in res.get('_backend', {}):
            m['ap_' + k] = res['_backend'][k]
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


def table(summary, names, tests):
    lines = []
    for test in tests:
        rr = test.startswith('rr')
        lines.append('')
        lines.append('**%s**' % test)
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
        if rr:
            cols = [('trans/s', 'tps', 0), ('p50 µs', 'p50_us', 0),
                    ('p99 µs', 'p99_us', 0)]
        else:
            cols = [('pkt/s', 'pps', 0), ('Mbit/s', 'mbps', 1),
                    ('loss %', 'loss_pct', 1)]
        cols += [('irq/pkt', 'irq_per_pkt', 3),
                 ('main µs/pkt', 'cpu_us_per_pkt_main', 1),
                 ('vCPU µs/pkt', 'cpu_us_per_pkt_vcpu', 1),
                 ('IOThread µs/pkt', 'cpu_us_per_pkt_iothread', 1),
                 ('main busy %', 'cpu_pct_main', 0),
                 ('rq-wait % main/vCPU/IO', None, 0),
                 ('drops link/udp/af-packet', None, 0)]
        lines.append('| variant | ' + ' | '.join(c[0] for c in cols) + ' |')
        lines.append('|---' * (len(cols) + 1) + '|')
        for name in names:
            s = summary.get(name, {}).get(test)
            if not s:
                lines.append('| %s |' % name + ' n/a |' * len(cols))
                continue
            row = []
            for _, key, digits in cols:
                if key is None and 'rq-wait' in _:
                    row.append('/'.join('%.0f' % s.get('rqwait_pct_' + c,
                                                       (0, 0, 0))[0]
                                        for c in ('main', 'vcpu',
                                                  'iothread')))
                elif key is None:
                    tap = sum(s.get(k, (0, 0, 0))[0] for k in s
                              if k.startswith('tap_'))
                    udp = s.get('udp_rcvbuf_errors', (0, 0, 0))[0]
                    ap = sum(s.get(k, (0, 0, 0))[0] for k in s
                             if k.startswith('ap_'))
                    row.append('%d/%d/%d' % (tap, udp, ap))
                elif key in s:
                    row.append(fmt(s[key], digits))
                else:
                    row.append('-')
            lines.append('| %s | ' % name + ' | '.join(row) + ' |')
    return '\n'.join(lines)


def plot(summary, names, tests, path):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('bench: no matplotlib, no plot', file=sys.stderr)
        return
    panels = [(t, 'tps' if t.startswith('rr') else
               'delivered' if t.startswith('udp-burst') else 'pps')
              for t in tests]
    panels += [(t, 'cpu_us_per_pkt_main') for t in tests
               if t.startswith('udp-tx') or t.startswith('udp-rx')][:2]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for ax, (test, key) in zip(axes, panels):
        meds, errs = [], [[], []]
        for name in names:
            v = summary.get(name, {}).get(test, {}).get(key, (0, 0, 0))
            meds.append(v[0])
            errs[0].append(v[0] - v[1])
            errs[1].append(v[2] - v[0])
        ax.bar(range(len(names)), meds, yerr=errs, capsize=3,
               color=['#999999', '#bbbbbb', '#2a7ab0', '#d9822b',
                      '#4a9a4a'][:len(names)])
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha='right', fontsize=7)
        ax.set_title('%s\n%s' % (test, key), fontsize=8)
        ax.tick_params(axis='y', labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().split('\n')[0])
    ap.add_argument('--build', default=os.path.join(harness.ROOT, 'build'))
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--secs', type=int, default=5,
                    help='seconds of traffic per test')
    ap.add_argument('--only', help='comma-separated variant names')
    ap.add_argument('--tests', help='comma-separated nptraffic tests '
                    '(default: UDP both ways at 64 and 1400 bytes, rr)')
    ap.add_argument('--out', help='output folder (default BUILD/bench)')
    ap.add_argument('--render', metavar='JSON',
                    help='only render the table and plot of an earlier run')
    args = ap.parse_args()
    out = args.out or os.path.join(args.build, 'bench')
    if args.render:
        with open(args.render) as f:
            data = json.load(f)
        report(out, data)
        return 0

    s = args.secs
    tests = (args.tests.split(',') if args.tests else
             # The burst first, on a quiet guest; the floods of udp-rx last,
             # so that no test's drops spill into the next one's counters.
             ['udp-burst:64:10000', 'udp-tx:64:%d' % s, 'udp-tx:1400:%d' % s,
              'rr:64:%d' % s, 'udp-rx:64:%d' % s, 'udp-rx:1400:%d' % s])
    vs = variants(args.build)
    if args.only:
        keep = args.only.split(',')
        vs = [v for v in vs if v[0] in keep]
    os.makedirs(out, exist_ok=True)
    guest = os.path.join(args.build, 'guest')

    raw = {v[0]: {} for v in vs}
    boots = {v[0]: [] for v in vs}
    started = time.time()
    for rep in range(args.reps):
        order = vs[rep % len(vs):] + vs[:rep % len(vs)]
        for name, qemu, device, backend, opts in order:
            t0 = time.monotonic()
            logpath = os.path.join(out, 'console-%s-%d.log'
                                   % (name.replace(' ', '_'), rep))
            with open(logpath, 'w') as log:
                run = harness.GuestRun(qemu, guest, tests, device=device,
                                       backend=backend, netdev_opts=opts,
                                       log=log).run()
            boots[name].append(run.boot_seconds or 0)
            for res in run.results:
                key = '%s:%s' % (res['test'], res.get('size', ''))
                raw[name].setdefault(key, []).append(metrics(res))
            print('bench: rep %d %-18s %3.0fs  %s' % (
                rep + 1, name, time.monotonic() - t0,
                '  '.join('%s=%s' % (r['test'] + ':' + r.get('size', ''),
                                     r.get('pps', r.get('tps')))
                          for r in run.results)), flush=True)

    keys = ['%s:%s' % (t.split(':')[0], t.split(':')[1]) for t in tests]
    data = {'tests': keys, 'variants': [v[0] for v in vs], 'raw': raw,
            'boot_seconds': boots, 'secs': s, 'reps': args.reps,
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
          'af-packet variants: a veth leg, the peer in a second namespace. '
          'Boot to ready: ' +
          ', '.join('%s %.0fs' % (n, statistics.median(b))
                    for n, b in data['boot_seconds'].items() if b),
          table(summary, names, keys)]
    text = '\n'.join(md) + '\n'
    print(text)
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write(text)
    data = dict(data, summary=summary)
    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump(data, f, indent=1)
    plot(summary, names, keys, os.path.join(out, 'bench.png'))
    print('bench: results in %s (results.md, results.json, bench.png)' % out)


if __name__ == '__main__':
    sys.exit(main())
