#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
netplane's test runner (make check).

Runs:
  - configure's handling of bad input (netplane/test-configure.sh)
and, against the netplane build of QEMU:
  - upstream's virtio-net qtests (qos-test, virtio-net nodes)
  - netplane's qtests (every tests/qtest/*-test.c that netplane adds and
    registers in tests/qtest/meson.build)
  - netplane's functional tests (every tests/functional/*/test_*.py that
    netplane adds), which boot the tiny guest and pass real traffic

Each test program speaks TAP; every test case counts.  The last line is
"check: N passed, N failed, N skipped".  Exit status 1 if anything failed.
"""

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# qos-test paths: every virtio-net-pci test (upstream's, and netplane's
# libqos tests registered on the virtio-net node), and netplane's others.
QOS_PATHS = [
    '/x86_64/pc/i440FX-pcihost/pci-bus-pc/pci-bus/virtio-net-pci',
    '/x86_64/af-packet',
    '/x86_64/virtio-net-dataplane',
]

TAP_RE = re.compile(r'^(not ok|ok)\b\s*\d*\s*-?\s*(.*?)(\s+#\s*(SKIP|TODO)\b.*)?$',
                    re.IGNORECASE)


class Results:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.failures = []

    def add(self, suite, status, name):
        if status == 'ok':
            self.passed += 1
        elif status == 'skip':
            self.skipped += 1
        else:
            self.failed += 1
            self.failures.append('%s: %s' % (suite, name))
        print('  %-4s %s' % (status.upper() if status != 'ok' else 'ok',
                             name), flush=True)


def run_tap(results, suite, cmd, env, timeout, logdir):
    """Run one TAP-speaking program; count its test cases."""
    print('== %s' % suite, flush=True)
    if len(cmd) == 3 and 'qos-test' in cmd[0]:
        results.add(suite, 'fail', 'qos-test lists no test under this path')
        return
    log = os.path.join(logdir, re.sub(r'[^A-Za-z0-9_.-]', '_', suite) + '.log')
    start = time.monotonic()
    counted = 0
    with open(log, 'w') as logf:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                stderr=logf, text=True, cwd=ROOT)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            results.add(suite, 'fail', 'timed out after %ds' % timeout)
        logf.write(out)
        for line in out.splitlines():
            m = TAP_RE.match(line.strip())
            if not m:
                continue
            counted += 1
            if m.group(4) and m.group(4).upper() == 'SKIP':
                results.add(suite, 'skip', m.group(2))
            elif m.group(1).lower() == 'ok':
                results.add(suite, 'ok', m.group(2))
            else:
                results.add(suite, 'fail', m.group(2))
    if proc.returncode != 0 and counted == 0:
        results.add(suite, 'fail', 'exited with %d before any test (see %s)'
                    % (proc.returncode, log))
    elif counted == 0:
        results.add(suite, 'fail', 'ran no test (see %s)' % log)
    elif proc.returncode != 0 and not any(f.startswith(suite + ':')
                                          for f in results.failures):
        results.add(suite, 'fail', 'exited with %d (see %s)'
                    % (proc.returncode, log))
    print('   (%.0fs, log %s)' % (time.monotonic() - start, log), flush=True)
    if any(f.startswith(suite + ':') for f in results.failures):
        print_tail(log)


def print_tail(log, lines=80):
    """Show the end of a failed suite's log, so that a CI transcript
    says why it failed even when the log files are gone."""
    with open(log, errors='replace') as f:
        tail = f.read().splitlines()[-lines:]
    print('   --- last %d lines of %s' % (len(tail), log))
    for line in tail:
        print('   | ' + line)
    print('   ---', flush=True)


def netplane_files():
    out = subprocess.run([os.path.join(ROOT, 'netplane', 'tree.sh'), 'files'],
                         check=True, capture_output=True, text=True).stdout
    return out.split()


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().split('\n')[0])
    ap.add_argument('--build', default=os.path.join(ROOT, 'build'))
    ap.add_argument('--qemu', help='the QEMU binary for the qtests and '
                    'functional tests (default: '
                    'BUILD/qemu/qemu-system-x86_64)')
    ap.add_argument('--paths', help='only qos-test paths matching this '
                    'regular expression')
    ap.add_argument('--only', choices=['configure', 'qtest', 'functional'])
    ap.add_argument('-k', dest='pattern', help='only suites matching this')
    args = ap.parse_args()

    qbuild = os.path.join(args.build, 'qemu')
    src = os.path.join(args.build, 'src')
    qemu = os.path.join(qbuild, 'qemu-system-x86_64')
    logdir = os.path.join(args.build, 'check-logs')
    os.makedirs(logdir, exist_ok=True)
    results = Results()
    files = netplane_files()

    suites = []
    if args.only in (None, 'configure'):
        suites.append(('configure bad input',
                       [os.path.join(ROOT, 'netplane', 'test-configure.sh')],
                       dict(os.environ), 300))
    if args.only in (None, 'qtest'):
        env = dict(os.environ, QTEST_QEMU_BINARY=args.qemu or qemu,
                   QTEST_QEMU_STORAGE_DAEMON_BINARY='/bin/false',
                   G_TEST_SRCDIR=os.path.join(src, 'tests', 'qtest'))
        qos = os.path.join(qbuild, 'tests', 'qtest', 'qos-test')
        listing = subprocess.run([qos, '-l'], env=env, capture_output=True,
                                 text=True).stdout.split()
        for prefix in QOS_PATHS:
            cmd = [qos, '--tap', '-k']
            for path in listing:
                if path.startswith(prefix + '/') and \
                   (not args.paths or re.search(args.paths, path)):
                    cmd += ['-p', path]
            if len(cmd) > 3 or not args.paths:
                suites.append(('qtest ' + prefix, cmd, env, 600))
        for f in files:
            m = re.match(r'tests/qtest/(.*-test)\.c$', f)
            with open(os.path.join(ROOT, f)) as src_file:
                in_qos_test = 'qos_add_test' in src_file.read()
            if m and not in_qos_test:
                suites.append(('qtest ' + m.group(1),
                               [os.path.join(qbuild, 'tests', 'qtest',
                                             m.group(1)), '--tap', '-k'],
                               env, 600))
    if args.only in (None, 'functional'):
        env = dict(os.environ,
                   QEMU_TEST_QEMU_BINARY=args.qemu or qemu,
                   QEMU_BUILD_ROOT=qbuild,
                   QEMU_TEST_TRAFFIC_GUEST=os.path.join(args.build, 'guest'),
                   QEMU_TEST_TRAFFIC_STRICT='1',
                   PYTHONPATH=os.path.join(src, 'python') + ':' +
                   os.path.join(src, 'tests', 'functional'))
        py = os.path.join(qbuild, 'pyvenv', 'bin', 'python3')
        for f in files:
            if re.match(r'tests/functional/[^/]+/test_.*\.py$', f):
                suites.append(('functional ' + os.path.basename(f)[:-3],
                               [py, os.path.join(src, f)], env, 900))

    for name, cmd, env, timeout in suites:
        if args.pattern and args.pattern not in name:
            continue
        run_tap(results, name, cmd, env, timeout, logdir)

    if results.failures:
        print('\nFailed:')
        for f in results.failures:
            print('  ' + f)
    print('check: %d passed, %d failed, %d skipped'
          % (results.passed, results.failed, results.skipped))
    return 1 if results.failed or not results.passed else 0


if __name__ == '__main__':
    sys.exit(main())
