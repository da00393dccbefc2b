# SPDX-License-Identifier: GPL-2.0-or-later
"""
Shared by netplane's benchmark and demo: boot the tiny guest on a given
QEMU binary inside a private network namespace, let it run nptraffic
against a peer in that namespace, and measure QEMU's threads and the
host's drop counters around each traffic phase.

The namespace helpers come from the functional tests' qemu_test.traffic,
so tests and benchmark set up the host side the same way.
"""

import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The qemu_test package and QEMU's python/ tree, from the source tree that
# configure prepared (netplane's files are linked into it).
_SRC = os.path.join(os.environ.get('NETPLANE_BUILD',
                                   os.path.join(ROOT, 'build')), 'src')
sys.path.insert(0, os.path.join(_SRC, 'tests', 'functional'))
sys.path.insert(0, os.path.join(_SRC, 'python'))
os.environ.setdefault('QEMU_BUILD_ROOT', os.path.join(os.path.dirname(_SRC),
                                                      'qemu'))

from qemu_test.traffic import NetNamespace, parse_kv  # noqa: E402

HOST_IP = '10.77.0.1'
GUEST_IP = '10.77.0.2'


def thread_class(pid, tid, comm):
    if tid == pid:
        return 'main'
    if comm.startswith('CPU ') and comm.endswith('/TCG') or \
       comm.startswith('CPU ') and comm.endswith('/KVM'):
        return 'vcpu'
    if comm.startswith('IO '):
        return 'iothread'
    return 'other'


def thread_label(pid, tid, comm):
    """A short name for one of QEMU's threads (with debug-threads=on):
    main, vcpu0, vcpu1, ..., the IOThread's id, else its comm."""
    cls = thread_class(pid, tid, comm)
    if cls == 'main':
        return 'main'
    if cls == 'vcpu':
        return 'vcpu' + comm[4:].split('/')[0]
    if cls == 'iothread':
        return comm[3:]
    return comm


def _schedstat(path):
    """(comm, run_ns, wait_ns) of the task at /proc path @path, or None."""
    try:
        with open(path + '/comm') as f:
            comm = f.read().strip()
        with open(path + '/schedstat') as f:
            run_ns, wait_ns, _ = (int(x) for x in f.read().split())
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return comm, run_ns, wait_ns


def task_stats(pid):
    """{tid: (comm, run_ns, wait_ns)} of the threads of @pid."""
    out = {}
    base = '/proc/%d/task' % pid
    try:
        tids = os.listdir(base)
    except FileNotFoundError:
        return out
    for tid in tids:
        st = _schedstat('%s/%s' % (base, tid))
        if st:
            out[int(tid)] = st
    return out


def thread_stats(pid, tasks=None):
    """{class: [run_ns, wait_ns]} summed over QEMU's threads (@tasks: an
    earlier task_stats(pid), else read now)."""
    out = {}
    for tid, (comm, run_ns, wait_ns) in (tasks or task_stats(pid)).items():
        acc = out.setdefault(thread_class(pid, tid, comm), [0, 0])
        acc[0] += run_ns
        acc[1] += wait_ns
    return out


def busy_stats(pid, tasks, others):
    """{label: [run_ns, wait_ns]} per thread of QEMU (@pid, its
    task_stats() @tasks, labels from thread_label(), threads that share a
    label summed) and of @others, {label: pid} (single-threaded processes
    such as the traffic peer, or kernel threads such as ksoftirqd/N)."""
    out = {}
    for tid, (comm, run_ns, wait_ns) in tasks.items():
        acc = out.setdefault(thread_label(pid, tid, comm), [0, 0])
        acc[0] += run_ns
        acc[1] += wait_ns
    for label, opid in others.items():
        st = _schedstat('/proc/%d' % opid)
        if st:
            out[label] = [st[1], st[2]]
    return out


def host_idle():
    """Seconds all of the host's CPUs were idle (/proc/stat idle and
    iowait).  Idle time is measured (NO_HZ), unlike the tick-sampled
    busy fields, which miss work that sleeps before each tick."""
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[3] + v[4]) / os.sysconf('SC_CLK_TCK')


