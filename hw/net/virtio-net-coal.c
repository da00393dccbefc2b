/*
 * virtio-net notification coalescing
 *
 * VIRTIO_NET_F_NOTF_COAL and VIRTIO_NET_F_VQ_NOTF_COAL (virtio 1.3,
 * "Notifications Coalescing"): the driver tells the device, per data
 * virtqueue, how many packets (max_packets) or microseconds (max_usecs)
 * may pass before a used buffer notification; Linux sets them with
 * ethtool -C.  With both non-zero, a queue counts the packets it sent or
 * received since its last notification, from the first that the driver
 * waits to hear of, and notifies when max_packets are reached or
 * max_usecs have passed since the first of them; with
 * either 0, it notifies after every packet, as without the feature.
 * EVENT_IDX and VRING_AVAIL_F_NO_INTERRUPT still decide whether a
 * notification interrupts the guest (virtio_notify_wanted()).
 *
 * Without the driver's parameters, a queue that runs in an IOThread adapts
 * them to its own rate, as NIC adaptive coalescing and Linux's net_dim do
 * (virtio-net's adaptive-coal, on by default): a millisecond's sample of
 * used buffers picks a level of vncoal_levels[], where sparse traffic and
 * request/response get their notification at once and a stream gathers
 * a few buffers or microseconds; a request's transmit completion waits
 * for its answer (vncoal_answer()).  Whatever the driver sets wins; the
 * main-loop path does not adapt.  An adaptive wait ends when the pair
 * leaves its IOThread (pause, stop, migration): nothing of it migrates.
 *
 * Each queue's state belongs to the context it runs in: its IOThread
 * with the dataplane, else the main loop.  Its timer runs there too (a
 * QEMU_CLOCK_VIRTUAL timer, which stops with the VM), costs nothing
 * while no notification is held, and follows the queue pair when it
 * moves between the IOThread and the main loop (virtio_net_coal_move()).
 * Control commands run in the main loop with every pair paused.
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/iov.h"
#include "qemu/main-loop.h"
#include "qemu/timer.h"
#include "hw/virtio/virtio-access.h"
#include "system/mem-reentrancy.h"
#include "virtio-net-coal.h"
#include "trace.h"

#define VNCOAL_FEATURES ((1ULL << VIRTIO_NET_F_NOTF_COAL) | \
                         (1ULL << VIRTIO_NET_F_VQ_NOTF_COAL))

/* Adaptive moderation: the rate sample, and the levels it picks from */
#define VNCOAL_SAMPLE_NS        (1 * SCALE_MS)

static const struct {
    uint32_t rate;              /* used buffers per second, from */
    uint32_t max_packets;
    uint32_t max_usecs;
} vncoal_levels[] = {
    { 0, 0, 0 },                /* at once */
    { 20000, 16, 100 },
    { 50000, 32, 250 },
};

/*
 * Adaptive moderation of a transmit completion below the lowest stream
 * level, when the queue pair answers (request/response): see
 * vncoal_answer().  A reply on the pair's receive queue within
 * VNCOAL_ANSWER_US of a completion is an answer; after
 * VNCOAL_ANSWER_STREAK of them in a row (up to VNCOAL_ANSWER_BACKOFF
 * after holds that did not pay), a completion's interrupt waits up to
 * VNCOAL_ANSWER_US or VNCOAL_ANSWER_PACKETS completions.
 */
#define VNCOAL_ANSWER_US        500
#define VNCOAL_ANSWER_STREAK    2
#define VNCOAL_ANSWER_BACKOFF   256
#define VNCOAL_ANSWER_PACKETS   16

/* Per data virtqueue; RX counters first, then TX (see vncoal_names) */
typedef enum VNCoalCounter {
    VNCOAL_IRQS_PACKETS,        /* interrupts at max_packets */
    VNCOAL_IRQS_USECS,          /* by the timer: max_usecs, or TX's */
    VNCOAL_HELD,                /* packets whose interrupt waited */
    VNCOAL_UNWANTED,            /* held, and not wanted when due */
    VNCOAL__MAX,
} VNCoalCounter;

