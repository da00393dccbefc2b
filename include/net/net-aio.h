/*
 * A NIC queue and its backend running in an AioContext
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Normally every network client runs in the main loop under the BQL.  A
 * NIC device may instead run one of its queues, together with the backend
 * queue peered with it (a "client pair"), in an IOThread:
 *
 * - the device binds the pair to the IOThread at realize time
 *   (qemu_net_pair_bind()), after checking with
 *   qemu_net_client_check_iothread() that the backend can follow;
 * - while the device is started, the pair is attached: the backend's fd
 *   handlers are registered in the IOThread's AioContext and both
 *   clients' queues are touched only from there.  The device moves the
 *   pair with qemu_net_pair_set_aio_context();
 * - main-loop code that needs one of the two clients (set_link, netdev_del,
 *   announce-self, ...) brackets its work with qemu_net_client_drained_begin()
 *   and qemu_net_client_drained_end().  In between, the pair is detached
 *   back to the main loop and nothing of it runs in the IOThread.
 *
 * Backends opt in by implementing NetClientInfo.set_aio_context; NICs by
 * implementing NetClientInfo.drained_begin and .drained_end.
 */

#ifndef NET_NET_AIO_H
#define NET_NET_AIO_H

#include "net/net.h"

/*
 * Can @backend run in an IOThread together with its NIC?  Sets @errp
 * naming the netdev and the reason when not.  A NULL @backend (a NIC
 * without netdev) is fine.
 *
 * Context: BQL held
 */
bool qemu_net_client_check_iothread(NetClientState *backend, Error **errp);

/*
 * Bind the pair of NIC queue @nic and its peer to @ctx (NULL: unbind).
 * Filters cannot be added to a bound client.
 *
 * Context: BQL held
 */
void qemu_net_pair_bind(NetClientState *nic, AioContext *ctx);

/*
 * Move the pair of NIC queue @nic and its peer to @ctx, or back to the
 * main loop when @ctx is NULL.  A backend deleted with netdev_del moves
 * too: it lives on, link down, until the NIC goes.
 *
 * Context: the pair's current context: the main loop with the BQL held
 * when attaching, the IOThread when detaching
 */
void qemu_net_pair_set_aio_context(NetClientState *nic, AioContext *ctx);

/*
 * Quiesce the pair that @nc belongs to: on return nothing of it runs in
 * an IOThread until the matching qemu_net_client_drained_end().  Nests.
 * Does nothing for clients that are not bound to an IOThread.
 *
 * Context: BQL held
 */
void qemu_net_client_drained_begin(NetClientState *nc);

/* Context: BQL held */
void qemu_net_client_drained_end(NetClientState *nc);

/*
 * Does @nc belong to a pair bound to an IOThread?
 *
 * Context: BQL held
 */
static inline bool qemu_net_client_bound(NetClientState *nc)
{
    return nc->bound_ctx != NULL;
}

/*
 * Is @nc attached to an IOThread right now?  Main-loop code that walks
 * all clients skips such clients; their device takes care of them.
 *
 * Context: BQL held
 */
static inline bool qemu_net_client_in_iothread(NetClientState *nc)
{
    return nc->ctx != NULL;
}

#endif
