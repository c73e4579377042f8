/* test_losses.c: the loss math (runtime/loss.c) against PyTorch float64 fixtures of
   tests/golden/make_head_loss_fixtures.py (relative error max |ours - torch| / max |torch|
   <= 1e-4), and its properties:
   - Sinkhorn-Knopp (3, 1 and 0 iterations) equals the reference's algorithm as written (no max
     subtraction); after the final normalisation every row (sample) sums to 1, while a column
     (prototype) sums to n/K only approximately (exactly after the previous half-step), with the
     gap closing as iterations grow; adding a constant to all logits changes nothing.
   - softmax rows; soft cross-entropy value and gradient (weighted rows, an all-zero target row,
     a row of mass 0.7), gradient accumulates (+=) and every gradient row sums to 0; weight NULL
     means every row has weight `scale`.
   - KoLeo value and gradient (also with a row whose norm is below the 1e-8 eps, and with two
     equal rows, whose distance is the 1e-8 added to each component alone).
   - Results are bit-identical with 1 and 3 threads. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "fixture_util.h"
#include "loss.h"
#include "safetensors.h"

/* max over rows |sum_j x_ij - want| and max over columns |sum_i x_ij - n/K| / (n/K). */
static void margins(const real *x, long n, long k, double want_row, double *row_gap,
                    double *column_gap) {
    *row_gap = 0, *column_gap = 0;
    for (long i = 0; i < n; i++) {
        double s = 0;
        for (long j = 0; j < k; j++) s += x[i * k + j];
        *row_gap = fmax(*row_gap, fabs(s - want_row));
    }
    for (long j = 0; j < k; j++) {
        double s = 0;
        for (long i = 0; i < n; i++) s += x[i * k + j];
        *column_gap = fmax(*column_gap, fabs(s - (double)n / k) / ((double)n / k));
    }
}

static void check_sinkhorn(void) {
    poa_safetensors f;
    open_fixture(&f, FIXTURES "loss_sinkhorn.safetensors");
    struct { const char *logits, *targets; long n, k; double tau; int iterations; } cases[] = {
        { "logits.a", "targets.a", 12, 40, 0.04, 3 }, { "logits.b", "targets.b", 9, 56, 0.07, 3 },
        { "logits.a", "targets.a1", 12, 40, 0.04, 1 }, { "logits.a", "targets.a0", 12, 40, 0.04, 0 },
    };
    char label[256];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        long long n1, n2;
        real *logits = read_tensor(&f, cases[c].logits, &n1), *want = read_tensor(&f, cases[c].targets, &n2);
        const long n = cases[c].n, k = cases[c].k;
        real *got = malloc(sizeof(real) * (size_t)(n * k));
        poa_sinkhorn_knopp(got, logits, n, k, cases[c].tau, cases[c].iterations);
        double err = n1 == n * k && n2 == n * k ? relative_error(got, want, n * k) : INFINITY;
        snprintf(label, sizeof label, "sinkhorn %s (%ldx%ld, tau %g, %d iterations) matches torch",
                 cases[c].targets, n, k, cases[c].tau, cases[c].iterations);
        CHECK(label, err <= TOLERANCE, "relative error %.3g", err);
        printf("  %s: relative error %.3g\n", cases[c].targets, err);
        if (cases[c].iterations == 3) {
            /* shift invariance: logits + 3 (the global max subtraction makes it exact in math) */
            real *shifted = malloc(sizeof(real) * (size_t)(n * k)), *again = malloc(sizeof(real) * (size_t)(n * k));
            for (long i = 0; i < n * k; i++) shifted[i] = logits[i] + 3;
            poa_sinkhorn_knopp(again, shifted, n, k, cases[c].tau, 3);
            double shift = relative_error(again, got, n * k);
            snprintf(label, sizeof label, "sinkhorn %s: invariant to adding 3 to every logit", cases[c].targets);
            CHECK(label, shift <= TOLERANCE, "relative change %.3g", shift);
            /* thread independence */
            poa_set_threads(1);
            poa_sinkhorn_knopp(again, logits, n, k, cases[c].tau, 3);
            poa_set_threads(3);
            poa_sinkhorn_knopp(shifted, logits, n, k, cases[c].tau, 3);
            snprintf(label, sizeof label, "sinkhorn %s: 1 and 3 threads bit-identical", cases[c].targets);
            CHECK(label, memcmp(again, shifted, sizeof(real) * (size_t)(n * k)) == 0, "results differ");
            free(shifted), free(again);
        }
        free(logits), free(want), free(got);
    }
    /* marginals: rows sum to 1 after the final row step; prototype sums are n/K only in the limit */
    long long count;
    real *logits = read_tensor(&f, "logits.a", &count);
    const long n = 12, k = 40;
    real *q = malloc(sizeof(real) * (size_t)(n * k));
    double row3, col3, row100, col100;
    poa_sinkhorn_knopp(q, logits, n, k, 0.04, 3);
    margins(q, n, k, 1.0, &row3, &col3);
    poa_sinkhorn_knopp(q, logits, n, k, 0.04, 100);
    margins(q, n, k, 1.0, &row100, &col100);
    CHECK("sinkhorn: every row sums to 1 (3 and 100 iterations)", row3 < 1e-5 && row100 < 1e-5,
          "max row gap %.3g, %.3g", row3, row100);
    CHECK("sinkhorn: prototype sums -> n/K (gap at 3 iterations > gap at 100 iterations, < 1e-4)",
          col3 > col100 && col100 < 1e-4, "relative gaps %.3g at 3, %.3g at 100", col3, col100);
    printf("  sinkhorn marginals: prototype sums off n/K by %.3g (3 iterations), %.3g (100)\n", col3, col100);
    free(q), free(logits);
    poa_safetensors_close(&f);
}

