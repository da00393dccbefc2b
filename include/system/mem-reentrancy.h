/*
 * Device work outside the BQL and the memory re-entrancy guard
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SYSTEM_MEM_REENTRANCY_H
#define SYSTEM_MEM_REENTRANCY_H

#include "hw/qdev-core.h"
#include "system/memory.h"

/*
 * A device's MemReentrancyGuard (hw/qdev-core.h) marks that the device is
 * at work, so that the memory dispatch refuses the device's DMA into its
 * own registers instead of re-entering the device.  Whoever holds the BQL
 * sets and clears its flag: the memory dispatch around a register access,
 * guarded bottom halves and network delivery around their work.
 *
 * A device that works in an IOThread without the BQL (a virtio-net queue
 * pair with its backend) cannot use that flag: a vCPU accessing the
 * registers at the same time would be refused, and the flag cleared
 * under it.  Such work opens a scope in its own thread instead.  Within
 * it, the device's DMA reaches guest RAM only: the memory dispatch refuses
 * any access that needs the BQL, so the thread never takes the BQL
 * behind the main loop's back.  That covers the device's own registers,
 * and it also keeps the thread from blocking on the BQL while the main
 * loop, holding it, waits for this very thread (aio_wait_bh_oneshot()).
 *
 * Under the BQL, a scope is the flag, as upstream code uses it.  Scopes
 * nest; the innermost one ends first.
 */
typedef struct MemReentrancyScope {
    MemReentrancyGuard *guard;  /* what to undo; NULL: nothing */
    MemReentrancyGuard *outer;  /* the thread's outer scope, without BQL */
    bool bql;                   /* the guard's flag was set, under the BQL */
} MemReentrancyScope;

/*
 * Start work for the device of @guard, unless the caller is at work for
 * it already.  End the scope in the same thread, with the BQL held or
 * not, as when it started.
 *
 * Context: any
 */
MemReentrancyScope mem_reentrancy_scope_begin(MemReentrancyGuard *guard);

/* Context: the thread that began @scope */
void mem_reentrancy_scope_end(MemReentrancyScope *scope);

/*
 * Is the caller at work for a device without the BQL?  Then it may not
 * take the BQL for a memory access.
 *
 * Context: any
 */
bool mem_reentrancy_outside_bql(void);

/*
 * Must the memory dispatch refuse the caller's access to @mr at @addr,
 * because the caller is at work for a device without the BQL and @mr
 * needs the BQL?  Warns once if so.
 *
 * Context: the memory dispatch
 */
bool mem_reentrancy_refuse(MemoryRegion *mr, hwaddr addr);

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(MemReentrancyScope, mem_reentrancy_scope_end)

/* A scope for the rest of the enclosing block */
#define MEM_REENTRANCY_GUARD(guard) \
    g_auto(MemReentrancyScope) glue(mem_reentrancy_scope_, __COUNTER__) \
        G_GNUC_UNUSED = mem_reentrancy_scope_begin(guard)

#endif
