/* vit.c: one elastic ViT member's pass on the CPU backend: its arena and where the values of
   its two programs live, the forward (models/vit.lua's graph lowered by gen/program.lua) and
   the backward (its reverse mode, gen/backward.lua), both run by runtime/program.c. */
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
   backward's scratch (the GPU pass's names; on the CPU the backward program's own values,
   laid out by liveness, start at grad.x, and the arena grows if they need more). Every
   buffer starts on a multiple of 16 elements. */
enum {
    B_X_IN, B_LN1_MEAN, B_LN1_RSTD, B_QKV, B_PROBS, B_ATTN, B_H1, B_X_MID,
    B_LN2_MEAN, B_LN2_RSTD, B_U, B_H2, BLOCK_BUFFERS
};
/* g = GELU(u) and ln (the output of a block's LayerNorms) are one buffer each for all blocks:
   the backward program recomputes them (gen/backward.lua's recompute policy) from the block's
   u, and from its x_in or x_mid with the saved mean and rstd, just before fc2's, fc1's and
   qkv's weight gradients read them (rows x (hidden + 2 width) less per block to keep). */
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

/* gen/program.lua's cfg table of config c (vit_member's fields), pushed on L's stack. */
void poa_vit_push_config(lua_State *L, const poa_vit_config *c) {
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
}

static int push_program(lua_State *L, const char *builder, const poa_vit_config *c, int width, int depth,
                        int image_size, poa_error *e) {
    lua_getglobal(L, "require");
    lua_pushstring(L, "gen.program");
    int rc = lua_pcall(L, 1, 1, 0);
    if (rc == LUA_OK) {
        lua_getfield(L, -1, builder);
        lua_remove(L, -2);
        poa_vit_push_config(L, c);
        lua_pushinteger(L, width);
        lua_pushinteger(L, depth);
        lua_pushinteger(L, image_size);
        rc = lua_pcall(L, 4, 1, 0);
    }
    if (rc == LUA_OK) return 0;
    rc = poa_fail(e, "member %dx%d: the %s program: %s", width, depth, builder + 4, lua_tostring(L, -1));
    lua_pop(L, 1);
    return rc;
}

int poa_vit_push_program(lua_State *L, const poa_vit_config *c, int width, int depth, int image_size,
                         poa_error *e) {
    return push_program(L, "vit_forward", c, width, depth, image_size, e);
}

int poa_vit_push_backward_program(lua_State *L, const poa_vit_config *c, int width, int depth, int image_size,
                                  poa_error *e) {
    return push_program(L, "vit_backward", c, width, depth, image_size, e);
}

/* The forward (backward 0) or backward program of the pass's member and image size: from the
   process-wide cache, or built (gen/ through the Lua built into poa) and cached, or kept by
   the pass when the cache is full. */
