/*
 * rand.h — the one PRNG: xorshift64* (Vigna). Fast, not cryptographic; for
 * load balancing, jitter, sampling and weighted splits. One state per
 * thread (a worker, the health checker); never shared between threads.
 */
#ifndef SY_RAND_H
#define SY_RAND_H

#include <stdint.h>

/* A state seeded from `seed` (any value; 0 is replaced, xorshift needs bits). */
static inline uint64_t sy_rand_seed(uint64_t seed)
{
    return seed ? seed : 0x9E3779B97F4A7C15ull;
}

/* The next 64 random bits; advances *state. */
static inline uint64_t sy_rand_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

#endif
