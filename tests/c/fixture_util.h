/* fixture_util.h: reading the PyTorch fixtures of tests/golden/ in C tests. */
#ifndef POA_FIXTURE_UTIL_H
#define POA_FIXTURE_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "safetensors.h"

#define FIXTURES "tests/golden/fixtures/"
#define TOLERANCE 1e-4

/* Tensor `name` of f as `real` (malloc'd), its element count in *count; exits the test with
   a FAIL line when it is missing or unreadable. */
static inline real *read_tensor(const poa_safetensors *f, const char *name, long long *count) {
    const poa_tensor_info *t = poa_safetensors_find(f, name);
    poa_error e = { { 0 } };
    if (!t) {
        printf("FAIL %s: no tensor %s\n", f->path, name);
        exit(1);
    }
    *count = poa_tensor_numel(t);
    real *x = malloc(sizeof(real) * (size_t)(*count ? *count : 1));
    if (poa_safetensors_read_real(f, name, x, *count, &e)) {
        printf("FAIL %s\n", e.message);
        exit(1);
    }
    return x;
}

/* Opens a fixture; exits the test with a FAIL line when it cannot. */
static inline void open_fixture(poa_safetensors *f, const char *path) {
    poa_error e = { { 0 } };
    if (poa_safetensors_open(f, path, &e)) {
        printf("FAIL %s\n", e.message);
        exit(1);
    }
}

/* max |a - b| / max |b|; an all-zero reference must be matched exactly, and a NaN where the
   reference has none (or the other way round) is infinitely wrong. */
static inline double relative_error(const real *a, const real *b, long long n) {
    double diff = 0, size = 0;
    for (long long i = 0; i < n; i++) {
        if (isnan((double)a[i]) != isnan((double)b[i])) return INFINITY; /* fmax would drop a NaN */
        diff = fmax(diff, fabs((double)a[i] - b[i]));
        size = fmax(size, fabs((double)b[i]));
    }
    return size == 0 ? (diff == 0 ? 0 : INFINITY) : diff / size;
}

/* ||a - b|| / ||b|| (2-norms): the error measure of the bf16 checks, where single elements
   near zero carry bf16's full relative rounding. */
static inline double norm_error(const real *a, const real *b, long long n) {
    double diff = 0, size = 0;
    for (long long i = 0; i < n; i++) diff += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), size += (double)b[i] * b[i];
    return size == 0 ? (diff == 0 ? 0 : INFINITY) : sqrt(diff / size);
}

#endif
