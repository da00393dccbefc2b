/*
 * QTest testcases for the virtio-net IOThread dataplane
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

/*
 * virtio-net-pci with iothread= or iothread-vq-mapping=, driven through
 * libqos, with a backend that follows its queue pairs into the IOThread:
 * -netdev af-packet on one leg of a veth pair, or -netdev tap.  Like
 * af-packet-test.c, each test runs in a network namespace of its own,
 * made with unshare(CLONE_NEWNET) before QEMU starts (QEMU inherits it).
 * The test injects and captures frames with a packet socket on the far
 * side of QEMU's interface: the other leg of the veth pair, or the tap
 * interface itself.  When the test is over, QEMU quits, the interfaces
 * are deleted and the test process goes back to its namespace.
 *
 * Frames are UDP over IPv4, numbered, with a payload that depends on the
 * number and the length: every frame is compared byte for byte.  The
 * source port varies with the number, so that an af-packet fanout group
 * (queues=N) spreads frames over its sockets.
 *
 * Tests on the virtio-net node (see dp_test_setup()): traffic both ways,
 * a burst larger than the receive ring, stop/cont, system_reset during
 * traffic, and the query-stats counters, with each backend.  Tests of
 * their own, on a PC machine they boot: hot-unplug during traffic and
 * plugging again, a multiqueue device with iothread-vq-mapping, malformed
 * control commands to a multiqueue device, and the configurations that
 * the device refuses.
 */

#include "qemu/osdep.h"
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include "libqtest-single.h"
#include "qapi/error.h"
#include "qemu/atomic.h"
#include "qemu/bswap.h"
#include "qemu/cutils.h"
#include "qemu/module.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "qobject/qlist.h"
#include "standard-headers/linux/virtio_config.h"
#include "standard-headers/linux/virtio_net.h"
#include "standard-headers/linux/virtio_pci.h"
#include "standard-headers/linux/virtio_ring.h"
#include "libqos/libqos-pc.h"
#include "libqos/qgraph.h"
#include "libqos/virtio-net.h"
#include "libqos/virtio-pci.h"
#include "netns-util.h"

#define IF_QEMU         "npd0"      /* QEMU's interface: veth leg or tap */
#define IF_PEER         "npd1"      /* the test's veth leg (af-packet) */
#define IF_VHOST        "npd2"      /* a tap that asks for vhost */
#define TEST_PORT       0x88b5      /* UDP destination port of test frames */
#define FRAME_HDRS      (ETH_HLEN + 20 + 8)     /* Ethernet, IPv4, UDP */
#define MAX_FRAME       1514
#define BUF_SIZE        2048        /* one guest buffer, header and frame */
#define MAX_PAIRS       2
#define TIMEOUT_US      (10 * G_USEC_PER_SEC)
#define QUIET_US        (200 * 1000)

#define ROUNDS          4
#define ROUND_FRAMES    128
#define BURST_FRAMES    768         /* three receive rings; < txqueuelen */
#define BURST_FIRST     128         /* buffers posted first after a burst */
#define STOP_FRAMES     16
#define RESET_FRAMES    256
#define STATS_FRAMES    32
#define MQ_FRAMES       64
#define CTRL_FRAMES     8           /* per pair and direction in bad-ctrl */
#define FLOWS           16384       /* distinct source ports */
#define CHURN_US        (3 * G_USEC_PER_SEC)    /* features, queue resets */
#define PAUSES          8           /* control commands while busy */
#define STARVE_STOPS    5           /* stops while the guest refills */
#define TX_BATCH_FRAMES 100         /* made available at once */
#define REFILLER_RAM    (128 << 20) /* guest RAM shared with the test */
#define ADAPTIVE_INFLIGHT 4         /* a guest that streams a few at a time */
#define ADAPTIVE_STREAM 35000       /* frames/s: a stream, bursts or not */
#define SPARSE_FRAMES   8
#define STREAM_BURST    4           /* a streaming guest's frames at once, */
#define STREAM_PERIOD_US 100        /* ...this often: 40,000 frames/s */
#define STREAM_RATE     25000       /* frames/s: adaptive's lowest level */
#define ANSWER_ROUNDS   50          /* requests before a TX interrupt waits */

/* Frame numbers of a later phase: frames below it may still come late */
#define NEXT_PHASE      1000000

#define DP_SLOT         0x04        /* the multiqueue device */
#define HP_SLOT         0x06        /* hotplugged devices */
/* The eject register of the ACPI PCI hotplug block of PC machines */
#define ACPI_PCIHP_EJ   (0xae00 + 0x0008)

/*
 * The guest features these tests drive: no offloads, no EVENT_IDX; queue
 * reset for the test that uses it
 */
#define DP_FEATURES     ((1ull << VIRTIO_F_VERSION_1) | \
                         (1ull << VIRTIO_NET_F_MAC) | \
                         (1ull << VIRTIO_NET_F_STATUS) | \
                         (1ull << VIRTIO_NET_F_MRG_RXBUF) | \
                         (1ull << VIRTIO_NET_F_CTRL_VQ) | \
                         (1ull << VIRTIO_NET_F_MQ) | \
                         (1ull << VIRTIO_F_RING_RESET) | \
                         (1ull << VIRTIO_NET_F_NOTF_COAL) | \
                         (1ull << VIRTIO_NET_F_VQ_NOTF_COAL))

static const uint8_t peer_mac[ETH_ALEN] = { 0x02, 0, 0, 0, 0, 0x01 };

/* Every counter of provider virtio-net, for one queue pair */
static const char *const dp_counters[] = {
    "tx-kicks", "tx-polled", "tx-waited", "tx-bh-runs", "tx-packets",
    "tx-bytes", "tx-dropped", "tx-batches", "tx-budget-exhausted",
    "tx-backend-busy", "tx-interrupts", "tx-interrupts-suppressed",
    "rx-kicks", "rx-polled", "rx-bh-runs", "rx-packets", "rx-bytes",
    "rx-dropped",
    "rx-batches", "rx-no-buffers", "rx-interrupts", "rx-interrupts-suppressed",
};

/* And those of notification coalescing (notf_coal=on) */
static const char *const coal_counters[] = {
    "rx-coal-interrupts-packets", "rx-coal-interrupts-usecs", "rx-coal-held",
    "rx-coal-unwanted", "tx-coal-interrupts-packets",
    "tx-coal-interrupts-usecs", "tx-coal-held", "tx-coal-unwanted",
};

typedef struct DPPair {
    uint64_t rx_bufs;           /* one BUF_SIZE buffer per RX descriptor */
    uint64_t tx_bufs;           /* and per TX descriptor */
    unsigned int rx_posted;     /* RX buffers the device has not used */
    unsigned int tx_pending;    /* TX buffers the device has not used */
} DPPair;

typedef struct DPTest {
    /* Host side */
    const char *backend;        /* "af-packet" or "tap" */
    int orig_netns;             /* namespace to go back to, or -1 */
    char *skip;                 /* why the test cannot run, or NULL */
    int sock;                   /* packet socket of the peer, or -1 */

    /* Guest side */
    QTestState *qts;
    QGuestAllocator *alloc;
    QOSState *qs;               /* for machines the test boots itself */
    QVirtioPCIDevice *pdev;     /* the device of such a machine */
    QVirtioDevice *vdev;
    QVirtQueue **vqs;           /* RX 0, TX 0, RX 1, TX 1, ..., control */
    unsigned int nvqs;
    unsigned int pairs;
    char *nic;                  /* name of the NIC client */
    size_t hdr_len;             /* virtio-net header in front of frames */
    uint8_t mac[ETH_ALEN];      /* the guest's */
    DPPair pair[MAX_PAIRS];
    uint32_t stale_below;       /* frames below this number may come late */
    unsigned int stale;         /* how many did */
} DPTest;

/* ---- host side: namespace, interfaces, packet socket ---- */

static bool is_tap(DPTest *t)
{
    return !strcmp(t->backend, "tap");
}

/*
 * Where the test sends and captures: the other leg of the veth pair, or
 * the tap interface, whose transmit side is QEMU's file descriptor.
 */
static const char *peer_ifname(DPTest *t)
{
    return is_tap(t) ? IF_QEMU : IF_PEER;
}

/*
 * Move to a new network namespace holding IF_QEMU: one leg of a veth
 * pair for af-packet, a persistent tap for tap.  Returns why the test
 * cannot run, or NULL.
 */
static char *netns_enter(DPTest *t)
{
    char *why;
    bool ok;

    if (geteuid() != 0) {
        return g_strdup("dataplane tests need root: they create a network "
                        "namespace and interfaces");
    }
    if (is_tap(t) && access("/dev/net/tun", R_OK | W_OK) < 0) {
        return g_strdup_printf("cannot use /dev/net/tun: %s",
                               strerror(errno));
    }
    why = netns_new(&t->orig_netns, "dataplane");
    if (why) {
        return why;
    }
    if (is_tap(t)) {
        /* The carrier comes when QEMU attaches: see dp_attach() */
        ok = netns_run("ip tuntap add dev " IF_QEMU " mode tap") &&
             netns_run("ip link set " IF_QEMU " up");
    } else {
        ok = netns_add_veth(IF_QEMU, IF_PEER);
    }
    if (!ok) {
        netns_leave(&t->orig_netns);
        return g_strdup_printf("cannot create the %s interface with ip(8)",
                               is_tap(t) ? "tap" : "veth");
    }
    return NULL;
}

/* The -netdev option of the backend, with id @id */
static char *netdev_opts(DPTest *t, const char *id, const char *extra)
{
    if (is_tap(t)) {
        return g_strdup_printf("tap,id=%s,ifname=" IF_QEMU ",script=no,"
                               "downscript=no%s", id, extra);
    }
    return g_strdup_printf("af-packet,id=%s,ifname=" IF_QEMU "%s", id, extra);
}

/* ---- frames ---- */

static uint16_t ip_checksum(const uint8_t *p, size_t len)
{
    uint32_t sum = 0;
    size_t i;

    for (i = 0; i < len; i += 2) {
        sum += lduw_be_p(p + i);
    }
    while (sum >> 16) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return ~sum;
}

/* Frame number @seq, of netns_frame_len(@seq) bytes. */
static size_t make_frame(uint8_t *buf, const uint8_t *dst, const uint8_t *src,
                         uint32_t seq)
{
    size_t len = netns_frame_len(seq);
    uint8_t *ip = buf + ETH_HLEN;
    uint8_t *udp = ip + 20;
    size_t i;

    memcpy(buf, dst, ETH_ALEN);
    memcpy(buf + ETH_ALEN, src, ETH_ALEN);
    stw_be_p(buf + 2 * ETH_ALEN, ETH_P_IP);

    memset(ip, 0, 20);
    ip[0] = 0x45;                               /* IPv4, 20 bytes */
    stw_be_p(ip + 2, len - ETH_HLEN);
    stw_be_p(ip + 4, seq);
    ip[8] = 64;                                 /* TTL */
    ip[9] = IPPROTO_UDP;
    stl_be_p(ip + 12, 0x0a000001);              /* 10.0.0.1 */
    stl_be_p(ip + 16, 0x0a000002);              /* 10.0.0.2 */
    stw_be_p(ip + 10, ip_checksum(ip, 20));

    stw_be_p(udp, 1024 + seq % FLOWS);          /* the flow */
    stw_be_p(udp + 2, TEST_PORT);
    stw_be_p(udp + 4, len - ETH_HLEN - 20);
    stw_be_p(udp + 6, 0);                       /* no checksum */

    stl_be_p(buf + FRAME_HDRS, seq);
    for (i = FRAME_HDRS + 4; i < len; i++) {
        buf[i] = seq * 31 + i;
    }
    return len;
}

static bool is_test_frame(const uint8_t *buf, size_t len)
{
    return len >= FRAME_HDRS + 4 &&
           lduw_be_p(buf + 2 * ETH_ALEN) == ETH_P_IP &&
           buf[ETH_HLEN + 9] == IPPROTO_UDP &&
           lduw_be_p(buf + ETH_HLEN + 20 + 2) == TEST_PORT;
}

/*
 * @buf, of @len bytes, must be a whole test frame from @src to @dst.
 * Returns its number.
 */
static uint32_t check_frame(const uint8_t *buf, size_t len,
                            const uint8_t *dst, const uint8_t *src)
{
    uint8_t want[MAX_FRAME];
    uint32_t seq;

    g_assert_true(is_test_frame(buf, len));
    seq = ldl_be_p(buf + FRAME_HDRS);
    g_assert_cmpuint(len, ==, netns_frame_len(seq));
    make_frame(want, dst, src, seq);
    g_assert_cmpmem(buf, len, want, len);
    return seq;
}

/* Send frame @seq from the peer towards QEMU; returns its length. */
static size_t inject(DPTest *t, uint32_t seq)
{
    uint8_t buf[MAX_FRAME];
    size_t len = make_frame(buf, t->mac, peer_mac, seq);

    g_assert_cmpint(send(t->sock, buf, len, 0), ==, len);
    return len;
}

/*
 * The next test frame that QEMU sent to the peer, into @buf; returns its
 * length, or 0 if none came before @deadline.
 */
static size_t peer_recv(DPTest *t, uint8_t *buf, gint64 deadline)
{
    struct pollfd pfd = { .fd = t->sock, .events = POLLIN };
    ssize_t n;

    while (g_get_monotonic_time() < deadline) {
        if (poll(&pfd, 1, 10) <= 0) {
            continue;
        }
        n = recv(t->sock, buf, BUF_SIZE, MSG_DONTWAIT | MSG_TRUNC);
        if (n > 0 && is_test_frame(buf, n)) {
            g_assert_cmpint(n, <=, MAX_FRAME);
            return n;
        }
    }
    return 0;
}

/*
 * The next frame the guest sent must be @seq.  Whole frames from before
 * t->stale_below may come first, when @seq is above it.
 */
static void peer_expect(DPTest *t, uint32_t seq)
{
    gint64 deadline = g_get_monotonic_time() + TIMEOUT_US;
    uint8_t got[BUF_SIZE];
    uint32_t s;
    size_t n;

    for (;;) {
        n = peer_recv(t, got, deadline);
        g_assert_cmpuint(n, >, 0);
        s = check_frame(got, n, peer_mac, t->mac);
        if (s < t->stale_below && seq >= t->stale_below) {
            t->stale++;
            continue;
        }
        g_assert_cmpuint(s, ==, seq);
        return;
    }
}

/* Nothing must leave the guest for a while. */
static void peer_expect_none(DPTest *t)
{
    uint8_t got[BUF_SIZE];

    g_assert_cmpuint(peer_recv(t, got, g_get_monotonic_time() + QUIET_US),
                     ==, 0);
}

/*
 * Frames sent from another thread, as fast as the peer takes them, while
 * the main thread does something to QEMU.
 */
typedef struct Injector {
    int sock;
    uint8_t dst[ETH_ALEN];
    uint32_t first;             /* the first frame's number */
    uint32_t seq;               /* the next frame's number */
    bool stop;
    GThread *thread;
} Injector;

static gpointer injector_run(gpointer opaque)
{
    Injector *inj = opaque;
    uint8_t buf[MAX_FRAME];
    size_t len;

    while (!qatomic_read(&inj->stop)) {
        len = make_frame(buf, inj->dst, peer_mac, inj->seq);
        if (send(inj->sock, buf, len, 0) == len) {
            inj->seq++;
        }
        g_usleep(20);
    }
    return NULL;
}

static void injector_start_to(Injector *inj, DPTest *t, uint32_t seq,
                              const uint8_t *dst)
{
    inj->sock = t->sock;
    memcpy(inj->dst, dst, ETH_ALEN);
    inj->first = seq;
    inj->seq = seq;
    inj->stop = false;
    inj->thread = g_thread_new("injector", injector_run, inj);
}

static void injector_start(Injector *inj, DPTest *t, uint32_t seq)
{
    injector_start_to(inj, t, seq, t->mac);
}

/* Returns how many frames went. */
static uint32_t injector_stop(Injector *inj)
{
    qatomic_set(&inj->stop, true);
    g_thread_join(inj->thread);
    return inj->seq - inj->first;
}

/* ---- QMP ---- */

/*
 * query-stats, provider virtio-net.  Returns the counters of queue pair
 * @queue of NIC @nic by name, or NULL when there is no such result.  Each
 * result of @nic must carry every counter.  *@nresults gets the number of
 * results for @nic.
 */
