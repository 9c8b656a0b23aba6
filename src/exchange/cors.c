/* cors.c — see cors.h. */
#include "exchange/cors.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/errors.h"
#include "core/strlit.h"
#include "http/headers.h"

static const struct cfg_cors_policy *policy_of(const struct url_map_result *res)
{
    const struct cfg_cors_policy *c = res && res->action ? res->action->cors_policy : NULL;
    return c && !c->disabled ? c : NULL;
}

/* Does any of the policy's anchored regexes match all of the origin? */
static bool regex_allows(const struct cfg_cors_policy *c, const char *o, size_t n)
{
    if (!c->n_allow_origin_regexes)
        return false;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    bool ok = false;
    for (size_t i = 0; md && !ok && i < c->n_allow_origin_regexes; i++) {
        const pcre2_code *re = c->allow_origin_regex_codes[i];
        if (re && pcre2_match(re, (PCRE2_SPTR)o, n, 0, 0, md, NULL) >= 0) {
            const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            ok = ov[0] == 0 && ov[1] == n;
        }
    }
    pcre2_match_data_free(md);
    return ok;
}

/* Is `o` allowed; *wildcard when only through "*". */
static bool origin_allowed(const struct cfg_cors_policy *c, const char *o, size_t n, bool *wildcard)
{
    bool star = false;
    *wildcard = false;
    for (size_t i = 0; i < c->n_allow_origins; i++) {
        const char *a = c->allow_origins[i];
        if (!strcmp(a, "*"))
            star = true;
        else if (strlen(a) == n && !memcmp(a, o, n))
            return true; /* origins compare as their serialization, byte for byte */
    }
    if (regex_allows(c, o, n))
        return true;
    *wildcard = star;
    return star;
}

bool cors_on_request(struct exchange *ex, const struct url_map_result *res)
{
    const struct cfg_cors_policy *c = policy_of(res);
    ex->cors_origin = NULL;
    if (!c)
        return false;
    const struct http_header *o = http_headers_get(&ex->req.headers, SY_STRLIT("origin"));
    bool wildcard;
    if (!o || !origin_allowed(c, o->value, o->value_len, &wildcard))
        return false;
    /* A wildcard answer is "*" (never with credentials: the loader refuses it). */
    ex->cors_origin = wildcard ? "*" : o->value;
    ex->cors_origin_len = wildcard ? 1 : o->value_len;
    return ex->req.method_len == 7 && !memcmp(ex->req.method, "OPTIONS", 7) &&
           http_headers_get(&ex->req.headers, SY_STRLIT("access-control-request-method"));
}

/* "a, b, c" of a list into the exchange's arena; NULL on ENOMEM (or empty). */
static char *join(struct exchange *ex, char *const *v, size_t n, size_t *len)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += strlen(v[i]) + 2;
    char *s = n ? arena_alloc(&ex->arena, total + 1) : NULL;
    size_t off = 0;
    for (size_t i = 0; s && i < n; i++)
        off += (size_t)snprintf(s + off, total + 1 - off, "%s%s", i ? ", " : "", v[i]);
    *len = off;
    return s;
}

/* Replace any `name` field of h with one holding `value`. */
static int set_field(struct exchange *ex, struct http_response_head *h, const char *name,
                     size_t name_len, const char *value, size_t value_len)
{
    http_headers_remove(&h->headers, name, name_len);
    return http_headers_add(&h->headers, &ex->arena, name, name_len, value, value_len);
}

/* Field `name` set to the list v[0..n) joined by ", " (nothing when n is 0). 0 or SY_ENOMEM. */
static int set_list(struct exchange *ex, struct http_response_head *h, const char *name,
                    size_t name_len, char *const *v, size_t n)
{
    size_t len;
    char *joined = join(ex, v, n, &len);
    if (!n)
        return 0;
    return joined ? set_field(ex, h, name, name_len, joined, len) : SY_ENOMEM;
}

/* Allow-Origin, Allow-Credentials and Vary: what every allowed answer carries. */
static int origin_fields(struct exchange *ex, const struct cfg_cors_policy *c,
                         struct http_response_head *h)
{
    if (set_field(ex, h, SY_STRLIT("access-control-allow-origin"), ex->cors_origin,
                  ex->cors_origin_len) != 0)
        return SY_ENOMEM;
    if (c->allow_credentials &&
        set_field(ex, h, SY_STRLIT("access-control-allow-credentials"), SY_STRLIT("true")) != 0)
        return SY_ENOMEM;
    /* The answer depends on the Origin unless it is "*". */
    if (ex->cors_origin_len != 1 || ex->cors_origin[0] != '*')
        return http_headers_add(&h->headers, &ex->arena, SY_STRLIT("vary"), SY_STRLIT("Origin"));
    return 0;
}

int cors_preflight_headers(struct exchange *ex, const struct url_map_result *res,
                           struct http_response_head *h)
{
    const struct cfg_cors_policy *c = policy_of(res);
    if (!c || !ex->cors_origin || origin_fields(ex, c, h) != 0)
        return SY_ENOMEM;
    if (set_list(ex, h, SY_STRLIT("access-control-allow-methods"), c->allow_methods,
                 c->n_allow_methods) != 0 ||
        set_list(ex, h, SY_STRLIT("access-control-allow-headers"), c->allow_headers,
                 c->n_allow_headers) != 0)
        return SY_ENOMEM;
    if (c->max_age_set) {
        char *age = arena_alloc(&ex->arena, 24);
        if (!age)
            return SY_ENOMEM;
        int n = snprintf(age, 24, "%llu", (unsigned long long)(c->max_age_ms / 1000));
        if (http_headers_add(&h->headers, &ex->arena, SY_STRLIT("access-control-max-age"), age,
                             (size_t)n) != 0)
            return SY_ENOMEM;
    }
    return 0;
}

int cors_on_response(struct exchange *ex, const struct url_map_result *res,
                     struct http_response_head *h)
{
    const struct cfg_cors_policy *c = policy_of(res);
    if (!c || !ex->cors_origin)
        return 0;
    if (origin_fields(ex, c, h) != 0)
        return SY_ENOMEM;
    if (set_list(ex, h, SY_STRLIT("access-control-expose-headers"), c->expose_headers,
                 c->n_expose_headers) != 0)
        return SY_ENOMEM;
    return 0;
}
