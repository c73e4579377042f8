/* vit.c: forward and backward of one elastic ViT member on the CPU backend.
   The order of the steps is the reference's (§1.2): patch embedding, mask
   tokens, cls, position embedding, the member's blocks, the final LayerNorm. */
#include "vit.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"

/* The activation arena, in the order and with the names of gen/plan.lua's
   vit_pass (tests/c/test_vit_plan.c holds the two equal): per-pass buffers,
   then each active block's saved activations, then the final LayerNorm and the
   backward's scratch. Every buffer starts on a multiple of 16 elements. */
enum {
    B_X_IN, B_LN1_MEAN, B_LN1_RSTD, B_QKV, B_PROBS, B_ATTN, B_H1, B_X_MID,
    B_LN2_MEAN, B_LN2_RSTD, B_U, B_H2, BLOCK_BUFFERS
};
/* g = GELU(u) and ln (the output of a block's LayerNorms) are one buffer each for all blocks:
   the backward computes them again from the block's u, and from its x_in or x_mid with the
   saved mean and rstd, for fc2's, fc1's and qkv's weight gradients (rows x (hidden + 2 width)
   less per block to keep). */
enum {
    S_PATCHES, S_PATCH_TOKENS, S_POS, S_X_FINAL, S_NORM_MEAN, S_NORM_RSTD, S_OUT, S_G, S_LN,
    S_GRAD_X, S_GRAD_LN, S_GRAD_QKV, S_GRAD_ATTN, S_GRAD_H, S_GRAD_U, S_GRAD_G,
    S_GRAD_WORK, S_GRAD_PATCH_TOKENS, S_GRAD_POS, STATIC_BUFFERS
};
static const char *const block_buffer_names[BLOCK_BUFFERS] = {
    "x_in", "ln1_mean", "ln1_rstd", "qkv", "probs", "attn", "h1", "x_mid",
    "ln2_mean", "ln2_rstd", "u", "h2"
};
static const char *const static_buffer_names[STATIC_BUFFERS] = {
    "patches", "patch_tokens", "pos", "x_final", "norm_mean", "norm_rstd", "out", "g", "ln",
    "grad.x", "grad.ln", "grad.qkv", "grad.attn", "grad.h", "grad.u", "grad.g",
    "grad.work", "grad.patch_tokens", "grad.pos"
};
#define FIRST_TAIL_BUFFER S_X_FINAL /* static buffers from here on follow the blocks */

typedef struct vit_layout {
    long fixed[STATIC_BUFFERS], fixed_count[STATIC_BUFFERS];
    long block[POA_VIT_MAX_DEPTH][BLOCK_BUFFERS], block_count[BLOCK_BUFFERS];
} vit_layout;

static long place(long *total, long count) {
    long at = *total;
    *total += (count + 15) / 16 * 16;
    return at;
}

static void vit_layout_compute(vit_layout *l, const poa_vit_pass *p, long *total) {
    const long M = p->rows, D = p->width, F = p->hidden, H = p->heads, T = p->tokens;
    const poa_vit_config *c = &p->model->config;
    const long patch_len = (long)c->in_channels * c->patch_size * c->patch_size;
    const long BN = p->batch * p->patches, probs = p->batch * H * T * T;
    const long fixed[STATIC_BUFFERS] = { BN * patch_len, BN * D, T * D, M * D, M, M, M * D, M * F, M * D,
                                         M * D, M * D, 3 * M * D, M * D, M * D, M * F, M * F,
                                         probs, BN * D, T * D };
    const long block[BLOCK_BUFFERS] = { M * D, M, M, 3 * M * D, probs, M * D, M * D,
                                        M * D, M, M, M * F, M * D };
    memcpy(l->fixed_count, fixed, sizeof fixed);
    memcpy(l->block_count, block, sizeof block);
    *total = 0;
    for (int i = 0; i < FIRST_TAIL_BUFFER; i++) l->fixed[i] = place(total, fixed[i]);
    for (int j = 0; j < p->depth; j++)
        for (int i = 0; i < BLOCK_BUFFERS; i++) l->block[j][i] = place(total, block[i]);
    for (int i = FIRST_TAIL_BUFFER; i < STATIC_BUFFERS; i++) l->fixed[i] = place(total, fixed[i]);
}

