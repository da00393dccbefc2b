/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * nptraffic: netplane's traffic generator and measurer.  The client runs
 * statically linked in the busybox guest, the server natively on the host
 * side inside a network namespace.  In the guest, which has no ethtool, it
 * also reads and sets a NIC's interrupt coalescing ("coalesce", below),
 * and moves a PCI device's memory in and out of the address space while
 * another vCPU reads it ("mapstress").
 *
 * Control protocol: text lines over one TCP connection, the client drives.
 *
 *   C: HELLO nptraffic <proto>           S: HELLO nptraffic <proto>
 *   C: TEST <kind> <id> <size> <secs> <pps> <count> <client-udp-port>
 *                                        S: READY <data-port> | ERR <text>
 *   (tcp tests: the client connects to the data port now)
 *   C: GO                                (traffic starts)
 *   sender:   DONE <sent> <send-errors> <elapsed-ns>        (udp)
 *             DONE <bytes> <fnv>                            (tcp)
 *             DONE <trans> <lost> <elapsed-ns>              (rr, client)
 *   receiver: RESULT <recv> <corrupt> <dup> <ooo>           (udp)
 *             RESULT <bytes> <fnv> <first-byte-to-eof-ns>   (tcp)
 *             RESULT <echoed>                               (rr, server)
 *   C: BYE                               S: BYE
 *
 * A UDP payload is { be32 magic, be32 test id, be64 seq } and then byte
 * i = (seq * 31 + i) & 0xff.  TCP streams carry a periodic pattern and are
 * checksummed with FNV-1a 64 over little-endian 64-bit words (a zero-padded
 * tail word last).  Every wait has a deadline.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NPT_VERSION     "1.0"
#define NPT_PROTO       1
#define DEFAULT_PORT    5201
#define MAGIC           0x4e50544bull
#define HDR_LEN         16
#define L2L3L4_LEN      42              /* Ethernet + IPv4 + UDP headers */
#define FRAME_MIN       64
#define FRAME_MAX       1514
#define PAYLOAD_MAX     (FRAME_MAX - L2L3L4_LEN)
#define BATCH           32
#define SOCK_BUF        (4 * 1024 * 1024)
#define TCP_CHUNK       65536
#define PAT_PERIOD      65521           /* prime, so writes don't align */
#define TCP_MSS_EST     1448            /* --irq: tcp packets ~ bytes / this */
#define DUP_MAX_BITS    (1ull << 28)    /* seqs tracked for dup detection */
#define LAT_MAX         (16u << 20)     /* rr latency samples kept */
#define FNV_INIT        0xcbf29ce484222325ull
#define LINE            256

#define MS              1000000ull
#define NS              1000000000ull
#define T_CONNECT       (5 * NS)        /* control connect, with retries */
#define T_CTL           (10 * NS)       /* a control reply */
#define T_IDLE          (60 * NS)       /* server: the next request */
#define T_DRAIN         (300 * MS)      /* silence that ends a udp drain */
#define T_DRAIN_MAX     (2 * NS)
#define T_BURST_QUIET   (1 * NS)
#define T_BURST_MAX     (10 * NS)
#define T_TCP_EXTRA     (30 * NS)       /* queued stream data after DONE */
#define T_RR            (1 * NS)        /* one rr transaction */

enum { T_UDP_TX, T_UDP_RX, T_UDP_BURST, T_TCP_TX, T_TCP_RX, T_RR_LAT };
static const char *const kind_names[] = {
    "udp-tx", "udp-rx", "udp-burst", "tcp-tx", "tcp-rx", "rr",
};
#define NKINDS ((int)(sizeof(kind_names) / sizeof(kind_names[0])))
#define IS_TCP(t) ((t)->kind == T_TCP_TX || (t)->kind == T_TCP_RX)

struct test {
    int kind;
    uint64_t size;              /* frame size, 0 for tcp */
    uint64_t secs;              /* 0 for udp-burst */
    uint64_t pps, count;        /* count: udp-burst only */
};

/* Both sides' numbers of one test, merged */
struct result {
    uint64_t sent, errors, tx_ns;               /* udp sender, rr client */
    uint64_t recv, corrupt, dup, ooo;           /* udp receiver */
    uint64_t bytes_sent, bytes_recv, sum_sent, sum_recv, rx_ns; /* tcp */
    uint64_t trans, lost;                       /* rr */
    uint32_t *lat;                              /* rr latencies, ns */
    size_t nlat, cap;
};

struct ctl {
    int fd;
    size_t len;
    char buf[512];
};

struct csum {
    uint64_t h, word, bytes;
    unsigned n;
};

static char errbuf[LINE];
static const char *phase_test;          /* client: NPPHASE end pending */
static uint8_t ramp[256 + PAYLOAD_MAX];
static uint8_t tpat[PAT_PERIOD + TCP_CHUNK];
static uint8_t tbuf[TCP_CHUNK];
static uint8_t pkts[BATCH][2048];
static struct iovec iov[BATCH];
static struct mmsghdr mmsg[BATCH];

static void seterr(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
    va_end(ap);
}

/* Client: the traffic part of a test is over (no-op on the server) */
static void phase_end(void)
{
    if (phase_test) {
        printf("NPPHASE end test=%s\n", phase_test);
        phase_test = NULL;
    }
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + ts.tv_nsec;
}

/* ppoll() until an absolute deadline; EINTR counts as a timeout */
static int poll_until(struct pollfd *p, int n, uint64_t until)
{
    uint64_t now = now_ns(), left = until > now ? until - now : 0;
    struct timespec ts = { (time_t)(left / NS), (long)(left % NS) };
    int r = ppoll(p, n, &ts, NULL);

    if (r < 0 && errno != EINTR) {
        seterr("poll: %s", strerror(errno));
        return -1;
    }
    return r < 0 ? 0 : r;
}

/* ---- test specs ---- */

static int kind_lookup(const char *name)
{
    int i;

    for (i = 0; i < NKINDS; i++) {
        if (!strcmp(name, kind_names[i])) {
            return i;
        }
    }
    return -1;
}

static const char *test_invalid(const struct test *t)
{
    if (!IS_TCP(t) && (t->size < FRAME_MIN || t->size > FRAME_MAX)) {
        return "SIZE must be 64..1514 (Ethernet frame without FCS)";
    }
    if (t->kind == T_UDP_BURST && (t->count < 1 || t->count > 10000000)) {
        return "COUNT must be 1..10000000";
    }
    if (t->kind != T_UDP_BURST && (t->secs < 1 || t->secs > 3600)) {
        return "SECS must be 1..3600";
    }
    return t->pps > 10000000 ? "PPS must be 0..10000000" : NULL;
}

static int parse_test(const char *spec, struct test *t)
{
    static const char *const syntax[] = {
        "udp-tx:SIZE:SECS[:PPS]", "udp-rx:SIZE:SECS[:PPS]",
        "udp-burst:SIZE:COUNT", "tcp-tx:SECS", "tcp-rx:SECS", "rr:SIZE:SECS",
    };
    static const int nums[] = { 2, 2, 2, 1, 1, 2 };    /* without PPS */
    uint64_t v[3] = { 0, 0, 0 };
    char name[16], junk;
    const char *why = NULL, *nums_part;
    int n;

    memset(t, 0, sizeof(*t));
    n = sscanf(spec, "%15[a-z-]:%" SCNu64 ":%" SCNu64 ":%" SCNu64 "%c", name,
               &v[0], &v[1], &v[2], &junk) - 1;
    t->kind = n < 0 ? -1 : kind_lookup(name);
    nums_part = spec + (t->kind < 0 ? 0 : strlen(name));
    if (t->kind < 0) {
        why = "unknown test";
    } else if (nums_part[strspn(nums_part, ":0123456789")] ||
               spec[strlen(spec) - 1] == ':' ||
               (n != nums[t->kind] && (n != 3 || t->kind > T_UDP_RX))) {
        why = syntax[t->kind];
    } else if (IS_TCP(t)) {
        t->secs = v[0];
    } else {
        t->size = v[0];
        if (t->kind == T_UDP_BURST) {
            t->count = v[1];
        } else {
            t->secs = v[1];
            t->pps = v[2];
        }
    }
    why = why ? why : test_invalid(t);
    if (why) {
        fprintf(stderr, "nptraffic: bad test '%s': %s%s\n", spec,
                t->kind >= 0 && why == syntax[t->kind] ? "expected " : "",
                why);
        return -1;
    }
    return 0;
}

