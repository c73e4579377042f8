/* test_train_kernels.c: the generated training kernels (build/gen/train_kernels.c, from
   gen/ops_train.lua) against the hand-written runtime functions they replace on the GPU:
   - bf16 rounding (runtime/bf16.h, the stores of every bf16 tensor) against a scalar reference
     that picks the nearer of the two neighbouring bf16 values in double (ties to even), on
     chosen ties, overflow, NaN, infinities, denormals and random bit patterns; exact widening
     (every non-NaN bf16 back to itself); the cast kernel.
   - AdamW over a buffer of three tensors with their own lr and weight decay, three steps: p, m,
     v bit for bit equal to runtime/optim.c's poa_adamw_update called per tensor (as trainer.c
     does); the bf16 shadow equal to the rounded master. EMA bit for bit equal to
     poa_ema_update, and its shadow.
   - Clipping (sum_squares, sum, clip_scale) against poa_clip_grad_norm, clipped and not.
   - Softmax and soft cross-entropy (loss and gradient, weights, a zero padding row) against
     runtime/loss.c; Sinkhorn-Knopp from its pieces against poa_sinkhorn_knopp, on one "rank"
     and on three (the all-reduces done by hand); KoLeo's three stages against poa_koleo (a
     duplicated row, a three-way tie, a zero row): max relative error <= 1e-5.
   - The fused residual + LayerNorm ops of a kernel set (build/gen/vit_fused.h) bit for bit
     equal to the set's unfused ops in sequence.
   - The results do not depend on the thread count. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kernels.h"
#include "loss.h"
#include "optim.h"
#include "train_kernels.h"
#include "vit_fused.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t next_u32(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)(next_u32() >> 8) / 16777216.0f; }

static float *random_floats(long n, float lo, float hi) {
    float *x = malloc(sizeof(float) * (size_t)n);
    for (long i = 0; i < n; i++) x[i] = uniform(lo, hi);
    return x;
}

static float *copy_floats(const float *x, long n) {
    float *y = malloc(sizeof(float) * (size_t)n);
    memcpy(y, x, sizeof(float) * (size_t)n);
    return y;
}

static float from_bits(uint32_t b) {
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* max over i of |a_i - b_i| / |b_i| (0 / 0 = 0, x / 0 = inf). */
static double max_relative(const float *a, const float *b, long n) {
    double worst = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > 0 || isnan(a[i]) != isnan(b[i])) worst = fmax(worst, b[i] == 0 ? INFINITY : d / fabs((double)b[i]));
    }
    return worst;
}

