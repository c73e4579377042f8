/* heads_kernels.c: the C twins of templates/heads_kernels.cu.tmpl (see heads_kernels.h). Each
   twin walks the launch's blocks and threads and does what that thread of the CUDA kernel does,
   with the same types; the row reductions keep 128 per-thread partial sums and add them by the
   kernel's tree (row_sum), the column sum keeps 8 per column and adds them in order. */
#include "heads_kernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16.h"
#include "cuda_driver.h"

enum { ELEMENT_THREADS = 256, ROW_THREADS = 128, COLUMN_X = 32, COLUMN_Y = 8 };
#define NORM_EPS 1e-12

const char *const poa_heads_kernel_names[POA_HEADS_KERNEL_COUNT] = {
    "poa_heads_gelu_forward",         "poa_heads_gelu_backward",
    "poa_heads_l2_normalize_forward", "poa_heads_l2_normalize_backward",
    "poa_heads_weight_norm_forward",  "poa_heads_weight_norm_backward",
    "poa_heads_column_sum_accumulate", "poa_heads_copy",
    "poa_heads_to_bf16",
};

static int is_row_kernel(int kernel) {
    return kernel >= POA_HEADS_L2_NORMALIZE_FORWARD && kernel <= POA_HEADS_WEIGHT_NORM_BACKWARD;
}

int poa_heads_kernel_geometry(int kernel, long count, unsigned grid[3], unsigned block[3], poa_error *e) {
    long blocks;
    grid[1] = grid[2] = block[1] = block[2] = 1;
    if (is_row_kernel(kernel)) {
        blocks = count, block[0] = ROW_THREADS;
    } else if (kernel == POA_HEADS_COLUMN_SUM) {
        blocks = (count + COLUMN_X - 1) / COLUMN_X, block[0] = COLUMN_X, block[1] = COLUMN_Y;
    } else {
        blocks = (count + ELEMENT_THREADS - 1) / ELEMENT_THREADS, block[0] = ELEMENT_THREADS;
    }
    if (blocks > 0x7fffffffL)
        return poa_fail(e, "%s: %ld is too many for one launch", poa_heads_kernel_names[kernel], count);
    grid[0] = (unsigned)(blocks > 0 ? blocks : 1);
    return 0;
}

/* The kernel's row_sum: partial[t] += partial[t + s] for s = 64, 32, ..., 1 and t < s. */
static double row_sum(double partial[ROW_THREADS]) {
    for (int s = ROW_THREADS / 2; s > 0; s >>= 1)
        for (int t = 0; t < s; t++) partial[t] += partial[t + s];
    return partial[0];
}

/* sum_j a[j] b[j] over a row of d as a block of ROW_THREADS does it: thread t adds j = t, t +
   ROW_THREADS, ... in double, then the fixed tree of row_sum. */
static double row_dot(const float *a, const float *b, long d) {
    double partial[ROW_THREADS];
    for (long t = 0; t < ROW_THREADS; t++) {
        double s = 0;
        for (long j = t; j < d; j += ROW_THREADS) s += (double)a[j] * b[j];
        partial[t] = s;
    }
    return row_sum(partial);
}

static void gelu_forward(const unsigned grid[3], float *y, const float *x, long n) {
    for (long b = 0; b < (long)grid[0]; b++)
        for (long t = 0; t < ELEMENT_THREADS; t++) {
            const long i = b * ELEMENT_THREADS + t;
            if (i >= n) continue;
            const float v = x[i];
            y[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f));
        }
}

static void gelu_backward(const unsigned grid[3], float *dx, const float *dy, const float *x, long n) {
    for (long b = 0; b < (long)grid[0]; b++)
        for (long t = 0; t < ELEMENT_THREADS; t++) {
            const long i = b * ELEMENT_THREADS + t;
            if (i >= n) continue;
            const float v = x[i];
            const float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752440f));
            const float pdf = 0.39894228040143267794f * expf(-0.5f * v * v);
            dx[i] = dy[i] * (cdf + v * pdf);
        }
}

static void l2_normalize_forward(const unsigned grid[3], float *u, float *norm, const float *z, long rows,
                                 long d) {
    for (long r = 0; r < (long)grid[0] && r < rows; r++) {
        const float *zr = z + r * d;
        const double n = sqrt(row_dot(zr, zr, d)), denom = n > NORM_EPS ? n : NORM_EPS;
        norm[r] = (float)n;
        for (long j = 0; j < d; j++) u[r * d + j] = (float)(zr[j] / denom);
    }
}

static void l2_normalize_backward(const unsigned grid[3], float *dz, const float *du, const float *u,
                                  const float *norm, long rows, long d) {
    for (long r = 0; r < (long)grid[0] && r < rows; r++) {
        const float *dur = du + r * d, *ur = u + r * d;
        const double n = norm[r];
        const double dot = row_dot(dur, ur, d);
        for (long j = 0; j < d; j++)
            dz[r * d + j] = n > NORM_EPS ? (float)((dur[j] - ur[j] * dot) / n) : (float)(dur[j] / NORM_EPS);
    }
}

