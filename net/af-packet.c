/*
 * AF_PACKET network backend
 *
 * Attaches a guest to any Linux network interface through an AF_PACKET
 * socket: a TPACKET_V3 memory-mapped receive ring that absorbs bursts,
 * transmission that gathers a peer's batch (or what waits while the socket
 * pushes back) for one sendmmsg(), optional virtio-net header offloads,
 * fanout over several sockets for multiqueue, and drop counters.
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "clients.h"
#include "monitor/monitor.h"
#include "net/af-packet.h"
#include "net/checksum.h"
#include "net/net.h"
#include "net/net-aio.h"
#include "net/net-stats.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-net.h"
#include "qemu/cutils.h"
#include "qemu/defer-call.h"
#include "qemu/error-report.h"
#include "qemu/iov.h"
#include "qemu/main-loop.h"
#include "qemu/sockets.h"
#include "qemu/units.h"
#include "standard-headers/linux/virtio_net.h"
#include "trace.h"

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

/* Packets handed to the peer per fd callback, so one queue cannot starve. */
#define AF_PACKET_RX_BATCH     256
/*
 * Frames queued for one sendmmsg(): a peer's batch (tx-batch of them at
 * most), or what waits while the socket pushes back.
 */
#define AF_PACKET_TX_BATCH     64
/* A queue slot keeps a buffer this large for the next frame */
#define AF_PACKET_TX_KEEP      (4 * KiB)
#define AF_PACKET_RX_BLOCK     (256 * KiB)
#define AF_PACKET_RX_FRAME     2048
#define AF_PACKET_RX_RING_MIN  (1 * MiB)
#define AF_PACKET_RX_RING_MAX  (1 * GiB)
/*
 * Default receive ring: 16 MiB of TPACKET_V3 blocks holds about 10,000
 * full-size or 100,000 minimum-size frames (~160 bytes for the smallest);
 * 32 MiB of TPACKET_V2 frames holds 16,384 frames up to 2 KiB (MTU 1500),
 * so that a 10,000-frame burst fits either.
 */
#define AF_PACKET_RX_RING_DEFAULT (16 * MiB)
#define AF_PACKET_RX_RING_DEFAULT_V2 (32 * MiB)
/* Largest frame without a ring: a GSO frame and its virtio-net header. */
#define AF_PACKET_RXBUF_SIZE   (65536 + sizeof(struct virtio_net_hdr))
#define AF_PACKET_RETIRE_DEFAULT  1
/* VLAN tag on top of the MTU and Ethernet header. */
#define AF_PACKET_L2_OVERHEAD  (ETH_HLEN + 4)
/*
 * Sockets in one fanout group: the kernel's PACKET_FANOUT_MAX for groups
 * made with the int form of PACKET_FANOUT.
 */
#define AF_PACKET_FANOUT_MAX   256

typedef struct AFPacketTxSlot {
    struct iovec iov;
    size_t size;                /* of the frame, without a vnet header */
    size_t buf_size;            /* of iov.iov_base */
} AFPacketTxSlot;

typedef struct AFPacketLink AFPacketLink;

typedef struct AFPacketState {
    NetClientState nc;
    int fd;
    AioContext *ctx;
    bool read_poll;
    bool write_poll;
    bool vnet_hdr;
    bool gone;
    bool tx_ready;              /* io_poll found the socket writable */
    bool fanout;                /* in the netdev's fanout group */
    bool queue_disabled;        /* the device disabled this queue */
    bool spoofchk;              /* guest frames only from the device's MAC */
    bool trust;                 /* the guest may receive for other MACs */
    unsigned int mtu;
    NetOffloads offloads;

    /* TPACKET_V3 receive ring, or rxbuf with rx-ring-size=0 */
    uint8_t *rxbuf;
    uint8_t *ring;
    size_t ring_size;
    unsigned int block_size;
    unsigned int block_nr;
    unsigned int block_cur;
    struct tpacket3_hdr *pkt;   /* next packet of block_cur, or NULL */
    size_t pkt_off;             /* its offset in the block */
    uint32_t pkt_left;
    /* tpacket-version=2: a ring of frames, not blocks */
    bool frames;
    unsigned int frame_size;
    unsigned int frame_nr;
    unsigned int frame_cur;

    /* Frames queued for sendmmsg() */
    AFPacketTxSlot tx[AF_PACKET_TX_BATCH];
    unsigned int tx_head;       /* first slot not yet sent */
    unsigned int tx_count;      /* slots filled */
    unsigned int tx_batch;      /* tx-batch: frames a peer's batch gathers */
    bool tx_deferring;          /* af_packet_tx_batch_end() is deferred */
    bool tx_blocked;            /* the peer was told to queue */

    AFPacketStats stats;
    AFPacketLink *link;         /* queue 0 only */
} AFPacketState;

/* Follows the interface through rtnetlink: link up/down, removal. */
struct AFPacketLink {
    int fd;
    QEMUBH *initial_bh;
    int ifindex;
    char ifname[IFNAMSIZ];
    char *netdev;
    bool up;
    AFPacketState *s;
};

static void af_packet_rx(void *opaque);
static void af_packet_writable(void *opaque);
static int af_packet_queue_enable(NetClientState *nc, bool enable);
static void af_packet_rx_socket(AFPacketState *s);
static bool af_packet_if_up(const char *ifname);
static bool af_packet_ring_ready(AFPacketState *s);

/* Context: any */
static inline AFPacketState *af_packet_state(NetClientState *nc)
{
    assert(nc->info->type == NET_CLIENT_DRIVER_AF_PACKET);
    return DO_UPCAST(AFPacketState, nc, nc);
}

/*
 * Counters have one writer each (the backend's AioContext, or the BQL
 * holder for the kernel's counters) and are read from the main loop.
 *
 * Context: the counter's writer
 */
static inline void af_packet_count(uint64_t *counter, uint64_t n)
{
    qatomic_set__nocheck(counter, qatomic_read__nocheck(counter) + n);
}

/*
 * Is the socket writable?  Asked without blocking, only while frames
 * wait for it (write_poll).
 *
 * Context: the backend's AioContext
 */
static bool af_packet_tx_writable(AFPacketState *s)
{
    struct pollfd pfd = { .fd = s->fd, .events = POLLOUT };

    return poll(&pfd, 1, 0) > 0 && pfd.revents;
}

/*
 * IOThread polling (poll-max-ns): a ring block handed to user space is
 * visible without a system call.  Without a ring, only the file
 * descriptor tells; say "nothing" rather than keep the AioContext from
 * polling its other handlers (the virtqueues).  While frames wait to be
 * sent, the socket's writability is polled too: an AioContext that keeps
 * finding work by polling never looks at its file descriptors, and the
 * queued frames would wait as long as it does.
 *
 * Context: the backend's AioContext
 */
static bool af_packet_io_poll(void *opaque)
{
    AFPacketState *s = opaque;
    bool rx;

    if (s->gone) {
        return false;
    }
    rx = s->read_poll && s->ring && af_packet_ring_ready(s);
    s->tx_ready = s->write_poll && af_packet_tx_writable(s);
    return rx || s->tx_ready;
}

/* Context: the backend's AioContext */
static void af_packet_io_poll_ready(void *opaque)
{
    AFPacketState *s = opaque;

    if (s->tx_ready) {
        s->tx_ready = false;
        if (s->write_poll) {
            af_packet_writable(s);
        }
    }
    if (s->read_poll && s->ring && af_packet_ring_ready(s)) {
        af_packet_rx(s);
    }
}

/*
 * The one place that registers the socket's handlers.  The backend's
 * AioContext is the main loop's iohandler context unless a device moved
 * it to an IOThread (af_packet_set_aio_context()).
 *
 * Context: the backend's AioContext
 */
static void af_packet_update_fd_handler(AFPacketState *s)
{
    bool rx = s->read_poll && !s->gone;
    bool tx = s->write_poll && !s->gone;

    /*
     * io_poll goes with either handler: one without it would turn
     * IOThread polling off for the whole AioContext.
     */
    aio_set_fd_handler(s->ctx, s->fd,
                       rx ? af_packet_rx : NULL, tx ? af_packet_writable : NULL,
                       rx || tx ? af_packet_io_poll : NULL,
                       af_packet_io_poll_ready, s);
}

/* Context: the backend's AioContext */
static void af_packet_read_poll(AFPacketState *s, bool enable)
{
    if (s->read_poll != enable) {
        s->read_poll = enable;
        af_packet_update_fd_handler(s);
    }
}

/* Context: the backend's AioContext */
static void af_packet_write_poll(AFPacketState *s, bool enable)
{
    if (s->write_poll != enable) {
        s->write_poll = enable;
        af_packet_update_fd_handler(s);
    }
}

/* Context: the backend's AioContext */
static void af_packet_poll(NetClientState *nc, bool enable)
{
    AFPacketState *s = af_packet_state(nc);

    af_packet_read_poll(s, enable);
    af_packet_write_poll(s, enable && s->tx_count > 0);
}

/*
 * Move the backend's fd handlers to @ctx; see include/net/net-aio.h.
 *
 * Context: the backend's current AioContext
 */
static void af_packet_set_aio_context(NetClientState *nc, AioContext *ctx)
{
    AFPacketState *s = af_packet_state(nc);

    aio_set_fd_handler(s->ctx, s->fd, NULL, NULL, NULL, NULL, NULL);
    s->ctx = ctx;
    af_packet_update_fd_handler(s);
}

/* ---- statistics ---- */

/*
 * PACKET_STATISTICS counts since its last read: accumulate.
 *
 * Context: any; s->stats is only written from the backend's AioContext
 * and from here with the BQL held while that context is quiescent.
 */