/* max |a_i - b_i| / max |b_i|: for gradients, whose entries cancel towards 0. */
static double normwise_relative(const float *a, const float *b, long n) {
    double diff = 0, scale = 0;
    for (long i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - (double)b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return scale > 0 ? diff / scale : diff;
}

/* ---- bf16 ---- */

/* The bf16 nearest to x, ties to the even one, from values: NaN -> a quiet NaN of x's sign. */
static uint16_t bf16_reference(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    if (isnan(x)) return (uint16_t)((bits >> 16) | 0x40);
    if (isinf(x)) return (uint16_t)(bits >> 16);
    uint16_t lo = (uint16_t)(bits >> 16), hi = (uint16_t)(lo + 1); /* |lo| <= |x| < |hi| */
    double dlo = fabs((double)x - (double)poa_bf16_to_float(lo));
    double dhi = fabs((double)poa_bf16_to_float(hi) - (double)x); /* hi may be infinity */
    if ((lo & 0x7fff) == 0x7f7f && isinf(poa_bf16_to_float(hi))) {
        /* past the largest bf16: the halfway point to the next power 2^128 rounds to infinity */
        dhi = ldexp(1.0, 128) - fabs((double)x);
    }
    if (dlo < dhi) return lo;
    if (dhi < dlo) return hi;
    return (lo & 1) ? hi : lo;
}

static void test_bf16(void) {
    static const uint32_t chosen[] = {
        0x3f800000, 0x3f808000 /* tie, even below */, 0x3f818000 /* tie, odd below */, 0x3f808001,
        0x3f807fff, 0xbf808000, 0xbf818000, 0x7f7fffff /* to infinity */, 0x7f7f7fff, 0x7f7f8000,
        0xff7fffff, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001 /* signalling NaN */, 0xffffffff,
        0x7fffffff, 0x00000000, 0x80000000, 0x00000001, 0x00008000, 0x00018000, 0x007fffff,
        0x00800000, 0x807fffff,
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof chosen / sizeof chosen[0]; i++) {
        float x = from_bits(chosen[i]);
        uint16_t got = poa_bf16_from_float(x), want = bf16_reference(x);
        if (got != want && bad++ < 5) printf("  bf16 of 0x%08x: got 0x%04x, want 0x%04x\n", chosen[i], got, want);
    }
    for (uint32_t h = 0; h < 0x10000u; h++) /* widening then rounding is the identity off NaN */
        if ((h & 0x7fffu) <= 0x7f80u && poa_bf16_from_float(poa_bf16_to_float((uint16_t)h)) != h) bad++;
    CHECK("bf16: chosen values (ties to even, overflow to infinity, NaN, denormals); widening is exact (bf16 -> float "
          "-> bf16 is the identity off NaN)", bad == 0, "%d differ", bad);
    int nan_ok = 1;
    for (uint32_t payload = 1; payload < 0x800000; payload = payload * 3 + 1) {
        float x = from_bits(0x7f800000u | payload);
        nan_ok &= isnan(poa_bf16_to_float(poa_bf16_from_float(x))) &&
                  isnan(poa_bf16_to_float(poa_bf16_from_float(-x)));
    }
    CHECK("bf16: every NaN stays NaN", nan_ok, "a NaN rounded to a number or infinity");

    enum { N = 300000 };
    float *x = malloc(sizeof(float) * N);
    for (long i = 0; i < N; i++) x[i] = from_bits(next_u32());
    bad = 0;
    for (long i = 0; i < N; i++) {
        uint16_t got = poa_bf16_from_float(x[i]), want = bf16_reference(x[i]);
        if (got != want && bad++ < 5) printf("  bf16 of %a: got 0x%04x, want 0x%04x\n", (double)x[i], got, want);
    }
    CHECK("bf16: 300000 random bit patterns equal the reference", bad == 0, "%d differ", bad);
    uint16_t *y = malloc(sizeof(uint16_t) * N);
    poa_train_cast_bf16(y, x, N);
    bad = 0;
    for (long i = 0; i < N; i++) bad += y[i] != poa_bf16_from_float(x[i]);
    CHECK("poa_train_cast_bf16 = poa_bf16_from_float element by element", bad == 0, "%d differ", bad);
    free(x), free(y);
}

/* ---- AdamW and EMA ---- */

static int same_bits(const float *a, const float *b, long n) { return memcmp(a, b, sizeof(float) * (size_t)n) == 0; }

static int shadow_matches(const uint16_t *shadow, const float *master, long n) {
    for (long i = 0; i < n; i++)
        if (shadow[i] != poa_bf16_from_float(master[i])) return 0;
    return 1;
}

static void test_adamw(void) {
    enum { TENSORS = 3 };
    const long count[TENSORS] = { 5000, 37, 9001 };
    long offset[TENSORS], n = 0;
    for (int t = 0; t < TENSORS; t++) offset[t] = n, n += count[t];
    const double lr_mult[TENSORS] = { 1.0, 0.3, 0.0 }, wd_mult[TENSORS] = { 1.0, 0.0, 1.0 };
    float *p = random_floats(n, -1, 1), *m = random_floats(n, -0.01f, 0.01f), *v = random_floats(n, 0, 1e-4f);
    float *p_ref = copy_floats(p, n), *m_ref = copy_floats(m, n), *v_ref = copy_floats(v, n);
    uint16_t *shadow = calloc((size_t)n, sizeof(uint16_t));
    long chunks = poa_train_adamw_chunks(offset, count, TENSORS, NULL, NULL, NULL);
    long *chunk_start = malloc(sizeof(long) * (size_t)chunks), *chunk_count = malloc(sizeof(long) * (size_t)chunks);
    long *chunk_tensor = malloc(sizeof(long) * (size_t)chunks);
    poa_train_adamw_chunks(offset, count, TENSORS, chunk_start, chunk_count, chunk_tensor);
    CHECK("adamw chunks: every tensor cut into chunks of at most TRAIN_CHUNK",
          chunks == 2 + 1 + 3 && chunk_start[2] == 5000 && chunk_count[2] == 37 && chunk_tensor[5] == 2 &&
              chunk_count[5] == 9001 - 2 * TRAIN_CHUNK,
          "%ld chunks", chunks);
    int exact = 1, shadow_ok = 1;
    for (long step = 1; step <= 3; step++) {
        float *g = random_floats(n, -0.1f, 0.1f);
        const double lr = 1e-3 * (double)step, wd = 0.04 + 0.01 * (double)step;
        double lrs[TENSORS], wds[TENSORS];
        float decay[TENSORS], neg_step[TENSORS];
        poa_train_adamw_constants k;
        for (int t = 0; t < TENSORS; t++) {
            lrs[t] = lr * (float)lr_mult[t], wds[t] = wd * (float)wd_mult[t];
            poa_adamw_update(p_ref + offset[t], g + offset[t], m_ref + offset[t], v_ref + offset[t], count[t],
                             lrs[t], wds[t], 0.9, 0.999, 1e-8, step);
        }
        poa_train_adamw_scalars(lrs, wds, TENSORS, 0.9, 0.999, 1e-8, step, decay, neg_step, &k);
        poa_train_adamw(p, m, v, shadow, g, chunk_start, chunk_count, chunk_tensor, decay, neg_step, k.beta1,
                        k.one_minus_beta1, k.beta2, k.one_minus_beta2, k.correction2_sqrt, k.epsilon, chunks);
        exact &= same_bits(p, p_ref, n) && same_bits(m, m_ref, n) && same_bits(v, v_ref, n);
        shadow_ok &= shadow_matches(shadow, p, n);
        free(g);
    }
    CHECK("poa_train_adamw: 3 steps, 3 tensors with their own lr and wd = poa_adamw_update bit for bit", exact,
          "p %.3g, m %.3g, v %.3g max relative", max_relative(p, p_ref, n), max_relative(m, m_ref, n),
          max_relative(v, v_ref, n));
    CHECK("poa_train_adamw: the bf16 shadow is the rounded master", shadow_ok, "shadow differs");
    free(p), free(m), free(v), free(p_ref), free(m_ref), free(v_ref), free(shadow);
    free(chunk_start), free(chunk_count), free(chunk_tensor);
}

static void test_ema(void) {
    const long n = 3 * TRAIN_CHUNK + 123;
    float *teacher = random_floats(n, -1, 1), *student = random_floats(n, -1, 1);
    float *ref = copy_floats(teacher, n);
    uint16_t *shadow = calloc((size_t)n, sizeof(uint16_t));
    const double momentum = 0.9961;
    poa_ema_update(ref, student, n, momentum);
    poa_train_ema(teacher, shadow, student, (float)momentum, (float)(1 - momentum), n);
    CHECK("poa_train_ema = poa_ema_update bit for bit", same_bits(teacher, ref, n), "max relative %.3g",
          max_relative(teacher, ref, n));
    CHECK("poa_train_ema: the bf16 shadow is the rounded teacher", shadow_matches(shadow, teacher, n), "differs");
    free(teacher), free(student), free(ref), free(shadow);
}

/* ---- clipping ---- */

static double clip_with_kernels(float *g, long n, double max_norm) {
    long chunks = (n + TRAIN_CHUNK - 1) / TRAIN_CHUNK;
    double *partial = malloc(sizeof(double) * (size_t)chunks), total;
    poa_train_sum_squares(partial, g, n);
    poa_train_sum(&total, partial, chunks);
    poa_train_clip_scale(g, &total, max_norm, n);
    free(partial);
    return sqrt(total);
}

static void test_clip(void) {
    const long n = 5 * TRAIN_CHUNK + 77;
    for (int clipped = 0; clipped < 2; clipped++) {
        float *g = random_floats(n, -0.05f, 0.05f), *ref = copy_floats(g, n), *before = copy_floats(g, n);
        double max_norm = clipped ? 0.5 : 100.0;
        double want = poa_clip_grad_norm(ref, n, max_norm), got = clip_with_kernels(g, n, max_norm);
        char name[128];
        snprintf(name, sizeof name, "clipping (%s): norm within 1e-12, gradients within 1e-5 of poa_clip_grad_norm",
                 clipped ? "clipped" : "not clipped");
        double err = max_relative(g, ref, n);
        CHECK(name, fabs(got - want) <= 1e-12 * want && err <= 1e-5 && (clipped || same_bits(g, before, n)),
              "norm %.17g vs %.17g, gradients %.3g", got, want, err);
        if (clipped) printf("  clipped gradients: max relative error %.3g\n", err);
        free(g), free(ref), free(before);
    }
    float *x = random_floats(3 * TRAIN_CHUNK + 5, -3, 2), want = -INFINITY, got, partial[4];
    x[2 * TRAIN_CHUNK + 17] = 7.5f;
    for (long i = 0; i < 3 * TRAIN_CHUNK + 5; i++) want = x[i] > want ? x[i] : want;
    poa_train_max_partial(partial, x, 3 * TRAIN_CHUNK + 5);
    poa_train_max(&got, partial, 4);
    CHECK("poa_train_max_partial + poa_train_max = the max", got == want && partial[2] == 7.5f, "got %g, want %g", got, want);
    free(x);
}

/* ---- losses ---- */

static void test_softmax_and_cross_entropy(void) {
    const long rows = 24, k = 517;
    float *logits = random_floats(rows * k, -8, 8), *targets = random_floats(rows * k, 0, 1);
    float *weight = random_floats(rows, 0.2f, 1.5f);
    float *soft = malloc(sizeof(float) * (size_t)(rows * k)), *soft_ref = malloc(sizeof(float) * (size_t)(rows * k));
    poa_softmax_rows(soft_ref, logits, rows, k, 0.1);
    poa_train_softmax(soft, logits, 0.1, rows, k);
    double err = max_relative(soft, soft_ref, rows * k);
    CHECK("poa_train_softmax (T = 0.1) within 1e-5 of poa_softmax_rows", err <= 1e-5, "max relative %.3g", err);
    printf("  softmax: max relative error %.3g\n", err);

    /* targets: softmax rows (mass 1), one row of zeros (padding), one of mass 0.5 */
    poa_softmax_rows(targets, targets, rows, k, 0.5);
    memset(targets + 3 * k, 0, sizeof(float) * (size_t)k);
    for (long j = 0; j < k; j++) targets[5 * k + j] *= 0.5f;
    double *row_loss = malloc(sizeof(double) * (size_t)rows), total;
    for (int weighted = 0; weighted < 2; weighted++) {
        float *d = random_floats(rows * k, -1e-3f, 1e-3f), *d_ref = copy_floats(d, rows * k);
        const float *w = weighted ? weight : NULL;
        double want = poa_soft_cross_entropy(targets, logits, rows, k, 0.1, w, 0.7, d_ref);
        poa_train_cross_entropy(row_loss, d, targets, logits, w, 0.1, 0.7, rows, k);
        poa_train_sum(&total, row_loss, rows);
        double dg = normwise_relative(d, d_ref, rows * k), loss_err = fabs(total - want) / fabs(want);
        char name[160];
        snprintf(name, sizeof name, "poa_train_cross_entropy (%s): loss and dlogits within 1e-5 of poa_soft_cross_entropy",
                 weighted ? "row weights" : "no weights");
        CHECK(name, loss_err <= 1e-5 && dg <= 1e-5, "loss %.17g vs %.17g (%.3g), dlogits %.3g", total, want, loss_err, dg);
        printf("  cross-entropy (%s): loss relative error %.3g, dlogits max error / max |dlogits| %.3g\n",
               weighted ? "weighted" : "unweighted", loss_err, dg);
        free(d), free(d_ref);
    }
    float *untouched = random_floats(rows * k, -1, 1), *before = copy_floats(untouched, rows * k);
    poa_train_cross_entropy(row_loss, NULL, targets, logits, NULL, 0.1, 1.0, rows, k);
    poa_train_sum(&total, row_loss, rows);
    double want = poa_soft_cross_entropy(targets, logits, rows, k, 0.1, NULL, 1.0, NULL);
    CHECK("poa_train_cross_entropy with dlogits NULL: the loss alone", fabs(total - want) <= 1e-5 * fabs(want) &&
              same_bits(untouched, before, rows * k), "loss %.17g vs %.17g", total, want);
    free(untouched), free(before);
    free(logits), free(targets), free(weight), free(soft), free(soft_ref), free(row_loss);
}

/* Sinkhorn-Knopp from the pieces, the rows split over `ranks` emulated GPUs (each rank's
   buffers are the rows it owns; the all-reduces are sums and maxima over the ranks). */
static void sinkhorn_pieces(float *targets, const float *logits, long n, long k, double tau, int iterations,
                            int ranks) {
    long first[4], rows[4];
    for (int q = 0; q < ranks; q++) first[q] = n * q / ranks, rows[q] = n * (q + 1) / ranks - first[q];
    double *row_sum = malloc(sizeof(double) * (size_t)n), *r = malloc(sizeof(double) * (size_t)n);
    double *colsum = malloc(sizeof(double) * (size_t)k), *part = malloc(sizeof(double) * (size_t)k);
    double *c = malloc(sizeof(double) * (size_t)k);
    float *partial = malloc(sizeof(float) * (size_t)(n * k / TRAIN_CHUNK + 1));
    float global_max = -INFINITY;
    for (int q = 0; q < ranks; q++) { /* all-reduce max */
        float m;
        long len = rows[q] * k, chunks = (len + TRAIN_CHUNK - 1) / TRAIN_CHUNK;
        poa_train_max_partial(partial, logits + first[q] * k, len);
        poa_train_max(&m, partial, chunks);
        global_max = m > global_max ? m : global_max;
    }
    double total = 0;
    for (int q = 0; q < ranks; q++) { /* all-reduce sum */
        double t;
        poa_train_sinkhorn_exp(targets + first[q] * k, row_sum + first[q], logits + first[q] * k, &global_max, tau,
                               rows[q], k);
        poa_train_sum(&t, row_sum + first[q], rows[q]);
        total += t;
    }
    for (int q = 0; q < ranks; q++) poa_train_sinkhorn_fill(r + first[q], &total, rows[q]);
    for (long j = 0; j < k; j++) c[j] = 1;
    for (int it = 0; it < iterations; it++) {
        for (long j = 0; j < k; j++) colsum[j] = 0;
        for (int q = 0; q < ranks; q++) { /* all-reduce sum */
            poa_train_sinkhorn_columns(part, targets + first[q] * k, r + first[q], rows[q], k);
            for (long j = 0; j < k; j++) colsum[j] += part[j];
        }
        for (int q = 0; q < ranks; q++) {
            poa_train_sinkhorn_column_scale(c, colsum, k);
            poa_train_sinkhorn_rows(r + first[q], targets + first[q] * k, c, n, rows[q], k);
        }
    }
    for (int q = 0; q < ranks; q++)
        poa_train_sinkhorn_finish(targets + first[q] * k, targets + first[q] * k, r + first[q], c, n, rows[q], k);
    free(row_sum), free(r), free(colsum), free(part), free(c), free(partial);
}

static void test_sinkhorn(void) {
    const long n = 40, k = 1111;
    float *logits = random_floats(n * k, -0.3f, 0.25f);
    float *want = malloc(sizeof(float) * (size_t)(n * k)), *got = malloc(sizeof(float) * (size_t)(n * k));
    float *got2 = malloc(sizeof(float) * (size_t)(n * k));
    for (int iterations = 0; iterations <= 3; iterations += 3) {
        poa_sinkhorn_knopp(want, logits, n, k, 0.04, iterations);
        sinkhorn_pieces(got, logits, n, k, 0.04, iterations, 1);
        sinkhorn_pieces(got2, logits, n, k, 0.04, iterations, 3);
        double err = max_relative(got, want, n * k), err2 = max_relative(got2, want, n * k);
        char name[160];
        snprintf(name, sizeof name, "Sinkhorn-Knopp pieces, %d iterations, 1 and 3 ranks: within 1e-5 of poa_sinkhorn_knopp",
                 iterations);
        CHECK(name, err <= 1e-5 && err2 <= 1e-5, "max relative %.3g (1 rank), %.3g (3 ranks)", err, err2);
        printf("  Sinkhorn-Knopp (%d iterations): max relative error %.3g (1 rank), %.3g (3 ranks)\n", iterations,
               err, err2);
    }
    free(logits), free(want), free(got), free(got2);
}

/* ---- KoLeo ---- */

static void test_koleo(void) {
    const long n = 33, d = 70;
    float *x = random_floats(n * d, -1, 1);
    memcpy(x + 7 * d, x + 3 * d, sizeof(float) * (size_t)d); /* a duplicate: distance 0 to it */
    memcpy(x + 20 * d, x + 3 * d, sizeof(float) * (size_t)d); /* a three-way tie: first index wins */
    for (long t = 0; t < d; t++) x[11 * d + t] = 0;             /* a zero row: norm below eps */
    float *dx = random_floats(n * d, -1e-3f, 1e-3f), *dx_ref = copy_floats(dx, n * d);
    double *zhat = malloc(sizeof(double) * (size_t)(n * d)), *g = malloc(sizeof(double) * (size_t)(n * d));
    double *norm = malloc(sizeof(double) * (size_t)n), *row_loss = malloc(sizeof(double) * (size_t)n), total;
    long *nn = malloc(sizeof(long) * (size_t)n);
    double want = poa_koleo(x, n, d, 0.1, dx_ref);
    poa_train_koleo_normalize(zhat, norm, x, n, d);
    poa_train_koleo_neighbours(g, nn, row_loss, zhat, 0.1, n, d);
    poa_train_koleo_backward(dx, g, nn, zhat, norm, n, d);
    poa_train_sum(&total, row_loss, n);
    double loss_err = fabs(total - want) / fabs(want), dx_err = normwise_relative(dx, dx_ref, n * d);
    CHECK("KoLeo (normalize, neighbours, backward): loss and dx within 1e-5 of poa_koleo, ties to the first index",
          loss_err <= 1e-5 && dx_err <= 1e-5 && nn[3] == 7 && nn[7] == 3 && nn[20] == 3,
          "loss %.17g vs %.17g, dx %.3g, nn %ld %ld %ld", total, want, dx_err, nn[3], nn[7], nn[20]);
    printf("  KoLeo: loss relative error %.3g, dx max error / max |dx| %.3g\n", loss_err, dx_err);
    free(x), free(dx), free(dx_ref), free(zhat), free(g), free(norm), free(row_loss), free(nn);
}

/* ---- residual + LayerNorm, fused ---- */

/* The fused ops of the w64 set of tests/recipes/tiny_vit.lua against the set's unfused
   residual_* and layernorm_* in sequence: the same expressions, so the same bits. */
static void test_fused_layernorm(void) {
    const poa_vit_kernels *k = poa_vit_kernels_find(64, 32, 256);
    CHECK("the w64_h32_f256 kernel set is built (tests/recipes/tiny_vit.lua)", k != NULL, "not found");
    if (!k) return;
    const long batch = 3, tokens = 5, rows = batch * tokens, n = rows * 64;
    float *x = random_floats(n, -2, 2), *h = random_floats(n, -1, 1), *gamma = random_floats(64, 0.5f, 1.5f);
    float *w = random_floats(64, 0.5f, 1.5f), *bias = random_floats(64, -0.2f, 0.2f);
    float sample_scale[3] = { 0.0f, 1.25f, 1.25f };
    float *x_ref = copy_floats(x, n), *y = malloc(sizeof(float) * (size_t)n), *y_ref = malloc(sizeof(float) * (size_t)n);
    float mean[15], rstd[15], mean_ref[15], rstd_ref[15];
    int forward_ok = 1, backward_ok = 1;
    for (int drop = 0; drop < 2; drop++) {
        const float *ss = drop ? sample_scale : NULL;
        k->residual_forward(k, x_ref, h, gamma, ss, batch, tokens);
        k->layernorm_forward(k, y_ref, mean_ref, rstd_ref, x_ref, w, bias, rows);
        poa_vit_residual_layernorm_forward_w64_h32_f256(x, y, mean, rstd, h, gamma, ss, w, bias, batch, tokens);
        forward_ok &= same_bits(x, x_ref, n) && same_bits(y, y_ref, n) && same_bits(mean, mean_ref, rows) &&
                      same_bits(rstd, rstd_ref, rows);

        float *dy = random_floats(n, -1, 1), *dx = random_floats(n, -1, 1), *dx_ref = copy_floats(dx, n);
        float *tmp = malloc(sizeof(float) * (size_t)n), *dh = malloc(sizeof(float) * (size_t)n);
        float *dh_ref = malloc(sizeof(float) * (size_t)n), *dparams = random_floats(3 * 64, -1, 1);
        float *dparams_ref = copy_floats(dparams, 3 * 64);
        k->layernorm_backward(k, tmp, dparams_ref, dparams_ref + 64, dy, x_ref, mean_ref, rstd_ref, w, rows);
        for (long i = 0; i < n; i++) dx_ref[i] += tmp[i];
        k->residual_backward(k, dh_ref, dparams_ref + 128, dx_ref, h, gamma, ss, batch, tokens);
        poa_vit_residual_layernorm_backward_w64_h32_f256(dx, dh, dparams, dparams + 64, dparams + 128, dy, x, mean, rstd,
                                                         w, h, gamma, ss, batch, tokens);
        backward_ok &= same_bits(dx, dx_ref, n) && same_bits(dh, dh_ref, n) && same_bits(dparams, dparams_ref, 3 * 64);
        free(dy), free(dx), free(dx_ref), free(tmp), free(dh), free(dh_ref), free(dparams), free(dparams_ref);
    }
    CHECK("residual_layernorm_forward = residual_forward then layernorm_forward, bit for bit (with and without drop-path)",
          forward_ok, "differs");
    CHECK("residual_layernorm_backward = layernorm_backward, the add, residual_backward, bit for bit", backward_ok,
          "differs");
    free(x), free(h), free(gamma), free(w), free(bias), free(x_ref), free(y), free(y_ref);
}

/* ---- thread count ---- */

static void test_threads(void) {
    const long rows = 16, k = 2049, n = 2 * TRAIN_CHUNK + 9;
    float *logits = random_floats(rows * k, -5, 5), *targets = random_floats(rows * k, 0, 0.01f);
    float *d1 = calloc((size_t)(rows * k), sizeof(float)), *d2 = calloc((size_t)(rows * k), sizeof(float));
    double l1[16], l2[16];
    float *t1 = random_floats(n, -1, 1), *t2 = copy_floats(t1, n), *s = random_floats(n, -1, 1);
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)n);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    poa_train_cross_entropy(l1, d1, targets, logits, NULL, 0.07, 1.0, rows, k);
    poa_train_ema(t1, h, s, 0.99f, 0.01f, n);
    omp_set_num_threads(threads > 1 ? threads : 2);
    poa_train_cross_entropy(l2, d2, targets, logits, NULL, 0.07, 1.0, rows, k);
    poa_train_ema(t2, h, s, 0.99f, 0.01f, n);
    omp_set_num_threads(threads);
    CHECK("cross-entropy and EMA: the same bits on 1 and 2+ threads",
          memcmp(l1, l2, sizeof l1) == 0 && same_bits(d1, d2, rows * k) && same_bits(t1, t2, n), "differ");
    free(logits), free(targets), free(d1), free(d2), free(t1), free(t2), free(s), free(h);
}

int main(void) {
    test_bf16();
    test_adamw();
    test_ema();
    test_clip();
    test_softmax_and_cross_entropy();
    test_sinkhorn();
    test_koleo();
    test_fused_layernorm();
    test_threads();
    CHECK_EXIT();
}