static QDict *dp_query(QTestState *qts, const char *nic, unsigned int queue,
                       unsigned int *nresults)
{
    QDict *rsp, *stats = NULL;
    QListEntry *e, *f;
    unsigned int n = 0, i, ncoal;

    rsp = qtest_qmp(qts, "{ 'execute': 'query-stats', 'arguments': {"
                    " 'target': 'netdev',"
                    " 'providers': [ { 'provider': 'virtio-net' } ] } }");
    g_assert_false(qdict_haskey(rsp, "error"));
    QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "return"), e) {
        QDict *res = qobject_to(QDict, qlist_entry_obj(e));
        QDict *one = qdict_new();

        g_assert_cmpstr(qdict_get_str(res, "provider"), ==, "virtio-net");
        if (g_strcmp0(qdict_get_try_str(res, "netdev"), nic)) {
            qobject_unref(one);
            continue;
        }
        n++;
        QLIST_FOREACH_ENTRY(qdict_get_qlist(res, "stats"), f) {
            QDict *st = qobject_to(QDict, qlist_entry_obj(f));
            const char *name = qdict_get_str(st, "name");

            g_assert_false(qdict_haskey(one, name));
            qdict_put_int(one, name, qdict_get_int(st, "value"));
        }
        /* Coalescing counters come with notf_coal, with or without DP */
        for (i = 0, ncoal = 0; i < G_N_ELEMENTS(coal_counters); i++) {
            ncoal += qdict_haskey(one, coal_counters[i]);
        }
        g_assert_true(ncoal == 0 || ncoal == G_N_ELEMENTS(coal_counters));
        if (qdict_size(one) > ncoal) {
            for (i = 0; i < G_N_ELEMENTS(dp_counters); i++) {
                g_assert_true(qdict_haskey(one, dp_counters[i]));
            }
            g_assert_cmpuint(qdict_size(one), ==,
                             G_N_ELEMENTS(dp_counters) + ncoal);
        }
        if (qdict_get_int(res, "queue") == queue) {
            g_assert_null(stats);
            stats = one;
        } else {
            qobject_unref(one);
        }
    }
    qobject_unref(rsp);
    if (nresults) {
        *nresults = n;
    }
    return stats;
}

static gint compare_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names of the NICs that report counters, sorted and ','-joined */
static char *dp_nics(QTestState *qts)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    QDict *rsp;
    QListEntry *e;

    rsp = qtest_qmp(qts, "{ 'execute': 'query-stats', 'arguments': {"
                    " 'target': 'netdev',"
                    " 'providers': [ { 'provider': 'virtio-net' } ] } }");
    g_assert_false(qdict_haskey(rsp, "error"));
    QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "return"), e) {
        QDict *res = qobject_to(QDict, qlist_entry_obj(e));

        if (qdict_get_int(res, "queue") == 0) {
            g_ptr_array_add(names, g_strdup(qdict_get_str(res, "netdev")));
        }
    }
    qobject_unref(rsp);
    g_ptr_array_sort(names, compare_names);
    g_ptr_array_add(names, NULL);
    return g_strjoinv(",", (char **)names->pdata);
}

static int64_t get_stat(DPTest *t, unsigned int pair, const char *name)
{
    QDict *stats = dp_query(t->qts, t->nic, pair, NULL);
    int64_t val;

    g_assert_nonnull(stats);
    val = qdict_get_int(stats, name);
    qobject_unref(stats);
    return val;
}

/*
 * Wait until counter @name of @pair reaches @val; returns its value.
 * Counters move after the guest sees the used buffers they count.
 */
static int64_t wait_stat(DPTest *t, unsigned int pair, const char *name,
                         int64_t val)
{
    gint64 deadline = g_get_monotonic_time() + TIMEOUT_US;
    int64_t cur;

    while ((cur = get_stat(t, pair, name)) < val) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(1000);
    }
    return cur;
}

/* QMP command @cmd with arguments @args (JSON) must fail with @msg. */
static void qmp_fails(QTestState *qts, const char *cmd, const char *args,
                      const char *msg)
{
    QDict *rsp = qtest_qmp(qts, "{ 'execute': %s, 'arguments': %p }", cmd,
                           qobject_from_json(args, &error_abort));
    const char *desc;

    g_assert_true(qdict_haskey(rsp, "error"));
    desc = qdict_get_str(qdict_get_qdict(rsp, "error"), "desc");
    g_test_message("%s %s: %s", cmd, args, desc);
    g_assert_nonnull(strstr(desc, msg));
    qobject_unref(rsp);
}

static bool query_running(QTestState *qts)
{
    QDict *rsp = qtest_qmp(qts, "{ 'execute': 'query-status' }");
    bool running = qdict_get_bool(qdict_get_qdict(rsp, "return"), "running");

    qobject_unref(rsp);
    return running;
}

static void wait_device_deleted(QTestState *qts, const char *id)
{
    QDict *ev, *data;
    bool found;

    do {
        ev = qtest_qmp_eventwait_ref(qts, "DEVICE_DELETED");
        data = qdict_get_qdict(ev, "data");
        found = !g_strcmp0(qdict_get_try_str(data, "device"), id);
        qobject_unref(ev);
    } while (!found);
}

/* Unplug device @id from @slot, as a guest that ejects it at once. */
static void unplug(QTestState *qts, const char *id, unsigned int slot)
{
    qtest_qmp_device_del_send(qts, id);
    qtest_outl(qts, ACPI_PCIHP_EJ, 1 << slot);
    wait_device_deleted(qts, id);
}

/* Counter @name on the "stats:" line of NIC @nic in "info network" */
static int64_t info_counter(const char *info, const char *nic,
                            const char *name)
{
    g_autofree char *head = g_strdup_printf("\n%s: index=0,", nic);
    g_autofree char *line = NULL;
    const char *p, *end;

    /* The NIC's line, then its stats line */
    p = strstr(info, head + 1) == info ? info : strstr(info, head);
    g_assert_nonnull(p);
    p = strchr(p + 1, '\n');
    g_assert_nonnull(p);
    g_assert_true(g_str_has_prefix(p + 1, "  stats: "));
    end = strchr(p + 1, '\n');
    line = g_strndup(p + 1, end ? end - p - 1 : strlen(p + 1));
    return netns_info_counter(line, name);
}

/* ---- guest side: virtqueues through libqos ---- */

static QVirtQueue *rx_vq(DPTest *t, unsigned int pair)
{
    return t->vqs[2 * pair];
}

static QVirtQueue *tx_vq(DPTest *t, unsigned int pair)
{
    return t->vqs[2 * pair + 1];
}

/*
 * The descriptor that the next buffer of @vq gets.  libqos hands every
 * descriptor out once; the device uses buffers in order, so reuse them
 * in ring order.  The buffer of descriptor N is the Nth of its pair's.
 */
static uint32_t vq_next(QVirtQueue *vq)
{
    if (vq->free_head == vq->size) {
        vq->free_head = 0;
    }
    return vq->free_head;
}

/*
 * The next used buffer of @vq, which must be the oldest one outstanding:
 * returns false if there is none yet and @wait is false.
 */
static bool get_used(DPTest *t, QVirtQueue *vq, uint32_t *desc,
                     uint32_t *len, bool wait)
{
    gint64 deadline = g_get_monotonic_time() + TIMEOUT_US;
    uint16_t idx = vq->last_used_idx;

    while (!qvirtqueue_get_buf(t->qts, vq, desc, len)) {
        if (!wait) {
            return false;
        }
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(100);
    }
    g_assert_cmpuint(*desc, ==, idx % vq->size);
    return true;
}

/* Make @n more receive buffers of @pair available to the device. */
static void rx_post(DPTest *t, unsigned int pair, unsigned int n)
{
    QVirtQueue *vq = rx_vq(t, pair);
    DPPair *p = &t->pair[pair];
    uint32_t head;

    g_assert_cmpuint(p->rx_posted + n, <=, vq->size);
    while (n--) {
        head = qvirtqueue_add(t->qts, vq,
                              p->rx_bufs + (uint64_t)vq_next(vq) * BUF_SIZE,
                              BUF_SIZE, true, false);
        qvirtqueue_kick(t->qts, t->vdev, vq, head);
        p->rx_posted++;
    }
}

/* Give every receive buffer of @pair to the device. */
static void rx_fill(DPTest *t, unsigned int pair)
{
    rx_post(t, pair, rx_vq(t, pair)->size - t->pair[pair].rx_posted);
}

/*
 * The next frame of @pair's receive queue, into @buf; returns its length,
 * or 0 if @wait is false and there is none yet.
 */
static size_t rx_get(DPTest *t, unsigned int pair, uint8_t *buf, bool wait)
{
    QVirtQueue *vq = rx_vq(t, pair);
    DPPair *p = &t->pair[pair];
    uint32_t desc, used;

    if (!get_used(t, vq, &desc, &used, wait)) {
        return 0;
    }
    p->rx_posted--;
    g_assert_cmpuint(used, >=, t->hdr_len + FRAME_HDRS + 4);
    g_assert_cmpuint(used, <=, t->hdr_len + MAX_FRAME);
    qtest_memread(t->qts, p->rx_bufs + (uint64_t)desc * BUF_SIZE + t->hdr_len,
                  buf, used - t->hdr_len);
    return used - t->hdr_len;
}

/*
 * The next frame in @pair's receive queue must be @seq, whole.  Whole
 * frames from before t->stale_below may come first, when @seq is above
 * it; each gives its buffer back.
 */
static void rx_expect(DPTest *t, unsigned int pair, uint32_t seq)
{
    uint8_t got[MAX_FRAME];
    uint32_t s;
    size_t n;

    for (;;) {
        n = rx_get(t, pair, got, true);
        s = check_frame(got, n, t->mac, peer_mac);
        if (s < t->stale_below && seq >= t->stale_below) {
            t->stale++;
            rx_post(t, pair, 1);
            continue;
        }
        g_assert_cmpuint(s, ==, seq);
        return;
    }
}

/* Nothing more must arrive in @pair's receive queue for a while. */
static void rx_expect_none(DPTest *t, unsigned int pair)
{
    gint64 deadline = g_get_monotonic_time() + QUIET_US;
    uint8_t got[MAX_FRAME];

    while (g_get_monotonic_time() < deadline) {
        g_assert_cmpuint(rx_get(t, pair, got, false), ==, 0);
        g_usleep(1000);
    }
}

/*
 * The guest queues frames @first..@first + @n - 1 on @pair and kicks, but
 * does not wait for them.  Returns their bytes.
 */
static size_t tx_send(DPTest *t, unsigned int pair, uint32_t first,
                      unsigned int n)
{
    QVirtQueue *vq = tx_vq(t, pair);
    DPPair *p = &t->pair[pair];
    uint8_t buf[BUF_SIZE];
    size_t len, bytes = 0;
    uint64_t addr;
    uint32_t head;
    unsigned int i;

    g_assert_cmpuint(p->tx_pending + n, <=, vq->size);
    for (i = 0; i < n; i++) {
        /* A zeroed virtio-net header: no offloads. */
        memset(buf, 0, t->hdr_len);
        len = make_frame(buf + t->hdr_len, peer_mac, t->mac, first + i);
        addr = p->tx_bufs + (uint64_t)vq_next(vq) * BUF_SIZE;
        qtest_memwrite(t->qts, addr, buf, t->hdr_len + len);
        head = qvirtqueue_add(t->qts, vq, addr, t->hdr_len + len, false,
                              false);
        qvirtqueue_kick(t->qts, t->vdev, vq, head);
        p->tx_pending++;
        bytes += len;
    }
    return bytes;
}

/* Wait until the device has used every transmit buffer of @pair. */
static void tx_wait(DPTest *t, unsigned int pair)
{
    DPPair *p = &t->pair[pair];
    uint32_t desc;

    while (p->tx_pending) {
        get_used(t, tx_vq(t, pair), &desc, NULL, true);
        p->tx_pending--;
    }
}

/* The guest sends frames @first..@first + @n - 1 on @pair. */
static size_t tx_frames(DPTest *t, unsigned int pair, uint32_t first,
                        unsigned int n)
{
    size_t bytes = tx_send(t, pair, first, n);

    tx_wait(t, pair);
    return bytes;
}

/* The driver asks not to be interrupted for @vq */
static void vq_no_interrupt(DPTest *t, QVirtQueue *vq)
{
    /* avail->flags: x86 is little-endian, like virtio 1.0 */
    qtest_writew(t->qts, vq->avail, VRING_AVAIL_F_NO_INTERRUPT);
}

/*
 * Commands complete before the next one goes: reuse the control queue's
 * descriptors from the start when a chain of three may not fit.
 */
static void ctrl_rewind(QVirtQueue *vq)
{
    if (vq->free_head + 3 > vq->size) {
        vq->free_head = 0;
    }
}

/*
 * The next used buffer of the control queue @vq, by @deadline: false if
 * the device did not use one.
 */
static bool ctrl_used(DPTest *t, QVirtQueue *vq, gint64 deadline,
                      uint32_t *desc, uint32_t *len)
{
    while (!qvirtqueue_get_buf(t->qts, vq, desc, len)) {
        if (g_get_monotonic_time() > deadline) {
            return false;
        }
        g_usleep(100);
    }
    return true;
}

/*
 * A control command: @cmd (class, command, data) in an out buffer of
 * @split bytes and one of the rest, then an in buffer for the ack unless
 * @ack is false.  Returns the ack, or -1 if the device did not use the
 * buffers.
 */
static int ctrl_cmd(DPTest *t, const void *cmd, size_t len, size_t split,
                    bool ack)
{
    QVirtQueue *vq = t->vqs[2 * t->pairs];
    uint64_t addr = guest_alloc(t->alloc, len + 1);
    uint32_t head, desc;
    gint64 deadline;
    int ret = -1;

    g_assert_true(t->vdev->features & (1ull << VIRTIO_NET_F_CTRL_VQ));
    g_assert_cmpuint(split, <=, len);
    ctrl_rewind(vq);
    qtest_memwrite(t->qts, addr, cmd, len);
    qtest_writeb(t->qts, addr + len, 0xff);
    head = qvirtqueue_add(t->qts, vq, addr, split, false,
                          ack || split < len);
    if (split < len) {
        qvirtqueue_add(t->qts, vq, addr + split, len - split, false, ack);
    }
    if (ack) {
        qvirtqueue_add(t->qts, vq, addr + len, 1, true, false);
    }
    qvirtqueue_kick(t->qts, t->vdev, vq, head);
    /* Without room for the ack the device cannot answer: give it 200 ms */
    deadline = g_get_monotonic_time() + (ack ? TIMEOUT_US : 200 * 1000);
    if (!ctrl_used(t, vq, deadline, &desc, NULL)) {
        g_assert_false(ack);
        goto out;
    }
    g_assert_cmpuint(desc, ==, head);
    ret = qtest_readb(t->qts, addr + len);
out:
    guest_free(t->alloc, addr);
    return ret;
}

/* Set @pairs queue pairs through the control queue. */
static void ctrl_mq(DPTest *t, uint16_t pairs)
{
    uint8_t req[4] = { VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET };

    stw_le_p(req + 2, pairs);
    g_assert_cmpint(ctrl_cmd(t, req, sizeof(req), 2, true), ==,
                    VIRTIO_NET_OK);
}

/*
 * The driver has set the device up: read what the tests need, allocate
 * the buffers, open the peer's socket.  @nic: the NIC client's name, or
 * NULL for the only NIC that reports counters.
 */
static void dp_attach(DPTest *t, const char *nic)
{
    QVirtioDevice *dev = t->vdev;
    unsigned int i;

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
    g_assert_cmpuint(t->pairs, <=, MAX_PAIRS);
    for (i = 0; i < t->pairs; i++) {
        t->pair[i] = (DPPair) {
            .rx_bufs = guest_alloc(t->alloc, rx_vq(t, i)->size * BUF_SIZE),
            .tx_bufs = guest_alloc(t->alloc, tx_vq(t, i)->size * BUF_SIZE),
        };
    }
    if (nic) {
        t->nic = g_strdup(nic);
    } else {
        t->nic = dp_nics(t->qts);
        g_assert_cmpstr(t->nic, !=, "");
        g_assert_null(strchr(t->nic, ','));
    }

    if (t->sock < 0) {
        if (is_tap(t)) {
            /* QEMU's file descriptor is the tap's carrier */
            netns_wait_running(IF_QEMU);
        }
        t->sock = netns_peer_socket(peer_ifname(t));
    }
}

static void dp_detach(DPTest *t)
{
    unsigned int i;

    for (i = 0; i < t->pairs; i++) {
        guest_free(t->alloc, t->pair[i].rx_bufs);
        guest_free(t->alloc, t->pair[i].tx_bufs);
    }
    g_free(t->nic);
    t->nic = NULL;
}

/*
 * Negotiate DP_FEATURES and set up every virtqueue into t->vqs, which
 * holds t->nvqs queues if it exists already.
 */
static void nic_setup(DPTest *t)
{
    uint64_t features = qvirtio_get_features(t->vdev) & DP_FEATURES;
    unsigned int i, nvqs;

    qvirtio_set_features(t->vdev, features);
    t->pairs = 1;
    if (features & (1ull << VIRTIO_NET_F_MQ)) {
        t->pairs = qvirtio_config_readw(t->vdev, 8);
    }
    nvqs = 2 * t->pairs + !!(features & (1ull << VIRTIO_NET_F_CTRL_VQ));
    if (t->vqs) {
        g_assert_cmpuint(nvqs, ==, t->nvqs);
    } else {
        t->vqs = g_new0(QVirtQueue *, nvqs);
        t->nvqs = nvqs;
    }
    for (i = 0; i < nvqs; i++) {
        t->vqs[i] = qvirtqueue_setup(t->vdev, t->alloc, i);
    }
    qvirtio_set_driver_ok(t->vdev);
}

/* Drive the virtio-net-pci device @nic in @slot of the machine we booted */
static void nic_start(DPTest *t, unsigned int slot, const char *nic)
{
    QPCIAddress addr = { .devfn = QPCI_DEVFN(slot, 0) };

    t->pdev = virtio_pci_new(t->qs->pcibus, &addr);
    g_assert_nonnull(t->pdev);
    g_assert_cmphex(t->pdev->vdev.device_type, ==, VIRTIO_ID_NET);
    qvirtio_pci_device_enable(t->pdev);
    qvirtio_start_device(&t->pdev->vdev);
    t->vdev = &t->pdev->vdev;
    nic_setup(t);
    dp_attach(t, nic);
}

