/* data_random.h: a counter-based random stream for the data pipeline. Every draw is a
   hash of (seed, rank, step, sample, crop, purpose) and a draw counter, so the numbers a
   crop sees depend on those only, never on which thread runs it or when. The hash is
   SplitMix64's finaliser applied to a running combination of the keys. */
#ifndef POA_DATA_RANDOM_H
#define POA_DATA_RANDOM_H

#include <stdint.h>

#include "random.h" /* poa_mix64 */

typedef struct poa_rng {
    uint64_t key, counter;
} poa_rng;

/* A stream keyed by up to six numbers (unused ones 0). */
static inline poa_rng poa_rng_make(uint64_t seed, uint64_t rank, uint64_t step, uint64_t sample,
                                   uint64_t crop, uint64_t purpose) {
    uint64_t k = poa_mix64(seed + 0x9E3779B97F4A7C15ull);
    k = poa_mix64(k ^ (rank + 0x632BE59BD9B4E019ull));
    k = poa_mix64(k ^ (step + 0x85157AF5ull * 0x9E3779B97F4A7C15ull));
    k = poa_mix64(k ^ (sample * 0xD6E8FEB86659FD93ull + 1));
    k = poa_mix64(k ^ (crop * 0xA0761D6478BD642Full + 2));
    k = poa_mix64(k ^ (purpose * 0xE7037ED1A0B428DBull + 3));
    poa_rng r = { k, 0 };
    return r;
}

static inline uint64_t poa_rng_next(poa_rng *r) {
    return poa_mix64(r->key + 0x9E3779B97F4A7C15ull * ++r->counter);
}

/* Uniform double in [0, 1) with 53 random bits. */
static inline double poa_rng_uniform(poa_rng *r) {
    return (double)(poa_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static inline double poa_rng_range(poa_rng *r, double a, double b) {
    return a + (b - a) * poa_rng_uniform(r);
}

/* Uniform integer in [0, n) (n > 0), by rejection so that it has no bias. */
static inline uint64_t poa_rng_below(poa_rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do x = poa_rng_next(r); while (x >= limit);
    return x % n;
}

#endif
