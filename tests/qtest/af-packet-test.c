/*
 * QTest testcases for the af-packet network backend
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

/*
 * Each test runs in a network namespace of its own, made with
 * unshare(CLONE_NEWNET) before QEMU starts (QEMU inherits it), that holds
 * a veth pair: -netdev af-packet is attached to IF_QEMU, and the test
 * injects and captures frames on IF_PEER with a packet socket of its own.
 * Nothing leaves the namespace.  When the test is over, QEMU quits, the
 * pair is deleted and the test process goes back to the namespace it came
 * from, so that the namespace disappears and the tests that follow are
 * not affected.
 */

#include "qemu/osdep.h"
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/mman.h>
#include "libqtest-single.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/cutils.h"
#include "qemu/module.h"
#include "qemu/units.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "qobject/qlist.h"
#include "standard-headers/linux/virtio_config.h"
#include "standard-headers/linux/virtio_net.h"
#include "libqos/libqos-pc.h"
#include "libqos/qgraph.h"
#include "libqos/virtio-net.h"
#include "libqos/virtio-pci.h"
#include "netns-util.h"

#define IF_QEMU         "npq0"      /* QEMU's leg of the veth pair */
#define IF_PEER         "npq1"      /* the test's leg */
#define TEST_ETHERTYPE  0x88b5      /* IEEE 802 local experimental */
#define MAX_FRAME       1514
#define BUF_SIZE        2048        /* one guest buffer, header and frame */
#define TIMEOUT_US      (10 * G_USEC_PER_SEC)
#define LINK_TIMEOUT_US (5 * G_USEC_PER_SEC)

#define RX_FRAMES       64
#define TX_FRAMES       64
#define PROMISC_FRAMES  32
#define BURST_FRAMES    2000
#define BURST_FIRST     128         /* buffers posted first after a burst */
#define STATS_FRAMES    16
#define RING_SIZE       (1024 * 1024)   /* the ring the bad-ring tests map */
#define RING_BLOCK      (256 * 1024)    /* its blocks (TPACKET_V3) */
#define RING_FRAME      2048            /* its frames (TPACKET_V2, MTU 1500) */
#define RING_TIMEOUT_MS 100             /* rx-retire-timeout there */
#define FLOW_FRAMES     64          /* one flow each, in mq-steer */
#define MQ_SLOT         4           /* PCI slot of mq-steer's device */
#define FLOW_HDRS       (ETH_HLEN + 20 + 8)     /* Ethernet, IPv4, UDP */

/* Offset of the status field in struct virtio_net_config */
#define VIRTIO_NET_CONFIG_STATUS 6

static const uint8_t peer_mac[ETH_ALEN] = { 0x02, 0, 0, 0, 0, 0x01 };
static const uint8_t other_mac[ETH_ALEN] = { 0x02, 0, 0, 0, 0, 0x99 };
static const uint8_t bcast_mac[ETH_ALEN] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff
};

typedef struct AFPacketTest {
    int orig_netns;         /* namespace to go back to, or -1 */
    char *skip;             /* why the test cannot run, or NULL */
    int sock;               /* packet socket on IF_PEER, or -1 */
    int ring_fd;            /* the socket passed to QEMU with fd=, or -1 */
    QTestState *qts;
    QVirtioNet *net;
    QGuestAllocator *alloc;
    size_t hdr_len;         /* virtio-net header in front of each frame */
    uint8_t mac[ETH_ALEN];  /* the guest's */
    uint64_t rx_bufs;       /* one BUF_SIZE buffer per receive descriptor */
    unsigned int rx_posted; /* receive buffers not used yet */
} AFPacketTest;

/* ---- host side: namespace, veth pair, packet socket ---- */

/*
 * How many users made @ifname promiscuous.  SIOCGIFFLAGS does not report
 * promiscuity that packet sockets asked for, and /sys/class/net shows the
 * namespace sysfs was mounted in, so ask ip(8), which reads it from
 * rtnetlink (IFLA_PROMISCUITY).
 */
static int promiscuity(const char *ifname)
{
    g_autofree char *cmd = g_strdup_printf("ip -d link show dev %s", ifname);
    g_autofree char *out = NULL;
    const char *p;
    int status;

    g_assert_true(g_spawn_command_line_sync(cmd, &out, NULL, &status, NULL));
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    p = strstr(out, " promiscuity ");
    g_assert_nonnull(p);
    return atoi(p + strlen(" promiscuity "));
}

/*
 * Move to a new network namespace holding the veth pair.  Returns why the
 * test cannot run, or NULL.
 */
static char *netns_enter(AFPacketTest *t)
{
    char *why;

    if (geteuid() != 0) {
        return g_strdup("af-packet tests need root: they create a network "
                        "namespace and a veth pair");
    }
    why = netns_new(&t->orig_netns, "af-packet");
    if (why) {
        return why;
    }
    if (!netns_add_veth(IF_QEMU, IF_PEER)) {
        netns_leave(&t->orig_netns);
        return g_strdup("cannot create a veth pair with ip(8)");
    }
    return NULL;
}

/* ---- frames ---- */

/* Frame number @seq, of @len bytes, with a payload that depends on both. */
static void make_frame(uint8_t *buf, size_t len, const uint8_t *dst,
                       const uint8_t *src, uint32_t seq)
{
    size_t i;

    memcpy(buf, dst, ETH_ALEN);
    memcpy(buf + ETH_ALEN, src, ETH_ALEN);
    stw_be_p(buf + 2 * ETH_ALEN, TEST_ETHERTYPE);
    stl_be_p(buf + ETH_HLEN, seq);
    for (i = ETH_HLEN + 4; i < len; i++) {
        buf[i] = seq * 31 + i;
    }
}

/*
 * Taking IF_PEER down leaves ENETDOWN pending on the socket, which the
 * next send() would return: clear it.
 */
static void peer_clear_error(AFPacketTest *t)
{
    int err;
    socklen_t len = sizeof(err);

    g_assert_cmpint(getsockopt(t->sock, SOL_SOCKET, SO_ERROR, &err, &len),
                    ==, 0);
}

/* Send frame @seq from IF_PEER towards QEMU; returns its length. */
static size_t inject(AFPacketTest *t, const uint8_t *dst, uint32_t seq,
                     size_t len)
{
    uint8_t buf[MAX_FRAME];

    make_frame(buf, len, dst, peer_mac, seq);
    g_assert_cmpint(send(t->sock, buf, len, 0), ==, len);
    return len;
}

/* Wait for frame @seq, sent by the guest from @src, on IF_PEER. */
static void peer_expect_from(AFPacketTest *t, const uint8_t *src,
                             uint32_t seq, size_t len)
{
    gint64 deadline = g_get_monotonic_time() + TIMEOUT_US;
    uint8_t want[MAX_FRAME], got[BUF_SIZE];
    struct pollfd pfd = { .fd = t->sock, .events = POLLIN };
    ssize_t n;

    make_frame(want, len, peer_mac, src, seq);
    for (;;) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        if (poll(&pfd, 1, 100) <= 0) {
            continue;
        }
        n = recv(t->sock, got, sizeof(got), MSG_DONTWAIT | MSG_TRUNC);
        if (n < ETH_HLEN + 4 ||
            lduw_be_p(got + 2 * ETH_ALEN) != TEST_ETHERTYPE) {
            continue;
        }
        g_assert_cmpuint(ldl_be_p(got + ETH_HLEN), ==, seq);
        g_assert_cmpint(n, ==, len);
        g_assert_cmpmem(got, len, want, len);
        return;
    }
}

static void peer_expect(AFPacketTest *t, uint32_t seq, size_t len)
{
    peer_expect_from(t, t->mac, seq, len);
}

/* No test frame from the guest must reach IF_PEER for a while. */
static void peer_expect_none(AFPacketTest *t)
{
    gint64 deadline = g_get_monotonic_time() + 200 * 1000;
    struct pollfd pfd = { .fd = t->sock, .events = POLLIN };
    uint8_t got[BUF_SIZE];
    ssize_t n;

    while (g_get_monotonic_time() < deadline) {
        if (poll(&pfd, 1, 10) <= 0) {
            continue;
        }
        n = recv(t->sock, got, sizeof(got), MSG_DONTWAIT | MSG_TRUNC);
        g_assert_false(n >= ETH_HLEN + 4 &&
                       lduw_be_p(got + 2 * ETH_ALEN) == TEST_ETHERTYPE);
    }
}

/* ---- guest side: virtqueues through libqos ---- */

