/* tls_server.c — see tls_server.h. */
#include "listener/tls_server.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/worker.h"

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

/* ---- session ticket keys ---------------------------------------------------------- */

/*
 * Previous keys kept for decryption: a key encrypts for one rotation period,
 * then decrypts for this many more, then is wiped. Sessions time out after
 * the same number of periods (ctx_apply_params), so every ticket can be
 * decrypted for its whole lifetime and none outlives its key.
 */
#define TICKET_KEYS_KEPT 2
#define TICKET_KEY_SLOTS (TICKET_KEYS_KEPT + 1)

struct ticket_key {
    bool set;
    uint64_t epoch; /* the rotation period in which it encrypts */
    unsigned char name[16];
    unsigned char aes_key[32];  /* AES-256-CBC */
    unsigned char hmac_key[32]; /* HMAC-SHA256 */
};

/*
 * One listener's ticket keys, shared by every worker's handshakes: the
 * mutex guards the slots. Rotation is lazy: period number
 * (now - start_ms) / rotation_ms is computed from the monotonic clock on
 * each ticket operation, and the first one in a new period makes its key;
 * so a key is never used past its time even when no handshake came to
 * rotate it (its bytes are wiped at the next ticket operation or at exit).
 * Refcounted: the default SSL_CTX and each SNI one hold a reference.
 */
struct ticket_keys {
    pthread_mutex_t lock;
    int refs; /* atomic */
    uint64_t start_ms;
    uint64_t rotation_ms;                     /* > 0 */
    struct ticket_key slot[TICKET_KEY_SLOTS]; /* key of period e in slot[e % SLOTS] */
};

static int keys_index = -1;

static struct ticket_keys *ticket_keys_ref(struct ticket_keys *tk)
{
    __atomic_add_fetch(&tk->refs, 1, __ATOMIC_RELAXED);
    return tk;
}

static void ticket_keys_unref(struct ticket_keys *tk)
{
    if (!tk || __atomic_sub_fetch(&tk->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    OPENSSL_cleanse(tk->slot, sizeof tk->slot);
    pthread_mutex_destroy(&tk->lock);
    free(tk);
}

static void free_keys(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    ticket_keys_unref(ptr);
}

/*
 * With tk->lock held: wipe keys past their decryption period and make the
 * key of the current period. Returns the current period, or UINT64_MAX
 * when its key could not be made (no random bytes): no ticket is issued.
 */
static uint64_t ticket_keys_advance(struct ticket_keys *tk)
{
    uint64_t now = sy_now_ms();
    uint64_t e = (now - tk->start_ms) / tk->rotation_ms;
    struct ticket_key *cur = &tk->slot[e % TICKET_KEY_SLOTS];

    for (size_t i = 0; i < TICKET_KEY_SLOTS; i++)
        if (tk->slot[i].set && e - tk->slot[i].epoch > TICKET_KEYS_KEPT)
            OPENSSL_cleanse(&tk->slot[i], sizeof tk->slot[i]);
    if (cur->set && cur->epoch == e)
        return e;
    OPENSSL_cleanse(cur, sizeof *cur);
    if (RAND_bytes(cur->name, sizeof cur->name) != 1 ||
        RAND_priv_bytes(cur->aes_key, sizeof cur->aes_key) != 1 ||
        RAND_priv_bytes(cur->hmac_key, sizeof cur->hmac_key) != 1) {
        OPENSSL_cleanse(cur, sizeof *cur);
        ERR_clear_error();
        return UINT64_MAX;
    }
    cur->set = true;
    cur->epoch = e;
    return e;
}

/*
 * Copies into *out the key to encrypt with (name == NULL) or the live key
 * named `name`. Returns 1 (the current key), 2 (an older one: the ticket
 * should be renewed) or 0 (none).
 */
static int ticket_keys_get(struct ticket_keys *tk, const unsigned char *name,
                           struct ticket_key *out)
{
    int rc = 0;

    pthread_mutex_lock(&tk->lock);
    uint64_t e = ticket_keys_advance(tk);
    for (size_t i = 0; i < TICKET_KEY_SLOTS; i++) {
        const struct ticket_key *k = &tk->slot[i];
        if (!k->set || (name ? memcmp(k->name, name, sizeof k->name) != 0 : k->epoch != e))
            continue;
        *out = *k;
        rc = k->epoch == e ? 1 : 2;
        break;
    }
    pthread_mutex_unlock(&tk->lock);
    return rc;
}

static struct ticket_keys *ticket_keys_new(uint64_t rotation_ms)
{
    struct ticket_keys *tk = calloc(1, sizeof *tk);

    if (!tk)
        return NULL;
    if (pthread_mutex_init(&tk->lock, NULL) != 0) {
        free(tk);
        return NULL;
    }
    tk->refs = 1;
    tk->start_ms = sy_now_ms();
    tk->rotation_ms = rotation_ms;
    if (ticket_keys_advance(tk) == UINT64_MAX) { /* random keys at startup */
        ticket_keys_unref(tk);
        return NULL;
    }
    return tk;
}

/*
 * SSL_CTX_set_tlsext_ticket_key_evp_cb: set up `cctx` and `hctx` with a key
 * from the ring. enc: the current key, a fresh IV; returns 1, or 0 for no
 * ticket. Decrypt: the key named `key_name`; returns 1, 2 (valid but
 * older: OpenSSL issues a new ticket) or 0 (unknown or expired: a full
 * handshake). -1 on an OpenSSL failure. Runs on worker threads.
 */
static int on_ticket_key(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    /* OpenSSL calls the session context's callback; after an SNI switch
     * SSL_get_SSL_CTX() is the SNI context, which shares the same keys. */
    struct ticket_keys *tk = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), keys_index);
    struct ticket_key k;
    int rc;

    if (!tk)
        return 0;
    rc = ticket_keys_get(tk, enc ? NULL : key_name, &k);
    if (rc == 0)
        return 0;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac_key, sizeof k.hmac_key),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (enc) {
        memcpy(key_name, k.name, sizeof k.name);
        if (RAND_bytes(iv, 16) != 1 ||
            EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes_key, iv) != 1)
            rc = -1;
    } else if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes_key, iv) != 1) {
        rc = -1;
    }
    if (rc > 0 && EVP_MAC_CTX_set_params(hctx, params) != 1)
        rc = -1;
    OPENSSL_cleanse(&k, sizeof k);
    return rc;
}

