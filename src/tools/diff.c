/*
 * diff.c — `switchyard diff OLD.yaml NEW.yaml --requests FILE`: replay
 * requests against two configs and report, grouped and counted, those
 * whose outcome changes.
 *
 * FILE holds requests in either form, mixed if need be (docs/tools.md):
 *   - switchyard's JSON access log: one object per line; method,
 *     authority, path (with its query) and listener are read, and request
 *     header fields from a "request_headers" object when a line has one;
 *   - text: a "METHOD URL" line (URL absolute, or "/path" with a Host
 *     line), optionally followed by "name: value" header lines; a blank
 *     line (or the next request line) ends the request; "#" starts a
 *     comment line.
 *
 * Each request is routed through both configs by tool_request_route (the
 * proxy's own matcher and rewrites). An outcome is: the backend service, or
 * the weighted split as a set of services with their shares of the weight
 * (the random pick does not count; weight-0 entries never get traffic and
 * do not count either); the path and host sent upstream; a redirect's
 * status and Location; a local reply's status. Requests whose outcome
 * differs are grouped by what changed, the two actions and the two rules
 * that decided them; each group keeps its count and its first request.
 *
 * Memory is bounded whatever the file's size: lines are read into one
 * buffer of DIFF_LINE_MAX bytes (a longer line is invalid, skipped), a
 * request lives in one fixed arena reset after it, and at most --max-groups
 * groups are kept (further kinds of change count as "other changes").
 * Invalid lines are counted, the first few reported; they never stop the run.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "core/errors.h"
#include "core/parse.h"
#include "http/headers.h"
#include "tools/tools-int.h"
#include "tools/tools.h"

#define DIFF_LINE_MAX        (64 * 1024)  /* longest line read; longer ones are invalid */
#define DIFF_ARENA_BYTES     (512 * 1024) /* one request's arena: a fixed buffer */
#define DIFF_GROUPS_DEFAULT  1000
#define DIFF_GROUPS_MAX      10000
#define DIFF_INVALID_SAMPLES 5
#define DIFF_TEXT_MAX        256 /* an action or rule description */
#define DIFF_DETAIL_MAX      640 /* a sample's outcome: path, host, Location */
#define DIFF_SAMPLE_MAX      640 /* a sample request */

/* What changed between the two outcomes (bits). */
enum diff_change {
    CH_SERVICE = 1u << 0,     /* another backend service, or another set of them */
    CH_WEIGHTS = 1u << 1,     /* the same services, other shares of the weight */
    CH_PATH = 1u << 2,        /* the path sent upstream */
    CH_HOST = 1u << 3,        /* the host sent upstream */
    CH_REDIRECT = 1u << 4,    /* a redirect appears, goes, or changes status or Location */
    CH_LOCAL_REPLY = 1u << 5, /* a local reply (404, 400, ...) appears, goes, or changes */
    CH_LISTENER = 1u << 6,    /* the request's listener exists in one config only */
};

static const char *const change_names[] = {"service",  "weights",     "path",    "host",
                                           "redirect", "local_reply", "listener"};
#define N_CHANGES (sizeof change_names / sizeof change_names[0])

/* One side of a change, as printed. */
struct side {
    char action[DIFF_TEXT_MAX]; /* "service legacy", "split a:90,b:10", "redirect 301", ... */
    char rule[DIFF_TEXT_MAX];   /* what decided it */
    char detail[DIFF_DETAIL_MAX];
};

struct diff_group {
    bool used;
    uint32_t hash;
    unsigned changes;
    uint64_t count;
    struct side old, new;
    uint64_t sample_line;
    char sample[DIFF_SAMPLE_MAX];
};

struct invalid_sample {
    uint64_t line;
    char reason[128];
};

struct diff_opts {
    const char *old_path, *new_path, *requests, *listener;
    bool fail_on_change, json;
    size_t max_groups;
};

struct diff {
    const struct diff_opts *o;
    struct tool_config old, new;
    struct diff_group *groups; /* open addressing, 2 * max_groups slots */
    size_t n_slots, n_groups;
    uint64_t requests, changed, other_changes, invalid, lines;
    struct invalid_sample invalid_samples[DIFF_INVALID_SAMPLES];
    /* The request being read and routed, and its arena. */
    struct arena arena;
    struct tool_request rq;
    bool pending;     /* rq holds a text request still taking header lines */
    bool skipping;    /* the text request was invalid: skip its header lines */
    uint64_t rq_line; /* where the request started */
    struct tool_route r_old, r_new;
};