static const char *const vncoal_names[2][VNCOAL__MAX] = {
    {
        [VNCOAL_IRQS_PACKETS] = "rx-coal-interrupts-packets",
        [VNCOAL_IRQS_USECS] = "rx-coal-interrupts-usecs",
        [VNCOAL_HELD] = "rx-coal-held",
        [VNCOAL_UNWANTED] = "rx-coal-unwanted",
    }, {
        [VNCOAL_IRQS_PACKETS] = "tx-coal-interrupts-packets",
        [VNCOAL_IRQS_USECS] = "tx-coal-interrupts-usecs",
        [VNCOAL_HELD] = "tx-coal-held",
        [VNCOAL_UNWANTED] = "tx-coal-unwanted",
    },
};

typedef struct VNCoalQueue {
    struct VirtIONetCoal *coal;
    uint32_t index;             /* virtqueue index: RX even, TX odd */
    uint32_t max_packets;
    uint32_t max_usecs;
    uint32_t pending;           /* packets since the last notification */
    int64_t first;              /* when the first of them came (virtual) */
    uint32_t hold_usecs;        /* max_usecs of the wait in progress */
    bool hold_answer;           /* TX: it waits for the pair's answer */
    int64_t sample_start;       /* adaptive: the rate sample (realtime) */
    uint64_t sample_packets;
    unsigned int level;         /* adaptive: vncoal_levels[] */
    bool low_sample;            /* the last sample was below level */
    bool asked;                 /* TX: its last completion is unanswered */
    int64_t asked_at;           /* ...since then */
    unsigned int answers;       /* TX: answered completions in a row */
    unsigned int answers_needed; /* TX: before its interrupts wait */
    QEMUTimer *timer[2];        /* in the main loop, in the pair's IOThread */
    unsigned int where;         /* timer[] of where the queue runs now */
    uint64_t counters[VNCOAL__MAX];
} VNCoalQueue;

struct VirtIONetCoal {
    VirtIONet *n;
    bool adaptive;              /* adaptive-coal, with an IOThread */
    uint32_t nvqs;              /* data virtqueues */
    uint32_t set_packets[2];    /* the last RX_SET [0] and TX_SET [1] */
    uint32_t set_usecs[2];
    VNCoalQueue q[];
};

/*
 * Counters have one writer, the queue's context; read under the BQL.
 *
 * Context: the queue's
 */
static void vncoal_count(VNCoalQueue *q, VNCoalCounter c, uint64_t v)
{
    qatomic_set__nocheck(&q->counters[c],
                         qatomic_read__nocheck(&q->counters[c]) + v);
}

/* Context: any */
static VNCoalQueue *vncoal_queue(VirtIONet *n, uint32_t index)
{
    return n->coal && index < n->coal->nvqs ? &n->coal->q[index] : NULL;
}

/* Context: the queue's, or BQL held with its pair paused */
static int64_t vncoal_deadline(VNCoalQueue *q)
{
    return q->first + (int64_t)q->hold_usecs * SCALE_US;
}

/* Did the driver set @q's parameters?  Context: the queue's */
static bool vncoal_driver_set(VNCoalQueue *q)
{
    return q->max_packets && q->max_usecs;
}

/*
 * Adaptive moderation starts again from the lowest level, with a new
 * sample.  Context: the queue's, or BQL held with its pair paused
 */
static void vncoal_adapt_reset(VNCoalQueue *q)
{
    q->level = 0;
    q->low_sample = false;
    q->sample_packets = 0;
}

/*
 * And from no answers (vncoal_answer()).  Context: the queue's, or BQL
 * held with its pair paused
 */
static void vncoal_answer_reset(VNCoalQueue *q)
{
    q->asked = false;
    q->answers = 0;
    q->answers_needed = VNCOAL_ANSWER_STREAK;
}