static AFPacketTest *test_start(void *obj, void *data,
                                QGuestAllocator *alloc)
{
    AFPacketTest *t = data;
    QVirtioDevice *dev;
    int i;

    if (t->skip) {
        g_test_skip(t->skip);
        return NULL;
    }
    t->qts = global_qtest;
    t->net = obj;
    t->alloc = alloc;
    dev = t->net->vdev;
    if (dev->features & ((1ull << VIRTIO_NET_F_MRG_RXBUF) |
                         (1ull << VIRTIO_F_VERSION_1))) {
        t->hdr_len = sizeof(struct virtio_net_hdr_mrg_rxbuf);
    } else {
        t->hdr_len = sizeof(struct virtio_net_hdr);
    }
    g_assert_true(dev->features & (1ull << VIRTIO_NET_F_MAC));
    for (i = 0; i < ETH_ALEN; i++) {
        t->mac[i] = qvirtio_config_readb(dev, i);
    }
    t->rx_bufs = guest_alloc(alloc, t->net->queues[0]->size * BUF_SIZE);
    t->sock = netns_peer_socket(IF_PEER);
    return t;
}

static void test_end(AFPacketTest *t)
{
    guest_free(t->alloc, t->rx_bufs);
}

/* Make @n more receive buffers available to the device. */
static void rx_post(AFPacketTest *t, unsigned int n)
{
    QVirtQueue *vq = t->net->queues[0];
    uint32_t head;

    if (t->rx_posted == 0) {
        /* Every descriptor came back: hand them out from the start. */
        vq->free_head = 0;
        vq->num_free = vq->size;
    }
    g_assert_cmpuint(vq->free_head + n, <=, vq->size);
    while (n--) {
        head = qvirtqueue_add(t->qts, vq,
                              t->rx_bufs + (uint64_t)vq->free_head * BUF_SIZE,
                              BUF_SIZE, true, false);
        qvirtqueue_kick(t->qts, t->net->vdev, vq, head);
        t->rx_posted++;
    }
}

static void wait_used(AFPacketTest *t, QVirtQueue *vq, uint32_t *desc,
                      uint32_t *len)
{
    gint64 deadline = g_get_monotonic_time() + TIMEOUT_US;

    while (!qvirtqueue_get_buf(t->qts, vq, desc, len)) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(100);
    }
}

/* The next frame in the guest's receive queue must be @seq. */
static void rx_expect(AFPacketTest *t, const uint8_t *dst, uint32_t seq,
                      size_t len)
{
    uint8_t want[MAX_FRAME], got[MAX_FRAME];
    uint32_t desc, used;

    wait_used(t, t->net->queues[0], &desc, &used);
    t->rx_posted--;
    g_assert_cmpuint(used, >=, t->hdr_len + ETH_HLEN + 4);
    g_assert_cmpuint(used, <=, t->hdr_len + MAX_FRAME);
    qtest_memread(t->qts, t->rx_bufs + (uint64_t)desc * BUF_SIZE + t->hdr_len,
                  got, used - t->hdr_len);
    g_assert_cmpuint(ldl_be_p(got + ETH_HLEN), ==, seq);
    make_frame(want, len, dst, peer_mac, seq);
    g_assert_cmpmem(got, used - t->hdr_len, want, len);
}

/* Nothing more must arrive in the guest's receive queue for a while. */
static void rx_expect_none(AFPacketTest *t)
{
    gint64 deadline = g_get_monotonic_time() + 200 * 1000;

    while (g_get_monotonic_time() < deadline) {
        g_assert_false(qvirtqueue_get_buf(t->qts, t->net->queues[0],
                                          NULL, NULL));
        g_usleep(1000);
    }
}

/* The guest sends frames @first..@first + @n - 1 from @src in one go. */
static size_t tx_frames_from(AFPacketTest *t, const uint8_t *src,
                             uint32_t first, unsigned int n)
{
    QVirtQueue *vq = t->net->queues[1];
    uint64_t bufs = guest_alloc(t->alloc, n * BUF_SIZE);
    uint8_t buf[BUF_SIZE] = { 0 };
    uint32_t heads[TX_FRAMES], desc;
    size_t len, bytes = 0;
    unsigned int i;

    g_assert_cmpuint(n, <=, TX_FRAMES);
    for (i = 0; i < n; i++) {
        len = netns_frame_len(first + i);
        /* A zeroed virtio-net header: no offloads. */
        memset(buf, 0, t->hdr_len);
        make_frame(buf + t->hdr_len, len, peer_mac, src, first + i);
        qtest_memwrite(t->qts, bufs + i * BUF_SIZE, buf, t->hdr_len + len);
        heads[i] = qvirtqueue_add(t->qts, vq, bufs + i * BUF_SIZE,
                                  t->hdr_len + len, false, false);
        qvirtqueue_kick(t->qts, t->net->vdev, vq, heads[i]);
        bytes += len;
    }
    for (i = 0; i < n; i++) {
        wait_used(t, vq, &desc, NULL);
        g_assert_cmpuint(desc, ==, heads[i]);
    }
    guest_free(t->alloc, bufs);
    return bytes;
}

static size_t tx_frames(AFPacketTest *t, uint32_t first, unsigned int n)
{
    return tx_frames_from(t, t->mac, first, n);
}

static bool link_is_up(AFPacketTest *t)
{
    return qvirtio_config_readw(t->net->vdev, VIRTIO_NET_CONFIG_STATUS) &
           VIRTIO_NET_S_LINK_UP;
}

/*
 * Link changes come from the netlink socket in QEMU's main loop: every
 * qtest command gives it a chance to run.
 */
static void wait_link(AFPacketTest *t, bool up)
{
    gint64 deadline = g_get_monotonic_time() + LINK_TIMEOUT_US;

    while (link_is_up(t) != up) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(10 * 1000);
    }
}

/* ---- QMP ---- */

/* Counters of queue 0 of netdev @id, by name. */
static QDict *query_stats(QTestState *qts, const char *id)
{
    QDict *rsp, *stats = qdict_new();
    QListEntry *e, *f;
    int found = 0;

    rsp = qtest_qmp(qts, "{ 'execute': 'query-stats', 'arguments': {"
                    " 'target': 'netdev',"
                    " 'providers': [ { 'provider': 'net' } ] } }");
    g_assert_false(qdict_haskey(rsp, "error"));
    QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "return"), e) {
        QDict *res = qobject_to(QDict, qlist_entry_obj(e));

        g_assert_cmpstr(qdict_get_str(res, "provider"), ==, "net");
        if (g_strcmp0(qdict_get_try_str(res, "netdev"), id)) {
            continue;
        }
        found++;
        g_assert_cmpint(qdict_get_int(res, "queue"), ==, 0);
        QLIST_FOREACH_ENTRY(qdict_get_qlist(res, "stats"), f) {
            QDict *st = qobject_to(QDict, qlist_entry_obj(f));

            qdict_put_int(stats, qdict_get_str(st, "name"),
                          qdict_get_int(st, "value"));
        }
    }
    g_assert_cmpint(found, ==, 1);
    qobject_unref(rsp);
    return stats;
}

static int64_t get_stat(AFPacketTest *t, const char *name)
{
    QDict *stats = query_stats(t->qts, "hs0");
    int64_t val = qdict_get_int(stats, name);

    qobject_unref(stats);
    return val;
}

/* Wait until counter @name of hs0 reaches @val; returns its value. */
static int64_t wait_stat(AFPacketTest *t, const char *name, int64_t val)
{
    gint64 deadline = g_get_monotonic_time() + TIMEOUT_US;
    int64_t cur;

    while ((cur = get_stat(t, name)) < val) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(1000);
    }
    return cur;
}

/* Counter @name on the "stats:" line of "info network" output @info. */
static int64_t info_counter(const char *info, const char *name)
{
    const char *line = strstr(info, "stats: ");

    g_assert_nonnull(line);
    return netns_info_counter(line, name);
}

/* ---- tests on a virtio-net device attached to -netdev af-packet ---- */

/* Frames from the interface arrive in guest memory intact and in order. */
static void test_rx(void *obj, void *data, QGuestAllocator *alloc)
{
    AFPacketTest *t = test_start(obj, data, alloc);
    uint32_t i;

    if (!t) {
        return;
    }
    rx_post(t, RX_FRAMES);
    for (i = 0; i < RX_FRAMES; i++) {
        inject(t, t->mac, i, netns_frame_len(i));
    }
    for (i = 0; i < RX_FRAMES; i++) {
        rx_expect(t, t->mac, i, netns_frame_len(i));
    }
    test_end(t);
}

/* Frames the guest sends leave through the interface unchanged. */
static void test_tx(void *obj, void *data, QGuestAllocator *alloc)
{
    AFPacketTest *t = test_start(obj, data, alloc);
    uint32_t i;

    if (!t) {
        return;
    }
    tx_frames(t, 0, TX_FRAMES);
    for (i = 0; i < TX_FRAMES; i++) {
        peer_expect(t, i, netns_frame_len(i));
    }
    test_end(t);
}

