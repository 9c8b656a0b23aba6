/*
 * strlit.h — a string literal as pointer and length (h2o's H2O_STRLIT,
 * nginx's ngx_string), so no length is ever counted by hand:
 *
 *   http_headers_get(&h->headers, SY_STRLIT("grpc-status"));
 *
 * Only for literals: sizeof of a pointer would be wrong, and the
 * `"" s ""` concatenation makes anything else a compile error.
 */
#ifndef SY_STRLIT_H
#define SY_STRLIT_H

#define SY_STRLIT(s) ("" s ""), (sizeof(s) - 1)

/* The length alone. */
#define SY_STRLEN(s) (sizeof("" s "") - 1)

#endif
