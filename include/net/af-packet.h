/*
 * AF_PACKET network backend: what the rest of QEMU may ask of it.
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef NET_AF_PACKET_H
#define NET_AF_PACKET_H

#include "net/net.h"

typedef struct AFPacketStats {
    uint64_t rx_packets;    /* frames handed to the peer */
    uint64_t rx_bytes;
    uint64_t rx_dropped;    /* dropped by the kernel: ring full */
    uint64_t rx_ring_full;  /* times the ring filled up (tp_freeze_q_cnt) */
    uint64_t rx_truncated;  /* frames larger than a ring block */
    uint64_t rx_oversize;   /* frames above the MTU, or GSO the guest refused */
    uint64_t rx_peer_full;  /* times the peer could not take more */
    uint64_t rx_link_down;  /* frames read while the peer's link was down */
    uint64_t rx_runt;       /* frames shorter than an Ethernet header */
    uint64_t rx_bad_ring;   /* ring frames or blocks with bad headers */
    uint64_t rx_filtered;   /* unicast for another MAC (trust=off) */
    uint64_t tx_packets;
    uint64_t tx_bytes;
    uint64_t tx_errors;     /* frames the kernel refused, or malformed */
    uint64_t tx_busy;       /* times the socket could not take more */
    uint64_t tx_spoofed;    /* guest frames from another MAC (spoofchk=on) */
    uint64_t tx_calls;      /* system calls that sent frames */
} AFPacketStats;

/* Context: BQL held */
void af_packet_get_stats(NetClientState *nc, AFPacketStats *stats);

#endif