/*
 * A second, promiscuous backend on the same interface (with no NIC, so
 * netdev_del cleans it up at once) adds one membership and takes it back.
 */
static void check_second_backend(AFPacketTest *t, int base)
{
    qtest_qmp_assert_success(t->qts, "{ 'execute': 'netdev_add',"
                             " 'arguments': { 'type': 'af-packet',"
                             " 'id': 'hs1', 'ifname': '" IF_QEMU "' } }");
    g_assert_cmpint(promiscuity(IF_QEMU), ==, base + 1);
    qtest_qmp_assert_success(t->qts, "{ 'execute': 'netdev_del',"
                             " 'arguments': { 'id': 'hs1' } }");
    g_assert_cmpint(promiscuity(IF_QEMU), ==, base);
}

/*
 * promisc=on (the default): the interface is promiscuous while the
 * backend exists, and frames for other MAC addresses reach the backend.
 */
static void test_promisc(void *obj, void *data, QGuestAllocator *alloc)
{
    AFPacketTest *t = test_start(obj, data, alloc);
    uint32_t i;

    if (!t) {
        return;
    }
    g_assert_cmpint(promiscuity(IF_QEMU), ==, 1);
    /*
     * The interface is promiscuous, and so is the device (the driver never
     * turned it off), but with trust=off frames for another MAC are
     * filtered and counted by the backend; broadcast still flows.
     */
    rx_post(t, PROMISC_FRAMES + 2);
    for (i = 0; i < PROMISC_FRAMES; i++) {
        inject(t, other_mac, i, netns_frame_len(i));
    }
    g_assert_cmpint(wait_stat(t, "rx-filtered", PROMISC_FRAMES), ==,
                    PROMISC_FRAMES);
    inject(t, bcast_mac, PROMISC_FRAMES, ETH_ZLEN);
    rx_expect(t, bcast_mac, PROMISC_FRAMES, ETH_ZLEN);
    inject(t, t->mac, PROMISC_FRAMES + 1, ETH_ZLEN);
    rx_expect(t, t->mac, PROMISC_FRAMES + 1, ETH_ZLEN);
    rx_expect_none(t);
    g_assert_cmpint(get_stat(t, "rx-packets"), ==, 2);
    g_assert_cmpint(get_stat(t, "rx-dropped"), ==, 0);

    /* spoofchk=on: a frame from another MAC never leaves, and counts. */
    tx_frames_from(t, other_mac, 0, 1);
    peer_expect_none(t);
    g_assert_cmpint(get_stat(t, "tx-spoofed"), ==, 1);
    tx_frames(t, 1, 1);
    peer_expect(t, 1, netns_frame_len(1));
    g_assert_cmpint(get_stat(t, "tx-packets"), ==, 1);

    /*
     * Each backend holds one promiscuous membership, dropped when it goes
     * (hs0's goes when QEMU quits: see af_packet_test_cleanup()).
     */
    check_second_backend(t, 1);
    test_end(t);
}

/*
 * trust=on, spoofchk=off: the guest gets frames for other MACs when its
 * device is promiscuous, and may send from any MAC.
 */
static void test_trusted(void *obj, void *data, QGuestAllocator *alloc)
{
    AFPacketTest *t = test_start(obj, data, alloc);

    if (!t) {
        return;
    }
    rx_post(t, 1);
    inject(t, other_mac, 0, netns_frame_len(0));
    rx_expect(t, other_mac, 0, netns_frame_len(0));
    g_assert_cmpint(get_stat(t, "rx-filtered"), ==, 0);
    tx_frames_from(t, other_mac, 1, 1);
    peer_expect_from(t, other_mac, 1, netns_frame_len(1));
    g_assert_cmpint(get_stat(t, "tx-spoofed"), ==, 0);
    test_end(t);
}

/* promisc=off: the interface never becomes promiscuous. */
static void test_promisc_off(void *obj, void *data, QGuestAllocator *alloc)
{
    AFPacketTest *t = test_start(obj, data, alloc);

    if (!t) {
        return;
    }
    g_assert_cmpint(promiscuity(IF_QEMU), ==, 0);
    /* Frames for the guest's own address still flow. */
    rx_post(t, 1);
    inject(t, t->mac, 0, netns_frame_len(0));
    rx_expect(t, t->mac, 0, netns_frame_len(0));
    g_assert_cmpint(promiscuity(IF_QEMU), ==, 0);

    check_second_backend(t, 0);
    test_end(t);
}

/*
 * A burst while the guest has no receive buffers waits in the ring, and
 * is delivered, in order and without loss, as buffers come.
 */
static void test_burst(void *obj, void *data, QGuestAllocator *alloc)
{
    AFPacketTest *t = test_start(obj, data, alloc);
    unsigned int size, n;
    uint32_t i, seq;

    if (!t) {
        return;
    }
    for (i = 0; i < BURST_FRAMES; i++) {
        inject(t, t->mac, i, ETH_ZLEN + i % 64);
    }
    /* The device took one frame, could not deliver it, and said stop. */
    wait_stat(t, "rx-peer-full", 1);
    g_assert_cmpint(get_stat(t, "rx-packets"), <, BURST_FRAMES);

    /* As many frames as buffers, no more. */
    rx_post(t, BURST_FIRST);
    for (seq = 0; seq < BURST_FIRST; seq++) {
        rx_expect(t, t->mac, seq, ETH_ZLEN + seq % 64);
    }
    rx_expect_none(t);

    /* The rest, a queue's worth at a time. */
    size = t->net->queues[0]->size;
    while (seq < BURST_FRAMES) {
        n = MIN(size, BURST_FRAMES - seq);
        rx_post(t, n);
        for (i = 0; i < n; i++, seq++) {
            rx_expect(t, t->mac, seq, ETH_ZLEN + seq % 64);
        }
    }
    g_assert_cmpint(wait_stat(t, "rx-packets", BURST_FRAMES), ==,
                    BURST_FRAMES);
    g_assert_cmpint(get_stat(t, "rx-dropped"), ==, 0);
    g_assert_cmpint(get_stat(t, "rx-ring-full"), ==, 0);
    test_end(t);
}

/* query-stats and "info network" count what went through, exactly. */
static void test_stats(void *obj, void *data, QGuestAllocator *alloc)
{
    AFPacketTest *t = test_start(obj, data, alloc);
    size_t rx_bytes = 0, tx_bytes;
    g_autofree char *info = NULL;
    QDict *stats;
    uint32_t i;

    if (!t) {
        return;
    }
    rx_post(t, STATS_FRAMES);
    for (i = 0; i < STATS_FRAMES; i++) {
        rx_bytes += inject(t, t->mac, i, netns_frame_len(i));
    }
    for (i = 0; i < STATS_FRAMES; i++) {
        rx_expect(t, t->mac, i, netns_frame_len(i));
    }
    tx_bytes = tx_frames(t, 1000, STATS_FRAMES);
    for (i = 0; i < STATS_FRAMES; i++) {
        peer_expect(t, 1000 + i, netns_frame_len(1000 + i));
    }

    stats = query_stats(t->qts, "hs0");
    g_assert_cmpint(qdict_get_int(stats, "rx-packets"), ==, STATS_FRAMES);
    g_assert_cmpint(qdict_get_int(stats, "rx-bytes"), ==, rx_bytes);
    g_assert_cmpint(qdict_get_int(stats, "tx-packets"), ==, STATS_FRAMES);
    g_assert_cmpint(qdict_get_int(stats, "tx-bytes"), ==, tx_bytes);
    g_assert_cmpint(qdict_get_int(stats, "rx-dropped"), ==, 0);
    g_assert_cmpint(qdict_get_int(stats, "rx-truncated"), ==, 0);
    g_assert_cmpint(qdict_get_int(stats, "rx-oversize"), ==, 0);
    g_assert_cmpint(qdict_get_int(stats, "tx-errors"), ==, 0);
    /* Without a deferred section (no IOThread), a call per frame */
    g_assert_cmpint(qdict_get_int(stats, "tx-calls"), ==, STATS_FRAMES);
    qobject_unref(stats);

    info = qtest_hmp(t->qts, "info network");
    g_test_message("info network: %s", info);
    g_assert_nonnull(strstr(info, "type=af-packet"));
    g_assert_nonnull(strstr(info, "stats:"));
    g_assert_cmpint(info_counter(info, "rx-packets"), ==, STATS_FRAMES);
    g_assert_cmpint(info_counter(info, "tx-packets"), ==, STATS_FRAMES);
    g_assert_cmpint(info_counter(info, "rx-bytes"), ==, rx_bytes);
    g_assert_cmpint(info_counter(info, "tx-bytes"), ==, tx_bytes);
    test_end(t);
}