static void af_packet_update_kernel_stats(AFPacketState *s)
{
    struct tpacket_stats_v3 st = { 0 };
    socklen_t len = sizeof(st);

    if (s->fd >= 0 &&
        getsockopt(s->fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) {
        af_packet_count(&s->stats.rx_dropped, st.tp_drops);
        af_packet_count(&s->stats.rx_ring_full, st.tp_freeze_q_cnt);
    }
}

/* Context: BQL held */
void af_packet_get_stats(NetClientState *nc, AFPacketStats *stats)
{
    AFPacketState *s = af_packet_state(nc);
    const uint64_t *from = (const uint64_t *)&s->stats;
    uint64_t *to = (uint64_t *)stats;

    QEMU_BUILD_BUG_ON(sizeof(*stats) % sizeof(uint64_t));
    af_packet_update_kernel_stats(s);
    for (size_t i = 0; i < sizeof(*stats) / sizeof(uint64_t); i++) {
        to[i] = qatomic_read__nocheck(&from[i]);
    }
}

/* ---- receive: interface -> guest ---- */

/* Context: backend */
static inline struct tpacket_block_desc *af_packet_block(AFPacketState *s,
                                                         unsigned int i)
{
    return (struct tpacket_block_desc *)(s->ring + (size_t)i * s->block_size);
}

/* Give the current block back to the kernel.  Context: backend */
static void af_packet_release_block(AFPacketState *s)
{
    struct tpacket_block_desc *b = af_packet_block(s, s->block_cur);

    qatomic_store_release(&b->hdr.bh1.block_status, TP_STATUS_KERNEL);
    s->block_cur = (s->block_cur + 1) % s->block_nr;
    s->pkt = NULL;
    s->pkt_left = 0;
}

/*
 * The ring is shared with whoever else maps the socket (a manager that
 * passed fd= can write it), so its headers are not trusted: a header
 * that points outside its block or frame is refused and counted, and the
 * block (TPACKET_V3) or frame (TPACKET_V2) it is in goes back to the
 * kernel unread.  Each field is read once, then checked.
 *
 * Context: backend
 */
static void af_packet_bad_ring(AFPacketState *s, const char *what)
{
    af_packet_count(&s->stats.rx_bad_ring, 1);
    trace_af_packet_rx_drop(s->nc.name, what, 0);
}

/*
 * Does a V3 packet header fit at offset @off of a block?  It must be
 * aligned as the kernel aligns it (8 bytes, its V3_ALIGNMENT), and leave
 * room for the header itself.
 *
 * Context: backend
 */
static bool af_packet_pkt_off_ok(AFPacketState *s, size_t off)
{
    return off >= sizeof(struct tpacket_block_desc) &&
           off % 8 == 0 &&
           off <= s->block_size - sizeof(struct tpacket3_hdr);
}

/*
 * Does a frame at @mac bytes from its header, of @snaplen bytes, lie in
 * the @room bytes from that header on, after a header of @hdr_size bytes
 * and the virtio-net header that precedes the frame?
 *
 * Context: backend
 */
static bool af_packet_frame_fits(AFPacketState *s, size_t hdr_size,
                                 size_t room, uint32_t mac, uint32_t snaplen)
{
    size_t vh = s->vnet_hdr ? sizeof(struct virtio_net_hdr) : 0;

    return mac >= hdr_size + vh && mac <= room && snaplen <= room - mac;
}

/*
 * Move to the next packet of the current block, or release the block
 * after its last one.
 *
 * Context: backend
 */
static void af_packet_next_pkt(AFPacketState *s)
{
    uint32_t next;
    size_t off;

    if (!--s->pkt_left) {
        af_packet_release_block(s);
        return;
    }
    next = qatomic_read(&s->pkt->tp_next_offset);
    off = s->pkt_off + next;
    if (next < sizeof(struct tpacket3_hdr) || !af_packet_pkt_off_ok(s, off)) {
        af_packet_bad_ring(s, "bad-next-offset");
        af_packet_release_block(s);
        return;
    }
    s->pkt_off = off;
    s->pkt = (struct tpacket3_hdr *)((uint8_t *)af_packet_block(s,
                                                                s->block_cur) +
                                     off);
}

/*
 * Find the next packet, taking a new block from the kernel if the current
 * one is used up.  Returns false when the kernel has nothing for us.
 *
 * Context: backend
 */
static bool af_packet_ready(AFPacketState *s)
{
    struct tpacket_block_desc *b;
    uint32_t num, off;

    while (!s->pkt) {
        b = af_packet_block(s, s->block_cur);
        if (!(qatomic_load_acquire(&b->hdr.bh1.block_status) &
              TP_STATUS_USER)) {
            return false;
        }
        num = qatomic_read(&b->hdr.bh1.num_pkts);
        off = qatomic_read(&b->hdr.bh1.offset_to_first_pkt);
        if (num == 0) {
            af_packet_release_block(s);
            continue;
        }
        if (num > s->block_size / sizeof(struct tpacket3_hdr) ||
            !af_packet_pkt_off_ok(s, off)) {
            af_packet_bad_ring(s, "bad-block");
            af_packet_release_block(s);
            continue;
        }
        s->pkt_off = off;
        s->pkt = (struct tpacket3_hdr *)((uint8_t *)b + off);
        s->pkt_left = num;
    }
    return true;
}

/* tpacket-version=2: the ring's frame @i.  Context: backend */
static inline struct tpacket2_hdr *af_packet_frame(AFPacketState *s,
                                                   unsigned int i)
{
    unsigned int per_block = s->block_size / s->frame_size;

    return (struct tpacket2_hdr *)(s->ring +
                                   (size_t)(i / per_block) * s->block_size +
                                   (size_t)(i % per_block) * s->frame_size);
}

/*
 * tpacket-version=2: has the kernel handed the next frame over?  Each
 * frame is handed over as it arrives; no block waits to fill or time out.
 *
 * Context: backend
 */
static bool af_packet_frame_ready(AFPacketState *s)
{
    struct tpacket2_hdr *h = af_packet_frame(s, s->frame_cur);

    return qatomic_load_acquire(&h->tp_status) & TP_STATUS_USER;
}

/* Is a frame ready, in either ring layout?  Context: backend */
static bool af_packet_ring_ready(AFPacketState *s)
{
    return s->frames ? af_packet_frame_ready(s) : af_packet_ready(s);
}

/* The ready frame's header, in either ring layout */
typedef struct AFPacketRingFrame {
    uint8_t *data;              /* the Ethernet header */
    uint32_t len;               /* on the wire */
    uint32_t snaplen;           /* in the ring */
    uint32_t status;
} AFPacketRingFrame;

/*
 * Read the ready frame's header into @f.  Returns false, with the header
 * counted as bad, if the frame it describes is not within its slot.
 *
 * Context: backend
 */
static bool af_packet_ring_frame(AFPacketState *s, AFPacketRingFrame *f)
{
    uint8_t *h;
    size_t hdr_size, room;
    uint32_t mac;

    if (s->frames) {
        struct tpacket2_hdr *h2 = af_packet_frame(s, s->frame_cur);

        h = (uint8_t *)h2;
        hdr_size = sizeof(*h2);
        room = s->frame_size;
        mac = qatomic_read(&h2->tp_mac);
        f->len = qatomic_read(&h2->tp_len);
        f->snaplen = qatomic_read(&h2->tp_snaplen);
        f->status = qatomic_read(&h2->tp_status);
    } else {
        struct tpacket3_hdr *h3 = s->pkt;

        h = (uint8_t *)h3;
        hdr_size = sizeof(*h3);
        room = s->block_size - s->pkt_off;
        mac = qatomic_read(&h3->tp_mac);
        f->len = qatomic_read(&h3->tp_len);
        f->snaplen = qatomic_read(&h3->tp_snaplen);
        f->status = qatomic_read(&h3->tp_status);
    }
    if (!af_packet_frame_fits(s, hdr_size, room, mac, f->snaplen)) {
        af_packet_bad_ring(s, "bad-frame");
        return false;
    }
    f->data = h + mac;
    return true;
}

/* Give the ready frame back to the kernel.  Context: backend */
static void af_packet_ring_release(AFPacketState *s)
{
    if (s->frames) {
        struct tpacket2_hdr *h = af_packet_frame(s, s->frame_cur);

        qatomic_store_release(&h->tp_status, TP_STATUS_KERNEL);
        s->frame_cur = (s->frame_cur + 1) % s->frame_nr;
    } else {
        af_packet_next_pkt(s);
    }
}

/*
 * A frame with a bad header goes back unread: its frame (V2), or its
 * block and the packets left in it (V3), whose links cannot be trusted.
 *
 * Context: backend
 */
static void af_packet_ring_skip(AFPacketState *s)
{
    if (s->frames) {
        af_packet_ring_release(s);
    } else {
        af_packet_release_block(s);
    }
}

/*
 * Isolation on a shared interface, as an SR-IOV VF has it by default
 * (spoofchk on, trust off): the MAC address the device was given (its
 * "mac" property, not one the guest set later) is the only one the guest
 * may send from, and the only unicast address it receives from, whatever
 * it asks of its device (promiscuous mode, another MAC).  Broadcast and
 * multicast go to the device, whose own filter applies the guest's
 * multicast list.  A peer that is not a NIC (a hub) has no MAC to hold the
 * guest to: nothing is filtered.
 *
 * Context: backend
 */
static const uint8_t *af_packet_nic_mac(AFPacketState *s)
{
    NetClientState *peer = s->nc.peer;

    if (!peer || peer->info->type != NET_CLIENT_DRIVER_NIC) {
        return NULL;
    }
    return qemu_get_nic(peer)->conf->macaddr.a;
}

/* Whether @frame is for the device's MAC (or a group).  Context: backend */
static bool af_packet_for_nic(AFPacketState *s, const uint8_t *frame)
{
    const uint8_t *mac = af_packet_nic_mac(s);

    return (frame[0] & 1) || !mac || !memcmp(frame, mac, ETH_ALEN);
}

/* Whether a guest frame comes from the device's MAC.  Context: backend */
static bool af_packet_from_nic(AFPacketState *s, const struct iovec *iov,
                               int iovcnt, size_t hdr_len)
{
    const uint8_t *mac = af_packet_nic_mac(s);
    uint8_t src[ETH_ALEN];

    return !mac ||
           (iov_to_buf(iov, iovcnt, hdr_len + ETH_ALEN, src, ETH_ALEN) ==
            ETH_ALEN && !memcmp(src, mac, ETH_ALEN));
}

/*
 * Whether the guest can take @h: frames for a MAC other than the device's
 * (unless trust=on), runts, frames the ring truncated, frames
 * above the MTU that the kernel did not describe as GSO, and GSO frames
 * the guest did not negotiate are dropped and counted, never delivered
 * cut short.
 *
 * Context: backend
 */
static bool af_packet_rx_acceptable(AFPacketState *s, const uint8_t *frame,
                                    size_t len, size_t caplen)
{
    uint8_t gso = VIRTIO_NET_HDR_GSO_NONE;

    if (len < ETH_HLEN) {
        af_packet_count(&s->stats.rx_runt, 1);
        trace_af_packet_rx_drop(s->nc.name, "runt", len);
        return false;
    }
    /*
     * A TPACKET_V2 frame holds the MTU: a frame it cut for being above
     * the MTU (without vnet-hdr) is oversize, counted below as a whole
     * one is.
     */
    if (caplen < len &&
        (s->vnet_hdr || len <= (size_t)s->mtu + AF_PACKET_L2_OVERHEAD)) {
        af_packet_count(&s->stats.rx_truncated, 1);
        trace_af_packet_rx_drop(s->nc.name, "truncated", len);
        return false;
    }
    if (!s->trust && !af_packet_for_nic(s, frame)) {
        af_packet_count(&s->stats.rx_filtered, 1);
        trace_af_packet_rx_drop(s->nc.name, "filtered", len);
        return false;
    }
    if (s->vnet_hdr) {
        const struct virtio_net_hdr *vh = (const void *)
            (frame - sizeof(struct virtio_net_hdr));
        gso = vh->gso_type & ~VIRTIO_NET_HDR_GSO_ECN;
    }
    if (gso == VIRTIO_NET_HDR_GSO_NONE) {
        if (len > (size_t)s->mtu + AF_PACKET_L2_OVERHEAD) {
            af_packet_count(&s->stats.rx_oversize, 1);
            trace_af_packet_rx_drop(s->nc.name, "oversize", len);
            return false;
        }
        return true;
    }
    if ((gso == VIRTIO_NET_HDR_GSO_TCPV4 && !s->offloads.tso4) ||
        (gso == VIRTIO_NET_HDR_GSO_TCPV6 && !s->offloads.tso6) ||
        (gso == VIRTIO_NET_HDR_GSO_UDP && !s->offloads.ufo) ||
        (gso == VIRTIO_NET_HDR_GSO_UDP_L4 &&
         !(s->offloads.uso4 && s->offloads.uso6))) {
        af_packet_count(&s->stats.rx_oversize, 1);
        trace_af_packet_rx_drop(s->nc.name, "gso-refused", len);
        return false;
    }
    return true;
}

/* The peer took a queued packet: resume reading.  Context: backend */
static void af_packet_rx_done(NetClientState *nc, ssize_t len)
{
    AFPacketState *s = af_packet_state(nc);

    /* Frames left in the ring keep the fd readable. */
    af_packet_read_poll(s, true);
}

/*
 * A pending socket error (interface down or gone) makes the fd readable
 * with nothing in the ring; reading SO_ERROR clears it.
 *
 * Context: backend
 */
static void af_packet_clear_error(AFPacketState *s)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err) {
        trace_af_packet_socket_error(s->nc.name, err);
    }
}

