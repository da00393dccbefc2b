/*
 * virtio-net IOThread dataplane
 *
 * With iothread=ID or iothread-vq-mapping=..., every queue pair of a
 * virtio-net device runs in an IOThread together with the backend queue
 * peered with it (see include/net/net-aio.h).  The control queue stays in
 * the main loop.
 *
 * - Guest kicks arrive as ioeventfd events in the IOThread's AioContext.
 *   TX drains with notifications disabled, up to a packet and byte budget
 *   per round; a spent budget continues from a bottom half in the same
 *   AioContext, an empty queue re-enables notifications and looks once
 *   more (the race vhost-net closes the same way).  While the guest
 *   streams, an empty queue keeps notifications off and a timer looks
 *   again soon instead (vndp_tx_wait()): the guest need not kick.  A backend
 *   that pushes back keeps the element until it completes; nothing is
 *   dropped for it.
 * - RX fills guest buffers as the backend hands frames over; the used
 *   entries of a batch are flushed once, from a bottom half that runs
 *   after the backend's handler, and the guest is interrupted at most
 *   once per batch (subject to EVENT_IDX).  Without buffers, RX stalls
 *   with notifications on and resumes on the refill kick.
 * - Whether a flush interrupts the guest at once or after more is
 *   virtio-net-coal.c's to decide, TX and RX alike: the driver's
 *   NOTF_COAL parameters, else adaptive moderation from the queue's rate.
 * - Interrupts go out through the guest notifiers: irqfd with KVM, an
 *   eventfd read by the main loop otherwise.
 * - Main-loop work that touches a queue pair (control commands, set_link,
 *   netdev_del, queue reset, ...) first detaches the pair from the
 *   IOThread with aio_wait_bh_oneshot() and attaches it again after.
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-types-stats.h"
#include "qemu/defer-call.h"
#include "qemu/error-report.h"
#include "qemu/iov.h"
#include "qemu/main-loop.h"
#include "qemu/units.h"
#include "block/aio-wait.h"
#include "hw/virtio/iothread-vq-mapping.h"
#include "hw/virtio/virtio-bus.h"
#include "net/net-aio.h"
#include "net/net-stats.h"
#include "system/iothread.h"
#include "system/mem-reentrancy.h"
#include "system/memory.h"
#include "system/stats.h"
#include "virtio-net-coal.h"
#include "virtio-net-dataplane.h"
#include "trace.h"

/* One TX round: enough to amortise a wake-up, short enough to be fair */
#define VNDP_TX_BUDGET_PACKETS  256
#define VNDP_TX_BUDGET_BYTES    (1 * MiB)
/* A streaming guest's TX queue found empty this often: it kicks again */
#define VNDP_TX_WAIT_EMPTY      2

/* Per queue pair; *_IRQS_SUPPRESSED must follow *_IRQS */
typedef enum VNDPCounter {
    VNDP_TX_KICKS,
    VNDP_TX_POLLED,
    VNDP_TX_WAITED,
    VNDP_TX_BH_RUNS,
    VNDP_TX_PACKETS,
    VNDP_TX_BYTES,
    VNDP_TX_DROPPED,
    VNDP_TX_BATCHES,
    VNDP_TX_BUDGET_EXHAUSTED,
    VNDP_TX_BACKEND_BUSY,
    VNDP_TX_IRQS,
    VNDP_TX_IRQS_SUPPRESSED,
    VNDP_RX_KICKS,
    VNDP_RX_POLLED,
    VNDP_RX_BH_RUNS,
    VNDP_RX_PACKETS,
    VNDP_RX_BYTES,
    VNDP_RX_DROPPED,
    VNDP_RX_BATCHES,
    VNDP_RX_NO_BUFFERS,
    VNDP_RX_IRQS,
    VNDP_RX_IRQS_SUPPRESSED,
    VNDP__MAX,
} VNDPCounter;

static const char *const vndp_counter_names[VNDP__MAX] = {
    [VNDP_TX_KICKS] = "tx-kicks",
    [VNDP_TX_POLLED] = "tx-polled",
    [VNDP_TX_WAITED] = "tx-waited",
    [VNDP_TX_BH_RUNS] = "tx-bh-runs",
    [VNDP_TX_PACKETS] = "tx-packets",
    [VNDP_TX_BYTES] = "tx-bytes",
    [VNDP_TX_DROPPED] = "tx-dropped",
    [VNDP_TX_BATCHES] = "tx-batches",
    [VNDP_TX_BUDGET_EXHAUSTED] = "tx-budget-exhausted",
    [VNDP_TX_BACKEND_BUSY] = "tx-backend-busy",
    [VNDP_TX_IRQS] = "tx-interrupts",
    [VNDP_TX_IRQS_SUPPRESSED] = "tx-interrupts-suppressed",
    [VNDP_RX_KICKS] = "rx-kicks",
    [VNDP_RX_POLLED] = "rx-polled",
    [VNDP_RX_BH_RUNS] = "rx-bh-runs",
    [VNDP_RX_PACKETS] = "rx-packets",
    [VNDP_RX_BYTES] = "rx-bytes",
    [VNDP_RX_DROPPED] = "rx-dropped",
    [VNDP_RX_BATCHES] = "rx-batches",
    [VNDP_RX_NO_BUFFERS] = "rx-no-buffers",
    [VNDP_RX_IRQS] = "rx-interrupts",
    [VNDP_RX_IRQS_SUPPRESSED] = "rx-interrupts-suppressed",
};

struct VirtIONetDataPlane {
    VirtIONet *n;
    unsigned int nqp;           /* queue pairs */
    VirtIONetDPQueue **qs;
    bool started;
};

typedef enum VNDPTxResult {
    VNDP_TX_EMPTY,              /* nothing left */
    VNDP_TX_BUDGET,             /* more to do */
    VNDP_TX_BUSY,               /* the backend pushed back */
    VNDP_TX_BROKEN,             /* the guest broke the device */
} VNDPTxResult;

static void vndp_tx_complete(NetClientState *nc, ssize_t len);

/*
 * Counters have a single writer, the queue pair's context (or the BQL
 * holder while the pair is detached), and are read under the BQL.
 *
 * Context: the pair's context
 */
static inline void vndp_count(VirtIONetDPQueue *dq, VNDPCounter c,
                              uint64_t v)
{
    qatomic_set__nocheck(&dq->counters[c],
                         qatomic_read__nocheck(&dq->counters[c]) + v);
}

/* Context: any */
static inline NetClientState *vndp_nc(VirtIONetDPQueue *dq)
{
    return qemu_get_subqueue(dq->dp->n->nic, dq->index);
}