/*
 * A wait for an answer ended; @sent: its interrupt was still wanted (the
 * answer was late, or the driver's poll left TX alone), so waits stop
 * until twice as many answers come in a row (vncoal_answer()).
 *
 * Context: the queue's
 */
static void vncoal_answer_end(VNCoalQueue *q, bool sent)
{
    if (sent) {
        q->answers = 0;
        q->answers_needed = MIN(q->answers_needed * 2, VNCOAL_ANSWER_BACKOFF);
    } else {
        q->answers_needed = VNCOAL_ANSWER_STREAK;
    }
}

/* Interrupt the guest unless it asked not to be.  Context: @vq's */
static VirtIONetCoalResult vncoal_notify_now(VirtIODevice *vdev, VirtQueue *vq)
{
    if (!virtio_notify_wanted(vdev, vq)) {
        return VIRTIO_NET_COAL_SUPPRESSED;
    }
    virtio_notify(vdev, vq);
    return VIRTIO_NET_COAL_SENT;
}

/*
 * Notify for what @q holds: the notification conditions are met (@why).
 *
 * Context: the queue's
 */
static VirtIONetCoalResult vncoal_fire(VNCoalQueue *q, VNCoalCounter why)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(q->coal->n);
    VirtIONetCoalResult ret;

    q->pending = 0;
    timer_del(q->timer[q->where]);
    ret = vncoal_notify_now(vdev, virtio_get_queue(vdev, q->index));
    vncoal_count(q, ret == VIRTIO_NET_COAL_SENT ? why : VNCOAL_UNWANTED, 1);
    return ret;
}

/*
 * max_usecs passed since the first packet held.  A TX queue takes the
 * interrupt its pair's RX queue holds along, early (max_usecs is a
 * maximum): a reply that came while the request's completion waited
 * leaves in the same wake-up, not in one of its own, which costs a
 * vCPU on a busy host (netplane/results/bench-coal-rr-tail.md).  Not
 * the other way: a driver's RX poll frees its TX queue (Linux's
 * napi_tx), so a held TX interrupt is often never wanted.  Whether it was
 * tells a TX queue that waits for answers whether to go on
 * (vncoal_answer()).
 *
 * Context: the queue's
 */
static void vncoal_timer_cb(void *opaque)
{
    VNCoalQueue *q = opaque;
    VNCoalQueue *rx = &q->coal->q[q->index & ~1u];
    MEM_REENTRANCY_GUARD(q->coal->n->nic->reentrancy_guard);

    if (q->pending) {
        bool answer = q->hold_answer;
        bool sent = vncoal_fire(q, VNCOAL_IRQS_USECS) == VIRTIO_NET_COAL_SENT;

        if (answer) {
            vncoal_answer_end(q, sent);
        }
        if (rx != q && rx->pending) {
            vncoal_fire(rx, VNCOAL_IRQS_USECS);
        }
    }
}

/*
 * Adaptive moderation: count @packets into @q's rate sample and, once it
 * is a millisecond long, pick the level of that rate.  A level is left
 * downwards only after two samples in a row below 4/5 of its rate, so
 * that a rate on the edge or a stream in bursts does not switch at every
 * sample; a queue quiet for two samples starts again from the lowest.
 *
 * Context: the queue's IOThread
 */
