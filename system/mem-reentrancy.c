/*
 * Device work outside the BQL and the memory re-entrancy guard
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/coroutine-tls.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "system/mem-reentrancy.h"

/* The innermost scope that this thread began without the BQL */
QEMU_DEFINE_STATIC_CO_TLS(MemReentrancyGuard *, unlocked_guard)

/* Context: any */
MemReentrancyScope mem_reentrancy_scope_begin(MemReentrancyGuard *guard)
{
    MemReentrancyScope scope = { 0 };

    if (bql_locked()) {
        if (!guard->engaged_in_io) {
            guard->engaged_in_io = true;
            scope.guard = guard;
            scope.bql = true;
        }
    } else {
        scope.outer = get_unlocked_guard();
        if (scope.outer != guard) {
            set_unlocked_guard(guard);
            scope.guard = guard;
        }
    }
    return scope;
}

/* Context: the thread that began @scope */
void mem_reentrancy_scope_end(MemReentrancyScope *scope)
{
    if (!scope->guard) {
        return;
    }
    assert(bql_locked() == scope->bql);
    if (scope->bql) {
        scope->guard->engaged_in_io = false;
    } else {
        assert(get_unlocked_guard() == scope->guard);
        set_unlocked_guard(scope->outer);
    }
    scope->guard = NULL;
}

/* Context: any */
bool mem_reentrancy_outside_bql(void)
{
    return get_unlocked_guard() != NULL;
}

/* Context: the memory dispatch */
bool mem_reentrancy_refuse(MemoryRegion *mr, hwaddr addr)
{
    if (mr->lockless_io || bql_locked() || !mem_reentrancy_outside_bql()) {
        return false;
    }
    warn_report_once("Blocked I/O without the BQL on MemoryRegion: "
                     "%s at addr: 0x%" HWADDR_PRIX,
                     memory_region_name(mr), addr);
    return true;
}
