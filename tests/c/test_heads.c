/* test_heads.c: the projection heads (runtime/head.c) against PyTorch. For the intact width
   (96) and an elastic width (64) of a 2-head family (in 96, hidden 48, bottleneck 16, K 40/56),
   the logits of every head, d loss / d x and the gradient of every parameter must match the
   fixtures of tests/golden/make_head_loss_fixtures.py within a relative error of 1e-4
   (max |ours - torch| / max |torch| over each tensor). Also: gradients accumulate (+=) and dx is
   written; an elastic backward leaves columns >= width of mlp{h}.0.weight exactly zero; the
   results are bit-identical with 1 and 3 threads; the reference init; bad configs fail with a
   message. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "fixture_util.h"
#include "head.h"
#include "safetensors.h"



/* Reads the parameters by name with a check of each shape. */
static void load_params(const poa_heads *heads, real *params, const poa_safetensors *f) {
    for (int i = 0; i < heads->tensor_count; i++) {
        const poa_vit_tensor *t = &heads->tensors[i];
        const poa_tensor_info *info = poa_safetensors_find(f, t->name);
        int same = info && info->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = info->shape[d] == t->shape[d];
        if (!same) {
            printf("FAIL head_params: tensor %s missing or of another shape\n", t->name);
            exit(1);
        }
        long long n;
        real *x = read_tensor(f, t->name, &n);
        memcpy(params + t->offset, x, sizeof(real) * (size_t)n);
        free(x);
    }
}

typedef struct head_result {
    real *logits[POA_MAX_HEADS], *grads, *dx;
} head_result;

/* Forward and backward (twice when `twice`) of one case; dx starts as garbage. */
static void run_case(const poa_heads *heads, const real *params, int width, const real *x,
                     real *const *dlogits, int twice, head_result *out) {
    poa_error e = { { 0 } };
    poa_heads_pass pass;
    if (poa_heads_pass_init(&pass, heads, width, 7, &e)) {
        printf("FAIL pass: %s\n", e.message);
        exit(1);
    }
    out->grads = calloc((size_t)heads->parameter_count, sizeof(real));
    out->dx = malloc(sizeof(real) * 7 * (size_t)width);
    for (long i = 0; i < 7L * width; i++) out->dx[i] = 1e3f;
    poa_heads_forward(&pass, params, x);
    for (int pass_index = 0; pass_index < (twice ? 2 : 1); pass_index++)
        poa_heads_backward(&pass, params, out->grads, dlogits, out->dx);
    for (int h = 0; h < heads->config.heads; h++) {
        long n = 7L * heads->config.prototypes[h];
        out->logits[h] = malloc(sizeof(real) * (size_t)n);
        memcpy(out->logits[h], pass.logits[h], sizeof(real) * (size_t)n);
    }
    poa_heads_pass_free(&pass);
}

static void free_result(const poa_heads *heads, head_result *r) {
    for (int h = 0; h < heads->config.heads; h++) free(r->logits[h]);
    free(r->grads), free(r->dx);
}

