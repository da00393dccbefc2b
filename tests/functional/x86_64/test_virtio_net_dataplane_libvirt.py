#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Copyright (c) 2026 netplane developers
#
# netplane's QEMU under libvirt (Debian 12's libvirtd 9.0): a domain whose
# virtio-net device runs in a libvirt-defined, pinned IOThread.

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

from qemu_test import QemuSystemTest
from test_virtio_net_dataplane import DataplaneTest

LIBVIRTD_CONF = '''\
unix_sock_dir = "{tmp}/sock"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "2:file:{tmp}/libvirtd.log"
'''

# QEMU runs as root (the test's namespaces are its sandbox), with no
# cgroups, no private /dev and no virtlogd: none is there without systemd.
QEMU_CONF = '''\
user = "root"
group = "root"
swtpm_user = "root"
swtpm_group = "root"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
dynamic_ownership = 0
remember_owner = 0
'''

# The domain XML of README's "netplane from libvirt".  libvirt 9.0 knows
# IOThreads and their pinning, but not virtio-net's iothread property:
# <qemu:override> sets it on the device libvirt creates (alias ua-net0).
DOMAIN = '''\
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu placement='static'>1</vcpu>
  <iothreads>1</iothreads>
  <cputune>
    <vcpupin vcpu='0' cpuset='0'/>
    <iothreadpin iothread='1' cpuset='0'/>
  </cputune>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{guest}/vmlinuz</kernel>
    <initrd>{guest}/initramfs.cpio.gz</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>{qemu}</emulator>
    <interface type='ethernet'>
      <target dev='nptap0'/>
      <mac address='{mac}'/>
      <model type='virtio'/>
      <alias name='ua-net0'/>
    </interface>
    <serial type='file'>
      <source path='{tmp}/console.log'/>
    </serial>
    <memballoon model='none'/>
  </devices>
  <qemu:override>
    <qemu:device alias='ua-net0'>
      <qemu:frontend>
        <qemu:property name='iothread' type='string' value='iothread1'/>
      </qemu:frontend>
    </qemu:device>
  </qemu:override>
</domain>
'''