/*
 * Every entry point of the pair's context opens a scope of this guard
 * (the transport's: see virtio_net_device_realize()).  In the IOThread,
 * without the BQL, that keeps the device's DMA to guest RAM: rings or
 * buffers that a guest puts over registers, its own or another device's,
 * are refused by the memory dispatch (system/mem-reentrancy.h) instead of
 * re-entering the device, or taking the BQL while the main loop holds it
 * and waits for this IOThread.
 *
 * Context: any
 */
static inline MemReentrancyGuard *vndp_guard(VirtIONetDPQueue *dq)
{
    return dq->dp->n->nic->reentrancy_guard;
}

/*
 * @packets more went through @vq: interrupt the guest unless it asked not
 * to be or coalesces them (virtio-net-coal.c), and count which.
 *
 * Context: the pair's context
 */
static void vndp_notify(VirtIONetDPQueue *dq, VirtQueue *vq, VNDPCounter c,
                        unsigned int packets)
{
    switch (virtio_net_coal_notify(dq->dp->n, vq, packets)) {
    case VIRTIO_NET_COAL_SENT:
        vndp_count(dq, c, 1);
        break;
    case VIRTIO_NET_COAL_SUPPRESSED:
        vndp_count(dq, c + 1, 1);
        break;
    case VIRTIO_NET_COAL_HELD:
        break;
    }
}

/* ---- TX ---- */

/*
 * Shared with virtio-net.c's TX path (virtio_net_flush_tx()), which it was
 * taken from: see virtio-net-dataplane.h.
 *
 * Context: the TX queue's context
 */
int virtio_net_tx_prepare(VirtIONet *n, VirtQueueElement *elem,
                          VirtIONetTxBuf *buf, struct iovec **out_sg)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(n);
    unsigned int out_num = elem->out_num;
    struct iovec *sg = elem->out_sg;

    if (out_num < 1) {
        virtio_error(vdev, "virtio-net header not in first element");
        return -EINVAL;
    }

    if (n->needs_vnet_hdr_swap) {
        if (iov_to_buf(sg, out_num, 0, &buf->vhdr, sizeof(buf->vhdr)) <
            sizeof(buf->vhdr)) {
            virtio_error(vdev, "virtio-net header incorrect");
            return -EINVAL;
        }
        virtio_net_hdr_swap(vdev, &buf->vhdr);
        buf->sg2[0].iov_base = &buf->vhdr;
        buf->sg2[0].iov_len = sizeof(buf->vhdr);
        out_num = iov_copy(&buf->sg2[1], ARRAY_SIZE(buf->sg2) - 1, sg, out_num,
                           sizeof(buf->vhdr), -1);
        if (out_num == VIRTQUEUE_MAX_SIZE) {
            return 0;
        }
        out_num += 1;
        sg = buf->sg2;
    }
    /*
     * If host wants to see the guest header as is, we can
     * pass it on unchanged. Otherwise, copy just the parts
     * that host is interested in.
     */
    assert(n->host_hdr_len <= n->guest_hdr_len);
    if (n->host_hdr_len != n->guest_hdr_len) {
        unsigned sg_num;

        if (iov_size(sg, out_num) < n->guest_hdr_len) {
            virtio_error(vdev, "virtio-net header is invalid");
            return -EINVAL;
        }
        sg_num = iov_copy(buf->sg, ARRAY_SIZE(buf->sg), sg, out_num,
                          0, n->host_hdr_len);
        sg_num += iov_copy(buf->sg + sg_num, ARRAY_SIZE(buf->sg) - sg_num,
                           sg, out_num, n->guest_hdr_len, -1);
        out_num = sg_num;
        sg = buf->sg;

        if (out_num < 1) {
            virtio_error(vdev, "virtio-net nothing to send");
            return -EINVAL;
        }
    }
    *out_sg = sg;
    return out_num;
}


/*
 * Hand the TX used entries to the guest, all at once, and interrupt it at
 * most once for them.
 *
 * Context: the pair's context
 */
static void vndp_tx_flush(VirtIONetDPQueue *dq)
{
    unsigned int count = dq->tx_unflushed;

    if (!count) {
        return;
    }
    dq->tx_unflushed = 0;
    virtio_net_coal_pre_flush(dq->dp->n, dq->q->tx_vq);
    virtqueue_flush(dq->q->tx_vq, count);
    vndp_notify(dq, dq->q->tx_vq, VNDP_TX_IRQS, count);
    vndp_count(dq, VNDP_TX_BATCHES, 1);
}

/* What one run of vndp_tx_run() may send before it yields */
typedef struct VNDPTxBudget {
    unsigned int packets;
    size_t bytes;
} VNDPTxBudget;

/*
 * Send what the guest queued, within what is left of @budget.  The used
 * entries are filled; the caller flushes them.  The round is one deferred
 * section (defer_call_begin()), so that a backend may gather its frames
 * for one system call (af-packet's tx-batch), as block drivers gather the
 * requests of a virtio-blk batch.
 *
 * Context: dq->ctx
 */
static VNDPTxResult vndp_tx_round(VirtIONetDPQueue *dq, VNDPTxBudget *budget)
{
    VirtIONet *n = dq->dp->n;
    VirtQueue *vq = dq->q->tx_vq;
    NetClientState *nc = vndp_nc(dq);
    VNDPTxResult ret = VNDP_TX_EMPTY;
    unsigned int count = 0, sent = 0;
    size_t bytes = 0;

    defer_call_begin();
    for (;;) {
        VirtQueueElement *elem;
        struct iovec *sg;
        int sg_num;

        if (budget->packets >= VNDP_TX_BUDGET_PACKETS ||
            budget->bytes >= VNDP_TX_BUDGET_BYTES) {
            ret = VNDP_TX_BUDGET;
            break;
        }
        elem = virtqueue_pop(vq, sizeof(VirtQueueElement));
        if (!elem) {
            break;
        }

        sg_num = virtio_net_tx_prepare(n, elem, &dq->txbuf, &sg);
        if (sg_num < 0) {
            virtqueue_detach_element(vq, elem, 0);
            g_free(elem);
            ret = VNDP_TX_BROKEN;
            break;
        }
        budget->packets++;
        if (sg_num > 0) {
            size_t len = iov_size(sg, sg_num) - n->host_hdr_len;

            budget->bytes += len;
            if (qemu_sendv_packet_async(nc, sg, sg_num,
                                        vndp_tx_complete) == 0) {
                /* Queued in the backend: completes in vndp_tx_complete() */
                dq->q->async_tx.elem = elem;
                dq->tx_in_backend = true;
                vndp_count(dq, VNDP_TX_BACKEND_BUSY, 1);
                ret = VNDP_TX_BUSY;
                break;
            }
            sent++;
            bytes += len;
        } else {
            vndp_count(dq, VNDP_TX_DROPPED, 1);
        }
        virtqueue_fill(vq, elem, 0, dq->tx_unflushed++);
        count++;
        g_free(elem);
    }
    defer_call_end();

    vndp_count(dq, VNDP_TX_PACKETS, sent);
    vndp_count(dq, VNDP_TX_BYTES, bytes);
    trace_virtio_net_dp_tx_round(dq->dp->n, dq->index, count, ret);
    return ret;
}