/*
 * Hand one accepted frame (@frame follows its virtio-net header, if any)
 * to the peer, completing a partial checksum first.  Returns false when
 * the peer queued it: reading pauses until af_packet_rx_done().  While
 * the link is down (set_link, or the interface's), the net layer would
 * drop the frame without a word: count it here instead.
 *
 * Context: backend
 */
static bool af_packet_deliver(AFPacketState *s, uint8_t *frame, size_t len,
                              bool csum_partial)
{
    size_t hdr_len = s->vnet_hdr ? sizeof(struct virtio_net_hdr) : 0;
    NetClientState *peer = s->nc.peer;
    struct iovec iov = {
        .iov_base = frame - hdr_len,
        .iov_len = len + hdr_len,
    };

    if (qatomic_read(&s->nc.link_down) ||
        (peer && qatomic_read(&peer->link_down))) {
        af_packet_count(&s->stats.rx_link_down, 1);
        trace_af_packet_rx_drop(s->nc.name, "link-down", len);
        return true;
    }
    if (!s->vnet_hdr && csum_partial) {
        /* A locally generated frame with a partial checksum. */
        net_checksum_calculate(frame, len, CSUM_TCP | CSUM_UDP);
    }
    af_packet_count(&s->stats.rx_packets, 1);
    af_packet_count(&s->stats.rx_bytes, len);
    if (qemu_sendv_packet_async(&s->nc, &iov, 1, af_packet_rx_done) == 0) {
        af_packet_count(&s->stats.rx_peer_full, 1);
        af_packet_read_poll(s, false);
        return false;
    }
    return true;
}

/*
 * Hand ready frames to the peer, at most AF_PACKET_RX_BATCH per call.
 * When the peer queues one (it cannot take more), stop reading until
 * af_packet_rx_done().
 *
 * Context: backend
 */
static void af_packet_rx(void *opaque)
{
    AFPacketState *s = opaque;
    unsigned int n = 0;

    if (!s->ring) {
        af_packet_rx_socket(s);
        return;
    }
    while (n < AF_PACKET_RX_BATCH && s->read_poll && af_packet_ring_ready(s)) {
        AFPacketRingFrame f;
        bool delivered = true;

        n++;
        if (!af_packet_ring_frame(s, &f)) {
            af_packet_ring_skip(s);
            continue;
        }
        if (af_packet_rx_acceptable(s, f.data, f.len, f.snaplen)) {
            delivered = af_packet_deliver(s, f.data, f.snaplen,
                                          f.status & TP_STATUS_CSUMNOTREADY);
        }
        /* A queued packet was copied: the slot can go back either way. */
        af_packet_ring_release(s);
        if (!delivered) {
            break;
        }
    }
    if (n == 0 && s->read_poll) {
        af_packet_clear_error(s);
    }
}

/*
 * Without a ring (rx-ring-size=0): read frames one by one from the
 * socket's receive buffer, the way a plain packet socket works.
 *
 * Context: backend
 */
static void af_packet_rx_socket(AFPacketState *s)
{
    size_t hdr_len = s->vnet_hdr ? sizeof(struct virtio_net_hdr) : 0;
    unsigned int n = 0;

    while (n < AF_PACKET_RX_BATCH && s->read_poll) {
        union {
            struct cmsghdr cm;
            char buf[CMSG_SPACE(sizeof(struct tpacket_auxdata))];
        } control;
        struct iovec iov = {
            .iov_base = s->rxbuf,
            .iov_len = AF_PACKET_RXBUF_SIZE,
        };
        struct msghdr msg = {
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = &control,
            .msg_controllen = sizeof(control),
        };
        struct cmsghdr *cmsg;
        uint32_t status = 0;
        ssize_t len;

        len = recvmsg(s->fd, &msg, MSG_DONTWAIT | MSG_TRUNC);

        if (len < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                af_packet_clear_error(s);
            }
            break;
        }
        n++;
        if ((size_t)len < hdr_len + ETH_HLEN) {
            af_packet_count(&s->stats.rx_runt, 1);
            trace_af_packet_rx_drop(s->nc.name, "runt", len);
            continue;
        }
        if (!af_packet_rx_acceptable(s, s->rxbuf + hdr_len, len - hdr_len,
                                     MIN(len, AF_PACKET_RXBUF_SIZE) -
                                     hdr_len)) {
            continue;
        }
        for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
            if (cmsg->cmsg_level == SOL_PACKET &&
                cmsg->cmsg_type == PACKET_AUXDATA) {
                struct tpacket_auxdata aux;

                memcpy(&aux, CMSG_DATA(cmsg), sizeof(aux));
                status = aux.tp_status;
            }
        }
        if (!af_packet_deliver(s, s->rxbuf + hdr_len, len - hdr_len,
                               status & TP_STATUS_CSUMNOTREADY)) {
            break;
        }
    }
}

/* ---- transmit: guest -> interface ---- */

/* Context: backend, or BQL held once the handlers are gone (cleanup) */
static void af_packet_tx_free(AFPacketState *s, unsigned int i)
{
    g_free(s->tx[i].iov.iov_base);
    s->tx[i].iov.iov_base = NULL;
    s->tx[i].buf_size = 0;
}

/* Copy a frame into the queue's next slot.  Context: backend */
static void af_packet_tx_queue(AFPacketState *s, const struct iovec *iov,
                               int iovcnt, size_t size, size_t hdr_len)
{
    AFPacketTxSlot *slot = &s->tx[s->tx_head + s->tx_count++];

    assert(s->tx_head + s->tx_count <= AF_PACKET_TX_BATCH);
    if (slot->buf_size < size) {
        g_free(slot->iov.iov_base);
        slot->buf_size = MAX(size, AF_PACKET_TX_KEEP);
        slot->iov.iov_base = g_malloc(slot->buf_size);
    }
    slot->iov.iov_len = size;
    slot->size = size - hdr_len;
    iov_to_buf(iov, iovcnt, 0, slot->iov.iov_base, size);
}