/* Forget the device, which may be gone already */
static void nic_end(DPTest *t)
{
    unsigned int i;

    dp_detach(t);
    for (i = 0; i < t->nvqs; i++) {
        qvirtqueue_cleanup(t->vdev->bus, t->vqs[i], t->alloc);
    }
    g_free(t->vqs);
    t->vqs = NULL;
    t->nvqs = 0;
    qos_object_destroy(&t->pdev->obj);
    t->pdev = NULL;
    t->vdev = NULL;
}

/* ---- tests on the virtio-net node, iothread=io0 ---- */

static DPTest *test_start(QVirtioNet *net, void *data, QGuestAllocator *alloc)
{
    DPTest *t = data;

    if (t->skip) {
        g_test_skip(t->skip);
        return NULL;
    }
    t->qts = global_qtest;
    t->alloc = alloc;
    t->vdev = net->vdev;
    t->vqs = net->queues;
    t->nvqs = net->n_queues;
    t->pairs = 1;
    dp_attach(t, NULL);
    return t;
}

static void test_end(DPTest *t)
{
    dp_detach(t);
}

/*
 * @n frames from the wire to pair 0, numbered from @rx_seq, then @n frames
 * from the guest numbered from @tx_seq, each checked where it arrives.
 */
static void exchange(DPTest *t, uint32_t rx_seq, uint32_t tx_seq, uint32_t n)
{
    uint32_t i;

    rx_fill(t, 0);
    for (i = 0; i < n; i++) {
        inject(t, rx_seq + i);
    }
    for (i = 0; i < n; i++) {
        rx_expect(t, 0, rx_seq + i);
    }
    tx_frames(t, 0, tx_seq, n);
    for (i = 0; i < n; i++) {
        peer_expect(t, tx_seq + i);
    }
}

/*
 * Frames arrive in guest memory intact and in order, and frames the guest
 * sends leave unchanged; rounds of frames wrap around both rings, and
 * the last round goes both ways at once.
 */
static void test_traffic(void *obj, void *data, QGuestAllocator *alloc)
{
    DPTest *t = test_start(obj, data, alloc);
    uint32_t r, i, seq;

    if (!t) {
        return;
    }
    for (r = 0; r < ROUNDS; r++) {
        seq = r * ROUND_FRAMES;
        exchange(t, seq, NEXT_PHASE + seq, ROUND_FRAMES);
    }

    seq = ROUNDS * ROUND_FRAMES;
    rx_fill(t, 0);
    for (i = 0; i < ROUND_FRAMES; i++) {
        inject(t, seq + i);
    }
    tx_send(t, 0, NEXT_PHASE + seq, ROUND_FRAMES);
    for (i = 0; i < ROUND_FRAMES; i++) {
        rx_expect(t, 0, seq + i);
    }
    tx_wait(t, 0);
    for (i = 0; i < ROUND_FRAMES; i++) {
        peer_expect(t, NEXT_PHASE + seq + i);
    }
    rx_expect_none(t, 0);
    test_end(t);
}

/*
 * A burst while the guest has no receive buffers stalls RX; it resumes
 * when buffers come, and delivers everything in order, without loss.
 */
static void test_burst(void *obj, void *data, QGuestAllocator *alloc)
{
    DPTest *t = test_start(obj, data, alloc);
    unsigned int n, size;
    uint32_t i, seq;

    if (!t) {
        return;
    }
    for (i = 0; i < BURST_FRAMES; i++) {
        inject(t, i);
    }
    /* The device took a frame, found no buffer, and stopped. */
    wait_stat(t, 0, "rx-no-buffers", 1);
    g_assert_cmpint(get_stat(t, 0, "rx-packets"), ==, 0);

    /* As many frames as buffers, no more. */
    rx_post(t, 0, BURST_FIRST);
    for (seq = 0; seq < BURST_FIRST; seq++) {
        rx_expect(t, 0, seq);
    }
    rx_expect_none(t, 0);
    g_assert_cmpint(get_stat(t, 0, "rx-no-buffers"), >=, 2);

    /* The rest, a ring at a time. */
    size = rx_vq(t, 0)->size;
    while (seq < BURST_FRAMES) {
        n = MIN(size, BURST_FRAMES - seq);
        rx_post(t, 0, n);
        for (i = 0; i < n; i++, seq++) {
            rx_expect(t, 0, seq);
        }
    }
    rx_expect_none(t, 0);
    g_assert_cmpint(wait_stat(t, 0, "rx-packets", BURST_FRAMES), ==,
                    BURST_FRAMES);
    g_assert_cmpint(get_stat(t, 0, "rx-dropped"), ==, 0);
    test_end(t);
}

/*
 * While the VM is stopped, nothing moves: frames wait in the backend and
 * in the transmit ring.  cont delivers them all, then traffic goes on.
 */
static void test_stop_cont(void *obj, void *data, QGuestAllocator *alloc)
{
    DPTest *t = test_start(obj, data, alloc);
    uint32_t i, seq;

    if (!t) {
        return;
    }
    rx_fill(t, 0);
    for (seq = 0; seq < 3 * STOP_FRAMES; seq += STOP_FRAMES) {
        for (i = 0; i < STOP_FRAMES; i++) {
            inject(t, seq + i);
        }
        if (seq == STOP_FRAMES) {
            /* Stopped: frames both ways wait */
            tx_send(t, 0, NEXT_PHASE + seq, STOP_FRAMES);
            rx_expect_none(t, 0);
            peer_expect_none(t);
            g_assert_false(query_running(t->qts));
            qtest_qmp_assert_success(t->qts, "{ 'execute': 'cont' }");
            tx_wait(t, 0);
        } else {
            tx_frames(t, 0, NEXT_PHASE + seq, STOP_FRAMES);
        }
        for (i = 0; i < STOP_FRAMES; i++) {
            rx_expect(t, 0, seq + i);
        }
        for (i = 0; i < STOP_FRAMES; i++) {
            peer_expect(t, NEXT_PHASE + seq + i);
        }
        if (seq == 0) {
            qtest_qmp_assert_success(t->qts, "{ 'execute': 'stop' }");
        }
    }
    g_assert_true(query_running(t->qts));
    g_assert_cmpint(wait_stat(t, 0, "rx-packets", 3 * STOP_FRAMES), ==,
                    3 * STOP_FRAMES);
    g_assert_cmpint(wait_stat(t, 0, "tx-packets", 3 * STOP_FRAMES), ==,
                    3 * STOP_FRAMES);
    g_assert_cmpint(get_stat(t, 0, "tx-dropped"), ==, 0);
    test_end(t);
}

/*
 * system_reset while frames flow both ways; the driver sets the device
 * up again and traffic works.  Frames from before the reset may still
 * come, whole.
 */
static void test_reset(void *obj, void *data, QGuestAllocator *alloc)
{
    QVirtioNetPCI *np = obj;
    DPTest *t = test_start(&np->net, data, alloc);
    unsigned int i;

    if (!t) {
        return;
    }
    rx_post(t, 0, RESET_FRAMES / 4);
    for (i = 0; i < RESET_FRAMES; i++) {
        inject(t, i);
    }
    tx_send(t, 0, RESET_FRAMES, RESET_FRAMES / 4);
    qtest_qmp_assert_success(t->qts, "{ 'execute': 'system_reset' }");
    qtest_qmp_eventwait(t->qts, "RESET");

    /* The device forgot the rings, and PCI its BARs: start over */
    for (i = 0; i < t->nvqs; i++) {
        qvirtqueue_cleanup(t->vdev->bus, t->vqs[i], alloc);
    }
    qvirtio_pci_device_enable(&np->pci_vdev);
    qvirtio_start_device(t->vdev);
    nic_setup(t);
    t->pair[0].rx_posted = 0;
    t->pair[0].tx_pending = 0;
    g_assert_true(query_running(t->qts));

    t->stale_below = NEXT_PHASE;
    exchange(t, NEXT_PHASE, 2 * NEXT_PHASE, STATS_FRAMES);
    g_test_message("%u frames from before the reset came after it", t->stale);
    test_end(t);
}

/*
 * The counters of provider virtio-net, query-stats and "info network",
 * count exactly; interrupts reach the guest unless it says otherwise.
 */
static void test_stats(void *obj, void *data, QGuestAllocator *alloc)
{
    DPTest *t = test_start(obj, data, alloc);
    g_autofree char *info = NULL;
    g_autofree char *hmp = NULL;
    g_autofree char *want = NULL;
    size_t rx_bytes = 0, tx_bytes;
    QDict *s0, *s, *s2;
    unsigned int nresults;
    int64_t kicks;
    uint32_t i;

    if (!t) {
        return;
    }
    /*
     * Nothing counted yet, but kicks (libqos kicked while setting the
     * queues up; kicks count from here) and the bottom halves that catch
     * up after the pair's first attach.
     */
    s0 = dp_query(t->qts, t->nic, 0, &nresults);
    g_assert_cmpuint(nresults, ==, 1);
    for (i = 0; i < G_N_ELEMENTS(dp_counters); i++) {
        if (!g_str_has_suffix(dp_counters[i], "-kicks") &&
            !g_str_has_suffix(dp_counters[i], "-bh-runs")) {
            g_assert_cmpint(qdict_get_int(s0, dp_counters[i]), ==, 0);
        }
    }

    /*
     * Detaching and attaching the pair (here for set_link) is no guest
     * kick: the counters must not move.
     */
    for (i = 0; i < 3; i++) {
        qtest_qmp_assert_success(t->qts, "{ 'execute': 'set_link',"
                                 " 'arguments': { 'name': %s, 'up': false } }",
                                 t->nic);
        qtest_qmp_assert_success(t->qts, "{ 'execute': 'set_link',"
                                 " 'arguments': { 'name': %s, 'up': true } }",
                                 t->nic);
    }
    s = dp_query(t->qts, t->nic, 0, &nresults);
    g_assert_cmpint(qdict_get_int(s, "tx-kicks"), ==,
                    qdict_get_int(s0, "tx-kicks"));
    g_assert_cmpint(qdict_get_int(s, "rx-kicks"), ==,
                    qdict_get_int(s0, "rx-kicks"));
    qobject_unref(s);

    /* Read ISR to clear it: only queue interrupts from here on */
    t->vdev->bus->get_queue_isr_status(t->vdev, rx_vq(t, 0));
    rx_post(t, 0, STATS_FRAMES + 1);
    for (i = 0; i < STATS_FRAMES; i++) {
        rx_bytes += inject(t, i);
    }
    for (i = 0; i < STATS_FRAMES; i++) {
        rx_expect(t, 0, i);
    }
    qvirtio_wait_queue_isr(t->qts, t->vdev, rx_vq(t, 0), TIMEOUT_US);
    tx_bytes = tx_frames(t, 0, NEXT_PHASE, STATS_FRAMES);
    for (i = 0; i < STATS_FRAMES; i++) {
        peer_expect(t, NEXT_PHASE + i);
    }
    qvirtio_wait_queue_isr(t->qts, t->vdev, tx_vq(t, 0), TIMEOUT_US);

    wait_stat(t, 0, "tx-packets", STATS_FRAMES);
    s = dp_query(t->qts, t->nic, 0, NULL);
    g_assert_cmpint(qdict_get_int(s, "rx-packets"), ==, STATS_FRAMES);
    g_assert_cmpint(qdict_get_int(s, "rx-bytes"), ==, rx_bytes);
    g_assert_cmpint(qdict_get_int(s, "tx-packets"), ==, STATS_FRAMES);
    g_assert_cmpint(qdict_get_int(s, "tx-bytes"), ==, tx_bytes);
    g_assert_cmpint(qdict_get_int(s, "rx-dropped"), ==, 0);
    g_assert_cmpint(qdict_get_int(s, "tx-dropped"), ==, 0);
    g_assert_cmpint(qdict_get_int(s, "rx-no-buffers"), ==, 0);
    g_assert_cmpint(qdict_get_int(s, "tx-budget-exhausted"), ==, 0);
    /* libqos kicks for each buffer, unless the device said not to */
    kicks = qdict_get_int(s, "tx-kicks") - qdict_get_int(s0, "tx-kicks");
    g_assert_cmpint(kicks, >=, 1);
    g_assert_cmpint(kicks, <=, STATS_FRAMES);
    kicks = qdict_get_int(s, "rx-kicks") - qdict_get_int(s0, "rx-kicks");
    g_assert_cmpint(kicks, >=, 1);
    g_assert_cmpint(kicks, <=, STATS_FRAMES + 1);
    qobject_unref(s0);
    /* At most one interrupt per batch; the guest wanted all of them */
    g_assert_cmpint(qdict_get_int(s, "rx-batches"), >=, 1);
    g_assert_cmpint(qdict_get_int(s, "rx-batches"), <=, STATS_FRAMES);
    g_assert_cmpint(qdict_get_int(s, "rx-interrupts"), ==,
                    qdict_get_int(s, "rx-batches"));
    g_assert_cmpint(qdict_get_int(s, "rx-interrupts-suppressed"), ==, 0);
    g_assert_cmpint(qdict_get_int(s, "tx-batches"), >=, 1);
    g_assert_cmpint(qdict_get_int(s, "tx-batches"), <=, STATS_FRAMES);
    g_assert_cmpint(qdict_get_int(s, "tx-interrupts"), ==,
                    qdict_get_int(s, "tx-batches"));
    g_assert_cmpint(qdict_get_int(s, "tx-interrupts-suppressed"), ==, 0);
    /* Each receive batch flushed from a bottom half; no stream to wait */
    g_assert_cmpint(qdict_get_int(s, "rx-bh-runs"), >=,
                    qdict_get_int(s, "rx-batches"));
    g_assert_cmpint(qdict_get_int(s, "tx-waited"), ==, 0);

    /* The same numbers in "info network" and "info stats" */
    info = qtest_hmp(t->qts, "info network");
    g_test_message("info network: %s", info);
    g_assert_cmpint(info_counter(info, t->nic, "rx-packets"), ==,
                    STATS_FRAMES);
    g_assert_cmpint(info_counter(info, t->nic, "tx-packets"), ==,
                    STATS_FRAMES);
    g_assert_cmpint(info_counter(info, t->nic, "tx-bytes"), ==, tx_bytes);
    g_assert_cmpint(info_counter(info, t->nic, "rx-interrupts"), ==,
                    qdict_get_int(s, "rx-interrupts"));
    hmp = qtest_hmp(t->qts, "info stats netdev tx-packets virtio-net");
    g_test_message("info stats netdev tx-packets virtio-net: %s", hmp);
    want = g_strdup_printf("netdev: %s queue 0\r\n"
                           "    tx-packets (cumulative): %d\r\n",
                           t->nic, STATS_FRAMES);
    g_assert_cmpstr(hmp, ==, want);

    /*
     * The guest asks not to be interrupted for received frames: none
     * comes, and the counters say why.  (The receive ring keeps a buffer,
     * so VIRTIO_F_NOTIFY_ON_EMPTY does not apply.)
     */
    vq_no_interrupt(t, rx_vq(t, 0));
    t->vdev->bus->get_queue_isr_status(t->vdev, rx_vq(t, 0));
    rx_post(t, 0, STATS_FRAMES);
    for (i = 0; i < STATS_FRAMES; i++) {
        inject(t, STATS_FRAMES + i);
    }
    for (i = 0; i < STATS_FRAMES; i++) {
        rx_expect(t, 0, STATS_FRAMES + i);
    }
    wait_stat(t, 0, "rx-packets", 2 * STATS_FRAMES);
    g_usleep(QUIET_US);
    g_assert_false(t->vdev->bus->get_queue_isr_status(t->vdev,
                                                      rx_vq(t, 0)));
    s2 = dp_query(t->qts, t->nic, 0, NULL);
    g_assert_cmpint(qdict_get_int(s2, "rx-packets"), ==, 2 * STATS_FRAMES);
    g_assert_cmpint(qdict_get_int(s2, "rx-interrupts"), ==,
                    qdict_get_int(s, "rx-interrupts"));
    g_assert_cmpint(qdict_get_int(s2, "rx-interrupts-suppressed"), >=, 1);
    g_assert_cmpint(qdict_get_int(s2, "rx-interrupts-suppressed"), ==,
                    qdict_get_int(s2, "rx-batches") -
                    qdict_get_int(s, "rx-batches"));
    qobject_unref(s2);
    qobject_unref(s);
    test_end(t);
}

static void dp_test_cleanup(void *opaque)
{
    DPTest *t = opaque;

    /* QEMU quits first, so that it does not see the interfaces go. */
    qtest_end();
    qos_invalidate_command_line();
    netns_destroy(&t->orig_netns, &t->sock, IF_QEMU);
    g_free(t->skip);
    g_free(t);
}

static void *dp_test_setup(GString *cmd_line, void *arg)
{
    DPTest *t = g_new0(DPTest, 1);
    g_autofree char *netdev = NULL;

    t->backend = arg;
    t->orig_netns = -1;
    t->sock = -1;
    t->skip = netns_enter(t);
    if (t->skip) {
        /* QEMU must start all the same: give the NIC some backend. */
        g_string_append(cmd_line, " -netdev hubport,hubid=0,id=hs0 ");
    } else {
        /*
         * The node's -device has no room for more options: -global gives
         * it its IOThread.
         */
        netdev = netdev_opts(t, "hs0", "");
        g_string_append_printf(cmd_line, " -object iothread,id=io0"
                               " -global virtio-net-pci.iothread=io0"
                               " -netdev %s ", netdev);
    }
    g_test_queue_destroy(dp_test_cleanup, t);
    return t;
}

