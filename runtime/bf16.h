/* bf16.h: bfloat16 on the host, bit for bit as the device does it: a bf16 is the high 16 bits
   of an IEEE fp32; float -> bf16 rounds to nearest, ties to even, and keeps NaN a (quiet) NaN
   (what __float2bfloat16_rn does); bf16 -> float is exact. */
#ifndef POA_BF16_H
#define POA_BF16_H

#include <stdint.h>
#include <string.h>

static inline uint16_t poa_bf16_from_float(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float poa_float_from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* x rounded to the nearest bf16, as a float. */
static inline float poa_bf16_round(float x) { return poa_float_from_bf16(poa_bf16_from_float(x)); }

#endif