static bool vndp_tx_pending(VirtIONetDPQueue *dq);

/*
 * The TX queue is empty, and polling (if the AioContext polls at all)
 * found nothing more: should the guest kick for its next frame?  Not
 * while it streams.  A guest that streams (the queue's used buffers come
 * at a rate that adaptive moderation gathers interrupts for) queues its
 * next frames without waiting for these, so the device goes on looking
 * for them from a timer, the cheap continuation of polling, no later
 * than half the time it may hold the guest's interrupt, and notifications
 * stay off: no kick, and no IOThread woken per kick.  After
 * VNDP_TX_WAIT_EMPTY looks in a row that found nothing the stream is
 * over, and notifications go on again.  A guest that waits for its
 * frames (request/response, a few in flight) is not at a stream's rate,
 * or waits for an interrupt that moderation holds longer anyway.
 * Nothing waits with adaptive-coal=off, or in an AioContext that must
 * not poll (poll-max-ns=0): there each frame after an empty queue kicks.
 *
 * True: the timer looks, notifications stay off.  Context: dq->ctx
 */
static bool vndp_tx_wait(VirtIONetDPQueue *dq)
{
    int64_t ns;

    if (timer_pending(dq->tx_wait_timer)) {
        return true;
    }
    ns = virtio_net_coal_stream_ns(dq->dp->n, dq->q->tx_vq);
    if (!ns || !dq->ctx->poll_max_ns ||
        dq->tx_wait_empty >= VNDP_TX_WAIT_EMPTY) {
        dq->tx_wait_empty = 0;
        return false;
    }
    timer_mod(dq->tx_wait_timer,
              qemu_clock_get_ns(QEMU_CLOCK_REALTIME) + ns);
    return true;
}

/*
 * Drain the TX queue: notifications off while working; when it is
 * empty, used entries flushed, notifications on and one more look for
 * what raced with that.  While the AioContext polls the queue,
 * notifications stay off (polling sees new frames without a kick) until
 * vndp_tx_poll_end(), and after it while the guest streams (vndp_tx_wait()).
 * Whether the guest is interrupted for the used entries, now or after
 * more, is virtio-net-coal.c's to decide.
 *
 * One budget bounds the whole run, the rounds that the re-check starts
 * included, as vhost-net's weight does: a guest that keeps adding frames
 * a few at a time cannot hold the AioContext, and with it every pause
 * that the main loop waits for under the BQL.  A spent budget yields to
 * the AioContext and goes on from a bottom half.
 *
 * Context: dq->ctx
 */
static void vndp_tx_run(VirtIONetDPQueue *dq)
{
    VirtQueue *vq = dq->q->tx_vq;
    VirtIODevice *vdev = VIRTIO_DEVICE(dq->dp->n);
    VNDPTxBudget budget = { 0 };

    if (!dq->attached || dq->q->async_tx.elem || !virtio_queue_ready(vq)) {
        return;
    }

    if (vndp_nc(dq)->link_down || !vndp_nc(dq)->peer) {
        /* As without an IOThread: with the link down, frames go nowhere */
        unsigned int dropped;

        vndp_tx_flush(dq);
        virtio_queue_set_notification(vq, 1);
        dropped = virtqueue_drop_all(vq);
        if (dropped) {
            vndp_count(dq, VNDP_TX_DROPPED, dropped);
            vndp_notify(dq, vq, VNDP_TX_IRQS, dropped);
        }
        return;
    }

    for (;;) {
        virtio_queue_set_notification(vq, 0);
        switch (vndp_tx_round(dq, &budget)) {
        case VNDP_TX_BUDGET:
            vndp_tx_flush(dq);
            vndp_count(dq, VNDP_TX_BUDGET_EXHAUSTED, 1);
            qemu_bh_schedule(dq->tx_bh);
            return;
        case VNDP_TX_BUSY:
        case VNDP_TX_BROKEN:
            vndp_tx_flush(dq);
            return;
        case VNDP_TX_EMPTY:
            break;
        }
        vndp_tx_flush(dq);
        if (dq->tx_polling || vdev->broken || vndp_tx_wait(dq)) {
            return;
        }
        virtio_queue_set_notification(vq, 1);
        if (virtio_queue_empty(vq)) {
            return;
        }
    }
}

/*
 * The stream timer looks at the TX queue.  Context: dq->ctx
 */
static void vndp_tx_wait_cb(void *opaque)
{
    VirtIONetDPQueue *dq = opaque;
    MEM_REENTRANCY_GUARD(vndp_guard(dq));

    vndp_count(dq, VNDP_TX_WAITED, 1);
    if (vndp_tx_pending(dq)) {
        dq->tx_wait_empty = 0;
    } else {
        dq->tx_wait_empty++;
    }
    vndp_tx_run(dq);
}

/*
 * The backend took the frame it had queued.
 *
 * Context: the pair's context: dq->ctx while attached, the main loop
 * when the pair was detached meanwhile
 */
static void vndp_tx_complete(NetClientState *nc, ssize_t len)
{
    VirtIONet *n = qemu_get_nic_opaque(nc);
    VirtIONetDPQueue *dq = n->vqs[nc->queue_index].dp;
    VirtIONetQueue *q = dq->q;
    MEM_REENTRANCY_GUARD(vndp_guard(dq));

    virtqueue_fill(q->tx_vq, q->async_tx.elem, 0, dq->tx_unflushed++);
    vndp_tx_flush(dq);
    g_free(q->async_tx.elem);
    q->async_tx.elem = NULL;
    dq->tx_in_backend = false;

    if (len > 0) {
        vndp_count(dq, VNDP_TX_PACKETS, 1);
        vndp_count(dq, VNDP_TX_BYTES, len - n->host_hdr_len);
    } else {
        vndp_count(dq, VNDP_TX_DROPPED, 1);
    }

    if (dq->attached) {
        qemu_bh_schedule(dq->tx_bh);
    } else {
        virtio_queue_set_notification(q->tx_vq, 1);
    }
}

