/*
 * virtio-net IOThread dataplane: what virtio-net.c calls
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_NET_VIRTIO_NET_DATAPLANE_H
#define HW_NET_VIRTIO_NET_DATAPLANE_H

#include "hw/virtio/virtio-net.h"

/* Scratch space to turn a TX element into what the backend gets */
typedef struct VirtIONetTxBuf {
    struct iovec sg[VIRTQUEUE_MAX_SIZE];
    struct iovec sg2[VIRTQUEUE_MAX_SIZE + 1];
    struct virtio_net_hdr vhdr;
} VirtIONetTxBuf;

/* From virtio-net.c: a header in the guest's byte order to host order */
void virtio_net_hdr_swap(VirtIODevice *vdev, struct virtio_net_hdr *hdr);

/*
 * For virtio-net.c's TX path and the dataplane's: point *@out_sg at the
 * virtio-net header the backend wants followed by the frame of @elem,
 * using @buf as needed.
 *
 * Returns: the number of entries of *@out_sg; 0 to drop the frame; or
 * -EINVAL when the guest gave a bad element (the device is then broken).
 *
 * Context: the TX queue's context
 */
int virtio_net_tx_prepare(VirtIONet *n, VirtQueueElement *elem,
                          VirtIONetTxBuf *buf, struct iovec **out_sg);

/* One queue pair's dataplane state, see virtio-net-dataplane.c */
struct VirtIONetDPQueue {
    VirtIONetDataPlane *dp;
    VirtIONetQueue *q;
    unsigned int index;         /* queue pair */
    AioContext *ctx;            /* the IOThread the pair runs in */
    bool attached;              /* running in ctx (set with the BQL) */
    bool resume;                /* attach again at the end of a drain */
    bool tx_polling;            /* ctx polls the TX queue: no kicks */
    unsigned int tx_wait_empty; /* tx_wait_timer found nothing, in a row */
    bool tx_in_backend;         /* q->async_tx.elem is ours, in the backend */
    unsigned int vqs_reset;     /* RX (bit 0), TX (bit 1) reset by the driver */
    unsigned int tx_unflushed;  /* TX used entries filled, not flushed */
    unsigned int rx_unflushed;  /* RX used entries filled, not flushed */
    unsigned int rx_unflushed_packets;  /* the packets in them */
    bool rx_stalled;            /* RX waits for buffers, polled... */
    int rx_stall_avail;         /* ...for the avail index to leave this */
    QEMUBH *tx_bh;              /* TX budget spent: go on */
    QEMUBH *rx_flush_bh;        /* end of an RX batch: flush, notify */
    QEMUBH *rx_resume_bh;       /* after an attach: deliver what waits */
    QEMUTimer *tx_wait_timer;   /* a streaming guest's next frames */
    /* Copies of the virtqueues' host notifiers, to find us again */
    EventNotifier tx_notifier;
    EventNotifier rx_notifier;
    VirtIONetTxBuf txbuf;
    uint64_t counters[];
};

/*
 * Check iothread / iothread-vq-mapping against the rest of the
 * configuration and set the dataplane up; nothing to do without them.
 * n->max_queue_pairs must be known.
 *
 * Context: BQL held (realize)
 */
bool virtio_net_dataplane_realize(VirtIONet *n, Error **errp);

/* Bind the queue pairs to their IOThreads, once n->nic exists */
void virtio_net_dataplane_bind(VirtIONet *n);

/* Context: BQL held (unrealize) */
void virtio_net_dataplane_unrealize(VirtIONet *n);

/* Install start/stop_ioeventfd; context: class init */
void virtio_net_dataplane_class_init(VirtioDeviceClass *vdc);

/* NetClientInfo callbacks of the NIC.  Context: BQL held */
void virtio_net_dataplane_drained_begin(NetClientState *nc);
void virtio_net_dataplane_drained_end(NetClientState *nc);
void virtio_net_dataplane_get_stats(NetClientState *nc, NetStatsBuilder *b);

/*
 * What the driver changes under running queues: a feature write, a
 * virtqueue reset and enable, a device reset.  Each pauses the pairs it
 * affects for as long as needed.
 *
 * Context: BQL held
 */
void virtio_net_dataplane_set_features(VirtIONet *n);
void virtio_net_dataplane_queue_reset(VirtIONet *n, uint32_t vq_index);
void virtio_net_dataplane_queue_enable(VirtIONet *n, uint32_t vq_index);
void virtio_net_dataplane_reset(VirtIONet *n);

/* Quiesce every queue pair, e.g. around a control command */
void virtio_net_dataplane_drained_begin_all(VirtIONet *n);
void virtio_net_dataplane_drained_end_all(VirtIONet *n);

/*
 * Does the dataplane own this queue pair's virtqueues right now?  When it
 * does, the main loop's virtqueue handlers keep their hands off.
 *
 * Context: BQL held, or the pair's context
 */
static inline bool virtio_net_dataplane_attached(VirtIONetQueue *q)
{
    return q->dp && q->dp->attached;
}

/* Used RX entries filled and not flushed yet.  Context: the pair's */
static inline unsigned int virtio_net_dataplane_rx_offset(VirtIONetQueue *q)
{
    return q->dp ? q->dp->rx_unflushed : 0;
}

/*
 * Hooks of the RX path.  rx_filled: @count used entries were filled for
 * a frame of @size bytes; returns true when the dataplane flushes them
 * (at the end of the batch), false when the caller must.
 *
 * Context: the pair's context
 */
bool virtio_net_dataplane_rx_filled(VirtIONetQueue *q, unsigned int count,
                                    size_t size);
void virtio_net_dataplane_rx_stalled(VirtIONetQueue *q);
void virtio_net_dataplane_rx_dropped(VirtIONetQueue *q);

#endif