static void vncoal_adapt(VNCoalQueue *q, int64_t now, unsigned int packets)
{
    int64_t elapsed = now - q->sample_start;
    unsigned int level = 0;
    uint64_t rate;

    if (elapsed >= 2 * VNCOAL_SAMPLE_NS) {
        /* After a pause, the packets before it say nothing of now */
        if (q->level) {
            trace_virtio_net_coal_level(q->coal->n, q->index, 0, 0);
        }
        vncoal_adapt_reset(q);
        q->sample_start = now;
        q->sample_packets = packets;
        return;
    }
    q->sample_packets += packets;
    if (elapsed < VNCOAL_SAMPLE_NS) {
        return;
    }
    rate = q->sample_packets * NANOSECONDS_PER_SECOND / elapsed;
    while (level + 1 < ARRAY_SIZE(vncoal_levels) &&
           rate >= vncoal_levels[level + 1].rate) {
        level++;
    }
    if (level < q->level &&
        (rate * 5 >= vncoal_levels[q->level].rate * 4 || !q->low_sample)) {
        /* Not yet: a stream that comes in bursts has quieter samples */
        q->low_sample = rate * 5 < vncoal_levels[q->level].rate * 4;
        level = q->level;
    } else {
        q->low_sample = false;
    }
    if (level != q->level) {
        trace_virtio_net_coal_level(q->coal->n, q->index, rate, level);
    }
    q->level = level;
    q->sample_start = now;
    q->sample_packets = 0;
}

/*
 * The parameters that hold @q's notifications now: the driver's, else
 * the adaptive level's in an IOThread.  False: none, notify at once.
 *
 * Context: the queue's
 */
static bool vncoal_params(VNCoalQueue *q, uint32_t *max_packets,
                          uint32_t *max_usecs)
{
    if (vncoal_driver_set(q)) {
        *max_packets = q->max_packets;
        *max_usecs = q->max_usecs;
        return true;
    }
    if (q->where && q->coal->adaptive && q->level) {
        *max_packets = vncoal_levels[q->level].max_packets;
        *max_usecs = vncoal_levels[q->level].max_usecs;
        return true;
    }
    if (q->where && q->coal->adaptive && (q->index & 1) &&
        q->answers >= q->answers_needed) {
        *max_packets = VNCOAL_ANSWER_PACKETS;
        *max_usecs = VNCOAL_ANSWER_US;
        return true;
    }
    return false;
}

/*
 * Adaptive moderation of request/response: @q sent or received packets
 * at @now (QEMU_CLOCK_VIRTUAL, the clock of the waits: it stops with the
 * VM).  A transmit completion's interrupt frees the request's buffer,
 * which no one waits for once the reply is on its way: a driver's
 * receive poll frees its transmit queue too (Linux's napi_tx,
 * virtnet_poll_cleantx()) and turns its notifications on again behind
 * what it freed, and then the held interrupt is no longer wanted: it ends
 * unsent when the next request comes (virtio_net_coal_pre_flush()) or
 * when it is due (counted in tx-coal-unwanted).  So a transmit queue whose
 * receive queue answered its last VNCOAL_ANSWER_STREAK completions, each
 * before the next and within VNCOAL_ANSWER_US, holds the next one's
 * interrupt that long (vncoal_params()).  A completion that comes while
 * the one before is unanswered (a stream, several requests in flight) or
 * a late answer ends it until answers come in a row again.  So does a
 * held interrupt still wanted when due, and it doubles the answers in a
 * row needed, up to VNCOAL_ANSWER_BACKOFF: the answer was late, or the
 * driver frees its transmit buffers only on their own interrupt, and
 * such a driver sees one completion in VNCOAL_ANSWER_BACKOFF late.  The
 * receive side is never held by it: the reply's interrupt goes at once.
 *
 * Context: the queue's IOThread
 */
static void vncoal_answer(VNCoalQueue *q, int64_t now)
{
    VNCoalQueue *tx = &q->coal->q[q->index | 1];

    if (q == tx) {
        if (tx->asked) {
            tx->answers = 0;
        }
        tx->asked = true;
        tx->asked_at = now;
    } else if (tx->asked) {
        if (now - tx->asked_at <= VNCOAL_ANSWER_US * SCALE_US) {
            tx->answers = MIN(tx->answers + 1, VNCOAL_ANSWER_BACKOFF);
        } else {
            tx->answers = 0;
        }
        tx->asked = false;
    }
}

