#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# A guest on -netdev af-packet, attached to a veth leg, talking to a peer
# in another network namespace.

import os
import re
import shutil
import socket
import struct
import time

from qemu.machine import QEMUMachine

from qemu_test import QemuSystemTest
from qemu_test.traffic import TrafficTest

IFF_PROMISC = 0x100
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V3 = 2


class AFPacketTest(TrafficTest):
    """
    Helpers for a guest on -netdev af-packet,ifname=vq0, a veth leg whose
    peer vp0 (10.78.0.1/24) is in a second namespace.
    """

    PEER = '10.78.0.1'
    GUEST = '10.78.0.2/24'

    def veth(self):
        qns = self.netns('qa')
        peer = self.netns('qp')
        for ns in (qns, peer):
            ns.run('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1')
            ns.run('sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1')
        qns.add_veth('vq0', peer, 'vp0', self.PEER + '/24')
        return qns, peer

    def query_stats(self, vm, queues=1):
        """Counters of netdev net0, summed over its @queues queues."""
        res = vm.cmd('query-stats', target='netdev', netdevs=['net0'],
                     providers=[{'provider': 'net'}])
        self.assertEqual(sorted(r['queue'] for r in res),
                         list(range(queues)), res)
        out = {}
        for r in res:
            self.assertEqual(r['netdev'], 'net0')
            for st in r['stats']:
                out[st['name']] = out.get(st['name'], 0) + st['value']
        return out

    @staticmethod
    def if_flags(ns, dev):
        return int(ns.run('cat', '/sys/class/net/%s/flags' % dev).stdout, 16)


