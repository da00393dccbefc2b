#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Where QEMU's time goes during one nptraffic test of the tiny guest.

For each variant of netplane/bench.py (--only, comma-separated), boots the
guest as the benchmark does, records QEMU with perf (software clock: this
machine has no hardware counters) for the test's traffic phase only, and
writes a summary per variant: the share of each thread, user against
kernel time, and the top symbols overall and of the busiest non-vCPU
thread.  Output: OUT/profile.md, and OUT/perf-VARIANT.data to look
further (perf report -i ...).

    netplane/profile.py --build build --test udp-tx:64:5 \\
        --only 'upstream tx=bh,upstream tx=timer,netplane iothread'

Needs perf (Debian: linux-perf).
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import bench
import harness

TOP = 12


class Recorder:
    """perf record on QEMU's process for the traffic phase of @test."""

    def __init__(self, path, test):
        self.path = path
        self.test = test
        self.proc = None

    def __call__(self, what, pid, test):
        if test != self.test.split(':')[0]:
            return
        if what == 'begin' and not self.proc:
            self.proc = subprocess.Popen(
                ['perf', 'record', '-q', '-e', 'cpu-clock', '-F', '2000',
                 '-p', str(pid), '-o', self.path],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elif what == 'end' and self.proc:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=60)


def report(path, sort, extra=()):
    """(percent, key) rows of perf report --sort @sort, most first."""
    out = subprocess.run(['perf', 'report', '-i', path, '--stdio',
                          '--no-children', '--percent-limit', '0.5',
                          '--sort', sort] + list(extra),
                         capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r'^\s*([\d.]+)%\s+(.*\S)\s*$', line)
        if m:
            rows.append((float(m.group(1)), re.sub(r'\s+', ' ', m.group(2))))
    return rows


def thread_name(comm):
    """The benchmark's name for a thread: perf gives its comm only, so
    the main thread keeps QEMU's."""
    return harness.thread_label(0, None, comm)


def summarize(name, path):
    lines = ['### %s' % name, '']
    threads = report(path, 'comm')
    if not threads:
        return lines + ['(no samples)', '']
    lines.append('Threads: ' + ', '.join('%s %.1f%%' % (thread_name(c), p)
                                          for p, c in threads[:8]))
    kernel = sum(p for p, d in report(path, 'dso')
                 if d.startswith('[kernel'))
    lines.append('Kernel %.1f%%, user %.1f%% of all samples' %
                 (kernel, 100 - kernel))
    lines += ['', 'Top symbols, all threads:', '']
    lines += ['    %5.1f%%  %s' % r for r in report(path, 'sym')[:TOP]]
    busiest = next((c for p, c in threads
                    if not thread_name(c).startswith('vcpu')), None)
    if busiest:
        lines += ['', 'Top symbols of %s:' % thread_name(busiest), '']
        lines += ['    %5.1f%%  %s' % r for r in report(
            path, 'sym', ('--comms', busiest))[:TOP]]
    return lines + ['']


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().split('\n')[0])
    ap.add_argument('--build', default=os.path.join(harness.ROOT, 'build'))
    ap.add_argument('--only', required=True,
                    help='comma-separated variants of netplane/bench.py')
    ap.add_argument('--test', default='udp-tx:64:5',
                    help='one nptraffic test (default udp-tx:64:5)')
    ap.add_argument('--out', help='output folder (default BUILD/profile)')
    args = ap.parse_args()
    if not shutil.which('perf'):
        print('profile: perf is not installed (Debian: apt-get install '
              'linux-perf)', file=sys.stderr)
        return 1
    out = args.out or os.path.join(args.build, 'profile')
    os.makedirs(out, exist_ok=True)
    keep = args.only.split(',')
    vs = [v for v in bench.variants(args.build) if v[0] in keep]
    unknown = set(keep) - {v[0] for v in vs}
    if unknown:
        print('profile: no such variant: %s' % ', '.join(sorted(unknown)),
              file=sys.stderr)
        return 1
    guest = os.path.join(args.build, 'guest')
    md = ['QEMU profile, %s: nptraffic %s, perf record -e cpu-clock '
          '-F 2000 -p QEMU over the traffic phase' %
          (time.strftime('%Y-%m-%d %H:%M'), args.test),
          '',
          'Command: netplane/profile.py --test %s --only %r' %
          (args.test, args.only), '']
    done = []
    for name, qemu, device, backend, opts, qemu_args, *words in vs:
        path = os.path.join(out, 'perf-%s.data' % re.sub(r'\W+', '_', name))
        run = harness.GuestRun(qemu, guest, [args.test], device=device,
                               backend=backend, netdev_opts=opts,
                               extra_args=qemu_args,
                               guest_args=' '.join(words))
        run.on_phase = Recorder(path, args.test)
        with open(os.path.join(out, 'console-%s.log' %
                               re.sub(r'\W+', '_', name)), 'w') as log:
            run.log = log
            run.run()
        res = run.results[0] if run.results else {}
        done.append(('%s (%s pkt/s)' % (name, res.get('pps', '?')), path))
    for title, path in done:
        md += summarize(title, path)
    print('\n'.join(md))
    with open(os.path.join(out, 'profile.md'), 'w') as f:
        f.write('\n'.join(md) + '\n')
    print('profile: %s' % os.path.join(out, 'profile.md'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
