/*
 * Statistics of network clients: query-stats provider "net", target
 * "netdev", and the counters line of "info network".
 *
 * Every net client whose NetClientInfo has get_stats(), and that reports
 * counters, is a query-stats result: "netdev" names it, "queue" is its
 * queue index, and its counters are cumulative scalars.
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "net/net-stats.h"
#include "qapi/qapi-types-stats.h"
#include "system/stats.h"

struct NetStatsBuilder {
    strList *names;         /* only these counters, if not NULL */
    bool want_schema;       /* build schema below, not stats */
    StatsList *stats;       /* query-stats result, or */
    StatsSchemaValueList *schema;   /* query-stats-schemas result, or */
    GString *text;          /* "info network" text */
};

static bool net_stats_wanted(strList *list, const char *name)
{
    if (!list) {
        return true;
    }
    for (; list; list = list->next) {
        if (g_str_equal(list->value, name)) {
            return true;
        }
    }
    return false;
}

void net_stats_add(NetStatsBuilder *b, const char *name, uint64_t value)
{
    if (!net_stats_wanted(b->names, name)) {
        return;
    }
    if (b->text) {
        g_string_append_printf(b->text, "%s%s=%" PRIu64,
                               b->text->len ? "," : "", name, value);
    } else if (b->want_schema) {
        StatsSchemaValueList *l;
        StatsSchemaValue *v;

        for (l = b->schema; l; l = l->next) {
            if (g_str_equal(l->value->name, name)) {
                return;
            }
        }
        v = g_new0(StatsSchemaValue, 1);
        v->name = g_strdup(name);
        v->type = STATS_TYPE_CUMULATIVE;
        QAPI_LIST_PREPEND(b->schema, v);
    } else {
        Stats *s = g_new0(Stats, 1);

        s->name = g_strdup(name);
        s->value = g_new0(StatsValue, 1);
        s->value->type = QTYPE_QNUM;
        s->value->u.scalar = value;
        QAPI_LIST_PREPEND(b->stats, s);
    }
}

bool net_stats_format(NetClientState *nc, GString *buf)
{
    NetStatsBuilder b = { .text = buf };

    if (!nc->info->get_stats) {
        return false;
    }
    nc->info->get_stats(nc, &b);
    return buf->len > 0;
}

typedef struct NetStatsQuery {
    StatsProvider provider;
    bool nics;              /* NICs only, or every other client */
    StatsResultList **results;
    strList *names;
    strList *targets;
    NetStatsBuilder schema;
} NetStatsQuery;

static void net_stats_one(NetClientState *nc, void *opaque)
{
    NetStatsQuery *q = opaque;
    NetStatsBuilder b = { .names = q->names };
    StatsResult *r;

    if (!nc->info->get_stats ||
        (nc->info->type == NET_CLIENT_DRIVER_NIC) != q->nics) {
        return;
    }
    if (!q->results) {
        nc->info->get_stats(nc, &q->schema);
        return;
    }
    if (!net_stats_wanted(q->targets, nc->name)) {
        return;
    }
    nc->info->get_stats(nc, &b);
    if (!b.stats) {
        /*
         * Nothing to report, e.g. a virtio-net NIC without an IOThread, or
         * nothing of what was asked: no result, as for KVM.
         */
        return;
    }
    r = g_new0(StatsResult, 1);
    r->provider = q->provider;
    r->netdev = g_strdup(nc->name);
    r->has_queue = true;
    r->queue = nc->queue_index;
    /* Counters in the order the client reported them. */
    while (b.stats) {
        StatsList *next = b.stats->next;

        b.stats->next = r->stats;
        r->stats = b.stats;
        b.stats = next;
    }
    QAPI_LIST_PREPEND(*q->results, r);
}

/* Context: BQL held */
void net_stats_query(StatsProvider provider, bool nics,
                     StatsResultList **results, strList *names,
                     strList *targets)
{
    NetStatsQuery q = {
        .provider = provider,
        .nics = nics,
        .results = results,
        .names = names,
        .targets = targets,
    };

    qemu_foreach_net_client(net_stats_one, &q);
}

/* Context: BQL held */
void net_stats_query_schema(StatsProvider provider, bool nics,
                            StatsSchemaList **result)
{
    NetStatsQuery q = {
        .provider = provider,
        .nics = nics,
        .schema = { .want_schema = true },
    };
    StatsSchemaValueList *ordered = NULL;

    qemu_foreach_net_client(net_stats_one, &q);
    while (q.schema.schema) {
        StatsSchemaValueList *next = q.schema.schema->next;

        q.schema.schema->next = ordered;
        ordered = q.schema.schema;
        q.schema.schema = next;
    }
    add_stats_schema(result, provider, STATS_TARGET_NETDEV, ordered);
}

static void net_stats_cb(StatsResultList **results, StatsTarget target,
                         strList *names, strList *targets, Error **errp)
{
    if (target == STATS_TARGET_NETDEV) {
        net_stats_query(STATS_PROVIDER_NET, false, results, names, targets);
    }
}

static void net_stats_schemas_cb(StatsSchemaList **result, Error **errp)
{
    net_stats_query_schema(STATS_PROVIDER_NET, false, result);
}

void net_stats_register(void)
{
    static bool registered;

    if (!registered) {
        add_stats_callbacks(STATS_PROVIDER_NET, net_stats_cb,
                            net_stats_schemas_cb);
        registered = true;
    }
}