/* ---- sockets ---- */

static void set_timeout(int fd, int opt, uint64_t ns)
{
    struct timeval tv = { (time_t)(ns / NS), (long)(ns % NS / 1000) };

    setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv));
}

static void set_bufs(int fd)
{
    int v = SOCK_BUF;

    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) < 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
    }
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)) < 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
    }
}

static struct sockaddr_in sin_make(struct in_addr ip, unsigned port)
{
    struct sockaddr_in a;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr = ip;
    a.sin_port = htons(port);
    return a;
}

/*
 * A socket bound to 0.0.0.0:port, listening if a stream socket.  Port 0
 * means a data socket: big buffers, sends time out after 100 ms (udp
 * retries those), accept() after T_CTL.
 */
static int sock_open(int type, unsigned port)
{
    struct in_addr any = { htonl(INADDR_ANY) };
    struct sockaddr_in a = sin_make(any, port);
    int one = 1, fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        seterr("socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (port == 0) {
        set_bufs(fd);
        set_timeout(fd, SO_SNDTIMEO, 100 * MS);
        set_timeout(fd, SO_RCVTIMEO, T_CTL);
    }
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        (type == SOCK_STREAM && listen(fd, 4) < 0)) {
        seterr("bind/listen port %u: %s", port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int sock_port(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);

    if (getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        return 0;
    }
    return ntohs(a.sin_port);
}

static int udp_connect(int fd, struct in_addr ip, unsigned port)
{
    struct sockaddr_in a = sin_make(ip, port);

    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        seterr("udp connect: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Control or data socket setup: no Nagle, bounded blocking sends */
static void tcp_setup(int fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    set_timeout(fd, SO_SNDTIMEO, T_CTL);
}

/* TCP connect with a deadline, retrying refusals until then */
static int tcp_connect(struct in_addr ip, unsigned port, int bufs,
                       uint64_t until)
{
    struct sockaddr_in a = sin_make(ip, port);
    struct pollfd p;
    socklen_t len = sizeof(int);
    int fd, err;

    for (;;) {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            seterr("socket: %s", strerror(errno));
            return -1;
        }
        if (bufs) {
            set_bufs(fd);
        }
        err = connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ? errno : 0;
        if (err == EINPROGRESS) {
            p.fd = fd;
            p.events = POLLOUT;
            err = poll_until(&p, 1, until) > 0 ? 0 : ETIMEDOUT;
            if (!err && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)) {
                err = errno;
            }
        }
        if (!err) {
            fcntl(fd, F_SETFL, 0);      /* blocking again */
            tcp_setup(fd);
            return fd;
        }
        close(fd);
        if (err != ECONNREFUSED || now_ns() + 250 * MS >= until) {
            seterr("cannot connect to %s:%u: %s", inet_ntoa(ip), port,
                   strerror(err));
            return -1;
        }
        usleep(250000);
    }
}

/* ---- control connection ---- */

/* Read what has arrived; -1 on EOF or error */
static int ctl_fill(struct ctl *c)
{
    ssize_t n;

    if (c->len == sizeof(c->buf)) {
        seterr("control line too long");
        return -1;
    }
    n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, MSG_DONTWAIT);
    if (n > 0) {
        c->len += n;
        return 0;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return 0;
    }
    seterr("control connection closed by peer");
    return -1;
}

/* Keep an eye on the control connection while busy with data */
static int ctl_check(struct ctl *c, short revents)
{
    return revents ? ctl_fill(c) : 0;
}

/* Pop one buffered line (LINE bytes, without newline); 1 if there was one */
static int ctl_getline(struct ctl *c, char *out)
{
    char *nl = memchr(c->buf, '\n', c->len);
    size_t n;

    if (!nl) {
        return 0;
    }
    n = nl - c->buf;
    snprintf(out, LINE, "%.*s", (int)n, c->buf);
    out[strcspn(out, "\r")] = '\0';
    c->len -= n + 1;
    memmove(c->buf, nl + 1, c->len);
    return 1;
}

static int ctl_readline(struct ctl *c, char *out, uint64_t until)
{
    struct pollfd p = { c->fd, POLLIN, 0 };
    int r;

    while (!ctl_getline(c, out)) {
        r = poll_until(&p, 1, until);
        if (r < 0 || (r > 0 && ctl_fill(c) < 0)) {
            return -1;
        }
        if (r == 0 && now_ns() >= until) {
            seterr("timeout waiting for the peer");
            return -1;
        }
    }
    return 0;
}