/* ---- contexts ------------------------------------------------------------------------ */

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

/*
 * cipher_suites and ecdh_curves (the strings the config loader checked), and
 * session tickets: the keys `tk` (NULL: tickets off, SSL_OP_NO_TICKET).
 * 0, or -1 with a reason in `err`.
 */
static int ctx_apply_params(SSL_CTX *ctx, const struct cfg_listener *l, struct ticket_keys *tk,
                            char *err, size_t errlen)
{
    if (SSL_CTX_set_cipher_list(ctx, l->tls.tls12_cipher_list) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, l->tls.tls13_ciphersuites) != 1 ||
        SSL_CTX_set1_groups_list(ctx, l->tls.groups_list) != 1) {
        ssl_err(err, errlen, "cannot apply tls.cipher_suites or tls.ecdh_curves of listener",
                l->name);
        return -1;
    }
    if (!tk) {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        return 0;
    }
    if (SSL_CTX_set_ex_data(ctx, keys_index, ticket_keys_ref(tk)) != 1) {
        ticket_keys_unref(tk);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* A session lives as long as its ticket's key can still decrypt it. */
    SSL_CTX_set_timeout(ctx, (long)(TICKET_KEYS_KEPT * (tk->rotation_ms / 1000)));
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
    return 0;
}

static SSL_CTX *ctx_new(const struct cfg_listener *l, const struct cfg_certificate *c,
                        struct ticket_keys *tk, char *err, size_t errlen)
{
    SSL_CTX *ctx = ctx_with_cert(l, c, err, errlen);

