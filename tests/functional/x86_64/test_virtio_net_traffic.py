#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Real traffic through virtio-net-pci and a tap backend, both directions.

from qemu_test import QemuSystemTest
from qemu_test.traffic import TrafficTest


class VirtioNetTraffic(TrafficTest):
    """
    Passes traffic between a guest and a peer through virtio-net and tap.

    Steps:
      1. create a network namespace with a tap device at 10.77.0.1/24
      2. start the nptraffic server there (the peer)
      3. boot the tiny guest with QEMU inside the namespace, its
         virtio-net-pci device on that tap, address 10.77.0.2/24
      4. the guest runs paced UDP both ways (every datagram must arrive
         intact), UDP at full speed (whatever arrives must be intact),
         TCP streams both ways (byte counts and checksums must agree), and
         UDP request/response
      5. check what each side counted
    """

    def test_tap_both_directions(self):
        ns = self.netns()
        ns.add_tap('tap0', '10.77.0.1/24')
        server = self.host_server(ns)
        vm = self.guest_vm(
            ns,
            '-netdev', 'tap,id=net0,ifname=tap0,script=no,downscript=no',
            '-device', 'virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56')
        vm.add_args('-append', self.standard_traffic_cmdline('10.77.0.2/24',
                                                             '10.77.0.1'))
        res = self.run_guest(vm)
        self.assertEqual(server.wait(timeout=30), 0)
        self.assert_standard_traffic(res)

    def test_link_down_stops_traffic(self):
        """set_link off on the NIC: paced UDP from the guest must not
        reach the peer while the link is down (proves the test can see
        broken traffic), and flows again once the link is back."""
        ns = self.netns()
        ns.add_tap('tap0', '10.77.0.1/24')
        vm = self.guest_vm(
            ns,
            '-netdev', 'tap,id=net0,ifname=tap0,script=no,downscript=no',
            '-device', 'virtio-net-pci,netdev=net0,id=nic0')
        # Without np.run the guest idles until we ping it.
        self.launch_idle_guest(vm, '10.77.0.2/24')
        ping = ns.run('ping', '-c', '3', '-W', '5', '10.77.0.2', check=False)
        self.assertEqual(ping.returncode, 0, ping.stdout)
        vm.cmd('set_link', name='nic0', up=False)
        ping = ns.run('ping', '-c', '2', '-W', '2', '10.77.0.2', check=False)
        self.assertNotEqual(ping.returncode, 0, ping.stdout)
        vm.cmd('set_link', name='nic0', up=True)
        ping = ns.run('ping', '-c', '3', '-W', '5', '10.77.0.2', check=False)
        self.assertEqual(ping.returncode, 0, ping.stdout)


if __name__ == '__main__':
    QemuSystemTest.main()
