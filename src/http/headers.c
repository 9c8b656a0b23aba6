/* headers.c — see headers.h. */
#include "http/headers.h"

#include <string.h>
#include <strings.h>

#include "core/errors.h"

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
    uint32_t j = 0;
    for (uint32_t i = 0; i < h->n; i++)
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

/* Remove the fields a Connection header names (each comma-separated token). */
static void strip_connection_tokens(struct http_headers *h, const struct http_header *conn)
{
    size_t pos = 0, start, n;
    while (list_next(conn->value, conn->value_len, &pos, &start, &n)) {
        char name[64];
        if (n >= sizeof name)
            continue;
        memcpy(name, conn->value + start, n);
        http_lower(name, n);
        /* Never let a client drop end-to-end fields that framing needs. */
        if (n != 2 || memcmp(name, "te", 2) != 0)
            http_headers_remove(h, name, n);
    }
}

void http_headers_strip_hop_by_hop(struct http_headers *h, bool keep_te_trailers)
{
    for (;;) {
        const struct http_header *c = http_headers_get(h, "connection", 10);
        if (!c)
            break;
        struct http_header copy = *c;
        http_headers_remove(h, "connection", 10);
        strip_connection_tokens(h, &copy);
    }
    static const char *const hop[] = {"keep-alive", "proxy-connection", "transfer-encoding",
                                      "upgrade", "http2-settings"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        http_headers_remove(h, hop[i], strlen(hop[i]));
    const struct http_header *te = http_headers_get(h, "te", 2);
    bool trailers = te && http_list_has_token(te->value, te->value_len, "trailers");
    http_headers_remove(h, "te", 2);
    if (keep_te_trailers && trailers)
        http_headers_add(h, NULL, "te", 2, "trailers", 8); /* fits: we just removed one */
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
