/*
 * discovery.h — DNS service discovery (a backend service's discovery: DNS,
 * Envoy's STRICT_DNS).
 *
 * Every endpoint of a DNS service whose address is a host name is resolved
 * on the main thread with c-ares, again every dns_refresh_rate
 * (or at the answer's TTL with respect_dns_ttl). Each record becomes an
 * endpoint "IP:port" with the configured port and weight. When an answer
 * changes a name's address set, the discovery calls its `changed` callback:
 * the owner (main.c) builds a new runtime from the same config and the new
 * sets and publishes it as a reload does, without reading the file again.
 *
 * A failed resolution (timeout, SERVFAIL, REFUSED, server down) and an
 * empty answer keep the last good set. NXDOMAIN keeps it too, unless the
 * service says dns_nxdomain: CLEAR and the last good answer's TTL has run
 * out. Every outcome is counted (switchyard_dns_resolutions_total).
 *
 * Main thread only.
 */
#ifndef SY_DISCOVERY_H
#define SY_DISCOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

#include "config/config-t.h"

struct event_base;
struct discovery;

typedef void (*discovery_changed_fn)(void *ctx);

/* A discovery following no names yet; NULL on allocation failure. */
struct discovery *discovery_new(struct event_base *base, discovery_changed_fn changed, void *ctx);

/*
 * Follow the DNS names of `cfg` (at startup and after each reload): a name
 * that stays (same service, address text, family) keeps its last answer
 * and its schedule; a new one is resolved at once; one gone is forgotten.
 * A change of the top-level dns block starts a new resolver, and every
 * name is asked again through it. 0, or SY_ENOMEM / SY_EINVAL (resolver
 * setup) with the previous state kept.
 */
int discovery_update(struct discovery *d, const struct config *cfg);

/*
 * The addresses endpoint `ep` of service `s` resolves to now (its port set),
 * sorted; their count (0: no answer yet, or an empty set).
 */
size_t discovery_addresses(const struct discovery *d, const struct cfg_backend_service *s,
                           const struct cfg_endpoint *ep, const struct sockaddr_storage **out);

/* Has every name had its first answer (of any kind)? True with no names. */
bool discovery_ready(const struct discovery *d);

/* switchyard_dns_resolutions_total and switchyard_dns_addresses, Prometheus text. */
void discovery_write_metrics(const struct discovery *d, FILE *out);

/* Stop every query and timer, and free; NULL is a no-op. */
void discovery_free(struct discovery *d);

#endif
