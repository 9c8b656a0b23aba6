/*
 * tools-int.h — private to src/tools/: what explain.c and diff.c share.
 *
 *   tool_config     a config loaded with config_load and its url maps
 *                   compiled with url_map_compile, as runtime_new does;
 *   tool_request    one request as a client would send it (method, scheme,
 *                   authority, target, header fields), built from a URL
 *                   (explain, text request files) or an access log line;
 *   tool_route      what the proxy does with it, computed with the proxy's
 *                   own steps in the router's order: listener, path
 *                   normalization (url_map_request_prepare), the matcher
 *                   (url_map_match_traced), redirect Location
 *                   (url_map_redirect_location2), forwarding headers
 *                   (request_set_forwarded), header actions and rewrites
 *                   (url_map_apply_request), timeout (route_timeout_ms);
 *   json_out        a small JSON writer for --json.
 *
 * Every string of a request and of its route lives in an arena the caller
 * owns (one per request; diff resets it between requests).
 */
#ifndef SY_TOOLS_INT_H
#define SY_TOOLS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "config/config-t.h"
#include "core/arena.h"
#include "http/http-t.h"
#include "urlmap/urlmap.h"

/* Header fields one tool request may carry. */
#define TOOL_MAX_HEADERS 100

/* Longest Location a redirect may have (the router's buffer). */
#define TOOL_LOCATION_MAX 4096

/* ---- configs --------------------------------------------------------------- */

struct tool_config {
    struct config *cfg;
    struct url_map **maps; /* parallel to cfg->url_maps */
};

/*
 * Load `path` and compile its url maps. Prints the config's errors
 * (FILE:LINE:COL: message) or the reason to `err`. 0, or -1 (tc zeroed).
 */
int tool_config_load(const char *path, struct tool_config *tc, FILE *err);
void tool_config_free(struct tool_config *tc);

/* "FILE:LINE:COL" of a config mark into buf (NUL-terminated). */
const char *tool_config_at(const struct config *cfg, struct cfg_mark mark, char *buf, size_t cap);

/* ---- requests ------------------------------------------------------------- */

struct tool_request {
    const char *method; /* NUL-terminated */
    size_t method_len;
    const char *scheme;    /* "http" | "https"; NULL = the listener's */
    const char *authority; /* Host / :authority; NULL = none */
    size_t authority_len;
    const char *target; /* path and "?query" as the client sent them */
    size_t target_len;
    uint16_t port;               /* the URL's port (its scheme's default when none); 0 = unknown */
    const char *listener;        /* a listener name (--listener, the log's field); NULL = by port */
    struct http_headers headers; /* regular fields, names lower-case; no Host */
};

/* An empty request (method GET) whose header list is in `a`. 0 or SY_ENOMEM. */
int tool_request_init(struct tool_request *rq, struct arena *a);

/*
 * Take scheme, authority, port and target from an absolute URL
 * "http(s)://authority[/path][?query][#fragment]" (the fragment is dropped,
 * as clients do) or an origin-form target "/path[?query]" (then authority
 * and port stay as they are). Strings are copied to `a`. 0, or SY_EINVAL
 * with *why set; SY_ENOMEM.
 */
int tool_request_set_url(struct tool_request *rq, struct arena *a, const char *url, size_t len,
                         const char **why);

/*
 * Add one "name: value" field (the name is lower-cased; "host" sets the
 * authority instead, unless an absolute URL gave one). 0, SY_EINVAL with
 * *why set, SY_ELIMIT (over TOOL_MAX_HEADERS), or SY_ENOMEM.
 */
int tool_request_add_header(struct tool_request *rq, struct arena *a, const char *line, size_t len,
                            const char **why);

/* ---- routing ---------------------------------------------------------------- */

enum tool_outcome {
    TOOL_ROUTED = 0,  /* to a backend service or a weighted split */
    TOOL_REDIRECT,    /* url_redirect: the proxy answers with a Location */
    TOOL_LOCAL_REPLY, /* the proxy answers `status` itself: 404 no backend service, 500 a
                       * redirect whose Location cannot be built */
    TOOL_BAD_REQUEST, /* the proxy answers 400: a target that is not valid or not normalizable */
    TOOL_NO_LISTENER, /* the request names a listener this config does not have */
};