/*
 * A held completion interrupt that the driver no longer wants ends
 * unsent: its receive poll freed the transmit queue.  In request/response
 * the next request comes after that, so this is where it is found, not
 * by the timer (which the next completion would find wanted again).
 *
 * Context: the queue's
 */
void virtio_net_coal_pre_flush(VirtIONet *n, VirtQueue *vq)
{
    VNCoalQueue *q = vncoal_queue(n, virtio_get_queue_index(vq));

    if (q && q->pending && q->hold_answer &&
        !virtio_notify_wanted(VIRTIO_DEVICE(n), vq)) {
        q->pending = 0;
        timer_del(q->timer[q->where]);
        vncoal_count(q, VNCOAL_UNWANTED, 1);
        vncoal_answer_end(q, false);
    }
}

/* Context: the queue's (its IOThread, or the main loop) */
VirtIONetCoalResult virtio_net_coal_notify(VirtIONet *n, VirtQueue *vq,
                                           unsigned int packets)
{
    VNCoalQueue *q = vncoal_queue(n, virtio_get_queue_index(vq));
    uint32_t max_packets, max_usecs;

    if (q && q->where && q->coal->adaptive) {
        int64_t now = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);

        vncoal_adapt(q, now, packets);
        if (packets) {
            vncoal_answer(q, qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL));
        }
    }
    if (!q || !vncoal_params(q, &max_packets, &max_usecs)) {
        if (q && q->pending) {
            /* An adaptive wait whose level went down */
            q->pending = 0;
            timer_del(q->timer[q->where]);
        }
        return vncoal_notify_now(VIRTIO_DEVICE(n), vq);
    }
    if (!packets) {
        return VIRTIO_NET_COAL_HELD;
    }
    if (!q->pending) {
        /*
         * Count from the first buffer that the driver waits to hear of.
         * It finds those used while it suppresses notifications (a NAPI
         * poll) by itself, and checks for more when it turns them on
         * again, so they start no wait: otherwise the wait that began in
         * its poll would end soon after it, for a few buffers.
         */
        if (!virtio_notify_wanted(VIRTIO_DEVICE(n), vq)) {
            return VIRTIO_NET_COAL_SUPPRESSED;
        }
        q->first = qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL);
        q->hold_usecs = max_usecs;
        q->hold_answer = !vncoal_driver_set(q) && !q->level;
    }
    q->pending += packets;
    if (q->pending >= max_packets) {
        return vncoal_fire(q, VNCOAL_IRQS_PACKETS);
    }
    vncoal_count(q, VNCOAL_HELD, packets);
    if (q->pending == packets) {
        timer_mod(q->timer[q->where], vncoal_deadline(q));
    }
    return VIRTIO_NET_COAL_HELD;
}

/*
 * A queue whose used buffers come at a stream's rate (an adaptive level
 * above the lowest) may go unwatched for half the level's max_usecs:
 * how long the dataplane may look for the driver's next buffers by
 * itself instead of taking its notification.  0 when the queue does not
 * stream, adapts no level, or runs in the main loop.
 *
 * Context: the queue's
 */
int64_t virtio_net_coal_stream_ns(VirtIONet *n, VirtQueue *vq)
{
    VNCoalQueue *q = vncoal_queue(n, virtio_get_queue_index(vq));

    if (!q || !q->where || !q->coal->adaptive || !q->level) {
        return 0;
    }
    return vncoal_levels[q->level].max_usecs * SCALE_US / 2;
}

/*
 * The device needs the driver now (no receive buffers left): end an
 * adaptive wait.  A wait on the driver's parameters goes on, as it asked.
 *
 * Context: the queue's
 */
void virtio_net_coal_flush(VirtIONet *n, VirtQueue *vq)
{
    VNCoalQueue *q = vncoal_queue(n, virtio_get_queue_index(vq));

    if (q && q->pending && !vncoal_driver_set(q)) {
        vncoal_fire(q, VNCOAL_IRQS_USECS);
    }
}

/*
 * New parameters for @q, checked at once against what it holds.
 *
 * Context: BQL held, the queue's pair paused
 */
