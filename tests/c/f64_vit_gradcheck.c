/* f64_vit_gradcheck.c: in fp64, the analytic gradient of every kind of ViT
   parameter equals central differences, for the intact net and an elastic
   member, with masks, stochastic depth, and a local crop size that goes
   through the bicubic position resampling. */
#include <string.h>

#include "backend.h"
#include "check.h"
#include "vit_test_util.h"

typedef struct problem {
    const poa_vit *model;
    poa_vit_pass global, local;
    real *images_global, *images_local, *dout_global, *dout_local, *drop_global;
    unsigned char mask[2 * 16];
} problem;

static double loss_of(problem *p, const real *params) {
    double loss = 0;
    poa_vit_forward(&p->global, params, p->images_global, p->mask, p->drop_global);
    const real *out = poa_vit_output(&p->global);
    for (long i = 0; i < p->global.rows * p->global.width; i++) loss += out[i] * p->dout_global[i];
    poa_vit_forward(&p->local, params, p->images_local, NULL, NULL);
    out = poa_vit_output(&p->local);
    for (long i = 0; i < p->local.rows * p->local.width; i++) loss += out[i] * p->dout_local[i];
    return loss;
}

static void check_member(const poa_vit *m, real *params, int width, int depth) {
    poa_error e = { { 0 } };
    problem p = { .model = m };
    if (poa_vit_pass_init(&p.global, m, width, depth, 2, 32, POA_VIT_PASS_TRAINING, &e) ||
        poa_vit_pass_init(&p.local, m, width, depth, 3, 16, POA_VIT_PASS_TRAINING, &e)) {
        printf("FAIL pass %dx%d: %s\n", width, depth, e.message);
        return;
    }
    long ng = p.global.rows * width, nl = p.local.rows * width;
    p.images_global = malloc(sizeof(real) * 2 * 3 * 32 * 32);
    p.images_local = malloc(sizeof(real) * 3 * 3 * 16 * 16);
    p.dout_global = malloc(sizeof(real) * (size_t)ng);
    p.dout_local = malloc(sizeof(real) * (size_t)nl);
    p.drop_global = malloc(sizeof(real) * (size_t)(depth * 2 * 2));
    test_fill_normal(p.images_global, 2 * 3 * 32 * 32, 0, 1, 7, 1);
    test_fill_normal(p.images_local, 3 * 3 * 16 * 16, 0, 1, 7, 2);
    test_fill_normal(p.dout_global, ng, 0, 1, 7, 3);
    test_fill_normal(p.dout_local, nl, 0, 1, 7, 4);
    for (int i = 0; i < 32; i++) p.mask[i] = (i % 5) == 1;
    /* Block 0's attention drops sample 1; every other branch keeps both at 1. */
    for (int i = 0; i < depth * 4; i++) p.drop_global[i] = 1;
    p.drop_global[0] = 2, p.drop_global[1] = 0;

    real *grads = calloc((size_t)m->parameter_count, sizeof(real));
    loss_of(&p, params);
    poa_vit_forward(&p.global, params, p.images_global, p.mask, p.drop_global);
    poa_vit_backward(&p.global, params, grads, p.dout_global);
    poa_vit_forward(&p.local, params, p.images_local, NULL, NULL);
    poa_vit_backward(&p.local, params, grads, p.dout_local);

    const double h = 1e-5;
    for (int i = 0; i < m->tensor_count; i++) {
        const poa_vit_tensor *t = &m->tensors[i];
        double worst = 0, scale = 1e-8;
        for (int s = 0; s < 6; s++) {
            /* Half of the probes inside the member's leading slice, half anywhere. */
            long row_len = t->ndim >= 2 ? t->count / t->shape[0] : 1;
            long idx = s < 3 ? (long)(poa_uniform(11, (uint64_t)i, (uint64_t)s) * (width < t->shape[0] ? width : t->shape[0])) * row_len +
                                   (long)(poa_uniform(12, (uint64_t)i, (uint64_t)s) * (row_len < width ? row_len : width))
                             : (long)(poa_uniform(13, (uint64_t)i, (uint64_t)s) * t->count);
            if (t->ndim == 3) idx = (long)(poa_uniform(14, (uint64_t)i, (uint64_t)s) * (t->count / t->shape[2])) * t->shape[2] +
                                    (long)(poa_uniform(15, (uint64_t)i, (uint64_t)s) * width);
            real *x = params + t->offset + idx, saved = *x;
            *x = saved + h;
            double up = loss_of(&p, params);
            *x = saved - h;
            double down = loss_of(&p, params);
            *x = saved;
            double numeric = (up - down) / (2 * h), analytic = grads[t->offset + idx];
            double err = fabs(numeric - analytic);
            if (err > worst) worst = err;
            if (fabs(numeric) > scale) scale = fabs(numeric);
        }
        char name[160];
        snprintf(name, sizeof name, "gradcheck %dx%d %s", width, depth, t->name);
        CHECK(name, worst <= 1e-6 * (scale > 1 ? scale : 1), "max |analytic - numeric| %.3g (scale %.3g)", worst, scale);
    }
    free(grads);
    free(p.images_global), free(p.images_local), free(p.dout_global), free(p.dout_local), free(p.drop_global);
    poa_vit_pass_free(&p.global);
    poa_vit_pass_free(&p.local);
}

int main(void) {
    poa_set_threads(1); /* thousands of tiny passes: threads only add overhead here */
    poa_recipe recipe;
    poa_vit model;
    test_load_model("tests/recipes/tiny_vit.lua", &recipe, &model);
    real *params = malloc(sizeof(real) * (size_t)model.parameter_count);
    test_random_parameters(&model, params, 5);
    check_member(&model, params, 96, 4);
    check_member(&model, params, 64, 3);
    free(params);
    poa_vit_free(&model);
    CHECK_EXIT();
}