/* The guest's link follows the interface's carrier and admin state. */
static void test_link(void *obj, void *data, QGuestAllocator *alloc)
{
    AFPacketTest *t = test_start(obj, data, alloc);

    if (!t) {
        return;
    }
    g_assert_true(t->net->vdev->features & (1ull << VIRTIO_NET_F_STATUS));
    wait_link(t, true);

    /* The peer goes down: IF_QEMU loses its carrier. */
    g_assert_true(netns_run("ip link set " IF_PEER " down"));
    wait_link(t, false);
    g_assert_true(netns_run("ip link set " IF_PEER " up"));
    wait_link(t, true);

    /* IF_QEMU itself goes down and up. */
    g_assert_true(netns_run("ip link set " IF_QEMU " down"));
    wait_link(t, false);
    g_assert_true(netns_run("ip link set " IF_QEMU " up"));
    wait_link(t, true);

    /* Traffic flows again, both ways. */
    netns_wait_running(IF_PEER);
    peer_clear_error(t);
    rx_post(t, 1);
    inject(t, t->mac, 0, netns_frame_len(0));
    rx_expect(t, t->mac, 0, netns_frame_len(0));
    tx_frames(t, 1, 1);
    peer_expect(t, 1, netns_frame_len(1));
    test_end(t);
}

/* The name of the NIC, from "info network" */
static char *nic_name(AFPacketTest *t)
{
    g_autofree char *info = qtest_hmp(t->qts, "info network");
    const char *p = strstr(info, ": index=0,type=nic");
    const char *start;

    g_assert_nonnull(p);
    for (start = p; start > info && start[-1] != ' ' && start[-1] != '\n';
         start--) {
        continue;
    }
    return g_strndup(start, p - start);
}

/*
 * Frames that arrive while the guest's link is set down are dropped by
 * the net layer: they are counted as rx-link-down, not received.
 */
static void test_link_down(void *obj, void *data, QGuestAllocator *alloc)
{
    AFPacketTest *t = test_start(obj, data, alloc);
    g_autofree char *nic = NULL;
    gint64 deadline;
    int64_t read;
    uint32_t i;

    if (!t) {
        return;
    }
    nic = nic_name(t);
    rx_post(t, RX_FRAMES + 1);
    qtest_qmp_assert_success(t->qts, "{ 'execute': 'set_link', 'arguments':"
                             " { 'name': %s, 'up': false } }", nic);
    for (i = 0; i < RX_FRAMES; i++) {
        inject(t, t->mac, i, netns_frame_len(i));
    }
    deadline = g_get_monotonic_time() + TIMEOUT_US;
    for (;;) {
        QDict *stats = query_stats(t->qts, "hs0");

        read = qdict_get_int(stats, "rx-packets") +
               qdict_get_try_int(stats, "rx-link-down", 0);
        qobject_unref(stats);
        if (read >= RX_FRAMES) {
            break;
        }
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(1000);
    }
    g_assert_cmpint(get_stat(t, "rx-packets"), ==, 0);
    g_assert_cmpint(get_stat(t, "rx-link-down"), ==, RX_FRAMES);
    rx_expect_none(t);

    /* Link up: frames flow again, and count as received. */
    qtest_qmp_assert_success(t->qts, "{ 'execute': 'set_link', 'arguments':"
                             " { 'name': %s, 'up': true } }", nic);
    inject(t, t->mac, RX_FRAMES, ETH_ZLEN);
    rx_expect(t, t->mac, RX_FRAMES, ETH_ZLEN);
    g_assert_cmpint(get_stat(t, "rx-packets"), ==, 1);
    g_assert_cmpint(get_stat(t, "rx-link-down"), ==, RX_FRAMES);
    test_end(t);
}

/* ---- a ring that someone else writes too ---- */

/* Map the receive ring of the socket passed to QEMU. */
static uint8_t *ring_map(AFPacketTest *t)
{
    void *ring = mmap(NULL, RING_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                      t->ring_fd, 0);

    g_assert_true(ring != MAP_FAILED);
    return ring;
}

/* Wait until the kernel has handed over the slot whose status is @status */
static void ring_wait_user(volatile uint32_t *status)
{
    gint64 deadline = g_get_monotonic_time() + TIMEOUT_US;

    while (!(*status & TP_STATUS_USER)) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(1000);
    }
}

/*
 * The guest has no buffers: QEMU takes frame 0, cannot deliver it and
 * stops reading, and the frames that follow wait in the ring, handed
 * over to user space.
 */
static void ring_hold(AFPacketTest *t)
{
    inject(t, t->mac, 0, ETH_ZLEN);
    wait_stat(t, "rx-peer-full", 1);
}

/*
 * TPACKET_V2: frame headers that point outside their frame are refused
 * and counted, the frames around them are delivered, and the ring stays
 * in step with the kernel.
 */
static void test_bad_ring_v2(void *obj, void *data, QGuestAllocator *alloc)
{
    AFPacketTest *t = test_start(obj, data, alloc);
    struct tpacket2_hdr *h[6];
    uint8_t *ring;
    uint32_t i;

    if (!t) {
        return;
    }
    ring = ring_map(t);
    ring_hold(t);
    for (i = 1; i < 6; i++) {
        h[i] = (struct tpacket2_hdr *)(ring + i * RING_FRAME);
        inject(t, t->mac, i, ETH_ZLEN);
        ring_wait_user(&h[i]->tp_status);
    }
    h[2]->tp_mac = RING_FRAME + 16;             /* past the frame */
    h[3]->tp_snaplen = RING_FRAME;              /* runs past the frame */
    h[4]->tp_mac = 4;                           /* inside the header */

    rx_post(t, 4);
    rx_expect(t, t->mac, 0, ETH_ZLEN);
    rx_expect(t, t->mac, 1, ETH_ZLEN);
    rx_expect(t, t->mac, 5, ETH_ZLEN);
    rx_expect_none(t);
    g_assert_cmpint(get_stat(t, "rx-bad-ring"), ==, 3);
    inject(t, t->mac, 6, ETH_ZLEN);
    rx_expect(t, t->mac, 6, ETH_ZLEN);
    g_assert_cmpint(get_stat(t, "rx-packets"), ==, 4);
    munmap(ring, RING_SIZE);
    test_end(t);
}

/*
 * TPACKET_V3: a block whose first packet lies outside it is skipped, a
 * packet whose link to the next is bad ends its block, both counted; the
 * frames of good blocks are delivered.
 */
static void test_bad_ring_v3(void *obj, void *data, QGuestAllocator *alloc)
{
    AFPacketTest *t = test_start(obj, data, alloc);
    struct tpacket_block_desc *b[4];
    struct tpacket3_hdr *pkt;
    uint8_t *ring;
    uint32_t i;

    if (!t) {
        return;
    }
    ring = ring_map(t);
    for (i = 0; i < 4; i++) {
        b[i] = (struct tpacket_block_desc *)(ring + i * RING_BLOCK);
    }
    /* Block 0: frame 0; 1: frame 1; 2: frames 2 and 3; 3: frame 4 */
    ring_hold(t);
    inject(t, t->mac, 1, ETH_ZLEN);
    ring_wait_user(&b[1]->hdr.bh1.block_status);
    inject(t, t->mac, 2, ETH_ZLEN);
    inject(t, t->mac, 3, ETH_ZLEN);
    ring_wait_user(&b[2]->hdr.bh1.block_status);
    g_assert_cmpuint(b[2]->hdr.bh1.num_pkts, ==, 2);
    inject(t, t->mac, 4, ETH_ZLEN);
    ring_wait_user(&b[3]->hdr.bh1.block_status);

    b[1]->hdr.bh1.offset_to_first_pkt = 0x7ffffff0;
    pkt = (struct tpacket3_hdr *)((uint8_t *)b[2] +
                                  b[2]->hdr.bh1.offset_to_first_pkt);
    pkt->tp_next_offset = 0;

    rx_post(t, 4);
    rx_expect(t, t->mac, 0, ETH_ZLEN);
    rx_expect(t, t->mac, 2, ETH_ZLEN);
    rx_expect(t, t->mac, 4, ETH_ZLEN);
    rx_expect_none(t);
    g_assert_cmpint(get_stat(t, "rx-bad-ring"), ==, 2);
    inject(t, t->mac, 5, ETH_ZLEN);
    rx_expect(t, t->mac, 5, ETH_ZLEN);
    g_assert_cmpint(get_stat(t, "rx-packets"), ==, 4);
    munmap(ring, RING_SIZE);
    test_end(t);
}

