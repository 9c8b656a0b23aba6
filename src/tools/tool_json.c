/*
 * tool_json.c — JSON for the tools: a writer for --json output and a reader
 * for access log lines (tools-int.h). The reader takes one line, bounded by
 * its caller, and nests at most JSON_IN_DEPTH deep; it allocates only the
 * strings it keeps, from the request's arena.
 */
#include <string.h>

#include "core/errors.h"
#include "core/strlit.h"
#include "tools/tools-int.h"

/* ---- writer -------------------------------------------------------------------- */

void json_out_escaped(FILE *f, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(f, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

void json_out_init(struct json_out *j, FILE *f)
{
    memset(j, 0, sizeof *j);
    j->f = f;
    j->first[0] = true;
}

/* The comma and "key": before a member or element. */
static void member(struct json_out *j, const char *key)
{
    if (!j->first[j->depth])
        fputc(',', j->f);
    j->first[j->depth] = false;
    if (key) {
        json_out_escaped(j->f, key, strlen(key));
        fputc(':', j->f);
    }
}

static void open_scope(struct json_out *j, const char *key, char c)
{
    member(j, key);
    fputc(c, j->f);
    if (j->depth + 1 < JSON_OUT_DEPTH)
        j->depth++;
    j->first[j->depth] = true;
}

void json_out_begin_object(struct json_out *j, const char *key)
{
    open_scope(j, key, '{');
}

void json_out_begin_array(struct json_out *j, const char *key)
{
    open_scope(j, key, '[');
}

void json_out_end(struct json_out *j, bool object)
{
    fputc(object ? '}' : ']', j->f);
    if (j->depth > 0)
        j->depth--;
}

void json_out_str(struct json_out *j, const char *key, const char *s, size_t n)
{
    member(j, key);
    json_out_escaped(j->f, s ? s : "", s ? n : 0);
}

void json_out_cstr(struct json_out *j, const char *key, const char *s)
{
    if (!s) {
        json_out_null(j, key);
        return;
    }
    json_out_str(j, key, s, strlen(s));
}

void json_out_u64(struct json_out *j, const char *key, uint64_t v)
{
    member(j, key);
    fprintf(j->f, "%llu", (unsigned long long)v);
}

void json_out_i64(struct json_out *j, const char *key, int64_t v)
{
    member(j, key);
    fprintf(j->f, "%lld", (long long)v);
}

void json_out_double(struct json_out *j, const char *key, double v)
{
    member(j, key);
    fprintf(j->f, "%.6g", v);
}

void json_out_bool(struct json_out *j, const char *key, bool v)
{
    member(j, key);
    fputs(v ? "true" : "false", j->f);
}

void json_out_null(struct json_out *j, const char *key)
{
    member(j, key);
    fputs("null", j->f);
}

/* ---- reader ------------------------------------------------------------------- */

/* How deep skipped values may nest. */
#define JSON_IN_DEPTH 8

struct json_in {
    const char *p, *end;
    struct arena *a;
    const char *why; /* the first error */
};

static bool fail(struct json_in *in, const char *why)
{
    if (!in->why)
        in->why = why;
    return false;
}

static void skip_ws(struct json_in *in)
{
    while (in->p < in->end && (*in->p == ' ' || *in->p == '\t' || *in->p == '\r' || *in->p == '\n'))
        in->p++;
}

static bool eat(struct json_in *in, char c)
{
    skip_ws(in);
    if (in->p < in->end && *in->p == c) {
        in->p++;
        return true;
    }
    return false;
}

static int hex4(const char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Code point `cp` as UTF-8 to out; returns the bytes written. */
static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* One \u escape at in->p (past the "\u"); appends its bytes to out + *n. */
static bool unicode_escape(struct json_in *in, char *out, size_t *n)
{
    int cp = in->end - in->p >= 4 ? hex4(in->p) : -1;
    if (cp < 0)
        return fail(in, "bad JSON: bad \\u escape");
    in->p += 4;
    if (cp < 0x100) { /* the access log's \u00XX: one byte, whatever it encodes */
        out[(*n)++] = (char)cp;
        return true;
    }
    if (cp >= 0xd800 && cp < 0xdc00) {
        int lo = in->end - in->p >= 6 && in->p[0] == '\\' && in->p[1] == 'u' ? hex4(in->p + 2) : -1;
        if (lo < 0xdc00 || lo > 0xdfff)
            return fail(in, "bad JSON: a lone surrogate in a \\u escape");
        in->p += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    } else if (cp >= 0xdc00 && cp < 0xe000) {
        return fail(in, "bad JSON: a lone surrogate in a \\u escape");
    }
    *n += put_utf8(out + *n, (unsigned)cp);
    return true;
}

/*
 * A string at in->p; decoded into the arena when `keep` (then *s, *len),
 * else only checked. Decoded bytes never outnumber the raw ones.
 */
static bool read_string(struct json_in *in, bool keep, const char **s, size_t *len)
{
    if (!eat(in, '"'))
        return fail(in, "bad JSON: a string was expected");
    const char *start = in->p;
    const char *close = start;
    while (close < in->end && *close != '"')
        close += *close == '\\' ? 2 : 1;
    if (close >= in->end)
        return fail(in, "bad JSON: an unterminated string");
    char *out = keep ? arena_alloc(in->a, (size_t)(close - start) + 1) : NULL;
    char scratch[4];
    size_t n = 0;
    if (keep && !out)
        return fail(in, "out of memory");
    while (in->p < close) {
        char c = *in->p++;
        if ((unsigned char)c < 0x20)
            return fail(in, "bad JSON: a control character in a string");
        if (c != '\\') {
            if (out)
                out[n] = c;
            n++;
            continue;
        }
        char e = *in->p++;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char dec[] = "\"\\/\b\f\n\r\t";
            if (out)
                out[n] = dec[simple - "\"\\/bfnrt"];
            n++;
        } else if (e == 'u') {
            size_t k = 0;
            if (!unicode_escape(in, out ? out + n : scratch, &k))
                return false;
            n += k;
        } else {
            return fail(in, "bad JSON: a bad escape in a string");
        }
    }
    in->p = close + 1;
    if (out) {
        out[n] = '\0';
        *s = out;
        *len = n;
    }
    return true;
}

static bool skip_value(struct json_in *in, int depth);

/* The rest of an object or array whose opening byte was eaten. */
static bool skip_container(struct json_in *in, int depth, char close)
{
    if (depth >= JSON_IN_DEPTH)
        return fail(in, "bad JSON: nested too deep");
    if (eat(in, close))
        return true;
    do {
        if (close == '}' && (!read_string(in, false, NULL, NULL) || !eat(in, ':')))
            return fail(in, "bad JSON: a member name and ':' were expected");
        if (!skip_value(in, depth + 1))
            return false;
    } while (eat(in, ','));
    return eat(in, close) || fail(in, "bad JSON: ',' or the end of a container was expected");
}

static bool skip_value(struct json_in *in, int depth)
{
    skip_ws(in);
    if (in->p >= in->end)
        return fail(in, "bad JSON: a value was expected");
    char c = *in->p;
    if (c == '"')
        return read_string(in, false, NULL, NULL);
    if (c == '{' || c == '[') {
        in->p++;
        return skip_container(in, depth, c == '{' ? '}' : ']');
    }
    static const char *const words[] = {"true", "false", "null"};
    for (size_t i = 0; i < 3; i++) {
        size_t wl = strlen(words[i]);
        if ((size_t)(in->end - in->p) >= wl && memcmp(in->p, words[i], wl) == 0) {
            in->p += wl;
            return true;
        }
    }
    const char *start = in->p;
    while (in->p < in->end && strchr("+-0123456789.eE", *in->p))
        in->p++;
    return in->p > start || fail(in, "bad JSON: a value was expected");
}

/* One header field from the log's "request_headers" object. */
static bool add_header(struct json_in *in, struct tool_request *rq, const char *name, size_t nl,
                       const char *v, size_t vl)
{
    char *line = arena_alloc(in->a, nl + 2 + vl);
    const char *why = NULL;
    if (!line)
        return fail(in, "out of memory");
    memcpy(line, name, nl);
    memcpy(line + nl, ": ", 2);
    memcpy(line + nl + 2, v, vl);
    if (tool_request_add_header(rq, in->a, line, nl + 2 + vl, &why) != 0)
        return fail(in, why ? why : "out of memory");
    return true;
}

/* "request_headers": {name: value, name: [value, ...]} */
static bool read_headers(struct json_in *in, struct tool_request *rq)
{
    if (!eat(in, '{'))
        return fail(in, "request_headers must be an object");
    if (eat(in, '}'))
        return true;
    do {
        const char *name, *v;
        size_t nl, vl;
        if (!read_string(in, true, &name, &nl) || !eat(in, ':'))
            return fail(in, "bad JSON: a member name and ':' were expected");
        if (eat(in, '[')) {
            if (eat(in, ']'))
                continue;
            do {
                if (!read_string(in, true, &v, &vl) || !add_header(in, rq, name, nl, v, vl))
                    return false;
            } while (eat(in, ','));
            if (!eat(in, ']'))
                return fail(in, "bad JSON: ',' or ']' was expected");
        } else if (!read_string(in, true, &v, &vl) || !add_header(in, rq, name, nl, v, vl)) {
            return false;
        }
    } while (eat(in, ','));
    return eat(in, '}') || fail(in, "bad JSON: ',' or '}' was expected");
}

/* Is in->p at the member value of a string key we keep? Sets *dst. */
static bool kept_string(const char *key, size_t kl, const char *want)
{
    return kl == strlen(want) && memcmp(key, want, kl) == 0;
}

static bool read_members(struct json_in *in, struct tool_request *rq, const char **path,
                         size_t *path_len)
{
    if (!eat(in, '{'))
        return fail(in, "bad JSON: not a JSON object");
    if (eat(in, '}'))
        return true;
    do {
        const char *key, *v = NULL;
        size_t kl, vl = 0;
        if (!read_string(in, true, &key, &kl) || !eat(in, ':'))
            return fail(in, "bad JSON: a member name and ':' were expected");
        bool method = kept_string(key, kl, "method"), auth = kept_string(key, kl, "authority");
        bool p = kept_string(key, kl, "path"), lis = kept_string(key, kl, "listener");
        if (kept_string(key, kl, "request_headers")) {
            if (!read_headers(in, rq))
                return false;
            continue;
        }
        if (!(method || auth || p || lis)) {
            if (!skip_value(in, 1))
                return false;
            continue;
        }
        if (!read_string(in, true, &v, &vl))
            return fail(in, "method, authority, path and listener must be strings");
        if (method) {
            rq->method = v;
            rq->method_len = vl;
        } else if (auth) {
            rq->authority = vl ? v : NULL;
            rq->authority_len = vl;
        } else if (p) {
            *path = v;
            *path_len = vl;
        } else {
            rq->listener = vl ? v : NULL;
        }
    } while (eat(in, ','));
    return eat(in, '}') || fail(in, "bad JSON: ',' or '}' was expected");
}

int tool_request_from_log(struct tool_request *rq, struct arena *a, const char *line, size_t len,
                          const char **why)
{
    struct json_in in = {.p = line, .end = line + len, .a = a};
    const char *path = NULL;
    size_t path_len = 0;
    rq->method = NULL;
    if (!read_members(&in, rq, &path, &path_len)) {
        *why = in.why;
        return SY_EINVAL;
    }
    skip_ws(&in);
    if (in.p != in.end) {
        *why = "text after the JSON object";
        return SY_EINVAL;
    }
    if (!rq->method || !rq->method_len || !path) {
        *why = "an access log line needs \"method\" and \"path\"";
        return SY_EINVAL;
    }
    if (!path_len || path[0] != '/') {
        *why = "\"path\" must start with \"/\"";
        return SY_EINVAL;
    }
    rq->target = path;
    rq->target_len = path_len;
    return 0;
}
