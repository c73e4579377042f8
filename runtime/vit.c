/* vit.c: one elastic ViT member's pass on the CPU backend: its arena, the forward (the
   program of models/vit.lua's graph, built by gen/program.lua and run by runtime/program.c)
   and the backward (still written here, in the reverse of the reference's order §1.2). */
#include "vit.h"

#include <assert.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "recipe.h"

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

int poa_vit_pass_init_inference(poa_vit_pass *p, const poa_vit *model, int width, int depth, long batch,
                                int image_size, poa_error *e) {
    memset(p, 0, sizeof *p);
    p->inference = 1;
    return poa_vit_pass_prepare(p, model, width, depth, batch, image_size, e);
}

int poa_vit_push_program(lua_State *L, const poa_vit_config *c, int width, int depth, int image_size,
                         poa_error *e) {
    lua_getglobal(L, "require");
    lua_pushstring(L, "gen.program");
    int rc = lua_pcall(L, 1, 1, 0);
    if (rc == LUA_OK) {
        lua_getfield(L, -1, "vit_forward");
        lua_remove(L, -2);
        lua_createtable(L, 0, 11);
        const struct { const char *name; int value; } ints[] = {
            { "max_width", c->max_width }, { "max_depth", c->max_depth }, { "head_dim", c->head_dim },
            { "mlp_ratio", c->mlp_ratio }, { "patch_size", c->patch_size }, { "in_channels", c->in_channels },
            { "image_size", c->image_size } };
        for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
            lua_pushinteger(L, ints[i].value);
            lua_setfield(L, -2, ints[i].name);
        }
        lua_pushboolean(L, c->qkv_bias), lua_setfield(L, -2, "qkv_bias");
        lua_pushboolean(L, c->proj_bias), lua_setfield(L, -2, "proj_bias");
        lua_pushboolean(L, c->ffn_bias), lua_setfield(L, -2, "ffn_bias");
        lua_pushnumber(L, c->layerscale), lua_setfield(L, -2, "layerscale");
        lua_pushinteger(L, width);
        lua_pushinteger(L, depth);
        lua_pushinteger(L, image_size);
        rc = lua_pcall(L, 4, 1, 0);
    }
    if (rc == LUA_OK) return 0;
    rc = poa_fail(e, "member %dx%d: the forward program: %s", width, depth, lua_tostring(L, -1));
    lua_pop(L, 1);
    return rc;
}

/* The forward program of the pass's member and image size: from the process-wide cache, or
   built (gen/program.lua through the Lua built into poa) and cached, or kept by the pass when
   the cache is full. */
static int find_program(poa_vit_pass *p, poa_error *e) {
    struct { poa_vit_config config; int width, depth, image_size; } key;
    memset(&key, 0, sizeof key);
    key.config = p->model->config;
    key.width = p->width, key.depth = p->depth, key.image_size = (int)p->image_size;
    if ((p->program = poa_program_cache_find(&key, sizeof key))) return 0;
    if (p->owned.steps && p->owned_width == p->width && p->owned_depth == p->depth &&
        p->owned_image == (int)p->image_size) {
        p->program = &p->owned;
        return 0;
    }
    poa_program_free(&p->owned);
    poa_program built;
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    int rc = poa_vit_push_program(L, &p->model->config, p->width, p->depth, (int)p->image_size, e);
    if (rc == 0) rc = poa_program_from_lua(L, -1, &built, e);
    lua_close(L);
    if (rc) return rc;
    if ((p->program = poa_program_cache_add(&key, sizeof key, &built))) return 0;
    p->owned = built;
    p->owned_width = p->width, p->owned_depth = p->depth, p->owned_image = (int)p->image_size;
    p->program = &p->owned;
    return 0;
}

/* The arena offset of a program value in the backward's layout: its own buffer, or the one
   buffer every block's LayerNorm outputs (ln1, ln2) and GELU output (g) share. -1: none. */
static long layout_offset(const vit_layout *l, const poa_vit_pass *p, const char *name) {
    int j, n = 0;
    char field[32];
    if (sscanf(name, "block%d.%31s%n", &j, field, &n) == 2 && name[n] == 0 && j >= 0 && j < p->depth) {
        if (strcmp(field, "ln1") == 0 || strcmp(field, "ln2") == 0) return l->fixed[S_LN];
        if (strcmp(field, "g") == 0) return l->fixed[S_G];
        for (int k = 0; k < BLOCK_BUFFERS; k++)
            if (strcmp(field, block_buffer_names[k]) == 0) return l->block[j][k];
        return -1;
    }
    for (int i = 0; i < STATIC_BUFFERS; i++)
        if (strcmp(name, static_buffer_names[i]) == 0) return l->fixed[i];
    return -1;
}

