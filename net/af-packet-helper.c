/*
 * qemu-af-packet-helper: AF_PACKET sockets for an unprivileged QEMU
 *
 * -netdev af-packet,ifname=NAME,helper=PATH runs this program, as
 * -netdev bridge runs qemu-bridge-helper.  It is installed with
 * CAP_NET_RAW (setcap cap_net_raw+ep) or setuid root; QEMU needs neither.
 * If the ACL file allows the interface, it opens one AF_PACKET socket per
 * queue, binds it to the interface and passes all of them back over the
 * unix socket --fd with SCM_RIGHTS.  QEMU sets up the rest (ring,
 * promiscuous membership, fanout) as for sockets passed with fds=: none
 * of that needs a privilege, and the socket holds it.
 *
 * The ACL file (CONFIG_QEMU_CONFDIR/af-packet.conf) has one rule per
 * line, as bridge.conf has:
 *
 *   allow IFNAME | allow all | deny IFNAME | deny all | include FILE
 *
 * with '#' comments.  An interface is allowed when a rule allows it and
 * no rule denies it: deny always wins.  Nothing is allowed without the
 * file.
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"

#include <net/if.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>

#include "qemu/cutils.h"

#define DEFAULT_ACL_FILE CONFIG_QEMU_CONFDIR "/af-packet.conf"

/* As many sockets as one fanout group holds (net/af-packet.c) */
#define HELPER_QUEUES_MAX       256
#define HELPER_INCLUDE_DEPTH    8

typedef struct ACLResult {
    bool allowed;
    bool denied;
} ACLResult;

static void usage(void)
{
    fprintf(stderr, "Usage: qemu-af-packet-helper --ifname=NAME --fd=FD "
            "[--queues=N]\n");
}

/* Is @rule's argument @ifname, or "all"? */
static bool acl_matches(const char *arg, const char *ifname)
{
    return !strcmp(arg, "all") || !strcmp(arg, ifname);
}

/*
 * Apply the rules of @path to @ifname.  False, with a message, when the
 * file cannot be read or has a line that is not a rule: a broken ACL
 * allows nothing.
 */
static bool acl_file(const char *path, const char *ifname, int depth,
                     ACLResult *res)
{
    g_autofree char *line = NULL;
    size_t size = 0;
    unsigned int lineno = 0;
    bool ok = true;
    FILE *f;

    if (depth > HELPER_INCLUDE_DEPTH) {
        fprintf(stderr, "qemu-af-packet-helper: %s: includes nested more "
                "than %d deep\n", path, HELPER_INCLUDE_DEPTH);
        return false;
    }
    f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "qemu-af-packet-helper: cannot read the ACL file "
                "%s: %s\n", path, strerror(errno));
        return false;
    }
    while (ok && getline(&line, &size, f) >= 0) {
        char *cmd, *arg, *extra, *save = NULL;

        lineno++;
        *strchrnul(line, '#') = '\0';
        cmd = strtok_r(line, " \t\r\n", &save);
        if (!cmd) {
            continue;
        }
        arg = strtok_r(NULL, " \t\r\n", &save);
        extra = strtok_r(NULL, " \t\r\n", &save);
        if (!arg || extra) {
            ok = false;
        } else if (!strcmp(cmd, "allow")) {
            res->allowed |= acl_matches(arg, ifname);
        } else if (!strcmp(cmd, "deny")) {
            res->denied |= acl_matches(arg, ifname);
        } else if (!strcmp(cmd, "include")) {
            if (!acl_file(arg, ifname, depth + 1, res)) {
                fprintf(stderr, "qemu-af-packet-helper: included from "
                        "%s:%u\n", path, lineno);
                fclose(f);
                return false;
            }
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "qemu-af-packet-helper: %s:%u: not a rule "
                    "(allow, deny or include, and one argument)\n",
                    path, lineno);
        }
    }
    if (ok && ferror(f)) {
        fprintf(stderr, "qemu-af-packet-helper: cannot read the ACL file "
                "%s\n", path);
        ok = false;
    }
    fclose(f);
    return ok;
}

