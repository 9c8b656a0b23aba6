/*
 * path_normalize.c — url_path_normalize(): the one canonical form of a
 * request path that the url map matches and the backend receives.
 *
 * Rules (docs/configuration.md copies them):
 *  N1. The path must start with "/" (origin-form); otherwise SY_EINVAL.
 *  N2. Percent-escapes: "%" must be followed by two hex digits, else
 *      SY_EINVAL ("%zz", "%2", a trailing "%"). An escape of an unreserved
 *      character (ALPHA DIGIT "-" "." "_" "~", RFC 3986 2.3) is decoded;
 *      every other escape is kept, with upper-case hex ("%2f" → "%2F").
 *      So "%2F" (/) and "%5C" (\) stay encoded and never separate segments.
 *  N3. Dot segments are removed as RFC 3986 5.2.4 does, after N2, so
 *      "/%2e%2e/admin" is "/admin". ".." at the root stays at the root
 *      ("/../a" → "/a"). A final "." or ".." leaves a trailing "/"
 *      ("/a/b/.." → "/a/").
 *  N4. With merge_slashes, runs of "/" collapse to one ("//admin" →
 *      "/admin"); without it empty segments are kept and ".." removes one
 *      of them, as RFC 3986 does.
 *  N5. Every other byte is copied unchanged: a literal "\" is an ordinary
 *      character (not a separator), and so are bytes >= 0x80. Case is kept.
 */
#include <string.h>

#include "core/errors.h"
#include "urlmap/urlmap.h"

static int hex_val(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/*
 * Rule N2 from in[0..n) into out (out may equal in: the write position never
 * passes the read position). Returns the decoded length or SY_EINVAL /
 * SY_ERANGE.
 */
static long decode_escapes(const char *in, size_t n, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t w = 0;
    for (size_t r = 0; r < n; r++) {
        unsigned char c = (unsigned char)in[r];
        if (c != '%') {
            if (w >= cap)
                return SY_ERANGE;
            out[w++] = (char)c;
            continue;
        }
        int hi = r + 2 < n ? hex_val((unsigned char)in[r + 1]) : -1;
        int lo = hi >= 0 ? hex_val((unsigned char)in[r + 2]) : -1;
        if (hi < 0 || lo < 0)
            return SY_EINVAL;
        unsigned char v = (unsigned char)(hi << 4 | lo);
        size_t need = is_unreserved(v) ? 1 : 3;
        if (w + need > cap)
            return SY_ERANGE;
        if (need == 1) {
            out[w++] = (char)v;
        } else {
            out[w++] = '%';
            out[w++] = hex[hi];
            out[w++] = hex[lo];
        }
        r += 2;
    }
    return (long)w;
}

/*
 * Rules N3 and N4 in place over buf[0..n), which starts with "/". The
 * output never outgrows the input: each segment written was read first,
 * with its leading "/". Returns the new length.
 */
static size_t remove_dot_segments(char *buf, size_t n, bool merge_slashes)
{
    size_t w = 0, r = 1; /* buf[0] is "/"; r is the start of a segment */
    for (;;) {
        const char *slash = memchr(buf + r, '/', n - r);
        size_t end = slash ? (size_t)(slash - buf) : n;
        size_t len = end - r;
        bool last = !slash;
        if (len == 1 && buf[r] == '.') {
            /* drop it */
        } else if (len == 2 && buf[r] == '.' && buf[r + 1] == '.') {
            while (w > 0 && buf[--w] != '/')
                ; /* pop the last output segment with its "/" */
        } else if (len == 0 && merge_slashes && !last) {
            /* "//": drop the empty segment */
        } else {
            buf[w++] = '/';
            memmove(buf + w, buf + r, len);
            w += len;
            last = false; /* the segment itself ends the path */
        }
        if (last) {
            buf[w++] = '/'; /* a final "." or ".." leaves a directory */
            return w;
        }
        if (!slash)
            return w;
        r = end + 1;
    }
}

int url_path_normalize(const char *in, size_t in_len, char *out, size_t cap, size_t *out_len,
                       bool merge_slashes)
{
    if (!in || in_len == 0 || in[0] != '/')
        return SY_EINVAL;
    long n = decode_escapes(in, in_len, out, cap);
    if (n < 0)
        return (int)n;
    *out_len = remove_dot_segments(out, (size_t)n, merge_slashes);
    return 0;
}
