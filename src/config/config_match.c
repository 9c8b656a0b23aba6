/*
 * config_match.c — a route rule's match_rules: path condition (prefix, full
 * path or PCRE2 regex), header_matches and query_parameter_matches.
 */
#include <string.h>

#include "config/config_loader.h"

static const char *const path_kinds[] = {"prefix_match", "full_path_match", "regex_match", NULL};
/* Indexed so that kind = index + 1 (enum cfg_header_match_kind). */
static const char *const header_kinds[] = {"exact_match", "prefix_match",  "suffix_match",
                                           "regex_match", "present_match", "range_match",
                                           NULL};
/* Indexed so that kind = index + 1 (enum cfg_query_match_kind). */
static const char *const query_kinds[] = {"present_match", "exact_match", "regex_match", NULL};

/*
 * Which one of the keys `kinds` the mapping has: its index, or -1 when none
 * (reported if `required`) or several (reported at the later key).
 */
static int one_of(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                  const char *const *kinds, bool required)
{
    char list[256];
    size_t len = 0;
    int found = -1, count = 0;
    yaml_node_t *later = NULL;

    list[0] = '\0';
    for (int i = 0; kinds[i]; i++) {
        yaml_node_t *k = yfind_key(ld, n, kinds[i]);
        int w = snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "", kinds[i]);
        if (w > 0 && (size_t)w < sizeof(list) - len)
            len += (size_t)w;
        if (!k)
            continue;
        count++;
        if (found < 0)
            found = i;
        later = k;
    }
    if (count > 1) {
        cfg_error(ld, ymark(later), at, "only one of %s is allowed", list);
        return -1;
    }
    if (count == 0 && required)
        cfg_error(ld, ymark(n), at, "missing one of %s", list);
    return found;
}

static void parse_range(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                        struct cfg_header_match *hm)
{
    static const char *const keys[] = {"start", "end", NULL};
    struct ypath sub = {at, "range_match", 0};
    yaml_node_t *r = ychild_map(ld, &sub, n, keys);
    int a, b;

    if (!r) {
        if (ynull(yfind(ld, n, "range_match")))
            cfg_error(ld, ymark(yfind(ld, n, "range_match")), &sub, "expected a mapping");
        return;
    }
    a = yget_i64(ld, &sub, r, "start", INT64_MIN, INT64_MAX, &hm->range_start);
    b = yget_i64(ld, &sub, r, "end", INT64_MIN, INT64_MAX, &hm->range_end);
    if (a == 0)
        ymissing(ld, &sub, r, "start");
    if (b == 0)
        ymissing(ld, &sub, r, "end");
    if (a == 1 && b == 1 && hm->range_start >= hm->range_end)
        cfg_error(ld, ymark(r), &sub, "range_match needs start < end");
}

static void parse_header_match(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                               struct cfg_header_match *hm)
{
    static const char *const keys[] = {"header_name",  "exact_match",  "prefix_match",
                                       "suffix_match", "regex_match",  "present_match",
                                       "range_match",  "invert_match", NULL};
    int which;

    hm->mark = ymark(n);
    if (!ymap_check(ld, at, n, keys))
        return;
    if (yget_header_name(ld, at, n, "header_name", true, &hm->header_name) == 0)
        ymissing(ld, at, n, "header_name");
    yget_bool(ld, at, n, "invert_match", &hm->invert_match);
    which = one_of(ld, at, n, header_kinds, true);
    if (which < 0)
        return;
    hm->kind = (enum cfg_header_match_kind)(which + 1);
    switch (hm->kind) {
    case CFG_HDR_EXACT:
    case CFG_HDR_PREFIX:
    case CFG_HDR_SUFFIX: yget_str(ld, at, n, header_kinds[which], &hm->value); break;
    case CFG_HDR_REGEX: yget_regex(ld, at, n, "regex_match", &hm->value, &hm->regex); break;
    case CFG_HDR_PRESENT: yget_bool(ld, at, n, "present_match", &hm->present); break;
    case CFG_HDR_RANGE: parse_range(ld, at, n, hm); break;
    }
}