/* ---- tests on a machine of their own ---- */

static DPTest *dp_boot(const char *backend, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

/*
 * Enter a namespace with @backend's interface and boot a PC with the
 * command line @fmt; NULL (test skipped) when that cannot be done.
 */
static DPTest *dp_boot(const char *backend, const char *fmt, ...)
{
    DPTest *t = g_new0(DPTest, 1);
    g_autofree char *cmd = NULL;
    va_list ap;

    t->backend = backend;
    t->orig_netns = -1;
    t->sock = -1;
    t->skip = netns_enter(t);
    if (t->skip) {
        g_test_skip(t->skip);
        g_free(t->skip);
        g_free(t);
        return NULL;
    }
    va_start(ap, fmt);
    cmd = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    t->qs = qtest_pc_boot("%s", cmd);
    t->qts = t->qs->qts;
    t->alloc = &t->qs->alloc;
    return t;
}

static void dp_shutdown(DPTest *t)
{
    qtest_shutdown(t->qs);
    netns_destroy(&t->orig_netns, &t->sock, IF_QEMU);
    g_free(t);
}

/*
 * Hot-unplug a device while frames flow to it and from it: QEMU goes on,
 * and the backend serves a device plugged in again.
 */
static void test_hotplug(void)
{
    DPTest *t;
    Injector inj;
    uint32_t round, base, sent;

    t = dp_boot("af-packet", "-object iothread,id=io0"
                " -netdev af-packet,id=hs0,ifname=" IF_QEMU);
    if (!t) {
        return;
    }
    for (round = 0; round < 2; round++) {
        g_autofree char *info = NULL;
        g_autofree char *nics = NULL;

        base = (round + 1) * 2 * NEXT_PHASE;
        qtest_qmp_device_add(t->qts, "virtio-net-pci", "hp0",
                             "{ 'netdev': 'hs0', 'iothread': 'io0',"
                             " 'addr': %s }", stringify(HP_SLOT));
        nic_start(t, HP_SLOT, "hp0");

        /* Traffic both ways, after the frames of the last round */
        t->stale_below = base;
        t->stale = 0;
        exchange(t, base, base + STATS_FRAMES, STATS_FRAMES);

        /* Gone in the middle of a stream in and a ring of frames out */
        rx_fill(t, 0);
        injector_start(&inj, t, base + NEXT_PHASE);
        g_usleep(20 * 1000);
        tx_send(t, 0, base + 2 * STATS_FRAMES, tx_vq(t, 0)->size);
        unplug(t->qts, "hp0", HP_SLOT);
        g_usleep(20 * 1000);
        sent = injector_stop(&inj);
        g_test_message("round %u: %u frames injected around the unplug, "
                       "%u late frames of the round before", round, sent,
                       t->stale);
        g_assert_cmpuint(sent, >, 0);
        nic_end(t);

        g_assert_true(query_running(t->qts));
        nics = dp_nics(t->qts);
        g_assert_cmpstr(nics, ==, "");
        info = qtest_hmp(t->qts, "info network");
        g_assert_nonnull(strstr(info, "hs0: index=0,type=af-packet"));
        g_assert_null(strstr(info, "hp0"));
    }
    dp_shutdown(t);
}

/*
 * Fill both pairs' receive queues, send @frames frames numbered from
 * @base from the wire and take them from whichever pair they land on:
 * each comes once, whole, on one pair, in order within its pair.  Per
 * pair, @count gets how many it took and @last the last number.
 */
static void mq_receive(DPTest *t, uint32_t base, uint32_t frames,
                       unsigned int count[2], uint32_t last[2])
{
    g_autofree bool *seen = g_new0(bool, frames);
    uint8_t got[MAX_FRAME];
    unsigned int p, received;
    gint64 deadline;
    uint32_t i, seq;
    size_t n;

    count[0] = count[1] = 0;
    rx_fill(t, 0);
    rx_fill(t, 1);
    for (i = 0; i < frames; i++) {
        inject(t, base + i);
    }
    deadline = g_get_monotonic_time() + TIMEOUT_US;
    for (received = 0; received < frames;) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        for (p = 0; p < 2; p++) {
            n = rx_get(t, p, got, false);
            if (!n) {
                continue;
            }
            seq = check_frame(got, n, t->mac, peer_mac);
            g_assert_cmpuint(seq - base, <, frames);
            g_assert_false(seen[seq - base]);
            g_assert_true(count[p] == 0 || seq > last[p]);
            seen[seq - base] = true;
            last[p] = seq;
            count[p]++;
            received++;
        }
    }
    rx_expect_none(t, 0);
    rx_expect_none(t, 1);
}

/*
 * A device @id with two queue pairs in two IOThreads (iothread-vq-mapping,
 * which only -device JSON and QMP can express) over a two-queue af-packet
 * backend, started by the driver; NULL (test skipped) as for dp_boot().
 */
static DPTest *dp_boot_two_pairs(const char *id)
{
    DPTest *t;

    t = dp_boot("af-packet", "-object iothread,id=io0 -object iothread,id=io1"
                " -netdev af-packet,id=hs0,ifname=" IF_QEMU ",queues=2"
                " -device '{ \"driver\": \"virtio-net-pci\", \"id\": \"%s\","
                " \"netdev\": \"hs0\", \"mq\": true, \"vectors\": 6,"
                " \"addr\": \"%d\", \"iothread-vq-mapping\":"
                " [ { \"iothread\": \"io0\" }, { \"iothread\": \"io1\" } ] }'",
                id, DP_SLOT);
    if (t) {
        nic_start(t, DP_SLOT, id);
        g_assert_cmpuint(t->pairs, ==, 2);
    }
    return t;
}

/*
 * Two queue pairs in two IOThreads (iothread-vq-mapping, which only -device
 * JSON and QMP can express): both pairs carry traffic and count it apart.
 */
static void test_multiqueue(void)
{
    uint32_t last[MAX_PAIRS];
    unsigned int count[MAX_PAIRS];
    unsigned int nresults, p;
    int64_t irqs, batches, suppressed;
    g_autofree char *nics = NULL;
    DPTest *t;
    QDict *s;
    uint32_t i;

    t = dp_boot_two_pairs("mq0");
    if (!t) {
        return;
    }
    nics = dp_nics(t->qts);
    g_assert_cmpstr(nics, ==, "mq0");
    for (p = 0; p < 2; p++) {
        s = dp_query(t->qts, "mq0", p, &nresults);
        g_assert_nonnull(s);
        g_assert_cmpuint(nresults, ==, 2);
        qobject_unref(s);
    }
    ctrl_mq(t, 2);

    /* Each pair sends through its own backend queue */
    for (p = 0; p < 2; p++) {
        tx_frames(t, p, (p + 1) * NEXT_PHASE, MQ_FRAMES);
        for (i = 0; i < MQ_FRAMES; i++) {
            peer_expect(t, (p + 1) * NEXT_PHASE + i);
        }
    }
    for (p = 0; p < 2; p++) {
        g_assert_cmpint(wait_stat(t, p, "tx-packets", MQ_FRAMES), ==,
                        MQ_FRAMES);
    }

    /* Flows spread over the backend's fanout group */
    mq_receive(t, 0, MQ_FRAMES, count, last);
    g_test_message("frames per queue pair: %u %u", count[0], count[1]);
    g_assert_cmpuint(count[0], >, 0);
    g_assert_cmpuint(count[1], >, 0);
    for (p = 0; p < 2; p++) {
        g_assert_cmpint(wait_stat(t, p, "rx-packets", count[p]), ==,
                        count[p]);
    }

    /*
     * Pair 1 asks not to be interrupted; pair 0 still is.  The frames of
     * a flow stay on its pair: 'last[1]' went to pair 1.
     */
    vq_no_interrupt(t, rx_vq(t, 1));
    vq_no_interrupt(t, tx_vq(t, 1));
    s = dp_query(t->qts, "mq0", 1, NULL);
    for (i = 0; i < MQ_FRAMES / 2; i++) {
        inject(t, last[1] + (i + 1) * FLOWS);
    }
    for (i = 0; i < MQ_FRAMES / 2; i++) {
        rx_expect(t, 1, last[1] + (i + 1) * FLOWS);
    }
    rx_expect_none(t, 0);
    tx_frames(t, 1, 3 * NEXT_PHASE, MQ_FRAMES / 2);
    for (i = 0; i < MQ_FRAMES / 2; i++) {
        peer_expect(t, 3 * NEXT_PHASE + i);
    }
    wait_stat(t, 1, "rx-packets", count[1] + MQ_FRAMES / 2);
    wait_stat(t, 1, "tx-packets", MQ_FRAMES + MQ_FRAMES / 2);
    irqs = get_stat(t, 1, "rx-interrupts");
    batches = get_stat(t, 1, "rx-batches");
    suppressed = get_stat(t, 1, "rx-interrupts-suppressed");
    g_assert_cmpint(irqs, ==, qdict_get_int(s, "rx-interrupts"));
    g_assert_cmpint(suppressed, >=, 1);
    g_assert_cmpint(suppressed, ==,
                    batches - qdict_get_int(s, "rx-batches"));
    irqs = get_stat(t, 1, "tx-interrupts");
    batches = get_stat(t, 1, "tx-batches");
    suppressed = get_stat(t, 1, "tx-interrupts-suppressed");
    g_assert_cmpint(irqs, ==, qdict_get_int(s, "tx-interrupts"));
    g_assert_cmpint(suppressed, >=, 1);
    g_assert_cmpint(suppressed, ==,
                    batches - qdict_get_int(s, "tx-batches"));
    qobject_unref(s);
    g_assert_cmpint(get_stat(t, 0, "rx-interrupts-suppressed"), ==, 0);
    g_assert_cmpint(get_stat(t, 0, "tx-interrupts-suppressed"), ==, 0);

    nic_end(t);
    dp_shutdown(t);
}

/*
 * Frames both ways on both pairs of a 2-pair device, numbered from @base:
 * CTRL_FRAMES from the guest on each pair, then 2 * CTRL_FRAMES from the
 * wire (see mq_receive()).
 */
static void mq_traffic(DPTest *t, uint32_t base)
{
    uint32_t last[MAX_PAIRS];
    unsigned int count[MAX_PAIRS];
    unsigned int p;
    uint32_t i;

    for (p = 0; p < 2; p++) {
        tx_frames(t, p, base + p * CTRL_FRAMES, CTRL_FRAMES);
        for (i = 0; i < CTRL_FRAMES; i++) {
            peer_expect(t, base + p * CTRL_FRAMES + i);
        }
    }
    mq_receive(t, base, 2 * CTRL_FRAMES, count, last);
}

/*
 * Control commands change what the IOThreads read, and a guest can get
 * them wrong: each malformed command is refused with VIRTIO_NET_ERR and
 * the queue pairs go on; one without room for the ack breaks the device
 * (it needs a reset) but not QEMU; the device works again after a reset.
 */
static void test_bad_ctrl(void)
{
    static const struct {
        const char *what;
        uint8_t cmd[6];
        size_t len;
    } bad[] = {
        { "0 queue pairs",
          { VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 0, 0 }, 4 },
        { "more queue pairs than the device has",
          { VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 3, 0 }, 4 },
        { "0x8000 queue pairs",
          { VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 0, 0x80 },
          4 },
        { "a truncated queue pair count",
          { VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 2 }, 3 },
        { "an unknown MQ command",
          { VIRTIO_NET_CTRL_MQ, 0x55, 2, 0 }, 4 },
        { "an unknown class", { 0xee, 0 }, 2 },
        { "PROMISC without its argument",
          { VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC }, 2 },
        { "a MAC table longer than the buffer",
          { VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET,
            0, 0, 0, 0x10 }, 6 },
    };
    uint8_t mq2[4] = { VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
                       2, 0 };
    uint32_t base = 0;
    unsigned int i;
    DPTest *t;

    t = dp_boot_two_pairs("bc0");
    if (!t) {
        return;
    }
    ctrl_mq(t, 2);
    mq_traffic(t, base);

    for (i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_test_message("control command with %s", bad[i].what);
        g_assert_cmpint(ctrl_cmd(t, bad[i].cmd, bad[i].len, 2, true), ==,
                        VIRTIO_NET_ERR);
        base += NEXT_PHASE;
        mq_traffic(t, base);
    }

    /* Any layout of the buffers is valid: the header split in two */
    g_assert_cmpint(ctrl_cmd(t, mq2, sizeof(mq2), 1, true), ==,
                    VIRTIO_NET_OK);

    /* One pair, then two again, with traffic in between */
    ctrl_mq(t, 1);
    base += NEXT_PHASE;
    tx_frames(t, 0, base, CTRL_FRAMES);
    for (i = 0; i < CTRL_FRAMES; i++) {
        peer_expect(t, base + i);
    }
    ctrl_mq(t, 2);
    base += NEXT_PHASE;
    mq_traffic(t, base);

    /* No room for the ack: the device breaks, QEMU goes on */
    g_assert_cmpint(ctrl_cmd(t, mq2, sizeof(mq2), 2, false), ==, -1);
    g_assert_cmphex(t->vdev->bus->get_status(t->vdev) &
                    VIRTIO_CONFIG_S_NEEDS_RESET, ==,
                    VIRTIO_CONFIG_S_NEEDS_RESET);
    g_assert_true(query_running(t->qts));
    base += NEXT_PHASE;
    tx_send(t, 0, base, 1);
    peer_expect_none(t);

    /* A reset brings it back */
    nic_end(t);
    nic_start(t, DP_SLOT, "bc0");
    ctrl_mq(t, 2);
    base += NEXT_PHASE;
    mq_traffic(t, base);
    g_assert_true(query_running(t->qts));

    nic_end(t);
    dp_shutdown(t);
}

/*
 * device_add with @props (JSON members after driver, id and addr) must
 * fail with @msg.
 */
static void device_add_fails(QTestState *qts, const char *props,
                             const char *msg)
{
    g_autofree char *args = g_strdup_printf("{ 'driver': 'virtio-net-pci',"
                                            " 'id': 'nd0', 'addr': '%d', %s }",
                                            HP_SLOT, props);

    qmp_fails(qts, "device_add", args, msg);
}

