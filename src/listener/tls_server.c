/* tls_server.c — see tls_server.h. */
#include "listener/tls_server.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Certificates after the first, for SNI; hung on the SSL_CTX's ex data. */
struct sni_entry {
    SSL_CTX *ctx;
    X509 *cert; /* borrowed from ctx */
};

struct sni_table {
    struct sni_entry *v;
    size_t n;
};

static int sni_index = -1;

static void ssl_err(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, errlen, "%s %s: %s", what, file, buf[0] ? buf : "failed");
    ERR_clear_error();
}

static const unsigned char alpn_protos[] = "\x02h2\x08http/1.1";

/* Prefer h2, then http/1.1; a client offering neither gets HTTP/1.1 anyway. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, alpn_protos, sizeof alpn_protos - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int on_servername(SSL *ssl, int *alert, void *arg)
{
    struct sni_table *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name || !t)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < t->n; i++) {
        if (X509_check_host(t->v[i].cert, name, 0, 0, NULL) == 1) {
            SSL_set_SSL_CTX(ssl, t->v[i].ctx);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK; /* the default certificate */
}

static SSL_CTX *ctx_with_cert(const struct cfg_listener *l, const struct cfg_certificate *c,
                              char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "listener %s: cannot create TLS context", l->name);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, l->tls.min_version ? l->tls.min_version : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* No SSL_MODE_RELEASE_BUFFERS (a malloc/free per record) and no
     * read_ahead (libevent cannot see bytes OpenSSL buffered ahead). */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"switchyard", 10);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, c->cert_file) != 1) {
        ssl_err(err, errlen, "cannot load certificate", c->cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, c->key_file, SSL_FILETYPE_PEM) != 1) {
        ssl_err(err, errlen, "cannot load private key", c->key_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "private key %s does not match certificate %s", c->key_file,
                 c->cert_file);
        ERR_clear_error();
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static void free_sni(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    struct sni_table *t = ptr;
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        SSL_CTX_free(t->v[i].ctx);
    free(t->v);
    free(t);
}

SSL_CTX *tls_server_ctx_new(const struct cfg_listener *l, char *err, size_t errlen)
{
    if (sni_index < 0)
        sni_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_sni);
    if (l->tls.n_certificates == 0) {
        snprintf(err, errlen, "listener %s: HTTPS needs tls.certificates", l->name);
        return NULL;
    }
    SSL_CTX *def = ctx_with_cert(l, &l->tls.certificates[0], err, errlen);
    if (!def)
        return NULL;
    size_t n = l->tls.n_certificates - 1;
    struct sni_table *t = calloc(1, sizeof *t);
    if (!t || !(t->v = calloc(n + 1, sizeof *t->v))) {
        free(t);
        SSL_CTX_free(def);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    SSL_CTX_set_ex_data(def, sni_index, t);
    for (size_t i = 0; i < n; i++) {
        SSL_CTX *c = ctx_with_cert(l, &l->tls.certificates[i + 1], err, errlen);
        if (!c) {
            SSL_CTX_free(def);
            return NULL;
        }
        t->v[t->n].ctx = c;
        t->v[t->n].cert = SSL_CTX_get0_certificate(c);
        t->n++;
    }
    SSL_CTX_set_tlsext_servername_callback(def, on_servername);
    SSL_CTX_set_tlsext_servername_arg(def, t);
    return def;
}

void tls_server_ctx_free(SSL_CTX *ctx)
{
    if (ctx)
        SSL_CTX_free(ctx);
}