static void check_softmax(void) {
    poa_safetensors f;
    open_fixture(&f, FIXTURES "loss_softmax.safetensors");
    long long n1, n2;
    real *logits = read_tensor(&f, "logits", &n1), *want = read_tensor(&f, "targets", &n2);
    real *got = malloc(sizeof(real) * (size_t)n1);
    poa_softmax_rows(got, logits, 7, 40, atof(poa_safetensors_metadata(&f, "temperature")));
    double err = n1 == 280 && n2 == 280 ? relative_error(got, want, n1) : INFINITY;
    CHECK("softmax rows at T = 0.1 match torch", err <= TOLERANCE, "relative error %.3g", err);
    free(logits), free(want), free(got);
    poa_safetensors_close(&f);
}

static void check_cross_entropy(void) {
    poa_safetensors f;
    open_fixture(&f, FIXTURES "loss_ce.safetensors");
    long long n;
    real *targets = read_tensor(&f, "targets", &n), *logits = read_tensor(&f, "logits", &n);
    real *weight = read_tensor(&f, "weight", &n), *value = read_tensor(&f, "value", &n);
    real *want = read_tensor(&f, "dlogits", &n);
    const double t = atof(poa_safetensors_metadata(&f, "temperature"));
    const double scale = atof(poa_safetensors_metadata(&f, "scale"));
    const long rows = 10, k = 40;
    real *d = malloc(sizeof(real) * (size_t)(rows * k));
    memset(d, 0, sizeof(real) * (size_t)(rows * k));
    double got = poa_soft_cross_entropy(targets, logits, rows, k, t, weight, scale, d);
    double value_err = fabs(got - value[0]) / fabs(value[0]);
    CHECK("cross-entropy value matches torch", value_err <= TOLERANCE, "%.9g vs %.9g (relative %.3g)",
          got, (double)value[0], value_err);
    double err = relative_error(d, want, rows * k);
    CHECK("cross-entropy gradient matches torch autograd", err <= TOLERANCE,
          "relative error %.3g", err);
    printf("  cross-entropy: value relative error %.3g, gradient %.3g\n", value_err, err);
    double worst_row = 0, size = 0;
    for (long i = 0; i < rows; i++) {
        double s = 0;
        for (long j = 0; j < k; j++) s += d[i * k + j], size = fmax(size, fabs(d[i * k + j]));
        worst_row = fmax(worst_row, fabs(s));
    }
    CHECK("cross-entropy gradient rows sum to 0", worst_row <= 1e-5 * size, "worst row sum %.3g (entries up to %.3g)",
          worst_row, size);
    /* weight NULL: every row weight is `scale` */
    real *ones = malloc(sizeof(real) * (size_t)rows), *d1 = calloc((size_t)(rows * k), sizeof(real));
    real *d2 = calloc((size_t)(rows * k), sizeof(real));
    for (long i = 0; i < rows; i++) ones[i] = 1;
    double a = poa_soft_cross_entropy(targets, logits, rows, k, t, NULL, scale, d1);
    double b = poa_soft_cross_entropy(targets, logits, rows, k, t, ones, scale, d2);
    CHECK("cross-entropy: weight NULL == all weights 1", a == b && memcmp(d1, d2, sizeof(real) * (size_t)(rows * k)) == 0,
          "%.9g vs %.9g", a, b);
    double no_grad = poa_soft_cross_entropy(targets, logits, rows, k, t, weight, scale, NULL);
    CHECK("cross-entropy: the value without a gradient is the same", no_grad == got, "%.9g vs %.9g", no_grad, got);
    memcpy(d1, d, sizeof(real) * (size_t)(rows * k));
    poa_soft_cross_entropy(targets, logits, rows, k, t, weight, scale, d1);
    for (long i = 0; i < rows * k; i++) d1[i] *= (real)0.5;
    double twice = relative_error(d1, d, rows * k);
    CHECK("cross-entropy: the gradient accumulates (+=)", twice <= 1e-6, "relative error %.3g", twice);
    poa_set_threads(1);
    memset(d1, 0, sizeof(real) * (size_t)(rows * k));
    a = poa_soft_cross_entropy(targets, logits, rows, k, t, weight, scale, d1);
    poa_set_threads(3);
    memset(d2, 0, sizeof(real) * (size_t)(rows * k));
    b = poa_soft_cross_entropy(targets, logits, rows, k, t, weight, scale, d2);
    CHECK("cross-entropy: 1 and 3 threads bit-identical", a == b && memcmp(d1, d2, sizeof(real) * (size_t)(rows * k)) == 0,
          "%.17g vs %.17g", a, b);
    free(ones), free(d1), free(d2);
    free(targets), free(logits), free(weight), free(value), free(want), free(d);
    poa_safetensors_close(&f);
}

