/*
 * config.c — entry points: config_load / config_load_string, the snapshot's
 * reference count, lookups by name and the content-hash version.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_loader.h"

/* FNV-1a, 64 bits: the snapshot version is a hash of the file's bytes. */
static uint64_t fnv1a64(const char *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Releases what the loader holds besides the snapshot blocks. */
static void loader_release(struct cfg_loader *ld)
{
    if (ld->doc) {
        yaml_document_delete(ld->doc);
        free(ld->doc);
        ld->doc = NULL;
    }
    cfg_mem_free(ld->scratch);
    ld->scratch = NULL;
    free(ld->refs);
    ld->refs = NULL;
}

/*
 * Parses and validates `len` bytes of YAML. Errors are appended to `errs`
 * (which the caller zero-initialises; may be NULL). Returns a snapshot with
 * refcount 1, or NULL when any error was found (nothing leaks).
 */
struct config *config_load_string(const char *name, const char *yaml, size_t len,
                                  struct config_errors *errs)
{
    struct cfg_loader ld;
    struct config *cfg;
    bool failed;

    memset(&ld, 0, sizeof(ld));
    ld.file = name ? name : "<config>";
    cfg = calloc(1, sizeof(*cfg));
    if (!cfg) {
        char msg[CFG_MAX_MSG];
        snprintf(msg, sizeof(msg), "%s: out of memory", ld.file);
        cfg_errors_append(errs, msg);
        return NULL;
    }
    ld.cfg = cfg;
    cfg->refcount = 1;
    cfg->path = cfg_strdup(&ld, ld.file);
    snprintf(cfg->version, sizeof(cfg->version), "%016llx",
             (unsigned long long)fnv1a64(yaml ? yaml : "", yaml ? len : 0));
    if (cfg_yaml_parse(&ld, yaml ? yaml : "", yaml ? len : 0) == 0) {
        cfg_parse_root(&ld, yaml_document_get_root_node(ld.doc));
        cfg_resolve(&ld);
    }
    loader_release(&ld);
    failed = ld.n_errs || ld.oom || ld.too_many;
    cfg_errors_flush(&ld, errs);
    if (failed) {
        cfg_mem_free(ld.mem);
        free(cfg);
        return NULL;
    }
    cfg->_mem = ld.mem;
    return cfg;
}

/* Reads a whole file (at most CFG_MAX_FILE_SIZE bytes). 0 or -1 with errno. */
static int read_file(const char *path, char **out, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = -1;

    if (!f)
        return -1;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 16384;
            char *nb = ncap <= CFG_MAX_FILE_SIZE + 1 ? realloc(buf, ncap) : NULL;
            if (!nb) {
                errno = ncap > CFG_MAX_FILE_SIZE + 1 ? EFBIG : ENOMEM;
                goto fail;
            }
            buf = nb;
            cap = ncap;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        errno = EIO;
        goto fail;
    }
    *out = buf;
    *out_len = len;
    buf = NULL;
    rc = 0;
fail:
    free(buf);
    fclose(f);
    return rc;
}

struct config *config_load(const char *path, struct config_errors *errs)
{
    char *buf = NULL;
    size_t len = 0;
    struct config *cfg;

    if (read_file(path, &buf, &len) != 0) {
        char msg[CFG_MAX_MSG];
        snprintf(msg, sizeof(msg), "%s: %s", path, strerror(errno));
        cfg_errors_append(errs, msg);
        return NULL;
    }
    cfg = config_load_string(path, buf, len, errs);
    free(buf);
    return cfg;
}

struct config *config_ref(struct config *cfg)
{
    if (cfg)
        __atomic_add_fetch(&cfg->refcount, 1, __ATOMIC_RELAXED);
    return cfg;
}

/* The last reference frees every string, array and compiled regex. */
void config_unref(struct config *cfg)
{
    if (!cfg)
        return;
    if (__atomic_sub_fetch(&cfg->refcount, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    cfg_mem_free(cfg->_mem);
    free(cfg);
}

struct cfg_backend_service *config_find_backend_service(const struct config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->n_backend_services; i++) {
        if (cfg->backend_services[i].name && strcmp(cfg->backend_services[i].name, name) == 0)
            return &cfg->backend_services[i];
    }
    return NULL;
}

struct cfg_listener *config_find_listener(const struct config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (cfg->listeners[i].name && strcmp(cfg->listeners[i].name, name) == 0)
            return &cfg->listeners[i];
    }
    return NULL;
}