/*
 * The interface pushes back (a token bucket that drops what it cannot
 * queue: ENOBUFS) while the backend runs in an IOThread that polls: the
 * frames the backend queued leave as soon as the socket takes them,
 * without waiting for polling to end.
 */
static void test_tx_pushback(void *obj, void *data, QGuestAllocator *alloc)
{
    AFPacketTest *t = test_start(obj, data, alloc);
    uint32_t i, round;

    if (!t) {
        return;
    }
    g_assert_true(netns_run("tc qdisc add dev " IF_QEMU " root tbf rate "
                            "1mbit burst 4000 limit 4000"));
    for (round = 0; round < 4; round++) {
        tx_frames(t, round * TX_FRAMES, TX_FRAMES);
    }
    for (i = 0; i < 4 * TX_FRAMES; i++) {
        peer_expect(t, i, netns_frame_len(i));
    }
    g_assert_cmpint(wait_stat(t, "tx-packets", 4 * TX_FRAMES), ==,
                    4 * TX_FRAMES);
    g_assert_cmpint(get_stat(t, "tx-busy"), >, 0);
    test_end(t);
}

/* The interface disappears: QEMU goes on, with the link down. */
static void test_ifdel(void *obj, void *data, QGuestAllocator *alloc)
{
    AFPacketTest *t = test_start(obj, data, alloc);
    QDict *rsp, *stats;

    if (!t) {
        return;
    }
    wait_link(t, true);
    g_assert_true(netns_run("ip link del " IF_QEMU));
    wait_link(t, false);

    rsp = qtest_qmp(t->qts, "{ 'execute': 'query-status' }");
    g_assert_true(qdict_get_bool(qdict_get_qdict(rsp, "return"), "running"));
    qobject_unref(rsp);

    /* What the guest sends now is dropped, not stuck. */
    tx_frames(t, 0, 4);
    stats = query_stats(t->qts, "hs0");
    g_assert_cmpint(qdict_get_int(stats, "tx-packets"), ==, 0);
    qobject_unref(stats);

    /* The backend can still be deleted. */
    qtest_qmp_assert_success(t->qts, "{ 'execute': 'netdev_del',"
                             " 'arguments': { 'id': 'hs0' } }");
    rsp = qtest_qmp(t->qts, "{ 'execute': 'query-status' }");
    g_assert_true(qdict_get_bool(qdict_get_qdict(rsp, "return"), "running"));
    qobject_unref(rsp);
    test_end(t);
}

static void af_packet_test_cleanup(void *opaque)
{
    AFPacketTest *t = opaque;

    /* QEMU quits first, so that it does not see the interfaces go. */
    qtest_end();
    qos_invalidate_command_line();
    if (t->ring_fd >= 0) {
        /* The membership is the socket's, which the test holds too */
        close(t->ring_fd);
        t->ring_fd = -1;
    }
    if (t->orig_netns >= 0 && if_nametoindex(IF_QEMU)) {
        /* Quitting dropped the backend's promiscuous membership. */
        g_assert_cmpint(promiscuity(IF_QEMU), ==, 0);
    }
    netns_destroy(&t->orig_netns, &t->sock, IF_QEMU);
    g_free(t->skip);
    g_free(t);
}

static void *af_packet_test_setup(GString *cmd_line, void *arg)
{
    AFPacketTest *t = g_new0(AFPacketTest, 1);

    t->orig_netns = -1;
    t->sock = -1;
    t->ring_fd = -1;
    t->skip = netns_enter(t);
    if (t->skip) {
        /* QEMU must start all the same: give the NIC some backend. */
        g_string_append(cmd_line, " -netdev hubport,hubid=0,id=hs0 ");
    } else {
        g_string_append_printf(cmd_line, " -netdev af-packet,id=hs0,ifname="
                               IF_QEMU "%s ", arg ? (const char *)arg : "");
    }
    g_test_queue_destroy(af_packet_test_cleanup, t);
    return t;
}

/*
 * As af_packet_test_setup(), with a socket of the test's passed to QEMU
 * (inherited, as a manager would pass it), so that the test can map the
 * same receive ring: RING_SIZE bytes, options @arg.
 */
static void *af_packet_test_setup_ring(GString *cmd_line, void *arg)
{
    AFPacketTest *t = g_new0(AFPacketTest, 1);
    struct sockaddr_ll sll = {
        .sll_family = AF_PACKET,
        .sll_protocol = htons(ETH_P_ALL),
    };

    t->orig_netns = -1;
    t->sock = -1;
    t->ring_fd = -1;
    t->skip = netns_enter(t);
    if (t->skip) {
        g_string_append(cmd_line, " -netdev hubport,hubid=0,id=hs0 ");
    } else {
        /* Not close-on-exec: QEMU inherits it */
        t->ring_fd = socket(AF_PACKET, SOCK_RAW, 0);
        g_assert_cmpint(t->ring_fd, >=, 0);
        sll.sll_ifindex = if_nametoindex(IF_QEMU);
        g_assert_cmpint(bind(t->ring_fd, (struct sockaddr *)&sll,
                             sizeof(sll)), ==, 0);
        g_string_append_printf(cmd_line, " -netdev af-packet,id=hs0,fd=%d,"
                               "rx-ring-size=%d%s ", t->ring_fd, RING_SIZE,
                               (const char *)arg);
    }
    g_test_queue_destroy(af_packet_test_cleanup, t);
    return t;
}

/* ---- option errors, through netdev_add on a machine without devices ---- */

static unsigned int count_fds(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/fd", (int)pid);
    GDir *dir = g_dir_open(path, 0, NULL);
    unsigned int n = 0;

    g_assert_nonnull(dir);
    while (g_dir_read_name(dir)) {
        n++;
    }
    g_dir_close(dir);
    return n;
}

static void getfd(QTestState *qts, int fd, const char *name)
{
    QDict *rsp = qtest_qmp_fds(qts, &fd, 1, "{ 'execute': 'getfd',"
                               " 'arguments': { 'fdname': %s } }", name);

    g_assert_false(qdict_haskey(rsp, "error"));
    qobject_unref(rsp);
}

/* netdev_add with @json as arguments must fail with @msg. */
static void netdev_add_fails(QTestState *qts, const char *json,
                             const char *msg)
{
    QDict *rsp = qtest_qmp(qts, "{ 'execute': 'netdev_add',"
                           " 'arguments': %p }",
                           qobject_from_json(json, &error_abort));
    const char *desc;

    g_assert_true(qdict_haskey(rsp, "error"));
    desc = qdict_get_str(qdict_get_qdict(rsp, "error"), "desc");
    g_test_message("netdev_add %s: %s", json, desc);
    g_assert_nonnull(strstr(desc, msg));
    qobject_unref(rsp);
}

static void netdev_add_del(QTestState *qts, const char *json, const char *id)
{
    qtest_qmp_assert_success(qts, "{ 'execute': 'netdev_add',"
                             " 'arguments': %p }",
                             qobject_from_json(json, &error_abort));
    qtest_qmp_assert_success(qts, "{ 'execute': 'netdev_del',"
                             " 'arguments': { 'id': %s } }", id);
}

/*
 * The ring layout netdev_add @json gets, from "info network": 2, 3, or 0
 * for none; its size in @size.
 */
static int ring_version(QTestState *qts, const char *json, uint64_t *size)
{
    g_autofree char *info = NULL;
    const char *p;
    int v;

    qtest_qmp_assert_success(qts, "{ 'execute': 'netdev_add',"
                             " 'arguments': %p }",
                             qobject_from_json(json, &error_abort));
    info = qtest_hmp(qts, "info network");
    g_test_message("%s: %s", json, info);
    g_assert_nonnull(strstr(info, "ifname="));
    v = strstr(info, ",tpacket-version=2,") ? 2 :
        strstr(info, ",tpacket-version=3,") ? 3 : 0;
    p = strstr(info, ",rx-ring-size=");
    g_assert_nonnull(p);
    *size = g_ascii_strtoull(p + strlen(",rx-ring-size="), NULL, 10);
    qtest_qmp_assert_success(qts, "{ 'execute': 'netdev_del',"
                             " 'arguments': { 'id': 'r0' } }");
    return v;
}

/*
 * Frames handed over one by one (TPACKET_V2) unless a frame may not fit
 * 2 KiB (vnet-hdr's GSO frames, an MTU above 1956) or a block timeout is
 * set; what is asked for explicitly is kept.
 */