static max_align_t arena_buf[DIFF_ARENA_BYTES / sizeof(max_align_t)];

static void usage(FILE *f)
{
    fprintf(f, "usage: switchyard diff OLD.yaml NEW.yaml --requests FILE [--fail-on-change]\n"
               "                       [--json] [--max-groups N] [--listener NAME]\n"
               "Replays the requests of FILE (switchyard's JSON access log, or 'METHOD URL'\n"
               "lines with optional 'name: value' lines) against both configs and reports those\n"
               "whose outcome changes. Exit status: 0 done, 2 changes with --fail-on-change,\n"
               "1 usage, config or file error. See docs/tools.md.\n");
}

/* ---- invalid input ----------------------------------------------------------------- */

static void invalid(struct diff *d, uint64_t line, const char *why)
{
    if (d->invalid < DIFF_INVALID_SAMPLES) {
        struct invalid_sample *s = &d->invalid_samples[d->invalid];
        s->line = line;
        snprintf(s->reason, sizeof s->reason, "%s", why ? why : "out of memory");
    }
    d->invalid++;
}

/* ---- outcomes ---------------------------------------------------------------------- */

/* The share of the weight `name` gets under action `a` (num/den), 0 when none. */
static uint64_t share(const struct cfg_route_action *a, const char *name, uint64_t *den)
{
    if (!a->n_weighted_backend_services) {
        *den = 1;
        return a->service && strcmp(a->service->name, name) == 0;
    }
    uint64_t w = 0;
    *den = a->total_weight ? a->total_weight : 1;
    for (size_t i = 0; i < a->n_weighted_backend_services; i++)
        if (strcmp(a->weighted_backend_services[i].backend_service_name, name) == 0)
            w += a->weighted_backend_services[i].weight;
    return w;
}

/* Does every service with traffic under `a` get the same share under `b`?
 * *same_set: the services with traffic are the same. */
static bool same_shares(const struct cfg_route_action *a, const struct cfg_route_action *b,
                        bool *same_set)
{
    bool shares = true;
    *same_set = true;
    for (int pass = 0; pass < 2; pass++) {
        const struct cfg_route_action *x = pass ? b : a, *y = pass ? a : b;
        size_t n = x->n_weighted_backend_services ? x->n_weighted_backend_services : 1;
        for (size_t i = 0; i < n; i++) {
            const char *name = x->n_weighted_backend_services
                                   ? x->weighted_backend_services[i].backend_service_name
                                   : x->service->name;
            uint64_t dx, dy, wx = share(x, name, &dx), wy = share(y, name, &dy);
            if (wx && !wy)
                *same_set = false;
            if (wx * dy != wy * dx)
                shares = false;
        }
    }
    return shares;
}