/* Configurations the dataplane cannot run, refused with a reason */
static void test_errors(void)
{
    g_autofree char *nics = NULL;
    DPTest *t;
    QDict *rsp;
    int sv[2];

    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
    t = dp_boot("af-packet", "-object iothread,id=io0 -object iothread,id=io1"
                " -netdev af-packet,id=ap0,ifname=" IF_QEMU
                " -netdev af-packet,id=ap2,ifname=" IF_QEMU ",queues=2"
                " -netdev hubport,hubid=0,id=hp0"
                " -netdev hubport,hubid=1,id=hp1"
                " -netdev socket,id=so0,fd=%d"
                " -device virtio-net-pci,id=plain,netdev=hp1,addr=%d",
                sv[1], DP_SLOT);
    close(sv[1]);
    if (!t) {
        close(sv[0]);
        return;
    }

    /*
     * All with the same id: a failure that left something behind would
     * turn the next one into "Duplicate ID".
     */
    device_add_fails(t->qts, "'netdev': 'ap0', 'iothread': 'io0',"
                     " 'iothread-vq-mapping': [ { 'iothread': 'io1' } ]",
                     "virtio-net: iothread and iothread-vq-mapping cannot "
                     "be set at the same time");
    device_add_fails(t->qts, "'netdev': 'ap0', 'notf_coal': true,"
                     " 'ctrl_vq': false",
                     "virtio-net: notf_coal and vq_notf_coal need ctrl_vq");
    device_add_fails(t->qts, "'netdev': 'ap0', 'iothread': 'io0',"
                     " 'vq_notf_coal': true, 'ctrl_vq': false",
                     "virtio-net: notf_coal and vq_notf_coal need ctrl_vq");
    device_add_fails(t->qts, "'netdev': 'ap0', 'iothread': 'io0',"
                     " 'ioeventfd': false",
                     "virtio-net: an iothread needs ioeventfd=on");
    device_add_fails(t->qts, "'netdev': 'ap0', 'iothread': 'io0',"
                     " 'tx': 'timer'",
                     "virtio-net: tx=timer cannot be used with an iothread");
    device_add_fails(t->qts, "'netdev': 'ap0', 'iothread': 'io0',"
                     " 'guest_rsc_ext': true",
                     "virtio-net: guest_rsc_ext=on cannot be used with an "
                     "iothread");
    device_add_fails(t->qts, "'netdev': 'ap2', 'mq': true, 'rss': true,"
                     " 'iothread-vq-mapping': [ { 'iothread': 'io0' },"
                     " { 'iothread': 'io1' } ]",
                     "virtio-net: rss=on needs all queue pairs in one "
                     "iothread");
    device_add_fails(t->qts, "'netdev': 'hp0', 'iothread': 'io0'",
                     "virtio-net: netdev 'hp0' (type hubport) cannot run in "
                     "an IOThread; use a tap or af-packet netdev, or no "
                     "iothread");
    device_add_fails(t->qts, "'netdev': 'so0', 'iothread': 'io0'",
                     "virtio-net: netdev 'so0' (type socket) cannot run in "
                     "an IOThread");

    /* iothread-vq-mapping counts queue pairs */
    device_add_fails(t->qts, "'netdev': 'ap0', 'iothread-vq-mapping':"
                     " [ { 'iothread': 'io0', 'vqs': [ 1 ] } ]",
                     "virtio-net: iothread-vq-mapping: vq index 1 for "
                     "IOThread \"io0\" must be less than num_queues 1");
    device_add_fails(t->qts, "'netdev': 'ap2', 'mq': true,"
                     " 'iothread-vq-mapping':"
                     " [ { 'iothread': 'io0', 'vqs': [ 0 ] } ]",
                     "virtio-net: iothread-vq-mapping: missing vq 1 "
                     "IOThread assignment");
    device_add_fails(t->qts, "'netdev': 'ap0', 'iothread-vq-mapping':"
                     " [ { 'iothread': 'nosuchthread' } ]",
                     "IOThread \"nosuchthread\" object does not exist");

    /* A filter keeps its netdev in the main loop */
    qtest_qmp_assert_success(t->qts, "{ 'execute': 'object-add',"
                             " 'arguments': { 'qom-type': 'filter-buffer',"
                             " 'id': 'fb0', 'netdev': 'ap0',"
                             " 'interval': 1000 } }");
    device_add_fails(t->qts, "'netdev': 'ap0', 'iothread': 'io0'",
                     "virtio-net: netdev 'ap0' has filters, which run in "
                     "the main loop; remove them or use no iothread");
    qtest_qmp_assert_success(t->qts, "{ 'execute': 'object-del',"
                             " 'arguments': { 'id': 'fb0' } }");

    /* vhost does its own dataplane (when this host has vhost-net) */
    rsp = qtest_qmp(t->qts, "{ 'execute': 'netdev_add', 'arguments': {"
                    " 'type': 'tap', 'id': 'tv0', 'ifname': '" IF_VHOST "',"
                    " 'script': 'no', 'downscript': 'no', 'vhost': true } }");
    if (qdict_haskey(rsp, "error")) {
        g_test_message("tap with vhost=on not checked: %s",
                       qdict_get_str(qdict_get_qdict(rsp, "error"), "desc"));
    } else {
        device_add_fails(t->qts, "'netdev': 'tv0', 'iothread': 'io0'",
                         "virtio-net: netdev 'tv0' uses vhost, which does its "
                         "own dataplane; use vhost=off with an iothread");
    }
    qobject_unref(rsp);

    /* The id is still free; only the dataplane NIC reports counters */
    qtest_qmp_device_add(t->qts, "virtio-net-pci", "nd0",
                         "{ 'netdev': 'ap0', 'iothread': 'io0',"
                         " 'addr': %s }", stringify(HP_SLOT));
    nics = dp_nics(t->qts);
    g_assert_cmpstr(nics, ==, "nd0");

    /* No filter joins a netdev in an IOThread, until its NIC goes */
    qmp_fails(t->qts, "object-add", "{ 'qom-type': 'filter-buffer',"
              " 'id': 'fb1', 'netdev': 'ap0', 'interval': 1000 }",
              "netdev 'ap0' runs in an IOThread; filters are not supported "
              "there");
    unplug(t->qts, "nd0", HP_SLOT);
    qtest_qmp_assert_success(t->qts, "{ 'execute': 'object-add',"
                             " 'arguments': { 'qom-type': 'filter-buffer',"
                             " 'id': 'fb1', 'netdev': 'ap0',"
                             " 'interval': 1000 } }");

    g_assert_true(query_running(t->qts));
    dp_shutdown(t);
    close(sv[0]);
}

/*
 * A malformed transmit buffer (device-writable, so no header to read)
 * breaks the device in its IOThread with virtio_error(): nothing is sent
 * or counted as sent, and QEMU keeps running and answering.
 */
static void test_bad_tx(void *obj, void *data, QGuestAllocator *alloc)
{
    DPTest *t = test_start(obj, data, alloc);
    QVirtQueue *vq;
    uint32_t head;

    if (!t) {
        return;
    }
    vq = tx_vq(t, 0);
    head = qvirtqueue_add(t->qts, vq, t->pair[0].tx_bufs, BUF_SIZE, true,
                          false);
    qvirtqueue_kick(t->qts, t->vdev, vq, head);
    g_usleep(200 * 1000);

    peer_expect_none(t);
    g_assert_true(query_running(t->qts));
    g_assert_cmpint(get_stat(t, 0, "tx-packets"), ==, 0);
    g_assert_cmpint(get_stat(t, 0, "tx-bytes"), ==, 0);
    test_end(t);
}

/* ---- what a driver changes under running queues ---- */

/*
 * Make af-packet's socket push back: a qdisc that sends at @rate holds
 * the frames, and with them the socket's send buffer.
 */
static void slow_qdisc(const char *rate)
{
    g_autofree char *cmd =
        g_strdup_printf("tc qdisc replace dev " IF_QEMU " root tbf rate %s"
                        " burst 4000 limit 10000000", rate);

    g_assert_true(netns_run(cmd));
}

/*
 * A device @id in HP_SLOT over af-packet, in io0 (-object iothread options
 * @io0_opts), started by the driver
 */
static DPTest *dp_boot_hotplugged_in(const char *id, const char *io0_opts)
{
    DPTest *t = dp_boot("af-packet", "-object iothread,id=io0%s"
                        " -netdev af-packet,id=hs0,ifname=" IF_QEMU,
                        io0_opts);

    if (t) {
        qtest_qmp_device_add(t->qts, "virtio-net-pci", id,
                             "{ 'netdev': 'hs0', 'iothread': 'io0',"
                             " 'addr': %s }", stringify(HP_SLOT));
        nic_start(t, HP_SLOT, id);
    }
    return t;
}

static DPTest *dp_boot_hotplugged(const char *id)
{
    return dp_boot_hotplugged_in(id, "");
}

/*
 * The guest ejects its device while af-packet holds one of its frames
 * (the socket pushed back): the frame completes before the queue pair's
 * state goes, and QEMU goes on.
 */
static void test_unplug_busy(void)
{
    g_autofree char *nics = NULL;
    DPTest *t = dp_boot_hotplugged("ub0");

    if (!t) {
        return;
    }
    slow_qdisc("8kbit");
    tx_send(t, 0, 0, tx_vq(t, 0)->size);
    wait_stat(t, 0, "tx-backend-busy", 1);
    unplug(t->qts, "ub0", HP_SLOT);
    nic_end(t);

    g_assert_true(query_running(t->qts));
    nics = dp_nics(t->qts);
    g_assert_cmpstr(nics, ==, "");
    dp_shutdown(t);
}

/*
 * Pauses of the queue pair (control commands) while af-packet pushes back
 * drop nothing: every frame leaves, in order, and is counted as sent.
 */
static void test_pause_busy(void)
{
    uint8_t promisc[3] = { VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC };
    DPTest *t = dp_boot_hotplugged("pb0");
    unsigned int i, n;

    if (!t) {
        return;
    }
    n = tx_vq(t, 0)->size;
    slow_qdisc("256kbit");
    tx_send(t, 0, 0, n);
    wait_stat(t, 0, "tx-backend-busy", 1);
    for (i = 0; i < PAUSES; i++) {
        promisc[2] = i & 1;
        g_assert_cmpint(ctrl_cmd(t, promisc, sizeof(promisc), 2, true), ==,
                        VIRTIO_NET_OK);
    }
    tx_wait(t, 0);
    for (i = 0; i < n; i++) {
        peer_expect(t, i);
    }
    g_test_message("%" PRId64 " times busy",
                   get_stat(t, 0, "tx-backend-busy"));
    g_assert_cmpint(get_stat(t, 0, "tx-dropped"), ==, 0);
    g_assert_cmpint(wait_stat(t, 0, "tx-packets", n), ==, n);
    dp_shutdown(t);
}

/*
 * Keep both directions of pair 0 busy for one step: give back the used
 * receive buffers, take the used transmit buffers, queue more frames.
 * Frames are not checked: the driver is changing their layout.
 */
static void churn(DPTest *t, uint32_t *seq)
{
    DPPair *p = &t->pair[0];
    uint32_t desc, len;

    while (qvirtqueue_get_buf(t->qts, rx_vq(t, 0), &desc, &len)) {
        p->rx_posted--;
    }
    rx_fill(t, 0);
    while (qvirtqueue_get_buf(t->qts, tx_vq(t, 0), &desc, &len)) {
        p->tx_pending--;
    }
    if (p->tx_pending + 8 <= tx_vq(t, 0)->size) {
        tx_send(t, 0, *seq, 8);
        *seq += 8;
    }
}

/*
 * Frames for another MAC flood in (a busy segment, the interface
 * promiscuous) while af-packet's socket pushes back on the guest's: the
 * IOThread's polling keeps finding frames in the receive ring, so it does
 * not wait on descriptors, and only io_poll can see that the socket takes
 * frames again.  The guest's frames must leave during the flood.
 */
static void test_tx_flood(void)
{
    static const uint8_t other_mac[ETH_ALEN] = { 0x02, 0, 0, 0, 0, 0x99 };
    DPTest *t = dp_boot_hotplugged_in("tf0", ",poll-max-ns=100000000");
    Injector inj;
    unsigned int i, n;

    if (!t) {
        return;
    }
    n = tx_vq(t, 0)->size;
    slow_qdisc("256kbit");
    injector_start_to(&inj, t, 0, other_mac);
    tx_send(t, 0, 0, n);
    for (i = 0; i < n; i++) {
        peer_expect(t, i);
    }
    tx_wait(t, 0);
    n = injector_stop(&inj);
    g_test_message("%u frames of flood, %" PRId64 " times busy", n,
                   get_stat(t, 0, "tx-backend-busy"));
    g_assert_cmpint(get_stat(t, 0, "tx-backend-busy"), >, 0);
    dp_shutdown(t);
}

/*
 * A guest that keeps its transmit ring topped up from another vCPU: a
 * thread of the test writes the ring in guest RAM (a shared memory
 * backend) and makes frames available as soon as the device has used
 * some, fewer than one run's budget at a time.  Each round of the
 * IOThread ends with an empty ring, and the re-check after it finds the
 * next frames.
 */
typedef struct Refiller {
    uint8_t *ram;               /* guest RAM, mapped here */
    uint64_t avail;             /* the TX ring's avail and used rings */
    uint64_t used;
    unsigned int inflight;      /* frames the guest keeps available */
    unsigned int size;          /* of the ring */
    gint64 period_us;           /* else: @inflight more this often */
    gint64 next;                /* ...from this time on */
    int cpu;                    /* where the refiller runs */
    cpu_set_t cpus;             /* the test's, before it pinned itself */
    bool want_kick;             /* the refiller saw notifications on */
    bool stop;
    uint16_t idx;               /* the next avail->idx */
    uint64_t published;
    GThread *thread;
} Refiller;

/* Run every thread of process @pid on @cpu only */
static void pin_threads(pid_t pid, int cpu)
{
    g_autofree char *dir = g_strdup_printf("/proc/%d/task", pid);
    GDir *tasks = g_dir_open(dir, 0, NULL);
    const char *tid;
    cpu_set_t set;

    g_assert_nonnull(tasks);
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    while ((tid = g_dir_read_name(tasks))) {
        g_assert_cmpint(sched_setaffinity(atoi(tid), sizeof(set), &set), ==, 0);
    }
    g_dir_close(tasks);
}

static gpointer refiller_run(gpointer opaque)
{
    Refiller *r = opaque;
    uint16_t *avail_idx = (uint16_t *)(r->ram + r->avail + 2);
    uint16_t *used_idx = (uint16_t *)(r->ram + r->used + 2);
    uint16_t *used_flags = (uint16_t *)(r->ram + r->used);
    cpu_set_t set;

    if (r->cpu >= 0) {
        CPU_ZERO(&set);
        CPU_SET(r->cpu, &set);
        g_assert_cmpint(sched_setaffinity(0, sizeof(set), &set), ==, 0);
    }
    while (!qatomic_read(&r->stop)) {
        uint16_t used = le16_to_cpu(qatomic_load_acquire(used_idx));
        uint16_t more = used + r->inflight - r->idx;

        if (r->period_us) {
            /* A stream: a burst each period, whatever the device used */
            gint64 now = g_get_monotonic_time();

            more = (uint16_t)(r->idx + r->inflight - used) <= r->size &&
                   now >= r->next ? r->inflight : 0;
            if (more) {
                r->next = MAX(r->next + r->period_us, now);
            }
        } else if ((uint16_t)(r->idx - used) >= r->inflight) {
            more = 0;
        }
        if (more) {
            qatomic_set(&r->published, r->published + more);
            r->idx += more;
            qatomic_store_release(avail_idx, cpu_to_le16(r->idx));
            /* The avail index out before the flags are read, as a driver */
            smp_mb();
            if (!(le16_to_cpu(qatomic_read(used_flags)) &
                  VRING_USED_F_NO_NOTIFY)) {
                /* The device stopped and wants a kick: ask the test */
                qatomic_set(&r->want_kick, true);
            }
        }
    }
    return NULL;
}

/*
 * Boot a PC whose RAM the test maps too, with the virtio-net-pci device
 * @id (@props) in an IOThread that polls by default if @poll, else does
 * not poll, on af-packet netdev hs0
 * (@netdev_props, each after a comma), and set up r->ram and
 * the transmit ring of pair 0 for refiller_start(): descriptor N holds
 * frame N, and the avail ring offers N at N.  NULL when the test cannot
 * run here.
 */
static DPTest *refiller_boot(Refiller *r, const char *id, const char *props,
                             const char *netdev_props, bool poll)
{
    g_autofree char *ram_path = g_strdup("/dev/shm/netplane-ram-XXXXXX");
    uint8_t buf[BUF_SIZE];
    QVirtQueue *vq;
    DPTest *t;
    unsigned int i;
    size_t len;
    int fd;

    fd = mkstemp(ram_path);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, REFILLER_RAM), ==, 0);
    t = dp_boot("af-packet", "-m 128M -object memory-backend-file,id=ram0,"
                "size=128M,mem-path=%s,share=on -machine memory-backend=ram0"
                " -object iothread,id=io0%s"
                " -netdev af-packet,id=hs0,ifname=" IF_QEMU "%s"
                " -device virtio-net-pci,id=%s,netdev=hs0,iothread=io0,%s"
                "addr=%d", ram_path, poll ? "" : ",poll-max-ns=0",
                netdev_props, id, props, HP_SLOT);
    unlink(ram_path);
    if (!t) {
        close(fd);
        return NULL;
    }
    nic_start(t, HP_SLOT, id);
    *r = (Refiller) { .cpu = -1 };
    r->ram = mmap(NULL, REFILLER_RAM, PROT_READ | PROT_WRITE, MAP_SHARED,
                  fd, 0);
    g_assert_true(r->ram != MAP_FAILED);
    close(fd);

    vq = tx_vq(t, 0);
    for (i = 0; i < vq->size; i++) {
        uint64_t addr = t->pair[0].tx_bufs + (uint64_t)i * BUF_SIZE;
        struct vring_desc *desc = (struct vring_desc *)(r->ram + vq->desc) + i;

        memset(buf, 0, t->hdr_len);
        len = make_frame(buf + t->hdr_len, peer_mac, t->mac, i);
        memcpy(r->ram + addr, buf, t->hdr_len + len);
        desc->addr = cpu_to_le64(addr);
        desc->len = cpu_to_le32(t->hdr_len + len);
        desc->flags = 0;
        desc->next = 0;
        ((uint16_t *)(r->ram + vq->avail + 4))[i] = cpu_to_le16(i);
    }
    r->avail = vq->avail;
    r->used = vq->used;
    r->size = vq->size;
    return t;
}

/*
 * For @us microseconds, kick pair 0's TX queue whenever the refiller saw
 * the device turn notifications on (it stopped), as a guest would: the
 * refiller cannot kick itself, and loses the race with the re-check now
 * and then.
 */
static void refiller_kick_for(Refiller *r, DPTest *t, gint64 us)
{
    gint64 end = g_get_monotonic_time() + us;

    while (g_get_monotonic_time() < end) {
        if (qatomic_xchg(&r->want_kick, false)) {
            t->vdev->bus->virtqueue_kick(t->vdev, tx_vq(t, 0));
        } else {
            g_usleep(20);
        }
    }
}

/*
 * Keep @inflight frames available on pair 0's TX ring from a thread of
 * its own, until refiller_stop(), and kick until the device has sent
 * @frames of them.
 */
static void refiller_start(Refiller *r, DPTest *t, unsigned int inflight,
                           int64_t frames)
{
    QVirtQueue *vq = tx_vq(t, 0);

    r->inflight = inflight;
    if (sysconf(_SC_NPROCESSORS_ONLN) >= 2) {
        /*
         * The refiller gets a CPU of its own, QEMU and the test the
         * other: it sees each flush at once, as a vCPU would.
         */
        g_assert_cmpint(sched_getaffinity(0, sizeof(r->cpus), &r->cpus),
                        ==, 0);
        pin_threads(getpid(), 0);
        pin_threads(qtest_pid(t->qts), 0);
        r->cpu = 1;
    }
    r->thread = g_thread_new("refiller", refiller_run, r);
    while (!qatomic_read(&r->published)) {
        g_usleep(100);
    }
    t->vdev->bus->virtqueue_kick(t->vdev, vq);
    while (get_stat(t, 0, "tx-packets") < frames) {
        refiller_kick_for(r, t, 10000);
    }
}