static void test_ring_defaults(void)
{
    AFPacketTest t = { .orig_netns = -1, .sock = -1 };
    QTestState *qts;
    uint64_t size;

    t.skip = netns_enter(&t);
    if (t.skip) {
        g_test_skip(t.skip);
        g_free(t.skip);
        return;
    }
    g_assert_true(netns_run("ip link add npj0 type veth peer name npj1"));
    qts = qtest_init("-M none");

#define RING(opts) \
    ring_version(qts, "{ 'type': 'af-packet', 'id': 'r0'," opts " }", &size)
    /* 16,384 frames of 2 KiB, or 16 MiB of blocks */
    g_assert_cmpint(RING("'ifname': '" IF_QEMU "'"), ==, 2);
    g_assert_cmpuint(size, ==, 32 * MiB);
    g_assert_cmpint(RING("'ifname': '" IF_QEMU "', 'vnet-hdr': true"), ==, 3);
    g_assert_cmpuint(size, ==, 16 * MiB);
    g_assert_cmpint(RING("'ifname': '" IF_QEMU "', 'rx-ring-size': 1048576"),
                    ==, 2);
    g_assert_cmpuint(size, ==, 1 * MiB);
    g_assert_cmpint(RING("'ifname': '" IF_QEMU "', 'vnet-hdr': false"), ==,
                    2);
    g_assert_cmpint(RING("'ifname': '" IF_QEMU "', 'rx-retire-timeout': 5"),
                    ==, 3);
    g_assert_cmpint(RING("'ifname': '" IF_QEMU "', 'rx-ring-size': 0"), ==,
                    0);
    g_assert_cmpint(RING("'ifname': '" IF_QEMU "', 'tpacket-version': 3"),
                    ==, 3);
    g_assert_cmpint(RING("'ifname': '" IF_QEMU "', 'tpacket-version': 2,"
                         " 'vnet-hdr': true"), ==, 2);
    g_assert_true(netns_run("ip link set npj0 mtu 1956"));
    g_assert_cmpint(RING("'ifname': 'npj0'"), ==, 2);
    g_assert_true(netns_run("ip link set npj0 mtu 1957"));
    g_assert_cmpint(RING("'ifname': 'npj0'"), ==, 3);
    g_assert_true(netns_run("ip link set npj0 mtu 9000"));
    g_assert_cmpint(RING("'ifname': 'npj0'"), ==, 3);
    g_assert_cmpint(RING("'ifname': 'npj0', 'tpacket-version': 2"), ==, 2);
#undef RING

    qtest_quit(qts);
    g_assert_true(netns_run("ip link del npj0"));
    netns_destroy(&t.orig_netns, &t.sock, IF_QEMU);
}

static void test_errors(void)
{
    AFPacketTest t = { .orig_netns = -1, .sock = -1 };
    struct sockaddr_ll sll = {
        .sll_family = AF_PACKET,
        .sll_protocol = htons(ETH_P_ALL),
    };
    g_autofree char *info = NULL;
    QTestState *qts;
    unsigned int fds;
    int sv[2], fd;

    t.skip = netns_enter(&t);
    if (t.skip) {
        g_test_skip(t.skip);
        g_free(t.skip);
        return;
    }
    qts = qtest_init("-M none");

    /* One that works: promiscuous while it exists. */
    qtest_qmp_assert_success(qts, "{ 'execute': 'netdev_add', 'arguments': {"
                             " 'type': 'af-packet', 'id': 'e0',"
                             " 'ifname': '" IF_QEMU "' } }");
    g_assert_cmpint(promiscuity(IF_QEMU), ==, 1);
    qtest_qmp_assert_success(qts, "{ 'execute': 'netdev_del',"
                             " 'arguments': { 'id': 'e0' } }");
    g_assert_cmpint(promiscuity(IF_QEMU), ==, 0);
    fds = count_fds(qtest_pid(qts));

    /*
     * All with the same id: a failure that left a client behind would
     * turn the next one into "Duplicate ID".
     */
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0' }",
                     "af-packet: ifname is required");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'ifname': 'nosuchif0' }",
                     "af-packet: no interface 'nosuchif0'");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'ifname': 'npq0-is-far-too-long' }",
                     "is too long");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'ifname': '" IF_QEMU "', 'rx-ring-size': 1000 }",
                     "a multiple of 256 KiB");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'ifname': '" IF_QEMU "', 'rx-retire-timeout': 0 }",
                     "af-packet: rx-retire-timeout must be between 1 and "
                     "1000");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'ifname': '" IF_QEMU "', 'tpacket-version': 1 }",
                     "af-packet: tpacket-version must be 2");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'ifname': '" IF_QEMU "', 'tpacket-version': 2,"
                     " 'rx-ring-size': 0 }",
                     "af-packet: tpacket-version=2 needs a ring");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'ifname': '" IF_QEMU "', 'tpacket-version': 2,"
                     " 'rx-retire-timeout': 5 }",
                     "af-packet: rx-retire-timeout applies to "
                     "tpacket-version=3 only");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'ifname': '" IF_QEMU "', 'queues': 0 }",
                     "af-packet: queues must be between 1 and");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'ifname': '" IF_QEMU "', 'tx-batch': 0 }",
                     "af-packet: tx-batch must be between 1 and 64");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'ifname': '" IF_QEMU "', 'tx-batch': 65 }",
                     "af-packet: tx-batch must be between 1 and 64");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'fd': 'a', 'fds': 'b' }",
                     "af-packet: fd and fds are mutually exclusive");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'fd': 'nosuchfd' }", "nosuchfd");

    /* Passed descriptors that are not raw packet sockets are closed. */
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
    getfd(qts, sv[0], "unixfd");
    close(sv[0]);
    close(sv[1]);
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'fd': 'unixfd' }",
                     "af-packet: unixfd is not an AF_PACKET socket");
    fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    g_assert_cmpint(fd, >=, 0);
    getfd(qts, fd, "dgramfd");
    close(fd);
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'fd': 'dgramfd' }",
                     "af-packet: dgramfd is not a SOCK_RAW packet socket");

    g_assert_cmpuint(count_fds(qtest_pid(qts)), ==, fds);
    g_assert_cmpint(promiscuity(IF_QEMU), ==, 0);

    /* The id is still free, and a passed packet socket works. */
    netdev_add_del(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                   " 'ifname': '" IF_QEMU "' }", "e0");
    fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    g_assert_cmpint(fd, >=, 0);
    sll.sll_ifindex = if_nametoindex(IF_QEMU);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&sll, sizeof(sll)), ==, 0);
    getfd(qts, fd, "pkfd");
    close(fd);
    qtest_qmp_assert_success(qts, "{ 'execute': 'netdev_add', 'arguments': {"
                             " 'type': 'af-packet', 'id': 'e0',"
                             " 'fd': 'pkfd' } }");
    info = qtest_hmp(qts, "info network");
    g_assert_nonnull(strstr(info, "ifname=" IF_QEMU));
    g_assert_cmpint(promiscuity(IF_QEMU), ==, 1);
    qtest_qmp_assert_success(qts, "{ 'execute': 'netdev_del',"
                             " 'arguments': { 'id': 'e0' } }");
    g_assert_cmpint(promiscuity(IF_QEMU), ==, 0);
    g_assert_cmpuint(count_fds(qtest_pid(qts)), ==, fds);

    qtest_quit(qts);
    netns_destroy(&t.orig_netns, &t.sock, IF_QEMU);
}

/*
 * Options a user or a management tool can get wrong, each refused with a
 * message that says what is wrong, before anything is allocated: QEMU
 * goes on, and nothing is left behind.
 */
