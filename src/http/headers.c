/* headers.c — see headers.h. */
#include "http/headers.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "core/errors.h"
#include "core/strlit.h"

int http_headers_init(struct http_headers *h, struct arena *a, uint32_t cap)
{
    h->n = 0;
    h->cap = cap ? cap : 8;
    h->v = arena_alloc(a, sizeof *h->v * h->cap);
    return h->v ? 0 : SY_ENOMEM;
}

int http_headers_add(struct http_headers *h, struct arena *a, const char *name, size_t name_len,
                     const char *value, size_t value_len)
{
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 8;
        struct http_header *v = arena_alloc(a, sizeof *v * cap);
        if (!v)
            return SY_ENOMEM;
        if (h->n)
            memcpy(v, h->v, sizeof *v * h->n);
        h->v = v;
        h->cap = cap;
    }
    struct http_header *f = &h->v[h->n++];
    f->name = name;
    f->name_len = (uint32_t)name_len;
    f->value = value;
    f->value_len = (uint32_t)value_len;
    return 0;
}

int http_headers_add_copy(struct http_headers *h, struct arena *a, const char *name,
                          size_t name_len, const char *value, size_t value_len)
{
    char *n = arena_strndup(a, name, name_len);
    char *v = arena_strndup(a, value, value_len);
    if (!n || !v)
        return SY_ENOMEM;
    return http_headers_add(h, a, n, name_len, v, value_len);
}

static bool name_is(const struct http_header *f, const char *name, size_t len)
{
    return f->name_len == len && memcmp(f->name, name, len) == 0;
}

const struct http_header *http_headers_get(const struct http_headers *h, const char *name,
                                           size_t name_len)
{
    for (uint32_t i = 0; i < h->n; i++)
        if (name_is(&h->v[i], name, name_len))
            return &h->v[i];
    return NULL;
}

unsigned http_headers_count(const struct http_headers *h, const char *name, size_t name_len)
{
    unsigned c = 0;
    for (uint32_t i = 0; i < h->n; i++)
        c += name_is(&h->v[i], name, name_len);
    return c;
}

unsigned http_headers_remove(struct http_headers *h, const char *name, size_t name_len)
{
    /* Usually there is none: find the first before moving anything. */
    uint32_t j = 0;
    while (j < h->n && !name_is(&h->v[j], name, name_len))
        j++;
    for (uint32_t i = j; i < h->n; i++)
        if (!name_is(&h->v[i], name, name_len))
            h->v[j++] = h->v[i];
    unsigned removed = h->n - j;
    h->n = j;
    return removed;
}

/*
 * Next element of a comma-separated list (RFC 9110 5.6.1) from *pos: sets
 * *start and *n (OWS trimmed, empty elements skipped). False at the end.
 */
static bool list_next(const char *v, size_t len, size_t *pos, size_t *start, size_t *n)
{
    size_t i = *pos;
    for (;;) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        if (i >= len) {
            *pos = i;
            return false;
        }
        size_t s = i;
        while (i < len && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e > s) {
            *pos = i;
            *start = s;
            *n = e - s;
            return true;
        }
    }
}

bool http_list_has_token(const char *v, size_t len, const char *token)
{
    size_t tlen = strlen(token), pos = 0, start, n;
    while (list_next(v, len, &pos, &start, &n))
        if (n == tlen && strncasecmp(v + start, token, tlen) == 0)
            return true;
    return false;
}

/*
 * The field names every Connection header of a message nominates, as a
 * small open-addressing set: stripping is one pass over the Connection
 * values plus one pass over the fields, whatever their number (a 60 KB
 * "Connection: a,a,a,..." costs what reading it costs). Past
 * CONN_TOKENS_MAX distinct names the rest are not removed: a Connection
 * header naming more fields than a request may carry is abuse, and the
 * framing fields go whatever Connection says.
 */
#define CONN_TOKENS_MAX  64
#define CONN_TOKENS_SLOT 128 /* power of two, > 1.5 x CONN_TOKENS_MAX */

struct conn_tokens {
    struct {
        const char *p; /* NULL = empty slot */
        uint32_t n;
    } slot[CONN_TOKENS_SLOT];
    unsigned used;
};

static uint32_t token_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        h = (h ^ (c >= 'A' && c <= 'Z' ? c + 32u : c)) * 16777619u;
    }
    return h;
}

