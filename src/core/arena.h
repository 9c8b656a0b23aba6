/*
 * arena.h — a bump allocator for one exchange (or one connection's head).
 * Allocations are freed all at once by arena_free(). The first block is
 * embedded so that a small exchange makes a single malloc; further blocks are
 * added on demand up to `limit` bytes in total (then allocation fails, which
 * callers turn into 431/400/500 as appropriate).
 *
 * Cleanups (nginx's pool cleanup handlers, STYLE rule 5): whoever acquires
 * something the arena's owner must give back when it ends — a timer, a
 * circuit-breaker slot, a buffer, a reference — registers a cleanup right
 * then. The registration record lives in the arena (no malloc of its own)
 * and is also a handle: the resource may be released early through it
 * (arena_cleanup_run: it then never runs again) or the registration dropped
 * (arena_cleanup_cancel). There are two moments:
 *
 *   arena_on_cleanup  runs at arena_run_cleanups(), the owner's end (for an
 *                     exchange: exchange_finish), or at arena_free if that
 *                     comes first;
 *   arena_on_free     runs only at arena_free(), for what must outlive the
 *                     owner's end by a loop turn (for an exchange: its
 *                     runtime reference and its body buffers, used until the
 *                     deferred free).
 *
 * Both run newest first. Not thread-safe (one arena belongs to one thread).
 */
#ifndef SY_ARENA_H
#define SY_ARENA_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes beyond `limit` that cleanup records may use: a full arena (a huge
 * header block) still takes about 30 registrations. */
#define ARENA_CLEANUP_RESERVE 1024

struct arena_block;
struct arena_cleanup;

/* A cleanup: release what `arg` names. Must not free the arena. */
typedef void (*arena_cleanup_fn)(void *arg);

struct arena {
    struct arena_block *head;       /* current block (newest first) */
    size_t used_total;              /* bytes handed out, for the limit */
    size_t limit;                   /* cap on used_total (cleanup records: + reserve) */
    bool limit_hit;                 /* an allocation was refused because of `limit` */
    struct arena_cleanup *cleanups; /* registrations, newest first */
};

/* Initialise an empty arena that will hand out at most `limit` bytes. */
void arena_init(struct arena *a, size_t limit);

/*
 * Same, with a first block carved from caller-owned memory `buf` of `size`
 * bytes (aligned like malloc's): small exchanges then make no allocation of
 * their own. The caller frees `buf`, after arena_free.
 */
void arena_init_buf(struct arena *a, size_t limit, void *buf, size_t size);

/* Allocate `n` bytes aligned to 16; NULL when over the limit or out of memory. */
void *arena_alloc(struct arena *a, size_t n);

/* Copy `n` bytes into the arena, NUL-terminated; NULL on failure. */
char *arena_strndup(struct arena *a, const char *s, size_t n);

/*
 * Let `extra` more bytes be allocated, past the limit if need be: what
 * filled the arena (a huge request head) must not keep its owner from
 * answering (the exchange's local reply takes a few hundred bytes of header
 * fields in the downstream codec).
 */
void arena_grant(struct arena *a, size_t extra);

/*
 * Register fn(arg) to run at arena_run_cleanups() (or arena_free()). Returns
 * the registration, or NULL when no memory is left for its 32-byte record
 * (only a failing malloc, thanks to ARENA_CLEANUP_RESERVE): nothing was
 * registered, and the caller releases its resource itself.
 */
struct arena_cleanup *arena_on_cleanup(struct arena *a, arena_cleanup_fn fn, void *arg);

/* Register fn(arg) to run only at arena_free(). NULL as above. */
struct arena_cleanup *arena_on_free(struct arena *a, arena_cleanup_fn fn, void *arg);

/*
 * Run a registration now (the resource is released early); it never runs
 * again, so a later arena_run_cleanups cannot release it twice. A no-op for
 * NULL or for one that already ran or was cancelled. The cleanup may itself
 * run or cancel other registrations.
 */
void arena_cleanup_run(struct arena_cleanup *c);

/* Drop a registration without running it (its resource went another way). NULL: no-op. */
void arena_cleanup_cancel(struct arena_cleanup *c);

/*
 * Run every pending arena_on_cleanup registration, newest first (the
 * arena_on_free ones wait for arena_free). One registered by a cleanup runs
 * too, after those that were pending. The records stay valid until
 * arena_free, so handles kept by the owner may still be passed to
 * arena_cleanup_run/_cancel (as no-ops).
 */
void arena_run_cleanups(struct arena *a);

/* Run every pending registration (both kinds), then release every block; the
 * arena may be reused after arena_init. */
void arena_free(struct arena *a);

#endif