/*
 * Send the queue with sendmmsg().  What the socket cannot take now stays
 * queued and the socket is polled for room (write_poll); a frame the
 * kernel refuses is dropped and counted.  Returns whether the queue is
 * empty.
 *
 * Context: backend
 */
static bool af_packet_tx_send_queue(AFPacketState *s)
{
    struct mmsghdr msgs[AF_PACKET_TX_BATCH];
    unsigned int i, n;
    int ret;

    while (s->tx_count) {
        n = s->tx_count;
        memset(msgs, 0, sizeof(msgs[0]) * n);
        for (i = 0; i < n; i++) {
            msgs[i].msg_hdr.msg_iov = &s->tx[s->tx_head + i].iov;
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        ret = RETRY_ON_EINTR(sendmmsg(s->fd, msgs, n, MSG_DONTWAIT));
        if (ret < 0) {
            if (errno == EAGAIN || errno == ENOBUFS) {
                af_packet_count(&s->stats.tx_busy, 1);
                af_packet_write_poll(s, true);
                return false;
            }
            /* The first frame was refused: drop it, go on with the rest. */
            af_packet_count(&s->stats.tx_errors, 1);
            trace_af_packet_tx_error(s->nc.name, errno);
            ret = 1;
        } else {
            af_packet_count(&s->stats.tx_calls, 1);
            for (i = 0; i < ret; i++) {
                af_packet_count(&s->stats.tx_packets, 1);
                af_packet_count(&s->stats.tx_bytes,
                                s->tx[s->tx_head + i].size);
            }
        }
        for (i = 0; i < ret; i++) {
            if (s->tx[s->tx_head + i].buf_size > AF_PACKET_TX_KEEP) {
                af_packet_tx_free(s, s->tx_head + i);
            }
        }
        s->tx_head += ret;
        s->tx_count -= ret;
    }
    s->tx_head = 0;
    return true;
}

/*
 * The socket is writable again: send what was queued.
 *
 * Context: backend
 */
static void af_packet_writable(void *opaque)
{
    AFPacketState *s = opaque;

    if (!af_packet_tx_send_queue(s)) {
        return;
    }
    af_packet_write_poll(s, false);
    if (s->tx_blocked) {
        /* Room again: take what the peer queued while we were full. */
        s->tx_blocked = false;
        qemu_flush_queued_packets(&s->nc);
    }
}

/*
 * The end of the peer's batch: send what it gathered.  defer_call() runs
 * this at the end of the peer's deferred section (the IOThread
 * dataplane's TX round), or at once outside one.  No deferred section
 * spans the netdev's deletion: the peers that open one send and close it
 * within one call.
 *
 * Context: backend
 */
static void af_packet_tx_batch_end(void *opaque)
{
    AFPacketState *s = opaque;

    s->tx_deferring = false;
    if (!s->write_poll) {
        af_packet_tx_send_queue(s);
    }
}

/*
 * Send one frame from the peer.  A frame with nothing queued before it
 * goes out at once, without a copy.  Within a deferred section of the
 * peer (defer_call_begin(), which the IOThread dataplane's TX round
 * opens), the frames after it are copied into a queue that leaves with
 * one sendmmsg() per tx-batch frames and at the end of the section.
 * While the socket pushes back, frames wait in the same queue until it is
 * writable; when the queue is full, return 0 so that the peer queues the
 * frame and waits for qemu_flush_queued_packets().
 *
 * Context: backend
 */
static ssize_t af_packet_receive_iov(NetClientState *nc,
                                     const struct iovec *iov, int iovcnt)
{
    AFPacketState *s = af_packet_state(nc);
    size_t size = iov_size(iov, iovcnt);
    size_t hdr_len = s->vnet_hdr ? sizeof(struct virtio_net_hdr) : 0;
    bool pushed_back = false;

    if (s->gone) {
        af_packet_count(&s->stats.tx_errors, 1);
        return size;
    }
    if (size < hdr_len + ETH_HLEN) {
        af_packet_count(&s->stats.tx_errors, 1);
        trace_af_packet_tx_error(s->nc.name, EINVAL);
        return size;
    }
    if (s->spoofchk && !af_packet_from_nic(s, iov, iovcnt, hdr_len)) {
        af_packet_count(&s->stats.tx_spoofed, 1);
        return size;
    }
    if (s->tx_count == 0 && !s->tx_deferring) {
        struct msghdr msg = {
            .msg_iov = (struct iovec *)iov,
            .msg_iovlen = iovcnt,
        };

        if (s->tx_batch > 1) {
            /* Outside a deferred section, this runs (and ends) at once */
            s->tx_deferring = true;
            defer_call(af_packet_tx_batch_end, s);
        }
        if (RETRY_ON_EINTR(sendmsg(s->fd, &msg, MSG_DONTWAIT)) >= 0) {
            af_packet_count(&s->stats.tx_calls, 1);
            af_packet_count(&s->stats.tx_packets, 1);
            af_packet_count(&s->stats.tx_bytes, size - hdr_len);
            return size;
        }
        if (errno != EAGAIN && errno != ENOBUFS) {
            af_packet_count(&s->stats.tx_errors, 1);
            trace_af_packet_tx_error(s->nc.name, errno);
            return size;
        }
        af_packet_count(&s->stats.tx_busy, 1);
        pushed_back = true;
    } else if (s->tx_head + s->tx_count == AF_PACKET_TX_BATCH) {
        s->tx_blocked = true;
        return 0;
    }
    af_packet_tx_queue(s, iov, iovcnt, size, hdr_len);
    if (pushed_back || !s->tx_deferring) {
        af_packet_write_poll(s, true);
    } else if (!s->write_poll && s->tx_count >= s->tx_batch) {
        af_packet_tx_send_queue(s);
    }
    return size;
}

/* ---- offloads: asked by the peer while it is set up ---- */

/* Context: BQL held */
static bool af_packet_has_vnet_hdr(NetClientState *nc)
{
    return af_packet_state(nc)->vnet_hdr;
}

/* Context: BQL held */
static bool af_packet_has_vnet_hdr_len(NetClientState *nc, int len)
{
    /* PACKET_VNET_HDR is struct virtio_net_hdr, nothing longer. */
    return af_packet_state(nc)->vnet_hdr &&
           len == sizeof(struct virtio_net_hdr);
}

/* Context: BQL held */
static void af_packet_set_vnet_hdr_len(NetClientState *nc, int len)
{
    assert(len == sizeof(struct virtio_net_hdr));
}

/*
 * What the guest accepts, so that GSO frames it did not ask for are not
 * delivered.
 *
 * Context: BQL held
 */
static void af_packet_set_offload(NetClientState *nc, const NetOffloads *ol)
{
    af_packet_state(nc)->offloads = *ol;
}

/* ---- link state ---- */

/* Context: main loop, BQL held */
static void af_packet_link_set(AFPacketLink *l, bool up)
{
    NetClientState *ncs[MAX_QUEUE_NUM];
    Error *err = NULL;
    int i, n;

    if (l->up == up) {
        return;
    }
    l->up = up;
    trace_af_packet_link(l->netdev, l->ifname, up);
    qmp_set_link(l->netdev, up, &err);
    if (err) {
        warn_report_err(err);
    }
    if (up) {
        /* The ENETDOWN of the way down would fail the next send. */
        n = qemu_find_net_clients_except(l->netdev, ncs,
                                         NET_CLIENT_DRIVER_NIC,
                                         MAX_QUEUE_NUM);
        for (i = 0; i < n; i++) {
            af_packet_clear_error(af_packet_state(ncs[i]));
        }
    }
}

/*
 * The state the interface had at start-up, applied once the NIC is
 * attached (the netdev is created before its device).
 *
 * Context: main loop, BQL held
 */
static void af_packet_link_initial(void *opaque)
{
    AFPacketLink *l = opaque;

    af_packet_link_set(l, af_packet_if_up(l->ifname));
}

/*
 * The interface is gone: say so once, go link-down, stop the queues.
 *
 * Context: main loop, BQL held
 */
static void af_packet_link_gone(AFPacketLink *l)
{
    NetClientState *ncs[MAX_QUEUE_NUM];
    int i, n;

    error_report("af-packet: netdev '%s': interface %s disappeared; "
                 "the link stays down", l->netdev, l->ifname);
    af_packet_link_set(l, false);
    n = qemu_find_net_clients_except(l->netdev, ncs,
                                     NET_CLIENT_DRIVER_NIC, MAX_QUEUE_NUM);
    for (i = 0; i < n; i++) {
        AFPacketState *s = af_packet_state(ncs[i]);

        /* The queue may run in a device's IOThread: stop it there first */
        qemu_net_client_drained_begin(ncs[i]);
        s->gone = true;
        af_packet_update_fd_handler(s);
        qemu_net_client_drained_end(ncs[i]);
    }
    qemu_set_fd_handler(l->fd, NULL, NULL, NULL);
}

/* rtnetlink messages about links.  Context: main loop, BQL held */
static void af_packet_link_read(void *opaque)
{
    AFPacketLink *l = opaque;
    char buf[8192] QEMU_ALIGNED(4);
    ssize_t len;

    if (qemu_find_netdev(l->netdev) != &l->s->nc) {
        /*
         * netdev_del while the NIC still exists: the netdev is gone for
         * the user, only its cleanup waits for the NIC.  Stop following.
         */
        qemu_set_fd_handler(l->fd, NULL, NULL, NULL);
        return;
    }

    while ((len = recv(l->fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
        struct nlmsghdr *nh;

        for (nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, len);
             nh = NLMSG_NEXT(nh, len)) {
            struct ifinfomsg *ifi = NLMSG_DATA(nh);

            if ((nh->nlmsg_type != RTM_NEWLINK &&
                 nh->nlmsg_type != RTM_DELLINK) ||
                nh->nlmsg_len < NLMSG_LENGTH(sizeof(*ifi)) ||
                ifi->ifi_index != l->ifindex) {
                continue;
            }
            if (nh->nlmsg_type == RTM_DELLINK) {
                af_packet_link_gone(l);
                return;
            }
            af_packet_link_set(l, (ifi->ifi_flags & IFF_UP) &&
                                  (ifi->ifi_flags & IFF_RUNNING));
        }
    }
}

/* Context: BQL held */
static void af_packet_link_free(AFPacketLink *l)
{
    if (!l) {
        return;
    }
    if (l->fd >= 0) {
        qemu_set_fd_handler(l->fd, NULL, NULL, NULL);
        close(l->fd);
    }
    if (l->initial_bh) {
        qemu_bh_delete(l->initial_bh);
    }
    g_free(l->netdev);
    g_free(l);
}

/* Context: BQL held */
static AFPacketLink *af_packet_link_new(AFPacketState *s, int ifindex,
                                        const char *ifname, Error **errp)
{
    struct sockaddr_nl sa = {
        .nl_family = AF_NETLINK,
        .nl_groups = RTMGRP_LINK,
    };
    AFPacketLink *l = g_new0(AFPacketLink, 1);

    l->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK,
                   NETLINK_ROUTE);
    if (l->fd < 0 || bind(l->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        error_setg_errno(errp, errno, "af-packet: cannot follow the link "
                         "state of %s (rtnetlink)", ifname);
        af_packet_link_free(l);
        return NULL;
    }
    l->ifindex = ifindex;
    pstrcpy(l->ifname, sizeof(l->ifname), ifname);
    l->netdev = g_strdup(s->nc.name);
    l->s = s;
    l->up = true;
    qemu_set_fd_handler(l->fd, af_packet_link_read, NULL, l);
    l->initial_bh = qemu_bh_new(af_packet_link_initial, l);
    qemu_bh_schedule(l->initial_bh);
    return l;
}

/* ---- setup and teardown ---- */

/*
 * Context: BQL held, with the backend's AioContext quiescent (netdev_del
 * and QEMU's exit delete net clients from the main loop).
 */
static void af_packet_cleanup(NetClientState *nc)
{
    AFPacketState *s = af_packet_state(nc);
    unsigned int i;

    qemu_purge_queued_packets(nc);
    if (s->fd >= 0) {
        aio_set_fd_handler(s->ctx, s->fd, NULL, NULL, NULL, NULL, NULL);
    }
    for (i = 0; i < AF_PACKET_TX_BATCH; i++) {
        af_packet_tx_free(s, i);
    }
    if (s->ring) {
        munmap(s->ring, s->ring_size);
        s->ring = NULL;
    }
    g_free(s->rxbuf);
    s->rxbuf = NULL;
    /* Closing the socket also drops its promiscuous membership. */
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    af_packet_link_free(s->link);
    s->link = NULL;
}

/* Counters for query-stats and "info network".  Context: BQL held */
static void af_packet_net_stats(NetClientState *nc, NetStatsBuilder *b)
{
    AFPacketStats st;

    af_packet_get_stats(nc, &st);
    net_stats_add(b, "rx-packets", st.rx_packets);
    net_stats_add(b, "rx-bytes", st.rx_bytes);
    net_stats_add(b, "rx-dropped", st.rx_dropped);
    net_stats_add(b, "rx-ring-full", st.rx_ring_full);
    net_stats_add(b, "rx-truncated", st.rx_truncated);
    net_stats_add(b, "rx-oversize", st.rx_oversize);
    net_stats_add(b, "rx-peer-full", st.rx_peer_full);
    net_stats_add(b, "rx-link-down", st.rx_link_down);
    net_stats_add(b, "rx-runt", st.rx_runt);
    net_stats_add(b, "rx-bad-ring", st.rx_bad_ring);
    net_stats_add(b, "rx-filtered", st.rx_filtered);
    net_stats_add(b, "tx-packets", st.tx_packets);
    net_stats_add(b, "tx-bytes", st.tx_bytes);
    net_stats_add(b, "tx-errors", st.tx_errors);
    net_stats_add(b, "tx-busy", st.tx_busy);
    net_stats_add(b, "tx-calls", st.tx_calls);
    net_stats_add(b, "tx-spoofed", st.tx_spoofed);
}

static NetClientInfo net_af_packet_info = {
    .type = NET_CLIENT_DRIVER_AF_PACKET,
    .size = sizeof(AFPacketState),
    .receive_iov = af_packet_receive_iov,
    .poll = af_packet_poll,
    .cleanup = af_packet_cleanup,
    .has_vnet_hdr = af_packet_has_vnet_hdr,
    .has_vnet_hdr_len = af_packet_has_vnet_hdr_len,
    .set_vnet_hdr_len = af_packet_set_vnet_hdr_len,
    .set_offload = af_packet_set_offload,
    .get_stats = af_packet_net_stats,
    .set_aio_context = af_packet_set_aio_context,
    .queue_enable = af_packet_queue_enable,
};

/* Context: BQL held (setup) */
static bool af_packet_setsockopt(int fd, int opt, int val, const char *what,
                                 Error **errp)
{
    if (setsockopt(fd, SOL_PACKET, opt, &val, sizeof(val)) < 0) {
        error_setg_errno(errp, errno, "af-packet: cannot set %s", what);
        return false;
    }
    return true;
}

/*
 * The TPACKET_V2 frame size for an interface's frames: room for the
 * header, the link-layer address the kernel puts in front, the virtio-net
 * header and the largest frame, MTU-sized or a 64 KiB GSO frame with
 * vnet-hdr.
 */
static uint64_t af_packet_v2_frame_size(unsigned int mtu, bool vnet_hdr)
{
    return pow2ceil(TPACKET_ALIGN(sizeof(struct tpacket2_hdr)) +
                    TPACKET_ALIGN(sizeof(struct sockaddr_ll)) +
                    sizeof(struct virtio_net_hdr) +
                    (vnet_hdr ? 65536 : (uint64_t)mtu + AF_PACKET_L2_OVERHEAD));
}

/*
 * Set up the receive ring of @s->fd and map it.
 *
 * Context: BQL held (setup)
 */
static bool af_packet_setup_ring(AFPacketState *s, const char *ifname,
                                 uint64_t ring_size, uint32_t retire_ms,
                                 Error **errp)
{
    struct tpacket_req3 req = { 0 };

    s->block_size = AF_PACKET_RX_BLOCK;
    s->block_nr = ring_size / s->block_size;
    req.tp_block_size = s->block_size;
    req.tp_block_nr = s->block_nr;
    if (s->frames) {
        uint64_t frame_size = af_packet_v2_frame_size(s->mtu, s->vnet_hdr);

        if (frame_size > ring_size) {
            error_setg(errp, "af-packet: the MTU of %s (%u) needs %" PRIu64
                       "-byte TPACKET_V2 frames, more than rx-ring-size "
                       "(%" PRIu64 "); use tpacket-version=3",
                       ifname, s->mtu, frame_size, ring_size);
            return false;
        }
        s->frame_size = frame_size;
        if (s->frame_size > s->block_size) {
            s->block_size = s->frame_size;
            s->block_nr = MAX(ring_size / s->block_size, 1);
            req.tp_block_size = s->block_size;
            req.tp_block_nr = s->block_nr;
        }
        s->frame_nr = s->block_size / s->frame_size * s->block_nr;
        req.tp_frame_size = s->frame_size;
        req.tp_frame_nr = s->frame_nr;
    } else {
        req.tp_frame_size = AF_PACKET_RX_FRAME;
        req.tp_frame_nr = s->block_size / AF_PACKET_RX_FRAME * s->block_nr;
        req.tp_retire_blk_tov = retire_ms;
    }

    /* A TPACKET_V2 ring takes the first fields of tpacket_req3 */
    QEMU_BUILD_BUG_ON(offsetof(struct tpacket_req3, tp_frame_nr) !=
                      offsetof(struct tpacket_req, tp_frame_nr));
    if (setsockopt(s->fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req))) {
        error_setg_errno(errp, errno, "af-packet: cannot set up a %" PRIu64
                         "-byte receive ring (rx-ring-size)", ring_size);
        return false;
    }
    s->ring_size = (size_t)s->block_size * s->block_nr;
    s->ring = mmap(NULL, s->ring_size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_LOCKED | MAP_POPULATE, s->fd, 0);
    if (s->ring == MAP_FAILED) {
        /* MAP_LOCKED can fail on RLIMIT_MEMLOCK: it is only a preference. */
        s->ring = mmap(NULL, s->ring_size, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_POPULATE, s->fd, 0);
    }
    if (s->ring == MAP_FAILED) {
        s->ring = NULL;
        error_setg_errno(errp, errno, "af-packet: cannot map the receive ring");
        return false;
    }
    return true;
}

/* Checks that a passed fd is what we need.  Context: BQL held */
static bool af_packet_check_fd(int fd, const char *name, Error **errp)
{
    int domain = 0, type = 0;
    socklen_t len = sizeof(int);

    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 ||
        domain != AF_PACKET) {
        error_setg(errp, "af-packet: %s is not an AF_PACKET socket", name);
        return false;
    }
    len = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
        type != SOCK_RAW) {
        error_setg(errp, "af-packet: %s is not a SOCK_RAW packet socket "
                   "(cooked SOCK_DGRAM sockets cannot carry Ethernet frames)",
                   name);
        return false;
    }
    return true;
}

