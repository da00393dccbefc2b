#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Copyright (c) 2026 netplane developers
#
# scripts/bpftrace/ on the USDT probes of a QEMU built with the dtrace
# trace backend, against a live guest whose virtio-net device runs in an
# IOThread.

import json
import os
import shutil
import subprocess

from qemu_test import QemuSystemTest
from test_virtio_net_dataplane import DataplaneTest

TRACEFS = '/sys/kernel/tracing'


def scripts_dir():
    """scripts/bpftrace of the tree that this test file (a symlink in the
    prepared QEMU tree) belongs to."""
    here = os.path.dirname(os.path.realpath(__file__))
    return os.path.normpath(os.path.join(here, '..', '..', '..', 'scripts',
                                         'bpftrace'))


class UsdtProbes(DataplaneTest):
    """
    Steps:
      1. tap0 in a private namespace, the tiny guest on virtio-net-pci
         with iothread=io0; it sends UDP to the namespace, then receives
         a flood from it
      2. while it sends: virtio-net-tx-batch.bt and
         virtio-net-irq-interval.bt, 4 seconds each, at once; while it
         receives: virtio-net-rx-stall.bt
      3. each histogram is there and agrees with the device's counters,
         read before and after the script ran: no more TX buffers than
         the device sent, no more interrupt intervals than interrupts, no
         more stalls than times receive found no buffers
    Skipped when QEMU has no USDT probes, unless NETPLANE_USDT is set
    (make check-usdt): then that is a failure.
    """

    SECS = 4

    def setUp(self):
        super().setUp()
        missing = None
        self.bpftrace = shutil.which('bpftrace')
        notes = subprocess.run(['readelf', '-n', self.qemu_bin],
                               capture_output=True, text=True).stdout
        if not self.bpftrace:
            missing = 'no bpftrace (netplane/deps.sh usdt)'
        elif 'Name: virtio_net_dp_tx_round' not in notes:
            missing = ('%s has no USDT probes (make usdt builds one)'
                       % self.qemu_bin)
        if missing:
            if os.getenv('NETPLANE_USDT'):
                self.fail(missing)
            self.skipTest(missing)
        # bpftrace removes its uprobes through tracefs
        if not os.path.exists(os.path.join(TRACEFS, 'uprobe_events')):
            subprocess.run(['mount', '-t', 'tracefs', 'nodev', TRACEFS],
                           check=True)
            self.addCleanup(subprocess.run, ['umount', TRACEFS])

    def start_script(self, name, pid):
        """scripts/bpftrace/@name on QEMU @pid for SECS seconds, with
        bpftrace's JSON output."""
        path = os.path.join(scripts_dir(), name)
        self.assertTrue(os.path.exists(path), path)
        return subprocess.Popen([self.bpftrace, '-f', 'json', '-p',
                                 str(pid), path, str(self.SECS)],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def script_maps(self, proc):
        """The maps that the script printed when it ended, by name."""
        out, err = proc.communicate(timeout=120)
        self.log.info('bpftrace: %s%s', out, err)
        self.assertEqual(proc.returncode, 0, err)
        maps = {}
        for line in out.splitlines():
            if line.startswith('{'):
                msg = json.loads(line)
                if msg['type'] in ('hist', 'map'):
                    maps.update(msg['data'])
        return maps

    @staticmethod
    def hist_count(hist):
        """Events in a histogram map, over all its keys."""
        return sum(b['count'] for buckets in hist.values()
                   for b in buckets)

    def interrupts(self, st):
        return sum(v for k, v in st.items()
                   if k.endswith('-interrupts') or '-coal-interrupts-' in k)

    def test_scripts_on_live_guest(self):
        ns = self.tap_ns()
        server = self.host_server(ns)
        vm = self.dataplane_vm(ns, self.TAP, '-action', 'shutdown=pause')
        vm.add_args('-append', self.client_cmdline(['udp-tx:64:10',
                                                    'udp-rx:64:10']))
        vm.launch()
        pid = vm.get_pid()

        self.read_console(vm, 'NPPHASE begin test=udp-tx', 180)
        before = self.device_stats(vm)
        tx = self.start_script('virtio-net-tx-batch.bt', pid)
        irq = self.start_script('virtio-net-irq-interval.bt', pid)
        tx_maps = self.script_maps(tx)
        irq_maps = self.script_maps(irq)
        d = self.delta(self.device_stats(vm), before)

        # One queue pair: key 0
        self.assertEqual(list(tx_maps['@tx_buffers_per_round']), ['0'],
                         tx_maps)
        sent = tx_maps['@tx_buffers']['0']
        rounds = self.hist_count(tx_maps['@tx_buffers_per_round'])
        self.assertGreater(sent, 1000, tx_maps)
        self.assertLessEqual(sent, d['tx-packets'], (tx_maps, d))
        self.assertGreater(rounds, 0, tx_maps)

        intervals = self.hist_count(irq_maps['@irq_interval_us'])
        self.assertGreater(intervals, 0, irq_maps)
        self.assertLessEqual(intervals, self.interrupts(d), (irq_maps, d))
        # The IOThread's interrupts leave through the guest notifier, at
        # most one write each (one more per queue at the window's edge)
        irqs = sum(irq_maps['@interrupts'].values())
        writes = sum(irq_maps.get('@eventfd_writes', {}).values())
        self.assertGreater(writes, 0, irq_maps)
        self.assertLessEqual(writes, irqs + len(irq_maps['@interrupts']),
                             irq_maps)

        self.read_console(vm, 'NPPHASE begin test=udp-rx', 60)
        before = self.device_stats(vm)
        rx = self.start_script('virtio-net-rx-stall.bt', pid)
        rx_maps = self.script_maps(rx)
        d_rx = self.delta(self.device_stats(vm), before)
        self.assertGreater(d_rx['rx-no-buffers'], 0, d_rx)
        stalls = self.hist_count(rx_maps['@rx_stall_us'])
        self.assertGreater(stalls, 0, rx_maps)
        self.assertLessEqual(stalls, d_rx['rx-no-buffers'], (rx_maps, d_rx))

        self.assert_guest_exit(self.read_console(vm, 'NPGUEST exit=', 120))
        self.assertEqual(server.wait(timeout=30), 0)
        self.log.info('%d TX buffers in %d rounds, %d interrupt intervals '
                      '(device: %d interrupts), %d eventfd writes for %d '
                      'interrupts, %d RX stalls (device: %d without '
                      'buffers)', sent, rounds, intervals, self.interrupts(d),
                      writes, irqs, stalls, d_rx['rx-no-buffers'])
        self.wait_stopped(vm)
        self.assert_quit_cleanly(vm)


if __name__ == '__main__':
    QemuSystemTest.main()
