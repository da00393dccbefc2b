#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
netplane's demo (make demo): the tiny guest on the netplane build of QEMU,
virtio-net running in an IOThread (--no-iothread: in the main loop, as
upstream), in a private network namespace, passing traffic both ways;
prints a short report with the device's own counters and fails if traffic
did not flow intact.
"""

import argparse
import os
import sys

import harness


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().split('\n')[0])
    ap.add_argument('--build', default=os.path.join(harness.ROOT, 'build'))
    ap.add_argument('--secs', type=int, default=3)
    ap.add_argument('--device', default='virtio-net-pci')
    ap.add_argument('--backend', default='tap', choices=['tap', 'af-packet'],
                    help='tap in the namespace, or af-packet on a veth leg')
    ap.add_argument('--netdev-opts', default='',
                    help="extra backend options, e.g. ',vnet-hdr=on'")
    ap.add_argument('--no-iothread', dest='iothread', action='store_false',
                    help='virtio-net in the main loop, as upstream')
    args = ap.parse_args()
    device, extra = args.device, []
    if args.iothread:
        device += ',iothread=io0'
        extra = ['-object', 'iothread,id=io0']

    s = args.secs
    tests = ['udp-tx:1400:%d:2000' % s, 'udp-rx:1400:%d:2000' % s,
             'udp-tx:64:%d' % s, 'udp-rx:64:%d' % s,
             'tcp-tx:%d' % s, 'tcp-rx:%d' % s, 'rr:64:%d' % s]
    qemu = os.path.join(args.build, 'qemu', 'qemu-system-x86_64')
    logpath = os.path.join(args.build, 'demo-console.log')
    print('demo: booting the tiny guest on %s' % qemu)
    print('demo: %s on %s in a private network namespace, guest %s, '
          'peer %s' % (device, args.backend if args.backend == 'tap'
                       else 'af-packet (a veth leg; the peer in a second '
                       'namespace)', harness.GUEST_IP, harness.HOST_IP))
    with open(logpath, 'w') as log:
        try:
            run = harness.GuestRun(qemu, os.path.join(args.build, 'guest'),
                                   tests, device=device,
                                   backend=args.backend,
                                   netdev_opts=args.netdev_opts,
                                   extra_args=extra, log=log).run()
        except RuntimeError as e:
            print('demo: FAILED: %s' % e)
            return 1

    print('demo: guest ready after %.1fs (TCG)\n' % (run.boot_seconds or 0))
    bad = []
    print('  %-16s %10s %10s %8s %8s %9s %12s' %
          ('test', 'sent', 'received', 'lost', 'damaged', 'irq/pkt',
           'rate'))
    for r in run.results:
        name = r['test'] + (':' + r['size'] if 'size' in r else '')
        if r['test'].startswith('udp'):
            rate = '%s pkt/s' % r['pps']
            print('  %-16s %10s %10s %8s %8s %9s %12s' % (
                name, r['sent'], r['recv'], r['lost'], r['corrupt'],
                r.get('irq_per_pkt', '-'), rate))
            if int(r['recv']) == 0 or int(r['corrupt']):
                bad.append(name)
        elif r['test'].startswith('tcp'):
            print('  %-16s %10s %10s %8s %8s %9s %12s' % (
                name, r['bytes_sent'], r['bytes_recv'], '-',
                '0' if r['ok'] == '1' else 'MISMATCH',
                r.get('irq_per_pkt', '-'), '%s Mbit/s' % r['mbps']))
            if r['ok'] != '1':
                bad.append(name)
        else:
            print('  %-16s %10s %10s %8s %8s %9s %12s' % (
                name, r['trans'], r['trans'], r['lost'], '-',
                r.get('irq_per_pkt', '-'), '%s trans/s' % r['tps']))
            print('  %-16s latency p50 %s us, p99 %s us' %
                  ('', r['p50_us'], r['p99_us']))
            if int(r['trans']) == 0:
                bad.append(name)
    print('\n  (udp rates: the 1400-byte flows are paced at 2000 pkt/s, the '
          '64-byte flows run as fast as the guest can)')
    if any(r.get('_device') for r in run.results):
        print('\n  the device\'s counters (query-stats provider virtio-net), '
              'per packet:')
        print('  %-16s %9s %9s %9s %9s %11s' %
              ('test', 'TX kicks', 'TX irqs', 'RX irqs', 'RX kicks',
               'TX batch'))
        for r in run.results:
            d = r.get('_device') or {}
            tx = d.get('tx-packets', 0)
            rx = d.get('rx-packets', 0)
            name = r['test'] + (':' + r['size'] if 'size' in r else '')

            def per(v, n):
                return '%.3f' % (v / n) if n >= 100 else '-'
            print('  %-16s %9s %9s %9s %9s %11s' % (
                name, per(d.get('tx-kicks', 0), tx),
                per(d.get('tx-interrupts', 0), tx),
                per(d.get('rx-interrupts', 0), rx),
                per(d.get('rx-kicks', 0), rx),
                '%.1f pkts' % (tx / d['tx-batches'])
                if d.get('tx-batches') and tx >= 100 else '-'))
    print('  console log: %s' % logpath)
    if bad or len(run.results) != len(tests):
        print('demo: FAILED: %s' % (', '.join(bad) or 'missing results'))
        return 1
    print('demo: traffic flowed both ways, intact')
    return 0


if __name__ == '__main__':
    sys.exit(main())