typedef struct AFPacketConfig {
    const NetdevAFPacketOptions *opts;
    int ifindex;
    char ifname[IFNAMSIZ];
    unsigned int mtu;
    int queues;
    int fanout_id;              /* the kernel's, once queue 0 made it */
    uint64_t ring_size;
    uint32_t retire_ms;
    uint8_t tpacket_version;
} AFPacketConfig;

/* ---- fanout: the queues of a multiqueue netdev ---- */

/* Offset @k from the network header, in a classic BPF load */
#define AF_PACKET_NET(k)        (SKF_NET_OFF + (k))
#define AF_PACKET_FANOUT_PROG_LEN 61
#define AF_PACKET_FANOUT_MOD    59      /* the instruction that takes mod n */

/*
 * The fanout group's classic BPF program: a flow hash mod @n, so that
 * only the group's first @n sockets get frames.  IPv4 and IPv6 hash their
 * addresses and, for TCP, UDP and SCTP, their ports (fragments are
 * reassembled first: PACKET_FANOUT_FLAG_DEFRAG); other frames use the
 * hash the device computed, 0 without one.  The kernel's own
 * skb->hash (SKF_AD_RXHASH) cannot do for IP: many devices (veth among
 * them) leave it unset until something asks for it, which a fanout
 * program cannot.
 *
 * Context: BQL held
 */