static void check_case(const poa_heads *heads, const real *params, const char *name) {
    char path[256], label[256];
    snprintf(path, sizeof path, FIXTURES "head_%s.safetensors", name);
    poa_safetensors f;
    poa_error e = { { 0 } };
    if (poa_safetensors_open(&f, path, &e)) {
        printf("FAIL %s\n", e.message);
        return;
    }
    const int width = atoi(poa_safetensors_metadata(&f, "width"));
    const int count = heads->config.heads, in = heads->config.in_dim;
    long long n;
    real *x = read_tensor(&f, "input.x", &n), *dlogits[POA_MAX_HEADS];
    for (int h = 0; h < count; h++) {
        snprintf(label, sizeof label, "dlogits.%d", h);
        dlogits[h] = read_tensor(&f, label, &n);
    }
    head_result once, twice;
    run_case(heads, params, width, x, dlogits, 0, &once);

    double worst = 0;
    for (int h = 0; h < count; h++) {
        snprintf(label, sizeof label, "logits.%d", h);
        real *want = read_tensor(&f, label, &n);
        worst = fmax(worst, n == 7L * heads->config.prototypes[h] ? relative_error(once.logits[h], want, n) : INFINITY);
        free(want);
    }
    snprintf(label, sizeof label, "heads %s: logits of %d heads match torch", name, count);
    CHECK(label, worst <= TOLERANCE, "relative error %.3g", worst);
    printf("  %s: logits relative error %.3g\n", name, worst);

    real *want_dx = read_tensor(&f, "dx", &n);
    double err = n == 7L * width ? relative_error(once.dx, want_dx, n) : INFINITY;
    snprintf(label, sizeof label, "heads %s: dx (written, summed over heads) matches torch", name);
    CHECK(label, err <= TOLERANCE, "relative error %.3g", err);
    printf("  %s: dx relative error %.3g\n", name, err);
    free(want_dx);

    int bad = 0;
    const char *worst_name = "";
    worst = 0;
    for (int i = 0; i < heads->tensor_count; i++) {
        const poa_vit_tensor *t = &heads->tensors[i];
        char grad_name[96];
        snprintf(grad_name, sizeof grad_name, "grad.%s", t->name);
        real *want = read_tensor(&f, grad_name, &n);
        err = n == t->count ? relative_error(once.grads + t->offset, want, n) : INFINITY;
        if (err > TOLERANCE) {
            bad++;
            printf("  %s %s: relative error %.3g\n", name, grad_name, err);
        }
        if (err > worst) worst = err, worst_name = t->name;
        free(want);
    }
    snprintf(label, sizeof label, "heads %s: gradients of all %d parameters match torch", name,
             heads->tensor_count);
    CHECK(label, bad == 0, "%d tensors off; worst %s %.3g", bad, worst_name, worst);
    printf("  %s: worst gradient relative error %.3g (%s)\n", name, worst, worst_name);

    /* columns >= width of every mlp{h}.0.weight: exactly zero gradient */
    int nonzero_outside = 0, zero_inside_rows = 0;
    for (int h = 0; h < count; h++) {
        const real *g = once.grads + heads->head[h].w0;
        for (int r = 0; r < heads->config.hidden; r++) {
            int any = 0;
            for (int c = 0; c < in; c++) {
                if (c >= width && g[r * in + c] != 0) nonzero_outside++;
                if (c < width && g[r * in + c] != 0) any = 1;
            }
            zero_inside_rows += !any;
        }
    }
    snprintf(label, sizeof label, "heads %s: mlp.0.weight gradient exactly 0 in columns >= %d, nonzero inside",
             name, width);
    CHECK(label, nonzero_outside == 0 && zero_inside_rows == 0, "%d nonzero outside, %d all-zero rows inside",
          nonzero_outside, zero_inside_rows);

    /* a second backward doubles the gradients (+=) and rewrites dx (not +=) */
    run_case(heads, params, width, x, dlogits, 1, &twice);
    double accumulate = relative_error(twice.dx, once.dx, 7L * width);
    for (long i = 0; i < heads->parameter_count; i++) twice.grads[i] *= (real)0.5;
    accumulate = fmax(accumulate, relative_error(twice.grads, once.grads, heads->parameter_count));
    snprintf(label, sizeof label, "heads %s: grads accumulate (+=), dx is written", name);
    CHECK(label, accumulate <= 1e-6, "relative error %.3g", accumulate);
    free_result(heads, &twice);

    /* bit-identical with 1 and 3 threads */
    head_result one, three;
    poa_set_threads(1);
    run_case(heads, params, width, x, dlogits, 0, &one);
    poa_set_threads(3);
    run_case(heads, params, width, x, dlogits, 0, &three);
    int same = memcmp(one.grads, three.grads, sizeof(real) * (size_t)heads->parameter_count) == 0 &&
               memcmp(one.dx, three.dx, sizeof(real) * 7 * (size_t)width) == 0;
    for (int h = 0; h < count; h++)
        same = same && memcmp(one.logits[h], three.logits[h],
                              sizeof(real) * 7 * (size_t)heads->config.prototypes[h]) == 0;
    snprintf(label, sizeof label, "heads %s: 1 and 3 threads give bit-identical results", name);
    CHECK(label, same, "results differ");
    free_result(heads, &one), free_result(heads, &three);

    free_result(heads, &once);
    free(x);
    for (int h = 0; h < count; h++) free(dlogits[h]);
    poa_safetensors_close(&f);
}

/* Reference init: weights in [-2, 2] with std ~0.02, biases 0, weight_g 1,
   weight_v within +-1/sqrt(bottleneck) and spread over it. */