/* Context: dq->ctx */
static void vndp_tx_bh(void *opaque)
{
    MEM_REENTRANCY_GUARD(vndp_guard(opaque));

    vndp_count(opaque, VNDP_TX_BH_RUNS, 1);
    vndp_tx_run(opaque);
}

/* A guest kick of the TX queue.  Context: dq->ctx */
static void vndp_tx_kick(EventNotifier *e)
{
    VirtIONetDPQueue *dq = container_of(e, VirtIONetDPQueue, tx_notifier);
    MEM_REENTRANCY_GUARD(vndp_guard(dq));

    if (event_notifier_test_and_clear(e)) {
        vndp_count(dq, VNDP_TX_KICKS, 1);
        vndp_tx_run(dq);
    }
}

/* Frames to send?  Context: dq->ctx */
static bool vndp_tx_pending(VirtIONetDPQueue *dq)
{
    VirtQueue *vq = dq->q->tx_vq;

    return !dq->q->async_tx.elem && virtio_queue_ready(vq) &&
           !virtio_queue_empty(vq);
}

/* IOThread polling of the TX queue: frames to send.  Context: dq->ctx */
static bool vndp_tx_poll(void *opaque)
{
    VirtIONetDPQueue *dq = container_of(opaque, VirtIONetDPQueue,
                                        tx_notifier);
    MEM_REENTRANCY_GUARD(vndp_guard(dq));

    return vndp_tx_pending(dq);
}

/* Polling found work: no kick needed.  Context: dq->ctx */
static void vndp_tx_poll_ready(EventNotifier *e)
{
    VirtIONetDPQueue *dq = container_of(e, VirtIONetDPQueue, tx_notifier);
    MEM_REENTRANCY_GUARD(vndp_guard(dq));

    if (vndp_tx_pending(dq)) {
        vndp_count(dq, VNDP_TX_POLLED, 1);
        dq->tx_wait_empty = 0;
    }
    vndp_tx_run(dq);
}

/* While polling, the guest need not kick.  Context: dq->ctx */
static void vndp_tx_poll_begin(EventNotifier *e)
{
    VirtIONetDPQueue *dq = container_of(e, VirtIONetDPQueue, tx_notifier);
    MEM_REENTRANCY_GUARD(vndp_guard(dq));

    dq->tx_polling = true;
    virtio_queue_set_notification(dq->q->tx_vq, 0);
}

/* Context: dq->ctx; the AioContext polls once more after this */
static void vndp_tx_poll_end(EventNotifier *e)
{
    VirtIONetDPQueue *dq = container_of(e, VirtIONetDPQueue, tx_notifier);
    MEM_REENTRANCY_GUARD(vndp_guard(dq));

    dq->tx_polling = false;
    if (!vndp_tx_wait(dq)) {
        virtio_queue_set_notification(dq->q->tx_vq, 1);
    }
}

/* ---- RX ---- */

/* Hand the filled RX entries to the guest.  Context: the pair's */
static void vndp_rx_flush(VirtIONetDPQueue *dq)
{
    unsigned int count = dq->rx_unflushed;
    unsigned int packets = dq->rx_unflushed_packets;

    if (!count) {
        return;
    }
    dq->rx_unflushed = 0;
    dq->rx_unflushed_packets = 0;
    virtqueue_flush(dq->q->rx_vq, count);
    vndp_notify(dq, dq->q->rx_vq, VNDP_RX_IRQS, packets);
    vndp_count(dq, VNDP_RX_BATCHES, 1);
    trace_virtio_net_dp_rx_flush(dq->dp->n, dq->index, count);
}

/* The backend's handler is done: end of the batch.  Context: dq->ctx */
static void vndp_rx_flush_bh(void *opaque)
{
    MEM_REENTRANCY_GUARD(vndp_guard(opaque));

    vndp_count(opaque, VNDP_RX_BH_RUNS, 1);
    vndp_rx_flush(opaque);
}

/* Receive has buffers again, or the pair leaves.  Context: dq->ctx */
static void vndp_rx_unstall(VirtIONetDPQueue *dq)
{
    if (dq->rx_stalled) {
        trace_virtio_net_dp_rx_stall(dq->dp->n, dq->index, false);
        dq->rx_stalled = false;
    }
}

/* Context: the pair's context */
bool virtio_net_dataplane_rx_filled(VirtIONetQueue *q, unsigned int count,
                                    size_t size)
{
    VirtIONetDPQueue *dq = q->dp;

    if (!dq) {
        return false;
    }
    vndp_count(dq, VNDP_RX_PACKETS, 1);
    vndp_count(dq, VNDP_RX_BYTES, size - q->n->host_hdr_len);
    vndp_rx_unstall(dq);
    if (!dq->attached) {
        return false;
    }
    if (!dq->rx_unflushed) {
        qemu_bh_schedule(dq->rx_flush_bh);
    }
    dq->rx_unflushed += count;
    dq->rx_unflushed_packets++;
    return true;
}

/*
 * No room for a frame: virtio_net_has_buffers() left notifications on,
 * the refill kick resumes, or IOThread polling when it sees the guest's
 * avail index move past where it is now (vndp_rx_poll()).  Let the guest
 * have what it can already take, or it may wait for that before it
 * refills.
 *
 * Context: the pair's context
 */
void virtio_net_dataplane_rx_stalled(VirtIONetQueue *q)
{
    VirtIONetDPQueue *dq = q->dp;
    unsigned int in_bytes;

    if (!dq) {
        return;
    }
    vndp_count(dq, VNDP_RX_NO_BUFFERS, 1);
    vndp_rx_flush(dq);
    virtio_net_coal_flush(q->n, q->rx_vq);
    /* Looks at one buffer at most: only the index it returns matters */
    dq->rx_stall_avail = virtqueue_get_avail_bytes(q->rx_vq, &in_bytes,
                                                   NULL, 0, 0);
    if (!dq->rx_stalled && dq->rx_stall_avail >= 0) {
        trace_virtio_net_dp_rx_stall(dq->dp->n, dq->index, true);
    }
    dq->rx_stalled = dq->rx_stall_avail >= 0;
}

/* A frame did not fit the guest's buffers.  Context: the pair's */
void virtio_net_dataplane_rx_dropped(VirtIONetQueue *q)
{
    if (q->dp) {
        vndp_count(q->dp, VNDP_RX_DROPPED, 1);
    }
}