static void check_koleo(void) {
    poa_safetensors f;
    open_fixture(&f, FIXTURES "loss_koleo.safetensors");
    struct { const char *suffix; long n, d; double scale; } cases[] = { { "a", 9, 24, 0.1 }, { "b", 6, 16, 1.0 },
                                                                  { "c", 5, 8, 0.1 } };
    char name[64], label[256];
    for (int c = 0; c < 3; c++) {
        long long count;
        snprintf(name, sizeof name, "x.%s", cases[c].suffix);
        real *x = read_tensor(&f, name, &count);
        snprintf(name, sizeof name, "value.%s", cases[c].suffix);
        real *value = read_tensor(&f, name, &count);
        snprintf(name, sizeof name, "dx.%s", cases[c].suffix);
        real *want = read_tensor(&f, name, &count);
        const long n = cases[c].n, d = cases[c].d;
        real *dx = calloc((size_t)(n * d), sizeof(real)), *dx2 = calloc((size_t)(n * d), sizeof(real));
        double got = poa_koleo(x, n, d, cases[c].scale, dx);
        double value_err = fabs(got - value[0]) / fabs(value[0]);
        /* case b: row 4 (norm 1e-9 < eps) has a gradient ~1e8 times the others: compare the
           other rows on their own scale too */
        double err = count == n * d ? relative_error(dx, want, n * d) : INFINITY;
        double rest = c == 1 ? fmax(relative_error(dx, want, 4 * d), relative_error(dx + 5 * d, want + 5 * d, d))
                             : err;
        snprintf(label, sizeof label, "koleo %s (%ldx%ld%s): value and gradient match torch",
                 cases[c].suffix, n, d, c == 1 ? ", a row of norm 1e-9" : c == 2 ? ", two equal rows" : "");
        CHECK(label, value_err <= TOLERANCE && err <= TOLERANCE && rest <= TOLERANCE,
              "value %.9g vs %.9g (relative %.3g), gradient %.3g (other rows %.3g)", got,
              (double)value[0], value_err, err, rest);
        printf("  koleo %s: value relative error %.3g, gradient %.3g (rows of normal norm %.3g)\n",
               cases[c].suffix, value_err, err, rest);
        poa_koleo(x, n, d, cases[c].scale, dx2);
        poa_koleo(x, n, d, cases[c].scale, dx2);
        for (long i = 0; i < n * d; i++) dx2[i] *= (real)0.5;
        double twice = relative_error(dx2, dx, n * d);
        snprintf(label, sizeof label, "koleo %s: the gradient accumulates (+=)", cases[c].suffix);
        CHECK(label, twice <= 1e-6, "relative error %.3g", twice);
        free(dx2);
        double no_grad = poa_koleo(x, n, d, cases[c].scale, NULL);
        snprintf(label, sizeof label, "koleo %s: the value without a gradient is the same", cases[c].suffix);
        CHECK(label, no_grad == got, "%.17g vs %.17g", no_grad, got);
        free(x), free(value), free(want), free(dx);
    }
    poa_safetensors_close(&f);
}

int main(void) {
    check_sinkhorn();
    check_softmax();
    check_cross_entropy();
    check_koleo();
    CHECK_EXIT();
}
