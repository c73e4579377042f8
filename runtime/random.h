/* random.h: a counter-based generator: every draw is a pure function of
   (seed, stream, index), so results never depend on threads or call order. */
#ifndef POA_RANDOM_H
#define POA_RANDOM_H

#include <math.h>
#include <stdint.h>

/* SplitMix64's finaliser: a bijective 64-bit mix. */
static inline uint64_t poa_mix64(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double poa_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
    const uint64_t golden = 0x9e3779b97f4a7c15ull;
    uint64_t h = poa_mix64(poa_mix64((seed ^ poa_mix64(stream + golden)) + golden) + index * golden + golden);
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

/* Standard normal by Box-Muller on two uniforms of the same counter. */
static inline double poa_normal(uint64_t seed, uint64_t stream, uint64_t index) {
    double u1 = poa_uniform(seed, stream, 2 * index), u2 = poa_uniform(seed, stream, 2 * index + 1);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

#endif
