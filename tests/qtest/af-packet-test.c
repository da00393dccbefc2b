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
#include "libqtest-single.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/cutils.h"
#include "qemu/module.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "qobject/qlist.h"
#include "standard-headers/linux/virtio_config.h"
#include "standard-headers/linux/virtio_net.h"
#include "libqos/qgraph.h"
#include "libqos/virtio-net.h"
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

/* Offset of the status field in struct virtio_net_config */
#define VIRTIO_NET_CONFIG_STATUS 6

static const uint8_t peer_mac[ETH_ALEN] = { 0x02, 0, 0, 0, 0, 0x01 };
static const uint8_t other_mac[ETH_ALEN] = { 0x02, 0, 0, 0, 0, 0x99 };

typedef struct AFPacketTest {
    int orig_netns;         /* namespace to go back to, or -1 */
    char *skip;             /* why the test cannot run, or NULL */
    int sock;               /* packet socket on IF_PEER, or -1 */
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

/* Wait for frame @seq, sent by the guest, on IF_PEER. */
static void peer_expect(AFPacketTest *t, uint32_t seq, size_t len)
{
    gint64 deadline = g_get_monotonic_time() + TIMEOUT_US;
    uint8_t want[MAX_FRAME], got[BUF_SIZE];
    struct pollfd pfd = { .fd = t->sock, .events = POLLIN };
    ssize_t n;

    make_frame(want, len, peer_mac, t->mac, seq);
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

/* The guest sends frames @first..@first + @n - 1 in one go. */
static size_t tx_frames(AFPacketTest *t, uint32_t first, unsigned int n)
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
        make_frame(buf + t->hdr_len, len, peer_mac, t->mac, first + i);
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
     * virtio-net may pass these frames on to the guest or filter them;
     * either way the backend counts them.
     */
    rx_post(t, PROMISC_FRAMES + 1);
    for (i = 0; i < PROMISC_FRAMES; i++) {
        inject(t, other_mac, i, netns_frame_len(i));
    }
    g_assert_cmpint(wait_stat(t, "rx-packets", PROMISC_FRAMES), ==,
                    PROMISC_FRAMES);
    inject(t, t->mac, PROMISC_FRAMES, ETH_ZLEN);
    g_assert_cmpint(wait_stat(t, "rx-packets", PROMISC_FRAMES + 1), ==,
                    PROMISC_FRAMES + 1);
    g_assert_cmpint(get_stat(t, "rx-dropped"), ==, 0);

    /*
     * Each backend holds one promiscuous membership, dropped when it goes
     * (hs0's goes when QEMU quits: see af_packet_test_cleanup()).
     */
    check_second_backend(t, 1);
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
    opts.arg = (gpointer)",tpacket-version=2";
    qos_add_test("af-packet/rx-v2", "virtio-net", test_rx, &opts);
    qos_add_test("af-packet/burst-v2", "virtio-net", test_burst, &opts);
    qos_add_test("af-packet/stats-v2", "virtio-net", test_stats, &opts);
    opts.arg = (gpointer)",tpacket-version=2,vnet-hdr=on";
    qos_add_test("af-packet/rx-v2-vnet-hdr", "virtio-net", test_rx, &opts);

    qtest_add_func("af-packet/errors", test_errors);
}

libqos_init(register_af_packet_test);