static void vncoal_set(VNCoalQueue *q, uint32_t max_packets,
                       uint32_t max_usecs)
{
    q->max_packets = max_packets;
    q->max_usecs = max_usecs;
    trace_virtio_net_coal_set(q->coal->n, q->index, max_packets, max_usecs);
    vncoal_answer_reset(q);

    if (!q->pending) {
        return;
    }
    q->hold_usecs = max_usecs;
    q->hold_answer = false;
    if (!max_packets || !max_usecs || q->pending >= max_packets) {
        vncoal_fire(q, VNCOAL_IRQS_PACKETS);
    } else if (qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) >= vncoal_deadline(q)) {
        vncoal_fire(q, VNCOAL_IRQS_USECS);
    } else {
        timer_mod(q->timer[q->where], vncoal_deadline(q));
    }
}

/* Is @index an enabled data virtqueue?  Context: BQL held */
static bool vncoal_enabled(VirtIONet *n, uint32_t index)
{
    return index < 2 * n->curr_queue_pairs && index < n->coal->nvqs &&
           virtio_queue_enabled(VIRTIO_DEVICE(n), index);
}

/* Context: BQL held, every queue pair paused */
virtio_net_ctrl_ack virtio_net_coal_ctrl(VirtIONet *n, uint8_t cmd,
                                         const struct iovec *iov,
                                         unsigned int iov_cnt,
                                         const struct iovec *in_sg,
                                         unsigned int in_num, size_t *reply)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(n);
    VirtIONetCoal *c = n->coal;
    struct virtio_net_ctrl_coal_vq vq;
    struct virtio_net_ctrl_coal *coal = &vq.coal;
    size_t len = iov_size(iov, iov_cnt);
    VNCoalQueue *q;
    unsigned int i, tx;

    switch (cmd) {
    case VIRTIO_NET_CTRL_NOTF_COAL_TX_SET:
    case VIRTIO_NET_CTRL_NOTF_COAL_RX_SET:
        if (!c || !virtio_vdev_has_feature(vdev, VIRTIO_NET_F_NOTF_COAL) ||
            len != sizeof(*coal)) {
            return VIRTIO_NET_ERR;
        }
        iov_to_buf(iov, iov_cnt, 0, coal, sizeof(*coal));
        tx = cmd == VIRTIO_NET_CTRL_NOTF_COAL_TX_SET;
        c->set_packets[tx] = virtio_ldl_p(vdev, &coal->max_packets);
        c->set_usecs[tx] = virtio_ldl_p(vdev, &coal->max_usecs);
        for (i = tx; i < c->nvqs; i += 2) {
            vncoal_set(&c->q[i], c->set_packets[tx], c->set_usecs[tx]);
        }
        return VIRTIO_NET_OK;

    case VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET:
    case VIRTIO_NET_CTRL_NOTF_COAL_VQ_GET:
        if (!c || !virtio_vdev_has_feature(vdev, VIRTIO_NET_F_VQ_NOTF_COAL) ||
            len != (cmd == VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET ?
                    sizeof(vq) : offsetof(typeof(vq), coal))) {
            return VIRTIO_NET_ERR;
        }
        iov_to_buf(iov, iov_cnt, 0, &vq, len);
        i = virtio_lduw_p(vdev, &vq.vqn);
        if (!vncoal_enabled(n, i)) {
            return VIRTIO_NET_ERR;
        }
        q = &c->q[i];
        if (cmd == VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET) {
            vncoal_set(q, virtio_ldl_p(vdev, &coal->max_packets),
                       virtio_ldl_p(vdev, &coal->max_usecs));
            return VIRTIO_NET_OK;
        }
        /* The parameters, then the ack */
        if (iov_size(in_sg, in_num) < sizeof(*coal) +
                                      sizeof(virtio_net_ctrl_ack)) {
            return VIRTIO_NET_ERR;
        }
        virtio_stl_p(vdev, &coal->max_packets, q->max_packets);
        virtio_stl_p(vdev, &coal->max_usecs, q->max_usecs);
        iov_from_buf(in_sg, in_num, 0, coal, sizeof(*coal));
        *reply = sizeof(*coal);
        return VIRTIO_NET_OK;

    default:
        return VIRTIO_NET_ERR;
    }
}

