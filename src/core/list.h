/*
 * list.h — an intrusive, circular, doubly-linked list (nginx's ngx_queue_t,
 * h2o's h2o_linklist_t). An object that can be on a list embeds a
 * `struct sy_link`; the list itself is a `struct sy_link` used as the head.
 *
 *   struct conn { ...; struct sy_link link; };
 *   struct sy_link conns;            sy_list_init(&conns);
 *   sy_list_insert_tail(&conns, &c->link);
 *   for (struct sy_link *l = conns.next, *nx; l != &conns; l = nx) {
 *       nx = l->next;                                  // safe to unlink l
 *       struct conn *c = SY_CONTAINER_OF(l, struct conn, link);
 *   }
 *   sy_list_unlink(&c->link);        // a no-op when c is on no list
 *
 * A link that is on no list has next == prev == NULL (zero-initialised, or
 * after sy_list_unlink), so "is it linked?" needs no separate flag.
 * No allocation; not thread-safe (one list belongs to one thread).
 */
#ifndef SY_LIST_H
#define SY_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct sy_link {
    struct sy_link *prev, *next;
};

/* The object of type `type` whose member `member` is at `ptr`. */
#define SY_CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* An empty list head. */
static inline void sy_list_init(struct sy_link *head)
{
    head->prev = head->next = head;
}

static inline bool sy_list_empty(const struct sy_link *head)
{
    return head->next == head;
}

/* Is `l` on a list (as an element; a head is always "linked" to itself)? */
static inline bool sy_link_is_linked(const struct sy_link *l)
{
    return l->next != NULL;
}

static inline void sy_list_insert_after_(struct sy_link *pos, struct sy_link *l)
{
    l->prev = pos;
    l->next = pos->next;
    pos->next->prev = l;
    pos->next = l;
}

/* Add `l` (on no list) first / last. */
static inline void sy_list_insert_head(struct sy_link *head, struct sy_link *l)
{
    sy_list_insert_after_(head, l);
}

static inline void sy_list_insert_tail(struct sy_link *head, struct sy_link *l)
{
    sy_list_insert_after_(head->prev, l);
}

/* Take `l` off its list; a no-op when it is on none. */
static inline void sy_list_unlink(struct sy_link *l)
{
    if (!l->next)
        return;
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->next = l->prev = NULL;
}

/* The first element, or NULL when the list is empty. */
static inline struct sy_link *sy_list_first(const struct sy_link *head)
{
    return head->next == head ? NULL : head->next;
}

/* Move every element of `from` before those of `to`, in order; `from` is left empty. */
static inline void sy_list_splice_head(struct sy_link *to, struct sy_link *from)
{
    if (sy_list_empty(from))
        return;
    from->prev->next = to->next;
    to->next->prev = from->prev;
    from->next->prev = to;
    to->next = from->next;
    sy_list_init(from);
}

/* Move every element of `from` after those of `to`, in order; `from` is left empty. */
static inline void sy_list_splice_tail(struct sy_link *to, struct sy_link *from)
{
    if (sy_list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    sy_list_init(from);
}

#endif
