# SPDX-License-Identifier: GPL-2.0-or-later
#
# Network traffic tests: a private network namespace for the host side, a
# tiny guest that runs a traffic tool, and parsing of what it reports.
#
# The tiny guest (a Debian kernel and a busybox initramfs with the static
# "nptraffic" tool) is not downloaded like other assets: it is built from
# Debian packages by the project that runs these tests, and found through
# the QEMU_TEST_TRAFFIC_GUEST environment variable, a directory holding
# vmlinuz, initramfs.cpio.gz and nptraffic-host.

import os
import re
import select
import shlex
import shutil
import subprocess
import time
import uuid

from qemu.machine import QEMUMachine

from .testcase import QemuSystemTest


def parse_kv(line):
    """Return the key=value words of @line as a dict (values as strings)."""
    out = {}
    for word in line.split():
        if '=' in word:
            key, value = word.split('=', 1)
            out[key] = value
    return out


def reap_stale_namespaces():
    """Delete namespaces that a killed run of ours left behind (named
    PREFIX-PID-XXXXXX, with PID no longer running)."""
    out = subprocess.run(['ip', 'netns', 'list'], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        m = re.match(r'^([a-z]+-(\d+)-[0-9a-f]{6})\b', line)
        if m and not os.path.exists('/proc/%s' % m.group(2)):
            subprocess.run(['ip', 'netns', 'delete', m.group(1)],
                           capture_output=True)


class NetNamespace:
    """A network namespace that this test created and will delete."""

    def __init__(self, prefix='qt'):
        reap_stale_namespaces()
        self.name = '%s-%d-%s' % (prefix, os.getpid(), uuid.uuid4().hex[:6])
        self.procs = []
        subprocess.run(['ip', 'netns', 'add', self.name], check=True)
        self.run('ip', 'link', 'set', 'lo', 'up')

    def prefix(self):
        return ['ip', 'netns', 'exec', self.name]

    def run(self, *cmd, check=True):
        return subprocess.run(self.prefix() + list(cmd), check=check,
                              capture_output=True, text=True)

    def popen(self, cmd, **kwargs):
        proc = subprocess.Popen(self.prefix() + list(cmd), **kwargs)
        self.procs.append(proc)
        return proc

    def add_tap(self, name, cidr, mtu=None):
        self.run('ip', 'tuntap', 'add', 'dev', name, 'mode', 'tap',
                 'vnet_hdr')
        self.run('ip', 'addr', 'add', cidr, 'dev', name)
        if mtu:
            self.run('ip', 'link', 'set', name, 'mtu', str(mtu))
        self.run('ip', 'link', 'set', name, 'up')

    def add_veth(self, name, peer_ns, peer_name, cidr):
        """A veth pair: @name stays here (no address, for a backend to
        attach to), @peer_name moves to @peer_ns with address @cidr."""
        self.run('ip', 'link', 'add', name, 'type', 'veth', 'peer', 'name',
                 peer_name, 'netns', peer_ns.name)
        self.run('ip', 'link', 'set', name, 'up')
        peer_ns.run('ip', 'addr', 'add', cidr, 'dev', peer_name)
        peer_ns.run('ip', 'link', 'set', peer_name, 'up')

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.procs = []
        subprocess.run(['ip', 'netns', 'delete', self.name], check=False,
                       capture_output=True)


class TrafficTest(QemuSystemTest):
    """
    Boots the tiny guest with a network device whose backend lives in a
    private network namespace, and runs nptraffic between the guest and a
    peer in that namespace.
    """

    timeout = 300

    def setUp(self):
        super().setUp()
        self.guest_dir = os.getenv('QEMU_TEST_TRAFFIC_GUEST')
        strict = os.getenv('QEMU_TEST_TRAFFIC_STRICT')
        missing = None
        if os.geteuid() != 0:
            missing = 'network namespaces need root'
        elif not shutil.which('ip'):
            missing = "no 'ip' command (iproute2)"
        elif not self.guest_dir:
            missing = 'QEMU_TEST_TRAFFIC_GUEST is not set'
        else:
            for f in ('vmlinuz', 'initramfs.cpio.gz', 'nptraffic-host'):
                if not os.path.exists(os.path.join(self.guest_dir, f)):
                    missing = 'no %s in %s' % (f, self.guest_dir)
        if missing:
            if strict:
                self.fail(missing)
            self.skipTest(missing)
        self.host_tool = os.path.join(self.guest_dir, 'nptraffic-host')
        self.namespaces = []
        self.console_lines = []

    def tearDown(self):
        super().tearDown()
        for ns in self.namespaces:
            ns.close()

    def netns(self, prefix='qt'):
        ns = NetNamespace(prefix)
        self.namespaces.append(ns)
        return ns

    def ns_vm(self, ns, name, wrapper=None):
        """A VM whose QEMU runs inside @ns (or with @wrapper, a command
        that enters it), with no guest."""
        vm = QEMUMachine(self.qemu_bin, wrapper=wrapper or ns.prefix(),
                         name=name,
                         base_temp_dir=self.workdir,
                         log_dir=self.log_file())
        # QemuSystemTest.tearDown() shuts down the VMs it knows.
        self._vms[name] = vm
        return vm

    def guest_vm(self, ns, *args, name=None, smp=2, wrapper=None):
        """A VM for the tiny guest whose QEMU runs inside @ns."""
        vm = self.ns_vm(ns, name or 'guest', wrapper)
        vm.set_machine('pc')
        vm.set_console()
        vm.add_args('-accel', 'tcg', '-m', '256', '-smp', str(smp),
                    '-no-reboot', '-name', 'guest,debug-threads=on',
                    '-kernel', os.path.join(self.guest_dir, 'vmlinuz'),
                    '-initrd', os.path.join(self.guest_dir,
                                            'initramfs.cpio.gz'))
        vm.add_args(*args)
        return vm

    @staticmethod
    def guest_cmdline(ip, run=None, extra=''):
        line = 'console=ttyS0 quiet loglevel=3 np.ip=%s' % ip
        if run:
            line += ' np.run=' + ','.join(run)
        return line + (' ' + extra if extra else '')

    def _console_lines(self, vm, wait):
        """Read what @vm's console has (waiting up to @wait seconds for
        something) and return the complete lines, also appended to
        self.console_lines.  A partial line waits in vm for the next
        call, so nothing is lost between calls.  None once the console
        is closed."""
        buf = getattr(vm, '_traffic_console_buf', b'')
        ready, _, _ = select.select([vm.console_socket], [], [], wait)
        if ready:
            data = vm.console_socket.recv(4096)
            if not data:
                return None
            buf += data
        lines = []
        while b'\n' in buf:
            raw, buf = buf.split(b'\n', 1)
            line = raw.decode(errors='replace').strip('\r\x00 ')
            self.console_lines.append(line)
            self.log.debug('console: %s', line)
            lines.append(line)
        vm._traffic_console_buf = buf
        return lines

    def poll_console(self, vm, until):
        """Without waiting: the console line of @vm starting with @until
        if it arrived by now (lines up to it are taken, later ones stay
        for read_console()), else None (every line stays)."""
        pending = getattr(vm, '_traffic_console_pending', [])
        pending += self._console_lines(vm, 0) or []
        for i, line in enumerate(pending):
            if line.startswith(until):
                vm._traffic_console_pending = pending[i + 1:]
                return line
        vm._traffic_console_pending = pending
        return None

    def read_console(self, vm, until, timeout):
        """Collect console lines until one starts with @until; return it.
        Lines after it stay for the next read_console() or
        poll_console()."""
        deadline = time.monotonic() + timeout
        pending = getattr(vm, '_traffic_console_pending', [])
        while True:
            while pending:
                line = pending.pop(0)
                if line.startswith(until):
                    vm._traffic_console_pending = pending
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                vm._traffic_console_pending = []
                self.fail('no %r on the console within %ds; last lines:\n%s'
                          % (until, timeout,
                             '\n'.join(self.console_lines[-20:])))
            pending = self._console_lines(vm, min(left, 1.0))
            if pending is None:
                vm._traffic_console_pending = []
                self.fail('console closed before %r; last lines:\n%s'
                          % (until, '\n'.join(self.console_lines[-20:])))

    # Both directions: paced UDP (nothing may be lost), UDP as fast as
    # each side can (loss is possible, damage is not), TCP streams, and
    # UDP request/response.
    STANDARD_TRAFFIC = ['udp-tx:1400:2:1000', 'udp-rx:1400:2:1000',
                        'udp-tx:64:2', 'udp-rx:64:2',
                        'tcp-tx:2', 'tcp-rx:2', 'rr:64:2']

    def standard_traffic_cmdline(self, guest_ip, server_ip):
        return self.guest_cmdline(
            guest_ip,
            run=['nptraffic', 'client', '--server', server_ip, '--irq'] +
            self.STANDARD_TRAFFIC,
            extra='np.wait=' + server_ip)

    def assert_standard_traffic(self, res):
        self.assert_udp_intact(res['udp-tx:1400'], lossless=True)
        self.assert_udp_intact(res['udp-rx:1400'], lossless=True)
        self.assert_udp_intact(res['udp-tx:64'])
        self.assert_udp_intact(res['udp-rx:64'])
        self.assert_tcp_intact(res['tcp-tx:0'])
        self.assert_tcp_intact(res['tcp-rx:0'])
        self.assertGreater(int(res['rr:64']['trans']), 10)
        # The guest took interrupts for what it received.
        self.assertGreater(int(res['udp-rx:1400']['irq_rx']), 0)

    def launch_idle_guest(self, vm, guest_ip):
        """Launch @vm with a guest that only configures its network."""
        vm.add_args('-append', self.guest_cmdline(guest_ip,
                                                  extra='np.idle=1'))
        vm.launch()
        self.read_console(vm, 'NPGUEST ready', 180)

    def run_guest(self, vm, timeout=240, wait=True):
        """Launch @vm, wait for the guest's command to finish, and return
        the NPRESULT lines it printed, parsed, by "test:size".  With
        @wait, also wait for QEMU to exit."""
        vm.launch()
        exit_line = self.read_console(vm, 'NPGUEST exit=', timeout)
        results = [parse_kv(l) for l in self.console_lines
                   if l.startswith('NPRESULT ')]
        if wait:
            vm.wait(timeout=30)
        self.assertEqual(parse_kv(exit_line).get('exit'), '0',
                         'guest command failed:\n%s'
                         % '\n'.join(self.console_lines[-30:]))
        return {r['test'] + ':' + r.get('size', ''): r for r in results}

    def host_server(self, ns):
        """The peer: nptraffic's server for one client session, in @ns."""
        with open(self.log_file('nptraffic-server.log'), 'w') as log:
            return ns.popen([self.host_tool, 'server', '--once'],
                            stdout=log, stderr=subprocess.STDOUT)

    def assert_udp_intact(self, result, lossless=False):
        self.assertGreater(int(result['recv']), 0, result)
        self.assertEqual(int(result['corrupt']), 0, result)
        self.assertEqual(int(result['dup']), 0, result)
        if lossless:
            self.assertEqual(int(result['lost']), 0, result)
            self.assertEqual(int(result['recv']), int(result['sent']), result)

    def assert_tcp_intact(self, result):
        self.assertEqual(result['ok'], '1', result)
        self.assertGreater(int(result['bytes_recv']), 0, result)
        self.assertEqual(result['bytes_recv'], result['bytes_sent'], result)
