/*
 * virtio-net notification coalescing (VIRTIO_NET_F_NOTF_COAL and
 * VIRTIO_NET_F_VQ_NOTF_COAL): what virtio-net.c and the dataplane call
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_NET_VIRTIO_NET_COAL_H
#define HW_NET_VIRTIO_NET_COAL_H

#include "hw/virtio/virtio-net.h"
#include "migration/vmstate.h"
#include "net/net-stats.h"

typedef struct VirtIONetCoal VirtIONetCoal;

typedef enum VirtIONetCoalResult {
    VIRTIO_NET_COAL_SENT,       /* the guest was interrupted */
    VIRTIO_NET_COAL_SUPPRESSED, /* the driver asked not to be (EVENT_IDX) */
    VIRTIO_NET_COAL_HELD,       /* the interrupt waits for more or a timer */
} VirtIONetCoalResult;

/*
 * Set up coalescing state for every data virtqueue, for the feature
 * properties or for adaptive moderation (adaptive-coal) with @iothread;
 * refuses the feature properties without a control queue.
 *
 * Context: BQL held (realize, n->max_queue_pairs known)
 */
bool virtio_net_coal_realize(VirtIONet *n, bool iothread, Error **errp);

/* Context: BQL held (unrealize) */
void virtio_net_coal_unrealize(VirtIONet *n);

/* Device reset: every parameter to 0, nothing held.  Context: BQL held */
void virtio_net_coal_reset(VirtIONet *n);

/*
 * The driver disabled (@enable false: virtqueue reset) or enabled virtqueue
 * @vq_index: drop what it held; it gets the last TX_SET or RX_SET values.
 *
 * Context: BQL held, the queue not running elsewhere
 */
void virtio_net_coal_queue_enable(VirtIONet *n, uint32_t vq_index,
                                  bool enable);

/*
 * A VIRTIO_NET_CTRL_NOTF_COAL command @cmd with data @iov; a reply (for
 * VQ_GET) goes to the start of @in_sg and *@reply gets its length.
 *
 * Context: BQL held, every queue pair paused
 */
virtio_net_ctrl_ack virtio_net_coal_ctrl(VirtIONet *n, uint8_t cmd,
                                         const struct iovec *iov,
                                         unsigned int iov_cnt,
                                         const struct iovec *in_sg,
                                         unsigned int in_num, size_t *reply);

/*
 * @packets more packets were sent or received on @vq and their used
 * entries flushed: interrupt the guest now, or hold the interrupt for
 * more packets or until the queue's max_usecs.
 *
 * Context: the queue's (its IOThread, or the main loop)
 */
VirtIONetCoalResult virtio_net_coal_notify(VirtIONet *n, VirtQueue *vq,
                                           unsigned int packets);

/*
 * @vq is about to use more buffers: end a wait that the driver no longer
 * wants.  Context: the queue's
 */
void virtio_net_coal_pre_flush(VirtIONet *n, VirtQueue *vq);

/*
 * The device needs the driver now (no receive buffers): end an adaptive
 * wait on @vq.  Context: the queue's
 */
void virtio_net_coal_flush(VirtIONet *n, VirtQueue *vq);

/*
 * How long the device may leave @vq unwatched because the driver streams
 * on it (adaptive moderation); 0: not at all.  Context: the queue's
 */
int64_t virtio_net_coal_stream_ns(VirtIONet *n, VirtQueue *vq);

/*
 * Queue pair @pair now runs in @ctx (NULL: the main loop): a held
 * interrupt's timer follows it.
 *
 * Context: the pair's old context, or BQL held with the pair paused
 */
void virtio_net_coal_move(VirtIONet *n, unsigned int pair, AioContext *ctx);

/* The counters of queue pair @pair.  Context: BQL held */
void virtio_net_coal_get_stats(VirtIONet *n, unsigned int pair,
                               NetStatsBuilder *b);

/* Migration subsection, sent when anything is set or held */
extern const VMStateDescription vmstate_virtio_net_coal;

#endif
