/*
 * config_limits.c — `limits`, at the top level (process-wide, and the
 * defaults of every listener's limits) and per listener (overrides).
 * docs/configuration.md "Limits" lists each key with its default.
 */
#include "config/config_loader.h"

/* Upper bounds that still make sense; past them a value is a typo. */
#define LIMIT_MAX_CONNECTIONS 10000000u
#define LIMIT_MAX_HEADERS     10000u
#define LIMIT_MAX_STALLED     100000u

void cfg_limits_defaults(struct cfg_limits *l)
{
    l->max_connections = 0;
    l->max_request_headers = 100;
    l->max_stalled_streams = 8;
    l->max_buffered_bytes = 1024 * 1024;
}

static void parse_overload(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n)
{
    static const char *const keys[] = {"memory", "connections", NULL};
    struct ypath sub = {at, "overload", 0};
    yaml_node_t *o = ychild_map(ld, &sub, n, keys);

    if (!o)
        return;
    yget_size(ld, &sub, o, "memory", 0, UINT64_MAX, &ld->cfg->overload.memory);
    yget_u32(ld, &sub, o, "connections", 0, LIMIT_MAX_CONNECTIONS, &ld->cfg->overload.connections);
}

/*
 * Reads the `limits` mapping of `parent` into *l (which holds the defaults
 * to keep for absent keys). `top`: the root's limits, where `overload` is
 * allowed too.
 */
void cfg_parse_limits(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *parent,
                      bool top, struct cfg_limits *l)
{
    static const char *const top_keys[] = {"max_connections",
                                           "max_request_headers",
                                           "max_stalled_streams",
                                           "max_buffered_bytes",
                                           "overload",
                                           NULL};
    static const char *const keys[] = {"max_connections", "max_request_headers",
                                       "max_stalled_streams", "max_buffered_bytes", NULL};
    struct ypath sub = {at, "limits", 0};
    yaml_node_t *n = ychild_map(ld, &sub, parent, top ? top_keys : keys);

    if (!n)
        return;
    yget_u32(ld, &sub, n, "max_connections", 0, LIMIT_MAX_CONNECTIONS, &l->max_connections);
    yget_u32(ld, &sub, n, "max_request_headers", 1, LIMIT_MAX_HEADERS, &l->max_request_headers);
    yget_u32(ld, &sub, n, "max_stalled_streams", 1, LIMIT_MAX_STALLED, &l->max_stalled_streams);
    yget_size(ld, &sub, n, "max_buffered_bytes", 64 * 1024, UINT64_MAX, &l->max_buffered_bytes);
    if (top)
        parse_overload(ld, &sub, n);
}
