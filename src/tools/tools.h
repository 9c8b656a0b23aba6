/*
 * tools.h — switchyard's offline commands, run instead of the proxy when
 * argv[1] names one (main.c). Neither needs a running proxy or backend:
 * both load configs with config_load, compile their url maps with
 * url_map_compile and match with the proxy's own matcher
 * (url_map_match_traced). Reference: docs/tools.md.
 *
 *   switchyard explain -c FILE [-X METHOD] [-H 'name: value']...
 *                      [--client-ip IP] [--listener NAME] [--json] URL
 *   switchyard diff OLD.yaml NEW.yaml --requests FILE [--fail-on-change]
 *                   [--json] [--max-groups N] [--listener NAME]
 */
#ifndef SY_TOOLS_H
#define SY_TOOLS_H

/* Exit statuses of `switchyard explain` (docs/tools.md). */
enum explain_exit {
    EXPLAIN_ROUTED = 0,      /* forwarded to a backend service (or a weighted split) */
    EXPLAIN_ERROR = 1,       /* bad usage, a config with errors, a URL that is not http(s) */
    EXPLAIN_REDIRECT = 3,    /* answered by the proxy with a url_redirect */
    EXPLAIN_BAD_REQUEST = 4, /* answered 400 by the proxy (a path that does not normalize) */
    EXPLAIN_NO_ROUTE = 5,    /* answered by the proxy otherwise (404 no route) */
};

/* Exit statuses of `switchyard diff` (docs/tools.md). */
enum diff_exit {
    DIFF_OK = 0,      /* done: nothing changed, or changes without --fail-on-change */
    DIFF_ERROR = 1,   /* bad usage, a config with errors, an unreadable requests file */
    DIFF_CHANGED = 2, /* --fail-on-change and at least one request changed outcome */
};

/* `switchyard explain ...`: argv[0] is "explain". Returns the exit status. */
int tools_explain_main(int argc, char **argv);

/* `switchyard diff ...`: argv[0] is "diff". Returns the exit status. */
int tools_diff_main(int argc, char **argv);

#endif