static int ctl_vsend(struct ctl *c, const char *fmt, va_list ap)
{
    char line[LINE];
    int len = vsnprintf(line, sizeof(line) - 1, fmt, ap);

    len = len < LINE - 1 ? len : LINE - 2;
    line[len++] = '\n';
    if (send(c->fd, line, len, MSG_NOSIGNAL) != len) {
        seterr("control send: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static int ctl_send(struct ctl *c, const char *fmt, ...)
{
    va_list ap;
    int r;

    va_start(ap, fmt);
    r = ctl_vsend(c, fmt, ap);
    va_end(ap);
    return r;
}

/* Send a line, then wait up to wait ns for the reply line */
static int ctl_ask(struct ctl *c, char *reply, uint64_t wait,
                   const char *fmt, ...)
{
    va_list ap;
    int r;

    va_start(ap, fmt);
    r = ctl_vsend(c, fmt, ap);
    va_end(ap);
    return r < 0 ? -1 : ctl_readline(c, reply, now_ns() + wait);
}

static int bad_message(const char *line)
{
    seterr("unexpected message '%s'", line);
    return -1;
}

/* ---- payloads, checksums ---- */

static void pkt_fill(uint8_t *p, size_t len, uint32_t id, uint64_t seq)
{
    uint64_t hdr[2] = { htobe64(MAGIC << 32 | id), htobe64(seq) };

    memcpy(p, hdr, HDR_LEN);
    memcpy(p + HDR_LEN, ramp + ((seq * 31) & 0xff), len - HDR_LEN);
}

static int pkt_check(const uint8_t *p, size_t len, size_t want, uint32_t id,
                     uint64_t *seq)
{
    uint64_t hdr[2];

    if (len != want) {
        return -1;
    }
    memcpy(hdr, p, HDR_LEN);
    *seq = be64toh(hdr[1]);
    if (be64toh(hdr[0]) != (MAGIC << 32 | id)) {
        return -1;
    }
    return memcmp(p + HDR_LEN, ramp + ((*seq * 31) & 0xff), len - HDR_LEN)
           ? -1 : 0;
}

static size_t payload_len(const struct test *t)
{
    return t->size - L2L3L4_LEN;
}

static void csum_mix(struct csum *s, uint64_t w)
{
    s->h = (s->h ^ w) * 0x100000001b3ull;
}

static void csum_update(struct csum *s, const uint8_t *p, size_t len)
{
    uint64_t w;

    s->bytes += len;
    for (; len && s->n; len--) {
        s->word |= (uint64_t)*p++ << (8 * s->n);
        if (++s->n == 8) {
            csum_mix(s, s->word);
            s->word = s->n = 0;
        }
    }
    for (; len >= 8; len -= 8, p += 8) {
        memcpy(&w, p, 8);
        csum_mix(s, le64toh(w));
    }
    for (; len; len--) {
        s->word |= (uint64_t)*p++ << (8 * s->n++);
    }
}

static uint64_t csum_final(struct csum *s)
{
    if (s->n) {
        csum_mix(s, s->word);
        s->word = s->n = 0;
    }
    return s->h;
}

static void mmsg_setup(size_t len)
{
    int i;

    memset(mmsg, 0, sizeof(mmsg));
    for (i = 0; i < BATCH; i++) {
        iov[i].iov_base = pkts[i];
        iov[i].iov_len = len;
        mmsg[i].msg_hdr.msg_iov = &iov[i];
        mmsg[i].msg_hdr.msg_iovlen = 1;
    }
}

/* ---- udp ---- */

struct rxstat {
    struct result *r;
    uint32_t id;
    size_t plen;
    uint64_t max_seq, nbits;
    int have_max;
    uint8_t *bits;              /* seqs seen, grown on demand */
};

static void rx_account(struct rxstat *st, const uint8_t *p, size_t len)
{
    uint64_t seq, n;
    uint8_t *b;

    if (pkt_check(p, len, st->plen, st->id, &seq) < 0) {
        st->r->corrupt++;
        return;
    }
    if (seq < DUP_MAX_BITS && seq >= st->nbits) {
        n = st->nbits ? st->nbits : 65536;
        while (n <= seq) {
            n *= 2;
        }
        b = realloc(st->bits, n / 8);
        if (b) {
            memset(b + st->nbits / 8, 0, (n - st->nbits) / 8);
            st->bits = b;
            st->nbits = n;
        }
    }
    if (seq < st->nbits) {
        if (st->bits[seq / 8] & (1u << (seq % 8))) {
            st->r->dup++;
            return;
        }
        st->bits[seq / 8] |= 1u << (seq % 8);
    }
    if (st->have_max && seq < st->max_seq) {
        st->r->ooo++;
    } else {
        st->max_seq = seq;
        st->have_max = 1;
    }
    st->r->recv++;
}

/*
 * Receive and account datagrams.  With line: until a control line arrives
 * (1), -1 if the deadline passes first.  Without: until silence ns passed
 * without datagrams, or the deadline (0).  -1 on errors.
 */
static int udp_rx_loop(struct rxstat *st, int fd, struct ctl *c, char *line,
                       uint64_t until, uint64_t silence)
{
    struct pollfd p[2] = { { fd, POLLIN, 0 }, { c->fd, POLLIN, 0 } };
    uint64_t t, last = now_ns();
    int i, k, n;

    mmsg_setup(sizeof(pkts[0]));
    for (;;) {
        if (line && ctl_getline(c, line)) {
            return 1;
        }
        t = silence && last + silence < until ? last + silence : until;
        if (now_ns() >= t) {
            if (line) {
                seterr("timeout waiting for the peer's DONE");
                return -1;
            }
            return 0;
        }
        if (poll_until(p, 2, t) < 0 || ctl_check(c, p[1].revents) < 0) {
            return -1;
        }
        for (k = 0, n = BATCH; k < 16 && p[0].revents && n == BATCH; k++) {
            n = recvmmsg(fd, mmsg, BATCH, MSG_DONTWAIT, NULL);
            for (i = 0; i < n; i++) {
                if (mmsg[i].msg_hdr.msg_flags & MSG_TRUNC) {
                    st->r->corrupt++;
                } else {
                    rx_account(st, pkts[i], mmsg[i].msg_len);
                }
            }
            last = n > 0 ? now_ns() : last;
        }
    }
}

/*
 * Sender role of a udp test: SECS of datagrams (or COUNT of them), paced
 * to PPS if non-zero; then DONE, and the peer's RESULT.
 */
static int udp_sender(int fd, struct ctl *c, const struct test *t,
                      uint32_t id, struct result *r)
{
    struct pollfd p = { c->fd, POLLIN, 0 };
    size_t plen = payload_len(t);
    uint64_t start = now_ns(), now, want, due, next, end;
    unsigned i, k = 0;
    int n, one = 1;
    char line[LINE];

    if (t->kind == T_UDP_BURST) {
        /*
         * Let whoever watches the receiver's "NPPHASE begin" (a harness
         * reading a slow serial console) take its snapshot first.
         */
        usleep(300 * 1000);
        start = now_ns();
    }
    end = start + (t->kind == T_UDP_BURST ? T_BURST_MAX : t->secs * NS);
    mmsg_setup(plen);
    /* without this, udp hides qdisc drops (ENOBUFS) as successful sends */
    setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof(one));
    for (now = start; now < end; now = now_ns()) {
        want = t->count ? t->count - r->sent : BATCH;
        if (want == 0) {
            break;
        }
        if (t->pps) {
            due = (now - start) / 1000 * t->pps / 1000000 + 1;
            if (due <= r->sent) {
                next = start + r->sent * 1000000 / t->pps * 1000;
                if (poll_until(&p, 1, next < end ? next : end) < 0 ||
                    ctl_check(c, p.revents) < 0) {
                    return -1;
                }
                continue;
            }
            want = want < due - r->sent ? want : due - r->sent;
        }
        want = want < BATCH ? want : BATCH;
        for (i = 0; i < want; i++) {
            pkt_fill(pkts[i], plen, id, r->sent + i);
        }
        n = sendmmsg(fd, mmsg, want, 0);
        if (n > 0) {
            r->sent += n;
        } else if (errno != EINTR) {
            /* ENOBUFS, EAGAIN (send timeout), ICMP errors: back off, retry */
            r->errors++;
            recv(fd, pkts[0], 1, MSG_ERRQUEUE | MSG_DONTWAIT);
            if (poll_until(&p, 1, now_ns() + 200000) < 0 ||
                ctl_check(c, p.revents) < 0) {
                return -1;
            }
        }
        if (++k % 64 == 0 && (poll(&p, 1, 0) < 0 ||
                              ctl_check(c, p.revents) < 0)) {
            return -1;
        }
    }
    r->tx_ns = now_ns() - start;
    phase_end();
    if (ctl_ask(c, line, T_CTL + (t->count ? T_BURST_MAX : T_DRAIN_MAX),
                "DONE %" PRIu64 " %" PRIu64 " %" PRIu64,
                r->sent, r->errors, r->tx_ns) < 0) {
        return -1;
    }
    if (sscanf(line, "RESULT %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64,
               &r->recv, &r->corrupt, &r->dup, &r->ooo) != 4) {
        return bad_message(line);
    }
    return 0;
}

/* Receiver role of a udp test: traffic until DONE, drain, RESULT */
static int udp_receiver(int fd, struct ctl *c, const struct test *t,
                        uint32_t id, struct result *r)
{
    struct rxstat st = { r, id, payload_len(t), 0, 0, 0, NULL };
    int burst = t->kind == T_UDP_BURST, ret = -1;
    char line[LINE];

    if (udp_rx_loop(&st, fd, c, line, now_ns() + T_CTL +
                    (burst ? T_BURST_MAX : t->secs * NS), 0) < 0) {
        goto out;
    }
    phase_end();
    if (sscanf(line, "DONE %" SCNu64 " %" SCNu64 " %" SCNu64,
               &r->sent, &r->errors, &r->tx_ns) != 3) {
        bad_message(line);
        goto out;
    }
    if (udp_rx_loop(&st, fd, c, NULL,
                    now_ns() + (burst ? T_BURST_MAX : T_DRAIN_MAX),
                    burst ? T_BURST_QUIET : T_DRAIN) < 0) {
        goto out;
    }
    ret = ctl_send(c, "RESULT %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64,
                   r->recv, r->corrupt, r->dup, r->ooo);
out:
    free(st.bits);
    return ret;
}

/* ---- tcp ---- */

static int tcp_sender(int fd, struct ctl *c, const struct test *t,
                      uint32_t id, struct result *r)
{
    struct pollfd p[2] = { { fd, POLLOUT, 0 }, { c->fd, POLLIN, 0 } };
    struct csum s = { FNV_INIT, 0, 0, 0 };
    uint64_t start = now_ns(), end = start + t->secs * NS;
    size_t off;
    ssize_t n;
    char line[LINE];

    (void)id;
    while (now_ns() < end) {
        if (poll_until(p, 2, end) < 0 || ctl_check(c, p[1].revents) < 0) {
            return -1;
        }
        if (p[0].revents) {
            off = s.bytes % PAT_PERIOD;
            n = send(fd, tpat + off, TCP_CHUNK, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                csum_update(&s, tpat + off, n);
            } else if (errno != EAGAIN && errno != EINTR) {
                seterr("data connection: %s", strerror(errno));
                return -1;
            }
        }
    }
    shutdown(fd, SHUT_WR);
    r->tx_ns = now_ns() - start;
    phase_end();
    r->bytes_sent = s.bytes;
    r->sum_sent = csum_final(&s);
    if (ctl_ask(c, line, T_TCP_EXTRA, "DONE %" PRIu64 " %" PRIu64,
                r->bytes_sent, r->sum_sent) < 0) {
        return -1;
    }
    if (sscanf(line, "RESULT %" SCNu64 " %" SCNu64 " %" SCNu64,
               &r->bytes_recv, &r->sum_recv, &r->rx_ns) != 3) {
        return bad_message(line);
    }
    return 0;
}

/* Read the stream until EOF and the sender's DONE, then RESULT */
static int tcp_receiver(int fd, struct ctl *c, const struct test *t,
                        uint32_t id, struct result *r)
{
    struct pollfd p[2] = { { fd, POLLIN, 0 }, { c->fd, POLLIN, 0 } };
    struct csum s = { FNV_INIT, 0, 0, 0 };
    uint64_t first = 0, until = now_ns() + t->secs * NS + T_TCP_EXTRA;
    int done = 0, k;
    ssize_t n;
    char line[LINE];

    (void)id;
    while (p[0].fd >= 0 || !done) {
        if (!done && ctl_getline(c, line)) {
            done = 1;
            continue;
        }
        if (poll_until(p, 2, until) < 0 || ctl_check(c, p[1].revents) < 0) {
            return -1;
        }
        if (now_ns() >= until) {
            seterr("timeout waiting for the end of the stream");
            return -1;
        }
        for (n = 1, k = 0; k < 8 && p[0].revents && n > 0; k++) {
            n = recv(fd, tbuf, sizeof(tbuf), MSG_DONTWAIT);
            if (n > 0) {
                first = first ? first : now_ns();
                csum_update(&s, tbuf, n);
            }
        }
        if (n == 0) {
            r->rx_ns = first ? now_ns() - first : 0;
            p[0].fd = -1;               /* EOF: poll ignores it now */
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            seterr("data connection: %s", strerror(errno));
            return -1;
        }
    }
    phase_end();
    r->bytes_recv = s.bytes;
    r->sum_recv = csum_final(&s);
    if (sscanf(line, "DONE %" SCNu64 " %" SCNu64,
               &r->bytes_sent, &r->sum_sent) != 2) {
        return bad_message(line);
    }
    return ctl_send(c, "RESULT %" PRIu64 " %" PRIu64 " %" PRIu64,
                    r->bytes_recv, r->sum_recv, r->rx_ns);
}

/* ---- rr ---- */

static void lat_add(struct result *r, uint64_t ns)
{
    uint32_t *l;

    if (r->nlat == r->cap && r->cap < LAT_MAX) {
        l = realloc(r->lat, (r->cap ? r->cap * 2 : 4096) * sizeof(*l));
        if (l) {
            r->lat = l;
            r->cap = r->cap ? r->cap * 2 : 4096;
        }
    }
    if (r->nlat < r->cap) {
        r->lat[r->nlat++] = ns;
    }
}

/* One request in flight, 1 s to answer it, for SECS; then DONE */
static int rr_client(int fd, struct ctl *c, const struct test *t,
                     uint32_t id, struct result *r)
{
    struct pollfd p[2] = { { fd, POLLIN, 0 }, { c->fd, POLLIN, 0 } };
    uint64_t start = now_ns(), t0, seq, rseq;
    size_t plen = payload_len(t);
    ssize_t n;
    int got;
    char line[LINE];

    for (seq = 0; now_ns() < start + t->secs * NS; seq++) {
        pkt_fill(pkts[0], plen, id, seq);
        t0 = now_ns();
        got = 0;
        if (send(fd, pkts[0], plen, 0) < 0) {
            /* ICMP error of an earlier one, peer gone?  Count, back off */
            if (poll_until(&p[1], 1, t0 + 10 * MS) < 0 ||
                ctl_check(c, p[1].revents) < 0) {
                return -1;
            }
            got = -1;
        }
        while (!got && now_ns() < t0 + T_RR) {
            if (poll_until(p, 2, t0 + T_RR) < 0 ||
                ctl_check(c, p[1].revents) < 0) {
                return -1;
            }
            n = p[0].revents ? recv(fd, pkts[1], sizeof(pkts[1]),
                                    MSG_DONTWAIT) : -1;
            if (n >= 0 && pkt_check(pkts[1], n, plen, id, &rseq) < 0) {
                r->corrupt++;
            } else if (n >= 0 && rseq == seq) {
                got = 1;                /* else: late answer, ignore it */
            }
        }
        if (got == 1) {
            r->trans++;
            lat_add(r, now_ns() - t0);
        } else {
            r->lost++;
        }
    }
    r->tx_ns = now_ns() - start;
    phase_end();
    if (ctl_ask(c, line, T_CTL, "DONE %" PRIu64 " %" PRIu64 " %" PRIu64,
                r->trans, r->lost, r->tx_ns) < 0) {
        return -1;
    }
    return strncmp(line, "RESULT ", 7) ? bad_message(line) : 0;
}

/* Echo every datagram back to where it came from, until DONE */
static int rr_server(int fd, struct ctl *c, const struct test *t,
                     uint32_t id, struct result *r)
{
    struct pollfd p[2] = { { fd, POLLIN, 0 }, { c->fd, POLLIN, 0 } };
    uint64_t until = now_ns() + t->secs * NS + T_CTL + T_RR, echoed = 0;
    struct sockaddr_in from;
    socklen_t flen;
    ssize_t n;
    char line[LINE];

    (void)id;
    while (!ctl_getline(c, line)) {
        if (poll_until(p, 2, until) < 0 || ctl_check(c, p[1].revents) < 0) {
            return -1;
        }
        if (now_ns() >= until) {
            seterr("timeout waiting for the peer's DONE");
            return -1;
        }
        flen = sizeof(from);
        n = p[0].revents ? recvfrom(fd, pkts[0], sizeof(pkts[0]),
                                    MSG_DONTWAIT, (struct sockaddr *)&from,
                                    &flen) : -1;
        if (n >= 0 && sendto(fd, pkts[0], n, 0, (struct sockaddr *)&from,
                             flen) == n) {
            echoed++;
        }
    }
    if (sscanf(line, "DONE %" SCNu64 " %" SCNu64 " %" SCNu64,
               &r->trans, &r->lost, &r->tx_ns) != 3) {
        return bad_message(line);
    }
    return ctl_send(c, "RESULT %" PRIu64, echoed);
}

typedef int role_fn(int fd, struct ctl *c, const struct test *t,
                    uint32_t id, struct result *r);

/* What each side does in a test: { client, server } */
static role_fn *const roles[][2] = {
    [T_UDP_TX] = { udp_sender, udp_receiver },
    [T_UDP_RX] = { udp_receiver, udp_sender },
    [T_UDP_BURST] = { udp_receiver, udp_sender },
    [T_TCP_TX] = { tcp_sender, tcp_receiver },
    [T_TCP_RX] = { tcp_receiver, tcp_sender },
    [T_RR_LAT] = { rr_client, rr_server },
};

/* ---- results ---- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* Percentile of the sorted latencies, in us */
static uint64_t pct_us(const struct result *r, unsigned pct)
{
    size_t i = r->nlat * pct / 100;

    return r->nlat ? r->lat[i < r->nlat ? i : r->nlat - 1] / 1000 : 0;
}

static int test_failed(const struct test *t, const struct result *r)
{
    if (IS_TCP(t)) {
        return r->bytes_sent != r->bytes_recv || r->sum_sent != r->sum_recv;
    }
    return r->corrupt > 0;
}

/* One result line, without the newline */
static void print_result(FILE *f, const char *prefix, const struct test *t,
                         struct result *r)
{
    uint64_t ns = IS_TCP(t) ? r->rx_ns : r->tx_ns;
    double secs = (ns ? ns : 1) / 1e9;

    fprintf(f, "%stest=%s size=%" PRIu64 " secs=%.3f ", prefix,
            kind_names[t->kind], t->size, ns / 1e9);
    if (t->pps) {
        fprintf(f, "rate=%" PRIu64 " ", t->pps);
    }
    if (IS_TCP(t)) {
        fprintf(f, "bytes_sent=%" PRIu64 " bytes_recv=%" PRIu64
                " ok=%d mbps=%.2f", r->bytes_sent, r->bytes_recv,
                !test_failed(t, r), r->bytes_recv * 8 / secs / 1e6);
    } else if (t->kind == T_RR_LAT) {
        if (r->nlat) {
            qsort(r->lat, r->nlat, sizeof(*r->lat), cmp_u32);
        }
        fprintf(f, "trans=%" PRIu64 " lost=%" PRIu64 " corrupt=%" PRIu64
                " tps=%" PRIu64 " p50_us=%" PRIu64 " p90_us=%" PRIu64
                " p99_us=%" PRIu64 " max_us=%" PRIu64, r->trans, r->lost,
                r->corrupt, (uint64_t)(r->trans / secs), pct_us(r, 50),
                pct_us(r, 90), pct_us(r, 99), pct_us(r, 100));
    } else {
        fprintf(f, "sent=%" PRIu64 " recv=%" PRIu64 " lost=%" PRIu64
                " corrupt=%" PRIu64 " dup=%" PRIu64 " ooo=%" PRIu64
                " pps=%" PRIu64 " mbps=%.2f send_errors=%" PRIu64,
                r->sent, r->recv, r->sent > r->recv ? r->sent - r->recv : 0,
                r->corrupt, r->dup, r->ooo, (uint64_t)(r->recv / secs),
                r->recv * t->size * 8 / secs / 1e6, r->errors);
    }
}

/* virtio interrupt counts from /proc/interrupts: input, output, other */
static int read_irqs(uint64_t v[3])
{
    FILE *f = fopen("/proc/interrupts", "r");
    char *line = NULL, *p;
    size_t cap = 0;
    uint64_t sum, x;
    int ncpu = 0, i, len;

    v[0] = v[1] = v[2] = 0;
    if (!f) {
        return -1;
    }
    if (getline(&line, &cap, f) > 0) {
        for (p = line; (p = strstr(p, "CPU")); p += 3) {
            ncpu++;
        }
    }
    while (getline(&line, &cap, f) > 0) {
        p = strchr(line, ':');
        if (!p) {
            continue;
        }
        for (p++, sum = 0, i = 0; i < ncpu; i++, p += len) {
            if (sscanf(p, " %" SCNu64 "%n", &x, &len) != 1) {
                break;
            }
            sum += x;
        }
        if (strstr(p, "virtio")) {
            v[strstr(p, "input") ? 0 : strstr(p, "output") ? 1 : 2] += sum;
        }
    }
    free(line);
    fclose(f);
    return 0;
}

/*
 * The UDP stack's drop counters from /proc/net/snmp: RcvbufErrors (socket
 * buffer full) and InErrors (all input errors, those included).
 */
static int read_udp_errors(uint64_t v[2])
{
    static const char sep[] = { ' ', '\n', 0 };
    FILE *f = fopen("/proc/net/snmp", "r");
    char names[1024], values[1024];
    char *n, *val, *ns, *vs;
    int found = 0;

    v[0] = v[1] = 0;
    if (!f) {
        return -1;
    }
    while (fgets(names, sizeof(names), f) && fgets(values, sizeof(values), f)) {
        if (strncmp(names, "Udp:", 4) || strncmp(values, "Udp:", 4)) {
            continue;
        }
        n = strtok_r(names + 4, sep, &ns);
        val = strtok_r(values + 4, sep, &vs);
        for (; n && val; n = strtok_r(NULL, sep, &ns),
                         val = strtok_r(NULL, sep, &vs)) {
            if (!strcmp(n, "RcvbufErrors")) {
                sscanf(val, "%" SCNu64, &v[0]);
            } else if (!strcmp(n, "InErrors")) {
                sscanf(val, "%" SCNu64, &v[1]);
            }
        }
        found = 1;
        break;
    }
    fclose(f);
    return found ? 0 : -1;
}

/*
 * One of virtio_net's per-queue ethtool statistics: "tx_queue_N_kicks"
 * (Linux up to 6.9) or "tx0_kicks" (6.10 on), for dir "tx" or "rx" and
 * what "kicks" or "packets".
 */
static int vnet_stat_is(const char *name, const char *dir, const char *what)
{
    char fmt[48];
    unsigned q;
    int end = -1;

    snprintf(fmt, sizeof(fmt), "%s_queue_%%u_%s%%n", dir, what);
    if (sscanf(name, fmt, &q, &end) == 1 && end > 0 && !name[end]) {
        return 1;
    }
    end = -1;
    snprintf(fmt, sizeof(fmt), "%s%%u_%s%%n", dir, what);
    return sscanf(name, fmt, &q, &end) == 1 && end > 0 && !name[end];
}

/*
 * The guest driver's notification counters, summed over the queues of
 * every virtio_net interface (what ethtool -S shows): v[0] TX kicks,
 * v[1] RX kicks (buffers refilled and the device notified), v[2] TX
 * packets, v[3] RX packets.
 */
static int read_vnet_stats(uint64_t v[4])
{
    static const char *const keys[4][2] = {
        { "tx", "kicks" }, { "rx", "kicks" },
        { "tx", "packets" }, { "rx", "packets" },
    };
    struct if_nameindex *ifs, *it;
    struct ethtool_drvinfo drv;
    struct ethtool_gstrings *names = NULL;
    struct ethtool_stats *vals = NULL;
    struct ifreq ifr;
    const char *name;
    uint32_t i, k, n;
    int fd, found = 0;

    v[0] = v[1] = v[2] = v[3] = 0;
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifs = fd < 0 ? NULL : if_nameindex();
    for (it = ifs; it && it->if_index; it++) {
        memset(&ifr, 0, sizeof(ifr));
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", it->if_name);
        memset(&drv, 0, sizeof(drv));
        drv.cmd = ETHTOOL_GDRVINFO;
        ifr.ifr_data = (void *)&drv;
        if (ioctl(fd, SIOCETHTOOL, &ifr) < 0 ||
            strcmp(drv.driver, "virtio_net") || !drv.n_stats) {
            continue;
        }
        n = drv.n_stats;
        free(names);
        free(vals);
        names = calloc(1, sizeof(*names) + (size_t)n * ETH_GSTRING_LEN);
        vals = calloc(1, sizeof(*vals) + (size_t)n * sizeof(uint64_t));
        if (!names || !vals) {
            break;
        }
        names->cmd = ETHTOOL_GSTRINGS;
        names->string_set = ETH_SS_STATS;
        names->len = n;
        ifr.ifr_data = (void *)names;
        if (ioctl(fd, SIOCETHTOOL, &ifr) < 0) {
            continue;
        }
        vals->cmd = ETHTOOL_GSTATS;
        vals->n_stats = n;
        ifr.ifr_data = (void *)vals;
        if (ioctl(fd, SIOCETHTOOL, &ifr) < 0) {
            continue;
        }
        for (i = 0; i < n && i < names->len && i < vals->n_stats; i++) {
            name = (const char *)names->data + (size_t)i * ETH_GSTRING_LEN;
            if (memchr(name, 0, ETH_GSTRING_LEN) == NULL) {
                continue;
            }
            for (k = 0; k < 4; k++) {
                if (vnet_stat_is(name, keys[k][0], keys[k][1])) {
                    v[k] += vals->data[i];
                    found = 1;
                }
            }
        }
    }
    free(names);
    free(vals);
    if (ifs) {
        if_freenameindex(ifs);
    }
    if (fd >= 0) {
        close(fd);
    }
    return found ? 0 : -1;
}

/* ---- server ---- */

/* 0 passed, 1 failed measurement, -1 protocol error (session unusable) */
static int server_test(struct ctl *c, struct in_addr cip, const char *req)
{
    struct test t;
    struct result r;
    char kname[16], line[LINE];
    unsigned id;
    uint64_t cport;
    int fd = -1, lfd = -1, ret = -1, port = 0, n;

    memset(&r, 0, sizeof(r));
    memset(&t, 0, sizeof(t));
    n = sscanf(req, "TEST %15s %u %" SCNu64 " %" SCNu64 " %" SCNu64 " %"
               SCNu64 " %" SCNu64, kname, &id, &t.size, &t.secs, &t.pps,
               &t.count, &cport);
    t.kind = n == 7 ? kind_lookup(kname) : -1;
    if (t.kind < 0 || test_invalid(&t) || cport > 65535) {
        seterr("bad request '%s'", req);
        ctl_send(c, "ERR bad test request");
        return -1;
    }
    if (IS_TCP(&t)) {
        lfd = sock_open(SOCK_STREAM, 0);
        port = lfd < 0 ? 0 : sock_port(lfd);
    } else {
        fd = sock_open(SOCK_DGRAM, 0);
        port = fd < 0 ? 0 : sock_port(fd);
        if (port && (t.kind == T_UDP_RX || t.kind == T_UDP_BURST) &&
            udp_connect(fd, cip, cport) < 0) {
            port = 0;
        }
    }
    if (port == 0) {
        ctl_send(c, "ERR %s", errbuf);
        goto out;
    }
    if (ctl_send(c, "READY %d", port) < 0) {
        goto out;
    }
    if (lfd >= 0) {
        /* the listener's SO_RCVTIMEO bounds this wait */
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            seterr("no data connection: %s", strerror(errno));
            goto out;
        }
        tcp_setup(fd);
    }
    if (ctl_readline(c, line, now_ns() + T_CTL) < 0) {
        goto out;
    }
    if (strcmp(line, "GO")) {
        bad_message(line);
        goto out;
    }
    ret = roles[t.kind][1](fd, c, &t, id, &r);
    if (ret == 0) {
        print_result(stderr, "nptraffic server: ", &t, &r);
        fputc('\n', stderr);
        ret = test_failed(&t, &r);
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    if (lfd >= 0) {
        close(lfd);
    }
    return ret;
}

/* One control session; 0 if every test passed and the client said BYE */
static int server_session(int cfd, struct in_addr cip)
{
    struct ctl c = { cfd, 0, { 0 } };
    char line[LINE];
    int ok = 1, r, proto;

    if (ctl_readline(&c, line, now_ns() + T_CTL) < 0) {
        return -1;
    }
    if (sscanf(line, "HELLO nptraffic %d", &proto) != 1 ||
        proto != NPT_PROTO) {
        ctl_send(&c, "ERR want protocol nptraffic %d", NPT_PROTO);
        return bad_message(line);
    }
    if (ctl_send(&c, "HELLO nptraffic %d", NPT_PROTO) < 0) {
        return -1;
    }
    for (;;) {
        if (ctl_readline(&c, line, now_ns() + T_IDLE) < 0) {
            return -1;
        }
        if (!strcmp(line, "BYE")) {
            ctl_send(&c, "BYE");
            return !ok;
        }
        r = server_test(&c, cip, line);
        if (r < 0) {
            return -1;
        }
        ok &= !r;
    }
}

static int server_main(unsigned port, int once)
{
    struct sockaddr_in peer;
    socklen_t len;
    int lfd, cfd, r;

    lfd = sock_open(SOCK_STREAM, port);
    if (lfd < 0) {
        fprintf(stderr, "nptraffic server: %s\n", errbuf);
        return 1;
    }
    fprintf(stderr, "nptraffic server: listening on port %u\n", port);
    for (;;) {
        len = sizeof(peer);
        cfd = accept4(lfd, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno != EINTR && errno != ECONNABORTED) {
                perror("nptraffic server: accept");
                usleep(100000);
            }
            continue;
        }
        tcp_setup(cfd);
        fprintf(stderr, "nptraffic server: session from %s:%u\n",
                inet_ntoa(peer.sin_addr), ntohs(peer.sin_port));
        r = server_session(cfd, peer.sin_addr);
        close(cfd);
        if (r < 0) {
            fprintf(stderr, "nptraffic server: session aborted: %s\n", errbuf);
        } else {
            fprintf(stderr, "nptraffic server: session done%s\n",
                    r ? ", some tests failed" : "");
        }
        if (once) {
            close(lfd);
            return r ? 1 : 0;
        }
    }
}

/* ---- client ---- */

/* 0 passed, 1 failed measurement, -1 protocol error (session unusable) */
static int client_test(struct ctl *c, struct in_addr sip, const struct test *t,
                       unsigned idx, int irq)
{
    struct result r;
    uint64_t irq0[3], irq1[3], udp0[2], udp1[2], vq0[4], vq1[4], npk;
    uint32_t id = (uint32_t)(now_ns() ^ (uint64_t)getpid() << 20) + idx;
    int fd = -1, ret = -1, cport = 0, port, vq = 0;
    char line[LINE];

    memset(&r, 0, sizeof(r));
    if (t->kind == T_UDP_RX || t->kind == T_UDP_BURST) {
        fd = sock_open(SOCK_DGRAM, 0);
        if (fd < 0) {
            goto out;
        }
        cport = sock_port(fd);
    }
    if (ctl_ask(c, line, T_CTL, "TEST %s %u %" PRIu64 " %" PRIu64 " %" PRIu64
                " %" PRIu64 " %d", kind_names[t->kind], id, t->size, t->secs,
                t->pps, t->count, cport) < 0) {
        goto out;
    }
    if (sscanf(line, "READY %d", &port) != 1 || port < 1 || port > 65535) {
        seterr("server refused: %s", line);
        goto out;
    }
    if (IS_TCP(t)) {
        fd = tcp_connect(sip, port, 1, now_ns() + T_CONNECT);
    } else if (t->kind == T_UDP_TX || t->kind == T_RR_LAT) {
        fd = sock_open(SOCK_DGRAM, 0);
        if (fd >= 0 && udp_connect(fd, sip, port) < 0) {
            goto out;
        }
    }
    if (fd < 0) {
        goto out;
    }
    if (irq && read_irqs(irq0) < 0) {
        irq = 0;
        fprintf(stderr, "nptraffic: cannot read /proc/interrupts\n");
    }
    if (irq && read_udp_errors(udp0) < 0) {
        udp0[0] = udp0[1] = 0;
    }
    vq = irq && read_vnet_stats(vq0) == 0;
    printf("NPPHASE begin test=%s size=%" PRIu64 " secs=%" PRIu64 "\n",
           kind_names[t->kind], t->size, t->secs);
    phase_test = kind_names[t->kind];
    if (ctl_send(c, "GO") < 0 || roles[t->kind][0](fd, c, t, id, &r) < 0) {
        goto out;
    }
    print_result(stdout, "NPRESULT ", t, &r);
    if (irq && read_irqs(irq1) == 0) {
        /* packets: udp received, rr transactions, tcp ~ bytes / MSS */
        npk = IS_TCP(t) ? r.bytes_recv / TCP_MSS_EST :
               t->kind == T_RR_LAT ? r.trans : r.recv;
        printf(" irq_rx=%" PRIu64 " irq_tx=%" PRIu64 " irq_other=%" PRIu64
               " irq_per_pkt=%.3f", irq1[0] - irq0[0], irq1[1] - irq0[1],
               irq1[2] - irq0[2], (double)(irq1[0] - irq0[0] + irq1[1] -
                                           irq0[1]) / (npk ? npk : 1));
        if (read_udp_errors(udp1) == 0) {
            printf(" udp_rcvbuf_errors=%" PRIu64 " udp_in_errors=%" PRIu64,
                   udp1[0] - udp0[0], udp1[1] - udp0[1]);
        }
        if (vq && read_vnet_stats(vq1) == 0) {
            printf(" kicks_tx=%" PRIu64 " kicks_rx=%" PRIu64
                   " vq_tx_packets=%" PRIu64 " vq_rx_packets=%" PRIu64,
                   vq1[0] - vq0[0], vq1[1] - vq0[1], vq1[2] - vq0[2],
                   vq1[3] - vq0[3]);
        }
    }
    printf("\n");
    ret = test_failed(t, &r);
out:
    phase_end();
    if (fd >= 0) {
        close(fd);
    }
    free(r.lat);
    return ret;
}

static int coal_step(const char *spec);

/* A step of the client's list that is not a test: see coal_step() */
static int is_coal_step(const char *spec)
{
    return !strncmp(spec, "coalesce:", 9);
}

static int client_main(const char *addr, unsigned port, int irq,
                       char **specs, int ntests)
{
    struct test *tests = calloc(ntests, sizeof(*tests));
    struct ctl c = { -1, 0, { 0 } };
    struct in_addr sip;
    char line[LINE];
    int i, r, failed = 0, ret = 2, proto;

    for (i = 0; i < ntests; i++) {
        if (!tests ||
            (!is_coal_step(specs[i]) && parse_test(specs[i], &tests[i]) < 0)) {
            goto out;
        }
    }
    if (!inet_aton(addr, &sip)) {
        fprintf(stderr, "nptraffic: bad server address '%s' (IPv4 only)\n",
                addr);
        goto out;
    }
    ret = 1;
    c.fd = tcp_connect(sip, port, 0, now_ns() + T_CONNECT);
    if (c.fd < 0) {
        fprintf(stderr, "nptraffic: server not reachable: %s\n", errbuf);
        goto out;
    }
    if (ctl_ask(&c, line, T_CTL, "HELLO nptraffic %d", NPT_PROTO) < 0) {
        fprintf(stderr, "nptraffic: no greeting from server: %s\n", errbuf);
        goto out;
    }
    if (sscanf(line, "HELLO nptraffic %d", &proto) != 1 ||
        proto != NPT_PROTO) {
        fprintf(stderr, "nptraffic: server says '%s'\n", line);
        goto out;
    }
    for (i = 0; i < ntests; i++) {
        if (is_coal_step(specs[i])) {
            failed += coal_step(specs[i]) != 0;
            continue;
        }
        r = client_test(&c, sip, &tests[i], i, irq);
        if (r < 0) {
            printf("NPERROR test=%s spec=%s msg=\"%s\"\n",
                   kind_names[tests[i].kind], specs[i], errbuf);
            fprintf(stderr, "nptraffic: test %s failed: %s\n", specs[i],
                    errbuf);
            break;
        }
        failed += r;
    }
    if (i == ntests && ctl_ask(&c, line, T_CTL, "BYE") < 0) {
        fprintf(stderr, "nptraffic: no BYE from server: %s\n", errbuf);
    }
    failed += ntests - i;               /* the failed one and those not run */
    printf("NPSUMMARY tests=%d failed=%d\n", ntests, failed);
    ret = failed ? 1 : 0;
out:
    if (c.fd >= 0) {
        close(c.fd);
    }
    free(tests);
    return ret;
}

/* ---- interrupt coalescing: ethtool -c / -C without ethtool ---- */

/* ethtool -C's names for the fields of struct ethtool_coalesce we handle */
static const char *const coal_names[] = {
    "rx-usecs", "rx-frames", "tx-usecs", "tx-frames",
};
#define NCOAL ((int)(sizeof(coal_names) / sizeof(coal_names[0])))

static uint32_t *coal_field(struct ethtool_coalesce *ec, int k)
{
    uint32_t *f[NCOAL] = {
        &ec->rx_coalesce_usecs, &ec->rx_max_coalesced_frames,
        &ec->tx_coalesce_usecs, &ec->tx_max_coalesced_frames,
    };

    return f[k];
}

/* SIOCETHTOOL @cmd (ETHTOOL_GCOALESCE or _SCOALESCE) on @ec; 0 or errno */
static int coal_ioctl(int fd, const char *ifname, uint32_t cmd,
                      struct ethtool_coalesce *ec)
{
    struct ifreq ifr;

    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    ec->cmd = cmd;
    ifr.ifr_data = (void *)ec;
    return ioctl(fd, SIOCETHTOOL, &ifr) < 0 ? errno : 0;
}

/*
 * The errno is the answer the host looks for (the driver says EOPNOTSUPP,
 * EINVAL or EBUSY depending on the device's features and the link), so
 * print its name: those SIOCETHTOOL can give by name (glibc's
 * strerrorname_np() is not for QEMU-style code), any other as a number.
 */
#define ERRNO_NAME(e) { e, #e }
static const struct {
    int err;
    const char *name;
} errno_names[] = {
    ERRNO_NAME(EOPNOTSUPP), ERRNO_NAME(EINVAL), ERRNO_NAME(EBUSY),
    ERRNO_NAME(ENODEV), ERRNO_NAME(EPERM), ERRNO_NAME(EACCES),
    ERRNO_NAME(EFAULT), ERRNO_NAME(ENOMEM), ERRNO_NAME(EIO),
    ERRNO_NAME(EAGAIN), ERRNO_NAME(ETIMEDOUT), ERRNO_NAME(ENOTTY),
};

static int coal_error(int err, const char *op)
{
    size_t i;

    for (i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++) {
        if (errno_names[i].err == err) {
            printf("NPGUEST coalesce error=%s op=%s\n", errno_names[i].name,
                   op);
            return 1;
        }
    }
    printf("NPGUEST coalesce error=%d op=%s\n", err, op);
    return 1;
}

/* ETHTOOL_GCOALESCE into a zeroed @ec; 0 or an errno */
static int coal_get(int fd, const char *ifname, struct ethtool_coalesce *ec)
{
    memset(ec, 0, sizeof(*ec));
    return coal_ioctl(fd, ifname, ETHTOOL_GCOALESCE, ec);
}

/*
 * nptraffic coalesce IFNAME [NAME N]...: ethtool -c, or with values
 * ethtool -C.  SCOALESCE takes the whole struct, so like ethtool -C read
 * it first and change only the fields given: the others (ours and those
 * we don't expose) keep what the driver reported.  The values printed are
 * read back after the write, i.e. what the driver kept, not what was
 * asked.  0, 1 when an ioctl failed, 2 on bad usage (the caller prints
 * the usage text).
 */
static int coalesce_main(int argc, char **argv)
{
    struct ethtool_coalesce ec;
    const char *ifname = argc > 2 ? argv[2] : "", *op;
    uint32_t val[NCOAL];
    uint64_t v;
    int given[NCOAL] = { 0 }, any = 0, i, k, fd, err;
    char junk;

    if (argc < 3 || !*ifname || strlen(ifname) >= IFNAMSIZ ||
        (argc - 3) % 2) {
        fprintf(stderr, "nptraffic: coalesce needs IFNAME and NAME N pairs\n");
        return 2;
    }
    for (i = 3; i < argc; i += 2) {
        for (k = 0; k < NCOAL && strcmp(argv[i], coal_names[k]); k++) {
            ;
        }
        /* digits only: sscanf alone would take "-1" or " 1" */
        if (k == NCOAL || !argv[i + 1][0] ||
            argv[i + 1][strspn(argv[i + 1], "0123456789")] ||
            sscanf(argv[i + 1], "%" SCNu64 "%c", &v, &junk) != 1 ||
            v > UINT32_MAX) {
            fprintf(stderr, "nptraffic: bad coalesce value '%s %s'\n",
                    argv[i], argv[i + 1]);
            return 2;
        }
        val[k] = v;
        given[k] = any = 1;
    }

    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return coal_error(errno, "get");
    }
    op = "get";
    err = coal_get(fd, ifname, &ec);
    if (!err && any) {
        for (k = 0; k < NCOAL; k++) {
            if (given[k]) {
                *coal_field(&ec, k) = val[k];
            }
        }
        op = "set";
        err = coal_ioctl(fd, ifname, ETHTOOL_SCOALESCE, &ec);
        if (!err) {
            op = "get";
            err = coal_get(fd, ifname, &ec);
        }
    }
    close(fd);
    if (err) {
        return coal_error(err, op);
    }
    printf("NPGUEST coalesce");
    for (k = 0; k < NCOAL; k++) {
        printf(" %s=%" PRIu32, coal_names[k], *coal_field(&ec, k));
    }
    printf("\n");
    return 0;
}

