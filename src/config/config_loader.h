/*
 * config_loader.h — private to src/config: the loader state shared by the
 * YAML access layer (config_yaml.c), the schema parsers (config_listener.c,
 * config_urlmap.c, config_backend.c), the cross-reference pass
 * (config_resolve.c) and the entry points (config.c).
 *
 * Memory: everything that ends up in the snapshot is allocated with
 * cfg_alloc()/cfg_strdup() on the snapshot's block list (config->_mem) and is
 * freed in one sweep by the last config_unref(); compiled regexes are
 * registered on the same list. Temporaries (expanded scalars, path strings,
 * pending references) live on the scratch list, freed when loading ends.
 * Allocation failure sets `oom`; the load then fails with "out of memory".
 */
#ifndef SY_CONFIG_LOADER_H
#define SY_CONFIG_LOADER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "config/config.h"

/* Most errors collected in one run; then one "too many errors" line. */
#define CFG_MAX_ERRORS 100
/* Largest config file accepted by config_load. */
#define CFG_MAX_FILE_SIZE (16u * 1024 * 1024)
/* One formatted error message is cut at this length. */
#define CFG_MAX_MSG 1024

/* TLS protocol versions as OpenSSL numbers them (TLS1_2_VERSION ...). */
#define CFG_TLS1_2 0x0303
#define CFG_TLS1_3 0x0304

/* One allocation; `regex` set for a registered pcre2_code (no payload). */
struct cfg_mem_block {
    struct cfg_mem_block *next;
    void *regex;
    max_align_t data[];
};

/*
 * Where a value sits in the document, for messages: a chain of frames on the
 * C stack, innermost last ("listeners[0].http2.keepalive"). A frame has
 * either a key or (key == NULL) a sequence index.
 */
struct ypath {
    const struct ypath *up;
    const char *key;
    size_t idx;
};

enum cfg_ref_kind {
    CFG_REF_URL_MAP,
    CFG_REF_BACKEND_SERVICE,
    CFG_REF_HEALTH_CHECK,
    CFG_REF_PATH_MATCHER,
};

/* A by-name reference, resolved once every section is parsed. */
struct cfg_ref {
    enum cfg_ref_kind kind;
    const char *name;
    struct cfg_mark mark;
    const char *where;               /* formatted ypath (scratch) */
    const struct cfg_url_map *scope; /* CFG_REF_PATH_MATCHER: its url_map */
    union {
        struct cfg_url_map **url_map;
        struct cfg_backend_service **backend_service;
        struct cfg_health_check **health_check;
        struct cfg_path_matcher **path_matcher;
    } slot;
};

/* One collected error before sorting by position. */
struct cfg_err {
    int line, col; /* 0 for file-level errors */
    size_t seq;
    char *msg;
};

struct cfg_loader {
    const char *file; /* name used in messages */
    yaml_document_t *doc;
    struct config *cfg;
    struct cfg_mem_block *mem;     /* snapshot blocks (moved to cfg->_mem) */
    struct cfg_mem_block *scratch; /* freed at the end of the load */
    struct cfg_err *errs;
    size_t n_errs, cap_errs;
    bool too_many;
    bool oom;
    struct cfg_ref *refs;
    size_t n_refs, cap_refs;
};

/* ---- config_mem.c ------------------------------------------------------ */

void *cfg_alloc(struct cfg_loader *ld, size_t size);
void *cfg_calloc_array(struct cfg_loader *ld, size_t n, size_t size);
char *cfg_strdup(struct cfg_loader *ld, const char *s);
void *cfg_scratch_alloc(struct cfg_loader *ld, size_t size);
char *cfg_scratch_strdup(struct cfg_loader *ld, const char *s);
void cfg_register_regex(struct cfg_loader *ld, void *code);
void cfg_mem_free(struct cfg_mem_block *head);

/* Formats "path" for messages into scratch memory; "" at the root. */
char *ypath_str(struct cfg_loader *ld, const struct ypath *at);

/* Records "FILE:LINE:COL: path: message" (path omitted when at == NULL). */
void cfg_error(struct cfg_loader *ld, struct cfg_mark mark, const struct ypath *at, const char *fmt,
               ...) __attribute__((format(printf, 4, 5)));
