/* f64_heads_gradcheck.c: in fp64, the analytic gradients of the heads (every parameter and the
   input, for the intact width and an elastic width), of the soft cross-entropy (logits) and of
   KoLeo (features) equal central differences. Independent of PyTorch: it checks the backward
   against the forward that the golden tests check. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "head.h"
#include "loss.h"
#include "random.h"

#define ROWS 5

static void fill_normal(real *x, long n, double offset, double scale, uint64_t stream) {
    for (long i = 0; i < n; i++) x[i] = offset + scale * poa_normal(99, stream, (uint64_t)i);
}

/* sum_h sum(logits_h * g_h) */
static double head_loss(poa_heads_pass *pass, const real *params, const real *x, real *const *g) {
    poa_heads_forward(pass, params, x);
    double loss = 0;
    for (int h = 0; h < pass->heads->config.heads; h++)
        for (long i = 0; i < pass->rows * pass->heads->config.prototypes[h]; i++)
            loss += pass->logits[h][i] * g[h][i];
    return loss;
}

/* max |analytic - numeric| / max |numeric| over the n entries of v (perturbed in place). */
static double central_difference_error(poa_heads_pass *pass, real *params, real *x, real *const *g,
                                       real *v, const real *analytic, long n) {
    const double step = 1e-6;
    double diff = 0, size = 0;
    for (long i = 0; i < n; i++) {
        real keep = v[i];
        v[i] = keep + step;
        double up = head_loss(pass, params, x, g);
        v[i] = keep - step;
        double down = head_loss(pass, params, x, g);
        v[i] = keep;
        double numeric = (up - down) / (2 * step);
        diff = fmax(diff, fabs(numeric - analytic[i]));
        size = fmax(size, fabs(numeric));
    }
    return diff / size;
}

static void check_heads(int width) {
    poa_head_config config = { .heads = 2, .in_dim = 12, .hidden = 10, .bottleneck = 6,
                               .prototypes = { 7, 9 } };
    poa_heads heads;
    poa_heads_pass pass;
    poa_error e = { { 0 } };
    if (poa_heads_init(&heads, &config, &e) || poa_heads_pass_init(&pass, &heads, width, ROWS, &e)) {
        printf("FAIL heads gradcheck: %s\n", e.message);
        return;
    }
    real *params = malloc(sizeof(real) * (size_t)heads.parameter_count);
    for (int i = 0; i < heads.tensor_count; i++) {
        const poa_vit_tensor *t = &heads.tensors[i];
        int is_g = strstr(t->name, "weight_g") != NULL, is_matrix = t->ndim == 2 && !is_g;
        fill_normal(params + t->offset, t->count, is_g ? 1 : 0,
                    is_g ? 0.3 : is_matrix ? 1 / sqrt((double)t->shape[1]) : 0.1, (uint64_t)i);
    }
    real *x = malloc(sizeof(real) * ROWS * (size_t)width), *g[2], *dx = malloc(sizeof(real) * ROWS * (size_t)width);
    fill_normal(x, ROWS * width, 0, 1, 100);
    for (int h = 0; h < 2; h++) {
        g[h] = malloc(sizeof(real) * ROWS * (size_t)config.prototypes[h]);
        fill_normal(g[h], ROWS * config.prototypes[h], 0, 1, 200 + (uint64_t)h);
    }
    real *grads = calloc((size_t)heads.parameter_count, sizeof(real));
    head_loss(&pass, params, x, g);
    poa_heads_backward(&pass, params, grads, g, dx);
    char label[160];
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < heads.tensor_count; i++) {
        const poa_vit_tensor *t = &heads.tensors[i];
        double err = central_difference_error(&pass, params, x, g, params + t->offset, grads + t->offset, t->count);
        if (err > worst) worst = err, worst_name = t->name;
    }
    snprintf(label, sizeof label, "heads gradcheck width %d of %d: all %d parameters", width,
             config.in_dim, heads.tensor_count);
    CHECK(label, worst < 1e-7, "worst %s %.3g", worst_name, worst);
    printf("  width %d: worst parameter gradient error %.3g (%s)\n", width, worst, worst_name);
    double err = central_difference_error(&pass, params, x, g, x, dx, ROWS * width);
    snprintf(label, sizeof label, "heads gradcheck width %d of %d: dx", width, config.in_dim);
    CHECK(label, err < 1e-7, "%.3g", err);
    free(params), free(x), free(dx), free(g[0]), free(g[1]), free(grads);
    poa_heads_pass_free(&pass);
    poa_heads_free(&heads);
}

static void check_cross_entropy(void) {
    enum { N = 4, K = 11 };
    real targets[N * K], logits[N * K], weight[N], d[N * K] = { 0 };
    for (int i = 0; i < N * K; i++) targets[i] = poa_uniform(5, 1, (uint64_t)i);
    for (int j = 0; j < K; j++) targets[2 * K + j] = 0; /* a padding row */
    fill_normal(logits, N * K, 0, 0.5, 300);
    for (int i = 0; i < N; i++) weight[i] = 0.5 + i;
    poa_soft_cross_entropy(targets, logits, N, K, 0.1, weight, 0.3, d);
    double diff = 0, size = 0;
    for (int i = 0; i < N * K; i++) {
        real keep = logits[i];
        logits[i] = keep + 1e-6;
        double up = poa_soft_cross_entropy(targets, logits, N, K, 0.1, weight, 0.3, NULL);
        logits[i] = keep - 1e-6;
        double down = poa_soft_cross_entropy(targets, logits, N, K, 0.1, weight, 0.3, NULL);
        logits[i] = keep;
        double numeric = (up - down) / 2e-6;
        diff = fmax(diff, fabs(numeric - d[i])), size = fmax(size, fabs(numeric));
    }
    CHECK("cross-entropy gradcheck (targets not normalised, a zero row, weights)", diff / size < 1e-7,
          "%.3g", diff / size);
}

static void check_koleo(void) {
    enum { N = 7, D = 5 };
    real x[N * D], d[N * D] = { 0 };
    fill_normal(x, N * D, 0, 1, 400);
    poa_koleo(x, N, D, 0.1, d);
    double diff = 0, size = 0;
    for (int i = 0; i < N * D; i++) {
        real keep = x[i];
        x[i] = keep + 1e-6;
        double up = poa_koleo(x, N, D, 0.1, NULL);
        x[i] = keep - 1e-6;
        double down = poa_koleo(x, N, D, 0.1, NULL);
        x[i] = keep;
        double numeric = (up - down) / 2e-6;
        diff = fmax(diff, fabs(numeric - d[i])), size = fmax(size, fabs(numeric));
    }
    CHECK("koleo gradcheck", diff / size < 1e-7, "%.3g", diff / size);
}

int main(void) {
    poa_set_threads(1); /* thousands of tiny forwards: threads only add overhead */
    check_heads(12);
    check_heads(8);
    check_cross_entropy();
    check_koleo();
    CHECK_EXIT();
}
