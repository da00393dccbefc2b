#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Copyright (c) 2026 netplane developers
#
# virtio-net with its queue pair in an IOThread (iothread=): real traffic
# over tap and af-packet, counters that add up, migration, savevm and
# loadvm, link changes, stop/cont and reset while traffic flows.

import os
import re
import time

from qemu_test import QemuSystemTest
from qemu_test.traffic import TrafficTest, parse_kv


class DataplaneTest(TrafficTest):
    """
    Helpers for a guest whose virtio-net-pci device (id nic0) runs its
    queue pair in IOThread io0, on netdev net0: tap0 in QEMU's namespace,
    or af-packet on the veth leg vq0 whose peer vp0 is in a second
    namespace.  The host side is 10.79.0.1, the guest 10.79.0.2; IPv6 is
    off on both sides, so nothing but the test's own frames (and ARP)
    crosses the link.
    """

    PEER = '10.79.0.1'
    GUEST_ADDR = '10.79.0.2'
    GUEST = GUEST_ADDR + '/24'
    MAC = '52:54:00:12:34:56'
    TAP = 'tap,id=net0,ifname=tap0,script=no,downscript=no'
    AF_PACKET = 'af-packet,id=net0,ifname=vq0'

    # Counters of the device that must be there, per queue pair
    DEVICE_COUNTERS = (
        'tx-kicks', 'tx-polled', 'tx-waited', 'tx-bh-runs', 'tx-packets',
        'tx-bytes', 'tx-dropped', 'tx-batches', 'tx-budget-exhausted',
        'tx-backend-busy', 'tx-interrupts', 'tx-interrupts-suppressed',
        'rx-kicks', 'rx-polled', 'rx-bh-runs', 'rx-packets', 'rx-bytes',
        'rx-dropped', 'rx-batches',
        'rx-no-buffers', 'rx-interrupts', 'rx-interrupts-suppressed')

    @staticmethod
    def no_ipv6(ns):
        ns.run('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1')
        ns.run('sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1')

    def tap_ns(self):
        """QEMU's namespace, with tap0 as the peer at PEER."""
        ns = self.netns('qd')
        self.no_ipv6(ns)
        ns.add_tap('tap0', self.PEER + '/24')
        return ns

    def veth_ns(self):
        """QEMU's namespace with the veth leg vq0, and the peer's with vp0
        at PEER (TSO and GSO off: af-packet without a vnet header drops
        frames above the MTU)."""
        qns = self.netns('qd')
        peer = self.netns('qe')
        self.no_ipv6(qns)
        self.no_ipv6(peer)
        qns.add_veth('vq0', peer, 'vp0', self.PEER + '/24')
        peer.run('ethtool', '-K', 'vp0', 'tso', 'off', 'gso', 'off')
        return qns, peer

    def backend_ns(self, netdev):
        """(QEMU's namespace, the peer's) for @netdev, TAP or AF_PACKET."""
        if netdev == self.TAP:
            ns = self.tap_ns()
            return ns, ns
        return self.veth_ns()

    def on_each_backend(self, check):
        """check(netdev) for tap and af-packet.  (Not subtests: the TAP
        runner reports a failed subtest nowhere.)"""
        for netdev in (self.TAP, self.AF_PACKET):
            try:
                check(netdev)
            except AssertionError as e:
                raise AssertionError('%s: %s' % (netdev.split(',')[0],
                                                 e)) from e

    def dataplane_vm(self, ns, netdev, *args, name=None):
        return self.guest_vm(
            ns, '-object', 'iothread,id=io0', '-netdev', netdev,
            '-device', 'virtio-net-pci,netdev=net0,id=nic0,iothread=io0,'
            'mac=' + self.MAC, *args, name=name)

    def client_cmdline(self, tests):
        return self.guest_cmdline(
            self.GUEST,
            run=['nptraffic', 'client', '--server', self.PEER] + tests,
            extra='np.wait=' + self.PEER)

    def guest_results(self, start=0):
        """NPRESULT lines on the console from line @start on, by
        "test:size"."""
        out = {}
        for line in self.console_lines[start:]:
            if line.startswith('NPRESULT '):
                r = parse_kv(line)
                out[r['test'] + ':' + r.get('size', '')] = r
        return out

    def assert_guest_exit(self, line):
        self.assertEqual(parse_kv(line).get('exit'), '0',
                         'guest command failed:\n%s'
                         % '\n'.join(self.console_lines[-30:]))

    def device_stats(self, vm, pairs=1, per_pair=False):
        """Counters of the virtio-net device nic0 (query-stats provider
        virtio-net), summed over its @pairs queue pairs, or a list of
        them by pair with @per_pair."""
        res = vm.cmd('query-stats', target='netdev',
                     providers=[{'provider': 'virtio-net'}])
        self.assertEqual(sorted((r['netdev'], r['queue']) for r in res),
                         [('nic0', q) for q in range(pairs)], res)
        out = {}
        by_pair = [{} for _ in range(pairs)]
        for r in res:
            for st in r['stats']:
                out[st['name']] = out.get(st['name'], 0) + st['value']
                by_pair[r['queue']][st['name']] = st['value']
        for name in self.DEVICE_COUNTERS:
            self.assertIn(name, out)
        return by_pair if per_pair else out

    def backend_stats(self, vm):
        """Counters of af-packet netdev net0 (provider net)."""
        res = vm.cmd('query-stats', target='netdev', netdevs=['net0'],
                     providers=[{'provider': 'net'}])
        out = {}
        for r in res:
            for st in r['stats']:
                out[st['name']] = out.get(st['name'], 0) + st['value']
        return out

    @staticmethod
    def link_stats(ns, dev):
        """The kernel's counters of @dev in @ns, read in one process."""
        keys = ('rx_packets', 'tx_packets', 'rx_dropped', 'tx_dropped')
        out = ns.run('cat', *['/sys/class/net/%s/statistics/%s' % (dev, k)
                              for k in keys]).stdout.split()
        return dict(zip(keys, (int(v) for v in out)))

    @staticmethod
    def delta(after, before):
        return {k: after[k] - before[k] for k in after}

    def iothread_cpu_ns(self, vm, name='io0'):
        """CPU time (ns, from schedstat) of IOThread @name so far; clock
        ticks are too coarse for a hundred pings."""
        base = '/proc/%d/task' % vm.get_pid()
        for tid in os.listdir(base):
            with open('%s/%s/comm' % (base, tid)) as f:
                if f.read().strip() != 'IO ' + name:
                    continue
            with open('%s/%s/schedstat' % (base, tid)) as f:
                return int(f.read().split()[0])
        self.fail('QEMU has no thread "IO %s"' % name)

    def wait_stopped(self, vm, timeout=30):
        """Wait until the guest powered off (-action shutdown=pause)."""
        deadline = time.monotonic() + timeout
        while vm.cmd('query-status')['status'] == 'running':
            self.assertLess(time.monotonic(), deadline,
                            'the guest did not power off')
            time.sleep(0.1)

    def settled(self, read, timeout=10):
        """read() once two calls 0.5 s apart agree (in-flight frames
        landed)."""
        deadline = time.monotonic() + timeout
        last = read()
        while True:
            time.sleep(0.5)
            now = read()
            if now == last:
                return now
            self.assertLess(time.monotonic(), deadline,
                            'counters still moving: %s -> %s' % (last, now))
            last = now

    def ping(self, ns, *args):
        """ping from @ns; (transmitted, received)."""
        r = ns.run('ping', '-q', *args, check=False)
        m = re.search(r'(\d+) packets transmitted, (\d+) received', r.stdout)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        return int(m.group(1)), int(m.group(2))

    def log_to(self, name):
        """A log file of this test, for a process's output."""
        f = open(self.log_file(name), 'a')
        self.addCleanup(f.close)
        return f

    def host_server_forever(self, ns):
        """nptraffic's server for any number of sessions, one at a time
        (kill it and start a new one when the guest's session died)."""
        log = self.log_to('nptraffic-server.log')
        return ns.popen([self.host_tool, 'server'], stdout=log, stderr=log)

    def stop_cont(self, vm, stopped=0.2, running=0.3):
        vm.cmd('stop')
        self.assertEqual(vm.cmd('query-status')['status'], 'paused')
        time.sleep(stopped)
        vm.cmd('cont')
        self.assertEqual(vm.cmd('query-status')['status'], 'running')
        time.sleep(running)

    def virtio_state(self, vm):
        """What QEMU says of its virtio devices and their queues, as
        text for a failure message: the run state, each device's status,
        and per queue what the device processed (last_avail, used) against
        what the guest published (avail.idx, read from guest memory)."""
        out = []

        def query(cmd, **args):
            try:
                return vm.cmd(cmd, **args)
            except Exception as e:      # the state is a bonus to a failure
                out.append('  %s: %s' % (cmd, e))
                return None

        st = query('query-status')
        if st:
            out.append('run state: %s' % st['status'])
        # Where the vCPUs are (symbols: the guest's vmlinux)
        regs = query('human-monitor-command',
                     command_line='info registers -a') or ''
        out.append('vCPU RIP: ' + ' '.join(
            re.findall(r'RIP=([0-9a-f]+)', regs)))
        for dev in query('x-query-virtio') or []:
            s = query('x-query-virtio-status', path=dev['path'])
            if not s:
                continue
            out.append('%s: status %s broken %s started %s' % (
                dev['path'],
                ','.join(x.split(':')[0].replace('VIRTIO_CONFIG_S_', '')
                         for x in s['status'].get('statuses', [])),
                s['broken'], s['started']))
            for q in range(s['num-vqs']):
                qs = query('x-query-virtio-queue-status', path=dev['path'],
                           queue=q)
                el = query('x-query-virtio-queue-element', path=dev['path'],
                           queue=q)
                if qs:
                    out.append('  vq%d: last_avail %d shadow_avail %d used %d'
                               ' signalled %d inuse %d; guest avail.idx %s'
                               ' avail.flags %s' % (
                                   q, qs['last-avail-idx'],
                                   qs['shadow-avail-idx'], qs['used-idx'],
                                   qs['signalled-used'], qs['inuse'],
                                   el['avail']['idx'] if el else '?',
                                   el['avail']['flags'] if el else '?'))
        return '\n'.join(out)

    def assert_quit_cleanly(self, vm):
        """QEMU was shut down (or quit) and exited 0 without a sanitizer
        report."""
        vm.shutdown()
        self.assert_exited_cleanly(vm)

    def assert_exited_cleanly(self, vm):
        """QEMU exited with status 0 and did not report memory errors
        or undefined behaviour (sanitizer builds)."""
        self.assertEqual(vm.exitcode(), 0, vm.get_log())
        self.assertNotRegex(vm.get_log() or '',
                            r'==\d+==ERROR: |runtime error: ')