/* Frames the backend queued while the guest had no room.  Context: ctx */
static void vndp_rx_resume(VirtIONetDPQueue *dq)
{
    vndp_rx_unstall(dq);
    qemu_flush_queued_packets(vndp_nc(dq));
}

/* The guest added RX buffers.  Context: dq->ctx */
static void vndp_rx_kick(EventNotifier *e)
{
    VirtIONetDPQueue *dq = container_of(e, VirtIONetDPQueue, rx_notifier);
    MEM_REENTRANCY_GUARD(vndp_guard(dq));

    if (event_notifier_test_and_clear(e)) {
        vndp_count(dq, VNDP_RX_KICKS, 1);
        vndp_rx_resume(dq);
    }
}

/*
 * IOThread polling of the RX queue, while receive waits for buffers: has
 * the guest added any since the stall?  Buffers too few for the frame
 * stall it again, from a new index, so this never spins.  Otherwise
 * there is nothing to look for: the guest refills its RX queue all the
 * time, and the dataplane takes buffers as frames come.
 *
 * Notifications stay on, as the stall left them: the guest's kick may
 * come too, and finds nothing more to do.
 *
 * Context: dq->ctx
 */
static bool vndp_rx_poll(void *opaque)
{
    VirtIONetDPQueue *dq = container_of(opaque, VirtIONetDPQueue,
                                        rx_notifier);
    MEM_REENTRANCY_GUARD(vndp_guard(dq));

    return dq->rx_stalled &&
           virtio_queue_enable_notification_and_check(dq->q->rx_vq,
                                                      dq->rx_stall_avail);
}

/* Polling saw the guest refill.  Context: dq->ctx */
static void vndp_rx_poll_ready(EventNotifier *e)
{
    VirtIONetDPQueue *dq = container_of(e, VirtIONetDPQueue, rx_notifier);
    MEM_REENTRANCY_GUARD(vndp_guard(dq));

    vndp_count(dq, VNDP_RX_POLLED, 1);
    vndp_rx_resume(dq);
}

/* Catch up after an attach.  Context: dq->ctx */
static void vndp_rx_resume_bh(void *opaque)
{
    MEM_REENTRANCY_GUARD(vndp_guard(opaque));

    vndp_count(opaque, VNDP_RX_BH_RUNS, 1);
    vndp_rx_resume(opaque);
}

/* ---- attach / detach a queue pair ---- */

/*
 * Run the queue pair in its IOThread.
 *
 * Context: BQL held, the pair detached
 */
static void vndp_attach(VirtIONetDPQueue *dq)
{
    VirtIONetQueue *q = dq->q;
    NetClientState *nc = vndp_nc(dq);

    assert(!dq->attached);
    trace_virtio_net_dp_attach(dq->dp->n, dq->index, dq->ctx);

    /*
     * Whatever the main loop had going for this pair ends here.  A frame
     * that the main loop's TX path left in the backend completes through
     * virtio-net.c's callback, which must not run in the IOThread: it
     * goes now.  One of ours stays where it is, whatever paused the pair,
     * and completes in vndp_tx_complete() wherever the backend runs.
     */
    if (q->tx_bh) {
        qemu_bh_cancel(q->tx_bh);
    }
    q->tx_waiting = 0;
    if (q->async_tx.elem && !dq->tx_in_backend) {
        qemu_flush_or_purge_queued_packets(nc->peer, true);
    }

    /*
     * Handlers get these copies of the host notifiers (same file
     * descriptors), so that container_of() leads back to dq.
     */
    dq->tx_notifier = *virtio_queue_get_host_notifier(q->tx_vq);
    dq->rx_notifier = *virtio_queue_get_host_notifier(q->rx_vq);

    /*
     * All set before the backend moves: from then on the IOThread may
     * deliver a frame (virtio_net_dataplane_rx_filled() reads attached)
     * or complete one of ours (vndp_tx_complete() uses the TX queue).
     */
    virtio_queue_set_notification(q->tx_vq, 1);
    virtio_net_coal_move(dq->dp->n, dq->index, dq->ctx);
    dq->attached = true;
    qemu_net_pair_set_aio_context(nc, dq->ctx);

    aio_set_event_notifier(dq->ctx, &dq->tx_notifier, vndp_tx_kick,
                           vndp_tx_poll, vndp_tx_poll_ready);
    aio_set_event_notifier_poll(dq->ctx, &dq->tx_notifier,
                                vndp_tx_poll_begin, vndp_tx_poll_end);
    aio_set_event_notifier(dq->ctx, &dq->rx_notifier, vndp_rx_kick,
                           vndp_rx_poll, vndp_rx_poll_ready);

    /*
     * Catch up with what happened while detached.  A kick the guest made
     * meanwhile is still pending in the eventfd and is counted as one.
     */
    qemu_bh_schedule(dq->tx_bh);
    qemu_bh_schedule(dq->rx_resume_bh);
}

typedef struct VNDPDetach {
    VirtIONetDPQueue *dq;
    bool purge;
} VNDPDetach;

/* Context: dq->ctx */
static void vndp_detach_bh(void *opaque)
{
    VNDPDetach *d = opaque;
    VirtIONetDPQueue *dq = d->dq;
    NetClientState *nc = vndp_nc(dq);
    MEM_REENTRANCY_GUARD(vndp_guard(dq));

    aio_set_event_notifier(dq->ctx, &dq->tx_notifier, NULL, NULL, NULL);
    aio_set_event_notifier(dq->ctx, &dq->rx_notifier, NULL, NULL, NULL);

    if (d->purge && nc->peer) {
        /*
         * The VM stops: complete the guest's frames that wait in the
         * backend, so that no element stays in flight.  Frames waiting for
         * the guest stay queued and are delivered after cont (the main
         * loop's VM state handler leaves bound clients to us).
         */
        qemu_flush_or_purge_queued_packets(nc->peer, true);
    }
    vndp_tx_flush(dq);
    vndp_rx_flush(dq);

    dq->attached = false;
    dq->tx_polling = false;     /* removing the handler ended any poll */
    timer_del(dq->tx_wait_timer);
    dq->tx_wait_empty = 0;
    vndp_rx_unstall(dq);
    qemu_bh_cancel(dq->tx_bh);
    qemu_bh_cancel(dq->rx_flush_bh);
    qemu_bh_cancel(dq->rx_resume_bh);
    /* The next owner starts from a queue that notifies */
    if (!dq->q->async_tx.elem) {
        virtio_queue_set_notification(dq->q->tx_vq, 1);
    }
    virtio_net_coal_move(dq->dp->n, dq->index, NULL);
    qemu_net_pair_set_aio_context(nc, NULL);
}