static void refiller_stop(Refiller *r)
{
    qatomic_set(&r->stop, true);
    g_thread_join(r->thread);
    if (r->cpu >= 0) {
        g_assert_cmpint(sched_setaffinity(0, sizeof(r->cpus), &r->cpus),
                        ==, 0);
    }
}

/*
 * While a guest refills its TX ring, less than a budget at a time, as fast
 * as the IOThread sends, a pause of the queue pair (stop here; control
 * commands, set_link and migration alike) waits for the IOThread under
 * the BQL.  One budget bounds each run of the TX queue, the rounds that
 * the re-check starts included: the IOThread yields, and the pause comes
 * in at once rather than when the guest stops.  (The refiller loses the
 * race with the re-check now and then, which ends the run anyway: the
 * budget count is what shows a run that went on.)
 */
static void test_tx_starve(void)
{
    Refiller r;
    gint64 start, took = 0;
    DPTest *t = refiller_boot(&r, "ts0", "", "", false);
    unsigned int i;

    if (!t) {
        return;
    }
    refiller_start(&r, t, tx_vq(t, 0)->size * 3 / 4, 16 * tx_vq(t, 0)->size);
    for (i = 0; i < STARVE_STOPS; i++) {
        /* The refiller may have lost a race: kick, as a guest would */
        t->vdev->bus->virtqueue_kick(t->vdev, tx_vq(t, 0));
        g_usleep(10000);
        start = g_get_monotonic_time();
        qtest_qmp_assert_success(t->qts, "{ 'execute': 'stop' }");
        took = MAX(took, g_get_monotonic_time() - start);
        qtest_qmp_assert_success(t->qts, "{ 'execute': 'cont' }");
    }
    refiller_stop(&r);

    g_test_message("the longest stop took %" PRId64 " us; %" PRIu64
                   " frames offered, %" PRId64 " sent, budget spent %" PRId64
                   " times", took, r.published, get_stat(t, 0, "tx-packets"),
                   get_stat(t, 0, "tx-budget-exhausted"));
    g_assert_cmpint(took, <, G_USEC_PER_SEC);
    g_assert_cmpint(get_stat(t, 0, "tx-budget-exhausted"), >, 0);
    g_assert_true(query_running(t->qts));
    munmap(r.ram, REFILLER_RAM);
    dp_shutdown(t);
}

/* Counter @name of netdev hs0 (provider net) */
static int64_t netdev_stat(DPTest *t, const char *name)
{
    QDict *rsp;
    QListEntry *e, *f;
    int64_t val = -1;

    rsp = qtest_qmp(t->qts, "{ 'execute': 'query-stats', 'arguments': {"
                    " 'target': 'netdev',"
                    " 'providers': [ { 'provider': 'net' } ] } }");
    g_assert_false(qdict_haskey(rsp, "error"));
    QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "return"), e) {
        QDict *res = qobject_to(QDict, qlist_entry_obj(e));

        if (g_strcmp0(qdict_get_try_str(res, "netdev"), "hs0")) {
            continue;
        }
        QLIST_FOREACH_ENTRY(qdict_get_qlist(res, "stats"), f) {
            QDict *st = qobject_to(QDict, qlist_entry_obj(f));

            if (!strcmp(qdict_get_str(st, "name"), name)) {
                val = qdict_get_int(st, "value");
            }
        }
    }
    qobject_unref(rsp);
    g_assert_cmpint(val, >=, 0);
    return val;
}

/*
 * The guest makes TX_BATCH_FRAMES frames available at once and kicks
 * once: one TX round, one deferred section.  af-packet sends the first
 * frame at once and the rest with one sendmmsg() per @batch frames; they
 * reach the wire in order.  (With the socket pushing back, the frames
 * would leave as it takes them: the test then only reports.)
 */
static void check_tx_batch(const char *netdev_props, unsigned int batch)
{
    Refiller r;
    DPTest *t = refiller_boot(&r, "tb0", "", netdev_props, false);
    uint16_t *avail_idx;
    int64_t calls, busy, expected = 1 + DIV_ROUND_UP(TX_BATCH_FRAMES - 1,
                                                     batch);
    uint32_t seq;

    if (!t) {
        return;
    }
    avail_idx = (uint16_t *)(r.ram + r.avail + 2);
    qatomic_store_release(avail_idx, cpu_to_le16(TX_BATCH_FRAMES));
    t->vdev->bus->virtqueue_kick(t->vdev, tx_vq(t, 0));
    for (seq = 0; seq < TX_BATCH_FRAMES; seq++) {
        peer_expect(t, seq);
    }
    wait_stat(t, 0, "tx-packets", TX_BATCH_FRAMES);
    g_assert_cmpint(netdev_stat(t, "tx-packets"), ==, TX_BATCH_FRAMES);
    calls = netdev_stat(t, "tx-calls");
    busy = netdev_stat(t, "tx-busy");
    g_test_message("tx-batch %u: %d frames in %" PRId64 " system calls "
                   "(%" PRId64 " pushed back)", batch, TX_BATCH_FRAMES,
                   calls, busy);
    if (!busy) {
        g_assert_cmpint(calls, ==, expected);
    }
    munmap(r.ram, REFILLER_RAM);
    dp_shutdown(t);
}

static void test_tx_batch(void)
{
    check_tx_batch(",tx-batch=64", 64);
    check_tx_batch(",tx-batch=8", 8);
    check_tx_batch("", 1);
}

/* Counter @name of pair 0, or 0 if the device has no such counter */
static int64_t get_stat_or_zero(DPTest *t, const char *name)
{
    QDict *stats = dp_query(t->qts, t->nic, 0, NULL);
    int64_t val;

    g_assert_nonnull(stats);
    val = qdict_get_try_int(stats, name, 0);
    qobject_unref(stats);
    return val;
}

/*
 * TX interrupts sent: at once, or by the coalescing timer (a device
 * without coalescing state has no such counter)
 */
static int64_t tx_irqs(DPTest *t)
{
    return get_stat(t, 0, "tx-interrupts") +
           get_stat_or_zero(t, "tx-coal-interrupts-usecs");
}

/*
 * The guest sends one frame and waits for it to be used, @n times, a few
 * milliseconds apart; returns the TX interrupts the device sent for them.
 */
static int64_t sparse_tx(DPTest *t, Refiller *r, unsigned int n)
{
    uint16_t *avail_idx = (uint16_t *)(r->ram + r->avail + 2);
    uint16_t *used_idx = (uint16_t *)(r->ram + r->used + 2);
    int64_t irqs = tx_irqs(t);
    gint64 deadline;
    unsigned int i;

    for (i = 0; i < n; i++) {
        g_usleep(5000);
        r->idx++;
        qatomic_store_release(avail_idx, cpu_to_le16(r->idx));
        t->vdev->bus->virtqueue_kick(t->vdev, tx_vq(t, 0));
        deadline = g_get_monotonic_time() + TIMEOUT_US;
        while (le16_to_cpu(qatomic_load_acquire(used_idx)) != r->idx) {
            g_assert_cmpint(g_get_monotonic_time(), <, deadline);
            g_usleep(100);
        }
    }
    /* The device counts an interrupt after it wrote the used index */
    g_usleep(QUIET_US);
    return tx_irqs(t) - irqs;
}

/*
 * Adaptive interrupt moderation, with an IOThread and no parameters from
 * the driver: a guest that streams frames a few at a time takes far
 * fewer TX interrupts than rounds (the interrupt waits for more, counted
 * in tx-coal-held), and one that sends a frame now and then gets its
 * interrupt at once for each.  adaptive-coal=off: an interrupt per round
 * of the stream.  (A host too busy for the refiller to stream at
 * ADAPTIVE_STREAM frames/s makes bursts that adaptation rightly leaves
 * alone: then the stream is only reported.)
 */
static void check_adaptive(bool adaptive)
{
    Refiller r;
    DPTest *t = refiller_boot(&r, "ad0", adaptive ? "" : "adaptive-coal=off,",
                              "", false);
    int64_t sent, irqs, held;

    if (!t) {
        return;
    }
    refiller_start(&r, t, ADAPTIVE_INFLIGHT, 16 * tx_vq(t, 0)->size);
    sent = get_stat(t, 0, "tx-packets");
    irqs = tx_irqs(t);
    held = get_stat_or_zero(t, "tx-coal-held");
    refiller_kick_for(&r, t, G_USEC_PER_SEC / 5);
    sent = get_stat(t, 0, "tx-packets") - sent;
    irqs = tx_irqs(t) - irqs;
    held = get_stat_or_zero(t, "tx-coal-held") - held;
    refiller_stop(&r);
    g_test_message("adaptive-coal=%s: %" PRId64 " frames, %" PRId64
                   " interrupts, %" PRId64 " frames held, %" PRId64
                   " batches", adaptive ? "on" : "off", sent, irqs, held,
                   get_stat(t, 0, "tx-batches"));
    g_assert_cmpint(sent, >, 1000);
    if (adaptive && sent * 5 < ADAPTIVE_STREAM) {
        /* A busy host: the flood came in bursts too slow to be a stream */
        g_test_message("%" PRId64 " frames/s: no stream to moderate",
                       sent * 5);
    } else if (adaptive) {
        g_assert_cmpint(irqs * 6, <, sent);
        g_assert_cmpint(held, >, 0);
    } else {
        g_assert_cmpint(irqs * ADAPTIVE_INFLIGHT * 2, >, sent);
        g_assert_cmpint(held, ==, 0);
    }

    /* Once the stream is over, sparse frames go out each with its own */
    g_usleep(10 * 1000);
    held = get_stat_or_zero(t, "tx-coal-held");
    g_assert_cmpint(sparse_tx(t, &r, SPARSE_FRAMES), ==, SPARSE_FRAMES);
    g_assert_cmpint(get_stat_or_zero(t, "tx-coal-held"), ==, held);
    munmap(r.ram, REFILLER_RAM);
    dp_shutdown(t);
}

static void test_adaptive(void)
{
    check_adaptive(true);
    check_adaptive(false);
}

/*
 * A guest that streams frames in bursts, with gaps longer than IOThread
 * polling (poll-max-ns at its default): while it streams, the device
 * looks for the next burst from a timer when polling ends (tx-waited)
 * and keeps notifications off, so that the guest hardly ever kicks.
 * Once the stream is over, notifications are on again.  Returns kicks
 * per frame; -1 if the host was too busy to stream at a moderated rate
 * (the device never emptied the ring).
 */
static double stream_kicks(bool adaptive)
{
    Refiller r;
    DPTest *t = refiller_boot(&r, "sw0", adaptive ? "" : "adaptive-coal=off,",
                              "", true);
    int64_t sent, kicks, waited;

    if (!t) {
        return -1;
    }
    r.period_us = STREAM_PERIOD_US;
    refiller_start(&r, t, STREAM_BURST, 16 * tx_vq(t, 0)->size);
    sent = get_stat(t, 0, "tx-packets");
    kicks = get_stat(t, 0, "tx-kicks");
    waited = get_stat(t, 0, "tx-waited");
    refiller_kick_for(&r, t, G_USEC_PER_SEC / 5);
    sent = get_stat(t, 0, "tx-packets") - sent;
    kicks = get_stat(t, 0, "tx-kicks") - kicks;
    waited = get_stat(t, 0, "tx-waited") - waited;
    refiller_stop(&r);
    g_test_message("adaptive-coal=%s: %" PRId64 " frames, %" PRId64
                   " kicks, %" PRId64 " timer looks",
                   adaptive ? "on" : "off", sent, kicks, waited);
    g_assert_cmpint(sent, >, 1000);
    if (adaptive) {
        g_assert_cmpint(waited, >, 0);
    } else {
        g_assert_cmpint(waited, ==, 0);
    }

    /* The stream is over: notifications are on, the next frame goes */
    g_usleep(10 * 1000);
    g_assert_false(le16_to_cpu(*(uint16_t *)(r.ram + r.used)) &
                   VRING_USED_F_NO_NOTIFY);
    sparse_tx(t, &r, 1);
    munmap(r.ram, REFILLER_RAM);
    dp_shutdown(t);
    return sent * 5 < STREAM_RATE ? -1 : (double)kicks / sent;
}

/*
 * Under a stream, fewer than 1 kick in 20 frames with adaptive
 * moderation, and far more without it (there the test's own kicks come
 * late, so not one per burst).
 */
static void test_stream_wait(void)
{
    double on = stream_kicks(true), off = stream_kicks(false);

    g_test_message("kicks per frame: %.3f, with adaptive-coal=off %.3f",
                   on, off);
    if (on < 0 || off < 0) {
        g_test_message("no stream at %d frames/s: nothing compared",
                       STREAM_RATE);
        return;
    }
    g_assert_cmpfloat(on, <, 0.05);
    g_assert_cmpfloat(off, >, 2 * on);
}

/*
 * After churn(): reset the device, set it up again and check that
 * traffic flows both ways.
 */
static void restart_and_check(DPTest *t)
{
    unsigned int i;

    qvirtio_reset(t->vdev);
    for (i = 0; i < t->nvqs; i++) {
        qvirtqueue_cleanup(t->vdev->bus, t->vqs[i], t->alloc);
    }
    qvirtio_set_acknowledge(t->vdev);
    qvirtio_set_driver(t->vdev);
    nic_setup(t);
    t->pair[0].rx_posted = 0;
    t->pair[0].tx_pending = 0;
    t->stale_below = NEXT_PHASE;
    exchange(t, NEXT_PHASE, 2 * NEXT_PHASE, STATS_FRAMES);
}

/*
 * A legacy driver rewrites the features of the running device, over and
 * over, while frames flow both ways on pair 0: the header length changes
 * with VIRTIO_NET_F_MRG_RXBUF, and VIRTIO_NET_F_MQ deletes and adds pair
 * 1's virtqueues, all under the IOThreads' feet unless the pairs go back
 * to the main loop for it.  QEMU goes on and the device works after a
 * reset.
 */
static void test_features(void)
{
    static const uint64_t flip[] = {
        0, 1ull << VIRTIO_NET_F_MRG_RXBUF, 1ull << VIRTIO_NET_F_MQ,
        (1ull << VIRTIO_NET_F_MRG_RXBUF) | (1ull << VIRTIO_NET_F_MQ),
    };
    Injector inj;
    uint64_t features;
    uint32_t seq = 0;
    unsigned int flips = 0;
    gint64 end;
    DPTest *t;

    t = dp_boot("af-packet", "-object iothread,id=io0"
                " -netdev af-packet,id=hs0,ifname=" IF_QEMU ",queues=2,"
                "vnet-hdr=on"
                " -device virtio-net-pci,id=ft0,netdev=hs0,iothread=io0,"
                "disable-modern=on,mq=on,vectors=6,addr=%d", HP_SLOT);
    if (!t) {
        return;
    }
    nic_start(t, HP_SLOT, "ft0");
    g_assert_cmpuint(t->pairs, ==, 2);
    g_assert_false(t->vdev->features & (1ull << VIRTIO_F_VERSION_1));
    features = t->vdev->features;
    g_assert_true(features & (1ull << VIRTIO_NET_F_MRG_RXBUF));
    ctrl_mq(t, 2);

    injector_start(&inj, t, 0);
    end = g_get_monotonic_time() + CHURN_US;
    while (g_get_monotonic_time() < end) {
        churn(t, &seq);
        qvirtio_set_features(t->vdev, features ^ flip[++flips % 4]);
    }
    injector_stop(&inj);
    g_test_message("%u feature writes, %u frames queued", flips, seq);
    g_assert_true(query_running(t->qts));

    restart_and_check(t);
    dp_shutdown(t);
}

/* Reset virtqueue @index and give it a new ring (VIRTIO_F_RING_RESET) */
/* 16-bit fields of the device's common configuration, at offset @off */
static uint16_t common_readw(DPTest *t, size_t off)
{
    QVirtioPCIDevice *dev = container_of(t->vdev, QVirtioPCIDevice, vdev);

    return qpci_io_readw(dev->pdev, dev->bar, dev->common_cfg_offset + off);
}

static void common_writew(DPTest *t, size_t off, uint16_t val)
{
    QVirtioPCIDevice *dev = container_of(t->vdev, QVirtioPCIDevice, vdev);

    qpci_io_writew(dev->pdev, dev->bar, dev->common_cfg_offset + off, val);
}

#define COMMON_CFG(field) offsetof(struct virtio_pci_modern_common_cfg, field)

static void vq_reset(DPTest *t, unsigned int index)
{
    common_writew(t, COMMON_CFG(cfg.queue_select), index);
    common_writew(t, COMMON_CFG(queue_reset), 1);
    qvirtqueue_cleanup(t->vdev->bus, t->vqs[index], t->alloc);
    t->vqs[index] = qvirtqueue_setup(t->vdev, t->alloc, index);
}

/*
 * A device @id in HP_SLOT over af-packet with properties @props (each
 * followed by a comma; "iothread=io0," puts it in io0), started by the
 * driver
 */
