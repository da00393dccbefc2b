/*
 * Host-side helpers for qtests that run QEMU in a network namespace
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef TESTS_QTEST_NETNS_UTIL_H
#define TESTS_QTEST_NETNS_UTIL_H

#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include "qemu/cutils.h"

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

#define NETNS_LINK_TIMEOUT_US (5 * G_USEC_PER_SEC)

/* Run shell command @cmd; false, with a test message, if it fails. */
static inline bool netns_run(const char *cmd)
{
    g_autofree char *err = NULL;
    g_autoptr(GError) gerr = NULL;
    int status;

    if (!g_spawn_command_line_sync(cmd, NULL, &err, &status, &gerr)) {
        g_test_message("cannot run '%s': %s", cmd, gerr->message);
        return false;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        g_test_message("'%s' failed: %s", cmd, err);
        return false;
    }
    return true;
}

/* Write @value to the sysctl file @path, if it can be opened. */
static inline void netns_write_sysctl(const char *path, const char *value)
{
    FILE *f = fopen(path, "w");

    if (f) {
        fputs(value, f);
        fclose(f);
    }
}

/* The IFF_* flags of interface @ifname. */
static inline unsigned int netns_if_flags(const char *ifname)
{
    struct ifreq ifr = { 0 };
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    g_assert_cmpint(fd, >=, 0);
    pstrcpy(ifr.ifr_name, sizeof(ifr.ifr_name), ifname);
    g_assert_cmpint(ioctl(fd, SIOCGIFFLAGS, &ifr), ==, 0);
    close(fd);
    return (unsigned short)ifr.ifr_flags;
}

/* Wait until @ifname is up and has a carrier. */
static inline void netns_wait_running(const char *ifname)
{
    gint64 deadline = g_get_monotonic_time() + NETNS_LINK_TIMEOUT_US;

    while ((netns_if_flags(ifname) & (IFF_UP | IFF_RUNNING)) !=
           (IFF_UP | IFF_RUNNING)) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(10 * 1000);
    }
}

/* Go back to the namespace *@orig_netns, if any, and close it. */
static inline void netns_leave(int *orig_netns)
{
    if (*orig_netns >= 0) {
        g_assert_cmpint(setns(*orig_netns, CLONE_NEWNET), ==, 0);
        close(*orig_netns);
        *orig_netns = -1;
    }
}

/* Enter a new namespace, the old one in *@orig_netns; NULL or why not. */
static inline char *netns_new(int *orig_netns, const char *tests)
{
    *orig_netns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (*orig_netns < 0) {
        return g_strdup_printf("cannot open /proc/thread-self/ns/net: %s",
                               strerror(errno));
    }
    if (unshare(CLONE_NEWNET) < 0) {
        int err = errno;

        close(*orig_netns);
        *orig_netns = -1;
        return g_strdup_printf("unshare(CLONE_NEWNET) failed: %s; %s "
                               "tests need a private network namespace",
                               strerror(err), tests);
    }
    /* No IPv6 autoconfiguration chatter: the tests count every frame. */
    netns_write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
    netns_write_sysctl("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
    return NULL;
}

/* Create the veth pair @ifname/@peer and wait until both legs run. */
static inline bool netns_add_veth(const char *ifname, const char *peer)
{
    g_autofree char *add = g_strdup_printf("ip link add %s type veth "
                                           "peer name %s", ifname, peer);
    g_autofree char *up = g_strdup_printf("ip link set %s up", ifname);
    g_autofree char *peer_up = g_strdup_printf("ip link set %s up", peer);

    if (!netns_run(add) || !netns_run(up) || !netns_run(peer_up)) {
        return false;
    }
    netns_wait_running(ifname);
    netns_wait_running(peer);
    return true;
}

/* Close *@sock, delete @ifname, leave the namespace; after QEMU quits. */
static inline void netns_destroy(int *orig_netns, int *sock,
                                 const char *ifname)
{
    g_autofree char *del = g_strdup_printf("ip link del %s", ifname);

    if (*sock >= 0) {
        close(*sock);
        *sock = -1;
    }
    if (*orig_netns >= 0) {
        if (if_nametoindex(ifname)) {
            netns_run(del);
        }
        netns_leave(orig_netns);
    }
}

/* A packet socket on @ifname that captures only what comes in. */
static inline int netns_peer_socket(const char *ifname)
{
    struct sockaddr_ll sll = {
        .sll_family = AF_PACKET,
        .sll_protocol = htons(ETH_P_ALL),
        .sll_ifindex = if_nametoindex(ifname),
    };
    int one = 1, rcvbuf = 4 * 1024 * 1024;
    int fd;

    g_assert_cmpint(sll.sll_ifindex, >, 0);
    fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    g_assert_cmpint(fd, >=, 0);
    /* Capture only what comes from QEMU, not what the test sends. */
    g_assert_cmpint(setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING,
                               &one, sizeof(one)), ==, 0);
    g_assert_cmpint(setsockopt(fd, SOL_SOCKET, SO_RCVBUF,
                               &rcvbuf, sizeof(rcvbuf)), ==, 0);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&sll, sizeof(sll)), ==, 0);
    return fd;
}

/* The length of test frame @seq: from ETH_ZLEN to ETH_FRAME_LEN bytes. */
static inline size_t netns_frame_len(uint32_t seq)
{
    return ETH_ZLEN + (seq * 97) % (ETH_FRAME_LEN - ETH_ZLEN + 1);
}

/* Counter @name on @line, the "stats:" line of an "info network" entry. */
static inline int64_t netns_info_counter(const char *line, const char *name)
{
    g_autofree char *key = g_strdup_printf("%s=", name);
    const char *p = strstr(line, key);

    g_assert_nonnull(p);
    /* Whole names only: "rx-packets=" must not match "xx-rx-packets=". */
    g_assert_true(p[-1] == ' ' || p[-1] == ',');
    return g_ascii_strtoll(p + strlen(key), NULL, 10);
}

#endif /* TESTS_QTEST_NETNS_UTIL_H */
