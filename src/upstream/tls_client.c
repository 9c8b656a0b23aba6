/* tls_client.c — see tls_client.h. */
#include "upstream/tls_client.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/strlit.h"
#include "upstream/upstream.h" /* upstream_check_tls */

#define TLS_CACHE_MAX 16  /* contexts kept per cache; the oldest goes first */
#define TLS_HOST_MAX  256 /* longest SNI / verification name, bytes */

enum tls_alpn { TLS_ALPN_H2, TLS_ALPN_HTTP11 };

static const unsigned char alpn_h2[] = "\x02h2";
static const unsigned char alpn_http11[] = "\x08http/1.1";

struct tls_entry {
    char *key;    /* "version|verify|alpn|ca_file", malloc'd */
    SSL_CTX *ctx; /* NULL: building it failed (logged once), not retried */
};

struct tls_client_cache {
    struct tls_entry v[TLS_CACHE_MAX]; /* oldest first */
    unsigned n;
};

struct tls_client_cache *tls_client_cache_new(void)
{
    return calloc(1, sizeof(struct tls_client_cache));
}

static void entry_free(struct tls_entry *e)
{
    free(e->key);
    SSL_CTX_free(e->ctx); /* NULL-safe */
}

void tls_client_cache_free(struct tls_client_cache *tc)
{
    if (!tc)
        return;
    for (unsigned i = 0; i < tc->n; i++)
        entry_free(&tc->v[i]);
    free(tc);
}

static void log_ssl_error(const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    log_error("backend TLS: %s %s: %s", what, file, buf[0] ? buf : "failed");
    ERR_clear_error();
}

/* Build a client context; NULL (logged) when the CA file cannot be loaded. */
static SSL_CTX *ctx_new(const struct cfg_backend_service *svc, enum tls_alpn alpn)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        log_ssl_error("cannot create a context for", svc->name);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    /* No read_ahead: libevent cannot see bytes OpenSSL buffered ahead. */
    const unsigned char *protos = alpn == TLS_ALPN_H2 ? alpn_h2 : alpn_http11;
    unsigned plen = alpn == TLS_ALPN_H2 ? sizeof alpn_h2 - 1 : sizeof alpn_http11 - 1;
    if (SSL_CTX_set_alpn_protos(ctx, protos, plen) != 0) /* 0 is success here */
        goto fail;
    if (svc->tls.verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int ok = svc->tls.ca_file ? SSL_CTX_load_verify_locations(ctx, svc->tls.ca_file, NULL)
                                  : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            log_ssl_error("cannot load CA file",
                          svc->tls.ca_file ? svc->tls.ca_file : "(system default store)");
            goto fail;
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int upstream_check_tls(const struct config *cfg, FILE *errs)
{
    int bad = 0;
    for (size_t i = 0; i < cfg->n_backend_services; i++) {
        const struct cfg_backend_service *svc = &cfg->backend_services[i];
        if ((svc->protocol != CFG_BACKEND_HTTPS && svc->protocol != CFG_BACKEND_HTTP2) ||
            !svc->tls.verify || !svc->tls.ca_file)
            continue;
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (ctx && SSL_CTX_load_verify_locations(ctx, svc->tls.ca_file, NULL) != 1) {
            unsigned long e = ERR_get_error();
            char buf[256] = "";
            if (e)
                ERR_error_string_n(e, buf, sizeof buf);
            fprintf(errs, "backend_service %s: cannot load CA file %s: %s\n", svc->name,
                    svc->tls.ca_file, buf[0] ? buf : "failed");
            bad++;
        }
        ERR_clear_error();
        SSL_CTX_free(ctx); /* NULL-safe */
    }
    return bad;
}

/* The context for (version, svc's TLS settings, alpn); *out NULL = failed. */
static int ctx_get(struct tls_client_cache *tc, const struct cfg_backend_service *svc,
                   enum tls_alpn alpn, const char *version, SSL_CTX **out)
{
    const char *ca = svc->tls.ca_file ? svc->tls.ca_file : "";
    int n = snprintf(NULL, 0, "%s|%d|%d|%s", version, svc->tls.verify, (int)alpn, ca);
    char *key = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!key)
        return -1;
    snprintf(key, (size_t)n + 1, "%s|%d|%d|%s", version, svc->tls.verify, (int)alpn, ca);
    for (unsigned i = 0; i < tc->n; i++) {
        if (strcmp(tc->v[i].key, key) == 0) {
            free(key);
            *out = tc->v[i].ctx;
            return 0;
        }
    }
    if (tc->n == TLS_CACHE_MAX) {
        entry_free(&tc->v[0]);
        memmove(&tc->v[0], &tc->v[1], (TLS_CACHE_MAX - 1) * sizeof tc->v[0]);
        tc->n--;
    }
    tc->v[tc->n].key = key;
    tc->v[tc->n].ctx = ctx_new(svc, alpn);
    *out = tc->v[tc->n].ctx;
    tc->n++;
    return 0;
}