static DPTest *dp_boot_nic(const char *id, const char *props)
{
    DPTest *t = dp_boot("af-packet", "-object iothread,id=io0"
                        " -netdev af-packet,id=hs0,ifname=" IF_QEMU
                        " -device virtio-net-pci,id=%s,netdev=hs0,%saddr=%d",
                        id, props, HP_SLOT);

    if (t) {
        nic_start(t, HP_SLOT, id);
    }
    return t;
}

/*
 * After a driver's changes under running queues: QEMU goes on, the device
 * is not broken, and it works after a reset.
 */
static void check_survived(DPTest *t)
{
    g_assert_true(query_running(t->qts));
    g_assert_cmphex(t->vdev->bus->get_status(t->vdev) &
                    VIRTIO_CONFIG_S_NEEDS_RESET, ==, 0);
    restart_and_check(t);
    dp_shutdown(t);
}

/*
 * The driver resets its queues one at a time and sets them up again, as
 * Linux does for ethtool -G, while frames flow both ways: each pause
 * lasts from the reset to the new ring.  QEMU goes on, the device is not
 * broken, and it works after a reset.
 */
static void test_queue_reset(void)
{
    Injector inj;
    uint32_t seq = 0;
    unsigned int resets = 0;
    gint64 end;
    DPTest *t;

    t = dp_boot_nic("qr0", "iothread=io0,");
    if (!t) {
        return;
    }
    g_assert_true(t->vdev->features & (1ull << VIRTIO_F_RING_RESET));

    injector_start(&inj, t, 0);
    end = g_get_monotonic_time() + CHURN_US;
    while (g_get_monotonic_time() < end) {
        unsigned int index = resets++ & 1;

        churn(t, &seq);
        vq_reset(t, index);
        if (index == 0) {
            t->pair[0].rx_posted = 0;
        } else {
            t->pair[0].tx_pending = 0;
        }
    }
    injector_stop(&inj);
    g_test_message("%u queue resets, %u frames queued", resets, seq);
    check_survived(t);
}

/*
 * The driver writes a new size and enables again queues that run, without
 * resetting them, while frames flow both ways: the writes are ignored (the
 * IOThread is using the rings), QEMU goes on and the device works.
 */
static void test_queue_rewrite(void)
{
    Injector inj;
    uint32_t seq = 0;
    unsigned int i, size;
    DPTest *t = dp_boot_nic("qw0", "iothread=io0,");

    if (!t) {
        return;
    }
    injector_start(&inj, t, 0);
    for (i = 0; i < 64; i++) {
        churn(t, &seq);
        common_writew(t, COMMON_CFG(cfg.queue_select), i & 1);
        size = common_readw(t, COMMON_CFG(cfg.queue_size));
        common_writew(t, COMMON_CFG(cfg.queue_size), size / 4);
        common_writew(t, COMMON_CFG(cfg.queue_enable), 1);
        g_assert_cmpuint(common_readw(t, COMMON_CFG(cfg.queue_size)), ==,
                         size);
    }
    injector_stop(&inj);
    check_survived(t);
}

/*
 * Migration to a file while frames flow both ways: the pairs stop with
 * the VM and the device's state is saved from the main loop; then the
 * source goes on, and the device works.
 */
static void test_migrate(void)
{
    g_autofree char *path = g_strdup_printf("%s/vndp-migrate-%d",
                                            g_get_tmp_dir(), getpid());
    g_autofree char *uri = g_strdup_printf("file:%s", path);
    /* 128 MiB of RAM to write, on sanitizer builds too */
    gint64 deadline = g_get_monotonic_time() + 12 * TIMEOUT_US;
    DPTest *t = dp_boot_hotplugged("mg0");
    const char *status;
    uint32_t seq = 0;
    Injector inj;
    QDict *rsp;
    int i;

    if (!t) {
        return;
    }
    injector_start(&inj, t, 0);
    for (i = 0; i < 16; i++) {
        churn(t, &seq);
    }
    qtest_qmp_assert_success(t->qts, "{ 'execute': 'migrate',"
                             " 'arguments': { 'uri': %s } }", uri);
    for (;;) {
        churn(t, &seq);
        rsp = qtest_qmp(t->qts, "{ 'execute': 'query-migrate' }");
        status = qdict_get_try_str(qdict_get_qdict(rsp, "return"), "status");
        g_assert_cmpstr(status, !=, "failed");
        if (!g_strcmp0(status, "completed")) {
            qobject_unref(rsp);
            break;
        }
        qobject_unref(rsp);
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(1000);
    }
    injector_stop(&inj);
    g_assert_false(query_running(t->qts));
    qtest_qmp_assert_success(t->qts, "{ 'execute': 'cont' }");
    g_assert_true(query_running(t->qts));
    unlink(path);
    restart_and_check(t);
    dp_shutdown(t);
}

/*
 * Found by make fuzz (main-loop target): a legacy driver starts the device
 * without VIRTIO_NET_F_MQ (one queue pair, ioeventfds for three queues),
 * then writes features with it: the queues added for the second pair had
 * no ioeventfd, and the next reset aborted QEMU deleting one.  With and
 * without an IOThread.
 */
static void check_features_mq_late(const char *io)
{
    QPCIAddress addr = { .devfn = QPCI_DEVFN(HP_SLOT, 0) };
    QVirtioPCIDevice *dev;
    uint64_t features;
    DPTest *t;

    t = dp_boot("af-packet", "-object iothread,id=io0"
                " -netdev af-packet,id=hs0,ifname=" IF_QEMU ",queues=2"
                " -device virtio-net-pci,id=fm0,netdev=hs0,%s"
                "disable-modern=on,mq=on,vectors=6,addr=%d", io, HP_SLOT);
    if (!t) {
        return;
    }
    dev = virtio_pci_new(t->qs->pcibus, &addr);
    g_assert_nonnull(dev);
    qvirtio_pci_device_enable(dev);
    qvirtio_start_device(&dev->vdev);
    features = qvirtio_get_features(&dev->vdev) & DP_FEATURES;
    g_assert_true(features & (1ull << VIRTIO_NET_F_MQ));
    qvirtio_set_features(&dev->vdev, features & ~(1ull << VIRTIO_NET_F_MQ));
    qvirtio_set_driver_ok(&dev->vdev);
    qvirtio_set_features(&dev->vdev, features);
    g_assert_true(query_running(t->qts));
    qvirtio_reset(&dev->vdev);
    g_assert_true(query_running(t->qts));
    qos_object_destroy(&dev->obj);
    dp_shutdown(t);
}

static void test_features_mq_late(void)
{
    check_features_mq_late("");
    check_features_mq_late("iothread=io0,");
}

/* The guest-physical address of @off in the device's modern BAR */
static uint64_t bar_addr(DPTest *t, uint32_t off)
{
    QVirtioPCIDevice *dev = container_of(t->vdev, QVirtioPCIDevice, vdev);

    g_assert_false(dev->bar.is_io);
    return dev->bar.addr + off;
}

static void common_writeq(DPTest *t, size_t off, uint64_t val)
{
    QVirtioPCIDevice *dev = container_of(t->vdev, QVirtioPCIDevice, vdev);

    qpci_io_writel(dev->pdev, dev->bar, dev->common_cfg_offset + off, val);
    qpci_io_writel(dev->pdev, dev->bar, dev->common_cfg_offset + off + 4,
                   val >> 32);
}

/*
 * Give queue @index a new device area at @used, the rest as it was: the
 * queue is reset, so both sides start again from index 0.
 */
static void vq_move_used(DPTest *t, unsigned int index, uint64_t used)
{
    QVirtQueue *vq = t->vqs[index];

    g_assert_cmpuint(qvirtqueue_get_buf(t->qts, vq, NULL, NULL), ==, false);
    common_writew(t, COMMON_CFG(cfg.queue_select), index);
    common_writew(t, COMMON_CFG(queue_reset), 1);
    qvirtqueue_cleanup(t->vdev->bus, vq, t->alloc);
    t->vqs[index] = vq = qvirtqueue_setup(t->vdev, t->alloc, index);
    common_writew(t, COMMON_CFG(queue_reset), 1);
    common_writeq(t, COMMON_CFG(cfg.queue_desc_lo), vq->desc);
    common_writeq(t, COMMON_CFG(cfg.queue_avail_lo), vq->avail);
    common_writeq(t, COMMON_CFG(cfg.queue_used_lo), used);
    common_writew(t, COMMON_CFG(cfg.queue_enable), 1);
}

static void assert_driver_ok(DPTest *t)
{
    g_assert_true(query_running(t->qts));
    g_assert_cmphex(t->vdev->bus->get_status(t->vdev), ==,
                    VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
                    VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
}

/*
 * The driver gives the device a receive buffer over the device's own
 * registers, from device_status on, so that a frame's header would reset
 * the device; then a frame to send read from there; then, with an
 * IOThread, a TX used ring there too, whose flags would be the status.
 * The device's DMA into its own registers is refused, as QEMU refuses
 * re-entrant I/O elsewhere: QEMU goes on, the device keeps its status and
 * works after a reset.  Without an IOThread, the ring's case is
 * upstream's (the ioeventfd handler is not guarded); it must survive.
 */
static void check_dma_self(const char *io)
{
    uint32_t head, desc, len;
    uint64_t regs;
    DPTest *t = dp_boot_nic("dm0", io);

    if (!t) {
        return;
    }
    regs = bar_addr(t, container_of(t->vdev, QVirtioPCIDevice, vdev)->
                    common_cfg_offset + COMMON_CFG(cfg.device_status));

    head = qvirtqueue_add(t->qts, rx_vq(t, 0), regs, BUF_SIZE, true, false);
    qvirtqueue_kick(t->qts, t->vdev, rx_vq(t, 0), head);
    inject(t, 0);
    head = qvirtqueue_add(t->qts, tx_vq(t, 0), regs, FRAME_HDRS + 64,
                          false, false);
    qvirtqueue_kick(t->qts, t->vdev, tx_vq(t, 0), head);
    g_usleep(QUIET_US);
    assert_driver_ok(t);

    get_used(t, tx_vq(t, 0), &desc, &len, true);
    vq_move_used(t, 1, regs);
    tx_send(t, 0, 1, 1);
    g_usleep(QUIET_US);
    g_assert_true(query_running(t->qts));
    if (*io) {
        assert_driver_ok(t);
    }
    t->pair[0].tx_pending = 0;
    check_survived(t);
}

static void test_dma_self(void)
{
    check_dma_self("");
    check_dma_self("iothread=io0,");
}

/*
 * Receive buffers over registers (the device's configuration space, where
 * writes do nothing) while frames flood in and the main loop pauses the
 * queue pair again and again: the IOThread must not wait for the BQL that
 * the main loop holds while it waits for the IOThread (control commands
 * and set_link pause the pair).
 */
static void test_dma_busy(void)
{
    uint8_t promisc[3] = { VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC };
    QVirtQueue *vq;
    uint64_t regs;
    uint32_t head;
    Injector inj;
    unsigned int i;
    DPTest *t = dp_boot_nic("db0", "iothread=io0,");

    if (!t) {
        return;
    }
    vq = rx_vq(t, 0);
    regs = bar_addr(t, container_of(t->vdev, QVirtioPCIDevice, vdev)->
                    device_cfg_offset);
    for (i = 0; i < vq->size; i++) {
        head = qvirtqueue_add(t->qts, vq, regs, BUF_SIZE, true, false);
        qvirtqueue_kick(t->qts, t->vdev, vq, head);
    }
    injector_start(&inj, t, 0);
    for (i = 0; i < 4 * PAUSES; i++) {
        promisc[2] = i & 1;
        if (i < PAUSES) {
            g_assert_cmpint(ctrl_cmd(t, promisc, sizeof(promisc), 2, true),
                            ==, VIRTIO_NET_OK);
        }
        qtest_qmp_assert_success(t->qts, "{ 'execute': 'set_link',"
                                 " 'arguments': { 'name': 'db0',"
                                 " 'up': %i } }", i & 1);
    }
    injector_stop(&inj);
    g_assert_cmpint(get_stat(t, 0, "rx-packets"), >, 0);
    assert_driver_ok(t);
    check_survived(t);
}

/* ---- notification coalescing (notf_coal, vq_notf_coal) ---- */

/* A NOTF_COAL command @cmd with @len bytes of @data; returns the ack. */
static int coal_cmd(DPTest *t, uint8_t cmd, const void *data, size_t len)
{
    uint8_t req[2 + 16] = { VIRTIO_NET_CTRL_NOTF_COAL, cmd };

    g_assert_cmpuint(len, <=, sizeof(req) - 2);
    memcpy(req + 2, data, len);
    return ctrl_cmd(t, req, 2 + len, 2, true);
}

/* TX_SET or RX_SET (@tx) to @packets and @usecs */
static void coal_set(DPTest *t, bool tx, uint32_t packets, uint32_t usecs)
{
    uint8_t coal[8];

    stl_le_p(coal, packets);
    stl_le_p(coal + 4, usecs);
    g_assert_cmpint(coal_cmd(t, tx ? VIRTIO_NET_CTRL_NOTF_COAL_TX_SET :
                             VIRTIO_NET_CTRL_NOTF_COAL_RX_SET,
                             coal, sizeof(coal)), ==, VIRTIO_NET_OK);
}

static int coal_vq_set(DPTest *t, uint16_t vq, uint32_t packets,
                       uint32_t usecs)
{
    uint8_t coal[12] = { 0 };

    stw_le_p(coal, vq);
    stl_le_p(coal + 4, packets);
    stl_le_p(coal + 8, usecs);
    return coal_cmd(t, VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET, coal, sizeof(coal));
}

/*
 * VQ_GET for virtqueue @vq: the device writes the parameters and then
 * the ack into the driver's buffer.  Returns the ack; *@packets and
 * *@usecs get the parameters when it is VIRTIO_NET_OK.
 */
static int coal_vq_get(DPTest *t, uint16_t vq, uint32_t *packets,
                       uint32_t *usecs)
{
    QVirtQueue *cvq = t->vqs[2 * t->pairs];
    uint8_t req[6] = { VIRTIO_NET_CTRL_NOTF_COAL,
                       VIRTIO_NET_CTRL_NOTF_COAL_VQ_GET };
    uint64_t addr = guest_alloc(t->alloc, sizeof(req) + 9);
    uint32_t head, desc, len;
    uint8_t reply[9];

    stw_le_p(req + 2, vq);
    ctrl_rewind(cvq);
    qtest_memwrite(t->qts, addr, req, sizeof(req));
    memset(reply, 0xff, sizeof(reply));
    qtest_memwrite(t->qts, addr + sizeof(req), reply, sizeof(reply));
    head = qvirtqueue_add(t->qts, cvq, addr, sizeof(req), false, true);
    qvirtqueue_add(t->qts, cvq, addr + sizeof(req), sizeof(reply), true,
                   false);
    qvirtqueue_kick(t->qts, t->vdev, cvq, head);
    g_assert_true(ctrl_used(t, cvq, g_get_monotonic_time() + TIMEOUT_US,
                            &desc, &len));
    g_assert_cmpuint(desc, ==, head);
    qtest_memread(t->qts, addr + sizeof(req), reply, sizeof(reply));
    guest_free(t->alloc, addr);
    if (reply[8] == VIRTIO_NET_OK) {
        g_assert_cmpuint(len, ==, 9);
        *packets = ldl_le_p(reply);
        *usecs = ldl_le_p(reply + 4);
        return VIRTIO_NET_OK;
    }
    g_assert_cmpuint(len, ==, 1);
    return reply[0];
}

static void coal_expect(DPTest *t, uint16_t vq, uint32_t packets,
                        uint32_t usecs)
{
    uint32_t p, u;

    g_assert_cmpint(coal_vq_get(t, vq, &p, &u), ==, VIRTIO_NET_OK);
    g_assert_cmpuint(p, ==, packets);
    g_assert_cmpuint(u, ==, usecs);
}

/*
 * Has the device interrupted the guest for @vq since the last look?  (No
 * MSI-X here: the ISR, which reading clears.)
 */
static bool coal_isr(DPTest *t, QVirtQueue *vq)
{
    return t->vdev->bus->get_queue_isr_status(t->vdev, vq);
}

static void coal_wait_isr(DPTest *t, QVirtQueue *vq)
{
    gint64 deadline = g_get_monotonic_time() + TIMEOUT_US;

    while (!coal_isr(t, vq)) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(1000);
    }
}

/* Counter @name of pair 0 must be @val, and stay so while nothing moves */
static void coal_stat(DPTest *t, const char *name, int64_t val)
{
    g_assert_cmpint(wait_stat(t, 0, name, val), ==, val);
}

/* Frames @first.. received one by one: each is a batch of its own */
static void coal_rx(DPTest *t, uint32_t first, unsigned int n)
{
    for (unsigned int i = 0; i < n; i++) {
        inject(t, first + i);
        rx_expect(t, 0, first + i);
        rx_post(t, 0, 1);
    }
}

/* Frames @first.. sent one by one */
static void coal_tx(DPTest *t, uint32_t first, unsigned int n)
{
    for (unsigned int i = 0; i < n; i++) {
        tx_frames(t, 0, first + i, 1);
        peer_expect(t, first + i);
    }
}

/*
 * The control commands of notf_coal and vq_notf_coal and what they do to
 * interrupts, on a device with one queue pair in the main loop or with
 * @io.  Frames go one by one, so that counts do not depend on batching;
 * the virtual clock (-accel qtest) moves only when the test steps it.
 */