enum { SLOT_IMAGES, SLOT_MASK, SLOT_DROP_SCALE, SLOT_RESAMPLE, SLOT_ONES };

/* Where each value of the program lives for this pass (value_offsets). */
static int bind_program(poa_vit_pass *p, const vit_layout *l, poa_error *e) {
    static const char *const slots[] = { "images", "mask", "drop_scale", "resample", "ones" };
    const poa_program *g = p->program;
    free(p->value_offsets);
    free(p->bases);
    p->value_offsets = calloc((size_t)g->value_count + 1, sizeof *p->value_offsets);
    p->bases = calloc((size_t)g->value_count + 1, sizeof *p->bases);
    if (!p->value_offsets || !p->bases) return poa_fail(e, "member %dx%d: out of memory", p->width, p->depth);
    for (int i = 0; i < g->value_count; i++) {
        const poa_program_value *v = &g->values[i];
        long at = -1;
        if (v->kind == POA_VALUE_ACT) {
            at = p->inference ? poa_lin_at(v->offset, p->batch) : layout_offset(l, p, v->name);
        } else if (v->kind == POA_VALUE_PARAM) {
            const poa_vit_tensor *t = poa_vit_find_tensor(p->model, v->name);
            at = t ? t->offset : -1;
        } else {
            for (int s = 0; s < 5; s++)
                if (strcmp(v->name, slots[s]) == 0 && (s < SLOT_RESAMPLE) == (v->kind == POA_VALUE_INPUT)) at = s;
        }
        if (at < 0) return poa_fail(e, "member %dx%d: the forward program's %s has no place in the pass", p->width,
                                    p->depth, v->name);
        p->value_offsets[i] = at;
    }
    if (g->output < 0) return poa_fail(e, "member %dx%d: the forward program has no output", p->width, p->depth);
    return 0;
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
    poa_program owned = p->owned;
    const int inference = p->inference, owned_width = p->owned_width, owned_depth = p->owned_depth,
              owned_image = p->owned_image;
    long *value_offsets = p->value_offsets;
    void **bases = p->bases;
    memset(p, 0, sizeof *p);
    p->owned = owned, p->inference = inference, p->value_offsets = value_offsets, p->bases = bases;
    p->owned_width = owned_width, p->owned_depth = owned_depth, p->owned_image = owned_image;
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
    if (with_arena && find_program(p, e)) {
        poa_vit_pass_free(p);
        return -1;
    }
    if (with_arena && p->inference) p->arena_count = poa_lin_at(p->program->arena, batch);
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
    if (with_arena && bind_program(p, &layout, e)) {
        poa_vit_pass_free(p);
        return -1;
    }
    return 0;
}

void poa_vit_pass_free(poa_vit_pass *p) {
    free(p->arena);
    free(p->ones);
    free(p->resample);
    free(p->value_offsets);
    free(p->bases);
    poa_program_free(&p->owned);
    p->program = NULL;
    p->arena = p->ones = p->resample = NULL;
    p->value_offsets = NULL;
    p->bases = NULL;
}

real *poa_vit_output(const poa_vit_pass *p) {
    return p->arena + p->value_offsets[p->program->output];
}

const real *poa_vit_block_output(const poa_vit_pass *p, int j) {
    if (p->inference) return NULL; /* not kept */
    vit_layout l;
    long total;
    vit_layout_compute(&l, p, &total);
    return j + 1 < p->depth ? p->arena + l.block[j + 1][B_X_IN] : p->arena + l.fixed[S_X_FINAL];
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

/* Runs the forward program over this pass's places of its values. */
void poa_vit_forward(poa_vit_pass *p, const real *params, const real *images,
                     const unsigned char *mask, const real *drop_scale) {
    const poa_program *g = p->program;
    void *const slots[] = { (void *)images, (void *)mask, (void *)drop_scale, p->resample, p->ones };
    p->mask = mask;
    p->drop_scale = drop_scale;
    for (int i = 0; i < g->value_count; i++) {
        const long at = p->value_offsets[i];
        const int kind = g->values[i].kind;
        p->bases[i] = kind == POA_VALUE_ACT ? (void *)(p->arena + at)
                    : kind == POA_VALUE_PARAM ? (void *)(params + at) : slots[at];
    }
    poa_program_run(g, p->bases, p->batch, p->kernels);
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
    assert(!p->inference && "poa_vit_backward: an inference pass keeps no activations");
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
