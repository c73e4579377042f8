/* test_kernels.c: every specialized ViT kernel set (build/gen/registry.c, all widths of all
   recipes) against the generic set of its shape (build/gen/vit_generic.c: the same op
   descriptions with the shape read at run time) on random inputs: every op, forward and
   backward, relative error max|got - want| / max|want| <= 1e-5 in fp32 (1e-12 in fp64); and
   both give bitwise the same results with 1 and 2 OpenMP threads. This checks the lowering
   and the compile-time shapes; attention's tiled path (32 tokens or more: the small widths
   here run 37) against its plain path, which the generic set always runs.
   The op descriptions themselves are checked independently of gen/ by test_vit_golden.c
   (PyTorch's forward and every parameter gradient through all ten ops, with masks and drop
   path, attention on 17 and 5 tokens) and f64_vit_gradcheck.c (central differences). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kernels.h"

#ifdef POA_FP64
#define TOLERANCE 1e-12
#else
#define TOLERANCE 1e-5
#endif

typedef struct {
    long batch, patches, tokens, rows;
} shape;

/* Packed outputs of one op run: every output (written and accumulated) one after another. */
typedef struct {
    real *v;
    long n;
} packed;

static unsigned long long rng_state;

/* Uniform in [lo, hi), from a 64-bit LCG: the same sequence for every run with one seed. */
static real uniform(double lo, double hi) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (real)(lo + (hi - lo) * (double)(rng_state >> 11) / 9007199254740992.0);
}

static real *random_buffer(long n, double lo, double hi) {
    real *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    for (long i = 0; i < n; i++) x[i] = uniform(lo, hi);
    return x;
}

/* Appends n values of x to the packed outputs. */
static void pack(packed *p, const real *x, long n) {
    p->v = realloc(p->v, (size_t)(p->n + n) * sizeof *p->v);
    memcpy(p->v + p->n, x, (size_t)n * sizeof *x);
    p->n += n;
}

enum { OP_LAYERNORM, OP_GELU, OP_ATTENTION, OP_RESIDUAL, OP_RESIDUAL_SCALED, OP_TOKENS,
       OP_TOKENS_MASKED, OP_COUNT };
static const char *op_names[OP_COUNT] = {
    "layernorm", "gelu", "attention", "residual", "residual(sample_scale)", "tokens", "tokens(mask)",
};

static packed run_layernorm(const poa_vit_kernels *k, const shape *s) {
    const int D = k->width;
    const long rows = s->rows;
    real *x = random_buffer(rows * D, -1.5, 2.5), *w = random_buffer(D, 0.5, 1.5);
    real *b = random_buffer(D, -0.5, 0.5), *dy = random_buffer(rows * D, -1, 1);
    real *dw = random_buffer(D, -1, 1), *db = random_buffer(D, -1, 1);
    real *y = calloc((size_t)rows * D, sizeof *y), *dx = calloc((size_t)rows * D, sizeof *dx);
    real *mean = calloc((size_t)rows, sizeof *mean), *rstd = calloc((size_t)rows, sizeof *rstd);
    k->layernorm_forward(k, y, mean, rstd, x, w, b, rows);
    k->layernorm_backward(k, dx, dw, db, dy, x, mean, rstd, w, rows);
    packed p = { 0 };
    pack(&p, y, rows * D); pack(&p, mean, rows); pack(&p, rstd, rows);
    pack(&p, dx, rows * D); pack(&p, dw, D); pack(&p, db, D);
    free(x); free(w); free(b); free(dy); free(dw); free(db); free(y); free(dx); free(mean); free(rstd);
    return p;
}

static packed run_gelu(const poa_vit_kernels *k, const shape *s) {
    const long n = s->rows * k->hidden;
    real *u = random_buffer(n, -4, 4), *dg = random_buffer(n, -1, 1);
    real *g = calloc((size_t)n, sizeof *g), *du = calloc((size_t)n, sizeof *du);
    k->gelu_forward(k, g, u, s->rows);
    k->gelu_backward(k, du, dg, u, s->rows);
    packed p = { 0 };
    pack(&p, g, n); pack(&p, du, n);
    free(u); free(dg); free(g); free(du);
    return p;
}