class VirtioNetDataplane(DataplaneTest):
    """
    Steps, in each test:
      1. create a network namespace with the peer (tap0, or a veth pair
         for af-packet, the peer in its own namespace), IPv6 off
      2. boot the tiny guest with QEMU inside that namespace, with
         -object iothread,id=io0 and virtio-net-pci,iothread=io0
      3. pass traffic with nptraffic (integrity checked on both ends)
         while the test stops, migrates, resets the VM or changes the
         link, and compare what the device counted (query-stats
         provider virtio-net) with what the other side saw
    """

    def assert_ran_in_iothread(self, vm, st):
        # Only the dataplane counts tx-packets, and it runs in io0.
        self.assertGreater(st['tx-packets'], 0, st)
        self.assertGreater(st['tx-kicks'] + st['rx-kicks'], 0, st)
        self.assertGreater(self.iothread_cpu_ns(vm), 0)

    def standard_run(self, ns, server_ns, netdev, host_dev):
        server = self.host_server(server_ns)
        vm = self.dataplane_vm(ns, netdev, '-action', 'shutdown=pause')
        # The standard set, then 3000 back-to-back datagrams to the guest:
        # whatever arrives must be intact, and the counters must add up.
        vm.add_args('-append', self.guest_cmdline(
            self.GUEST, run=['nptraffic', 'client', '--server', self.PEER,
                             '--irq'] + self.STANDARD_TRAFFIC +
            ['udp-burst:64:3000'], extra='np.wait=' + self.PEER))
        res = self.run_guest(vm, wait=False)
        self.assertEqual(server.wait(timeout=30), 0)
        self.assert_standard_traffic(res)
        self.assert_udp_intact(res['udp-burst:64'])
        self.wait_stopped(vm)

        st = self.device_stats(vm)
        wire = self.link_stats(server_ns, host_dev)
        self.assert_ran_in_iothread(vm, st)
        # The guest's frames: each one the device sent reached the peer.
        self.assertEqual(st['tx-packets'], wire['rx_packets'], (st, wire))
        self.assertEqual(st['tx-dropped'], 0, st)
        # The peer's frames: each one that reached QEMU was put in the
        # guest's ring or counted as dropped.
        self.assertEqual(st['rx-dropped'], 0, st)
        self.assertGreaterEqual(st['tx-packets'],
                                int(res['udp-tx:1400']['recv']) +
                                int(res['udp-tx:64']['recv']))
        self.assertGreaterEqual(st['rx-packets'],
                                int(res['udp-rx:1400']['recv']) +
                                int(res['udp-rx:64']['recv']) +
                                int(res['udp-burst:64']['recv']))
        # One interrupt per batch at most
        self.assertLessEqual(st['rx-interrupts'], st['rx-batches'])
        self.assertLessEqual(st['tx-interrupts'],
                             st['tx-batches'] + st['tx-dropped'])
        # Request/response: a request's TX interrupt waited for the
        # answer, and Linux's RX poll freed TX first (adaptive moderation)
        self.assertGreater(st['tx-coal-unwanted'], 0, st)
        return vm, st, wire

    def test_tap_traffic_and_counters(self):
        """Traffic both ways over tap; afterwards (the guest powered off,
        the VM paused) the device's counters equal tap0's exactly."""
        ns = self.tap_ns()
        vm, st, wire = self.standard_run(ns, ns, self.TAP, 'tap0')
        # tap0 counts a frame to the guest when QEMU reads it.
        self.assertEqual(st['rx-packets'] + st['rx-dropped'],
                         wire['tx_packets'], (st, wire))
        self.assert_quit_cleanly(vm)

    def test_af_packet_traffic_and_counters(self):
        """Traffic both ways over af-packet, the socket's queue in the
        IOThread too; the device's counters equal af-packet's and the
        peer's."""
        qns, peer = self.veth_ns()
        vm, st, wire = self.standard_run(qns, peer, self.AF_PACKET, 'vp0')
        afp = self.backend_stats(vm)
        self.assertEqual(st['tx-packets'], afp['tx-packets'], (st, afp))
        self.assertEqual(afp['tx-errors'], 0, afp)
        # af-packet took every frame the peer sent (or counted it), and
        # handed each one it took to the device (rx-peer-full counts the
        # times the device had no room: the frame waited, it was not lost).
        self.assertEqual(afp['rx-packets'] + afp['rx-dropped'] +
                         afp['rx-truncated'] + afp['rx-oversize'],
                         wire['tx_packets'], (afp, wire))
        self.assertEqual(st['rx-packets'] + st['rx-dropped'],
                         afp['rx-packets'], (st, afp))
        self.assert_quit_cleanly(vm)

    def test_polling(self):
        """IOThread polling picks up the guest's frames without kicks,
        for tap and af-packet both (neither the backend's descriptor nor
        the receive queue may turn polling off for the IOThread), and
        poll-max-ns=0 turns it off: then every round needs a kick, and
        each round's used entries are flushed at its end.  With a long
        polling window, a stream of frames that the guest queues a few at
        a time: adaptive moderation holds the interrupts of several
        rounds (tx-coal-held), fewer interrupts than rounds.  And when a
        flood from the host leaves the guest out of receive buffers,
        polling sees the guest refill without waiting for its kick."""
        self.on_each_backend(self.check_polling)

    def flood_phase(self, vm, test='udp-tx'):
        """Device counters over the guest's next phase @test."""
        self.read_console(vm, 'NPPHASE begin test=' + test, 60)
        time.sleep(0.5)
        st0 = self.device_stats(vm)
        self.read_console(vm, 'NPPHASE end test=' + test, 60)
        st = self.device_stats(vm)
        d = {k: st[k] - st0[k] for k in st}
        key = 'tx-packets' if test == 'udp-tx' else 'rx-packets'
        self.assertGreater(d[key], 1000, (st0, st))
        return d

    def check_polling(self, netdev):
        ns, server_ns = self.backend_ns(netdev)
        server = self.host_server(server_ns)
        vm = self.dataplane_vm(ns, netdev, '-action', 'shutdown=pause',
                               name=netdev.split(',')[0])
        vm.add_args('-append', self.client_cmdline(['udp-tx:64:3'] * 3 +
                                                   ['udp-rx:64:3']))
        vm.launch()
        self.read_console(vm, 'NPPHASE end test=udp-tx', 180)
        polled = self.device_stats(vm)
        self.assertGreater(polled['tx-polled'], 0, polled)

        vm.cmd('qom-set', path='/objects/io0', property='poll-max-ns',
               value=0)
        d = self.flood_phase(vm)
        self.assertEqual(d['tx-polled'], 0, d)
        self.assertEqual(d['rx-polled'], 0, d)
        self.assertGreater(d['tx-kicks'], 0, d)

        vm.cmd('qom-set', path='/objects/io0', property='poll-max-ns',
               value=200 * 1000)
        held = self.flood_phase(vm)
        rounds = held['tx-kicks'] + held['tx-polled'] + held['tx-waited']
        self.assertGreater(held['tx-coal-held'], 0, held)
        irqs = held['tx-interrupts'] + held['tx-coal-interrupts-usecs']
        self.assertGreater(rounds, 1.25 * irqs, held)

        # A guest under TCG takes a millisecond or more to refill: a
        # window that long makes polling see it (with KVM, far less)
        vm.cmd('qom-set', path='/objects/io0', property='poll-max-ns',
               value=20 * 1000 * 1000)
        rx = self.flood_phase(vm, 'udp-rx')
        self.assertGreater(rx['rx-no-buffers'], 0, rx)
        self.assertGreater(rx['rx-polled'], 0, rx)

        self.assert_guest_exit(self.read_console(vm, 'NPGUEST exit=', 60))
        self.assertEqual(server.wait(timeout=30), 0)
        self.log.info('%s: polled %d of %d rounds with polling; '
                      'without, %.1f frames per flush; with 200 us '
                      'polling, %.1f per round, %.1f per interrupt; RX '
                      'stalled %d times, resumed by polling %d, by a '
                      'kick %d', netdev.split(',')[0], polled['tx-polled'],
                      polled['tx-kicks'] + polled['tx-polled'],
                      d['tx-packets'] / d['tx-batches'],
                      held['tx-packets'] / rounds,
                      held['tx-packets'] / max(irqs, 1),
                      rx['rx-no-buffers'], rx['rx-polled'],
                      rx['rx-kicks'])
        self.wait_stopped(vm)
        self.assert_quit_cleanly(vm)

    def test_polling_does_not_hold_frames(self):
        """A frame from the backend is picked up while the IOThread
        polls, not only once its polling window ends: with a window of
        200 ms (poll-max-ns), pings 20 ms apart keep their round trip in
        the milliseconds.  When tap's descriptor was not looked at while
        polling, they waited for the window (tens of milliseconds).
        Nor does the guest wait for the window to learn that its replies
        were sent: their used entries are flushed one by one while the
        IOThread goes on polling."""
        self.on_each_backend(self.check_polling_rtt)

    def check_polling_rtt(self, netdev):
        ns, peer_ns = self.backend_ns(netdev)
        vm = self.dataplane_vm(ns, netdev, name=netdev.split(',')[0])
        self.launch_idle_guest(vm, self.GUEST)
        vm.cmd('qom-set', path='/objects/io0', property='poll-max-ns',
               value=200 * 1000 * 1000)
        # Let adaptive polling grow its window to the gaps between pings
        self.assertEqual(self.ping(peer_ns, '-c', '30', '-i', '0.02', '-W',
                                   '2', self.GUEST_ADDR), (30, 30))
        st0 = self.device_stats(vm)
        r = peer_ns.run('ping', '-q', '-c', '50', '-i', '0.02', '-W', '2',
                        self.GUEST_ADDR, check=False)
        st = self.device_stats(vm)
        m = re.search(r'(\d+) received.*\n.*= [\d.]+/([\d.]+)/([\d.]+)/',
                      r.stdout)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        received, avg, worst = int(m.group(1)), float(m.group(2)), \
            float(m.group(3))
        self.log.info('%s: rtt avg %.3f ms, max %.3f ms with 200 ms polling',
                      netdev.split(',')[0], avg, worst)
        self.assertEqual(received, 50, r.stdout)
        self.assertLess(avg, 10.0, r.stdout)
        self.assertGreater(st['rx-packets'], 80)
        sent = st['tx-packets'] - st0['tx-packets']
        self.assertGreaterEqual(sent, 50, (st0, st))
        self.assertGreaterEqual(st['tx-batches'] - st0['tx-batches'],
                                sent * 0.9, (st0, st))
        self.assert_quit_cleanly(vm)

    def test_counters_exact(self):
        """Known frame counts, counted exactly by the device and by tap0:
        500 pings (500 frames each way, the ARP exchange done before and
        none due during the window), then a burst of 5000 datagrams from
        the host, more than the tap queue holds: whatever QEMU read
        reached the guest's ring."""
        ns = self.tap_ns()
        vm = self.dataplane_vm(ns, self.TAP)
        self.launch_idle_guest(vm, self.GUEST)
        ns.run('ip', 'neigh', 'replace', self.GUEST_ADDR, 'lladdr', self.MAC,
               'nud', 'permanent', 'dev', 'tap0')
        # The guest asks for our MAC once; its answer stays fresh for at
        # least 15 s (base_reachable_time / 2).
        self.assertEqual(self.ping(ns, '-c', '1', '-W', '5',
                                   self.GUEST_ADDR), (1, 1))

        def both():
            st = self.device_stats(vm)
            return ({k: st[k] for k in ('rx-packets', 'rx-bytes',
                                        'rx-dropped', 'tx-packets',
                                        'tx-bytes', 'tx-dropped')},
                    self.link_stats(ns, 'tap0'))

        st0, wire0 = self.settled(both)
        self.assertEqual(self.ping(ns, '-c', '500', '-i', '0.002', '-s',
                                   '1000', '-W', '2', self.GUEST_ADDR),
                         (500, 500))
        st1, wire1 = self.settled(both)
        st, wire = self.delta(st1, st0), self.delta(wire1, wire0)
        self.assertEqual((st['rx-packets'], wire['tx_packets']), (500, 500),
                         (st, wire))
        self.assertEqual((st['tx-packets'], wire['rx_packets']), (500, 500),
                         (st, wire))
        self.assertEqual(st['rx-bytes'], 500 * (14 + 20 + 8 + 1000))
        self.assertEqual(st['tx-bytes'], 500 * (14 + 20 + 8 + 1000))
        self.assertEqual(st['rx-dropped'] + st['tx-dropped'], 0, st)

        # The guest answers port 9 with rate-limited ICMP errors: the
        # count is not known, but both sides must agree on it.
        ns.run('python3', '-c', """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(5000):
    s.sendto(b'x' * 1000, ('%s', 9))
""" % self.GUEST_ADDR)
        st2, wire2 = self.settled(both)
        st, wire = self.delta(st2, st1), self.delta(wire2, wire1)
        self.log.info('burst: device %s, tap0 %s', st, wire)
        # Every datagram was read by QEMU and delivered, or dropped (and
        # counted) by tap0 because QEMU was not reading fast enough.
        self.assertEqual(wire['tx_packets'] + wire['tx_dropped'], 5000, wire)
        self.assertEqual(st['rx-packets'] + st['rx-dropped'],
                         wire['tx_packets'], (st, wire))
        self.assertEqual(st['rx-dropped'], 0, st)
        self.assertEqual(st['rx-bytes'], st['rx-packets'] * 1042, st)
        self.assertGreaterEqual(st['rx-packets'], 1000, st)
        self.assertEqual(st['tx-packets'], wire['rx_packets'], (st, wire))
        self.assert_quit_cleanly(vm)

    def test_migration_under_traffic(self):
        """Live migration to a file in the middle of a TCP stream to the
        guest, a new QEMU restored from it: the stream completes intact
        and the tests after it pass, the dataplane running again."""
        ns = self.tap_ns()
        server = self.host_server(ns)
        append = self.client_cmdline(['tcp-rx:10', 'tcp-tx:3',
                                      'udp-tx:1400:2:1000',
                                      'udp-rx:1400:2:1000'])
        src = self.dataplane_vm(ns, self.TAP, name='source')
        src.add_args('-append', append)
        src.launch()
        self.read_console(src, 'NPPHASE begin test=tcp-rx', 120)
        time.sleep(2)
        self.assertGreater(self.device_stats(src)['rx-packets'], 100)

        path = os.path.join(self.workdir, 'vm.state')
        src.cmd('migrate', uri='file:' + path)
        deadline = time.monotonic() + 120
        while True:
            status = src.cmd('query-migrate')['status']
            if status in ('completed', 'failed', 'cancelled'):
                break
            self.assertLess(time.monotonic(), deadline, 'migration hangs')
            time.sleep(0.1)
        self.assertEqual(status, 'completed')
        self.assertEqual(src.cmd('query-status')['status'], 'postmigrate')
        self.assert_quit_cleanly(src)

        # The same command line, the same tap, state from the file.
        dst = self.dataplane_vm(ns, self.TAP, '-incoming', 'defer', '-S',
                                '-action', 'shutdown=pause', name='dest')
        dst.add_args('-append', append)
        dst.launch()
        dst.cmd('migrate-incoming', uri='file:' + path)
        deadline = time.monotonic() + 120
        while dst.cmd('query-migrate').get('status') != 'completed':
            self.assertLess(time.monotonic(), deadline,
                            'incoming migration hangs: %s'
                            % dst.cmd('query-migrate'))
            time.sleep(0.1)
        self.assertEqual(dst.cmd('query-status')['status'], 'paused')
        dst.cmd('cont')

        mark = len(self.console_lines)
        self.assert_guest_exit(self.read_console(dst, 'NPGUEST exit=', 120))
        self.assertEqual(server.wait(timeout=30), 0)
        res = self.guest_results(mark)
        # The stream was under way when the guest moved: its result comes
        # from the restored guest.
        self.assertIn('tcp-rx:0', res, self.console_lines[-30:])
        self.assert_tcp_intact(res['tcp-rx:0'])
        self.assert_tcp_intact(res['tcp-tx:0'])
        self.assert_udp_intact(res['udp-tx:1400'], lossless=True)
        self.assert_udp_intact(res['udp-rx:1400'], lossless=True)
        # The restored device ran its queues in io0 (its counters started
        # from zero in the new QEMU).
        self.wait_stopped(dst)
        st = self.device_stats(dst)
        self.assert_ran_in_iothread(dst, st)
        self.assertGreaterEqual(st['rx-packets'], 2000)
        self.assertGreaterEqual(st['tx-packets'], 2000)
        self.assert_quit_cleanly(dst)

    def wait_job(self, vm, job_id, timeout=120):
        """Wait until job @job_id concluded without an error; dismiss
        it."""
        deadline = time.monotonic() + timeout
        while True:
            job = {j['id']: j for j in vm.cmd('query-jobs')}[job_id]
            if job['status'] == 'concluded':
                break
            self.assertLess(time.monotonic(), deadline,
                            'job hangs: %s' % job)
            time.sleep(0.1)
        self.assertNotIn('error', job, job)
        vm.cmd('job-dismiss', id=job_id)

    def test_savevm_loadvm_under_traffic(self):
        """snapshot-save and snapshot-load (savevm/loadvm) in the middle
        of a ping flood, into a qcow2 image made through QMP: the guest
        answers every ping after each, and the restored device runs its
        queues in io0 again."""
        ns = self.tap_ns()
        vm = self.dataplane_vm(ns, self.TAP)
        self.launch_idle_guest(vm, self.GUEST)

        path = os.path.join(self.workdir, 'vmstate.qcow2')
        vm.cmd('blockdev-create', job_id='mkfile',
               options={'driver': 'file', 'filename': path, 'size': 0})
        self.wait_job(vm, 'mkfile')
        vm.cmd('blockdev-add', driver='file', node_name='file0',
               filename=path)
        vm.cmd('blockdev-create', job_id='mkqcow2',
               options={'driver': 'qcow2', 'file': 'file0',
                        'size': 64 * 1024 * 1024})
        self.wait_job(vm, 'mkqcow2')
        vm.cmd('blockdev-add', driver='qcow2', node_name='disk0',
               file='file0')
        self.assertEqual(self.ping(ns, '-c', '3', '-W', '5',
                                   self.GUEST_ADDR), (3, 3))

        for cmd in ('snapshot-save', 'snapshot-load'):
            flood = ns.popen(['ping', '-q', '-c', '800', '-i', '0.005',
                              '-W', '1', self.GUEST_ADDR],
                             stdout=self.log_to('ping-%s.log' % cmd))
            time.sleep(1)
            before = self.device_stats(vm)
            vm.cmd(cmd, job_id=cmd, tag='snap0', vmstate='disk0',
                   devices=['disk0'])
            self.wait_job(vm, cmd)
            self.assertEqual(vm.cmd('query-status')['status'], 'running')
            self.assertEqual(flood.wait(timeout=60), 0)
            cpu = self.iothread_cpu_ns(vm)
            self.assertEqual(self.ping(ns, '-c', '100', '-i', '0.01', '-W',
                                       '2', self.GUEST_ADDR), (100, 100))
            after = self.device_stats(vm)
            # The counters live in QEMU, not in the snapshot: they go on
            self.assertGreaterEqual(after['rx-packets'],
                                    before['rx-packets'] + 100)
            self.assertGreaterEqual(after['tx-packets'],
                                    before['tx-packets'] + 100)
            self.assertGreater(after['tx-kicks'] + after['rx-kicks'],
                               before['tx-kicks'] + before['rx-kicks'])
            self.assertGreater(self.iothread_cpu_ns(vm), cpu)
        self.assert_quit_cleanly(vm)

    def test_multiqueue_vq_mapping(self):
        """Two queue pairs, each in its own IOThread (iothread-vq-mapping),
        on a multiqueue tap: traffic both ways, each pair's counters in
        its own query-stats result, their sums equal to tap0's."""
        ns = self.netns('qd')
        self.no_ipv6(ns)
        ns.run('ip', 'tuntap', 'add', 'dev', 'tap0', 'mode', 'tap',
               'multi_queue', 'vnet_hdr')
        ns.run('ip', 'addr', 'add', self.PEER + '/24', 'dev', 'tap0')
        ns.run('ip', 'link', 'set', 'tap0', 'up')
        server = self.host_server(ns)
        vm = self.guest_vm(
            ns, '-object', 'iothread,id=io0', '-object', 'iothread,id=io1',
            '-netdev', self.TAP + ',queues=2',
            '-device', '{"driver": "virtio-net-pci", "netdev": "net0", '
            '"id": "nic0", "mac": "%s", "mq": true, "vectors": 6, '
            '"iothread-vq-mapping": [{"iothread": "io0", "vqs": [0]}, '
            '{"iothread": "io1", "vqs": [1]}]}' % self.MAC,
            '-action', 'shutdown=pause')
        vm.add_args('-append', self.guest_cmdline(
            self.GUEST, run=['nptraffic', 'client', '--server', self.PEER,
                             '--irq'] + self.STANDARD_TRAFFIC,
            extra='np.wait=' + self.PEER))
        res = self.run_guest(vm, wait=False)
        self.assertEqual(server.wait(timeout=30), 0)
        self.assert_standard_traffic(res)
        self.wait_stopped(vm)
        st = self.device_stats(vm, pairs=2)
        wire = self.link_stats(ns, 'tap0')
        self.assertEqual(st['tx-packets'], wire['rx_packets'], (st, wire))
        self.assertEqual(st['rx-packets'] + st['rx-dropped'],
                         wire['tx_packets'], (st, wire))
        self.assertEqual(st['tx-dropped'] + st['rx-dropped'], 0, st)
        # Each pair carried frames, in its own IOThread (the flows of the
        # standard set spread over both: tap0 hashes them to its queues,
        # the guest sends from both vCPUs).
        for pair in self.device_stats(vm, pairs=2, per_pair=True):
            self.assertGreater(pair['tx-packets'] + pair['rx-packets'], 0,
                               st)
        self.assertGreater(self.iothread_cpu_ns(vm, 'io0'), 0)
        self.assertGreater(self.iothread_cpu_ns(vm, 'io1'), 0)
        self.assert_quit_cleanly(vm)

    def test_set_link(self):
        """set_link off on the device, then on the backend: the guest sees
        carrier go down and up, a ping flood stops and resumes."""
        ns = self.tap_ns()
        vm = self.dataplane_vm(ns, self.TAP)
        self.launch_idle_guest(vm, self.GUEST)
        self.assertEqual(self.ping(ns, '-c', '3', '-W', '5',
                                   self.GUEST_ADDR), (3, 3))
        for name in ('nic0', 'net0'):
            flood = ns.popen(['ping', '-q', '-c', '600', '-i', '0.005',
                              '-W', '1', self.GUEST_ADDR],
                             stdout=self.log_to('ping-%s.log' % name))
            time.sleep(0.5)
            before = self.device_stats(vm)
            time.sleep(0.5)
            flowing = self.device_stats(vm)
            self.assertGreater(flowing['rx-packets'], before['rx-packets'])
            self.assertGreater(flowing['tx-packets'], before['tx-packets'])
            vm.cmd('set_link', name=name, up=False)
            self.read_console(vm, 'NPGUEST link eth0 down', 30)
            time.sleep(0.5)
            down = self.device_stats(vm)
            time.sleep(0.5)
            # Nothing reaches the guest or leaves it while the link is down
            self.assertEqual(self.device_stats(vm)['rx-packets'],
                             down['rx-packets'])
            self.assertEqual(self.device_stats(vm)['tx-packets'],
                             down['tx-packets'])
            vm.cmd('set_link', name=name, up=True)
            self.read_console(vm, 'NPGUEST link eth0 up', 30)
            flood.wait(timeout=30)
            with open(self.log_file('ping-%s.log' % name)) as f:
                text = f.read()
            m = re.search(r'(\d+) packets transmitted, (\d+) received', text)
            self.assertIsNotNone(m, text)
            self.assertLess(int(m.group(2)), int(m.group(1)), text)
            # Back: no loss at all
            self.assertEqual(self.ping(ns, '-c', '50', '-i', '0.01', '-W',
                                       '2', self.GUEST_ADDR), (50, 50))
        self.assertGreater(self.device_stats(vm)['tx-packets'], 0)
        self.assert_quit_cleanly(vm)

    def test_stop_cont_and_reset(self):
        """stop/cont while TCP streams flow both ways; system_reset in the
        middle of one: the guest boots again and its whole test run passes,
        with stop/cont again during it."""
        ns = self.tap_ns()
        # Not --once: the rebooted guest opens a new session, and the old
        # one is killed with its server.
        server = self.host_server_forever(ns)
        vm = self.dataplane_vm(ns, self.TAP, '-action', 'reboot=reset')
        vm.add_args('-append', self.client_cmdline(
            ['tcp-rx:5', 'tcp-tx:5', 'udp-rx:1400:2:1000',
             'udp-tx:1400:2:1000']))
        vm.launch()
        self.read_console(vm, 'NPPHASE begin test=tcp-rx', 120)
        for _ in range(5):
            self.stop_cont(vm)
        # tcp-rx passed (to tcp-tx), then reset in the middle of tcp-tx
        self.read_console(vm, 'NPPHASE begin test=tcp-tx', 60)
        self.assert_tcp_intact(self.guest_results()['tcp-rx:0'])
        for _ in range(3):
            self.stop_cont(vm)
        vm.cmd('system_reset')
        server.kill()
        server.wait()
        server = self.host_server_forever(ns)

        mark = len(self.console_lines)
        self.read_console(vm, 'NPGUEST ready', 120)
        self.read_console(vm, 'NPPHASE begin test=tcp-rx', 60)
        for _ in range(5):
            self.stop_cont(vm)
        self.assert_guest_exit(self.read_console(vm, 'NPGUEST exit=', 120))
        res = self.guest_results(mark)
        self.assert_tcp_intact(res['tcp-rx:0'])
        self.assert_tcp_intact(res['tcp-tx:0'])
        self.assert_udp_intact(res['udp-rx:1400'], lossless=True)
        self.assert_udp_intact(res['udp-tx:1400'], lossless=True)
        vm.wait(timeout=30)
        self.assert_exited_cleanly(vm)


    COAL_COUNTERS = ('rx-coal-interrupts-packets', 'rx-coal-interrupts-usecs',
                     'rx-coal-held', 'rx-coal-unwanted',
                     'tx-coal-interrupts-packets', 'tx-coal-interrupts-usecs',
                     'tx-coal-held', 'tx-coal-unwanted')

    def coalescing_vm(self, ns, netdev, iothread, name=None):
        dev = ('virtio-net-pci,netdev=net0,id=nic0,mac=%s,notf_coal=on'
               % self.MAC)
        if iothread:
            return self.guest_vm(ns, '-object', 'iothread,id=io0',
                                 '-netdev', netdev, '-device',
                                 dev + ',iothread=io0', name=name)
        return self.guest_vm(ns, '-netdev', netdev, '-device', dev,
                             name=name)

    # Paced 64-byte UDP each way: at 2000 packets/s each one takes its own
    # interrupt unless the device holds them
    COAL_PHASE = ['udp-rx:64:2:2000', 'udp-tx:64:2:2000']
    COAL_ON = {'rx-usecs': '5000', 'rx-frames': '32',
               'tx-usecs': '5000', 'tx-frames': '32'}
    COAL_OFF = {'rx-usecs': '0', 'rx-frames': '1',
                'tx-usecs': '0', 'tx-frames': '1'}

    def check_coalescing(self, netdev, iothread):
        """The guest sets interrupt coalescing with ethtool -C's ioctl on a
        device with notf_coal=on: 5 ms or 32 packets (np.coal), then back
        to none (rx-usecs 0, tx-usecs 0; tx-frames stays 1 so that Linux
        6.1 keeps TX NAPI on).  Paced traffic each way takes less than
        half the interrupts per packet with coalescing than without, the
        driver reads back what it set, and the device counted what it
        held.  Lossless traffic passes intact."""
        ns, server_ns = self.backend_ns(netdev)
        server = self.host_server(server_ns)
        vm = self.coalescing_vm(ns, netdev, iothread,
                                name=netdev.split(',')[0])
        vm.add_args('-action', 'shutdown=pause')
        off = ['coalesce', 'eth0'] + [w for k, v in self.COAL_OFF.items()
                                      for w in (k, v)]
        vm.add_args('-append', self.guest_cmdline(
            self.GUEST, run=['nptraffic', 'client', '--server', self.PEER,
                             '--irq', 'udp-tx:1400:2:1000',
                             'udp-rx:1400:2:1000'] + self.COAL_PHASE +
            [':'.join(off)] + self.COAL_PHASE,
            extra='np.wait=%s np.coal=%s' % (
                self.PEER, ':'.join(w for k, v in self.COAL_ON.items()
                                    for w in (k, v)))))
        start = len(self.console_lines)
        res = self.run_guest(vm, wait=False)
        self.assertEqual(server.wait(timeout=60), 0)
        self.assert_udp_intact(res['udp-tx:1400'], lossless=True)
        self.assert_udp_intact(res['udp-rx:1400'], lossless=True)
        lines = self.console_lines[start:]
        coal = [parse_kv(line) for line in lines
                if line.startswith('NPGUEST coalesce')]
        self.assertEqual(coal, [self.COAL_ON, self.COAL_OFF],
                         '\n'.join(lines[-30:]))
        phases = [parse_kv(line) for line in lines
                  if line.startswith('NPRESULT test=udp-') and
                  'size=64' in line]
        self.assertEqual(len(phases), 4, '\n'.join(lines[-30:]))
        for d, on, off in (('rx', phases[0], phases[2]),
                           ('tx', phases[1], phases[3])):
            key = 'sent' if d == 'tx' else 'recv'
            ratio = [int(r['irq_' + d]) / max(int(r[key]), 1)
                     for r in (on, off)]
            self.log.info('%s %s: %.3f interrupts per packet coalesced, '
                          '%.3f not', netdev.split(',')[0], d, *ratio)
            self.assert_udp_intact(on)
            self.assert_udp_intact(off)
            self.assertLess(2 * ratio[0], ratio[1], (on, off))
        self.wait_stopped(vm)

        st = {}
        for r in vm.cmd('query-stats', target='netdev',
                        providers=[{'provider': 'virtio-net'}]):
            for s in r['stats']:
                st[s['name']] = st.get(s['name'], 0) + s['value']
        for name in self.COAL_COUNTERS:
            self.assertIn(name, st)
        self.log.info('coalescing counters: %s',
                      {k: st[k] for k in self.COAL_COUNTERS})
        for d in ('rx', 'tx'):
            self.assertGreater(st[d + '-coal-held'], 0, st)
            self.assertGreater(st[d + '-coal-interrupts-packets'] +
                               st[d + '-coal-interrupts-usecs'], 0, st)
        self.assert_quit_cleanly(vm)

    def test_coalescing_iothread(self):
        self.on_each_backend(lambda netdev:
                             self.check_coalescing(netdev, True))

    def test_coalescing_main_loop(self):
        self.on_each_backend(lambda netdev:
                             self.check_coalescing(netdev, False))

    def check_coalescing_rtt(self, iothread):
        """rx-usecs 20 ms and rx-frames 32: a slow ping's request waits
        in the guest's receive queue for the timer, about 20 ms, and no
        longer (plus TCG's noise, 50 ms on a loaded 2-CPU host), with or
        without an IOThread."""
        ns = self.tap_ns()
        vm = self.coalescing_vm(ns, self.TAP, iothread,
                                name='io' if iothread else 'main')
        vm.add_args('-append', self.guest_cmdline(
            self.GUEST, extra='np.idle=1 np.coal=rx-usecs:20000:'
                              'rx-frames:32:tx-usecs:0:tx-frames:1'))
        vm.launch()
        self.read_console(vm, 'NPGUEST ready', 180)
        # ARP first: its request waits for the timer too
        self.assertEqual(self.ping(ns, '-c', '2', '-W', '2',
                                   self.GUEST_ADDR), (2, 2))
        r = ns.run('ping', '-q', '-c', '10', '-i', '0.3', '-W', '2',
                   self.GUEST_ADDR, check=False)
        m = re.search(r'(\d+) received.*\n.*= ([\d.]+)/([\d.]+)/([\d.]+)/',
                      r.stdout)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        received, best, avg, worst = (int(m.group(1)), float(m.group(2)),
                                      float(m.group(3)), float(m.group(4)))
        self.log.info('rtt min/avg/max %.1f/%.1f/%.1f ms with rx-usecs 20000',
                      best, avg, worst)
        self.assertEqual(received, 10, r.stdout)
        self.assertGreater(best, 15.0, r.stdout)
        self.assertLess(worst, 20.0 + 50.0, r.stdout)
        self.assert_quit_cleanly(vm)

    def test_coalescing_rtt(self):
        self.check_coalescing_rtt(True)
        self.check_coalescing_rtt(False)


if __name__ == '__main__':
    QemuSystemTest.main()
