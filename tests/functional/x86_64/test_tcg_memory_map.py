#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Copyright (c) 2026 netplane developers
#
# A TCG guest that changes the memory map while another vCPU does MMIO
# must not crash QEMU.

from qemu_test import QemuSystemTest
from qemu_test.traffic import TrafficTest, parse_kv


class TcgMemoryMap(TrafficTest):
    """
    The guest, on two vCPUs (MTTCG), moves the 64-bit BAR 0 of an NVMe
    controller that no driver uses above the rest of the address space,
    then for 15 s turns the controller's memory decoding off and on from
    CPU 0 while CPU 1 reads the BAR (nptraffic mapstress).  Each change
    is a new memory map; CPU 1 flushes its TLB when it next leaves the
    translated code, and until then an MMIO access must be looked up in
    the map its TLB was filled from.  QEMU 10.2.2 looked it up in the new
    map, where the BAR's section index is past the end when the BAR is
    the last section: "iotlb_to_section: Assertion `section_index <
    d->map.sections_nb' failed" within the first second here (the same
    race at boot, BARs sized while the other vCPU does MMIO, aborted two
    boots in a few hundred).

    Steps:
      1. tap0 in a private namespace (the guest's init wants a NIC), an
         nvme device without a drive at 00:05.0
      2. nptraffic mapstress 0000:00:05.0 0x800000000 15
      3. the guest reports thousands of changes and reads, exits 0, and
         QEMU is still there to answer QMP
    """

    timeout = 180

    def test_bar_toggle_under_mmio(self):
        ns = self.netns()
        ns.add_tap('tap0', '10.77.0.1/24')
        vm = self.guest_vm(
            ns,
            '-netdev', 'tap,id=net0,ifname=tap0,script=no,downscript=no',
            '-device', 'virtio-net-pci,netdev=net0,addr=4',
            '-device', 'nvme,serial=npmap,addr=5')
        vm.add_args('-append', self.guest_cmdline(
            '10.77.0.2/24',
            run=['nptraffic', 'mapstress', '0000:00:05.0', '0x800000000',
                 '15']))
        vm.launch()
        line = self.read_console(vm, 'NPGUEST mapstress', 120)
        stats = parse_kv(line)
        self.log.info('%s', line)
        self.assertGreater(int(stats['toggles']), 1000, line)
        self.assertGreater(int(stats['reads']), 1000, line)
        self.assertTrue(vm.cmd('query-status')['running'])
        exit_line = self.read_console(vm, 'NPGUEST exit=', 60)
        self.assertEqual(parse_kv(exit_line).get('exit'), '0',
                         '\n'.join(self.console_lines[-20:]))


if __name__ == '__main__':
    QemuSystemTest.main()