int poa_vit_pass_buffers(const poa_vit_pass *p, poa_vit_buffer *out, int capacity) {
    vit_layout l;
    long total;
    int n = 0;
    vit_layout_compute(&l, p, &total);
    for (int i = 0; i < STATIC_BUFFERS; i++) {
        if (i == FIRST_TAIL_BUFFER)
            for (int j = 0; j < p->depth; j++)
                for (int k = 0; k < BLOCK_BUFFERS; k++, n++)
                    if (n < capacity) {
                        snprintf(out[n].name, sizeof out[n].name, "block%d.%s", j, block_buffer_names[k]);
                        out[n].offset = l.block[j][k], out[n].count = l.block_count[k];
                    }
        if (n < capacity) {
            snprintf(out[n].name, sizeof out[n].name, "%s", static_buffer_names[i]);
            out[n].offset = l.fixed[i], out[n].count = l.fixed_count[i];
        }
        n++;
    }
    return n;
}

int poa_vit_pass_init(poa_vit_pass *p, const poa_vit *model, int width, int depth, long batch,
                      int image_size, poa_error *e) {
    memset(p, 0, sizeof *p);
    return poa_vit_pass_prepare(p, model, width, depth, batch, image_size, e);
}

static int pass_prepare(poa_vit_pass *p, const poa_vit *model, int width, int depth, long batch, int image_size,
                        int with_arena, poa_error *e);

int poa_vit_pass_prepare(poa_vit_pass *p, const poa_vit *model, int width, int depth, long batch,
                         int image_size, poa_error *e) {
    return pass_prepare(p, model, width, depth, batch, image_size, 1, e);
}

int poa_vit_pass_layout(poa_vit_pass *p, const poa_vit *model, int width, int depth, long batch, int image_size,
                        poa_error *e) {
    memset(p, 0, sizeof *p);
    return pass_prepare(p, model, width, depth, batch, image_size, 0, e);
}

static int pass_prepare(poa_vit_pass *p, const poa_vit *model, int width, int depth, long batch, int image_size,
                        int with_arena, poa_error *e) {
    const poa_vit_config *c = &model->config;
    if (width < c->head_dim || width > c->max_width || width % c->head_dim)
        return poa_fail(e, "member %dx%d: width must be a multiple of %d in %d..%d", width, depth,
                        c->head_dim, c->head_dim, c->max_width);
    if (depth < 1 || depth > c->max_depth)
        return poa_fail(e, "member %dx%d: depth must be in 1..%d", width, depth, c->max_depth);
    if (image_size <= 0 || image_size % c->patch_size)
        return poa_fail(e, "image size %d is not a multiple of the patch size %d", image_size,
                        c->patch_size);
    /* Buffers of an earlier shape are kept when they are large enough (a fresh arena
       costs a page fault per page on every step). */
    real *arena = p->arena, *ones = p->ones, *resample = p->resample;
    long capacity = p->arena_capacity, resample_grid = p->resample ? p->grid : 0;
    memset(p, 0, sizeof *p);
    p->model = model;
    p->width = width;
    p->depth = depth;
    p->hidden = width * c->mlp_ratio;
    p->heads = width / c->head_dim;
    /* Block ids: int(numpy.linspace(0, Lmax - 1, L)) as the official code (reference §1.4):
       j * step truncated, the last exactly Lmax - 1 (gen/space.lua's block_ids). */
    for (int j = 0; j < depth; j++) {
        double step = depth > 1 ? (double)(c->max_depth - 1) / (depth - 1) : 0;
        p->block_ids[j] = j == depth - 1 && depth > 1 ? c->max_depth - 1 : (int)(j * step);
    }
    p->kernels = poa_vit_kernels_find(width, c->head_dim, p->hidden);
    if (!p->kernels) {
        poa_vit_kernels_reference(&p->reference_kernels, width, c->head_dim, p->hidden);
        p->kernels = &p->reference_kernels;
    }
    p->batch = batch;
    p->image_size = image_size;
    p->grid = image_size / c->patch_size;
    p->patches = p->grid * p->grid;
    p->tokens = p->patches + 1;
    p->rows = batch * p->tokens;
    p->alpha = (real)((double)c->max_width / width);
    vit_layout layout;
    vit_layout_compute(&layout, p, &p->arena_count);
    if (!with_arena) {
        free(arena);
    } else if (arena && capacity >= p->arena_count) {
        p->arena = arena, p->arena_capacity = capacity;
    } else {
        free(arena);
        p->arena = calloc((size_t)p->arena_count, sizeof(real));
        p->arena_capacity = p->arena_count;
    }
    free(ones);
    p->ones = malloc(sizeof(real) * (size_t)width);
    const long native_grid = c->image_size / c->patch_size;
    if (p->grid != native_grid && resample_grid == p->grid) {
        p->resample = resample;
    } else {
        free(resample);
        if (p->grid != native_grid) {
            p->resample = malloc(sizeof(real) * (size_t)(p->patches * native_grid * native_grid));
            if (p->resample) poa_vit_resample_matrix(p->resample, (int)native_grid, (int)p->grid);
        }
    }
    if ((with_arena && !p->arena) || !p->ones || (p->grid != native_grid && !p->resample)) {
        poa_vit_pass_free(p);
        return poa_fail(e, "member %dx%d: out of memory for %ld activations", width, depth,
                        p->arena_count);
    }
    for (int i = 0; i < width; i++) p->ones[i] = 1;
    return 0;
}