/* Drop what @q holds, without notifying.  Context: BQL held, @q paused */
static void vncoal_clear(VNCoalQueue *q)
{
    q->pending = 0;
    timer_del(q->timer[q->where]);
    vncoal_adapt_reset(q);
    vncoal_answer_reset(q);
}

/* Context: BQL held, the queue not running elsewhere */
void virtio_net_coal_queue_enable(VirtIONet *n, uint32_t vq_index,
                                  bool enable)
{
    VNCoalQueue *q = vncoal_queue(n, vq_index);

    if (!q) {
        return;
    }
    vncoal_clear(q);
    if (enable) {
        q->max_packets = n->coal->set_packets[vq_index & 1];
        q->max_usecs = n->coal->set_usecs[vq_index & 1];
    }
}

/* Context: BQL held */
void virtio_net_coal_reset(VirtIONet *n)
{
    VirtIONetCoal *c = n->coal;

    if (!c) {
        return;
    }
    memset(c->set_packets, 0, sizeof(c->set_packets));
    memset(c->set_usecs, 0, sizeof(c->set_usecs));
    for (unsigned int i = 0; i < c->nvqs; i++) {
        vncoal_clear(&c->q[i]);
        c->q[i].max_packets = c->q[i].max_usecs = 0;
    }
}

/* Context: the pair's old context, or BQL held with the pair paused */
void virtio_net_coal_move(VirtIONet *n, unsigned int pair, AioContext *ctx)
{
    unsigned int where = ctx != NULL;

    for (uint32_t i = 2 * pair; n->coal && i < 2 * pair + 2; i++) {
        VNCoalQueue *q = &n->coal->q[i];

        if (where && !q->timer[1]) {
            q->timer[1] = aio_timer_new(ctx, QEMU_CLOCK_VIRTUAL, SCALE_NS,
                                        vncoal_timer_cb, q);
        }
        if (q->where == where) {
            continue;
        }
        if (q->pending && !vncoal_driver_set(q)) {
            /* An adaptive wait ends with the IOThread */
            vncoal_fire(q, VNCOAL_IRQS_USECS);
        }
        timer_del(q->timer[q->where]);
        q->where = where;
        vncoal_adapt_reset(q);
        vncoal_answer_reset(q);
        if (q->pending) {
            timer_mod(q->timer[where], vncoal_deadline(q));
        }
    }
}

/* Context: BQL held */
void virtio_net_coal_get_stats(VirtIONet *n, unsigned int pair,
                               NetStatsBuilder *b)
{
    for (uint32_t i = 2 * pair; n->coal && i < 2 * pair + 2; i++) {
        for (unsigned int c = 0; c < VNCOAL__MAX; c++) {
            net_stats_add(b, vncoal_names[i & 1][c],
                          qatomic_read__nocheck(&n->coal->q[i].counters[c]));
        }
    }
}

/* Context: BQL held (realize) */
bool virtio_net_coal_realize(VirtIONet *n, bool iothread, Error **errp)
{
    VirtIONetCoal *c;

    if (!(n->host_features & VNCOAL_FEATURES) &&
        !(iothread && n->adaptive_coal)) {
        return true;
    }
    if ((n->host_features & VNCOAL_FEATURES) &&
        !(n->host_features & (1ULL << VIRTIO_NET_F_CTRL_VQ))) {
        error_setg(errp, "virtio-net: notf_coal and vq_notf_coal need "
                   "ctrl_vq");
        return false;
    }
    c = g_malloc0(sizeof(*c) + 2 * n->max_queue_pairs * sizeof(c->q[0]));
    c->n = n;
    c->adaptive = iothread && n->adaptive_coal;
    c->nvqs = 2 * n->max_queue_pairs;
    for (uint32_t i = 0; i < c->nvqs; i++) {
        c->q[i].coal = c;
        c->q[i].index = i;
        vncoal_answer_reset(&c->q[i]);
        c->q[i].timer[0] = timer_new_ns(QEMU_CLOCK_VIRTUAL, vncoal_timer_cb,
                                        &c->q[i]);
    }
    n->coal = c;
    return true;
}