/* How the listener was chosen (explain says which rule applied). */
enum tool_listener_how {
    TOOL_LISTENER_NAMED = 0,   /* --listener, or the access log's field */
    TOOL_LISTENER_PORT_SCHEME, /* the first whose port and scheme fit the URL */
    TOOL_LISTENER_PORT,        /* the first whose port fits (another scheme) */
    TOOL_LISTENER_SCHEME,      /* none on the port: the first whose scheme fits */
    TOOL_LISTENER_FIRST,       /* none fits: the first listener */
};

/* Options of one routing. */
struct tool_route_opts {
    /* Add X-Forwarded-For/-Proto and X-Request-Id as the router does
     * (explain); diff leaves them out: they never change a route. */
    bool forwarding;
    const struct sockaddr_storage *client_addr; /* forwarding: the client's address */
    /* Also told every decision of the matcher (may be NULL). */
    const struct url_map_trace *trace;
    uint32_t rand; /* picks within a weighted split */
};

struct tool_route {
    enum tool_outcome outcome;
    const char *why; /* all but TOOL_ROUTED and TOOL_REDIRECT: a short reason */
    int status;      /* the status the client gets when the proxy answers (3xx, 4xx, 500) */
    const struct cfg_listener *listener;
    enum tool_listener_how listener_how;
    const struct cfg_url_map *url_map;
    /* The head as the matcher saw it (path normalized, query kept), and
     * then as it goes upstream (header actions, rewrites applied). */
    struct http_request_head head;
    struct url_map_request mreq;
    struct url_map_result res;
    const char *up_authority;
    size_t up_authority_len;
    const char *up_path; /* path and query after path_prefix_rewrite */
    size_t up_path_len;
    /* Decisions read from the trace. */
    enum url_map_host_how host_how;
    const char *host_pattern;              /* NULL: none */
    const struct cfg_host_rule *host_rule; /* NULL: none */
    size_t host_rule_index;
    const struct cfg_path_matcher *path_matcher; /* NULL: the url map's default */
    long route_rule_index;                       /* the route rule that matched, -1 = none */
    long path_rule_index;                        /* the path rule that matched, -1 = none */
    const char *path_pattern;
    char location[TOOL_LOCATION_MAX]; /* TOOL_REDIRECT */
};

/*
 * Route `rq` through `tc` as the proxy would route it (the steps are listed
 * at the top of this file). Strings go to `a`. 0 with out->outcome set, or
 * SY_ENOMEM (no room left in `a`: the request is too large).
 */
int tool_request_route(const struct tool_config *tc, const struct tool_request *rq, struct arena *a,
                       const struct tool_route_opts *opts, struct tool_route *out);

/* Names for output. */
const char *tool_listener_protocol_name(enum cfg_listener_protocol p);
const char *tool_host_how_name(enum url_map_host_how h);

/* ---- JSON output ---------------------------------------------------------------- */

#define JSON_OUT_DEPTH 16

/* Writes one JSON value; commas between members are its business. */
struct json_out {
    FILE *f;
    int depth;
    bool first[JSON_OUT_DEPTH];
};

void json_out_init(struct json_out *j, FILE *f);
/* `key` NULL inside an array (or for the top-level value). */
void json_out_begin_object(struct json_out *j, const char *key);
void json_out_begin_array(struct json_out *j, const char *key);
void json_out_end(struct json_out *j, bool object);
void json_out_str(struct json_out *j, const char *key, const char *s, size_t n);
void json_out_cstr(struct json_out *j, const char *key, const char *s); /* NULL: null */
void json_out_u64(struct json_out *j, const char *key, uint64_t v);
void json_out_i64(struct json_out *j, const char *key, int64_t v);
void json_out_double(struct json_out *j, const char *key, double v);
void json_out_bool(struct json_out *j, const char *key, bool v);
void json_out_null(struct json_out *j, const char *key);

/*
 * A string escaped for JSON to `f` (RFC 8259; bytes below 0x20 and from 0x7f
 * up as \u00XX, as the access log writes them).
 */
void json_out_escaped(FILE *f, const char *s, size_t n);

/* ---- JSON input (access log lines) ------------------------------------------ */

/*
 * Fill `rq` from one access log line (a JSON object): method, authority,
 * path (with its query), listener, and request header fields when the line
 * has a "request_headers" object (name → string, or array of strings).
 * Other members are skipped. String escapes are decoded (\u00XX gives byte
 * XX, as the access log writes bytes). 0, or SY_EINVAL with *why set;
 * SY_ENOMEM / SY_ELIMIT as tool_request_add_header.
 */
int tool_request_from_log(struct tool_request *rq, struct arena *a, const char *line, size_t len,
                          const char **why);

#endif