void poa_vit_pass_free(poa_vit_pass *p) {
    free(p->arena);
    free(p->ones);
    free(p->resample);
    p->arena = p->ones = p->resample = NULL;
}

real *poa_vit_output(const poa_vit_pass *p) {
    vit_layout l;
    long total;
    vit_layout_compute(&l, p, &total);
    return p->arena + l.fixed[S_OUT];
}

const real *poa_vit_block_output(const poa_vit_pass *p, int j) {
    vit_layout l;
    long total;
    vit_layout_compute(&l, p, &total);
    return j + 1 < p->depth ? p->arena + l.block[j + 1][B_X_IN] : p->arena + l.fixed[S_X_FINAL];
}

/* patches[b*N + gy*G + gx][c*P*P + ky*P + kx] = image[b][c][gy*P + ky][gx*P + kx] */
static void patchify(real *patches, const real *images, long batch, int channels, long size,
                     int patch) {
    const long grid = size / patch, len = (long)channels * patch * patch;
#pragma omp parallel for collapse(2) schedule(static)
    for (long b = 0; b < batch; b++)
        for (long gy = 0; gy < grid; gy++)
            for (long gx = 0; gx < grid; gx++)
                for (int ch = 0; ch < channels; ch++)
                    for (int ky = 0; ky < patch; ky++)
                        memcpy(patches + ((b * grid + gy) * grid + gx) * len +
                                   (ch * patch + ky) * patch,
                               images + ((b * channels + ch) * size + gy * patch + ky) * size +
                                   gx * patch,
                               sizeof(real) * (size_t)patch);
}

/* y (rows x n, ldy) = alpha * x (rows x k) W[:n, :k]^T + bias[:n]; W rows are ldw apart. */
static void linear_forward(real *y, long ldy, const real *x, long k, const real *params,
                           long weight, long ldw, long bias, long rows, long n, real alpha) {
    poa_fill_rows(y, ldy, bias >= 0 ? params + bias : NULL, rows, n);
    poa_gemm(0, 1, rows, n, k, alpha, x, k, params + weight, ldw, 1, y, ldy);
}

/* From dy (rows x n, ldy): dW[:n, :k] += alpha dy^T x, db += colsum dy,
   dx (rows x k) = alpha dy W[:n, :k] + beta dx. */
static void linear_backward(real *dx, real beta, const real *dy, long ldy, const real *x, long k,
                            const real *params, real *grads, long weight, long ldw, long bias,
                            long rows, long n, real alpha) {
    if (bias >= 0) poa_column_sum_accumulate(grads + bias, dy, ldy, rows, n);
    poa_gemm(1, 0, n, k, rows, alpha, dy, ldy, x, k, 1, grads + weight, ldw);
    if (dx) poa_gemm(0, 0, rows, k, n, alpha, dy, ldy, params + weight, ldw, beta, dx, k);
}