static void check_coal(const char *io)
{
    g_autofree char *props = g_strconcat(io, "notf_coal=on,vq_notf_coal=on,",
                                         NULL);
    uint8_t bad[12] = { 0 };
    uint32_t p, u;
    DPTest *t = dp_boot_nic("co0", props);

    if (!t) {
        return;
    }
    g_assert_true(t->vdev->features & (1ull << VIRTIO_NET_F_NOTF_COAL));
    g_assert_true(t->vdev->features & (1ull << VIRTIO_NET_F_VQ_NOTF_COAL));
    rx_fill(t, 0);

    /* Bad commands */
    g_assert_cmpint(coal_cmd(t, 4, bad, 8), ==, VIRTIO_NET_ERR);
    g_assert_cmpint(coal_cmd(t, VIRTIO_NET_CTRL_NOTF_COAL_TX_SET, bad, 7),
                    ==, VIRTIO_NET_ERR);
    g_assert_cmpint(coal_cmd(t, VIRTIO_NET_CTRL_NOTF_COAL_RX_SET, bad, 9),
                    ==, VIRTIO_NET_ERR);
    g_assert_cmpint(coal_cmd(t, VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET, bad, 11),
                    ==, VIRTIO_NET_ERR);
    g_assert_cmpint(coal_cmd(t, VIRTIO_NET_CTRL_NOTF_COAL_VQ_GET, bad, 6),
                    ==, VIRTIO_NET_ERR);
    g_assert_cmpint(coal_vq_set(t, 2, 1, 1), ==, VIRTIO_NET_ERR); /* ctrl */
    g_assert_cmpint(coal_vq_set(t, 3, 1, 1), ==, VIRTIO_NET_ERR);
    g_assert_cmpint(coal_vq_get(t, 0xffff, &p, &u), ==, VIRTIO_NET_ERR);

    /* Last write wins, whatever the command; VQ_GET reads it back */
    coal_expect(t, 0, 0, 0);
    coal_set(t, false, 4, 1000);
    coal_expect(t, 0, 4, 1000);
    coal_expect(t, 1, 0, 0);
    g_assert_cmpint(coal_vq_set(t, 0, 8, 2000), ==, VIRTIO_NET_OK);
    coal_expect(t, 0, 8, 2000);
    coal_set(t, false, 4, 1000);
    coal_expect(t, 0, 4, 1000);

    /*
     * RX, 4 packets or 1000 us: 10 frames interrupt at the 4th and the
     * 8th; 8 waited, 2 still do.  A max_packets below what is held
     * interrupts at once; the rest waits for the clock.
     */
    g_usleep(QUIET_US);
    coal_isr(t, rx_vq(t, 0));
    coal_rx(t, 0, 3);
    g_usleep(QUIET_US);
    g_assert_false(coal_isr(t, rx_vq(t, 0)));
    coal_rx(t, 3, 1);
    coal_wait_isr(t, rx_vq(t, 0));
    coal_rx(t, 4, 6);
    coal_stat(t, "rx-coal-interrupts-packets", 2);
    coal_stat(t, "rx-coal-held", 8);
    g_assert_cmpint(coal_vq_set(t, 0, 8, 1000), ==, VIRTIO_NET_OK);
    coal_stat(t, "rx-coal-interrupts-packets", 2);
    coal_set(t, false, 2, 1000);
    coal_stat(t, "rx-coal-interrupts-packets", 3);
    coal_rx(t, 10, 1);
    qtest_clock_step(t->qts, 999 * 1000);
    g_usleep(QUIET_US);
    coal_stat(t, "rx-coal-interrupts-usecs", 0);
    qtest_clock_step(t->qts, 2 * 1000);
    coal_stat(t, "rx-coal-interrupts-usecs", 1);

    /* TX, 3 packets or 500 us */
    coal_set(t, true, 3, 500);
    coal_expect(t, 1, 3, 500);
    coal_tx(t, 100, 7);
    coal_stat(t, "tx-coal-interrupts-packets", 2);
    coal_stat(t, "tx-coal-held", 5);
    qtest_clock_step(t->qts, 501 * 1000);
    coal_stat(t, "tx-coal-interrupts-usecs", 1);

    /*
     * TX's timer takes the interrupt that RX holds along, early; RX's
     * own timer then finds nothing.  RX's timer leaves TX waiting.
     */
    coal_tx(t, 110, 1);
    qtest_clock_step(t->qts, 100 * 1000);
    coal_rx(t, 11, 1);
    qtest_clock_step(t->qts, 401 * 1000);
    coal_stat(t, "tx-coal-interrupts-usecs", 2);
    coal_stat(t, "rx-coal-interrupts-usecs", 2);
    qtest_clock_step(t->qts, 1000 * 1000);
    coal_stat(t, "rx-coal-interrupts-usecs", 2);
    coal_set(t, false, 2, 100);
    coal_tx(t, 111, 1);
    coal_rx(t, 12, 1);
    qtest_clock_step(t->qts, 101 * 1000);
    coal_stat(t, "rx-coal-interrupts-usecs", 3);
    coal_stat(t, "tx-coal-interrupts-usecs", 2);
    qtest_clock_step(t->qts, 400 * 1000);
    coal_stat(t, "tx-coal-interrupts-usecs", 3);
    coal_set(t, false, 2, 1000);

    /* 0 in either field: every packet notifies, none waits */
    coal_set(t, true, 0, 500);
    coal_tx(t, 200, 3);
    coal_stat(t, "tx-coal-held", 7);

    /* A re-enabled queue gets RX_SET's values; a disabled one refuses */
    g_assert_cmpint(coal_vq_set(t, 0, 16, 16), ==, VIRTIO_NET_OK);
    vq_reset(t, 0);
    t->pair[0].rx_posted = 0;
    coal_expect(t, 0, 2, 1000);
    common_writew(t, COMMON_CFG(cfg.queue_select), 0);
    common_writew(t, COMMON_CFG(queue_reset), 1);
    g_assert_cmpint(coal_vq_set(t, 0, 1, 1), ==, VIRTIO_NET_ERR);
    g_assert_cmpint(coal_vq_get(t, 0, &p, &u), ==, VIRTIO_NET_ERR);

    /* Reset clears everything */
    restart_and_check(t);
    coal_expect(t, 0, 0, 0);
    coal_expect(t, 1, 0, 0);
    dp_shutdown(t);
}

static void test_coal(void)
{
    check_coal("");
    check_coal("iothread=io0,");
}

/*
 * One request and its answer: the guest sends frame @seq, the peer sends
 * it back @late_us of virtual time after it is out, and the guest takes
 * it.  Returns whether the request's TX interrupt waits.
 */
static bool answer_round(DPTest *t, uint32_t seq, int64_t late_us)
{
    int64_t held = get_stat(t, 0, "tx-coal-held");

    tx_frames(t, 0, seq, 1);
    peer_expect(t, seq);
    held = get_stat(t, 0, "tx-coal-held") - held;
    if (late_us) {
        qtest_clock_step(t->qts, late_us * 1000);
    }
    inject(t, seq);
    rx_expect(t, 0, seq);
    rx_post(t, 0, 1);
    return held;
}

/* Requests answered at once until a TX interrupt waits: how many */
static unsigned int answer_until_held(DPTest *t, uint32_t *seq)
{
    unsigned int rounds = 0;

    do {
        g_assert_cmpuint(rounds, <, ANSWER_ROUNDS);
        rounds++;
    } while (!answer_round(t, (*seq)++, 0));
    return rounds;
}

/*
 * Request/response under adaptive moderation (an IOThread, no parameters
 * from the driver).  Once the peer answered the guest's last 2 frames,
 * each before the next and within 500 us, a frame's TX interrupt waits
 * up to 500 us for the answer (tx-coal-held); the answer's interrupt
 * never waits.  When the answer came and the driver turned TX
 * notifications off meanwhile (as Linux does when its RX poll frees its
 * TX queue), the held interrupt is not sent, when due or when the next
 * request's buffer is used (tx-coal-unwanted).
 * One still wanted when due is sent, and then twice as many answers in
 * a row are needed before the next wait.  A late answer starts the
 * count again.  Frames that nobody answers never wait
 * (check_adaptive()).  The virtual clock (-accel qtest) moves only when
 * the test steps it.
 */
static void test_answer(void)
{
    DPTest *t = dp_boot_nic("an0", "iothread=io0,");
    QVirtQueue *vq;
    int64_t irqs;
    uint32_t seq = 1;

    if (!t) {
        return;
    }
    vq = tx_vq(t, 0);
    rx_fill(t, 0);
    irqs = tx_irqs(t);
    g_assert_cmpuint(answer_until_held(t, &seq), ==, 3);
    g_assert_cmpint(tx_irqs(t), ==, irqs + 2);

    /* The driver's RX poll freed TX: the interrupt is no longer wanted */
    vq_no_interrupt(t, vq);
    qtest_clock_step(t->qts, 501 * 1000);
    coal_stat(t, "tx-coal-unwanted", 1);
    qtest_writew(t->qts, vq->avail, 0);

    /* Answers still come in a row: the next interrupt waits at once */
    g_assert_true(answer_round(t, seq++, 0));
    g_assert_cmpint(tx_irqs(t), ==, irqs + 2);

    /* A driver that waits for it: sent when due, and waits stop */
    qtest_clock_step(t->qts, 501 * 1000);
    coal_stat(t, "tx-coal-interrupts-usecs", 1);
    g_assert_cmpuint(answer_until_held(t, &seq), ==, 5);
    qtest_clock_step(t->qts, 501 * 1000);
    coal_stat(t, "tx-coal-interrupts-usecs", 2);
    g_assert_cmpuint(answer_until_held(t, &seq), ==, 9);
    g_assert_cmpint(tx_irqs(t), ==, irqs + 2 + 1 + 4 + 1 + 8);

    /*
     * Unwanted again, found before the next request's buffer is used,
     * with no help from the clock: back to 2 in a row.  The next wait
     * ends with a late answer, which starts the count again.
     */
    vq_no_interrupt(t, vq);
    g_assert_false(answer_round(t, seq++, 0));
    coal_stat(t, "tx-coal-unwanted", 2);
    qtest_writew(t->qts, vq->avail, 0);
    g_assert_true(answer_round(t, seq++, 501));
    coal_stat(t, "tx-coal-interrupts-usecs", 3);
    g_assert_cmpuint(answer_until_held(t, &seq), ==, 5);

    g_assert_cmpint(get_stat(t, 0, "rx-coal-held"), ==, 0);
    dp_shutdown(t);
}

/*
 * Commands of a feature the driver did not take are refused: VQ_SET and
 * VQ_GET without vq_notf_coal, TX_SET and RX_SET without notf_coal.
 */
static void test_coal_features(void)
{
    uint8_t coal[8] = { 1, 0, 0, 0, 1 };
    uint32_t p, u;
    DPTest *t;

    t = dp_boot_nic("cf0", "iothread=io0,notf_coal=on,");
    if (!t) {
        return;
    }
    g_assert_false(t->vdev->features & (1ull << VIRTIO_NET_F_VQ_NOTF_COAL));
    g_assert_cmpint(coal_vq_set(t, 0, 1, 1), ==, VIRTIO_NET_ERR);
    g_assert_cmpint(coal_vq_get(t, 0, &p, &u), ==, VIRTIO_NET_ERR);
    g_assert_cmpint(coal_cmd(t, VIRTIO_NET_CTRL_NOTF_COAL_TX_SET, coal, 8),
                    ==, VIRTIO_NET_OK);
    dp_shutdown(t);

    t = dp_boot_nic("cf1", "iothread=io0,");
    if (!t) {
        return;
    }
    g_assert_false(t->vdev->features & (1ull << VIRTIO_NET_F_NOTF_COAL));
    g_assert_cmpint(coal_cmd(t, VIRTIO_NET_CTRL_NOTF_COAL_TX_SET, coal, 8),
                    ==, VIRTIO_NET_ERR);
    g_assert_cmpint(coal_cmd(t, VIRTIO_NET_CTRL_NOTF_COAL_RX_SET, coal, 8),
                    ==, VIRTIO_NET_ERR);
    dp_shutdown(t);
}

#define COAL_MIGRATE_CMD "-object iothread,id=io0" \
    " -netdev af-packet,id=hs0,ifname=" IF_QEMU \
    " -device virtio-net-pci,id=cm0,netdev=hs0,iothread=io0,notf_coal=on," \
    "vq_notf_coal=on,addr=" stringify(HP_SLOT)

/*
 * The parameters migrate: set with RX_SET and VQ_SET on the source, read
 * back with VQ_GET on a destination that loads the source's state.
 */
static void test_coal_migrate(void)
{
    g_autofree char *path = g_strdup_printf("%s/vndp-coal-%d",
                                            g_get_tmp_dir(), getpid());
    g_autofree char *uri = g_strdup_printf("file:%s", path);
    gint64 deadline = g_get_monotonic_time() + 12 * TIMEOUT_US;
    QTestState *src, *dst;
    const char *status;
    bool done;
    QDict *rsp;
    DPTest *t = dp_boot("af-packet", "%s", COAL_MIGRATE_CMD);

    if (!t) {
        return;
    }
    nic_start(t, HP_SLOT, "cm0");
    coal_set(t, false, 7, 700);
    g_assert_cmpint(coal_vq_set(t, 1, 5, 500), ==, VIRTIO_NET_OK);
    qtest_qmp_assert_success(t->qts, "{ 'execute': 'migrate',"
                             " 'arguments': { 'uri': %s } }", uri);
    do {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(1000);
        rsp = qtest_qmp(t->qts, "{ 'execute': 'query-migrate' }");
        status = qdict_get_try_str(qdict_get_qdict(rsp, "return"), "status");
        g_assert_cmpstr(status, !=, "failed");
        done = !g_strcmp0(status, "completed");
        qobject_unref(rsp);
    } while (!done);

    dst = qtest_initf("%s -incoming %s", COAL_MIGRATE_CMD, uri);
    while (!query_running(dst)) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(1000);
    }
    /* The driver goes on with the destination's device */
    src = t->qts;
    t->qts = t->pdev->pdev->bus->qts = dst;
    coal_expect(t, 0, 7, 700);
    coal_expect(t, 1, 5, 500);
    t->qts = t->pdev->pdev->bus->qts = src;
    qtest_quit(dst);
    unlink(path);
    dp_shutdown(t);
}

static void register_virtio_net_dataplane_test(void)
{
    static const char *const backends[] = { "af-packet", "tap" };
    static const struct {
        const char *name;
        const char *node;
        QOSTestFunc func;
    } tests[] = {
        { "traffic", "virtio-net", test_traffic },
        { "burst", "virtio-net", test_burst },
        { "stop-cont", "virtio-net", test_stop_cont },
        { "reset", "virtio-net-pci", test_reset },
        { "stats", "virtio-net", test_stats },
        { "bad-tx", "virtio-net", test_bad_tx },
    };
    QOSGraphTestOptions opts = {
        .before = dp_test_setup,
    };
    unsigned int i, j;

    for (i = 0; i < G_N_ELEMENTS(backends); i++) {
        opts.arg = (gpointer)backends[i];
        for (j = 0; j < G_N_ELEMENTS(tests); j++) {
            g_autofree char *name =
                g_strdup_printf("virtio-net-dataplane/%s/%s", backends[i],
                                tests[j].name);

            qos_add_test(name, tests[j].node, tests[j].func, &opts);
        }
    }

    qtest_add_func("virtio-net-dataplane/hotplug", test_hotplug);
    qtest_add_func("virtio-net-dataplane/multiqueue", test_multiqueue);
    qtest_add_func("virtio-net-dataplane/errors", test_errors);
    qtest_add_func("virtio-net-dataplane/bad-ctrl", test_bad_ctrl);
    qtest_add_func("virtio-net-dataplane/unplug-busy", test_unplug_busy);
    qtest_add_func("virtio-net-dataplane/pause-busy", test_pause_busy);
    qtest_add_func("virtio-net-dataplane/features", test_features);
    qtest_add_func("virtio-net-dataplane/queue-reset", test_queue_reset);
    qtest_add_func("virtio-net-dataplane/tx-flood", test_tx_flood);
    qtest_add_func("virtio-net-dataplane/tx-starve", test_tx_starve);
    qtest_add_func("virtio-net-dataplane/tx-batch", test_tx_batch);
    qtest_add_func("virtio-net-dataplane/adaptive", test_adaptive);
    qtest_add_func("virtio-net-dataplane/stream-wait", test_stream_wait);
    qtest_add_func("virtio-net-dataplane/answer", test_answer);
    qtest_add_func("virtio-net-dataplane/queue-rewrite", test_queue_rewrite);
    qtest_add_func("virtio-net-dataplane/migrate", test_migrate);
    qtest_add_func("virtio-net-dataplane/features-mq-late",
                   test_features_mq_late);
    qtest_add_func("virtio-net-dataplane/dma-self", test_dma_self);
    qtest_add_func("virtio-net-dataplane/dma-busy", test_dma_busy);
    qtest_add_func("virtio-net-dataplane/coal", test_coal);
    qtest_add_func("virtio-net-dataplane/coal-features", test_coal_features);
    qtest_add_func("virtio-net-dataplane/coal-migrate", test_coal_migrate);
}

libqos_init(register_virtio_net_dataplane_test);