/* The slot of `s` (case-insensitive), or of the empty slot where it would go. */
static unsigned token_slot(const struct conn_tokens *t, const char *s, size_t n)
{
    unsigned i = token_hash(s, n) & (CONN_TOKENS_SLOT - 1);
    while (t->slot[i].p && !(t->slot[i].n == n && strncasecmp(t->slot[i].p, s, n) == 0))
        i = (i + 1) & (CONN_TOKENS_SLOT - 1);
    return i;
}

/*
 * Fields a client may not make us drop by naming them in Connection: the
 * backend must see the Host and the framing the proxy routed and framed by.
 */
static bool connection_may_name(const char *s, size_t n)
{
    return !((n == SY_STRLEN("te") && strncasecmp(s, "te", n) == 0) ||
             (n == SY_STRLEN("host") && strncasecmp(s, "host", n) == 0) ||
             (n == SY_STRLEN("content-length") && strncasecmp(s, "content-length", n) == 0));
}

static void conn_tokens_add(struct conn_tokens *t, const char *v, size_t len)
{
    size_t pos = 0, start, n;
    while (t->used < CONN_TOKENS_MAX && list_next(v, len, &pos, &start, &n)) {
        if (!connection_may_name(v + start, n))
            continue;
        unsigned i = token_slot(t, v + start, n);
        if (!t->slot[i].p) {
            t->slot[i].p = v + start;
            t->slot[i].n = (uint32_t)n;
            t->used++;
        }
    }
}

static bool is_hop_by_hop_name(const struct http_header *f)
{
    static const struct {
        const char *s;
        uint32_t n;
    } hop[] = {
        {SY_STRLIT("connection")},
        {SY_STRLIT("keep-alive")},
        {SY_STRLIT("proxy-connection")},
        {SY_STRLIT("transfer-encoding")},
        {SY_STRLIT("upgrade")},
        {SY_STRLIT("http2-settings")},
        {SY_STRLIT("te")},
    };
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        if (name_is(f, hop[i].s, hop[i].n))
            return true;
    return false;
}

void http_headers_strip_hop_by_hop(struct http_headers *h, bool keep_te_trailers)
{
    struct conn_tokens t;
    bool any = false, trailers = false;
    t.used = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct http_header *f = &h->v[i];
        if (name_is(f, SY_STRLIT("connection"))) {
            if (!any)
                memset(t.slot, 0, sizeof t.slot);
            any = true;
            conn_tokens_add(&t, f->value, f->value_len);
        } else if (name_is(f, SY_STRLIT("te")) && !trailers) {
            trailers = http_list_has_token(f->value, f->value_len, "trailers");
        }
    }
    uint32_t j = 0, te_at = UINT32_MAX;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct http_header *f = &h->v[i];
        if (name_is(f, SY_STRLIT("te")) && te_at == UINT32_MAX)
            te_at = j; /* where "te: trailers" goes back if it is kept */
        if (is_hop_by_hop_name(f) || (any && t.slot[token_slot(&t, f->name, f->name_len)].p))
            continue;
        h->v[j++] = h->v[i];
    }
    h->n = j;
    if (keep_te_trailers && trailers) {
        /* Fits: at least the te field itself was removed. */
        memmove(&h->v[te_at + 1], &h->v[te_at], sizeof h->v[0] * (h->n - te_at));
        h->v[te_at] =
            (struct http_header){.name = "te", .name_len = 2, .value = "trailers", .value_len = 8};
        h->n++;
    }
}

static const unsigned char token_chars[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

bool http_is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!token_chars[(unsigned char)s[i]])
            return false;
    return true;
}