/*
 * coalesce:IFNAME:NAME:N[:NAME:N]... in the client's list of tests:
 * nptraffic coalesce IFNAME NAME N... between two tests, so that one run
 * compares settings.  Returns what coalesce_main() does.
 */
static int coal_step(const char *spec)
{
    char *copy = strdup(spec), *argv[4 + 2 * NCOAL], *tok, *save = NULL;
    int argc = 0, r = 2;

    if (!copy) {
        return 1;
    }
    argv[argc++] = (char *)"nptraffic";
    for (tok = strtok_r(copy, ":", &save); tok;
         tok = strtok_r(NULL, ":", &save)) {
        if (argc == (int)(sizeof(argv) / sizeof(argv[0])) - 1) {
            fprintf(stderr, "nptraffic: bad step '%s'\n", spec);
            goto out;
        }
        argv[argc++] = tok;
    }
    argv[argc] = NULL;
    r = coalesce_main(argc, argv);
out:
    free(copy);
    return r;
}

/* ---- main ---- */

/*
 * nptraffic mapstress BDF ADDR SECS: place the 64-bit BAR 0 of PCI device
 * BDF (one no driver uses) at physical address ADDR, above everything
 * else, then for SECS seconds turn its memory decoding off and on from
 * CPU 0 while a child process on CPU 1 reads ADDR through /dev/mem.  Each
 * change is a new memory map that CPU 1's TLB must not outlive.  Prints
 * 'NPGUEST mapstress toggles=N reads=M'; 0, or 1 when something failed.
 */