static void af_packet_fanout_prog(struct sock_filter *f, unsigned int n)
{
    static const struct sock_filter prog[AF_PACKET_FANOUT_PROG_LEN] = {
        /* 0: IPv4? */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_PROTOCOL),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 14),
        /* 2: M[0] = saddr ^ daddr */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, AF_PACKET_NET(12)),
        BPF_STMT(BPF_MISC | BPF_TAX, 0),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, AF_PACKET_NET(16)),
        BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        BPF_STMT(BPF_ST, 0),
        /* 7: a fragment has no ports (49) */
        BPF_STMT(BPF_LD | BPF_H | BPF_ABS, AF_PACKET_NET(6)),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x3fff, 40, 0),
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, AF_PACKET_NET(9)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_UDP, 1, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_SCTP, 0, 36),
        /* 13: the ports, after the IPv4 header; on to 45 */
        BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, AF_PACKET_NET(0)),
        BPF_STMT(BPF_LD | BPF_W | BPF_IND, AF_PACKET_NET(0)),
        BPF_STMT(BPF_JMP | BPF_JA, 29),
        /* 16: IPv6?  Otherwise 51 */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IPV6, 0, 34),
        /* 17: M[0] = the eight words of saddr and daddr, xored */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, AF_PACKET_NET(8)),
        BPF_STMT(BPF_MISC | BPF_TAX, 0),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, AF_PACKET_NET(12)),
        BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        BPF_STMT(BPF_MISC | BPF_TAX, 0),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, AF_PACKET_NET(16)),
        BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        BPF_STMT(BPF_MISC | BPF_TAX, 0),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, AF_PACKET_NET(20)),
        BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        BPF_STMT(BPF_MISC | BPF_TAX, 0),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, AF_PACKET_NET(24)),
        BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        BPF_STMT(BPF_MISC | BPF_TAX, 0),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, AF_PACKET_NET(28)),
        BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        BPF_STMT(BPF_MISC | BPF_TAX, 0),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, AF_PACKET_NET(32)),
        BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        BPF_STMT(BPF_MISC | BPF_TAX, 0),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, AF_PACKET_NET(36)),
        BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        BPF_STMT(BPF_ST, 0),
        /* 40: the ports, after a header without extensions; else 49 */
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, AF_PACKET_NET(6)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_UDP, 1, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_SCTP, 0, 5),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, AF_PACKET_NET(40)),
        /* 45: A = M[0] ^ ports, on to 52 */
        BPF_STMT(BPF_MISC | BPF_TAX, 0),
        BPF_STMT(BPF_LD | BPF_MEM, 0),
        BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        BPF_STMT(BPF_JMP | BPF_JA, 3),
        /* 49: A = M[0], on to 52 */
        BPF_STMT(BPF_LD | BPF_MEM, 0),
        BPF_STMT(BPF_JMP | BPF_JA, 1),
        /* 51: not IP */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_RXHASH),
        /* 52: mix the bits, return A mod n */
        BPF_STMT(BPF_MISC | BPF_TAX, 0),
        BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 16),
        BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        BPF_STMT(BPF_ALU | BPF_MUL | BPF_K, 0x45d9f3b),
        BPF_STMT(BPF_MISC | BPF_TAX, 0),
        BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 16),
        BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, 1),
        BPF_STMT(BPF_RET | BPF_A, 0),
    };

    memcpy(f, prog, sizeof(prog));
    f[AF_PACKET_FANOUT_MOD].k = n;
}

/*
 * Steer the fanout group of socket @fd to its first @n sockets.
 * Returns 0 or a negative errno.
 *
 * Context: BQL held
 */
static int af_packet_fanout_steer(int fd, unsigned int n)
{
    struct sock_filter f[AF_PACKET_FANOUT_PROG_LEN];
    struct sock_fprog prog = {
        .len = AF_PACKET_FANOUT_PROG_LEN,
        .filter = f,
    };

    af_packet_fanout_prog(f, n);
    if (setsockopt(fd, SOL_PACKET, PACKET_FANOUT_DATA, &prog,
                   sizeof(prog)) < 0) {
        return -errno;
    }
    return 0;
}

/*
 * Join the fanout group of the netdev's queues.  Queue 0 creates it with
 * an id the kernel picks (PACKET_FANOUT_FLAG_UNIQUEID), so that it can
 * collide with no other group on the interface, another netdev's or
 * another program's; the other queues join by that id.  Frames are
 * spread by af_packet_fanout_prog(), over every queue at first.
 *
 * Context: BQL held (setup)
 */
static bool af_packet_join_fanout(AFPacketState *s, AFPacketConfig *c,
                                  int queue, Error **errp)
{
    unsigned int mode = PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_DEFRAG;
    int val, ret;
    socklen_t len = sizeof(val);

    if (queue == 0) {
        val = (int)((mode | PACKET_FANOUT_FLAG_UNIQUEID) << 16);
        if (setsockopt(s->fd, SOL_PACKET, PACKET_FANOUT, &val,
                       sizeof(val)) < 0) {
            error_setg_errno(errp, errno, "af-packet: cannot create a fanout "
                             "group for queues=%d (PACKET_FANOUT_CBPF with "
                             "PACKET_FANOUT_FLAG_UNIQUEID needs Linux 4.3 or "
                             "later)", c->queues);
            return false;
        }
        if (getsockopt(s->fd, SOL_PACKET, PACKET_FANOUT, &val, &len) < 0) {
            error_setg_errno(errp, errno, "af-packet: cannot read the id of "
                             "the fanout group (queues)");
            return false;
        }
        c->fanout_id = val & 0xffff;
        ret = af_packet_fanout_steer(s->fd, c->queues);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "af-packet: cannot set the fanout "
                             "program (PACKET_FANOUT_DATA)");
            return false;
        }
    } else {
        val = (int)(c->fanout_id | mode << 16);
        if (setsockopt(s->fd, SOL_PACKET, PACKET_FANOUT, &val,
                       sizeof(val)) < 0) {
            error_setg_errno(errp, errno, "af-packet: queue %d cannot join "
                             "fanout group %d", queue, c->fanout_id);
            return false;
        }
    }
    s->fanout = true;
    return true;
}

/*
 * The device enabled or disabled its queue pair that uses this backend
 * queue (a guest driving fewer pairs than the backend has queues).  The
 * enabled pairs are the first ones: steer every flow to the sockets of
 * the queues before the first disabled one, so that no frame waits in a
 * socket whose queue the device does not read.  A failure is reported
 * but not returned: virtio-net asserts that enabling cannot fail.
 *
 * Context: main loop, BQL held, the queue pair paused
 */
static int af_packet_queue_enable(NetClientState *nc, bool enable)
{
    NetClientState *ncs[AF_PACKET_FANOUT_MAX];
    AFPacketState *s = af_packet_state(nc);
    int i, n, ret;

    s->queue_disabled = !enable;
    if (!s->fanout) {
        return 0;
    }
    n = qemu_find_net_clients_except(nc->name, ncs, NET_CLIENT_DRIVER_NIC,
                                     AF_PACKET_FANOUT_MAX);
    if (n == 0) {
        return 0;
    }
    for (i = 0; i < n && !af_packet_state(ncs[i])->queue_disabled; i++) {
        continue;
    }
    ret = af_packet_fanout_steer(af_packet_state(ncs[0])->fd, MAX(i, 1));
    if (ret < 0) {
        error_report("af-packet: netdev '%s': cannot steer frames to %d "
                     "queue(s): %s", nc->name, MAX(i, 1), strerror(-ret));
    }
    return 0;
}

/*
 * Configure one queue's socket: version, vnet header, ring, bind,
 * promiscuous membership, fanout.
 *
 * Context: BQL held (setup)
 */