bool http_is_field_value(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

/*
 * RFC 3986 character classes: URI_UNRESERVED (ALPHA DIGIT - . _ ~),
 * URI_SUB_DELIM (! $ & ' ( ) * + , ; =), URI_PATH_EXTRA (the other path and
 * query characters: ':' '@' '/' '?'). '%' is in none: it is checked as the
 * start of a percent-encoding.
 */
enum { URI_UNRESERVED = 1, URI_SUB_DELIM = 2, URI_PATH_EXTRA = 4 };

static const unsigned char uri_chars[256] = {
    ['-'] = 1, ['.'] = 1, ['_'] = 1, ['~'] = 1, ['0'] = 1, ['1'] = 1,  ['2'] = 1, ['3'] = 1,
    ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,  ['A'] = 1, ['B'] = 1,
    ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,  ['I'] = 1, ['J'] = 1,
    ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,  ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,  ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,  ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1,  ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1,  ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1, ['!'] = 2, ['$'] = 2, ['&'] = 2, ['\''] = 2, ['('] = 2, [')'] = 2,
    ['*'] = 2, ['+'] = 2, [','] = 2, [';'] = 2, ['='] = 2, [':'] = 4,  ['@'] = 4, ['/'] = 4,
    ['?'] = 4,
};

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* Are s[0..len) characters of class `mask`, or complete percent-encodings? */
static bool uri_chars_ok(const char *s, size_t len, unsigned mask)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (uri_chars[c] & mask)
            continue;
        if (c != '%' || len - i < 3 || !is_hex((unsigned char)s[i + 1]) ||
            !is_hex((unsigned char)s[i + 2]))
            return false;
        i += 2;
    }
    return true;
}

#define PATH_CHARS (URI_UNRESERVED | URI_SUB_DELIM | URI_PATH_EXTRA)

bool http_path_is_valid(const char *s, size_t len)
{
    return len > 0 && s[0] == '/' && uri_chars_ok(s, len, PATH_CHARS);
}

/* "[" IPv6address "]" without a zone identifier (RFC 9110 4.2.1 has none). */
static bool ipv6_literal_ok(const char *s, size_t len)
{
    char buf[INET6_ADDRSTRLEN];
    unsigned char addr[16];
    if (len < 4 || s[0] != '[' || s[len - 1] != ']' || len - 2 >= sizeof buf)
        return false;
    for (size_t i = 1; i + 1 < len; i++)
        if (!is_hex((unsigned char)s[i]) && s[i] != ':' && s[i] != '.')
            return false;
    memcpy(buf, s + 1, len - 2);
    buf[len - 2] = '\0';
    return inet_pton(AF_INET6, buf, addr) == 1;
}

bool http_authority_is_valid(const char *s, size_t len)
{
    size_t host_len = len;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return false;
        host_len = (size_t)(close - s) + 1;
        if (!ipv6_literal_ok(s, host_len))
            return false;
    } else {
        const char *colon = memchr(s, ':', len);
        if (colon)
            host_len = (size_t)(colon - s);
        for (size_t i = 0; i < host_len; i++)
            if (s[i] == ',')
                return false; /* a list of hosts, not a host */
        if (host_len == 0 || !uri_chars_ok(s, host_len, URI_UNRESERVED | URI_SUB_DELIM))
            return false;
    }
    if (host_len == len)
        return true;
    /* ":" port, 1 to 5 digits, at most 65535 */
    const char *port = s + host_len + 1;
    size_t port_len = len - host_len - 1;
    if (s[host_len] != ':' || port_len == 0 || port_len > 5)
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < port_len; i++) {
        if (port[i] < '0' || port[i] > '9')
            return false;
        v = v * 10 + (unsigned)(port[i] - '0');
    }
    return v <= 65535;
}

int http_absolute_target_parse(const char *s, size_t len, struct http_absolute_target *t)
{
    size_t scheme_len;
    if (len >= SY_STRLEN("http://") && strncasecmp(s, SY_STRLIT("http://")) == 0)
        scheme_len = SY_STRLEN("http");
    else if (len >= SY_STRLEN("https://") && strncasecmp(s, SY_STRLIT("https://")) == 0)
        scheme_len = SY_STRLEN("https");
    else
        return SY_EPROTO;
    size_t a = scheme_len + SY_STRLEN("://"), e = a;
    while (e < len && s[e] != '/' && s[e] != '?')
        e++;
    t->authority = s + a;
    t->authority_len = e - a;
    t->rest = s + e;
    t->rest_len = len - e;
    if (!http_authority_is_valid(t->authority, t->authority_len) ||
        !uri_chars_ok(t->rest, t->rest_len, PATH_CHARS))
        return SY_EPROTO;
    return 0;
}

bool http_target_is_valid(const char *s, size_t len)
{
    struct http_absolute_target t;
    if (len > 0 && s[0] == '/')
        return http_path_is_valid(s, len);
    if (len == 1 && s[0] == '*')
        return true;
    return http_absolute_target_parse(s, len, &t) == 0;
}

void http_lower(char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            s[i] = (char)(s[i] + 32);
}

const char *http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}
