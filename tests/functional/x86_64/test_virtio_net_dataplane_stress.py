#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Copyright (c) 2026 netplane developers
#
# virtio-net with an IOThread dataplane, stopped, continued, its link
# toggled and the VM reset, over and over while traffic flows; the guest's
# network must work at the end.  Also run by 'make check-asan' against an
# AddressSanitizer build.

import os
import random
import time

from qemu_test import QemuSystemTest
from test_virtio_net_dataplane import DataplaneTest


class VirtioNetDataplaneStress(DataplaneTest):
    """
    Steps:
      1. tap0 in a private namespace, the tiny guest on virtio-net-pci with
         iothread=io0, nptraffic's server taking any number of sessions
      2. three boots cut short: while TCP streams flow, ten of a random
         (seeded) mix of stop/cont, set_link off/on on the device and on the
         backend, and set_link while stopped; then system_reset in the
         middle of the traffic (while running, while stopped, with the
         link down); the guest boots again
      3. the last boot: the same mix during its TCP streams both ways,
         which must arrive intact; then paced UDP both ways with nothing
         lost, UDP at full speed and request/response
      4. QEMU ran all along and exits with status 0
    """

    timeout = 900

    TCP_SECS = 10
    TESTS = ['tcp-rx:%d' % TCP_SECS, 'tcp-tx:%d' % TCP_SECS,
             'udp-rx:1400:2:1000', 'udp-tx:1400:2:1000',
             'udp-rx:64:2', 'udp-tx:64:2', 'rr:64:2']
    # Disturbances in a boot that gets reset: a count, not a time, so that
    # a slow host does as many (the seed fixes which)
    RESET_ROUND_OPS = 10

    def setUp(self):
        super().setUp()
        # QEMU_TEST_STRESS_SEED picks another sequence of disturbances
        seed = int(os.environ.get('QEMU_TEST_STRESS_SEED', '20260101'))
        self.log.info('seed %d', seed)
        self.rng = random.Random(seed)
        self.ops = {'stop/cont': 0, 'set_link': 0, 'system_reset': 0}

    def set_link(self, vm, name, up):
        vm.cmd('set_link', name=name, up=up)
        self.ops['set_link'] += 1

    def one_op(self, vm):
        """One random disturbance, then a moment of traffic."""
        rng = self.rng
        op = rng.choices(['stop', 'stop-link', 'link-nic', 'link-net'],
                         weights=[55, 15, 15, 15])[0]
        pause = rng.uniform(0.05, 0.4)
        if op == 'stop':
            vm.cmd('stop')
            time.sleep(pause)
            vm.cmd('cont')
            self.ops['stop/cont'] += 1
        elif op == 'stop-link':
            vm.cmd('stop')
            self.set_link(vm, 'nic0', False)
            time.sleep(pause)
            vm.cmd('cont')
            time.sleep(rng.uniform(0.05, 0.2))
            self.set_link(vm, 'nic0', True)
            self.ops['stop/cont'] += 1
        else:
            name = 'nic0' if op == 'link-nic' else 'net0'
            self.set_link(vm, name, False)
            time.sleep(pause)
            self.set_link(vm, name, True)
        self.assertEqual(vm.cmd('query-status')['status'], 'running')
        time.sleep(rng.uniform(0.1, 0.4))

    def disturb(self, vm, seconds, phase_end=None):
        """Disturbances for @seconds, or until the console says that
        @phase_end ended."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if phase_end and self.poll_console(vm, 'NPPHASE end test=' +
                                               phase_end):
                return
            self.one_op(vm)

    def test_stop_cont_link_reset_cycles(self):
        ns = self.tap_ns()
        vm = self.dataplane_vm(ns, self.TAP, '-action', 'reboot=reset',
                               '-action', 'shutdown=pause')
        vm.add_args('-append', self.client_cmdline(self.TESTS))
        try:
            self.cycles(ns, vm)
        except AssertionError as e:
            # A hung guest or a stalled queue: say where each queue stood
            raise AssertionError('%s\nafter %s; QEMU:\n%s'
                                 % (e, self.ops, self.virtio_state(vm))
                                 ) from None
        self.assert_quit_cleanly(vm)

    def cycles(self, ns, vm):
        server = self.host_server_forever(ns)
        vm.launch()

        # Boots cut short by a reset: while running, while stopped, while
        # the link is down.
        for how in ('running', 'stopped', 'link-down'):
            self.read_console(vm, 'NPGUEST ready', 180)
            self.read_console(vm, 'NPPHASE begin test=tcp-rx', 60)
            for _ in range(self.RESET_ROUND_OPS):
                self.one_op(vm)
            if how == 'stopped':
                vm.cmd('stop')
            elif how == 'link-down':
                self.set_link(vm, 'nic0', False)
            vm.cmd('system_reset')
            self.ops['system_reset'] += 1
            server.kill()
            server.wait()
            server = self.host_server_forever(ns)
            if how == 'stopped':
                time.sleep(0.2)
                vm.cmd('cont')
                self.ops['stop/cont'] += 1
            elif how == 'link-down':
                time.sleep(0.5)
                self.set_link(vm, 'nic0', True)

        # The last boot runs to the end.  Disturb the TCP streams only, and
        # stop early enough that no set_link reaches into the paced UDP
        # tests (a stopped guest's clock stands still, so its streams only
        # get longer).
        self.read_console(vm, 'NPGUEST ready', 180)
        mark = len(self.console_lines)
        for test in ('tcp-rx', 'tcp-tx'):
            self.read_console(vm, 'NPPHASE begin test=' + test, 60)
            self.disturb(vm, self.TCP_SECS - 1.5, phase_end=test)
        self.assert_guest_exit(self.read_console(vm, 'NPGUEST exit=', 180))
        res = self.guest_results(mark)
        self.log.info('disturbances: %s', self.ops)
        self.assert_tcp_intact(res['tcp-rx:0'])
        self.assert_tcp_intact(res['tcp-tx:0'])
        self.assert_udp_intact(res['udp-rx:1400'], lossless=True)
        self.assert_udp_intact(res['udp-tx:1400'], lossless=True)
        self.assert_udp_intact(res['udp-rx:64'])
        self.assert_udp_intact(res['udp-tx:64'])
        self.assertGreater(int(res['rr:64']['trans']), 10)
        self.assertGreaterEqual(self.ops['stop/cont'], 30, self.ops)
        self.assertGreaterEqual(self.ops['set_link'], 15, self.ops)
        self.assertEqual(self.ops['system_reset'], 3)

        # The guest powered off; the dataplane carried the last boot.
        self.wait_stopped(vm)
        st = self.device_stats(vm)
        self.assertGreater(st['tx-packets'], 0, st)
        self.assertGreater(st['rx-packets'], 0, st)


if __name__ == '__main__':
    QemuSystemTest.main()
