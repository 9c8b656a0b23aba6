/* access_log.c — see access_log.h. */
#include "exchange/access_log.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "runtime.h"
#include "config/config-t.h"
#include "core/parse.h"
#include "core/worker.h"

static const char *const flag_names[] = {"UT", "UF", "UR", "URX", "FI", "NR", "UH",
                                         "DC", "UP", "LR", "SI", "UO",  "DT", "URO"};

void access_log_flags(unsigned flags, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < sizeof flag_names / sizeof flag_names[0]; i++) {
        if (!(flags & (1u << i)))
            continue;
        int m = snprintf(out + n, cap - n, "%s%s", n ? "," : "", flag_names[i]);
        if (m < 0 || (size_t)m >= cap - n)
            break;
        n += (size_t)m;
    }
    if (n == 0)
        snprintf(out, cap, "-");
}

/* Append `s` (len bytes) as a JSON string body, escaped, bounded by `cap`. */
static size_t json_escape(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    for (size_t i = 0; i < len && n + 7 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            out[n++] = '\\';
            out[n++] = 'u';
            out[n++] = '0';
            out[n++] = '0';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        } else {
            out[n++] = (char)c;
        }
    }
    return n;
}

static const char *protocol_str(enum http_version v)
{
    return v == HTTP_2 ? "HTTP/2" : v == HTTP_10 ? "HTTP/1.0" : "HTTP/1.1";
}

/* Escaped, NUL-terminated copy of a request field (truncated to fit). */
static void esc(char *buf, size_t cap, const char *s, size_t len)
{
    size_t n = s ? json_escape(buf, cap, s, len) : 0;
    buf[n] = '\0';
}

void access_log_write(const struct exchange *ex)
{
    int fd = ex->w->access_log_fd;
    if (fd < 0 || !ex->rt->cfg->access_log.enabled)
        return;
    char when[96], client[64], method[32], authority[256], path[1024], flags[64];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(tv.tv_usec / 1000));
    sy_sockaddr_ip(&ex->client_addr, client, sizeof client);
    esc(method, sizeof method, ex->req.method, ex->req.method_len);
    esc(authority, sizeof authority, ex->req.authority, ex->req.authority_len);
    esc(path, sizeof path, ex->req.path, ex->req.path_len);
    access_log_flags(ex->flags, flags, sizeof flags);
    char tries[300];
    esc(tries, sizeof tries, ex->tries_log, strlen(ex->tries_log));
    double ms = (double)(sy_now_us() - ex->start_us) / 1000.0;
    const char *svc = ex->service ? ex->service->name : "";
    char line[3072];
    int n;
    if (ex->rt->cfg->access_log.format == CFG_LOG_TEXT) {
        n = snprintf(line, sizeof line,
                     "%s %s \"%s %s %s\" %d %llu %llu %.3fms %s %s %s attempts=%u flags=%s\n", when,
                     client, method, path, protocol_str(ex->req.version), ex->status,
                     (unsigned long long)ex->bytes_in, (unsigned long long)ex->bytes_out, ms,
                     svc[0] ? svc : "-", ex->endpoint[0] ? ex->endpoint : "-", ex->request_id,
                     ex->attempts, flags);
    } else {
        n = snprintf(line, sizeof line,
                     "{\"time\":\"%s\",\"client\":\"%s\",\"listener\":\"%s\",\"method\":\"%s\","
                     "\"authority\":\"%s\",\"path\":\"%s\",\"protocol\":\"%s\",\"status\":%d,"
                     "\"bytes_in\":%llu,\"bytes_out\":%llu,\"duration_ms\":%.3f,"
                     "\"backend_service\":\"%s\",\"endpoint\":\"%s\",\"request_id\":\"%s\","
                     "\"attempts\":%u,\"tries\":\"%s\",\"response_flags\":\"%s\"}\n",
                     when, client, ex->listener->name, method, authority, path,
                     protocol_str(ex->req.version), ex->status, (unsigned long long)ex->bytes_in,
                     (unsigned long long)ex->bytes_out, ms, svc, ex->endpoint, ex->request_id,
                     ex->attempts, tries, flags);
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    ssize_t wr = write(fd, line, (size_t)n);
    (void)wr;
}
