/*
 * A NIC queue and its backend running in an AioContext
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-types-net.h"
#include "qemu/main-loop.h"
#include "net/net-aio.h"
#include "net/vhost_net.h"
#include "trace.h"

/* Context: any */
static NetClientState *net_pair_nic(NetClientState *nc)
{
    if (nc->info->type == NET_CLIENT_DRIVER_NIC) {
        return nc;
    }
    if (nc->peer && nc->peer->info->type == NET_CLIENT_DRIVER_NIC) {
        return nc->peer;
    }
    return NULL;
}

/* Context: BQL held */
bool qemu_net_client_check_iothread(NetClientState *backend, Error **errp)
{
    if (!backend) {
        return true;
    }
    if (!backend->info->set_aio_context) {
        error_setg(errp, "netdev '%s' (type %s) cannot run in an IOThread; "
                   "use a tap or af-packet netdev, or no iothread",
                   backend->name, NetClientDriver_str(backend->info->type));
        return false;
    }
    if (get_vhost_net(backend)) {
        error_setg(errp, "netdev '%s' uses vhost, which does its own "
                   "dataplane; use vhost=off with an iothread",
                   backend->name);
        return false;
    }
    if (!QTAILQ_EMPTY(&backend->filters)) {
        error_setg(errp, "netdev '%s' has filters, which run in the main "
                   "loop; remove them or use no iothread", backend->name);
        return false;
    }
    return true;
}

/* Context: BQL held */
void qemu_net_pair_bind(NetClientState *nic, AioContext *ctx)
{
    assert(nic->info->type == NET_CLIENT_DRIVER_NIC);
    assert(!nic->ctx);

    nic->bound_ctx = ctx;
    if (nic->peer) {
        nic->peer->bound_ctx = ctx;
    }
}

/*
 * Context: the pair's current context: the main loop with the BQL held
 * when attaching, the IOThread when detaching
 */
void qemu_net_pair_set_aio_context(NetClientState *nic, AioContext *ctx)
{
    NetClientState *peer = nic->peer;

    assert(nic->info->type == NET_CLIENT_DRIVER_NIC);
    trace_qemu_net_pair_set_aio_context(nic->name, nic->queue_index, ctx);

    nic->ctx = ctx;
    if (!peer) {
        return;
    }
    peer->ctx = ctx;
    peer->info->set_aio_context(peer, ctx ? ctx : iohandler_get_aio_context());
}

/* Context: BQL held */
void qemu_net_client_drained_begin(NetClientState *nc)
{
    NetClientState *nic = net_pair_nic(nc);

    if (!nic || !nic->bound_ctx || !nic->info->drained_begin) {
        return;
    }
    if (nic->drained++ == 0) {
        nic->info->drained_begin(nic);
    }
}

/* Context: BQL held */
void qemu_net_client_drained_end(NetClientState *nc)
{
    NetClientState *nic = net_pair_nic(nc);

    if (!nic || !nic->bound_ctx || !nic->info->drained_end) {
        return;
    }
    assert(nic->drained > 0);
    if (--nic->drained == 0) {
        nic->info->drained_end(nic);
    }
}
