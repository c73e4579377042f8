/* test_fast_math.c: runtime/fast_math.h against libm in double, on every 613th float (in
   increasing order) of the ranges below, and its special values:
   - poa_fast_expf: relative error <= 1e-7 where e^x is a normal float (x in [-87.3, 88.7]);
     0 at and below -104 and at -inf, +inf at and above 89 and at +inf, NaN for NaN; results
     below the normal range within one denormal step of expf.
   - poa_fast_erff: absolute error <= 7.5e-8 everywhere, relative error <= 1.1e-7 where
     |a| >= 1e-37, odd, +-1 at +-inf, NaN for NaN.
   - An `omp simd` loop (vectorised) gives the same bits as the scalar calls, and the
     x86-64-v3 and x86-64-v4 versions of the GELU loop (POA_CPU_CLONES) the baseline's bits. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fast_math.h"

enum { STEP = 613 }; /* every STEP-th float of a range is checked */

/* Floats in increasing order <-> consecutive integers (the order of the bit patterns). */
static uint32_t key_of(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u >> 31 ? ~u : u | 0x80000000u;
}

static float float_of(uint32_t key) {
    uint32_t u = key >> 31 ? key & 0x7fffffffu : ~key;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* The float `step` floats above x. */
static float advance(float x, uint32_t step) { return float_of(key_of(x) + step); }

static void check_exp(void) {
    double worst = 0, worst_x = 0, worst_denormal = 0;
    long count = 0;
    for (float x = -110.0f; x <= 95.0f; x = advance(x, STEP), count++) {
        const float got = poa_fast_expf(x);
        const double want = exp((double)x);
        if (want >= FLT_MIN && want <= FLT_MAX) {
            double rel = fabs(got - want) / want;
            if (rel > worst) worst = rel, worst_x = x;
        } else if (want < FLT_MIN) {
            double steps = fabs((double)got - (double)expf(x)) / ldexp(1.0, -149);
            if (steps > worst_denormal) worst_denormal = steps;
        }
    }
    CHECK("fast expf: relative error <= 1e-7 over the normal range", worst <= 1e-7,
          "%.3g at %.9g", worst, worst_x);
    printf("  fast expf: %ld values, worst relative error %.3g at %.9g\n", count, worst, worst_x);
    CHECK("fast expf: denormal results within one step of expf", worst_denormal <= 1,
          "%.3g steps", worst_denormal);
    int special = poa_fast_expf(-104.0f) == 0 && poa_fast_expf(-1e30f) == 0 &&
                  poa_fast_expf(-INFINITY) == 0 && poa_fast_expf(89.0f) == INFINITY &&
                  poa_fast_expf(1e30f) == INFINITY && poa_fast_expf(INFINITY) == INFINITY &&
                  isnan(poa_fast_expf(NAN)) && poa_fast_expf(0.0f) == 1.0f;
    CHECK("fast expf: 0, +inf, NaN and e^0 = 1 at the special values", special, "wrong");
}

static void check_erf(void) {
    double worst_abs = 0, worst_rel = 0, abs_x = 0, rel_x = 0;
    int odd = 1;
    long count = 0;
    for (float a = -8.0f; a <= 8.0f; a = advance(a, STEP), count++) {
        const float got = poa_fast_erff(a);
        const double want = erf((double)a);
        const double err = fabs(got - want);
        if (err > worst_abs) worst_abs = err, abs_x = a;
        if (fabsf(a) >= 1e-37f && err / fabs(want) > worst_rel) worst_rel = err / fabs(want), rel_x = a;
        odd = odd && poa_fast_erff(-a) == -got;
    }
    CHECK("fast erff: absolute error <= 7.5e-8", worst_abs <= 7.5e-8, "%.3g at %.9g", worst_abs,
          abs_x);
    CHECK("fast erff: relative error <= 1.1e-7 for |a| >= 1e-37", worst_rel <= 1.1e-7,
          "%.3g at %.9g", worst_rel, rel_x);
    printf("  fast erff: %ld values, worst absolute error %.3g at %.9g, relative %.3g at %.9g\n",
           count, worst_abs, abs_x, worst_rel, rel_x);
    CHECK("fast erff: odd", odd, "erf(-a) != -erf(a) somewhere");
    int special = poa_fast_erff(INFINITY) == 1.0f && poa_fast_erff(-INFINITY) == -1.0f &&
                  poa_fast_erff(1e30f) == 1.0f && poa_fast_erff(0.0f) == 0.0f &&
                  isnan(poa_fast_erff(NAN));
    CHECK("fast erff: +-1 at +-inf, 0 at 0, NaN for NaN", special, "wrong");
}

/* The vectorised loops against the scalar calls, bit for bit. */
static void check_vector(void) {
    enum { N = 4099 };
    float *x = malloc(sizeof(float) * N), *e = malloc(sizeof(float) * N);
    float *f = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) x[i] = -100.0f + 190.0f * (float)i / N;
#pragma omp simd
    for (int i = 0; i < N; i++) {
        e[i] = poa_fast_expf(x[i]);
        f[i] = poa_fast_erff(x[i] * 0.05f);
    }
    int same = 1;
    for (int i = 0; i < N; i++) {
        volatile float xi = x[i]; /* keep this loop scalar */
        same = same && e[i] == poa_fast_expf(xi) && f[i] == poa_fast_erff(xi * 0.05f);
    }
    CHECK("fast expf / erff: the vectorised loop gives the scalar bits", same, "differs");
    free(x), free(e), free(f);
}