/*
 * Bring the queue pair back to the main loop.
 *
 * Context: BQL held
 */
static void vndp_detach(VirtIONetDPQueue *dq, bool purge)
{
    VNDPDetach d = { .dq = dq, .purge = purge };

    assert(dq->attached);
    trace_virtio_net_dp_detach(dq->dp->n, dq->index, purge);
    aio_wait_bh_oneshot(dq->ctx, vndp_detach_bh, &d);
    assert(!dq->attached);
}

/* Queue pairs that have virtqueues now.  Context: BQL held */
static unsigned int vndp_live_pairs(VirtIONetDataPlane *dp)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(dp->n);

    return MIN(dp->nqp, (virtio_get_num_queues(vdev) - 1) / 2);
}

/* ---- drain ---- */

/* Context: BQL held */
void virtio_net_dataplane_drained_begin(NetClientState *nc)
{
    VirtIONet *n = qemu_get_nic_opaque(nc);
    VirtIONetDPQueue *dq = n->vqs[nc->queue_index].dp;

    if (dq && dq->attached) {
        vndp_detach(dq, false);
        dq->resume = true;
    }
}

/* Context: BQL held */
void virtio_net_dataplane_drained_end(NetClientState *nc)
{
    VirtIONet *n = qemu_get_nic_opaque(nc);
    VirtIONetDPQueue *dq = n->vqs[nc->queue_index].dp;

    if (dq && dq->resume) {
        dq->resume = false;
        if (dq->dp->started) {
            vndp_attach(dq);
        }
    }
}

/* Context: BQL held */
void virtio_net_dataplane_drained_begin_all(VirtIONet *n)
{
    if (!n->dataplane) {
        return;
    }
    for (unsigned int i = 0; i < n->dataplane->nqp; i++) {
        qemu_net_client_drained_begin(qemu_get_subqueue(n->nic, i));
    }
}

/* Context: BQL held */
void virtio_net_dataplane_drained_end_all(VirtIONet *n)
{
    if (!n->dataplane) {
        return;
    }
    for (unsigned int i = 0; i < n->dataplane->nqp; i++) {
        qemu_net_client_drained_end(qemu_get_subqueue(n->nic, i));
    }
}

/* ---- start / stop ---- */

static int (*vndp_parent_start_ioeventfd)(VirtIODevice *vdev);
static void (*vndp_parent_stop_ioeventfd)(VirtIODevice *vdev);

/*
 * The driver is ready (DRIVER_OK, VM running): move kicks, interrupts and
 * the queue pairs to their IOThreads.
 *
 * Context: BQL held
 */
static int virtio_net_dataplane_start(VirtIODevice *vdev)
{
    VirtIONet *n = VIRTIO_NET(vdev);
    VirtIONetDataPlane *dp = n->dataplane;
    BusState *qbus = BUS(qdev_get_parent_bus(DEVICE(vdev)));
    VirtioBusClass *k = VIRTIO_BUS_GET_CLASS(qbus);
    unsigned int nvqs = virtio_get_num_queues(vdev);
    unsigned int i;
    int r;

    if (!dp) {
        return vndp_parent_start_ioeventfd(vdev);
    }
    if (dp->started) {
        return 0;
    }

    r = k->set_guest_notifiers(qbus->parent, nvqs, true);
    if (r < 0) {
        error_report("virtio-net: cannot set up guest notifiers (%d); "
                     "queues stay in the main loop", r);
        return r;
    }

    /* One transaction: address_space_update_ioeventfds() is quadratic */
    memory_region_transaction_begin();
    for (i = 0; i < nvqs; i++) {
        r = virtio_bus_set_host_notifier(VIRTIO_BUS(qbus), i, true);
        if (r < 0) {
            unsigned int j = i;

            error_report("virtio-net: cannot set up host notifier %u (%d)",
                         i, r);
            while (i--) {
                virtio_bus_set_host_notifier(VIRTIO_BUS(qbus), i, false);
            }
            memory_region_transaction_commit();
            while (j--) {
                virtio_bus_cleanup_host_notifier(VIRTIO_BUS(qbus), j);
            }
            k->set_guest_notifiers(qbus->parent, nvqs, false);
            return r;
        }
    }
    memory_region_transaction_commit();

    /* The control queue stays in the main loop */
    event_notifier_set_handler(virtio_queue_get_host_notifier(n->ctrl_vq),
                               virtio_queue_host_notifier_read);
    event_notifier_set(virtio_queue_get_host_notifier(n->ctrl_vq));

    dp->started = true;
    for (i = 0; i < vndp_live_pairs(dp); i++) {
        VirtIONetDPQueue *dq = dp->qs[i];

        if (qemu_get_subqueue(n->nic, i)->drained) {
            dq->resume = true;
        } else {
            vndp_attach(dq);
        }
    }
    return 0;
}

/*
 * Reset, status change, VM stop, unplug: everything back to the main
 * loop, the host and guest notifiers released.
 *
 * Context: BQL held
 */
static void virtio_net_dataplane_stop(VirtIODevice *vdev)
{
    VirtIONet *n = VIRTIO_NET(vdev);
    VirtIONetDataPlane *dp = n->dataplane;
    BusState *qbus = BUS(qdev_get_parent_bus(DEVICE(vdev)));
    VirtioBusClass *k = VIRTIO_BUS_GET_CLASS(qbus);
    unsigned int nvqs = virtio_get_num_queues(vdev);
    unsigned int i;

    if (!dp) {
        vndp_parent_stop_ioeventfd(vdev);
        return;
    }
    if (!dp->started) {
        return;
    }

    for (i = 0; i < dp->nqp; i++) {
        VirtIONetDPQueue *dq = dp->qs[i];

        dq->resume = false;
        if (dq->attached) {
            vndp_detach(dq, !vdev->vm_running);
        }
    }
    dp->started = false;

    event_notifier_set_handler(virtio_queue_get_host_notifier(n->ctrl_vq),
                               NULL);

    memory_region_transaction_begin();
    for (i = 0; i < nvqs; i++) {
        virtio_bus_set_host_notifier(VIRTIO_BUS(qbus), i, false);
    }
    memory_region_transaction_commit();
    /* Kicks still pending go to the main loop's handlers */
    for (i = 0; i < nvqs; i++) {
        virtio_bus_cleanup_host_notifier(VIRTIO_BUS(qbus), i);
    }

    k->set_guest_notifiers(qbus->parent, nvqs, false);
}

/* ---- what the driver changes under running queues ---- */