class Libvirt(DataplaneTest):
    """
    Steps:
      1. a network namespace, and in it libvirtd with a private mount
         namespace: its own configuration, state, cache, logs and
         socket (tmpfs), so the machine's libvirt is not touched
      2. virsh define and start a domain of type qemu whose emulator is
         the QEMU under test: one vCPU pinned to CPU 0, one IOThread
         pinned to CPU 0, a tap NIC (libvirt creates nptap0) in that
         IOThread
      3. pings from the namespace to the guest; the NIC's iothread
         property and virsh iothreadinfo; 200 pings of 1000 bytes: the
         device's counters over virsh qemu-monitor-command query-stats
         equal the tap's, both ways
      4. virsh iothreadpin moves the IOThread to CPU 1 and back while
         pings run: round trips with the IOThread beside the vCPU and
         apart from it, interleaved, logged (not asserted: a 2-CPU TCG
         host says little about cache sharing)
      5. virsh destroy and undefine: QEMU is gone
    """

    timeout = 600

    def setUp(self):
        super().setUp()
        missing = None
        for tool in ('libvirtd', 'virsh', 'unshare'):
            if not shutil.which(tool):
                missing = 'no %s (netplane/deps.sh installs libvirt)' % tool
        if not missing and subprocess.run(
                ['getent', 'passwd', 'libvirt-qemu'],
                capture_output=True).returncode:
            # libvirtd resolves its default QEMU user before its config
            missing = 'no user libvirt-qemu (netplane/deps.sh adds it)'
        if missing:
            if os.getenv('QEMU_TEST_TRAFFIC_STRICT'):
                self.fail(missing)
            self.skipTest(missing)
        self.tmp = tempfile.mkdtemp(prefix='nplv-')
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.name = 'netplane-%d' % os.getpid()
        self.uri = 'qemu+unix:///system?socket=%s/sock/libvirt-sock' % \
            self.tmp

    def virsh(self, *args, check=True):
        r = subprocess.run(['virsh', '-c', self.uri] + list(args),
                           capture_output=True, text=True, timeout=120)
        if check:
            self.assertEqual(r.returncode, 0, '%s: %s%s'
                             % (' '.join(args), r.stdout, r.stderr))
        return r.stdout

    def qmp(self, cmd):
        return json.loads(self.virsh('qemu-monitor-command', self.name,
                                     cmd))['return']

    def start_libvirtd(self, ns):
        etc = os.path.join(self.tmp, 'etc')
        os.makedirs(etc)
        os.makedirs(os.path.join(self.tmp, 'sock'))
        with open(os.path.join(etc, 'libvirtd.conf'), 'w') as f:
            f.write(LIBVIRTD_CONF.format(tmp=self.tmp))
        with open(os.path.join(etc, 'qemu.conf'), 'w') as f:
            f.write(QEMU_CONF)
        script = ('for d in /run /var/lib /var/cache /var/log; do '
                  'mount -t tmpfs -o mode=0755 tmpfs $d && '
                  'mkdir -p $d/libvirt || exit 1; done && '
                  'mount --bind %s /etc/libvirt && exec libvirtd' % etc)
        daemon = ns.popen(['unshare', '-m', '--propagation', 'private',
                           'sh', '-c', script],
                          stdout=self.log_to('libvirtd.out'),
                          stderr=subprocess.STDOUT)
        sock = os.path.join(self.tmp, 'sock', 'libvirt-sock')
        deadline = time.monotonic() + 60
        while not os.path.exists(sock):
            self.assertIsNone(daemon.poll(), 'libvirtd exited')
            self.assertLess(time.monotonic(), deadline, 'no libvirtd')
            time.sleep(0.2)
        return daemon

    def qemu_pids(self):
        """QEMU processes of this test's domain (they outlive libvirtd)."""
        pids = []
        for pid in filter(str.isdigit, os.listdir('/proc')):
            try:
                with open('/proc/%s/cmdline' % pid, 'rb') as f:
                    cmd = f.read().split(b'\0')
            except OSError:
                continue
            if ('guest=%s,' % self.name).encode() in b' '.join(cmd) and \
               cmd[0].endswith(b'qemu-system-x86_64'):
                pids.append(int(pid))
        return pids

    def kill_leftovers(self):
        for pid in self.qemu_pids():
            os.kill(pid, 9)

    def wait_console(self, text, timeout):
        path = os.path.join(self.tmp, 'console.log')
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(path):
                with open(path, errors='replace') as f:
                    if text in f.read():
                        return
            time.sleep(0.5)
        self.fail('no %r on the console' % text)

    def nic_stats(self, ns):
        """The NIC's counters over virsh, and the tap's from the kernel."""
        stats = self.qmp(
            '{"execute": "query-stats", "arguments": {"target": "netdev", '
            '"providers": [{"provider": "virtio-net"}]}}')
        self.assertEqual([(s['netdev'], s['queue']) for s in stats],
                         [('ua-net0', 0)], stats)
        return ({s['name']: s['value'] for s in stats[0]['stats']},
                self.link_stats(ns, 'nptap0'))

    def rtt_avg(self, ns):
        r = ns.run('ping', '-q', '-c', '300', '-i', '0.005', '-W', '2',
                   self.GUEST_ADDR, check=False)
        m = re.search(r'(\d+) received.*\n.*= [\d.]+/([\d.]+)/', r.stdout)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        self.assertGreaterEqual(int(m.group(1)), 290, r.stdout)
        return float(m.group(2))

    def iothread_cpus(self):
        out = self.virsh('iothreadinfo', self.name)
        m = re.search(r'^\s*1\s+(\S+)\s*$', out, re.M)
        self.assertIsNotNone(m, out)
        return m.group(1)

    def test_domain_with_iothread(self):
        ns = self.netns('ql')
        self.no_ipv6(ns)
        self.start_libvirtd(ns)
        self.addCleanup(self.kill_leftovers)

        xml = os.path.join(self.tmp, 'domain.xml')
        with open(xml, 'w') as f:
            f.write(DOMAIN.format(
                name=self.name, tmp=self.tmp, mac=self.MAC,
                qemu=os.path.abspath(self.qemu_bin),
                guest=os.path.abspath(self.guest_dir),
                cmdline=self.guest_cmdline(self.GUEST, extra='np.idle=1')))
        self.virsh('define', xml)
        self.virsh('start', self.name)
        self.assertEqual(len(self.qemu_pids()), 1)
        self.wait_console('NPGUEST ready', 180)
        ns.run('ip', 'addr', 'add', self.PEER + '/24', 'dev', 'nptap0')
        ns.run('ip', 'link', 'set', 'nptap0', 'up')
        self.assertEqual(self.ping(ns, '-c', '5', '-W', '5',
                                   self.GUEST_ADDR), (5, 5))

        # The NIC runs in libvirt's IOThread, pinned where the XML says
        self.assertEqual(self.qmp(
            '{"execute": "qom-get", "arguments": {"path": '
            '"/machine/peripheral/ua-net0", "property": "iothread"}}'),
            '/objects/iothread1')
        self.assertEqual(self.iothread_cpus(), '0')

        # 200 pings of 1000 bytes, ARP settled: the NIC's counters, read
        # through libvirt, equal the tap's both ways
        ns.run('ip', 'neigh', 'replace', self.GUEST_ADDR, 'lladdr',
               self.MAC, 'nud', 'permanent', 'dev', 'nptap0')
        self.assertEqual(self.ping(ns, '-c', '1', '-W', '5',
                                   self.GUEST_ADDR), (1, 1))
        st0, wire0 = self.settled(lambda: self.nic_stats(ns))
        self.assertEqual(self.ping(ns, '-c', '200', '-i', '0.005', '-s',
                                   '1000', '-W', '2', self.GUEST_ADDR),
                         (200, 200))
        st1, wire1 = self.settled(lambda: self.nic_stats(ns))
        st, wire = self.delta(st1, st0), self.delta(wire1, wire0)
        self.assertGreaterEqual(st['rx-packets'], 200, st)
        self.assertEqual(st['rx-packets'], wire['tx_packets'], (st, wire))
        self.assertEqual(st['tx-packets'], wire['rx_packets'], (st, wire))
        self.assertEqual(st['rx-dropped'] + st['tx-dropped'], 0, st)
        self.assertGreater(st['tx-kicks'] + st['tx-polled'], 0, st)
        self.assertGreater(st['rx-interrupts'], 0, st)

        # Beside the vCPU (CPU 0) and apart (CPU 1), interleaved
        rtt = {'0': [], '1': []}
        for _ in range(5):
            for cpu in ('0', '1'):
                self.virsh('iothreadpin', self.name, '1', cpu)
                self.assertEqual(self.iothread_cpus(), cpu)
                rtt[cpu].append(self.rtt_avg(ns))
        self.log.info('ping avg rtt (ms), IOThread on the vCPU\'s CPU: %s '
                      '(median %.3f); on the other CPU: %s (median %.3f)',
                      rtt['0'], statistics.median(rtt['0']), rtt['1'],
                      statistics.median(rtt['1']))

        self.virsh('destroy', self.name)
        deadline = time.monotonic() + 30
        while self.qemu_pids():
            self.assertLess(time.monotonic(), deadline, 'QEMU still runs')
            time.sleep(0.2)
        self.virsh('undefine', self.name)
        self.assertNotIn(self.name, self.virsh('list', '--all'))


if __name__ == '__main__':
    QemuSystemTest.main()
