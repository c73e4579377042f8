/* bf16.h: bfloat16 as the upper 16 bits of a float, stored as uint16_t (the GPU's bf16 weight
   shadows and GEMM inputs; the generated kernels of build/gen/train_kernels.c store with it).

   poa_bf16_from_float rounds to nearest, ties to even, on the float's bit pattern:
     bits += 0x7fff + ((bits >> 16) & 1), keep the upper half
   (overflow past the largest bf16 gives infinity, as it should); a NaN keeps its sign and upper
   payload and is made quiet (bit 6 of the bf16 set) so that it cannot round to infinity (what
   __float2bfloat16_rn does). The CUDA kernels (templates/train_prelude.cu.tmpl, poa_bf16_round;
   templates/vit_glue.cu.tmpl, poa_glue_to_bf16) do the same bit operations, so C and CUDA give
   the same bits. bf16 -> float is exact. In the fp64 build a double is first rounded to float. */
#ifndef POA_BF16_H
#define POA_BF16_H

#include <stdint.h>
#include <string.h>

static inline uint16_t poa_bf16_from_float(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static inline float poa_bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* x rounded to the nearest bf16, as a float. */
static inline float poa_bf16_round(float x) { return poa_bf16_to_float(poa_bf16_from_float(x)); }

#define poa_bf16_from_real(x) poa_bf16_from_float((float)(x))

#endif