static int mapstress_main(int argc, char **argv)
{
    char path[PATH_MAX];
    uint64_t addr = argc == 5 ? strtoull(argv[3], NULL, 0) : 0;
    int secs = argc == 5 ? atoi(argv[4]) : 0;
    uint32_t bar[2] = { (uint32_t)addr | 4, addr >> 32 };
    volatile uint64_t *reads;
    volatile uint32_t *mmio;
    uint64_t toggles = 0, end;
    uint16_t cmd, off;
    cpu_set_t cpus;
    pid_t child;
    int cfg, mem;

    if (argc != 5 || !addr || secs <= 0) {
        return 2;
    }
    snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/config", argv[2]);
    cfg = open(path, O_RDWR);
    mem = open("/dev/mem", O_RDWR | O_SYNC);
    if (cfg < 0 || mem < 0 || pread(cfg, &cmd, 2, 4) != 2) {
        perror("mapstress: open");
        return 1;
    }
    off = cmd & ~2;
    cmd |= 2;
    if (pwrite(cfg, &off, 2, 4) != 2 || pwrite(cfg, bar, 8, 0x10) != 8 ||
        pwrite(cfg, &cmd, 2, 4) != 2) {
        perror("mapstress: config");
        return 1;
    }
    mmio = mmap(NULL, 4096, PROT_READ, MAP_SHARED, mem, addr);
    reads = mmap(NULL, sizeof(*reads), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mmio == MAP_FAILED || reads == MAP_FAILED) {
        perror("mapstress: mmap");
        return 1;
    }
    child = fork();
    if (child == 0) {
        CPU_ZERO(&cpus);
        CPU_SET(1, &cpus);
        sched_setaffinity(0, sizeof(cpus), &cpus);
        for (;;) {
            (void)mmio[0];
            (*reads)++;
        }
    }
    CPU_ZERO(&cpus);
    CPU_SET(0, &cpus);
    sched_setaffinity(0, sizeof(cpus), &cpus);
    end = now_ns() + (uint64_t)secs * NS;
    while (child > 0 && now_ns() < end) {
        if (pwrite(cfg, &off, 2, 4) != 2 || pwrite(cfg, &cmd, 2, 4) != 2) {
            perror("mapstress: config");
            break;
        }
        toggles++;
    }
    if (child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    }
    printf("NPGUEST mapstress toggles=%" PRIu64 " reads=%" PRIu64 "\n",
           toggles, *reads);
    return child > 0 && now_ns() >= end ? 0 : 1;
}