static const real *drop_scale_of(const poa_vit_pass *p, int j, int branch) {
    return p->drop_scale ? p->drop_scale + ((long)j * 2 + branch) * p->batch : NULL;
}

static const real *gamma_of(const poa_vit_pass *p, const real *params, long offset) {
    return offset >= 0 ? params + offset : p->ones;
}

static void block_forward(poa_vit_pass *p, const vit_layout *l, const real *params, int j) {
    const poa_vit_kernels *k = p->kernels;
    const poa_vit_block_offsets *o = &p->model->blocks[p->block_ids[j]];
    const long M = p->rows, D = p->width, F = p->hidden, Dmax = p->model->config.max_width;
    const long Fmax = Dmax * p->model->config.mlp_ratio;
    real *a = p->arena;
    const long *b = l->block[j];
    real *ln = a + l->fixed[S_LN];
    k->layernorm_forward(k, ln, a + b[B_LN1_MEAN], a + b[B_LN1_RSTD], a + b[B_X_IN],
                         params + o->norm1_weight, params + o->norm1_bias, M);
    for (int g = 0; g < 3; g++) /* q, k, v: rows g*Dmax .. g*Dmax + D of the full weight */
        linear_forward(a + b[B_QKV] + g * D, 3 * D, ln, D, params,
                       o->qkv_weight + g * Dmax * Dmax, Dmax, o->qkv_bias >= 0 ? o->qkv_bias + g * Dmax : -1,
                       M, D, p->alpha);
    k->attention_forward(k, a + b[B_ATTN], a + b[B_PROBS], a + b[B_QKV], p->batch, p->tokens);
    linear_forward(a + b[B_H1], D, a + b[B_ATTN], D, params, o->proj_weight, Dmax, o->proj_bias,
                   M, D, p->alpha);
    memcpy(a + b[B_X_MID], a + b[B_X_IN], sizeof(real) * (size_t)(M * D));
    k->residual_forward(k, a + b[B_X_MID], a + b[B_H1], gamma_of(p, params, o->ls1),
                        drop_scale_of(p, j, 0), p->batch, p->tokens);
    k->layernorm_forward(k, ln, a + b[B_LN2_MEAN], a + b[B_LN2_RSTD], a + b[B_X_MID],
                         params + o->norm2_weight, params + o->norm2_bias, M);
    linear_forward(a + b[B_U], F, ln, D, params, o->fc1_weight, Dmax, o->fc1_bias, M,
                   F, p->alpha);
    k->gelu_forward(k, a + l->fixed[S_G], a + b[B_U], M);
    linear_forward(a + b[B_H2], D, a + l->fixed[S_G], F, params, o->fc2_weight, Fmax, o->fc2_bias, M, D,
                   p->alpha);
    real *x_out = j + 1 < p->depth ? a + l->block[j + 1][B_X_IN] : a + l->fixed[S_X_FINAL];
    memcpy(x_out, a + b[B_X_MID], sizeof(real) * (size_t)(M * D));
    k->residual_forward(k, x_out, a + b[B_H2], gamma_of(p, params, o->ls2),
                        drop_scale_of(p, j, 1), p->batch, p->tokens);
}

/* The position table of this image size: row 0 is the cls position, rows
   1.. are the patch positions, resampled by the bicubic matrix if needed. */
static const real *position_table(poa_vit_pass *p, const vit_layout *l, const real *params,
                                  long *ld) {
    const poa_vit *m = p->model;
    const long Dmax = m->config.max_width;
    if (!p->resample) {
        *ld = Dmax;
        return params + m->pos_embed;
    }
    const long native = (m->config.image_size / m->config.patch_size);
    real *pos = p->arena + l->fixed[S_POS];
    memcpy(pos, params + m->pos_embed, sizeof(real) * (size_t)p->width);
    poa_gemm(0, 0, p->patches, p->width, native * native, 1, p->resample, native * native,
             params + m->pos_embed + Dmax, Dmax, 0, pos + p->width, p->width);
    *ld = p->width;
    return pos;
}