static bool same_bytes(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

/* What changed from `o` to `n` (enum diff_change bits; 0 = the same outcome). */
static unsigned changes_of(const struct tool_route *o, const struct tool_route *n)
{
    if (o->outcome != n->outcome) {
        if (o->outcome == TOOL_NO_LISTENER || n->outcome == TOOL_NO_LISTENER)
            return CH_LISTENER;
        if (o->outcome == TOOL_REDIRECT || n->outcome == TOOL_REDIRECT)
            return CH_REDIRECT;
        return CH_LOCAL_REPLY;
    }
    switch (o->outcome) {
    case TOOL_REDIRECT:
        return o->status != n->status || strcmp(o->location, n->location) ? CH_REDIRECT : 0;
    case TOOL_LOCAL_REPLY:
    case TOOL_BAD_REQUEST: return o->status != n->status ? CH_LOCAL_REPLY : 0;
    case TOOL_NO_LISTENER: return 0;
    default: break;
    }
    unsigned c = 0;
    bool same_set;
    if (!same_shares(o->res.action, n->res.action, &same_set))
        c |= same_set ? CH_WEIGHTS : CH_SERVICE;
    if (!same_bytes(o->up_path, o->up_path_len, n->up_path, n->up_path_len))
        c |= CH_PATH;
    if (!same_bytes(o->up_authority, o->up_authority_len, n->up_authority, n->up_authority_len))
        c |= CH_HOST;
    return c;
}

/* Appends to buf (NUL-terminated, cut at cap). */
static void append(char *buf, size_t cap, const char *fmt, const char *s, size_t n)
{
    size_t used = strlen(buf);
    if (used + 1 < cap)
        snprintf(buf + used, cap - used, fmt, (int)n, s ? s : "");
}

static void describe_action(const struct tool_route *r, char *buf, size_t cap)
{
    const struct cfg_route_action *a = r->res.action;
    switch (r->outcome) {
    case TOOL_REDIRECT: snprintf(buf, cap, "redirect %d", r->status); return;
    case TOOL_LOCAL_REPLY: snprintf(buf, cap, "local reply %d", r->status); return;
    case TOOL_BAD_REQUEST: snprintf(buf, cap, "bad request %d", r->status); return;
    case TOOL_NO_LISTENER: snprintf(buf, cap, "no listener"); return;
    default: break;
    }
    if (!a->n_weighted_backend_services) {
        snprintf(buf, cap, "service %s", a->service->name);
        return;
    }
    snprintf(buf, cap, "split ");
    for (size_t i = 0; i < a->n_weighted_backend_services; i++) {
        char w[48];
        snprintf(w, sizeof w, ":%u%s", a->weighted_backend_services[i].weight,
                 i + 1 < a->n_weighted_backend_services ? "," : "");
        const char *name = a->weighted_backend_services[i].backend_service_name;
        append(buf, cap, "%.*s", name, strlen(name));
        append(buf, cap, "%.*s", w, strlen(w));
    }
}

static void describe_rule(const struct tool_route *r, char *buf, size_t cap)
{
    const struct cfg_path_matcher *pm = r->path_matcher;
    if (r->outcome == TOOL_NO_LISTENER || r->outcome == TOOL_BAD_REQUEST || !r->url_map) {
        snprintf(buf, cap, "%s", r->why ? r->why : "-");
    } else if (!pm) {
        snprintf(buf, cap, "url_map %s: default", r->url_map->name);
    } else if (r->route_rule_index >= 0) {
        snprintf(buf, cap, "url_map %s, path_matcher %s: route_rule priority %lld",
                 r->url_map->name, pm->name,
                 (long long)pm->route_rules[r->route_rule_index].priority);
    } else if (r->path_rule_index >= 0) {
        snprintf(buf, cap, "url_map %s, path_matcher %s: path_rule %s", r->url_map->name, pm->name,
                 r->path_pattern);
    } else {
        snprintf(buf, cap, "url_map %s, path_matcher %s: default", r->url_map->name, pm->name);
    }
}

static void describe_detail(const struct tool_route *r, char *buf, size_t cap)
{
    buf[0] = '\0';
    if (r->outcome == TOOL_REDIRECT) {
        append(buf, cap, "Location %.*s", r->location, strlen(r->location));
    } else if (r->outcome == TOOL_ROUTED) {
        append(buf, cap, "path %.*s", r->up_path, r->up_path_len);
        append(buf, cap, " host %.*s", r->up_authority ? r->up_authority : "-",
               r->up_authority ? r->up_authority_len : 1);
    } else {
        append(buf, cap, "%.*s", r->why, r->why ? strlen(r->why) : 0);
    }
}

/* ---- groups ----------------------------------------------------------------------------- */

static uint32_t hash_str(uint32_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return (h ^ 0xff) * 16777619u; /* a separator between fields */
}

static bool group_is(const struct diff_group *g, unsigned changes, const struct side *o,
                     const struct side *n)
{
    return g->changes == changes && !strcmp(g->old.action, o->action) &&
           !strcmp(g->new.action, n->action) && !strcmp(g->old.rule, o->rule) &&
           !strcmp(g->new.rule, n->rule);
}

static void sample_of(const struct diff *d, char *buf, size_t cap)
{
    const struct tool_request *rq = &d->rq;
    const char *scheme = d->r_old.head.scheme ? d->r_old.head.scheme : "http";
    buf[0] = '\0';
    append(buf, cap, "%.*s ", rq->method, rq->method_len);
    if (rq->authority) {
        append(buf, cap, "%.*s://", scheme, strlen(scheme));
        append(buf, cap, "%.*s", rq->authority, rq->authority_len);
    }
    append(buf, cap, "%.*s", rq->target, rq->target_len);
    for (uint32_t i = 0; i < rq->headers.n; i++) {
        append(buf, cap, " [%.*s: ", rq->headers.v[i].name, rq->headers.v[i].name_len);
        append(buf, cap, "%.*s]", rq->headers.v[i].value, rq->headers.v[i].value_len);
    }
    if (rq->listener)
        append(buf, cap, " (listener %.*s)", rq->listener, strlen(rq->listener));
}

/* Count a changed request in its group (a new group while there is room). */
static void group_count(struct diff *d, unsigned changes)
{
    struct side o, n;
    describe_action(&d->r_old, o.action, sizeof o.action);
    describe_action(&d->r_new, n.action, sizeof n.action);
    describe_rule(&d->r_old, o.rule, sizeof o.rule);
    describe_rule(&d->r_new, n.rule, sizeof n.rule);
    uint32_t h = 2166136261u ^ changes;
    h = hash_str(hash_str(hash_str(hash_str(h, o.action), n.action), o.rule), n.rule);
    for (size_t i = h % d->n_slots;; i = (i + 1) % d->n_slots) {
        struct diff_group *g = &d->groups[i];
        if (g->used && g->hash == h && group_is(g, changes, &o, &n)) {
            g->count++;
            return;
        }
        if (g->used)
            continue;
        if (d->n_groups >= d->o->max_groups) {
            d->other_changes++;
            return;
        }
        g->used = true;
        g->hash = h;
        g->changes = changes;
        g->count = 1;
        describe_detail(&d->r_old, o.detail, sizeof o.detail);
        describe_detail(&d->r_new, n.detail, sizeof n.detail);
        g->old = o;
        g->new = n;
        g->sample_line = d->rq_line;
        sample_of(d, g->sample, sizeof g->sample);
        d->n_groups++;
        return;
    }
}

/* ---- one request ------------------------------------------------------------------------------
 */

static void request_reset(struct diff *d)
{
    arena_free(&d->arena);
    /* The buffer is the arena's only block: a request never mallocs. */
    arena_init_buf(&d->arena, sizeof arena_buf - 256, arena_buf, sizeof arena_buf);
    d->pending = false;
}

/* Route d->rq through both configs and count it. */
static void request_done(struct diff *d)
{
    struct tool_route_opts ro = {0};
    d->pending = false;
    if (tool_request_route(&d->old, &d->rq, &d->arena, &ro, &d->r_old) != 0 ||
        tool_request_route(&d->new, &d->rq, &d->arena, &ro, &d->r_new) != 0) {
        invalid(d, d->rq_line, "the request is too large to route");
        return;
    }
    if (d->r_old.outcome == TOOL_NO_LISTENER && d->r_new.outcome == TOOL_NO_LISTENER) {
        invalid(d, d->rq_line, "its listener is in neither config");
        return;
    }
    d->requests++;
    unsigned c = changes_of(&d->r_old, &d->r_new);
    if (!c)
        return;
    d->changed++;
    group_count(d, c);
}

/* The pending text request, if any, is complete. */
static void flush_text(struct diff *d)
{
    if (d->pending)
        request_done(d);
    d->pending = d->skipping = false;
    request_reset(d);
}

static void on_json_line(struct diff *d, const char *line, size_t len)
{
    const char *why = NULL;
    flush_text(d);
    d->rq_line = d->lines;
    if (tool_request_init(&d->rq, &d->arena) != 0 ||
        tool_request_from_log(&d->rq, &d->arena, line, len, &why) != 0) {
        invalid(d, d->lines, why);
    } else {
        if (!d->rq.listener)
            d->rq.listener = d->o->listener;
        request_done(d);
    }
    request_reset(d);
}

/* A request line "METHOD URL [HTTP/x.y]", split into method[0..ml) and url[0..ul). */
static void on_request_line(struct diff *d, const char *m, size_t ml, const char *url, size_t ul)
{
    const char *why = "a request line is 'METHOD URL'";
    flush_text(d);
    d->rq_line = d->lines;
    while (ul && url[0] == ' ') {
        url++;
        ul--;
    }
    const char *sp = url ? memchr(url, ' ', ul) : NULL;
    if (sp && ul - (size_t)(sp - url) > 5 && strncmp(sp + 1, "HTTP/", 5) == 0)
        ul = (size_t)(sp - url); /* a trailing protocol, as in a request line */
    char *method = ml ? arena_strndup(&d->arena, m, ml) : NULL;
    if (!ml || !http_is_token(m, ml) || !ul || tool_request_init(&d->rq, &d->arena) != 0 ||
        !method || tool_request_set_url(&d->rq, &d->arena, url, ul, &why) != 0) {
        invalid(d, d->lines, why);
        d->skipping = true;
        return;
    }
    d->rq.method = method;
    d->rq.method_len = ml;
    d->rq.listener = d->o->listener;
    d->pending = true;
}

static void on_header_line(struct diff *d, const char *line, size_t len)
{
    const char *why = NULL;
    if (d->skipping)
        return;
    if (!d->pending) {
        invalid(d, d->lines, "a header line without a request line before it");
        return;
    }
    if (tool_request_add_header(&d->rq, &d->arena, line, len, &why) != 0) {
        invalid(d, d->lines, why);
        d->pending = false;
        d->skipping = true;
    }
}

static void on_line(struct diff *d, char *line, size_t len)
{
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    size_t lead = strspn(line, " \t");
    if (lead == len) {
        flush_text(d); /* a blank line ends a text request */
        return;
    }
    if (line[lead] == '{') {
        on_json_line(d, line + lead, len - lead);
        return;
    }
    if (line[0] == '#')
        return;
    /* A header line's name is a token followed by ':'; a request line's method by ' '.
     * A bare URL is a GET. */
    size_t tok = strcspn(line, ": \t");
    bool bare_url = line[0] == '/' || strncasecmp(line, "http://", 7) == 0 ||
                    strncasecmp(line, "https://", 8) == 0;
    if (bare_url)
        on_request_line(d, "GET", 3, line, len);
    else if (line[tok] == ':')
        on_header_line(d, line, len);
    else
        on_request_line(d, line, tok, line[tok] ? line + tok + 1 : NULL,
                        line[tok] ? len - tok - 1 : 0);
}

/*
 * Lines from a stream through one fixed buffer: each line (without its
 * "\n") is at most DIFF_LINE_MAX bytes; a longer one is reported as such
 * and skipped to its end.
 */
struct line_reader {
    FILE *f;
    size_t start, end; /* unread bytes: buf[start..end) */
    bool eof;
};

static char read_buf[2 * DIFF_LINE_MAX];

/* The next line: 1 (line, *len), 2 (a line over the cap, skipped), 0 at the end, -1 on error. */
static int next_line(struct line_reader *lr, char **line, size_t *len)
{
    bool overlong = false;
    for (;;) {
        char *nl = memchr(read_buf + lr->start, '\n', lr->end - lr->start);
        if (nl || (lr->eof && lr->end > lr->start)) {
            size_t n = nl ? (size_t)(nl - read_buf) - lr->start : lr->end - lr->start;
            *line = read_buf + lr->start;
            *len = n;
            lr->start += n + (nl != NULL);
            return overlong || n > DIFF_LINE_MAX ? 2 : 1;
        }
        if (lr->eof)
            return overlong ? 2 : 0;
        if (lr->end - lr->start > DIFF_LINE_MAX) {
            overlong = true; /* drop what we have of it, read on to its end */
            lr->start = lr->end;
        }
        memmove(read_buf, read_buf + lr->start, lr->end - lr->start);
        lr->end -= lr->start;
        lr->start = 0;
        size_t got = fread(read_buf + lr->end, 1, sizeof read_buf - lr->end - 1, lr->f);
        lr->end += got;
        if (got == 0) {
            if (ferror(lr->f))
                return -1;
            lr->eof = true;
        }
    }
}

/* Read every request of `f`. 0, or -1 on a read error. */
static int read_requests(struct diff *d, FILE *f)
{
    struct line_reader lr = {.f = f};
    char *line;
    size_t len;
    int rc;
    while ((rc = next_line(&lr, &line, &len)) > 0) {
        d->lines++;
        if (rc == 2 || memchr(line, '\0', len)) {
            invalid(d, d->lines, rc == 2 ? "a line longer than 64 KiB" : "a NUL byte in a line");
            flush_text(d);
            d->skipping = true; /* a text request's header lines would follow */
            continue;
        }
        line[len] = '\0'; /* the "\n" or the spare byte past the data */
        on_line(d, line, len);
    }
    flush_text(d);
    return rc < 0 ? -1 : 0;
}

/* ---- report --------------------------------------------------------------------------------- */

static int by_count(const void *a, const void *b)
{
    const struct diff_group *x = *(const struct diff_group *const *)a;
    const struct diff_group *y = *(const struct diff_group *const *)b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return x->sample_line < y->sample_line ? -1 : x->sample_line > y->sample_line;
}

/* The groups, most requests first (NULL when there are none or no memory). */
static struct diff_group **sorted_groups(const struct diff *d)
{
    struct diff_group **v = calloc(d->n_groups + 1, sizeof *v);
    size_t k = 0;
    for (size_t i = 0; v && i < d->n_slots; i++)
        if (d->groups[i].used)
            v[k++] = &d->groups[i];
    if (v)
        qsort(v, k, sizeof *v, by_count);
    return v;
}

static void changes_text(unsigned c, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (size_t i = 0; i < N_CHANGES; i++)
        if (c & (1u << i))
            append(buf, cap, buf[0] ? ", %.*s" : "%.*s", change_names[i], strlen(change_names[i]));
}

static void report_text(const struct diff *d, struct diff_group **v, FILE *f)
{
    fprintf(f, "switchyard diff: %s (version %s) -> %s (version %s)\n", d->o->old_path,
            d->old.cfg->version, d->o->new_path, d->new.cfg->version);
    fprintf(f, "requests: %llu read from %s; %llu changed, %llu unchanged; %llu invalid line%s\n",
            (unsigned long long)d->requests, d->o->requests, (unsigned long long)d->changed,
            (unsigned long long)(d->requests - d->changed), (unsigned long long)d->invalid,
            d->invalid == 1 ? "" : "s");
    for (size_t i = 0; i < d->invalid && i < DIFF_INVALID_SAMPLES; i++)
        fprintf(f, "  invalid: line %llu: %s\n", (unsigned long long)d->invalid_samples[i].line,
                d->invalid_samples[i].reason);
    if (d->changed)
        fprintf(f, "changes, most requests first:\n");
    for (size_t i = 0; v && i < d->n_groups; i++) {
        const struct diff_group *g = v[i];
        char what[128];
        changes_text(g->changes, what, sizeof what);
        fprintf(f, "%10llu  %s -> %s  (changes: %s)\n", (unsigned long long)g->count, g->old.action,
                g->new.action, what);
        fprintf(f, "            old rule: %s\n            new rule: %s\n", g->old.rule,
                g->new.rule);
        fprintf(f, "            e.g. line %llu: %s\n", (unsigned long long)g->sample_line,
                g->sample);
        fprintf(f, "                 old: %s\n                 new: %s\n", g->old.detail,
                g->new.detail);
    }
    if (d->other_changes)
        fprintf(f, "%10llu  other changes (more kinds than --max-groups %zu)\n",
                (unsigned long long)d->other_changes, d->o->max_groups);
    fprintf(f, "total: %llu of %llu requests change outcome (%.2f%%)\n",
            (unsigned long long)d->changed, (unsigned long long)d->requests,
            d->requests ? 100.0 * (double)d->changed / (double)d->requests : 0.0);
}

static void json_side(struct json_out *j, const char *key, const struct side *s)
{
    json_out_begin_object(j, key);
    json_out_cstr(j, "action", s->action);
    json_out_cstr(j, "rule", s->rule);
    json_out_cstr(j, "detail", s->detail);
    json_out_end(j, true);
}

static void json_config(struct json_out *j, const char *key, const char *path,
                        const struct tool_config *tc)
{
    json_out_begin_object(j, key);
    json_out_cstr(j, "path", path);
    json_out_cstr(j, "version", tc->cfg->version);
    json_out_end(j, true);
}

static void report_json(const struct diff *d, struct diff_group **v, FILE *f)
{
    struct json_out j;
    json_out_init(&j, f);
    json_out_begin_object(&j, NULL);
    json_config(&j, "old", d->o->old_path, &d->old);
    json_config(&j, "new", d->o->new_path, &d->new);
    json_out_cstr(&j, "requests_file", d->o->requests);
    json_out_u64(&j, "lines", d->lines);
    json_out_u64(&j, "requests", d->requests);
    json_out_u64(&j, "changed", d->changed);
    json_out_u64(&j, "unchanged", d->requests - d->changed);
    json_out_u64(&j, "invalid", d->invalid);
    json_out_begin_array(&j, "invalid_samples");
    for (size_t i = 0; i < d->invalid && i < DIFF_INVALID_SAMPLES; i++) {
        json_out_begin_object(&j, NULL);
        json_out_u64(&j, "line", d->invalid_samples[i].line);
        json_out_cstr(&j, "reason", d->invalid_samples[i].reason);
        json_out_end(&j, true);
    }
    json_out_end(&j, false);
    json_out_begin_array(&j, "groups");
    for (size_t i = 0; v && i < d->n_groups; i++) {
        const struct diff_group *g = v[i];
        json_out_begin_object(&j, NULL);
        json_out_u64(&j, "count", g->count);
        json_out_begin_array(&j, "changes");
        for (size_t k = 0; k < N_CHANGES; k++)
            if (g->changes & (1u << k))
                json_out_cstr(&j, NULL, change_names[k]);
        json_out_end(&j, false);
        json_side(&j, "old", &g->old);
        json_side(&j, "new", &g->new);
        json_out_begin_object(&j, "sample");
        json_out_u64(&j, "line", g->sample_line);
        json_out_cstr(&j, "request", g->sample);
        json_out_end(&j, true);
        json_out_end(&j, true);
    }
    json_out_end(&j, false);
    json_out_u64(&j, "other_changes", d->other_changes);
    json_out_end(&j, true);
    fputc('\n', f);
}

/* ---- command ------------------------------------------------------------------------------ */

static int parse_args(int argc, char **argv, struct diff_opts *o)
{
    static const struct option longopts[] = {{"requests", required_argument, NULL, 'r'},
                                             {"fail-on-change", no_argument, NULL, 'F'},
                                             {"json", no_argument, NULL, 'J'},
                                             {"max-groups", required_argument, NULL, 'G'},
                                             {"listener", required_argument, NULL, 'L'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int ch;
    uint64_t n;
    optind = 1;
    o->max_groups = DIFF_GROUPS_DEFAULT;
    while ((ch = getopt_long(argc, argv, "r:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'r': o->requests = optarg; break;
        case 'F': o->fail_on_change = true; break;
        case 'J': o->json = true; break;
        case 'L': o->listener = optarg; break;
        case 'G':
            if (sy_parse_dec(optarg, strlen(optarg), DIFF_GROUPS_MAX, &n) != 0 || n < 1) {
                fprintf(stderr, "switchyard diff: --max-groups wants 1..%d\n", DIFF_GROUPS_MAX);
                return -1;
            }
            o->max_groups = (size_t)n;
            break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (argc - optind != 2 || !o->requests) {
        fprintf(stderr, "switchyard diff: %s\n",
                !o->requests ? "--requests FILE is required"
                             : "OLD.yaml and NEW.yaml are required");
        usage(stderr);
        return -1;
    }
    o->old_path = argv[optind];
    o->new_path = argv[optind + 1];
    return 0;
}

static int diff_run(struct diff *d, FILE *in)
{
    d->n_slots = 2 * d->o->max_groups;
    d->groups = calloc(d->n_slots, sizeof *d->groups); /* pages are touched only when used */
    if (!d->groups) {
        fprintf(stderr, "switchyard diff: out of memory\n");
        return DIFF_ERROR;
    }
    arena_init_buf(&d->arena, sizeof arena_buf - 256, arena_buf, sizeof arena_buf);
    if (read_requests(d, in) != 0) {
        fprintf(stderr, "switchyard diff: %s: %s\n", d->o->requests, strerror(errno));
        return DIFF_ERROR;
    }
    struct diff_group **v = sorted_groups(d);
    if (d->o->json)
        report_json(d, v, stdout);
    else
        report_text(d, v, stdout);
    free(v);
    return d->changed && d->o->fail_on_change ? DIFF_CHANGED : DIFF_OK;
}

int tools_diff_main(int argc, char **argv)
{
    struct diff_opts o = {0};
    if (parse_args(argc, argv, &o) != 0)
        return DIFF_ERROR;
    static struct diff d; /* large (two routes with their Location buffers) */
    memset(&d, 0, sizeof d);
    d.o = &o;
    if (tool_config_load(o.old_path, &d.old, stderr) != 0)
        return DIFF_ERROR;
    if (tool_config_load(o.new_path, &d.new, stderr) != 0) {
        tool_config_free(&d.old);
        return DIFF_ERROR;
    }
    FILE *in = strcmp(o.requests, "-") == 0 ? stdin : fopen(o.requests, "r");
    int rc = DIFF_ERROR;
    if (!in)
        fprintf(stderr, "switchyard diff: %s: %s\n", o.requests, strerror(errno));
    else
        rc = diff_run(&d, in);
    if (in && in != stdin)
        fclose(in);
    arena_free(&d.arena);
    free(d.groups);
    tool_config_free(&d.new);
    tool_config_free(&d.old);
    return rc;
}