static bool af_packet_setup_queue(AFPacketState *s, AFPacketConfig *c,
                                  int queue, Error **errp)
{
    const NetdevAFPacketOptions *opts = c->opts;
    struct sockaddr_ll sll = {
        .sll_family = AF_PACKET,
        .sll_protocol = htons(ETH_P_ALL),
        .sll_ifindex = c->ifindex,
    };

    if (!af_packet_setsockopt(s->fd, PACKET_VERSION,
                              s->frames ? TPACKET_V2 : TPACKET_V3,
                              "the TPACKET version", errp)) {
        return false;
    }
    if (s->vnet_hdr &&
        !af_packet_setsockopt(s->fd, PACKET_VNET_HDR, 1, "vnet-hdr", errp)) {
        return false;
    }
    if (!af_packet_setsockopt(s->fd, PACKET_IGNORE_OUTGOING, 1,
                              "PACKET_IGNORE_OUTGOING", errp)) {
        return false;
    }
    if (opts->has_qdisc_bypass && opts->qdisc_bypass &&
        !af_packet_setsockopt(s->fd, PACKET_QDISC_BYPASS, 1, "qdisc-bypass",
                              errp)) {
        return false;
    }
    if (c->ring_size) {
        if (!af_packet_setup_ring(s, c->ifname, c->ring_size, c->retire_ms,
                                  errp)) {
            return false;
        }
    } else {
        /* PACKET_AUXDATA tells which frames have partial checksums. */
        if (!af_packet_setsockopt(s->fd, PACKET_AUXDATA, 1, "PACKET_AUXDATA",
                                  errp)) {
            return false;
        }
        s->rxbuf = g_malloc(AF_PACKET_RXBUF_SIZE);
    }
    if (bind(s->fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
        error_setg_errno(errp, errno, "af-packet: cannot bind to %s",
                         c->ifname);
        return false;
    }
    if (!opts->has_promisc || opts->promisc) {
        struct packet_mreq mr = {
            .mr_ifindex = c->ifindex,
            .mr_type = PACKET_MR_PROMISC,
        };

        if (setsockopt(s->fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr,
                       sizeof(mr)) < 0) {
            error_setg_errno(errp, errno, "af-packet: cannot make %s "
                             "promiscuous (promisc=on)", c->ifname);
            return false;
        }
    }
    if (c->queues > 1 && !af_packet_join_fanout(s, c, queue, errp)) {
        return false;
    }
    return true;
}

/* Context: BQL held (setup) */
static int *af_packet_parse_fds(const NetdevAFPacketOptions *opts,
                                int64_t *queues, Error **errp)
{
    const char *opt = opts->fd ? "fd" : "fds";
    const char *str = opts->fd ? opts->fd : opts->fds;
    g_auto(GStrv) names = g_strsplit(str, ":", -1);
    g_autofree int *fds = NULL;
    int64_t i, n = g_strv_length(names);

    for (i = 0; i < n; i++) {
        if (!*names[i]) {
            break;
        }
    }
    if (n == 0 || i < n) {
        error_setg(errp, "af-packet: invalid file descriptor list %s='%s': "
                   "an empty name", opt, str);
        return NULL;
    }
    if (opts->fd && n > 1) {
        error_setg(errp, "af-packet: fd takes one descriptor; "
                   "use fds for several queues");
        return NULL;
    }
    if (n > AF_PACKET_FANOUT_MAX) {
        error_setg(errp, "af-packet: %" PRIi64 " descriptors in fds, more "
                   "than the %d sockets a fanout group can hold", n,
                   AF_PACKET_FANOUT_MAX);
        return NULL;
    }
    if (opts->has_queues && opts->queues != n) {
        error_setg(errp, "af-packet: queues=%" PRIi64 " but %" PRIi64
                   " descriptor(s) passed", opts->queues, n);
        return NULL;
    }
    fds = g_new(int, n);
    for (i = 0; i < n; i++) {
        fds[i] = monitor_fd_param(monitor_cur(), names[i], errp);
        if (fds[i] < 0) {
            for (; i > 0; i--) {
                close(fds[i - 1]);
            }
            return NULL;
        }
    }
    for (i = 0; i < n; i++) {
        if (!af_packet_check_fd(fds[i], names[i], errp)) {
            for (i = 0; i < n; i++) {
                close(fds[i]);
            }
            return NULL;
        }
    }
    *queues = n;
    return g_steal_pointer(&fds);
}

/*
 * Run @helper (empty: the installed qemu-af-packet-helper) for @queues
 * sockets bound to @ifname, as tap's bridge helper runs: it checks its ACL
 * file, and passes the sockets back over a unix socket.  Its error
 * messages go to QEMU's stderr.
 *
 * Context: BQL held (setup)
 */
static int *af_packet_run_helper(const char *helper, const char *ifname,
                                 int64_t queues, Error **errp)
{
    g_autofree char *path = *helper ? g_strdup(helper) :
        get_relocated_path(CONFIG_QEMU_HELPERDIR "/qemu-af-packet-helper");
    /* CMSG_SPACE() rounds up: room for one descriptor more */
    g_autofree int *fds = g_new(int, queues + 1);
    g_autofree char *control = g_malloc0(CMSG_SPACE(sizeof(int) * queues));
    char byte;
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    struct msghdr msg = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control,
        .msg_controllen = CMSG_SPACE(sizeof(int) * queues),
    };
    g_autofree char *if_arg = g_strdup_printf("--ifname=%s", ifname);
    g_autofree char *queues_arg = g_strdup_printf("--queues=%" PRIi64,
                                                  queues);
    g_autofree char *fd_arg = NULL;
    struct cmsghdr *cmsg;
    int sv[2], status = 0, n = 0, wait_errno;
    ssize_t len;
    pid_t pid, waited;

    if (qemu_socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        error_setg_errno(errp, errno, "af-packet: socketpair() failed");
        return NULL;
    }
    /* Everything the child needs, before fork(): it only closes and execs */
    fd_arg = g_strdup_printf("--fd=%d", sv[1]);
    pid = fork();
    if (pid == 0) {
        const int keep[] = { STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO,
                             sv[1] };
        char *argv[] = { path, if_arg, queues_arg, fd_arg, NULL };

        qemu_close_all_open_fd(keep, ARRAY_SIZE(keep));
        fcntl(sv[1], F_SETFD, 0);       /* the helper's end stays open */
        execv(path, argv);
        fprintf(stderr, "af-packet: cannot run the helper %s: %s\n", path,
                strerror(errno));
        _exit(EXIT_FAILURE);
    }
    close(sv[1]);
    if (pid < 0) {
        error_setg_errno(errp, errno, "af-packet: cannot fork the helper");
        close(sv[0]);
        return NULL;
    }
    len = RETRY_ON_EINTR(recvmsg(sv[0], &msg, MSG_CMSG_CLOEXEC));
    close(sv[0]);
    for (cmsg = CMSG_FIRSTHDR(&msg); len > 0 && cmsg;
         cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
            n = MIN((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int),
                    queues + 1);
            memcpy(fds, CMSG_DATA(cmsg), sizeof(int) * n);
        }
    }
    waited = RETRY_ON_EINTR(waitpid(pid, &status, 0));
    wait_errno = errno;
    if (waited == pid && n == queues && !(msg.msg_flags & MSG_CTRUNC) &&
        WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        return g_steal_pointer(&fds);
    }
    while (n-- > 0) {
        close(fds[n]);
    }
    if (waited != pid) {
        error_setg_errno(errp, wait_errno, "af-packet: cannot wait for the "
                         "helper %s", path);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        error_setg(errp, "af-packet: the helper %s did not pass %" PRIi64
                   " socket(s)", path, queues);
    } else if (WIFSIGNALED(status)) {
        error_setg(errp, "af-packet: the helper %s was killed by signal %d",
                   path, WTERMSIG(status));
    } else {
        error_setg(errp, "af-packet: the helper %s failed for %s (exit "
                   "status %d)", path, ifname, WEXITSTATUS(status));
    }
    return NULL;
}

/*
 * Find the interface: by name, or the one a passed socket is bound to.
 *
 * Context: BQL held (setup)
 */
static bool af_packet_resolve_if(AFPacketConfig *c, int fd, Error **errp)
{
    const NetdevAFPacketOptions *opts = c->opts;
    struct ifreq ifr = { 0 };
    int sock;

    if (opts->ifname) {
        if (strlen(opts->ifname) >= IFNAMSIZ) {
            error_setg(errp, "af-packet: ifname '%s' is too long",
                       opts->ifname);
            return false;
        }
        c->ifindex = if_nametoindex(opts->ifname);
        if (!c->ifindex) {
            error_setg_errno(errp, errno, "af-packet: no interface '%s' "
                             "(ifname)", opts->ifname);
            return false;
        }
        pstrcpy(c->ifname, sizeof(c->ifname), opts->ifname);
    } else {
        struct sockaddr_ll sll = { 0 };
        socklen_t len = sizeof(sll);

        if (getsockname(fd, (struct sockaddr *)&sll, &len) < 0 ||
            sll.sll_ifindex <= 0) {
            error_setg(errp, "af-packet: the passed socket is not bound to "
                       "an interface; give ifname too");
            return false;
        }
        c->ifindex = sll.sll_ifindex;
        if (!if_indextoname(c->ifindex, c->ifname)) {
            error_setg_errno(errp, errno, "af-packet: no interface with "
                             "index %d", c->ifindex);
            return false;
        }
    }

    pstrcpy(ifr.ifr_name, sizeof(ifr.ifr_name), c->ifname);
    sock = fd >= 0 ? fd : socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || ioctl(sock, SIOCGIFMTU, &ifr) < 0) {
        error_setg_errno(errp, errno, "af-packet: cannot read the MTU of %s",
                         c->ifname);
        if (sock >= 0 && sock != fd) {
            close(sock);
        }
        return false;
    }
    c->mtu = ifr.ifr_mtu;
    if (ioctl(sock, SIOCGIFHWADDR, &ifr) < 0) {
        error_setg_errno(errp, errno, "af-packet: cannot read the hardware "
                         "type of %s", c->ifname);
        if (sock != fd) {
            close(sock);
        }
        return false;
    }
    if (sock != fd) {
        close(sock);
    }
    if (ifr.ifr_hwaddr.sa_family != ARPHRD_ETHER) {
        error_setg(errp, "af-packet: %s is not an Ethernet interface "
                   "(hardware type %d): af-packet carries Ethernet frames",
                   c->ifname, ifr.ifr_hwaddr.sa_family);
        return false;
    }
    return true;
}