def ksoftirqd_pids():
    """{'ksoftirqd/N': pid}: softirq work the kernel defers to its
    per-CPU threads (a saturated network path shows up here)."""
    out = {}
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/comm' % d) as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm.startswith('ksoftirqd/'):
            out[comm] = int(d)
    return out


def link_stats(ns, dev):
    """{'rx_dropped': n, ...} of @dev in @ns, from sysfs, in one read."""
    keys = ('rx_packets', 'tx_packets', 'rx_dropped', 'tx_dropped')
    r = ns.run('cat', *('/sys/class/net/%s/statistics/%s' % (dev, key)
                        for key in keys), check=False)
    values = r.stdout.split()
    if len(values) != len(keys):
        return dict.fromkeys(keys, 0)
    return dict(zip(keys, (int(v) for v in values)))


def udp_stats(ns):
    """The host UDP stack's error counters in @ns (/proc/net/snmp)."""
    r = ns.run('cat', '/proc/net/snmp', check=False)
    lines = [l.split() for l in r.stdout.splitlines() if l.startswith('Udp:')]
    if len(lines) < 2:
        return {}
    d = dict(zip(lines[0][1:], (int(x) for x in lines[1][1:])))
    return {'udp_rcvbuf_errors': d.get('RcvbufErrors', 0),
            'udp_in_errors': d.get('InErrors', 0)}


def softnet_dropped():
    """Frames the host dropped because a CPU's input backlog was full
    (netdev_max_backlog), summed over CPUs: /proc/net/softnet_stat."""
    total = 0
    with open('/proc/net/softnet_stat') as f:
        for line in f:
            total += int(line.split()[1], 16)
    return total


def delta(after, before):
    if isinstance(after, dict):
        return {k: delta(v, before.get(k, 0 if not isinstance(v, (dict, list))
                                       else type(v)()))
                for k, v in after.items()}
    if isinstance(after, list):
        before = before or [0] * len(after)
        return [a - b for a, b in zip(after, before)]
    return after - (before or 0)


class QMP:
    """Just enough of a QMP client to read statistics."""

    def __init__(self, path, timeout=10, proc=None):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if proc and proc.poll() is not None:
                    out = proc.stdout.read() if proc.stdout else b''
                    raise RuntimeError('QEMU exited (status %d) before its '
                                       'QMP socket appeared:\n%s'
                                       % (proc.returncode,
                                          out.decode(errors='replace')
                                          [-2000:]))
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.buf = b''
        self._read()
        self.cmd('qmp_capabilities')

    def _read(self):
        while b'\n' not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError('QMP connection closed')
            self.buf += data
        line, self.buf = self.buf.split(b'\n', 1)
        return json.loads(line)

    def cmd(self, name, **args):
        self.sock.sendall(json.dumps({'execute': name,
                                      'arguments': args}).encode() + b'\n')
        while True:
            msg = self._read()
            if 'return' in msg:
                return msg['return']
            if 'error' in msg:
                raise RuntimeError('%s: %s' % (name, msg['error']['desc']))

    def close(self):
        self.sock.close()


def _sum_stats(results):
    out = {}
    for r in results:
        for st in r['stats']:
            if isinstance(st['value'], int):
                out[st['name']] = out.get(st['name'], 0) + st['value']
    return out


def backend_stats(qmp):
    """{counter: value} summed over the queues of netdev net0, if it has
    counters (af-packet); {} otherwise."""
    if not qmp:
        return {}
    return _sum_stats(qmp.cmd('query-stats', target='netdev',
                              netdevs=['net0'],
                              providers=[{'provider': 'net'}]))


def device_stats(qmp):
    """{counter: value} of the virtio-net dataplane (query-stats provider
    virtio-net: tx-kicks, tx-packets, ...), summed over its queue pairs;
    {} without a dataplane.  RuntimeError if QEMU has no such provider."""
    return _sum_stats(qmp.cmd('query-stats', target='netdev',
                              providers=[{'provider': 'virtio-net'}]))