/* Context: BQL held (unrealize) */
void virtio_net_coal_unrealize(VirtIONet *n)
{
    VirtIONetCoal *c = n->coal;

    if (!c) {
        return;
    }
    for (uint32_t i = 0; i < c->nvqs; i++) {
        timer_free(c->q[i].timer[0]);
        timer_free(c->q[i].timer[1]);
    }
    g_free(c);
    n->coal = NULL;
}

/*
 * Migration.  The parameters and what each queue holds; held
 * notifications wait max_usecs again on the destination, in the main
 * loop until the queue pairs start.
 */
static const VMStateDescription vmstate_vncoal_queue = {
    .name = "virtio-net-coal-queue",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32(max_packets, VNCoalQueue),
        VMSTATE_UINT32(max_usecs, VNCoalQueue),
        VMSTATE_UINT32(pending, VNCoalQueue),
        VMSTATE_END_OF_LIST()
    },
};

static int vncoal_post_load(void *opaque, int version_id)
{
    VirtIONetCoal *c = opaque;
    int64_t now = qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL);

    for (uint32_t i = 0; i < c->nvqs; i++) {
        VNCoalQueue *q = &c->q[i];

        timer_del(q->timer[q->where]);
        q->where = 0;
        q->first = now;
        q->hold_usecs = q->max_usecs;
        if (q->pending) {
            timer_mod(q->timer[0], vncoal_deadline(q));
        }
    }
    return 0;
}

static const VMStateDescription vmstate_vncoal = {
    .name = "virtio-net-coal-state",
    .version_id = 1,
    .minimum_version_id = 1,
    .post_load = vncoal_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32_EQUAL(nvqs, VirtIONetCoal, NULL),
        VMSTATE_UINT32_ARRAY(set_packets, VirtIONetCoal, 2),
        VMSTATE_UINT32_ARRAY(set_usecs, VirtIONetCoal, 2),
        VMSTATE_STRUCT_VARRAY_UINT32(q, VirtIONetCoal, nvqs, 1,
                                     vmstate_vncoal_queue, VNCoalQueue),
        VMSTATE_END_OF_LIST()
    },
};

static bool vncoal_needed(void *opaque)
{
    VirtIONet *n = opaque;
    VirtIONetCoal *c = n->coal;

    if (!c) {
        return false;
    }
    for (uint32_t i = 0; i < c->nvqs; i++) {
        if (c->q[i].max_packets || c->q[i].max_usecs || c->q[i].pending) {
            return true;
        }
    }
    return c->set_packets[0] || c->set_packets[1] ||
           c->set_usecs[0] || c->set_usecs[1];
}

static int vncoal_pre_load(void *opaque)
{
    VirtIONet *n = opaque;

    if (!n->coal) {
        error_report("virtio-net: coalescing state for a device without "
                     "notf_coal or vq_notf_coal");
        return -EINVAL;
    }
    return 0;
}

const VMStateDescription vmstate_virtio_net_coal = {
    .name = "virtio-net-device/coal",
    .version_id = 1,
    .minimum_version_id = 1,
    .needed = vncoal_needed,
    .pre_load = vncoal_pre_load,
    .fields = (const VMStateField[]) {
        VMSTATE_STRUCT_POINTER(coal, VirtIONet, vmstate_vncoal,
                               VirtIONetCoal),
        VMSTATE_END_OF_LIST()
    },
};