void poa_vit_forward(poa_vit_pass *p, const real *params, const real *images,
                     const unsigned char *mask, const real *drop_scale) {
    const poa_vit *m = p->model;
    const poa_vit_config *c = &m->config;
    const poa_vit_kernels *k = p->kernels;
    const long D = p->width, BN = p->batch * p->patches;
    const long patch_len = (long)c->in_channels * c->patch_size * c->patch_size;
    vit_layout l;
    long total;
    vit_layout_compute(&l, p, &total);
    real *a = p->arena;
    p->mask = mask;
    p->drop_scale = drop_scale;
    patchify(a + l.fixed[S_PATCHES], images, p->batch, c->in_channels, p->image_size,
             c->patch_size);
    /* The conv's first D output channels; no alpha (its input is the image). */
    linear_forward(a + l.fixed[S_PATCH_TOKENS], D, a + l.fixed[S_PATCHES], patch_len, params,
                   m->patch_weight, patch_len, m->patch_bias, BN, D, 1);
    long pos_ld;
    const real *pos = position_table(p, &l, params, &pos_ld);
    real *x0 = p->depth > 0 ? a + l.block[0][B_X_IN] : a + l.fixed[S_X_FINAL];
    k->tokens_forward(k, x0, a + l.fixed[S_PATCH_TOKENS], params + m->cls_token,
                      params + m->mask_token, pos, pos_ld, mask, p->batch, p->patches);
    for (int j = 0; j < p->depth; j++) block_forward(p, &l, params, j);
    k->layernorm_forward(k, a + l.fixed[S_OUT], a + l.fixed[S_NORM_MEAN],
                         a + l.fixed[S_NORM_RSTD], a + l.fixed[S_X_FINAL],
                         params + m->norm_weight, params + m->norm_bias, p->rows);
}

/* On entry grad.x holds d(loss)/d(block output); on exit d(loss)/d(block input). */
static void block_backward(poa_vit_pass *p, const vit_layout *l, const real *params,
                           real *grads, int j) {
    const poa_vit_kernels *k = p->kernels;
    const poa_vit_block_offsets *o = &p->model->blocks[p->block_ids[j]];
    const long M = p->rows, D = p->width, F = p->hidden, Dmax = p->model->config.max_width;
    const long Fmax = Dmax * p->model->config.mlp_ratio;
    real *a = p->arena;
    const long *b = l->block[j];
    real *dx = a + l->fixed[S_GRAD_X], *dh = a + l->fixed[S_GRAD_H];
    real *dln = a + l->fixed[S_GRAD_LN], *du = a + l->fixed[S_GRAD_U];
    real *dg = a + l->fixed[S_GRAD_G], *dattn = a + l->fixed[S_GRAD_ATTN];
    real *dqkv = a + l->fixed[S_GRAD_QKV];
    static real unused[1];
    /* x_out = x_mid + s * ls2 * h2 */
    k->residual_backward(k, dh, o->ls2 >= 0 ? grads + o->ls2 : unused, dx, a + b[B_H2],
                         gamma_of(p, params, o->ls2), drop_scale_of(p, j, 1), p->batch, p->tokens);
    k->gelu_forward(k, a + l->fixed[S_G], a + b[B_U], M); /* g again, for fc2's weight gradient */
    linear_backward(dg, 0, dh, D, a + l->fixed[S_G], F, params, grads, o->fc2_weight, Fmax, o->fc2_bias,
                    M, D, p->alpha);
    k->gelu_backward(k, du, dg, a + b[B_U], M);
    real *ln = a + l->fixed[S_LN]; /* ln2 again, for fc1's weight gradient */
    k->layernorm_forward(k, ln, a + b[B_LN2_MEAN], a + b[B_LN2_RSTD], a + b[B_X_MID], params + o->norm2_weight,
                         params + o->norm2_bias, M);
    linear_backward(dln, 0, du, F, ln, D, params, grads, o->fc1_weight, Dmax,
                    o->fc1_bias, M, F, p->alpha);
    k->layernorm_backward(k, dh, grads + o->norm2_weight, grads + o->norm2_bias, dln,
                          a + b[B_X_MID], a + b[B_LN2_MEAN], a + b[B_LN2_RSTD],
                          params + o->norm2_weight, M);
    poa_add(dx, dh, M * D);
    /* x_mid = x_in + s * ls1 * h1 */
    k->residual_backward(k, dh, o->ls1 >= 0 ? grads + o->ls1 : unused, dx, a + b[B_H1],
                         gamma_of(p, params, o->ls1), drop_scale_of(p, j, 0), p->batch, p->tokens);
    linear_backward(dattn, 0, dh, D, a + b[B_ATTN], D, params, grads, o->proj_weight, Dmax,
                    o->proj_bias, M, D, p->alpha);
    k->attention_backward(k, dqkv, a + l->fixed[S_GRAD_WORK], dattn, a + b[B_QKV],
                          a + b[B_PROBS], p->batch, p->tokens);
    /* ln1 again, for qkv's weight gradients */
    k->layernorm_forward(k, ln, a + b[B_LN1_MEAN], a + b[B_LN1_RSTD], a + b[B_X_IN], params + o->norm1_weight,
                         params + o->norm1_bias, M);
    for (int g = 0; g < 3; g++)
        linear_backward(dln, g ? 1 : 0, dqkv + g * D, 3 * D, ln, D, params, grads,
                        o->qkv_weight + g * Dmax * Dmax, Dmax,
                        o->qkv_bias >= 0 ? o->qkv_bias + g * Dmax : -1, M, D, p->alpha);
    k->layernorm_backward(k, dh, grads + o->norm1_weight, grads + o->norm1_bias, dln,
                          a + b[B_X_IN], a + b[B_LN1_MEAN], a + b[B_LN1_RSTD],
                          params + o->norm1_weight, M);
    poa_add(dx, dh, M * D);
}