static packed run_attention(const poa_vit_kernels *k, const shape *s) {
    const int D = k->width, H = k->heads;
    const long rows = s->rows, T = s->tokens, pn = s->batch * H * T * T;
    real *qkv = random_buffer(rows * 3 * D, -1, 1), *dout = random_buffer(rows * D, -1, 1);
    real *out = calloc((size_t)rows * D, sizeof *out), *probs = calloc((size_t)pn, sizeof *probs);
    real *dqkv = calloc((size_t)rows * 3 * D, sizeof *dqkv), *work = calloc((size_t)pn, sizeof *work);
    k->attention_forward(k, out, probs, qkv, s->batch, T);
    k->attention_backward(k, dqkv, work, dout, qkv, probs, s->batch, T);
    packed p = { 0 };
    pack(&p, out, rows * D); pack(&p, probs, pn); pack(&p, dqkv, rows * 3 * D);
    free(qkv); free(dout); free(out); free(probs); free(dqkv); free(work);
    return p;
}

static packed run_residual(const poa_vit_kernels *k, const shape *s, int scaled) {
    const int D = k->width;
    const long n = s->rows * D;
    real *x = random_buffer(n, -1, 1), *h = random_buffer(n, -1, 1), *gamma = random_buffer(D, -1, 1);
    real *scale = random_buffer(s->batch, 0, 1.25), *dx = random_buffer(n, -1, 1);
    real *dgamma = random_buffer(D, -1, 1), *dh = calloc((size_t)n, sizeof *dh);
    scale[0] = 0; /* a dropped sample */
    k->residual_forward(k, x, h, gamma, scaled ? scale : NULL, s->batch, s->tokens);
    k->residual_backward(k, dh, dgamma, dx, h, gamma, scaled ? scale : NULL, s->batch, s->tokens);
    packed p = { 0 };
    pack(&p, x, n); pack(&p, dh, n); pack(&p, dgamma, D);
    free(x); free(h); free(gamma); free(scale); free(dx); free(dgamma); free(dh);
    return p;
}

static packed run_tokens(const poa_vit_kernels *k, const shape *s, int masked) {
    const int D = k->width;
    const long N = s->patches, T = s->tokens, B = s->batch, pos_ld = D + 16;
    real *patch = random_buffer(B * N * D, -1, 1), *cls = random_buffer(D, -1, 1);
    real *mask_token = random_buffer(D, -1, 1), *pos = random_buffer(T * pos_ld, -1, 1);
    real *dx = random_buffer(B * T * D, -1, 1), *dcls = random_buffer(D, -1, 1);
    real *dmask = random_buffer(D, -1, 1), *dpos = random_buffer(T * pos_ld, -1, 1);
    real *x = calloc((size_t)(B * T * D), sizeof *x), *dpatch = random_buffer(B * N * D, -1, 1);
    unsigned char *mask = calloc((size_t)(B * N), 1);
    for (long i = 0; i < B * N; i++) mask[i] = uniform(0, 1) < 0.4;
    const unsigned char *m = masked ? mask : NULL;
    k->tokens_forward(k, x, patch, cls, mask_token, pos, pos_ld, m, B, N);
    k->tokens_backward(k, dpatch, dcls, dmask, dpos, pos_ld, dx, m, B, N);
    packed p = { 0 };
    pack(&p, x, B * T * D); pack(&p, dpatch, B * N * D); pack(&p, dcls, D);
    pack(&p, dmask, D); pack(&p, dpos, T * pos_ld);
    free(patch); free(cls); free(mask_token); free(pos); free(dx); free(dcls); free(dmask);
    free(dpos); free(x); free(dpatch); free(mask);
    return p;
}

static packed run(const poa_vit_kernels *k, const shape *s, int op) {
    rng_state = 0x9e3779b97f4a7c15ULL + (unsigned long long)op; /* same inputs for every set */
    switch (op) {
    case OP_LAYERNORM: return run_layernorm(k, s);
    case OP_GELU: return run_gelu(k, s);
    case OP_ATTENTION: return run_attention(k, s);
    case OP_RESIDUAL: return run_residual(k, s, 0);
    case OP_RESIDUAL_SCALED: return run_residual(k, s, 1);
    case OP_TOKENS: return run_tokens(k, s, 0);
    default: return run_tokens(k, s, 1);
    }
}

static double relative_error(const packed *got, const packed *want) {
    double diff = 0, scale = 0;
    for (long i = 0; i < want->n; i++) {
        double d = fabs((double)got->v[i] - (double)want->v[i]);
        if (!(d <= diff)) diff = d; /* NaN propagates */
        if (fabs((double)want->v[i]) > scale) scale = fabs((double)want->v[i]);
    }
    return scale > 0 ? diff / scale : diff;
}

static int same_bits(const packed *a, const packed *b) {
    return a->n == b->n && memcmp(a->v, b->v, (size_t)a->n * sizeof *a->v) == 0;
}