static void parse_query_match(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                              struct cfg_query_match *qm)
{
    static const char *const keys[] = {"name", "present_match", "exact_match", "regex_match", NULL};
    int which;

    qm->mark = ymark(n);
    if (!ymap_check(ld, at, n, keys))
        return;
    if (yget_name(ld, at, n, "name", &qm->name) == 0)
        ymissing(ld, at, n, "name");
    which = one_of(ld, at, n, query_kinds, true);
    if (which < 0)
        return;
    qm->kind = (enum cfg_query_match_kind)(which + 1);
    switch (qm->kind) {
    case CFG_QUERY_PRESENT: yget_bool(ld, at, n, "present_match", &qm->present); break;
    case CFG_QUERY_EXACT: yget_str(ld, at, n, "exact_match", &qm->value); break;
    case CFG_QUERY_REGEX: yget_regex(ld, at, n, "regex_match", &qm->value, &qm->regex); break;
    }
}

/* header_matches / query_parameter_matches: a sequence of mappings. */
static void parse_match_lists(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                              struct cfg_match_rule *mr)
{
    struct ypath hsub = {at, "header_matches", 0}, qsub = {at, "query_parameter_matches", 0};
    yaml_node_t *hseq = ychild_seq(ld, &hsub, n), *qseq = ychild_seq(ld, &qsub, n);
    size_t nh = yseq_len(hseq), nq = yseq_len(qseq);

    mr->header_matches = cfg_calloc_array(ld, nh, sizeof(*mr->header_matches));
    mr->query_parameter_matches = cfg_calloc_array(ld, nq, sizeof(*mr->query_parameter_matches));
    if ((nh && !mr->header_matches) || (nq && !mr->query_parameter_matches))
        return;
    mr->n_header_matches = nh;
    mr->n_query_parameter_matches = nq;
    for (size_t i = 0; i < nh; i++) {
        struct ypath item = {&hsub, NULL, i};
        parse_header_match(ld, &item, yseq_item(ld, hseq, i), &mr->header_matches[i]);
    }
    for (size_t i = 0; i < nq; i++) {
        struct ypath item = {&qsub, NULL, i};
        parse_query_match(ld, &item, yseq_item(ld, qseq, i), &mr->query_parameter_matches[i]);
    }
}

static void parse_match_rule(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                             struct cfg_match_rule *mr)
{
    static const char *const keys[] = {
        "prefix_match",   "full_path_match",         "regex_match", "ignore_case",
        "header_matches", "query_parameter_matches", NULL};
    int which;

    mr->mark = ymark(n);
    if (!ymap_check(ld, at, n, keys))
        return;
    yget_bool(ld, at, n, "ignore_case", &mr->ignore_case);
    which = one_of(ld, at, n, path_kinds, false);
    if (which == 2) {
        if (yget_regex(ld, at, n, "regex_match", &mr->path, &mr->path_regex) == 1)
            mr->path_kind = CFG_PATH_REGEX;
    } else if (which >= 0 && yget_name(ld, at, n, path_kinds[which], &mr->path) == 1) {
        mr->path_kind = which == 0 ? CFG_PATH_PREFIX : CFG_PATH_FULL;
        if (mr->path[0] != '/')
            cfg_error(ld, ymark(yfind(ld, n, path_kinds[which])), at, "%s must start with '/'",
                      path_kinds[which]);
    }
    parse_match_lists(ld, at, n, mr);
}

/*
 * A rule without match_rules (or with an empty list) matches every request:
 * it gets one match rule with no conditions, so readers need no special case.
 */
void cfg_parse_match_rules(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *rule,
                           struct cfg_route_rule *rr)
{
    struct ypath sub = {at, "match_rules", 0};
    yaml_node_t *seq = ychild_seq(ld, &sub, rule);
    size_t n = yseq_len(seq);

    rr->match_rules = cfg_calloc_array(ld, n ? n : 1, sizeof(*rr->match_rules));
    if (!rr->match_rules)
        return;
    rr->n_match_rules = n ? n : 1;
    rr->match_rules[0].mark = ymark(rule);
    for (size_t i = 0; i < n; i++) {
        struct ypath item = {&sub, NULL, i};
        parse_match_rule(ld, &item, yseq_item(ld, seq, i), &rr->match_rules[i]);
    }
}