static void check_init(const poa_heads *heads) {
    real *p = malloc(sizeof(real) * (size_t)heads->parameter_count);
    poa_heads_init_parameters(heads, p, 11);
    int bad = 0;
    double bound = 1.0 / sqrt((double)heads->config.bottleneck), vmax = 0, sum2 = 0;
    long weights = 0;
    for (int h = 0; h < heads->config.heads; h++) {
        const poa_head_offsets *o = &heads->head[h];
        const long hid = heads->config.hidden, k = heads->config.prototypes[h];
        const long bot = heads->config.bottleneck;
        for (long i = 0; i < hid; i++) bad += p[o->b0 + i] != 0 || p[o->b1 + i] != 0;
        for (long i = 0; i < bot; i++) bad += p[o->b2 + i] != 0;
        for (long i = 0; i < k; i++) bad += p[o->weight_g + i] != 1;
        for (long i = 0; i < k * bot; i++) {
            bad += fabs(p[o->weight_v + i]) > bound;
            vmax = fmax(vmax, fabs(p[o->weight_v + i]));
        }
        long w0 = hid * heads->config.in_dim, w1 = hid * hid, w2 = bot * hid;
        const long starts[3] = { o->w0, o->w1, o->w2 }, counts[3] = { w0, w1, w2 };
        for (int t = 0; t < 3; t++)
            for (long i = 0; i < counts[t]; i++) {
                double v = p[starts[t] + i];
                bad += fabs(v) > 2;
                sum2 += v * v, weights++;
            }
    }
    double std = sqrt(sum2 / (double)weights);
    CHECK("heads init: biases 0, weight_g 1, weight_v in +-1/sqrt(bottleneck), weights std 0.02",
          bad == 0 && fabs(std - 0.02) < 0.002 && vmax > 0.9 * bound,
          "%d bad values, weight std %.4f, max |weight_v| %.4f of bound %.4f", bad, std, vmax, bound);
    free(p);
}

static void check_errors(void) {
    poa_error e = { { 0 } };
    poa_heads heads;
    poa_head_config bad = { .heads = 9, .in_dim = 8, .hidden = 8, .bottleneck = 4, .prototypes = { 4 } };
    int rc1 = poa_heads_init(&heads, &bad, &e);
    int named = strstr(e.message, "heads") != NULL;
    bad.heads = 2, bad.prototypes[1] = 0;
    int rc2 = poa_heads_init(&heads, &bad, &e);
    named = named && strstr(e.message, "prototypes[1]") != NULL;
    bad.prototypes[1] = 4;
    int rc3 = poa_heads_init(&heads, &bad, &e);
    poa_heads_pass pass;
    int rc4 = poa_heads_pass_init(&pass, &heads, 9, 3, &e);
    named = named && strstr(e.message, "width 9") != NULL;
    poa_heads_free(&heads);
    CHECK("heads: bad configs and widths fail with a message naming the field",
          rc1 == -1 && rc2 == -1 && rc3 == 0 && rc4 == -1 && named, "rc %d %d %d %d, last '%s'",
          rc1, rc2, rc3, rc4, e.message);
}

int main(void) {
    poa_safetensors f;
    poa_error e = { { 0 } };
    if (poa_safetensors_open(&f, FIXTURES "head_params.safetensors", &e)) {
        printf("FAIL %s\n", e.message);
        return 1;
    }
    poa_head_config config = { 0 };
    config.heads = atoi(poa_safetensors_metadata(&f, "heads"));
    config.in_dim = atoi(poa_safetensors_metadata(&f, "in_dim"));
    config.hidden = atoi(poa_safetensors_metadata(&f, "hidden"));
    config.bottleneck = atoi(poa_safetensors_metadata(&f, "bottleneck"));
    const char *k = poa_safetensors_metadata(&f, "prototypes");
    for (int h = 0; h < config.heads && h < POA_MAX_HEADS; h++) {
        config.prototypes[h] = atoi(k);
        k = strchr(k, ',') ? strchr(k, ',') + 1 : k;
    }
    poa_heads heads;
    if (poa_heads_init(&heads, &config, &e)) {
        printf("FAIL heads init: %s\n", e.message);
        return 1;
    }
    real *params = malloc(sizeof(real) * (size_t)heads.parameter_count);
    load_params(&heads, params, &f);
    poa_safetensors_close(&f);
    check_case(&heads, params, "intact_96");
    check_case(&heads, params, "elastic_64");
    check_init(&heads);
    check_errors();
    free(params);
    poa_heads_free(&heads);
    CHECK_EXIT();
}