static bool is_ip_literal(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* The host part of "host:port" or "[v6]:port" into out; false if too long. */
static bool endpoint_host(const char *text, char *out, size_t cap)
{
    const char *start = text, *end;
    if (text[0] == '[') {
        start = text + 1;
        end = strchr(start, ']');
    } else {
        end = strrchr(text, ':');
    }
    if (!end)
        end = text + strlen(text);
    size_t n = (size_t)(end - start);
    if (n == 0 || n >= cap)
        return false;
    memcpy(out, start, n);
    out[n] = '\0';
    return true;
}

void tls_client_name(const struct cfg_backend_service *svc, const struct cfg_endpoint *ep,
                     char *out, size_t cap)
{
    out[0] = '\0';
    if (svc->tls.sni)
        snprintf(out, cap, "%s", svc->tls.sni);
    else if (ep->origin ? !endpoint_host(ep->origin, out, cap) /* discovered: its DNS name */
                        : ep->address.text && !endpoint_host(ep->address.text, out, cap))
        out[0] = '\0';
}

SSL *tls_client_ssl_new(struct tls_client_cache *tc, const struct cfg_backend_service *svc,
                        const struct cfg_endpoint *ep, const char *version)
{
    enum tls_alpn alpn = svc->protocol == CFG_BACKEND_HTTP2 ? TLS_ALPN_H2 : TLS_ALPN_HTTP11;
    SSL_CTX *ctx = NULL;
    if (ctx_get(tc, svc, alpn, version, &ctx) != 0 || !ctx)
        return NULL;
    char name[TLS_HOST_MAX];
    tls_client_name(svc, ep, name, sizeof name);
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    bool ip = name[0] && is_ip_literal(name);
    if (name[0] && !ip && SSL_set_tlsext_host_name(ssl, name) != 1)
        goto fail;
    if (svc->tls.verify && name[0]) {
        if (ip) {
            if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) != 1)
                goto fail;
        } else {
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            if (SSL_set1_host(ssl, name) != 1)
                goto fail;
        }
    }
    return ssl;
fail:
    ERR_clear_error();
    SSL_free(ssl);
    return NULL;
}

bool tls_client_alpn_is_h2(const SSL *ssl)
{
    const unsigned char *p = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl, &p, &len);
    return len == SY_STRLEN("h2") && memcmp(p, SY_STRLIT("h2")) == 0;
}

const char *tls_client_error_str(const SSL *ssl, unsigned long err, char *buf, size_t len)
{
    long vr = ssl && (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) ? SSL_get_verify_result(ssl)
                                                                  : X509_V_OK;
    if (vr != X509_V_OK) {
        snprintf(buf, len, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
        return buf;
    }
    if (err) {
        ERR_error_string_n(err, buf, len);
        return buf;
    }
    snprintf(buf, len, "handshake failed");
    return buf;
}