/* The GELU loop of the kernels (forward and backward values together), in one function per
   instruction set as POA_CPU_CLONES makes them: the versions must give the same bits. */
#define GELU_LOOP(name)                                                                    \
    static void name(float *y, const float *x, long n) {                                   \
        _Pragma("omp simd") for (long i = 0; i < n; i++) {                                 \
            const float t = x[i], cdf = 0.5f * (1 + poa_fast_erff(t * 0.70710678f));       \
            y[2 * i] = t * cdf;                                                            \
            y[2 * i + 1] = cdf + t * (0.39894228f * poa_fast_expf(-0.5f * t * t));         \
        }                                                                                  \
    }
GELU_LOOP(gelu_baseline)
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target("arch=x86-64-v3"))) GELU_LOOP(gelu_v3)
__attribute__((target("arch=x86-64-v4"))) GELU_LOOP(gelu_v4)
#endif

static void check_clones(void) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    enum { N = 10007 };
    float *x = malloc(sizeof(float) * N), *want = malloc(sizeof(float) * 2 * N);
    float *got = malloc(sizeof(float) * 2 * N);
    for (int i = 0; i < N; i++) x[i] = -12.0f + 24.0f * (float)i / N;
    gelu_baseline(want, x, N);
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        gelu_v3(got, x, N);
        CHECK("fast math GELU: the x86-64-v3 (AVX2) version gives the baseline's bits",
              memcmp(got, want, sizeof(float) * 2 * N) == 0, "differs");
    } else {
        CHECK_SKIP("fast math GELU: x86-64-v3 version", "this CPU has no AVX2");
    }
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
        gelu_v4(got, x, N);
        CHECK("fast math GELU: the x86-64-v4 (AVX-512) version gives the baseline's bits",
              memcmp(got, want, sizeof(float) * 2 * N) == 0, "differs");
    } else {
        CHECK_SKIP("fast math GELU: x86-64-v4 version", "this CPU has no AVX-512");
    }
    free(x), free(want), free(got);
#else
    CHECK_SKIP("fast math GELU: instruction-set versions", "not GCC on x86-64");
#endif
}

int main(void) {
    check_exp();
    check_erf();
    check_vector();
    check_clones();
    CHECK_EXIT();
}