static void usage(FILE *f)
{
    fprintf(f,
"Usage: nptraffic server [--port P] [--once]\n"
"       nptraffic client --server ADDR [--port P] [--irq] TEST [TEST...]\n"
"       nptraffic coalesce IFNAME [rx-usecs N] [rx-frames N] [tx-usecs N]\n"
"                          [tx-frames N]\n"
"       nptraffic mapstress BDF ADDR SECS\n"
"       nptraffic version\n"
"\n"
"Tests (SIZE: Ethernet frame bytes without FCS, 64..1514; PPS 0 = max):\n"
"  udp-tx:SIZE:SECS[:PPS]   client sends UDP to the server\n"
"  udp-rx:SIZE:SECS[:PPS]   server sends UDP to the client\n"
"  udp-burst:SIZE:COUNT     server sends COUNT datagrams back-to-back\n"
"  tcp-tx:SECS              TCP stream client -> server\n"
"  tcp-rx:SECS              TCP stream server -> client\n"
"  rr:SIZE:SECS             UDP request/response latency\n"
"  coalesce:IFNAME:NAME:N... not a test: nptraffic coalesce IFNAME NAME N...\n"
"                           between the tests before and after it\n"
"\n"
"Control port defaults to %d (TCP).  --once: serve one session, exit.\n"
"--irq: add virtio interrupt deltas from /proc/interrupts, UDP drop\n"
"       deltas from /proc/net/snmp (this host's stack) and virtio_net's\n"
"       kick and queue packet deltas (ethtool -S) to results.\n"
"coalesce: IFNAME's interrupt coalescing, as ethtool -c shows it; with\n"
"       values, first change those (the rest as read) and write them as\n"
"       ethtool -C does.  Prints what the driver reports afterwards, as\n"
"       'NPGUEST coalesce rx-usecs=A rx-frames=B tx-usecs=C tx-frames=D',\n"
"       or 'NPGUEST coalesce error=ERRNO op=get|set' (exit status 1).\n"
"mapstress: move PCI device BDF's 64-bit BAR 0 to ADDR, then for SECS\n"
"       seconds turn its memory decoding off and on from CPU 0 while CPU 1\n"
"       reads it (/dev/mem); prints 'NPGUEST mapstress toggles=N reads=M'.\n"
"Exit status: 0 all tests passed, 1 failure, 2 usage error.\n",
            DEFAULT_PORT);
}