static void check_set(const poa_vit_kernels *k, const shape *s) {
    poa_vit_kernels generic;
    poa_vit_kernels_generic_for(&generic, k->width, k->head_dim, k->hidden);
    char name[160];
    for (int op = 0; op < OP_COUNT; op++) {
        omp_set_num_threads(2);
        packed want = run(&generic, s, op), two = run(k, s, op);
        omp_set_num_threads(1);
        packed want_one = run(&generic, s, op), one = run(k, s, op);
        double err = relative_error(&two, &want);
        snprintf(name, sizeof name, "kernels w%d_h%d_f%d %s vs the generic set (rel err %.2g)", k->width,
                 k->head_dim, k->hidden, op_names[op], err);
        CHECK(name, two.n == want.n && err <= TOLERANCE, "relative error %.3g > %g (%ld values)", err,
              TOLERANCE, want.n);
        snprintf(name, sizeof name, "kernels w%d_h%d_f%d %s same with 1 and 2 threads (and generic)", k->width,
                 k->head_dim, k->hidden, op_names[op]);
        CHECK(name, same_bits(&one, &two) && same_bits(&want_one, &want), "results differ with the thread count");
        free(want.v); free(want_one.v); free(two.v); free(one.v);
    }
}

int main(void) {
    CHECK("kernels registry is not empty", poa_vit_kernel_set_count > 0, "no generated sets");
    for (int i = 0; i < poa_vit_kernel_set_count; i++) {
        const poa_vit_kernels *k = poa_vit_kernel_sets[i];
        char name[128];
        snprintf(name, sizeof name, "kernels registry finds w%d_h%d_f%d", k->width, k->head_dim, k->hidden);
        CHECK(name, poa_vit_kernels_find(k->width, k->head_dim, k->hidden) == k &&
                    strcmp(k->origin, "generated") == 0 && k->heads * k->head_dim == k->width,
              "find returned another set, or the set's fields are wrong");
    }
    CHECK("kernels registry returns NULL for an absent shape", poa_vit_kernels_find(100, 64, 400) == NULL,
          "found a set for width 100");
    /* The paper's ViT-L family (recipes/vit_l16_ee1200.lua) needs 11 sets. */
    int found = 0;
    for (int w = 384; w <= 1024; w += 64) found += poa_vit_kernels_find(w, 64, 4 * w) != NULL;
    CHECK("kernels registry holds the 11 sets of the ViT-L family", found == 11, "found %d", found);

    for (int i = 0; i < poa_vit_kernel_set_count; i++) {
        const poa_vit_kernels *k = poa_vit_kernel_sets[i];
        /* Few rows for the wide sets (fast); more tokens than a warp for the small ones. */
        shape s = k->width >= 256 ? (shape){ .batch = 2, .patches = 6 } : (shape){ .batch = 3, .patches = 36 };
        s.tokens = s.patches + 1;
        s.rows = s.batch * s.tokens;
        check_set(k, &s);
    }

    /* A shape no recipe of the build has: its generated set, compiled at run time into a fresh
       cache (runtime/kernels_compiled.c), against the generic set like the build's own sets. */
    char cache[] = "/tmp/poa_test_kernels.XXXXXX";
    CHECK("a temporary kernel cache", mkdtemp(cache) != NULL, "mkdtemp failed");
    setenv("POA_CACHE", cache, 1);
    CHECK("w48_h16_f192 is not in the build", poa_vit_kernels_find(48, 16, 192) == NULL, "it is: pick another shape");
    const poa_vit_kernels *k = poa_vit_kernels_for(48, 16, 192);
    CHECK("poa_vit_kernels_for compiles the generated set of an out-of-build width",
          k && strcmp(k->origin, "compiled at run time") == 0 && k->width == 48 && k->heads == 3 && k->hidden == 192,
          "got the %s set", k ? k->origin : "(none)");
    CHECK("poa_vit_kernels_for returns the same set the second time", poa_vit_kernels_for(48, 16, 192) == k,
          "a different set");
    if (k && strcmp(k->origin, "compiled at run time") == 0) {
        shape s = { .batch = 3, .patches = 36 };
        s.tokens = s.patches + 1;
        s.rows = s.batch * s.tokens;
        check_set(k, &s);
    }
    char command[128];
    snprintf(command, sizeof command, "rm -rf '%s'", cache);
    if (system(command) != 0) fprintf(stderr, "could not remove %s\n", cache);
    CHECK_EXIT();
}
