#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Copyright (c) 2026 netplane developers
#
# -netdev af-packet,helper=: QEMU running as an unprivileged user with no
# capabilities attaches a guest through qemu-af-packet-helper, as far as
# the helper's ACL file allows.

import os
import re
import shlex
import shutil
import subprocess
import tempfile

from qemu_test import QemuSystemTest
from test_netdev_af_packet import AFPacketTest, IFF_PROMISC

NOBODY = 65534


class AFPacketHelper(AFPacketTest):
    """
    The helper is copied to a private directory with CAP_NET_RAW as a file
    capability (setcap cap_net_raw+ep), as an installation gives it.
    QEMU runs in a private mount namespace whose ACL file, at the path the
    build compiled in, is the test's own, as user nobody with no
    capabilities:
      - af-packet,ifname=vq0,helper=...: the guest answers pings from the
        peer, and vq0 is promiscuous while QEMU holds the socket
      - the ACL includes a file that allows vq0 and vq1, and denies vq1
        itself: vq1 is refused, with the helper's message and QEMU's
      - no ACL file (and helper= with no path: the build's helper), a
        helper that fails, one killed by a signal, one that passes no
        socket or a UDP socket, helper with fd: each a clear error
      - the same QEMU without the helper cannot open the socket at all
    """

    def setUp(self):
        super().setUp()
        missing = None
        self.helper = os.getenv('NETPLANE_AF_PACKET_HELPER') or \
            os.path.join(os.path.dirname(self.qemu_bin), 'net',
                         'qemu-af-packet-helper')
        if not os.path.exists(self.helper):
            missing = 'no helper at %s (set NETPLANE_AF_PACKET_HELPER)' % \
                self.helper
        for tool in ('setcap', 'setpriv', 'unshare'):
            if not shutil.which(tool):
                missing = 'no %s (netplane/deps.sh)' % tool
        if missing:
            if os.getenv('QEMU_TEST_TRAFFIC_STRICT'):
                self.fail(missing)
            self.skipTest(missing)

        # Readable and executable by nobody, outside the build tree
        self.tmp = tempfile.mkdtemp(prefix='np-helper-')
        self.addCleanup(shutil.rmtree, self.tmp, True)
        os.chmod(self.tmp, 0o755)
        installed = os.path.join(self.tmp, 'qemu-af-packet-helper')
        shutil.copy(self.helper, installed)
        os.chmod(installed, 0o755)
        subprocess.run(['setcap', 'cap_net_raw+ep', installed], check=True)
        self.helper = installed

        # The compiled-in ACL file, CONFIG_QEMU_CONFDIR/af-packet.conf
        with open(os.path.join(os.path.dirname(self.qemu_bin),
                               'config-host.h')) as f:
            self.confdir = re.search(r'#define CONFIG_QEMU_CONFDIR "(.*)"',
                                     f.read()).group(1)
        # Its deepest existing ancestor is covered in QEMU's namespace
        self.cover = self.confdir
        while not os.path.isdir(self.cover):
            self.cover = os.path.dirname(self.cover)
        self.assertNotEqual(self.cover, '/', self.confdir)
        self.acl_root = os.path.join(self.tmp, 'etc')
        self.acl_dir = os.path.join(
            self.acl_root, os.path.relpath(self.confdir, self.cover))
        os.makedirs(self.acl_dir)
        allowed = os.path.join(self.tmp, 'allowed.conf')
        with open(allowed, 'w') as f:
            f.write('allow vq0\nallow vq1\n')
        self.write_acl('# netplane test\ninclude %s\n'
                       'deny vq1    # deny wins\n' % allowed)

    def write_acl(self, text):
        with open(os.path.join(self.acl_dir, 'af-packet.conf'), 'w') as f:
            f.write(text)

    def unprivileged_vm(self, qns, netdev, name):
        """The tiny guest on @netdev, its QEMU in @qns with the test's
        ACL, as nobody with no capabilities."""
        script = ('mount --bind %s %s && exec setpriv --reuid=%d '
                  '--regid=%d --clear-groups --inh-caps=-all "$@"'
                  % (shlex.quote(self.acl_root), shlex.quote(self.cover),
                     NOBODY, NOBODY))
        return self.guest_vm(
            qns, '-netdev', netdev, '-device',
            'virtio-net-pci,netdev=net0,id=nic0', name=name,
            wrapper=qns.prefix() + ['unshare', '-m', '--propagation',
                                    'private', 'sh', '-c', script, 'sh'])

    def failed_launch(self, vm):
        """Launch @vm, expecting QEMU to refuse its netdev; its log."""
        vm.set_qmp_monitor(enabled=False)
        vm.launch()
        vm.wait()
        self.assertEqual(vm.exitcode(), 1, vm.get_log())
        return vm.get_log()

    @staticmethod
    def status_field(pid, field):
        with open('/proc/%d/status' % pid) as f:
            return re.search(r'^%s:\s+(.*)$' % field, f.read(),
                             re.M).group(1)

    def test_unprivileged_attach_and_acl(self):
        qns, peer = self.veth()
        qns.add_veth('vq1', peer, 'vp1', '10.78.1.1/24')
        vm = self.unprivileged_vm(
            qns, 'af-packet,id=net0,ifname=vq0,helper=' + self.helper,
            'allowed')
        self.launch_idle_guest(vm, self.GUEST)
        pid = vm.get_pid()
        self.assertEqual(self.status_field(pid, 'Uid').split()[0],
                         str(NOBODY))
        self.assertEqual(int(self.status_field(pid, 'CapEff'), 16), 0)
        self.assertEqual(int(self.status_field(pid, 'CapPrm'), 16), 0)
        self.assertEqual(peer.run('ping', '-c', '3', '-W', '5',
                                  self.GUEST.split('/')[0],
                                  check=False).returncode, 0)
        self.assertTrue(self.if_flags(qns, 'vq0') & IFF_PROMISC)
        st = self.query_stats(vm)
        self.assertGreaterEqual(st['rx-packets'], 3, st)
        self.assertGreaterEqual(st['tx-packets'], 3, st)
        vm.shutdown()
        self.assertFalse(self.if_flags(qns, 'vq0') & IFF_PROMISC)

        log = self.failed_launch(self.unprivileged_vm(
            qns, 'af-packet,id=net0,ifname=vq1,helper=' + self.helper,
            'denied'))
        self.assertIn('qemu-af-packet-helper: vq1 is not allowed by %s/'
                      'af-packet.conf' % self.confdir, log)
        self.assertIn('af-packet: the helper %s failed for vq1 (exit '
                      'status 1)' % self.helper, log)
        self.assertFalse(self.if_flags(qns, 'vq1') & IFF_PROMISC)

        log = self.failed_launch(self.unprivileged_vm(
            qns, 'af-packet,id=net0,ifname=vq0', 'nohelper'))
        self.assertIn('cannot open an AF_PACKET socket (QEMU needs '
                      'CAP_NET_RAW', log)

    def test_helper_errors(self):
        qns, peer = self.veth()
        killed = os.path.join(self.tmp, 'killed-helper')
        with open(killed, 'w') as f:
            f.write('#!/bin/sh\nkill -KILL $$\n')
        os.chmod(killed, 0o755)
        # A helper that passes a UDP socket where an AF_PACKET one belongs
        udp = os.path.join(self.tmp, 'udp-helper')
        with open(udp, 'w') as f:
            f.write('#!/usr/bin/python3\n'
                    'import socket, sys\n'
                    'fd = int([a for a in sys.argv if a.startswith("--fd=")]'
                    '[0][5:])\n'
                    'c = socket.socket(fileno=fd)\n'
                    'u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n'
                    'socket.send_fds(c, [b"x"], [u.fileno()])\n')
        os.chmod(udp, 0o755)
        cases = [
            (',helper=/bin/false',
             'af-packet: the helper /bin/false failed for vq0 (exit status '
             '1)'),
            (',helper=' + killed,
             'af-packet: the helper %s was killed by signal 9' % killed),
            (',helper=/nonexistent',
             'af-packet: cannot run the helper /nonexistent'),
            (',helper=/bin/true',
             'af-packet: the helper /bin/true did not pass 1 socket(s)'),
            (',helper=' + udp,
             'af-packet: a socket from the helper is not an AF_PACKET '
             'socket'),
            (',helper=%s,fd=3' % self.helper,
             'af-packet: helper needs ifname, and neither fd nor fds'),
            (',helper=%s,queues=300' % self.helper,
             'af-packet: queues must be between 1 and 256'),
        ]
        for i, (opts, message) in enumerate(cases):
            log = self.failed_launch(self.unprivileged_vm(
                qns, 'af-packet,id=net0,ifname=vq0' + opts, 'bad%d' % i))
            self.assertIn(message, log, opts)

        # helper= with no path: the build's, through qemu-bundle as an
        # installed QEMU finds it in libexecdir; no ACL file is there
        os.unlink(os.path.join(self.acl_dir, 'af-packet.conf'))
        log = self.failed_launch(self.unprivileged_vm(
            qns, 'af-packet,id=net0,ifname=vq0,helper=', 'noacl'))
        self.assertIn('qemu-af-packet-helper: cannot read the ACL file %s/'
                      'af-packet.conf: No such file or directory'
                      % self.confdir, log)
        self.assertRegex(log, r'af-packet: the helper /\S+/libexec/'
                         r'qemu-af-packet-helper failed for vq0 \(exit '
                         r'status 1\)')

        self.write_acl('allow vq0\npermit vq0\n')
        log = self.failed_launch(self.unprivileged_vm(
            qns, 'af-packet,id=net0,ifname=vq0,helper=' + self.helper,
            'badacl'))
        self.assertIn('af-packet.conf:2: not a rule', log)


if __name__ == '__main__':
    QemuSystemTest.main()