int main(int argc, char **argv)
{
    const char *server = NULL;
    uint64_t port = DEFAULT_PORT;
    int i, once = 0, irq = 0, ntests = 0, client, ret;
    char junk;

    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    for (i = 0; i < (int)sizeof(ramp); i++) {
        ramp[i] = i;
    }
    for (i = 0; i < (int)sizeof(tpat); i++) {
        tpat[i] = (i % PAT_PERIOD) * 131 + (i % PAT_PERIOD) / 509;
    }
    if (argc == 2 && !strcmp(argv[1], "version")) {
        printf("nptraffic %s (protocol %d)\n", NPT_VERSION, NPT_PROTO);
        return 0;
    }
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && (!strcmp(argv[1], "coalesce") ||
                      !strcmp(argv[1], "mapstress"))) {
        ret = !strcmp(argv[1], "coalesce") ? coalesce_main(argc, argv)
                                           : mapstress_main(argc, argv);
        if (ret == 2) {
            usage(stderr);
        }
        return ret;
    }
    if (argc < 2 || (strcmp(argv[1], "server") && strcmp(argv[1], "client"))) {
        usage(stderr);
        return 2;
    }
    client = !strcmp(argv[1], "client");
    for (i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc) {
            if (sscanf(argv[++i], "%" SCNu64 "%c", &port, &junk) != 1 ||
                port < 1 || port > 65535) {
                fprintf(stderr, "nptraffic: bad port '%s'\n", argv[i]);
                return 2;
            }
        } else if (client && !strcmp(argv[i], "--server") && i + 1 < argc) {
            server = argv[++i];
        } else if (client && !strcmp(argv[i], "--irq")) {
            irq = 1;
        } else if (!client && !strcmp(argv[i], "--once")) {
            once = 1;
        } else if (client && argv[i][0] != '-') {
            argv[ntests++] = argv[i];   /* collect the tests in place */
        } else {
            fprintf(stderr, "nptraffic: bad argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!client) {
        return server_main(port, once);
    }
    if (!server || !ntests) {
        fprintf(stderr, "nptraffic: client needs --server and a TEST\n");
        usage(stderr);
        return 2;
    }
    return client_main(server, port, irq, argv, ntests);
}