/*
 * A passed socket already bound to an interface must be bound to the one
 * the netdev uses: binding it again elsewhere would quietly move it.
 *
 * Context: BQL held (setup)
 */
static bool af_packet_check_bound(const AFPacketConfig *c, int fd,
                                  Error **errp)
{
    struct sockaddr_ll sll = { 0 };
    socklen_t len = sizeof(sll);
    char name[IFNAMSIZ] = "";

    if (getsockname(fd, (struct sockaddr *)&sll, &len) < 0 ||
        sll.sll_ifindex <= 0 || sll.sll_ifindex == c->ifindex) {
        return true;
    }
    if (!if_indextoname(sll.sll_ifindex, name)) {
        snprintf(name, sizeof(name), "#%d", sll.sll_ifindex);
    }
    error_setg(errp, "af-packet: a passed socket is bound to %s, not to %s%s",
               name, c->opts->ifname ? "ifname=" : "", c->ifname);
    return false;
}

/* Context: BQL held (setup) */
static bool af_packet_if_up(const char *ifname)
{
    struct ifreq ifr = { 0 };
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    bool up = true;

    pstrcpy(ifr.ifr_name, sizeof(ifr.ifr_name), ifname);
    if (sock >= 0 && ioctl(sock, SIOCGIFFLAGS, &ifr) == 0) {
        up = (ifr.ifr_flags & IFF_UP) && (ifr.ifr_flags & IFF_RUNNING);
    }
    if (sock >= 0) {
        close(sock);
    }
    return up;
}

/*
 * -netdev af-packet,id=str,ifname=name|fd=h|fds=h:h...
 *
 * Context: BQL held
 */
int net_init_af_packet(const Netdev *netdev, const char *name,
                       NetClientState *peer, Error **errp)
{
    const NetdevAFPacketOptions *opts = &netdev->u.af_packet;
    AFPacketConfig c = { .opts = opts };
    g_autofree int *fds = NULL;
    NetClientState *nc, *nc0 = NULL;
    int64_t queues, i;
    AFPacketState *s;

    if (!opts->ifname && !opts->fd && !opts->fds) {
        error_setg(errp, "af-packet: ifname is required (or fd/fds with a "
                   "socket opened for QEMU)");
        return -1;
    }
    if (opts->fd && opts->fds) {
        error_setg(errp, "af-packet: fd and fds are mutually exclusive");
        return -1;
    }
    queues = opts->has_queues ? opts->queues : 1;
    if (queues < 1 || queues > AF_PACKET_FANOUT_MAX) {
        error_setg(errp, "af-packet: queues must be between 1 and %d (the "
                   "sockets a fanout group can hold)", AF_PACKET_FANOUT_MAX);
        return -1;
    }
    c.ring_size = opts->has_rx_ring_size ? opts->rx_ring_size
                                         : AF_PACKET_RX_RING_DEFAULT;
    if (c.ring_size &&
        (c.ring_size < AF_PACKET_RX_RING_MIN ||
         c.ring_size > AF_PACKET_RX_RING_MAX ||
         c.ring_size % AF_PACKET_RX_BLOCK)) {
        error_setg(errp, "af-packet: rx-ring-size must be 0 (no ring) or a "
                   "multiple of %d KiB between 1 MiB and 1 GiB",
                   (int)(AF_PACKET_RX_BLOCK / KiB));
        return -1;
    }
    c.retire_ms = opts->has_rx_retire_timeout ? opts->rx_retire_timeout
                                              : AF_PACKET_RETIRE_DEFAULT;
    if (c.retire_ms < 1 || c.retire_ms > 1000) {
        error_setg(errp, "af-packet: rx-retire-timeout must be between 1 "
                   "and 1000 milliseconds");
        return -1;
    }
    /* 0 until the interface's MTU chooses (below) */
    c.tpacket_version = opts->has_tpacket_version ? opts->tpacket_version : 0;
    if (opts->has_tpacket_version &&
        c.tpacket_version != 2 && c.tpacket_version != 3) {
        error_setg(errp, "af-packet: tpacket-version must be 2 (a ring of "
                   "frames, each handed over at once) or 3 (a ring of "
                   "blocks)");
        return -1;
    }
    if (c.tpacket_version == 2 && !c.ring_size) {
        error_setg(errp, "af-packet: tpacket-version=2 needs a ring "
                   "(rx-ring-size other than 0)");
        return -1;
    }
    if (c.tpacket_version == 2 && opts->has_rx_retire_timeout) {
        error_setg(errp, "af-packet: rx-retire-timeout applies to "
                   "tpacket-version=3 only");
        return -1;
    }
    if (opts->has_tx_batch &&
        (opts->tx_batch < 1 || opts->tx_batch > AF_PACKET_TX_BATCH)) {
        error_setg(errp, "af-packet: tx-batch must be between 1 and %d "
                   "frames", AF_PACKET_TX_BATCH);
        return -1;
    }

    if (peer && (queues > 1 || opts->fds)) {
        error_setg(errp, "af-packet: multiple queues cannot be used with "
                   "hubs (-net); use -netdev");
        return -1;
    }
    if (opts->helper) {
        if (opts->fd || opts->fds || !opts->ifname) {
            error_setg(errp, "af-packet: helper needs ifname, and neither "
                       "fd nor fds");
            return -1;
        }
        if (!af_packet_resolve_if(&c, -1, errp)) {
            return -1;
        }
        fds = af_packet_run_helper(opts->helper, c.ifname, queues, errp);
        if (!fds) {
            return -1;
        }
        for (i = 0; i < queues; i++) {
            if (!af_packet_check_fd(fds[i], "a socket from the helper",
                                    errp)) {
                goto fail_fds;
            }
        }
    } else if (opts->fd || opts->fds) {
        fds = af_packet_parse_fds(opts, &queues, errp);
        if (!fds) {
            return -1;
        }
    }
    if (!af_packet_resolve_if(&c, fds ? fds[0] : -1, errp)) {
        goto fail_fds;
    }
    for (i = 0; fds && i < queues; i++) {
        if (!af_packet_check_bound(&c, fds[i], errp)) {
            goto fail_fds;
        }
    }
    c.queues = queues;
    if (!c.tpacket_version) {
        /*
         * A ring of frames, each handed over as it arrives, so that
         * request/response waits for no block timer (libpcap's immediate
         * mode chooses TPACKET_V2 for the same reason), if the frames fit
         * AF_PACKET_RX_FRAME; blocks for jumbo frames, for vnet-hdr's
         * 64 KiB GSO frames, and when a block timeout is asked for.
         */
        c.tpacket_version =
            c.ring_size && !opts->has_rx_retire_timeout &&
            af_packet_v2_frame_size(c.mtu, opts->has_vnet_hdr &&
                                    opts->vnet_hdr) <= AF_PACKET_RX_FRAME
            ? 2 : 3;
    }
    if (c.tpacket_version == 2 && !opts->has_rx_ring_size) {
        c.ring_size = AF_PACKET_RX_RING_DEFAULT_V2;
    }

    for (i = 0; i < queues; i++) {
        nc = qemu_new_net_client(&net_af_packet_info, peer, "af-packet",
                                 name);
        if (!nc0) {
            /* Deleting it deletes every queue of this netdev. */
            nc0 = nc;
        }
        s = af_packet_state(nc);
        s->fd = -1;
        s->ctx = iohandler_get_aio_context();
        s->mtu = c.mtu;
        s->vnet_hdr = opts->has_vnet_hdr && opts->vnet_hdr;
        s->spoofchk = !opts->has_spoofchk || opts->spoofchk;
        s->trust = opts->has_trust && opts->trust;
        s->frames = c.tpacket_version == 2;
        s->tx_batch = opts->has_tx_batch ? opts->tx_batch : 1;
        if (fds) {
            s->fd = fds[i];
            fds[i] = -1;
        } else {
            s->fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
            if (s->fd < 0) {
                error_setg_errno(errp, errno, "af-packet: cannot open an "
                                 "AF_PACKET socket (QEMU needs CAP_NET_RAW, "
                                 "or pass one with fd=)");
                goto fail;
            }
        }
        if (!qemu_set_blocking(s->fd, false, errp) ||
            !af_packet_setup_queue(s, &c, i, errp)) {
            goto fail;
        }
        qemu_set_info_str(nc, "ifname=%s,queue=%" PRIi64 ",rx-ring-size=%"
                          PRIu64 "%s,vnet-hdr=%s", c.ifname, i, c.ring_size,
                          !c.ring_size ? "" : s->frames ? ",tpacket-version=2"
                                                        : ",tpacket-version=3",
                          s->vnet_hdr ? "on" : "off");
        af_packet_poll(nc, true);
    }

    s = af_packet_state(nc0);
    s->link = af_packet_link_new(s, c.ifindex, c.ifname, errp);
    if (!s->link) {
        goto fail;
    }
    net_stats_register();
    return 0;

fail:
    if (nc0) {
        qemu_del_net_client(nc0);
    }
fail_fds:
    if (fds) {
        for (i = 0; i < queues; i++) {
            if (fds[i] >= 0) {
                close(fds[i]);
            }
        }
    }
    return -1;
}