static void weight_norm_forward(const unsigned grid[3], float *wn, float *vnorm, const float *g, const float *v,
                                long k, long d) {
    for (long i = 0; i < (long)grid[0] && i < k; i++) {
        const float *vi = v + i * d;
        const double n = sqrt(row_dot(vi, vi, d)), f = g[i] / n;
        vnorm[i] = (float)n;
        for (long j = 0; j < d; j++) wn[i * d + j] = (float)(f * vi[j]);
    }
}

static void weight_norm_backward(const unsigned grid[3], float *dg, float *dv, const float *dw, const float *g,
                                 const float *v, const float *vnorm, long k, long d) {
    for (long i = 0; i < (long)grid[0] && i < k; i++) {
        const float *dwi = dw + i * d, *vi = v + i * d;
        const double n = vnorm[i];
        const double dot = row_dot(dwi, vi, d), f = g[i] / n, proj = dot / (n * n);
        dg[i] += (float)(dot / n);
        for (long j = 0; j < d; j++) dv[i * d + j] += (float)(f * (dwi[j] - proj * vi[j]));
    }
}

static void column_sum_accumulate(const unsigned grid[3], float *dst, const float *src, long rows, long cols) {
    for (long b = 0; b < (long)grid[0]; b++)
        for (long x = 0; x < COLUMN_X; x++) {
            const long j = b * COLUMN_X + x;
            if (j >= cols) continue;
            double partial[COLUMN_Y];
            for (long y = 0; y < COLUMN_Y; y++) {
                double acc = 0;
                for (long r = y; r < rows; r += COLUMN_Y) acc += src[r * cols + j];
                partial[y] = acc;
            }
            double sum = 0;
            for (int y = 0; y < COLUMN_Y; y++) sum += partial[y];
            dst[j] += (float)sum;
        }
}

static void copy(const unsigned grid[3], float *dst, const float *src, long n) {
    long covered = (long)grid[0] * ELEMENT_THREADS;
    if (covered > n) covered = n;
    if (covered > 0) memcpy(dst, src, sizeof(float) * (size_t)covered);
}

static void to_bf16(const unsigned grid[3], uint16_t *dst, const float *src, long n) {
    for (long i = 0; i < (long)grid[0] * ELEMENT_THREADS && i < n; i++) dst[i] = poa_bf16_from_float(src[i]);
}

static float *P(void **args, int i) { return (float *)(uintptr_t)*(CUdeviceptr *)args[i]; }
static long L(void **args, int i) { return *(long *)args[i]; }

int poa_heads_kernel_emulate(const char *name, const unsigned grid[3], const unsigned block[3], void **args,
                             poa_error *e) {
    int kernel = 0;
    while (kernel < POA_HEADS_KERNEL_COUNT && strcmp(poa_heads_kernel_names[kernel], name)) kernel++;
    if (kernel == POA_HEADS_KERNEL_COUNT) return poa_fail(e, "heads kernels: no kernel %s", name);
    const unsigned want_x = is_row_kernel(kernel) ? ROW_THREADS
                          : kernel == POA_HEADS_COLUMN_SUM ? COLUMN_X : ELEMENT_THREADS;
    const unsigned want_y = kernel == POA_HEADS_COLUMN_SUM ? COLUMN_Y : 1;
    if (block[0] != want_x || block[1] != want_y || block[2] != 1 || grid[1] != 1 || grid[2] != 1)
        return poa_fail(e, "%s: launched with grid (%u, %u, %u) block (%u, %u, %u); it is written for block (%u, %u, 1) "
                        "and a one-dimensional grid", name, grid[0], grid[1], grid[2], block[0], block[1], block[2],
                        want_x, want_y);
    switch (kernel) {
    case POA_HEADS_GELU_FORWARD: gelu_forward(grid, P(args, 0), P(args, 1), L(args, 2)); break;
    case POA_HEADS_GELU_BACKWARD: gelu_backward(grid, P(args, 0), P(args, 1), P(args, 2), L(args, 3)); break;
    case POA_HEADS_L2_NORMALIZE_FORWARD:
        l2_normalize_forward(grid, P(args, 0), P(args, 1), P(args, 2), L(args, 3), L(args, 4));
        break;
    case POA_HEADS_L2_NORMALIZE_BACKWARD:
        l2_normalize_backward(grid, P(args, 0), P(args, 1), P(args, 2), P(args, 3), L(args, 4), L(args, 5));
        break;
    case POA_HEADS_WEIGHT_NORM_FORWARD:
        weight_norm_forward(grid, P(args, 0), P(args, 1), P(args, 2), P(args, 3), L(args, 4), L(args, 5));
        break;
    case POA_HEADS_WEIGHT_NORM_BACKWARD:
        weight_norm_backward(grid, P(args, 0), P(args, 1), P(args, 2), P(args, 3), P(args, 4), P(args, 5),
                             L(args, 6), L(args, 7));
        break;
    case POA_HEADS_COLUMN_SUM: column_sum_accumulate(grid, P(args, 0), P(args, 1), L(args, 2), L(args, 3)); break;
    case POA_HEADS_COPY: copy(grid, P(args, 0), P(args, 1), L(args, 2)); break;
    case POA_HEADS_TO_BF16: to_bf16(grid, (uint16_t *)P(args, 0), P(args, 1), L(args, 2)); break;
    }
    return 0;
}
