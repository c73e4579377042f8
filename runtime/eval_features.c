/* eval_features.c: a member's frozen evaluation features (eval_features.h). */
#include "eval_features.h"

#include <stdlib.h>
#include <string.h>

#include "augment.h"

int poa_feature_columns(const poa_feature_spec *s, int width) {
    return (s->layer_count + (s->avgpool != 0)) * width;
}

/* The pass features are taken from: the inference pass (the program's liveness arena) when
   only the last block's output is read, else a training pass, which keeps every block's
   output (poa_vit_block_output). */
static int open_pass(poa_vit_pass *pass, const poa_vit *model, int width, int depth, const poa_feature_spec *s,
                     long batch, int size, poa_error *e) {
    const int last_only = s->layer_count == 1 && s->layers[0] == depth - 1;
    return poa_vit_pass_init(pass, model, width, depth, batch, size,
                             last_only ? POA_VIT_PASS_INFERENCE : POA_VIT_PASS_TRAINING, e);
}

/* A batch whose activation arena stays within ~1 GiB (the arena grows linearly with it). */
static int pick_batch(const poa_vit *model, int width, int depth, const poa_feature_spec *s, int size, long *batch,
                      poa_error *e) {
    if (*batch > 0) return 0;
    poa_vit_pass pass = { 0 };
    if (open_pass(&pass, model, width, depth, s, 1, size, e)) return -1;
    double per_image = (double)pass.arena_count * sizeof(real);
    poa_vit_pass_free(&pass);
    *batch = (long)((1u << 30) / (per_image > 1 ? per_image : 1));
    if (*batch < 1) *batch = 1;
    if (*batch > 64) *batch = 64;
    return 0;
}

/* Rows of one batch into features: each chosen layer's final-LN CLS token, then the mean
   final-LN patch token of the last chosen layer. scratch: tokens x width per image. */
static void take_rows(const poa_vit_pass *pass, const real *params, const poa_feature_spec *s,
                      long rows, int columns, real *normed, real *mean, real *rstd, real *out) {
    const poa_vit_tensor *w = poa_vit_find_tensor(pass->model, "norm.norm.weight"),
                         *bias = poa_vit_find_tensor(pass->model, "norm.norm.bias");
    const int width = pass->width;
    const long tokens = pass->tokens;
    for (int i = 0; i < s->layer_count; i++) {
        const real *y = poa_vit_output(pass); /* the final LayerNorm of the last block */
        if (s->layers[i] != pass->depth - 1) {
            pass->kernels->layernorm_forward(pass->kernels, normed, mean, rstd,
                                             poa_vit_block_output(pass, s->layers[i]),
                                             params + w->offset, params + bias->offset,
                                             pass->rows);
            y = normed;
        }
        for (long b = 0; b < rows; b++) {
            const real *image = y + b * tokens * width;
            real *f = out + b * columns;
            memcpy(f + (size_t)i * width, image, sizeof(real) * (size_t)width);
            if (!s->avgpool || i != s->layer_count - 1) continue;
            real *avg = f + (size_t)s->layer_count * width;
            for (int j = 0; j < width; j++) {
                double sum = 0;
                for (long t = 1; t < tokens; t++) sum += image[t * width + j];
                avg[j] = (real)(sum / (double)(tokens - 1));
            }
        }
    }
}

int poa_features_compute(const poa_vit *model, const real *params, int width, int depth,
                         const poa_feature_spec *spec, const poa_knn_images *images, long batch,
                         real *features, poa_progress *progress, poa_error *e) {
    if (spec->layer_count < 1 || spec->layer_count > POA_FEATURES_MAX_LAYERS)
        return poa_fail(e, "features: %d layers (1 to %d)", spec->layer_count, POA_FEATURES_MAX_LAYERS);
    for (int i = 0; i < spec->layer_count; i++)
        if (spec->layers[i] < 0 || spec->layers[i] >= depth || (i && spec->layers[i] <= spec->layers[i - 1]))
            return poa_fail(e, "features: layer %d of a depth-%d member", spec->layers[i], depth);
    int size = images->size;
    if (pick_batch(model, width, depth, spec, size, &batch, e)) return -1;
    if (batch > images->count) batch = images->count;
    poa_vit_pass pass = { 0 };
    if (open_pass(&pass, model, width, depth, spec, batch, size, e)) return -1;
    size_t plane = (size_t)size * size, image_bytes = plane * 3;
    const int columns = poa_feature_columns(spec, width);
    real *input = calloc((size_t)batch * 3 * plane, sizeof(real));
    real *normed = malloc(sizeof(real) * (size_t)pass.rows * width);
    real *stats = malloc(sizeof(real) * 2 * (size_t)pass.rows);
    float *normalized = malloc(sizeof(float) * 3 * plane);
    int rc = input && normed && stats && normalized ? 0
             : poa_fail(e, "features: out of memory for a batch of %ld images", batch);
    for (long b0 = 0; rc == 0 && b0 < images->count; b0 += batch) {
        long rows = images->count - b0 < batch ? images->count - b0 : batch;
        for (long b = 0; b < rows; b++) {
            poa_normalize(images->pixels + image_bytes * (size_t)(b0 + b), size, size,
                          poa_imagenet_mean, poa_imagenet_std, normalized);
            for (size_t i = 0; i < 3 * plane; i++) input[(size_t)b * 3 * plane + i] = normalized[i];
        }
        /* a short last batch: the rows past `rows` keep old images; they are ignored */
        poa_vit_forward(&pass, params, input, NULL, NULL);
        take_rows(&pass, params, spec, rows, columns, normed, stats, stats + pass.rows,
                  features + b0 * columns);
        if (progress) poa_progress_add(progress, rows);
    }
    free(input);
    free(normed);
    free(stats);
    free(normalized);
    poa_vit_pass_free(&pass);
    return rc;
}