class GuestRun:
    """One boot of the tiny guest that runs @tests with nptraffic.

    @backend 'tap': QEMU and the peer share one namespace, the peer on
    tap0.  'af-packet': QEMU's namespace holds the veth leg vq0 that
    af-packet attaches to (with @netdev_opts), the peer's holds vp0.
    """

    def __init__(self, qemu, guest_dir, tests, device='virtio-net-pci',
                 backend='tap', netdev_opts='',
                 extra_args=(), smp=2, log=None, timeout=600, guest_args=''):
        self.qemu = qemu
        self.guest_dir = guest_dir
        self.tests = tests
        self.device = device
        self.backend = backend
        if backend == 'tap':
            self.netdev = ('tap,id=net0,ifname=tap0,script=no,downscript=no,'
                           'vhost=off' + netdev_opts)
            self.host_dev = 'tap0'
        else:
            self.netdev = 'af-packet,id=net0,ifname=vq0' + netdev_opts
            self.host_dev = 'vp0'
        self.qmp_path = None
        self.extra_args = list(extra_args)
        self.guest_args = guest_args    # more np.* words for the guest
        self.smp = smp
        self.log = log
        self.timeout = timeout
        self.results = []
        self.phases = {}
        self.console = []
        self.boot_seconds = None
        self.has_device_stats = None
        self.others = {}
        # Called as on_phase('begin' or 'end', QEMU's pid, test) around
        # each test's traffic phase (netplane/profile.py)
        self.on_phase = None

    def command(self):
        run = ['nptraffic', 'client', '--server', HOST_IP, '--irq'] + \
            self.tests
        append = ('console=ttyS0 quiet loglevel=3 np.ip=%s/24 np.wait=%s '
                  'np.run=%s %s' % (GUEST_IP, HOST_IP, ','.join(run),
                                    self.guest_args)).strip()
        return [self.qemu, '-accel', 'tcg', '-M', 'pc', '-m', '256',
                '-smp', str(self.smp), '-nodefaults', '-no-user-config',
                '-display', 'none', '-no-reboot', '-monitor', 'none',
                '-name', 'guest,debug-threads=on', '-serial', 'stdio',
                '-kernel', os.path.join(self.guest_dir, 'vmlinuz'),
                '-initrd', os.path.join(self.guest_dir, 'initramfs.cpio.gz'),
                '-append', append, '-netdev', self.netdev,
                '-device', self.device + ',netdev=net0',
                '-qmp', 'unix:%s,server=on,wait=off' % self.qmp_path] + \
            self.extra_args

    def snapshot(self, peer, pid):
        if self.qmp and self.has_device_stats is None:
            try:
                device_stats(self.qmp)
                self.has_device_stats = True
            except RuntimeError:        # upstream: no provider virtio-net
                self.has_device_stats = False
        tasks = task_stats(pid)
        return {'time': time.monotonic(), 'threads': thread_stats(pid, tasks),
                'busy': busy_stats(pid, tasks, self.others),
                'idle': host_idle(),
                'device': (device_stats(self.qmp)
                           if self.has_device_stats else {}),
                'tap': link_stats(peer, self.host_dev), 'udp': udp_stats(peer),
                'qlink': (link_stats(self.qns, 'vq0')
                          if self.backend != 'tap' else {}),
                'softnet': softnet_dropped(),
                'backend': (backend_stats(self.qmp)
                            if self.backend != 'tap' else {})}

    def run(self):
        namespaces = []
        tmp = tempfile.TemporaryDirectory(prefix='npb-')
        self.qmp_path = os.path.join(tmp.name, 'qmp.sock')
        self.qmp = None
        try:
            qns = NetNamespace('npb')
            namespaces.append(qns)
            self.qns = qns
            if self.backend == 'tap':
                peer = qns
                qns.add_tap('tap0', HOST_IP + '/24')
            else:
                peer = NetNamespace('npp')
                namespaces.append(peer)
                for ns in (qns, peer):
                    ns.run('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1')
                    ns.run('sysctl', '-qw',
                           'net.ipv6.conf.default.disable_ipv6=1')
                qns.add_veth('vq0', peer, 'vp0', HOST_IP + '/24')
                if 'vnet-hdr=on' not in self.netdev:
                    peer.run('ethtool', '-K', 'vp0', 'tso', 'off', 'gso',
                             'off')
            server = peer.popen([os.path.join(self.guest_dir,
                                              'nptraffic-host'),
                                 'server', '--once'],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
            # ip netns exec execs: the pid is the peer's own
            self.others = dict(ksoftirqd_pids(), peer=server.pid)
            start = time.monotonic()
            proc = qns.popen(self.command(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.qmp = QMP(self.qmp_path, proc=proc)
            self._read(peer, proc, start)
            self.qmp.close()
            self.qmp = None
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        finally:
            if self.qmp:
                self.qmp.close()
            for ns in namespaces:
                ns.close()
            tmp.cleanup()
        return self

    def _read(self, ns, proc, start):
        buf = b''
        begin = None
        deadline = start + self.timeout
        fd = proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError('guest did not finish in %ds:\n%s'
                                   % (self.timeout,
                                      '\n'.join(self.console[-20:])))
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            data = os.read(fd, 65536)
            if not data:
                raise RuntimeError('QEMU exited early:\n%s'
                                   % '\n'.join(self.console[-20:]))
            buf += data
            while b'\n' in buf:
                raw, buf = buf.split(b'\n', 1)
                line = raw.decode(errors='replace').strip('\r\x00 ')
                self.console.append(line)
                if self.log:
                    self.log.write(line + '\n')
                if line.startswith('NPGUEST ready'):
                    self.boot_seconds = time.monotonic() - start
                elif line.startswith('NPPHASE begin'):
                    begin = self.snapshot(ns, proc.pid)
                    if self.on_phase:
                        self.on_phase('begin', proc.pid,
                                      parse_kv(line).get('test'))
                elif line.startswith('NPPHASE end') and begin:
                    # The console is read late: after the last test, the
                    # guest may have printed its result and powered off
                    # by now.  Then the phase has no QEMU counters; its
                    # result still counts.
                    end = self._snapshot_or_none(ns, proc.pid)
                    name = parse_kv(line).get('test')
                    if self.on_phase:
                        self.on_phase('end', proc.pid, name)
                    if end:
                        self.phases[name] = (begin, end)
                    begin = None
                elif line.startswith('NPRESULT '):
                    # Drop counters up to here: the receiver's drain, after
                    # NPPHASE end, is when late frames are counted.  After
                    # the last test QEMU may be gone already (the console
                    # is read late): then the phase's end has to do.
                    done = self._snapshot_or_none(ns, proc.pid)
                    self.results.append(self._merge(parse_kv(line), done))
                elif line.startswith('NPGUEST exit='):
                    if parse_kv(line).get('exit') != '0':
                        raise RuntimeError('guest command failed:\n%s'
                                           % '\n'.join(self.console[-20:]))
                    return
                elif line.startswith('NPGUEST error='):
                    raise RuntimeError(line)

    def _snapshot_or_none(self, ns, pid):
        """snapshot(), or None when QEMU is gone already"""
        try:
            return self.snapshot(ns, pid)
        except (OSError, RuntimeError):
            return None

    def _merge(self, res, done):
        """Attach QEMU's thread times over the test's traffic phase, and
        the drop counters from its start until its result (@done)."""
        phase = self.phases.pop(res.get('test'), None)
        if phase:
            begin, end = phase
            done = done or end
            res['_threads'] = delta(end['threads'], begin['threads'])
            # threads that share a label may come and go: never below 0
            res['_busy'] = {k: [max(0, x) for x in v] for k, v in
                            delta(end['busy'], begin['busy']).items()}
            res['_device'] = delta(done['device'], begin['device'])
            res['_wall'] = end['time'] - begin['time']
            # all of the host's CPUs, other processes included
            res['_host_busy'] = 1 - ((end['idle'] - begin['idle']) /
                                     max(res['_wall'], 1e-9) /
                                     (os.cpu_count() or 1))
            res['_tap'] = delta(done['tap'], begin['tap'])
            res['_udp'] = delta(done['udp'], begin['udp'])
            res['_softnet'] = done['softnet'] - begin['softnet']
            res['_qlink'] = delta(done['qlink'], begin['qlink'])
            res['_backend'] = delta(done['backend'], begin['backend'])
        return res
