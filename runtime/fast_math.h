/* fast_math.h: float exp and erf that vectorise (the fp32 build's GELU, softmax and losses).

   libm's expf / erff are calls the compiler cannot vectorise (without -ffast-math), so a loop
   calling them runs one value at a time. These are inline, branch-free float code: inside an
   `omp simd` loop they become SSE/AVX code. Selections are bit masks built from quiet
   comparisons (isgreater, isless), because GCC will not if-convert a trapping float compare.

   poa_fast_expf(x) = e^x. x = n ln2 + r with n = round(x / ln2) (the 1.5 * 2^23 shifter),
   r = x - n ln2 in two steps (Cody-Waite: ln2 = 0.693359375 - 2.12194440e-4), |r| <= ln2 / 2;
   e^r = 1 + r + r^2 p(r), p of degree 5 (Cephes expf); 2^n = 2^(n/2) 2^(n - n/2), two exact
   power-of-two factors, so overflow gives +inf and underflow gives denormals, then 0. x is
   first clamped to [-104, 89] (beyond: 0 and +inf, as expf); NaN gives NaN.
   Measured against double exp over every float in [-110, 90]: relative error <= 8.2e-8
   (1.4 ulp; libm expf: 6.0e-8) where e^x is a normal float; denormal results within one
   denormal step of expf.

   poa_fast_erff(a) = erf(a) (Norbert Juffa's float erf, evaluated without fma):
     |a| <= 0.927734375:  erf(a) = a + a q(a^2), q of degree 5;
     otherwise:            erf(a) = sign(a) (1 - e^(r(|a|))), r a polynomial of degree 8 with
                           r(t) -> -inf as t grows (e^r computed by poa_fast_expf).
   Both are computed and one is selected. Measured against double erf over every float:
   absolute error <= 7.1e-8 (libm erff: 5.8e-8), relative error <= 1.0e-7 for |a| >= 1e-37.

   The fp64 build (POA_FP64) does not use these: real.h maps real_fast_exp / real_fast_erf to
   libm's exp / erf there, so the gradient checks keep libm's double accuracy. */
#ifndef POA_FAST_MATH_H
#define POA_FAST_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define POA_FAST_INLINE static inline __attribute__((always_inline))
#else
#define POA_FAST_INLINE static inline
#endif

/* POA_CPU_CLONES before a function: GCC compiles it for x86-64 (the build's baseline),
   x86-64-v3 (AVX2, 8 floats a vector) and x86-64-v4 (AVX-512, 16), and the loader picks the
   widest this CPU runs (ifunc). The vectorised loops of these functions run 4.5x (v3) and 7x
   (v4) faster than the baseline's SSE (measured: GELU with poa_fast_erff, 1.67M floats, 8.1
   -> 1.8 -> 1.1 ns a value). Use it only for code whose every value is computed alone by the
   same operations in every version (no reduction, whose order would follow the vector width;
   C11 mode does not contract a * b + c into fma), so all versions give the same bits. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define POA_CPU_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define POA_CPU_CLONES
#endif

POA_FAST_INLINE float poa_bits_to_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

POA_FAST_INLINE uint32_t poa_float_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* mask ? a : b, mask all ones or all zeros (no branch). */
POA_FAST_INLINE float poa_select_float(uint32_t mask, float a, float b) {
    return poa_bits_to_float((poa_float_to_bits(a) & mask) | (poa_float_to_bits(b) & ~mask));
}

POA_FAST_INLINE float poa_fast_expf(float x) {
    const uint32_t above = 0u - (uint32_t)isgreater(x, 89.0f);
    const uint32_t below = 0u - (uint32_t)isless(x, -104.0f);
    const float xc = poa_select_float(above, 89.0f, poa_select_float(below, -104.0f, x));
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const float t = xc * 1.44269504088896341f + shifter;
    const float n = t - shifter;
    const uint32_t ni = poa_float_to_bits(t) - 0x4B400000u; /* n as an integer (mod 2^32) */
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float y = p * (r * r) + r + 1.0f;
    const uint32_t n1 = (uint32_t)((int32_t)ni >> 1), n2 = ni - n1; /* n = n1 + n2 */
    return y * poa_bits_to_float((n1 + 127u) << 23) * poa_bits_to_float((n2 + 127u) << 23);
}

POA_FAST_INLINE float poa_fast_erff(float a) {
    const float t = fabsf(a), s = a * a;
    float r = -1.72853470e-5f * t + 3.83197126e-4f;
    const float u = -3.88396438e-3f * t + 2.42546219e-2f;
    r = r * s + u;
    r = r * t + -1.06777877e-1f;
    r = r * t + -6.34846687e-1f;
    r = r * t + -1.28717512e-1f;
    r = r * t - t;
    const float large = copysignf(1.0f - poa_fast_expf(r), a);
    float q = -5.96761703e-4f;
    q = q * s + 4.99119423e-3f;
    q = q * s + -2.67681349e-2f;
    q = q * s + 1.12819925e-1f;
    q = q * s + -3.76125336e-1f;
    q = q * s + 1.28379166e-1f;
    const float small = q * a + a;
    return poa_select_float(0u - (uint32_t)isgreater(t, 0.927734375f), large, small);
}

#endif