/* Context: BQL held (main loop bottom half) */
static void vndp_restart_bh(void *opaque)
{
    VirtIONet *n = opaque;
    VirtIODevice *vdev = VIRTIO_DEVICE(n);

    /* Unless the device went, or the driver stopped it meanwhile */
    if (DEVICE(n)->realized && vdev->status & VIRTIO_CONFIG_S_DRIVER_OK &&
        !vdev->broken) {
        virtio_bus_start_ioeventfd(VIRTIO_BUS(qdev_get_parent_bus(
                                                  DEVICE(n))));
    }
    object_unref(OBJECT(n));
}

/*
 * The driver rewrites the features of a running device (legacy: at any
 * time; virtio 1: after clearing FEATURES_OK).  virtio_net_set_features()
 * changes header lengths and queue counts that the IOThreads read, and
 * virtio core the features themselves after it.  Queue counts matter even
 * without an IOThread: queues added while ioeventfd runs have none, and
 * stopping ioeventfd later (reset) aborted deleting one that was never
 * added (found by make fuzz).  So ioeventfd stops now, with the queue
 * pairs back in the main loop, and starts again from a bottom half, once
 * all of that is done, for the queues the device has then.
 *
 * Context: BQL held
 */
void virtio_net_dataplane_set_features(VirtIONet *n)
{
    VirtioBusState *bus = VIRTIO_BUS(qdev_get_parent_bus(DEVICE(n)));

    if (!bus->ioeventfd_started) {
        return;
    }
    trace_virtio_net_dp_features(n);
    virtio_bus_stop_ioeventfd(bus);
    object_ref(OBJECT(n));
    aio_bh_schedule_oneshot(qemu_get_aio_context(), vndp_restart_bh, n);
}

/* The pair of data virtqueue @vq_index, NULL for the control queue */
static VirtIONetDPQueue *vndp_vq_pair(VirtIONet *n, uint32_t vq_index)
{
    VirtIONetDataPlane *dp = n->dataplane;

    if (!dp || vq_index >= 2 * dp->nqp) {
        return NULL;
    }
    return dp->qs[vq_index / 2];
}

/*
 * The driver resets virtqueue @vq_index (VIRTIO_F_RING_RESET; Linux does
 * for ethtool -G).  Its pair stays paused until the driver enables the
 * queue again or resets the device, so that neither upstream's
 * __virtio_queue_reset() nor the new ring the driver sets up meets the
 * IOThread half done.
 *
 * Context: BQL held
 */
void virtio_net_dataplane_queue_reset(VirtIONet *n, uint32_t vq_index)
{
    VirtIONetDPQueue *dq = vndp_vq_pair(n, vq_index);

    if (dq) {
        if (!dq->vqs_reset) {
            qemu_net_client_drained_begin(vndp_nc(dq));
        }
        dq->vqs_reset |= 1u << (vq_index % 2);
    }
    virtio_net_coal_queue_enable(n, vq_index, false);
}

/* Context: BQL held */
void virtio_net_dataplane_queue_enable(VirtIONet *n, uint32_t vq_index)
{
    VirtIONetDPQueue *dq = vndp_vq_pair(n, vq_index);
    unsigned int bit = 1u << (vq_index % 2);

    virtio_net_coal_queue_enable(n, vq_index, true);
    if (!dq || !(dq->vqs_reset & bit)) {
        return;
    }
    dq->vqs_reset &= ~bit;
    if (!dq->vqs_reset) {
        qemu_net_client_drained_end(vndp_nc(dq));
    }
}

/*
 * Device reset or unplug: queues that the driver reset are reset with the
 * rest, and their pairs run again when the driver starts the device.
 *
 * Context: BQL held
 */
void virtio_net_dataplane_reset(VirtIONet *n)
{
    VirtIONetDataPlane *dp = n->dataplane;

    virtio_net_coal_reset(n);
    if (!dp) {
        return;
    }
    for (unsigned int i = 0; i < dp->nqp; i++) {
        if (dp->qs[i]->vqs_reset) {
            dp->qs[i]->vqs_reset = 0;
            qemu_net_client_drained_end(vndp_nc(dp->qs[i]));
        }
    }
}

/* Context: class init */
void virtio_net_dataplane_class_init(VirtioDeviceClass *vdc)
{
    vndp_parent_start_ioeventfd = vdc->start_ioeventfd;
    vndp_parent_stop_ioeventfd = vdc->stop_ioeventfd;
    vdc->start_ioeventfd = virtio_net_dataplane_start;
    vdc->stop_ioeventfd = virtio_net_dataplane_stop;
}

/* ---- counters ---- */

/* Context: BQL held */
void virtio_net_dataplane_get_stats(NetClientState *nc, NetStatsBuilder *b)
{
    VirtIONet *n = qemu_get_nic_opaque(nc);
    VirtIONetDPQueue *dq = n->vqs[nc->queue_index].dp;

    for (unsigned int c = 0; dq && c < VNDP__MAX; c++) {
        net_stats_add(b, vndp_counter_names[c],
                      qatomic_read__nocheck(&dq->counters[c]));
    }
    virtio_net_coal_get_stats(n, nc->queue_index, b);
}

/* query-stats provider "virtio-net".  Context: BQL held */
static void vndp_stats_cb(StatsResultList **results, StatsTarget target,
                          strList *names, strList *targets, Error **errp)
{
    if (target == STATS_TARGET_NETDEV) {
        net_stats_query(STATS_PROVIDER_VIRTIO_NET, true, results, names,
                        targets);
    }
}

/* Context: BQL held */
static void vndp_stats_schemas_cb(StatsSchemaList **result, Error **errp)
{
    net_stats_query_schema(STATS_PROVIDER_VIRTIO_NET, true, result);
}

/* ---- realize / unrealize ---- */

