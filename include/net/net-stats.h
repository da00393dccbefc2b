/*
 * Statistics of network clients: query-stats provider "net", target
 * "netdev", and the counters line of "info network".
 *
 * Copyright (c) 2026 netplane developers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef NET_NET_STATS_H
#define NET_NET_STATS_H

#include "net/net.h"
#include "qapi/qapi-types-stats.h"

typedef struct NetStatsBuilder NetStatsBuilder;

/*
 * Called by a NetClientInfo's get_stats() for every counter it has, in a
 * fixed order.  Counters are cumulative since the client was created.
 */
void net_stats_add(NetStatsBuilder *b, const char *name, uint64_t value);

/* Append "name=value,..." of @nc's counters to @buf; false if it has none */
bool net_stats_format(NetClientState *nc, GString *buf);

/*
 * query-stats for target netdev as @provider: the counters of every NIC
 * (@nics) or of every other client that has some.
 *
 * Context: BQL held
 */
void net_stats_query(StatsProvider provider, bool nics,
                     StatsResultList **results, strList *names,
                     strList *targets);
void net_stats_query_schema(StatsProvider provider, bool nics,
                            StatsSchemaList **result);

/* Make the "net" provider known to query-stats (idempotent) */
void net_stats_register(void);

#endif
