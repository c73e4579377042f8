/* test_vit_elastic.c: properties of the elastic ViT on the CPU backend:
   members differ, an elastic-only backward leaves every gradient entry outside
   the member's slice (and every unselected block) exactly zero, and the two
   students accumulate into one gradient buffer. */
#include <string.h>

#include "check.h"
#include "vit_test_util.h"

/* Is entry idx of tensor t inside member (D, F, blocks)? Dimensions equal to
   Dmax keep their first D entries, Fmax the first F, 3 Dmax (q, k, v) the first
   D of each third; other dimensions (channels, pixels, tokens) are whole. */
static int inside_slice(const poa_vit *m, const poa_vit_tensor *t, long idx, int width,
                        const poa_vit_pass *pass) {
    const long Dmax = m->config.max_width, Fmax = Dmax * m->config.mlp_ratio;
    int block;
    if (sscanf(t->name, "blocks.%d.", &block) == 1) {
        int used = 0;
        for (int j = 0; j < pass->depth; j++) used |= pass->block_ids[j] == block;
        if (!used) return 0;
    }
    for (int d = t->ndim - 1; d >= 0; d--) {
        long n = (long)t->shape[d], i = idx % n;
        idx /= n;
        if (n == Dmax && i >= width) return 0;
        if (n == Fmax && i >= width * m->config.mlp_ratio) return 0;
        if (n == 3 * Dmax && i % Dmax >= width) return 0;
    }
    return 1;
}

static void run(const poa_vit *m, poa_vit_pass *pass, const real *params, real *grads,
                const real *images, const unsigned char *mask, const real *dout) {
    poa_vit_forward(pass, params, images, mask, NULL);
    if (grads) poa_vit_backward(pass, params, grads, dout);
    (void)m;
}

int main(void) {
    poa_recipe recipe;
    poa_vit m;
    poa_error e = { { 0 } };
    test_load_model("tests/recipes/tiny_vit.lua", &recipe, &m);
    real *params = malloc(sizeof(real) * (size_t)m.parameter_count);
    test_random_parameters(&m, params, 3);
    const long B = 2, n_images = B * 3 * 32 * 32;
    real *images = malloc(sizeof(real) * (size_t)n_images);
    real *dout = malloc(sizeof(real) * (size_t)(B * 17 * 96));
    test_fill_normal(images, n_images, 0, 1, 9, 1);
    test_fill_normal(dout, B * 17 * 96, 0, 1, 9, 2);
    unsigned char mask[2 * 16] = { 0 };
    mask[3] = mask[20] = 1;

    /* Members differ: same width and different depth, and different widths
       compared on their common first 32 channels of the CLS token. */
    poa_vit_pass a, b, c;
    if (poa_vit_pass_init(&a, &m, 64, 2, B, 32, POA_VIT_PASS_TRAINING, &e) ||
        poa_vit_pass_init(&b, &m, 64, 3, B, 32, POA_VIT_PASS_TRAINING, &e) ||
        poa_vit_pass_init(&c, &m, 32, 3, B, 32, POA_VIT_PASS_TRAINING, &e)) {
        printf("FAIL pass init: %s\n", e.message);
        return 1;
    }
    run(&m, &a, params, NULL, images, NULL, NULL);
    run(&m, &b, params, NULL, images, NULL, NULL);
    run(&m, &c, params, NULL, images, NULL, NULL);
    double diff_depth = 0, diff_width = 0;
    for (long i = 0; i < B * 17 * 64; i++)
        diff_depth = fmax(diff_depth, fabs(poa_vit_output(&a)[i] - poa_vit_output(&b)[i]));
    for (long i = 0; i < 32; i++)
        diff_width = fmax(diff_width, fabs(poa_vit_output(&b)[i] - poa_vit_output(&c)[i]));
    CHECK("members 64x2 and 64x3 differ", diff_depth > 1e-3, "max difference %g", diff_depth);
    CHECK("members 64x3 and 32x3 differ", diff_width > 1e-3, "max difference %g", diff_width);

    /* Elastic-only backward: zero outside the slice, non-zero inside. */
    real *grads = calloc((size_t)m.parameter_count, sizeof(real));
    run(&m, &b, params, grads, images, mask, dout);
    long outside_nonzero = 0, inside = 0, inside_nonzero = 0;
    for (int i = 0; i < m.tensor_count; i++) {
        const poa_vit_tensor *t = &m.tensors[i];
        for (long j = 0; j < t->count; j++) {
            int in = inside_slice(&m, t, j, 64, &b);
            real g = grads[t->offset + j];
            if (!in && g != 0) outside_nonzero++;
            if (in) inside++, inside_nonzero += g != 0;
        }
    }
    CHECK("64x3 backward: gradients outside the slice are exactly zero", outside_nonzero == 0,
          "%ld non-zero entries outside", outside_nonzero);
    CHECK("64x3 backward: gradients inside the slice are non-zero", inside_nonzero > inside * 9 / 10,
          "%ld of %ld non-zero", inside_nonzero, inside);

    /* Intact + elastic into one buffer = the sum of separate buffers. */
    poa_vit_pass intact;
    poa_vit_pass_init(&intact, &m, 96, 4, B, 32, POA_VIT_PASS_TRAINING, &e);
    real *together = calloc((size_t)m.parameter_count, sizeof(real));
    real *alone = calloc((size_t)m.parameter_count, sizeof(real));
    run(&m, &intact, params, together, images, mask, dout);
    run(&m, &b, params, together, images, mask, dout);
    run(&m, &intact, params, alone, images, mask, dout);
    double worst = 0, size = 0;
    for (long j = 0; j < m.parameter_count; j++) {
        worst = fmax(worst, fabs(together[j] - (alone[j] + grads[j])));
        size = fmax(size, fabs(together[j]));
    }
    CHECK("both students accumulate into one gradient buffer", worst <= 1e-6 * size,
          "max difference %g of %g", worst, size);

    poa_vit_pass_free(&a), poa_vit_pass_free(&b), poa_vit_pass_free(&c), poa_vit_pass_free(&intact);
    free(params), free(images), free(dout), free(grads), free(together), free(alone);
    poa_vit_free(&m);
    CHECK_EXIT();
}