static void test_bad_options(void)
{
    AFPacketTest t = { .orig_netns = -1, .sock = -1 };
    struct sockaddr_ll sll = {
        .sll_family = AF_PACKET,
        .sll_protocol = htons(ETH_P_ALL),
    };
    bool tun = access("/dev/net/tun", R_OK | W_OK) == 0;
    QTestState *qts;
    gint64 start;
    unsigned int fds;
    int fd;

    t.skip = netns_enter(&t);
    if (t.skip) {
        g_test_skip(t.skip);
        g_free(t.skip);
        return;
    }
    qts = qtest_init("-M none");
    fds = count_fds(qtest_pid(qts));

    /* Empty and malformed descriptor lists (a crash before) */
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0', 'fd': '' }",
                     "af-packet: invalid file descriptor list fd=''");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0', 'fd': ':' }",
                     "af-packet: invalid file descriptor list fd=':'");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0', 'fds': '' }",
                     "af-packet: invalid file descriptor list fds=''");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'fds': 'a::b' }",
                     "af-packet: invalid file descriptor list fds='a::b'");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0', 'fds': 'a:' }",
                     "af-packet: invalid file descriptor list fds='a:'");
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0', 'fds': ':a' }",
                     "af-packet: invalid file descriptor list fds=':a'");

    /* More queues than a fanout group holds: refused at once */
    start = g_get_monotonic_time();
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'ifname': '" IF_QEMU "', 'queues': 257 }",
                     "af-packet: queues must be between 1 and 256");
    g_assert_cmpint(g_get_monotonic_time() - start, <, G_USEC_PER_SEC);

    /* Interfaces that do not carry Ethernet frames */
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'ifname': 'lo' }",
                     "af-packet: lo is not an Ethernet interface");
    if (tun && netns_run("ip tuntap add dev npt0 mode tun")) {
        netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                         " 'ifname': 'npt0' }",
                         "af-packet: npt0 is not an Ethernet interface");
        g_assert_true(netns_run("ip link del npt0"));
    } else {
        g_test_message("no tun device: the layer-3 case is not tried");
    }

    /* A socket bound to one interface, and ifname naming another */
    fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    g_assert_cmpint(fd, >=, 0);
    sll.sll_ifindex = if_nametoindex(IF_PEER);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&sll, sizeof(sll)), ==, 0);
    getfd(qts, fd, "peerfd");
    close(fd);
    netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                     " 'fd': 'peerfd', 'ifname': '" IF_QEMU "' }",
                     "af-packet: a passed socket is bound to " IF_PEER
                     ", not to ifname=" IF_QEMU);

    /*
     * TPACKET_V2 frames for an MTU near INT_MAX (an ifb device allows
     * it): a division by zero before.
     */
    if (netns_run("ip link add npi0 type ifb") &&
        netns_run("ip link set npi0 mtu 2147483647")) {
        netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                         " 'ifname': 'npi0', 'tpacket-version': 2 }",
                         "af-packet: the MTU of npi0 (2147483647) needs "
                         "4294967296-byte TPACKET_V2 frames");
        netdev_add_fails(qts, "{ 'type': 'af-packet', 'id': 'e0',"
                         " 'ifname': 'npi0', 'tpacket-version': 2,"
                         " 'rx-ring-size': 1048576 }",
                         "more than rx-ring-size (1048576)");
        netns_run("ip link del npi0");
    } else {
        g_test_message("no ifb device: the huge MTU case is not tried");
    }

    g_assert_cmpuint(count_fds(qtest_pid(qts)), ==, fds);
    g_assert_cmpint(promiscuity(IF_QEMU), ==, 0);
    qtest_quit(qts);
    netns_destroy(&t.orig_netns, &t.sock, IF_QEMU);
}

/*
 * Fanout group ids come from the kernel: two multiqueue netdevs on the
 * same interface, and two whose ids used to collide (g_str_hash("xb") ==
 * g_str_hash("yA")) on two interfaces, all start, and so does one whose
 * id another program took first.
 */
static void test_fanout_ids(void)
{
    AFPacketTest t = { .orig_netns = -1, .sock = -1 };
    struct sockaddr_ll sll = {
        .sll_family = AF_PACKET,
        .sll_protocol = htons(ETH_P_ALL),
    };
    QTestState *qts;
    int fd, val, id;

    t.skip = netns_enter(&t);
    if (t.skip) {
        g_test_skip(t.skip);
        g_free(t.skip);
        return;
    }
    qts = qtest_init("-M none");
    g_assert_cmpuint(g_str_hash("qxb"), ==, g_str_hash("qyA"));

    /* Another program's group, with the id QEMU used to derive */
    id = (qtest_pid(qts) ^ g_str_hash("q2")) & 0xffff;
    fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    g_assert_cmpint(fd, >=, 0);
    sll.sll_ifindex = if_nametoindex(IF_PEER);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&sll, sizeof(sll)), ==, 0);
    val = id | (PACKET_FANOUT_LB << 16);
    g_assert_cmpint(setsockopt(fd, SOL_PACKET, PACKET_FANOUT, &val,
                               sizeof(val)), ==, 0);

    qtest_qmp_assert_success(qts, "{ 'execute': 'netdev_add', 'arguments': {"
                             " 'type': 'af-packet', 'id': 'q0',"
                             " 'ifname': '" IF_QEMU "', 'queues': 2,"
                             " 'rx-ring-size': 1048576 } }");
    qtest_qmp_assert_success(qts, "{ 'execute': 'netdev_add', 'arguments': {"
                             " 'type': 'af-packet', 'id': 'q1',"
                             " 'ifname': '" IF_QEMU "', 'queues': 2,"
                             " 'rx-ring-size': 1048576 } }");
    qtest_qmp_assert_success(qts, "{ 'execute': 'netdev_add', 'arguments': {"
                             " 'type': 'af-packet', 'id': 'qxb',"
                             " 'ifname': '" IF_QEMU "', 'queues': 2,"
                             " 'rx-ring-size': 1048576 } }");
    qtest_qmp_assert_success(qts, "{ 'execute': 'netdev_add', 'arguments': {"
                             " 'type': 'af-packet', 'id': 'qyA',"
                             " 'ifname': '" IF_PEER "', 'queues': 2,"
                             " 'rx-ring-size': 1048576 } }");
    qtest_qmp_assert_success(qts, "{ 'execute': 'netdev_add', 'arguments': {"
                             " 'type': 'af-packet', 'id': 'q2',"
                             " 'ifname': '" IF_PEER "', 'queues': 2,"
                             " 'rx-ring-size': 1048576 } }");

    close(fd);
    qtest_quit(qts);
    netns_destroy(&t.orig_netns, &t.sock, IF_QEMU);
}

/* ---- a multiqueue device on a machine of its own ---- */

typedef struct MQTest {
    AFPacketTest t;
    QOSState *qs;
    QVirtioPCIDevice *pdev;
    QVirtQueue *vqs[5];         /* RX 0, TX 0, RX 1, TX 1, control */
    uint64_t rx_bufs[2];
} MQTest;

/* UDP frame number @seq, in a flow (source address and port) of its own */
static size_t make_flow_frame(uint8_t *buf, const uint8_t *dst, uint32_t seq)
{
    uint8_t *ip = buf + ETH_HLEN, *udp = ip + 20;
    size_t len = ETH_ZLEN + 4, i;
    uint32_t sum = 0;

    memset(buf, 0, len);
    memcpy(buf, dst, ETH_ALEN);
    memcpy(buf + ETH_ALEN, peer_mac, ETH_ALEN);
    stw_be_p(buf + 2 * ETH_ALEN, ETH_P_IP);
    ip[0] = 0x45;
    stw_be_p(ip + 2, len - ETH_HLEN);
    ip[8] = 64;
    ip[9] = IPPROTO_UDP;
    stl_be_p(ip + 12, 0x0a010000 + seq);
    stl_be_p(ip + 16, 0x0a000002);
    for (i = 0; i < 20; i += 2) {
        sum += lduw_be_p(ip + i);
    }
    while (sum >> 16) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    stw_be_p(ip + 10, ~sum);
    stw_be_p(udp, 1024 + seq);
    stw_be_p(udp + 2, TEST_ETHERTYPE);
    stw_be_p(udp + 4, len - ETH_HLEN - 20);
    stl_be_p(buf + FLOW_HDRS, seq);
    return len;
}

/* Set @pairs queue pairs through the control queue. */
static void mq_set_pairs(MQTest *m, uint16_t pairs)
{
    QTestState *qts = m->t.qts;
    QVirtQueue *vq = m->vqs[4];
    uint8_t req[4] = { VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET };
    uint64_t addr = guest_alloc(m->t.alloc, sizeof(req) + 1);
    gint64 deadline = g_get_monotonic_time() + TIMEOUT_US;
    uint32_t head;

    stw_le_p(req + 2, pairs);
    qtest_memwrite(qts, addr, req, sizeof(req));
    qtest_writeb(qts, addr + sizeof(req), 0xff);
    head = qvirtqueue_add(qts, vq, addr, sizeof(req), false, true);
    qvirtqueue_add(qts, vq, addr + sizeof(req), 1, true, false);
    qvirtqueue_kick(qts, &m->pdev->vdev, vq, head);
    while (!qvirtqueue_get_buf(qts, vq, NULL, NULL)) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(100);
    }
    g_assert_cmpint(qtest_readb(qts, addr + sizeof(req)), ==, VIRTIO_NET_OK);
    guest_free(m->t.alloc, addr);
}

/*
 * Send FLOW_FRAMES frames, one flow each, numbered from @base, and take
 * them from both receive queues: every one must come, once.  Returns in
 * @count how many each pair got.
 */