void poa_vit_backward(poa_vit_pass *p, const real *params, real *grads, const real *dout) {
    const poa_vit *m = p->model;
    const poa_vit_config *c = &m->config;
    const poa_vit_kernels *k = p->kernels;
    const long D = p->width, Dmax = c->max_width, BN = p->batch * p->patches;
    const long patch_len = (long)c->in_channels * c->patch_size * c->patch_size;
    vit_layout l;
    long total;
    vit_layout_compute(&l, p, &total);
    real *a = p->arena, *dx = a + l.fixed[S_GRAD_X];
    k->layernorm_backward(k, dx, grads + m->norm_weight, grads + m->norm_bias, dout,
                          a + l.fixed[S_X_FINAL], a + l.fixed[S_NORM_MEAN],
                          a + l.fixed[S_NORM_RSTD], params + m->norm_weight, p->rows);
    for (int j = p->depth - 1; j >= 0; j--) block_backward(p, &l, params, grads, j);
    real *dpatch = a + l.fixed[S_GRAD_PATCH_TOKENS];
    if (!p->resample) {
        k->tokens_backward(k, dpatch, grads + m->cls_token, grads + m->mask_token,
                           grads + m->pos_embed, Dmax, dx, p->mask, p->batch, p->patches);
    } else {
        /* Through the fixed resampling matrix: dpos_table += R^T dpos. */
        real *dpos = a + l.fixed[S_GRAD_POS];
        const long native = c->image_size / c->patch_size;
        memset(dpos, 0, sizeof(real) * (size_t)(p->tokens * D));
        k->tokens_backward(k, dpatch, grads + m->cls_token, grads + m->mask_token, dpos, D, dx,
                           p->mask, p->batch, p->patches);
        poa_add(grads + m->pos_embed, dpos, D);
        poa_gemm(1, 0, native * native, D, p->patches, 1, p->resample, native * native, dpos + D,
                 D, 1, grads + m->pos_embed + Dmax, Dmax);
    }
    linear_backward(NULL, 0, dpatch, D, a + l.fixed[S_PATCHES], patch_len, params, grads,
                    m->patch_weight, patch_len, m->patch_bias, BN, D, 1);
}