    if (ctx && ctx_apply_params(ctx, l, tk, err, errlen) != 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL_CTX *tls_server_ctx_new(const struct cfg_listener *l, char *err, size_t errlen)
{
    return tls_server_ctx_new_from(l, NULL, err, errlen);
}

/* The ticket keys of `old` to keep for `l`: the same rotation period. NULL: new keys. */
static struct ticket_keys *keys_to_keep(const struct cfg_listener *l, SSL_CTX *old)
{
    struct ticket_keys *tk = old && keys_index >= 0 ? SSL_CTX_get_ex_data(old, keys_index) : NULL;
    if (!tk || !l->tls.session_ticket_rotation_ms ||
        tk->rotation_ms != l->tls.session_ticket_rotation_ms)
        return NULL;
    return ticket_keys_ref(tk);
}

SSL_CTX *tls_server_ctx_new_from(const struct cfg_listener *l, SSL_CTX *old, char *err,
                                 size_t errlen)
{
    struct ticket_keys *tk = NULL;
    SSL_CTX *def = NULL;
    struct sni_table *t = NULL;
    size_t n;

    if (sni_index < 0)
        sni_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_sni);
    if (keys_index < 0)
        keys_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_keys);
    if (l->tls.n_certificates == 0) {
        snprintf(err, errlen, "listener %s: HTTPS needs tls.certificates", l->name);
        return NULL;
    }
    if (l->tls.session_ticket_rotation_ms && !(tk = keys_to_keep(l, old)) &&
        !(tk = ticket_keys_new(l->tls.session_ticket_rotation_ms))) {
        snprintf(err, errlen, "listener %s: cannot make session ticket keys", l->name);
        return NULL;
    }
    def = ctx_new(l, &l->tls.certificates[0], tk, err, errlen);
    if (!def)
        goto fail;
    n = l->tls.n_certificates - 1;
    t = calloc(1, sizeof *t);
    if (!t || !(t->v = calloc(n + 1, sizeof *t->v))) {
        free(t);
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    SSL_CTX_set_ex_data(def, sni_index, t);
    for (size_t i = 0; i < n; i++) {
        SSL_CTX *c = ctx_new(l, &l->tls.certificates[i + 1], tk, err, errlen);
        if (!c)
            goto fail;
        t->v[t->n].ctx = c;
        t->v[t->n].cert = SSL_CTX_get0_certificate(c);
        t->n++;
    }
    SSL_CTX_set_tlsext_servername_callback(def, on_servername);
    SSL_CTX_set_tlsext_servername_arg(def, t);
    ticket_keys_unref(tk); /* the contexts hold their own references */
    return def;
fail:
    SSL_CTX_free(def);
    ticket_keys_unref(tk);
    return NULL;
}

void tls_server_ctx_free(SSL_CTX *ctx)
{
    if (ctx)
        SSL_CTX_free(ctx);
}

/* Feed `len` bytes of the string `v` (NULL: none) and a separator into `md`. */
static void digest_str(EVP_MD_CTX *md, const char *v)
{
    if (v)
        EVP_DigestUpdate(md, v, strlen(v));
    EVP_DigestUpdate(md, "", 1);
}

/* Feed the bytes of file `path` into `md` (an unreadable file: its errno). */
static void digest_file(EVP_MD_CTX *md, const char *path)
{
    unsigned char buf[8192];
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        EVP_DigestUpdate(md, &e, sizeof e);
        return;
    }
    for (size_t n; (n = fread(buf, 1, sizeof buf, f)) > 0;)
        EVP_DigestUpdate(md, buf, n);
    fclose(f);
    OPENSSL_cleanse(buf, sizeof buf);
}

void tls_server_digest(const struct cfg_listener *l, unsigned char out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned len = 32;
    memset(out, 0, 32);
    if (!md)
        return; /* all zeroes: never equal to a context's digest, so it is rebuilt */
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1) {
        char num[64];
        snprintf(num, sizeof num, "%d %llu", l->tls.min_version,
                 (unsigned long long)l->tls.session_ticket_rotation_ms);
        digest_str(md, num);
        digest_str(md, l->tls.tls12_cipher_list);
        digest_str(md, l->tls.tls13_ciphersuites);
        digest_str(md, l->tls.groups_list);
        for (size_t i = 0; i < l->tls.n_certificates; i++) {
            digest_str(md, l->tls.certificates[i].cert_file);
            digest_file(md, l->tls.certificates[i].cert_file);
            digest_str(md, l->tls.certificates[i].key_file);
            digest_file(md, l->tls.certificates[i].key_file);
        }
        if (EVP_DigestFinal_ex(md, out, &len) != 1)
            memset(out, 0, 32);
    }
    EVP_MD_CTX_free(md);
}