static void mq_flows(MQTest *m, uint32_t base, unsigned int count[2])
{
    gint64 deadline = g_get_monotonic_time() + TIMEOUT_US;
    uint8_t buf[MAX_FRAME];
    bool seen[FLOW_FRAMES] = { false };
    unsigned int received = 0, p;
    uint32_t i, desc, len, seq;
    size_t n;

    count[0] = count[1] = 0;
    for (i = 0; i < FLOW_FRAMES; i++) {
        n = make_flow_frame(buf, m->t.mac, base + i);
        g_assert_cmpint(send(m->t.sock, buf, n, 0), ==, n);
    }
    while (received < FLOW_FRAMES) {
        if (g_get_monotonic_time() > deadline) {
            g_test_message("frames per queue pair: %u %u, %u missing",
                           count[0], count[1], FLOW_FRAMES - received);
            g_assert_not_reached();
        }
        for (p = 0; p < 2; p++) {
            if (!qvirtqueue_get_buf(m->t.qts, m->vqs[2 * p], &desc, &len)) {
                continue;
            }
            g_assert_cmpuint(len, >=, m->t.hdr_len + FLOW_HDRS + 4);
            qtest_memread(m->t.qts, m->rx_bufs[p] + (uint64_t)desc * BUF_SIZE +
                          m->t.hdr_len + FLOW_HDRS, buf, 4);
            seq = ldl_be_p(buf) - base;
            g_assert_cmpuint(seq, <, FLOW_FRAMES);
            g_assert_false(seen[seq]);
            seen[seq] = true;
            count[p]++;
            received++;
        }
        g_usleep(100);
    }
    g_test_message("frames per queue pair: %u %u", count[0], count[1]);
}

/*
 * queues=2 under a device with two queue pairs whose guest uses one (it
 * never asks for more, as with one vCPU): every flow comes to pair 0,
 * none waits in the socket of the disabled pair.  With both pairs, flows
 * spread again; with one, they come back to pair 0.
 */
static void test_mq_steer(void)
{
    MQTest m = { .t = { .orig_netns = -1, .sock = -1 } };
    QPCIAddress addr = { .devfn = QPCI_DEVFN(MQ_SLOT, 0) };
    QVirtioDevice *vdev;
    uint64_t features;
    unsigned int count[2], i, p;

    m.t.skip = netns_enter(&m.t);
    if (m.t.skip) {
        g_test_skip(m.t.skip);
        g_free(m.t.skip);
        return;
    }
    m.qs = qtest_pc_boot("-netdev af-packet,id=hs0,ifname=" IF_QEMU
                         ",queues=2 -device virtio-net-pci,netdev=hs0,"
                         "mq=on,vectors=6,addr=%d", MQ_SLOT);
    m.t.qts = m.qs->qts;
    m.t.alloc = &m.qs->alloc;
    m.pdev = virtio_pci_new(m.qs->pcibus, &addr);
    g_assert_nonnull(m.pdev);
    vdev = &m.pdev->vdev;
    qvirtio_pci_device_enable(m.pdev);
    qvirtio_start_device(vdev);
    features = qvirtio_get_features(vdev) &
               ((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_NET_F_MAC) |
                (1ull << VIRTIO_NET_F_MRG_RXBUF) |
                (1ull << VIRTIO_NET_F_CTRL_VQ) | (1ull << VIRTIO_NET_F_MQ));
    g_assert_cmphex(features & (1ull << VIRTIO_NET_F_MQ), !=, 0);
    qvirtio_set_features(vdev, features);
    g_assert_cmpuint(qvirtio_config_readw(vdev, 8), ==, 2);
    for (i = 0; i < 5; i++) {
        m.vqs[i] = qvirtqueue_setup(vdev, m.t.alloc, i);
    }
    qvirtio_set_driver_ok(vdev);
    m.t.hdr_len = sizeof(struct virtio_net_hdr_mrg_rxbuf);
    for (i = 0; i < ETH_ALEN; i++) {
        m.t.mac[i] = qvirtio_config_readb(vdev, i);
    }
    for (p = 0; p < 2; p++) {
        QVirtQueue *vq = m.vqs[2 * p];
        uint32_t head;

        m.rx_bufs[p] = guest_alloc(m.t.alloc, vq->size * BUF_SIZE);
        for (i = 0; i < vq->size; i++) {
            head = qvirtqueue_add(m.t.qts, vq, m.rx_bufs[p] + i * BUF_SIZE,
                                  BUF_SIZE, true, false);
            qvirtqueue_kick(m.t.qts, vdev, vq, head);
        }
    }
    m.t.sock = netns_peer_socket(IF_PEER);

    /* One pair, as after the driver started */
    mq_flows(&m, 0, count);
    g_assert_cmpuint(count[0], ==, FLOW_FRAMES);

    mq_set_pairs(&m, 2);
    mq_flows(&m, FLOW_FRAMES, count);
    g_assert_cmpuint(count[0], >, 0);
    g_assert_cmpuint(count[1], >, 0);

    mq_set_pairs(&m, 1);
    mq_flows(&m, 2 * FLOW_FRAMES, count);
    g_assert_cmpuint(count[0], ==, FLOW_FRAMES);

    for (i = 0; i < 5; i++) {
        qvirtqueue_cleanup(vdev->bus, m.vqs[i], m.t.alloc);
    }
    guest_free(m.t.alloc, m.rx_bufs[0]);
    guest_free(m.t.alloc, m.rx_bufs[1]);
    qos_object_destroy(&m.pdev->obj);
    qtest_shutdown(m.qs);
    netns_destroy(&m.t.orig_netns, &m.t.sock, IF_QEMU);
}

static void register_af_packet_test(void)
{
    QOSGraphTestOptions opts = {
        .before = af_packet_test_setup,
    };

    qos_add_test("af-packet/rx", "virtio-net", test_rx, &opts);
    qos_add_test("af-packet/tx", "virtio-net", test_tx, &opts);
    qos_add_test("af-packet/promisc", "virtio-net", test_promisc, &opts);
    qos_add_test("af-packet/burst", "virtio-net", test_burst, &opts);
    qos_add_test("af-packet/stats", "virtio-net", test_stats, &opts);
    qos_add_test("af-packet/link", "virtio-net", test_link, &opts);
    qos_add_test("af-packet/ifdel", "virtio-net", test_ifdel, &opts);
    qos_add_test("af-packet/link-down", "virtio-net", test_link_down, &opts);
    opts.arg = (gpointer)",trust=on,spoofchk=off";
    qos_add_test("af-packet/trusted", "virtio-net", test_trusted, &opts);
    opts.arg = (gpointer)",promisc=off";
    qos_add_test("af-packet/promisc-off", "virtio-net", test_promisc_off,
                 &opts);

    /* The same traffic through the backend's other data paths. */
    opts.arg = (gpointer)",vnet-hdr=on";
    qos_add_test("af-packet/rx-vnet-hdr", "virtio-net", test_rx, &opts);
    qos_add_test("af-packet/tx-vnet-hdr", "virtio-net", test_tx, &opts);
    opts.arg = (gpointer)",rx-ring-size=0";
    qos_add_test("af-packet/rx-no-ring", "virtio-net", test_rx, &opts);
    qos_add_test("af-packet/stats-no-ring", "virtio-net", test_stats, &opts);
    /* The default is TPACKET_V2 here (MTU 1500), and V3 with vnet-hdr */
    opts.arg = (gpointer)",tpacket-version=3";
    qos_add_test("af-packet/rx-v3", "virtio-net", test_rx, &opts);
    qos_add_test("af-packet/burst-v3", "virtio-net", test_burst, &opts);
    qos_add_test("af-packet/stats-v3", "virtio-net", test_stats, &opts);
    opts.arg = (gpointer)",tpacket-version=2,vnet-hdr=on";
    qos_add_test("af-packet/rx-v2-vnet-hdr", "virtio-net", test_rx, &opts);

    opts.arg = (gpointer)",tpacket-version=2 -object iothread,id=io0,"
               "poll-max-ns=100000000 -global virtio-net-pci.iothread=io0";
    qos_add_test("af-packet/tx-pushback", "virtio-net", test_tx_pushback,
                 &opts);

    opts.before = af_packet_test_setup_ring;
    opts.arg = (gpointer)",tpacket-version=2";
    qos_add_test("af-packet/bad-ring-v2", "virtio-net", test_bad_ring_v2,
                 &opts);
    opts.arg = (gpointer)",rx-retire-timeout=" stringify(RING_TIMEOUT_MS);
    qos_add_test("af-packet/bad-ring-v3", "virtio-net", test_bad_ring_v3,
                 &opts);

    qtest_add_func("af-packet/errors", test_errors);
    qtest_add_func("af-packet/bad-options", test_bad_options);
    qtest_add_func("af-packet/ring-defaults", test_ring_defaults);
    qtest_add_func("af-packet/fanout-ids", test_fanout_ids);
    qtest_add_func("af-packet/mq-steer", test_mq_steer);
}

libqos_init(register_af_packet_test);