class NetdevAFPacket(AFPacketTest):
    """
    Steps, in each test:
      1. create two network namespaces: QEMU's, holding the veth leg vq0
         that af-packet attaches to (no address, IPv6 off), and the
         peer's, holding vp0 at 10.78.0.1/24 and nptraffic's server
      2. boot the tiny guest (10.78.0.2/24) with virtio-net-pci on
         -netdev af-packet,ifname=vq0 and QEMU inside the first namespace
      3. pass traffic and check what arrived, what the backend counted,
         and what happened to the interface
    """

    def af_packet_vm(self, qns, netdev_opts='', extra=(), device_opts='',
                     **kw):
        return self.guest_vm(
            qns,
            '-netdev', 'af-packet,id=net0,ifname=vq0' + netdev_opts,
            '-device', 'virtio-net-pci,netdev=net0,id=nic0' + device_opts,
            *extra, **kw)

    @staticmethod
    def link_counters(ns, dev):
        out = {}
        for key in ('rx_packets', 'tx_packets'):
            r = ns.run('cat', '/sys/class/net/%s/statistics/%s' % (dev, key))
            out[key] = int(r.stdout)
        return out

    def run_traffic(self, netdev_opts, device='virtio-net-pci', queues=1):
        qns, peer = self.veth()
        if 'vnet-hdr=on' not in netdev_opts:
            # Without a vnet header, frames above the MTU are dropped (and
            # counted): the peer's veth must not hand over TSO frames.
            peer.run('ethtool', '-K', 'vp0', 'tso', 'off', 'gso', 'off')
        server = self.host_server(peer)
        vm = self.guest_vm(
            qns,
            '-netdev', 'af-packet,id=net0,ifname=vq0' + netdev_opts,
            '-device', device + ',netdev=net0,id=nic0',
            '-action', 'shutdown=pause')
        vm.add_args('-append', self.standard_traffic_cmdline(self.GUEST,
                                                             self.PEER))
        res = self.run_guest(vm, wait=False)
        self.assertEqual(server.wait(timeout=30), 0)
        self.assert_standard_traffic(res)

        # The guest is paused now (shutdown=pause): nothing moves.
        st = self.query_stats(vm, queues)
        wire = self.link_counters(peer, 'vp0')
        # Every frame the backend sent reached the peer, and every frame
        # the peer sent was taken by the backend or counted as dropped.
        self.assertEqual(st['tx-packets'], wire['rx_packets'], (st, wire))
        self.assertEqual(st['rx-packets'] + st['rx-dropped'] +
                         st['rx-truncated'] + st['rx-oversize'],
                         wire['tx_packets'], (st, wire))
        self.assertGreaterEqual(st['tx-packets'], 2000 + 2000)
        self.assertEqual(st['tx-errors'], 0, st)
        info = vm.cmd('human-monitor-command', command_line='info network')
        self.assertIn('type=af-packet', info)
        self.assertIn('rx-packets=', info)
        return st

    def test_traffic_both_directions(self):
        self.run_traffic('')

    def test_vnet_hdr_offloads(self):
        """With vnet-hdr=on the guest negotiates checksum and TSO
        offloads; TCP must still arrive intact both ways."""
        self.run_traffic(',vnet-hdr=on')

    def test_multiqueue_fanout(self):
        """queues=2 with a two-queue-pair virtio-net device, the sockets
        in a fanout group, transmitting past the qdisc."""
        self.run_traffic(',queues=2,qdisc-bypass=on',
                         device='virtio-net-pci,mq=on,vectors=6', queues=2)

    def test_oversize_counted(self):
        """A frame above the MTU (a UDP GSO frame from the peer) is
        dropped and counted, never delivered cut short."""
        qns, peer = self.veth()
        vm = self.af_packet_vm(qns)
        self.launch_idle_guest(vm, self.GUEST)
        before = self.query_stats(vm)
        # 8 segments of 1000 bytes in one UDP_SEGMENT (GSO) send.
        peer.run('python3', '-c', """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, 1000)
s.sendto(b'x' * 8000, ('10.78.0.2', 9))
""")
        after = self.wait_stat(vm, 'rx-oversize', before['rx-oversize'] + 1)
        self.assertEqual(after['rx-oversize'] - before['rx-oversize'], 1,
                         after)
        self.assertEqual(after['rx-truncated'], 0, after)

    def test_promisc_and_cleanup(self):
        qns, peer = self.veth()
        vm = self.af_packet_vm(qns)
        self.launch_idle_guest(vm, self.GUEST)
        self.assertTrue(self.if_flags(qns, 'vq0') & IFF_PROMISC)
        # Frames for another MAC reach the backend (counted) in promisc.
        before = self.query_stats(vm)['rx-filtered']
        self.foreign_pings(peer)
        self.assertGreaterEqual(self.query_stats(vm)['rx-filtered'] - before,
                                5)
        vm.shutdown()
        self.assertFalse(self.if_flags(qns, 'vq0') & IFF_PROMISC,
                         'promiscuous mode left on after QEMU quit')

        vm2 = self.af_packet_vm(qns, ',promisc=off', name='nopromisc')
        self.launch_idle_guest(vm2, self.GUEST)
        self.assertFalse(self.if_flags(qns, 'vq0') & IFF_PROMISC)

    @staticmethod
    def foreign_pings(peer, count=5):
        """The peer pings an address whose MAC is no guest's."""
        peer.run('ip', 'neigh', 'replace', '10.78.0.99', 'lladdr',
                 '02:00:00:00:00:99', 'dev', 'vp0')
        peer.run('ping', '-c', str(count), '-i', '0.2', '-W', '1',
                 '10.78.0.99', check=False)

    @staticmethod
    def device_rx_packets(vm):
        """Frames the IOThread dataplane put in the guest's buffers."""
        res = vm.cmd('query-stats', target='netdev', netdevs=['nic0'],
                     providers=[{'provider': 'virtio-net'}])
        return sum(st['value'] for r in res for st in r['stats']
                   if st['name'] == 'rx-packets')

    def wait_stat(self, vm, name, value, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            st = self.query_stats(vm)
            if st[name] >= value or time.monotonic() > deadline:
                return st
            time.sleep(0.2)

    def test_isolation_rx(self):
        """A guest that turned promiscuous gets no unicast frame for
        another MAC (trust=off, the default), in the main loop and in an
        IOThread, and each one is counted; with trust=on it gets them."""
        qns, peer = self.veth()
        for name, netdev_opts, device_opts, trusted in (
                ('main', '', '', False),
                ('iothread', '', ',iothread=io0', False),
                ('trusted', ',trust=on', ',iothread=io0', True)):
            vm = self.af_packet_vm(qns, netdev_opts,
                                   ('-object', 'iothread,id=io0'),
                                   device_opts, name=name)
            vm.add_args('-append', self.guest_cmdline(
                self.GUEST, extra='np.idle=1 np.promisc=1'))
            vm.launch()
            self.read_console(vm, 'NPGUEST ready', 180)
            before = self.query_stats(vm)
            dev_before = self.device_rx_packets(vm) if device_opts else 0
            self.foreign_pings(peer)
            if trusted:
                after = self.wait_stat(vm, 'rx-packets',
                                       before['rx-packets'] + 5)
                self.assertGreaterEqual(
                    self.device_rx_packets(vm) - dev_before, 5, name)
                self.assertEqual(after['rx-filtered'], 0, name)
            else:
                after = self.wait_stat(vm, 'rx-filtered',
                                       before['rx-filtered'] + 5)
                self.assertEqual(after['rx-filtered'] -
                                 before['rx-filtered'], 5, (name, after))
                self.assertEqual(after['rx-packets'], before['rx-packets'],
                                 (name, after))
                if device_opts:
                    self.assertEqual(self.device_rx_packets(vm), dev_before,
                                     name)
            vm.shutdown()

    def test_isolation_tx(self):
        """A guest that gives itself another MAC is not heard on the wire
        (spoofchk=on, the default), every frame counted, until the host
        lets it (spoofchk=off, and trust=on for the replies)."""
        qns, peer = self.veth()
        for name, netdev_opts, allowed in (
                ('spoofchk', '', False),
                ('allowed', ',spoofchk=off,trust=on', True)):
            peer.run('ip', 'neigh', 'flush', 'dev', 'vp0')
            wire = self.link_counters(peer, 'vp0')
            vm = self.af_packet_vm(qns, netdev_opts, name=name)
            vm.add_args('-append', self.guest_cmdline(
                self.GUEST, extra='np.idle=1 np.mac=02:00:00:00:00:77'))
            vm.launch()
            self.read_console(vm, 'NPGUEST ready', 180)
            ping = peer.run('ping', '-c', '3', '-W', '2', '10.78.0.2',
                            check=False)
            st = self.query_stats(vm)
            heard = (self.link_counters(peer, 'vp0')['rx_packets'] -
                     wire['rx_packets'])
            if allowed:
                self.assertEqual(ping.returncode, 0, ping.stdout)
                self.assertEqual(st['tx-spoofed'], 0, st)
            else:
                self.assertNotEqual(ping.returncode, 0, ping.stdout)
                self.assertGreater(st['tx-spoofed'], 0, st)
                self.assertEqual(st['tx-packets'], 0, st)
                self.assertEqual(heard, 0, st)
            vm.shutdown()

    def test_link_follows_interface(self):
        """The guest's link follows the interface; removing the interface
        takes the link down and QEMU keeps running."""
        qns, peer = self.veth()
        vm = self.af_packet_vm(qns)
        self.launch_idle_guest(vm, self.GUEST)
        ping = peer.run('ping', '-c', '3', '-W', '5', '10.78.0.2',
                        check=False)
        self.assertEqual(ping.returncode, 0, ping.stdout)

        peer.run('ip', 'link', 'set', 'vp0', 'down')
        self.read_console(vm, 'NPGUEST link eth0 down', 30)
        peer.run('ip', 'link', 'set', 'vp0', 'up')
        self.read_console(vm, 'NPGUEST link eth0 up', 30)
        ping = peer.run('ping', '-c', '3', '-W', '5', '10.78.0.2',
                        check=False)
        self.assertEqual(ping.returncode, 0, ping.stdout)

        qns.run('ip', 'link', 'del', 'vq0')
        self.read_console(vm, 'NPGUEST link eth0 down', 30)
        self.assertEqual(vm.cmd('query-status')['status'], 'running')
        vm.shutdown()
        self.assertRegex(vm.get_log(), 'interface vq0 disappeared')

    def test_bad_options(self):
        """Each bad option gets one clear error naming it."""
        qns, peer = self.veth()
        cases = [
            ('af-packet,id=n0', 'ifname is required'),
            ('af-packet,id=n0,ifname=nosuchif0', "no interface 'nosuchif0'"),
            ('af-packet,id=n0,ifname=vq0,rx-ring-size=1000',
             'rx-ring-size must be'),
            ('af-packet,id=n0,ifname=vq0,rx-retire-timeout=0',
             'rx-retire-timeout must be'),
            ('af-packet,id=n0,ifname=vq0,queues=0', 'queues must be'),
            ('af-packet,id=n0,ifname=vq0,fd=3,fds=3:4',
             'fd and fds are mutually exclusive'),
            ('af-packet,id=n0,ifname=vq0,promisc=maybe', 'promisc'),
        ]
        for i, (netdev, message) in enumerate(cases):
            vm = self.guest_vm(qns, '-netdev', netdev, name='bad%d' % i)
            vm.set_qmp_monitor(enabled=False)
            vm.launch()
            vm.wait()
            self.assertEqual(vm.exitcode(), 1, netdev)
            self.assertIn(message, vm.get_log(), netdev)
            self.assertEqual(len([l for l in vm.get_log().splitlines()
                                  if 'af-packet' in l or 'promisc' in l]),
                             1, vm.get_log())

    def failing_netdev_adds(self, vm, rounds):
        """netdev_add that fails on its second queue, after the first one
        has its socket, ring and promiscuous membership; then one that
        works, and its netdev_del."""
        good = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        busy = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        # A ring set up already: QEMU's PACKET_VERSION fails with EBUSY.
        busy.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        busy.setsockopt(SOL_PACKET, PACKET_RX_RING,
                        struct.pack('7I', 4096, 1, 2048, 2, 0, 0, 0))
        try:
            for _ in range(rounds):
                vm.send_fd_scm(fd=good.fileno())
                vm.cmd('getfd', fdname='q0')
                vm.send_fd_scm(fd=busy.fileno())
                vm.cmd('getfd', fdname='q1')
                r = vm.qmp('netdev_add', type='af-packet', id='n0',
                           ifname='vq0', fds='q0:q1')
                self.assertIn('af-packet', r['error']['desc'])
                r = vm.qmp('netdev_add', type='af-packet', id='n0',
                           ifname='nosuchif0')
                self.assertIn("no interface 'nosuchif0'", r['error']['desc'])
                yield
            vm.cmd('netdev_add', type='af-packet', id='n1', ifname='vq0')
            vm.cmd('netdev_del', id='n1')
            yield
        finally:
            good.close()
            busy.close()

    def test_failed_netdev_add_leaks_nothing(self):
        """Failed netdev_add leaves nothing behind: no fd, no mapping, no
        promiscuous membership."""
        qns, peer = self.veth()
        vm = self.ns_vm(qns, 'leak')
        vm.set_machine('none')
        vm.launch()
        pid = vm.get_pid()

        def resources():
            fds = len(os.listdir('/proc/%d/fd' % pid))
            with open('/proc/%d/maps' % pid) as f:
                maps = sum(1 for l in f if 'socket:' in l or 'packet' in l)
            return fds, maps, self.if_flags(qns, 'vq0') & IFF_PROMISC

        base = resources()
        for _ in self.failing_netdev_adds(vm, 3):
            self.assertEqual(resources(), base)

    def test_error_paths_under_valgrind(self):
        """The same failures under valgrind: no memory definitely lost in
        the af-packet backend or the net statistics, no fd left open."""
        if not shutil.which('valgrind'):
            if os.getenv('QEMU_TEST_TRAFFIC_STRICT'):
                self.fail('valgrind is not installed')
            self.skipTest('valgrind is not installed')
        qns, peer = self.veth()
        log = self.log_file('valgrind.log')
        vm = QEMUMachine(self.qemu_bin, name='valgrind',
                         wrapper=qns.prefix() + [
                             'valgrind', '--leak-check=full',
                             '--show-leak-kinds=definite',
                             '--track-fds=yes', '--log-file=' + log],
                         base_temp_dir=self.workdir, log_dir=self.log_file(),
                         qmp_timer=300)
        self._vms['valgrind'] = vm
        vm.set_machine('none')
        vm.launch()
        for _ in self.failing_netdev_adds(vm, 2):
            pass
        vm.shutdown(timeout=300)
        with open(log) as f:
            text = f.read()
        self.assertIn('LEAK SUMMARY', text)
        lost = [b for b in re.split(r'\n==\d+== \n', text)
                if 'definitely lost' in b and
                re.search(r'af_packet|net_stats', b)]
        self.assertEqual(lost, [], '\n'.join(lost))
        # Sockets open at exit: no packet socket (pf-17) and no rtnetlink
        # socket (pf-16) of a netdev that is gone.
        self.assertIn('FILE DESCRIPTORS', text)
        self.assertNotRegex(text, r'Open pf-1[67] socket')


if __name__ == '__main__':
    QemuSystemTest.main()