/* Send @n descriptors in one message over @sock */
static bool send_fds(int sock, const int *fds, int n)
{
    size_t len = CMSG_SPACE(sizeof(int) * n);
    g_autofree char *control = g_malloc0(len);
    char byte = 0;
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    struct msghdr msg = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control,
        .msg_controllen = len,
    };
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);

    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * n);
    memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * n);
    return RETRY_ON_EINTR(sendmsg(sock, &msg, 0)) == 1;
}

int main(int argc, char **argv)
{
    const char *ifname = NULL;
    int64_t sock = -1, queues = 1;
    ACLResult acl = { 0 };
    int fds[HELPER_QUEUES_MAX];
    unsigned int ifindex;
    int i;

    for (i = 1; i < argc; i++) {
        if (g_str_has_prefix(argv[i], "--ifname=")) {
            ifname = argv[i] + strlen("--ifname=");
        } else if (g_str_has_prefix(argv[i], "--fd=")) {
            if (qemu_strtoi64(argv[i] + strlen("--fd="), NULL, 10,
                              &sock) < 0 || sock < 0 || sock > INT_MAX) {
                usage();
                return EXIT_FAILURE;
            }
        } else if (g_str_has_prefix(argv[i], "--queues=")) {
            if (qemu_strtoi64(argv[i] + strlen("--queues="), NULL, 10,
                              &queues) < 0 ||
                queues < 1 || queues > HELPER_QUEUES_MAX) {
                fprintf(stderr, "qemu-af-packet-helper: --queues takes 1 "
                        "to %d\n", HELPER_QUEUES_MAX);
                return EXIT_FAILURE;
            }
        } else {
            usage();
            return EXIT_FAILURE;
        }
    }
    if (!ifname || sock < 0) {
        usage();
        return EXIT_FAILURE;
    }
    if (!*ifname || strlen(ifname) >= IFNAMSIZ || strchr(ifname, '/')) {
        fprintf(stderr, "qemu-af-packet-helper: '%s' is not an interface "
                "name\n", ifname);
        return EXIT_FAILURE;
    }

    if (!acl_file(DEFAULT_ACL_FILE, ifname, 0, &acl)) {
        return EXIT_FAILURE;
    }
    if (!acl.allowed || acl.denied) {
        fprintf(stderr, "qemu-af-packet-helper: %s is not allowed by %s\n",
                ifname, DEFAULT_ACL_FILE);
        return EXIT_FAILURE;
    }

    ifindex = if_nametoindex(ifname);
    if (!ifindex) {
        fprintf(stderr, "qemu-af-packet-helper: no interface %s: %s\n",
                ifname, strerror(errno));
        return EXIT_FAILURE;
    }
    for (i = 0; i < queues; i++) {
        /* Protocol 0: nothing is received before QEMU binds it again */
        struct sockaddr_ll sll = {
            .sll_family = AF_PACKET,
            .sll_ifindex = ifindex,
        };

        fds[i] = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
        if (fds[i] < 0) {
            fprintf(stderr, "qemu-af-packet-helper: cannot open an "
                    "AF_PACKET socket: %s%s\n", strerror(errno),
                    errno == EPERM ? " (the helper needs CAP_NET_RAW: "
                    "setcap cap_net_raw+ep, or setuid root)" : "");
            return EXIT_FAILURE;
        }
        if (bind(fds[i], (struct sockaddr *)&sll, sizeof(sll)) < 0) {
            fprintf(stderr, "qemu-af-packet-helper: cannot bind to %s: %s\n",
                    ifname, strerror(errno));
            return EXIT_FAILURE;
        }
    }
    if (!send_fds(sock, fds, queues)) {
        fprintf(stderr, "qemu-af-packet-helper: cannot pass the sockets: "
                "%s\n", strerror(errno));
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}