/* Context: BQL held */
static bool vndp_check(VirtIONet *n, AioContext **ctxs, Error **errp)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(n);
    BusState *qbus = BUS(qdev_get_parent_bus(DEVICE(n)));
    VirtioBusClass *k = VIRTIO_BUS_GET_CLASS(qbus);
    bool one_ctx = true;
    unsigned int i;

    if (!k->set_guest_notifiers || !k->ioeventfd_assign) {
        error_setg(errp, "virtio-net: the transport has no ioeventfd, "
                   "which an iothread needs");
        return false;
    }
    if (!virtio_device_ioeventfd_enabled(vdev)) {
        error_setg(errp, "virtio-net: an iothread needs ioeventfd=on");
        return false;
    }
    if (n->net_conf.tx && !strcmp(n->net_conf.tx, "timer")) {
        error_setg(errp, "virtio-net: tx=timer cannot be used with an "
                   "iothread, which drains TX without a timer");
        return false;
    }
    if (virtio_has_feature(n->host_features, VIRTIO_NET_F_RSC_EXT)) {
        error_setg(errp, "virtio-net: guest_rsc_ext=on cannot be used "
                   "with an iothread");
        return false;
    }
    for (i = 1; i < n->max_queue_pairs; i++) {
        one_ctx &= ctxs[i] == ctxs[0];
    }
    if (!one_ctx && virtio_has_feature(n->host_features, VIRTIO_NET_F_RSS)) {
        error_setg(errp, "virtio-net: rss=on needs all queue pairs in one "
                   "iothread");
        return false;
    }
    for (i = 0; i < n->nic_conf.peers.queues; i++) {
        if (!qemu_net_client_check_iothread(n->nic_conf.peers.ncs[i],
                                            errp)) {
            error_prepend(errp, "virtio-net: ");
            return false;
        }
    }
    return true;
}

/* Context: BQL held */
static bool vndp_realize(VirtIONet *n, Error **errp)
{
    g_autofree AioContext **ctxs = NULL;
    VirtIONetDataPlane *dp;

    if (!n->iothread && !n->iothread_vq_mapping_list) {
        return true;
    }
    if (n->iothread && n->iothread_vq_mapping_list) {
        error_setg(errp, "virtio-net: iothread and iothread-vq-mapping "
                   "cannot be set at the same time");
        return false;
    }

    ctxs = g_new(AioContext *, n->max_queue_pairs);
    if (n->iothread_vq_mapping_list) {
        /* For virtio-net, "vqs" are queue pairs: RX and TX share a thread */
        if (!iothread_vq_mapping_apply(n->iothread_vq_mapping_list, ctxs,
                                       n->max_queue_pairs, errp)) {
            error_prepend(errp, "virtio-net: iothread-vq-mapping: ");
            return false;
        }
    } else {
        for (unsigned int i = 0; i < n->max_queue_pairs; i++) {
            ctxs[i] = iothread_get_aio_context(n->iothread);
        }
    }

    if (!vndp_check(n, ctxs, errp)) {
        if (n->iothread_vq_mapping_list) {
            iothread_vq_mapping_cleanup(n->iothread_vq_mapping_list);
        }
        return false;
    }
    if (n->iothread) {
        /* Released in virtio_net_dataplane_unrealize() */
        object_ref(OBJECT(n->iothread));
    }

    dp = g_new0(VirtIONetDataPlane, 1);
    dp->n = n;
    dp->nqp = n->max_queue_pairs;
    dp->qs = g_new0(VirtIONetDPQueue *, dp->nqp);
    for (unsigned int i = 0; i < dp->nqp; i++) {
        VirtIONetDPQueue *dq = g_malloc0(sizeof(*dq) +
                                         VNDP__MAX * sizeof(uint64_t));

        dq->dp = dp;
        dq->index = i;
        dq->ctx = ctxs[i];
        dq->tx_bh = aio_bh_new(dq->ctx, vndp_tx_bh, dq);
        dq->rx_flush_bh = aio_bh_new(dq->ctx, vndp_rx_flush_bh, dq);
        dq->rx_resume_bh = aio_bh_new(dq->ctx, vndp_rx_resume_bh, dq);
        dq->tx_wait_timer = aio_timer_new(dq->ctx, QEMU_CLOCK_REALTIME,
                                          SCALE_NS, vndp_tx_wait_cb, dq);
        dp->qs[i] = dq;
    }
    n->dataplane = dp;

    /*
     * Interrupts go through irqfd or the guest notifier's handler; the
     * vhost-only masking callbacks of virtio-net do not apply.
     */
    VIRTIO_DEVICE(n)->use_guest_notifier_mask = false;
    return true;
}

/*
 * netplane's state of a virtio-net device: the dataplane, and
 * notification coalescing, which every device may have.
 *
 * Context: BQL held (realize)
 */
bool virtio_net_dataplane_realize(VirtIONet *n, Error **errp)
{
    static bool stats_registered;

    if (!stats_registered) {
        add_stats_callbacks(STATS_PROVIDER_VIRTIO_NET, vndp_stats_cb,
                            vndp_stats_schemas_cb);
        stats_registered = true;
    }
    if (!virtio_net_coal_realize(n, n->iothread || n->iothread_vq_mapping_list,
                                 errp)) {
        return false;
    }
    if (!vndp_realize(n, errp)) {
        virtio_net_coal_unrealize(n);
        return false;
    }
    return true;
}

/* Context: BQL held (realize, after the NIC is created) */
void virtio_net_dataplane_bind(VirtIONet *n)
{
    VirtIONetDataPlane *dp = n->dataplane;

    if (!dp) {
        return;
    }
    for (unsigned int i = 0; i < dp->nqp; i++) {
        dp->qs[i]->q = &n->vqs[i];
        n->vqs[i].dp = dp->qs[i];
        qemu_net_pair_bind(qemu_get_subqueue(n->nic, i), dp->qs[i]->ctx);
    }
}

/* Context: BQL held */
void virtio_net_dataplane_unrealize(VirtIONet *n)
{
    VirtIONetDataPlane *dp = n->dataplane;

    virtio_net_coal_unrealize(n);
    if (!dp) {
        return;
    }
    assert(!dp->started);
    virtio_net_dataplane_reset(n);
    for (unsigned int i = 0; i < dp->nqp; i++) {
        VirtIONetDPQueue *dq = dp->qs[i];

        assert(!dq->attached);
        /*
         * A frame of ours that the backend still holds (an unplug without
         * reset) completes now, while the state it completes into exists,
         * rather than in virtio_net_del_queue()'s purge.
         */
        qemu_purge_queued_packets(vndp_nc(dq));
        qemu_net_pair_bind(qemu_get_subqueue(n->nic, i), NULL);
        n->vqs[i].dp = NULL;
        qemu_bh_delete(dq->tx_bh);
        qemu_bh_delete(dq->rx_flush_bh);
        qemu_bh_delete(dq->rx_resume_bh);
        timer_free(dq->tx_wait_timer);
        g_free(dq);
    }
    g_free(dp->qs);
    g_free(dp);
    n->dataplane = NULL;

    if (n->iothread_vq_mapping_list) {
        iothread_vq_mapping_cleanup(n->iothread_vq_mapping_list);
    }
    if (n->iothread) {
        object_unref(OBJECT(n->iothread));
    }
}
