#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Copyright (c) 2026 netplane developers
#
# netplane/nptop, the per-queue rates tool, against a guest whose
# virtio-net device runs in an IOThread while pings flow both ways.

import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

from qemu_test import QemuSystemTest
from test_virtio_net_dataplane import DataplaneTest


def nptop_path():
    """netplane/nptop: $NPTOP, or the one of the repository that this test
    file (a symlink in the prepared QEMU tree) belongs to."""
    here = os.path.dirname(os.path.realpath(__file__))
    return os.getenv('NPTOP') or os.path.normpath(
        os.path.join(here, '..', '..', '..', 'netplane', 'nptop'))


class Nptop(DataplaneTest):
    """
    Steps:
      1. tap0 in a private namespace, the tiny guest on virtio-net-pci
         with iothread=io0, and a second QMP monitor on a unix socket
      2. pings every 5 ms from the namespace to the guest
      3. nptop --once --json on that socket: the NIC and its netdev in one
         entry, packets and bytes per second both ways, kicks and
         interrupts per packet and packets per batch where they must be;
         nptop --once: the table's header and the NIC's rows
      4. QEMU quits under a running nptop: it exits 1 with a message
    Also, without a guest: a socket that does not exist, and counters that
    go back (reset) or disappear (unplug) between two samples.
    """

    def nptop(self, *args, timeout=30):
        return subprocess.run([sys.executable, self.tool] + list(args),
                              capture_output=True, text=True,
                              timeout=timeout)

    def setUp(self):
        super().setUp()
        self.tool = nptop_path()
        if not os.path.exists(self.tool):
            if os.getenv('QEMU_TEST_TRAFFIC_STRICT'):
                self.fail('no nptop at %s (set NPTOP)' % self.tool)
            self.skipTest('no nptop at %s (set NPTOP)' % self.tool)

    def test_rates_under_traffic(self):
        # A short path: unix socket paths stop at 108 bytes
        tmp = tempfile.mkdtemp(prefix='nptop-')
        self.addCleanup(shutil.rmtree, tmp, True)
        sock = os.path.join(tmp, 'qmp.sock')
        ns = self.tap_ns()
        vm = self.dataplane_vm(ns, self.TAP, '-qmp',
                               'unix:%s,server=on,wait=off' % sock)
        self.launch_idle_guest(vm, self.GUEST)
        self.assertEqual(self.ping(ns, '-c', '2', '-W', '5',
                                   self.GUEST_ADDR), (2, 2))
        flood = ns.popen(['ping', '-q', '-c', '3000', '-i', '0.005', '-W',
                          '1', self.GUEST_ADDR],
                         stdout=self.log_to('ping.log'))

        r = self.nptop('--once', '--json', sock)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 1, r.stdout)
        res = json.loads(lines[0])
        self.log.info('nptop --json: %s', lines[0])
        self.assertAlmostEqual(res['interval'], 1.0, delta=0.5)
        nics = [q for q in res['queues'] if q['nic'] == 'nic0']
        self.assertEqual(len(nics), 1, res)
        q = nics[0]
        self.assertEqual((q['netdev'], q['queue'], q['new'], q['reset']),
                         ('net0', 0, False, []), q)
        # Echo requests in, replies out: up to 200 a second each way
        for d in ('rx', 'tx'):
            rate = q[d]
            self.assertGreater(rate['packets_per_s'], 50, q)
            self.assertGreater(rate['bytes_per_s'],
                               64 * rate['packets_per_s'], q)
            # At most one interrupt per used-ring flush, the guest takes
            # some; the sample's edges may cut a batch from its interrupt.
            self.assertGreater(rate['interrupts_per_packet'], 0.0, q)
            self.assertLessEqual(rate['interrupts_per_packet'], 1.1, q)
            self.assertGreaterEqual(rate['packets_per_batch'], 0.9, q)
        self.assertLessEqual(q['tx']['kicks_per_packet'], 1.1, q)
        self.assertIn('tx-kicks', q['counters']['virtio-net'])

        r = self.nptop('--once', sock)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.log.info('nptop:\n%s', r.stdout)
        self.assertRegex(r.stdout, r'(?m)^NIC +NETDEV +Q +DIR +PKT/S +'
                         r'BYTES/S +KICK/PKT +IRQ/PKT +PKT/BATCH +DROPS/S$')
        self.assertRegex(r.stdout, r'(?m)^nic0 +net0 +0 +rx +\d+ ')
        self.assertRegex(r.stdout, r'(?m)^ +tx +\d+ ')

        # QEMU goes away under a running nptop
        top = subprocess.Popen([sys.executable, self.tool, '-n', '60',
                                '--json', sock], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        self.assertTrue(top.stdout.readline().startswith('{'))
        flood.kill()
        self.assert_quit_cleanly(vm)
        out, err = top.communicate(timeout=30)
        self.assertEqual(top.returncode, 1, err)
        self.assertIn('QEMU closed the QMP connection', err)
        self.assertNotIn('Traceback', err)

    def test_no_socket(self):
        path = os.path.join(self.workdir, 'missing.sock')
        r = self.nptop('--once', path)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stdout, '')
        self.assertIn('%s: no such socket' % path, r.stderr)
        self.assertIn('-qmp unix:%s,server=on,wait=off' % path, r.stderr)
        self.assertNotIn('Traceback', r.stderr)

    def test_counters_reset_and_unplugged(self):
        """Between two samples, nic0's counters go back (a reset): shown
        as reset, no rate; nic1 and its netdev go (unplug): listed as gone;
        nic2 comes: new, no rate yet."""
        loader = importlib.machinery.SourceFileLoader('nptop', self.tool)
        spec = importlib.util.spec_from_loader('nptop', loader)
        nptop = importlib.util.module_from_spec(spec)
        loader.exec_module(nptop)

        def sample(t, counters, peers):
            s = nptop.Sample.__new__(nptop.Sample)
            s.time = s.wall = t
            s.counters = counters
            s.peers = peers
            return s

        before = sample(10.0, {
            ('virtio-net', 'nic0', 0): {'rx-packets': 500, 'tx-packets': 9},
            ('virtio-net', 'nic1', 0): {'rx-packets': 5, 'rx-batches': 1},
            ('net', 'net1', 0): {'rx-packets': 5, 'rx-ring-full': 1},
        }, {'nic0': 'net0', 'nic1': 'net1'})
        after = sample(12.0, {
            ('virtio-net', 'nic0', 0): {'rx-packets': 20, 'tx-packets': 30},
            ('virtio-net', 'nic2', 0): {'rx-packets': 7},
        }, {'nic0': 'net0', 'nic2': 'net2'})
        res = nptop.compute(before, after)
        self.assertEqual(res['interval'], 2.0)
        self.assertEqual(res['gone'], [{'nic': 'nic1', 'netdev': 'net1',
                                        'queue': 0}])
        q0, q2 = res['queues']
        self.assertEqual((q0['nic'], q0['reset'], q0['rx']['packets_per_s'],
                          q0['tx']['packets_per_s']),
                         ('nic0', ['virtio-net'], None, None), q0)
        self.assertEqual((q2['nic'], q2['netdev'], q2['new'],
                          q2['rx']['packets_per_s']),
                         ('nic2', 'net2', True, None), q2)
        text = nptop.table(res, 'test')
        self.assertRegex(text, r'(?m)^nic0 +net0 +0 +rx +reset$')
        self.assertRegex(text, r'(?m)^nic2 +net2 +0 +rx +new$')
        self.assertIn('gone: nic1 net1 queue 0', text)
        self.assertNotRegex(text, r' -\d')


if __name__ == '__main__':
    QemuSystemTest.main()