static int find_program(poa_vit_pass *p, int backward, poa_error *e) {
    struct { poa_vit_config config; int width, depth, image_size, backward; } key;
    poa_vit_run *r = backward ? &p->bwd : &p->fwd;
    memset(&key, 0, sizeof key);
    key.config = p->model->config;
    key.width = p->width, key.depth = p->depth, key.image_size = (int)p->image_size, key.backward = backward;
    if ((r->program = poa_program_cache_find(&key, sizeof key))) return 0;
    if (r->owned.steps && r->owned_width == p->width && r->owned_depth == p->depth &&
        r->owned_image == (int)p->image_size) {
        r->program = &r->owned;
        return 0;
    }
    poa_program_free(&r->owned);
    poa_program built;
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    int rc = (backward ? poa_vit_push_backward_program : poa_vit_push_program)(L, &p->model->config, p->width,
                                                                                p->depth, (int)p->image_size, e);
    if (rc == 0) rc = poa_program_from_lua(L, -1, &built, e);
    lua_close(L);
    if (rc) return rc;
    if ((r->program = poa_program_cache_add(&key, sizeof key, &built))) return 0;
    r->owned = built;
    r->owned_width = p->width, r->owned_depth = p->depth, r->owned_image = (int)p->image_size;
    r->program = &r->owned;
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

enum { SLOT_IMAGES, SLOT_MASK, SLOT_DROP_SCALE, SLOT_DOUT, SLOT_RESAMPLE, SLOT_ONES, SLOTS };

/* Where each value of program r lives for this pass (value_offsets): a forward activation in
   the training layout (saved ones too), or the inference arena; a backward's own activation at
   `backward_base` + its offset; a parameter or gradient at its tensor's offset; an input or
   const in its slot. */
static int bind_program(poa_vit_pass *p, poa_vit_run *r, const vit_layout *l, long backward_base, poa_error *e) {
    static const char *const slots[SLOTS] = { "images", "mask", "drop_scale", "dout", "resample", "ones" };
    const poa_program *g = r->program;
    free(r->value_offsets);
    free(r->bases);
    r->value_offsets = calloc((size_t)g->value_count + 1, sizeof *r->value_offsets);
    r->bases = calloc((size_t)g->value_count + 1, sizeof *r->bases);
    if (!r->value_offsets || !r->bases) return poa_fail(e, "member %dx%d: out of memory", p->width, p->depth);
    for (int i = 0; i < g->value_count; i++) {
        const poa_program_value *v = &g->values[i];
        long at = -1;
        if (v->kind == POA_VALUE_ACT && backward_base >= 0) {
            at = backward_base + poa_lin_at(v->offset, p->batch);
        } else if (v->kind == POA_VALUE_ACT || v->kind == POA_VALUE_SAVED) {
            at = p->inference ? poa_lin_at(v->offset, p->batch) : layout_offset(l, p, v->name);
        } else if (v->kind == POA_VALUE_PARAM || v->kind == POA_VALUE_GRAD) {
            const poa_vit_tensor *t = poa_vit_find_tensor(p->model, v->name);
            at = t ? t->offset : -1;
        } else {
            for (int s = 0; s < SLOTS; s++)
                if (strcmp(v->name, slots[s]) == 0 && (s < SLOT_RESAMPLE) == (v->kind == POA_VALUE_INPUT)) at = s;
        }
        if (at < 0) return poa_fail(e, "member %dx%d: the program's %s has no place in the pass", p->width,
                                    p->depth, v->name);
        r->value_offsets[i] = at;
    }
    if (backward_base < 0 && g->output < 0)
        return poa_fail(e, "member %dx%d: the forward program has no output", p->width, p->depth);
    return 0;
}

/* Points r's bases at this call's buffers. */
static void set_bases(poa_vit_run *r, real *arena, const real *params, real *grads, void *const *slots) {
    const poa_program *g = r->program;
    for (int i = 0; i < g->value_count; i++) {
        const long at = r->value_offsets[i];
        const int kind = g->values[i].kind;
        r->bases[i] = kind == POA_VALUE_ACT || kind == POA_VALUE_SAVED ? (void *)(arena + at)
                    : kind == POA_VALUE_PARAM ? (void *)(params + at)
                    : kind == POA_VALUE_GRAD ? (void *)(grads + at) : slots[at];
    }
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

/* The pass's programs and its arena size: an inference pass, the forward's liveness arena; a
   training pass, the layout's (arena_count on entry), grown if the backward program's own
   values, placed from backward_base (grad.x: the layout's backward scratch) on, need more. */
static int programs_arena(poa_vit_pass *p, long backward_base, poa_error *e) {
    if (find_program(p, 0, e) || (!p->inference && find_program(p, 1, e))) return -1;
    if (p->inference) {
        p->arena_count = poa_lin_at(p->fwd.program->arena, p->batch);
    } else {
        const long end = backward_base + poa_lin_at(p->bwd.program->arena, p->batch);
        if (end > p->arena_count) p->arena_count = end;
    }
    return 0;
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
    const poa_vit_run fwd = p->fwd, bwd = p->bwd;
    const int inference = p->inference;
    memset(p, 0, sizeof *p);
    p->fwd = fwd, p->bwd = bwd, p->inference = inference;
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
    const long backward_base = layout.fixed[S_GRAD_X];
    if (with_arena && programs_arena(p, backward_base, e)) {
        poa_vit_pass_free(p);
        return -1;
    }
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
    if (with_arena && (bind_program(p, &p->fwd, &layout, -1, e) ||
                       (!p->inference && bind_program(p, &p->bwd, &layout, backward_base, e)))) {
        poa_vit_pass_free(p);
        return -1;
    }
    return 0;
}

void poa_vit_pass_free(poa_vit_pass *p) {
    free(p->arena);
    free(p->ones);
    free(p->resample);
    poa_vit_run *runs[] = { &p->fwd, &p->bwd };
    for (int i = 0; i < 2; i++) {
        free(runs[i]->value_offsets);
        free(runs[i]->bases);
        poa_program_free(&runs[i]->owned);
        memset(runs[i], 0, sizeof *runs[i]);
    }
    p->arena = p->ones = p->resample = NULL;
}

real *poa_vit_output(const poa_vit_pass *p) {
    return p->arena + p->fwd.value_offsets[p->fwd.program->output];
}

const real *poa_vit_block_output(const poa_vit_pass *p, int j) {
    if (p->inference) return NULL; /* not kept */
    vit_layout l;
    long total;
    vit_layout_compute(&l, p, &total);
    return j + 1 < p->depth ? p->arena + l.block[j + 1][B_X_IN] : p->arena + l.fixed[S_X_FINAL];
}

/* Runs the forward program over this pass's places of its values. */
void poa_vit_forward(poa_vit_pass *p, const real *params, const real *images,
                     const unsigned char *mask, const real *drop_scale) {
    void *const slots[] = { (void *)images, (void *)mask, (void *)drop_scale, NULL, p->resample, p->ones };
    p->mask = mask;
    p->drop_scale = drop_scale;
    set_bases(&p->fwd, p->arena, params, NULL, slots);
    poa_program_run(p->fwd.program, p->fwd.bases, p->batch, p->kernels);
}

/* Runs the backward program (gen/backward.lua) with the mask and drop-path scales of the
   last forward: every parameter gradient accumulated into grads. */
void poa_vit_backward(poa_vit_pass *p, const real *params, real *grads, const real *dout) {
    assert(!p->inference && "poa_vit_backward: an inference pass keeps no activations");
    void *const slots[] = { NULL, (void *)p->mask, (void *)p->drop_scale, (void *)dout, p->resample, p->ones };
    set_bases(&p->bwd, p->arena, params, grads, slots);
    poa_program_run(p->bwd.program, p->bwd.bases, p->batch, p->kernels);
}