/* Same with an already formatted path string. */
void cfg_error_where(struct cfg_loader *ld, struct cfg_mark mark, const char *where,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Records "FILE: message" (no position). */
void cfg_error_file(struct cfg_loader *ld, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends a copy of `msg` to `out` (dropped on OOM). */
void cfg_errors_append(struct config_errors *out, const char *msg);
/* Sorts the collected errors by position into `out`; frees the list. */
void cfg_errors_flush(struct cfg_loader *ld, struct config_errors *out);

/* Queues a by-name reference for config_resolve(). */
void cfg_add_ref(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *node,
                 enum cfg_ref_kind kind, const char *name, void *slot,
                 const struct cfg_url_map *scope);

/* ---- config_yaml.c ----------------------------------------------------- */

/* Parses `len` bytes into ld->doc; reports syntax errors. 0 or -1. */
int cfg_yaml_parse(struct cfg_loader *ld, const char *yaml, size_t len);

struct cfg_mark ymark(const yaml_node_t *n);
bool ynull(const yaml_node_t *n);
const char *ytype_name(const yaml_node_t *n);
yaml_node_t *yseq_item(struct cfg_loader *ld, const yaml_node_t *seq, size_t i);
size_t yseq_len(const yaml_node_t *seq);
/* The value / key node for `key` in a mapping; NULL when absent. */
yaml_node_t *yfind(struct cfg_loader *ld, const yaml_node_t *map, const char *key);
yaml_node_t *yfind_key(struct cfg_loader *ld, const yaml_node_t *map, const char *key);

/*
 * Checks that `node` is a mapping whose keys are all in `keys` (NULL-ended)
 * and appear once. Returns false (after reporting) when not a mapping.
 */
bool ymap_check(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *node,
                const char *const *keys);
/* The mapping at sub->key in `parent`, checked; NULL when absent or bad. */
yaml_node_t *ychild_map(struct cfg_loader *ld, const struct ypath *sub, const yaml_node_t *parent,
                        const char *const *keys);
/* The sequence at sub->key in `parent`; NULL when absent, null or bad. */
yaml_node_t *ychild_seq(struct cfg_loader *ld, const struct ypath *sub, const yaml_node_t *parent);
/* Reports "missing required key" at the mapping. */
void ymissing(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
              const char *key);

/*
 * Scalar conversions of a node: 0 on success, -1 after reporting. `what`
 * names the expected type in "expected WHAT, got a mapping". Strings are
 * ${ENV}-expanded; ynode_scalar's result is scratch memory.
 */
int ynode_scalar(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                 const char *what, const char **out);
int ynode_str(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n, char **out);
int ynode_name(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n, char **out);
int ynode_header_name(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                      bool allow_pseudo, char **out);
int ynode_cidr(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
               struct cfg_cidr *out);
int ynode_enum(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
               const char *const *names, int *out);
int ynode_regex(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n, char **src,
                void **code);

/*
 * Getters for `key` of mapping `map` (the path of the value is at + key):
 * 1 when set, 0 when absent, -1 after reporting an error. Outputs are left
 * untouched unless 1 is returned.
 */
int yget_str(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map, const char *key,
             char **out);
int yget_name(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
              const char *key, char **out);
int yget_header_name(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                     const char *key, bool allow_pseudo, char **out);
int yget_header_value(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                      const char *key, char **out);
int yget_bool(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
              const char *key, bool *out);
int yget_i64(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map, const char *key,
             int64_t min, int64_t max, int64_t *out);
int yget_u32(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map, const char *key,
             uint32_t min, uint32_t max, uint32_t *out);
int yget_double(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                const char *key, double min, double max, double *out);
int yget_duration(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                  const char *key, uint64_t *out_ms);
int yget_size(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
              const char *key, uint64_t min, uint64_t max, uint64_t *out);
int yget_enum(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
              const char *key, const char *const *names, int *out);
int yget_addr(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
              const char *key, struct cfg_addr *out);
int yget_regex(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
               const char *key, char **src, void **code);
/* A sequence of strings (each through ynode_str, or lower-cased header names). */
int yget_str_list(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                  const char *key, char ***out, size_t *n);
int yget_header_list(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                     const char *key, char ***out, size_t *n);

/* ---- schema parsers ---------------------------------------------------- */

/* config_listener.c: the root mapping, listeners, admin, access_log. */
void cfg_parse_root(struct cfg_loader *ld, const yaml_node_t *root);
/* config_limits.c */
void cfg_limits_defaults(struct cfg_limits *l);
void cfg_parse_limits(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *parent,
                      bool top, struct cfg_limits *l);
/* config_urlmap.c */
void cfg_parse_url_maps(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *seq);
/* config_action.c: header actions and route actions, shared by url maps. */
void cfg_parse_header_action(struct cfg_loader *ld, const struct ypath *at,
                             const yaml_node_t *parent, struct cfg_header_action *ha);
/*
 * Reads a rule's target: `service_key` (a backend name), `action_key` (a
 * route_action mapping) and `redirect_key` (a url_redirect mapping) of
 * `map`. Reports unless exactly one target is given, or none and !required.
 * Returns whether any target was given.
 */
bool cfg_parse_target(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                      const char *service_key, const char *action_key, const char *redirect_key,
                      bool required, struct cfg_route_action *act);
/* config_match.c */
void cfg_parse_match_rules(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *rule,
                           struct cfg_route_rule *rr);
/* config_backend.c */
/* The top-level dns block (defaults when absent; root may be NULL). */
void cfg_parse_dns(struct cfg_loader *ld, const yaml_node_t *root);
void cfg_parse_backend_services(struct cfg_loader *ld, const struct ypath *at,
                                const yaml_node_t *seq);
void cfg_parse_health_checks(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *seq);

/*
 * Reports a duplicate among names[0..n) (items of the sequence `seq` at
 * `at`), at the later item's `name` value, naming the first one.
 */
void cfg_check_unique(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *seq,
                      char *const *names, size_t n, const char *what);

/* ---- config_resolve.c --------------------------------------------------- */

/*
 * A by-name reference: reads the name (ynode_name) and queues it so that
 * cfg_resolve() stores the target in *slot or reports it as unknown.
 */
int ynode_ref(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
              enum cfg_ref_kind kind, char **name, void *slot, const struct cfg_url_map *scope);
/* Same for `key` of `map`: 1 set, 0 absent, -1 error. */
int yget_ref(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map, const char *key,
             enum cfg_ref_kind kind, char **name, void *slot, const struct cfg_url_map *scope);

/* Resolves queued references; on success sorts route rules, fills defaults. */
void cfg_resolve(struct cfg_loader *ld);

#endif
