/* vit.c: one elastic ViT member's pass on the CPU backend: its arena and where the values of
   its two programs live, the forward (models/vit.lua's graph lowered by gen/program.lua) and
   the backward (its reverse mode, gen/backward.lua), both run by runtime/program.c. */
#include "vit.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "pos_resample.h" /* the bicubic resampling matrix of reference §1.7 */
#include "recipe.h"

int poa_vit_pass_init(poa_vit_pass *p, const poa_vit *model, int width, int depth, long batch, int image_size,
                      int mode, poa_error *e) {
    memset(p, 0, sizeof *p);
    p->mode = mode;
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

/* The gen.program builder of each program kind (vit.h): the GPU's forward and backward come
   from one build (gen/schedule.lua's gpu_programs). */
static const char *const builders[] = { "vit_forward", "vit_train_forward", "vit_backward", "vit_gpu_programs",
                                        "vit_gpu_programs" };

/* gen.program's builder(cfg, width, depth, image_size, bf16): the GPU's (forward, backward), the others one program. */
int poa_vit_push_program(lua_State *L, const poa_vit_config *c, int width, int depth, int image_size, int kind,
                         int bf16, poa_error *e) {
    if (poa_lua_push_function(L, "gen.program", builders[kind], e)) return -1;
    poa_vit_push_config(L, c);
    lua_pushinteger(L, width);
    lua_pushinteger(L, depth);
    lua_pushinteger(L, image_size);
    lua_pushboolean(L, bf16);
    if (lua_pcall(L, 5, kind >= POA_VIT_GPU_FORWARD ? 2 : 1, 0) != LUA_OK) {
        int rc = poa_fail(e, "member %dx%d: the %s program: %s", width, depth, builders[kind] + 4, lua_tostring(L, -1));
        lua_pop(L, 1);
        return rc;
    }
    if (kind == POA_VIT_GPU_FORWARD) lua_rotate(L, -2, 1); /* this kind's on top */
    return 0;
}

/* Finds (in the process-wide cache) or builds the program of this kind (POA_VIT_*) into r. */
static int run_find(poa_vit_run *r, const poa_vit_config *config, int width, int depth, int image_size, int kind,
                    int bf16, poa_error *e) {
    poa_vit_program_key key;
    memset(&key, 0, sizeof key);
    key.config = *config;
    key.width = width, key.depth = depth, key.image_size = image_size, key.kind = kind, key.bf16 = bf16;
    if ((r->program = poa_program_cache_find(&key, sizeof key))) return 0;
    if (r->owned.steps && memcmp(&r->owned_key, &key, sizeof key) == 0) {
        r->program = &r->owned;
        return 0;
    }
    poa_program_free(&r->owned);
    poa_program built = { 0 }, sibling = { 0 };
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    /* the GPU's two programs of one build are both read, the other cached for the pass that
       asks for it next */
    const int pair = kind >= POA_VIT_GPU_FORWARD;
    int rc = poa_vit_push_program(L, config, width, depth, image_size, kind, bf16, e);
    if (rc == 0) rc = poa_program_from_lua(L, -1, &built, e);
    if (rc == 0 && pair) rc = poa_program_from_lua(L, -2, &sibling, e);
    lua_close(L);
    if (rc) {
        poa_program_free(&built);
        return rc;
    }
    if (pair) {
        poa_vit_program_key other;
        memcpy(&other, &key, sizeof key); /* padding included: keys are compared bytewise */
        other.kind = kind == POA_VIT_GPU_FORWARD ? POA_VIT_GPU_BACKWARD : POA_VIT_GPU_FORWARD;
        if (!poa_program_cache_add(&other, sizeof other, &sibling)) poa_program_free(&sibling);
    }
    if ((r->program = poa_program_cache_add(&key, sizeof key, &built))) return 0;
    r->owned = built;
    memcpy(&r->owned_key, &key, sizeof key); /* padding included: compared with memcmp */
    r->program = &r->owned;
    return 0;
}

/* r's value offsets at this batch: its activations at base + their arena offsets; a backward's (`forward` not
   NULL) saved ones where `forward` placed them. width, depth: the member, for the messages. */
static int run_bind(poa_vit_run *r, const poa_vit *model, const poa_program *forward, int width, int depth, long batch,
                    long base, poa_error *e) {
    static const char *const slots[POA_VIT_SLOTS] = { "images", "mask", "drop_scale", "dout", "resample", "ones",
                                                      "cast_a", "cast_b" };
    const poa_program *g = r->program;
    free(r->value_offsets);
    free(r->bases);
    r->value_offsets = calloc((size_t)g->value_count + 1, sizeof *r->value_offsets);
    r->bases = calloc((size_t)g->value_count + 1, sizeof *r->bases);
    if (!r->value_offsets || !r->bases) return poa_fail(e, "member %dx%d: out of memory", width, depth);
    for (int i = 0; i < g->value_count; i++) {
        const poa_program_value *v = &g->values[i];
        long at = -1;
        if (v->kind == POA_VALUE_ACT) {
            at = base + poa_lin_at(v->offset, batch);
        } else if (v->kind == POA_VALUE_SAVED) {
            int f = forward ? poa_program_find(forward, v->name) : -1;
            if (f >= 0 && forward->values[f].kind == POA_VALUE_ACT) at = poa_lin_at(forward->values[f].offset, batch);
        } else if (v->kind == POA_VALUE_PARAM || v->kind == POA_VALUE_GRAD) {
            const poa_vit_tensor *t = poa_vit_find_tensor(model, v->name);
            at = t ? t->offset : -1;
        } else {
            for (int s = 0; s < POA_VIT_SLOTS; s++)
                if (strcmp(v->name, slots[s]) == 0) at = s;
        }
        if (at < 0)
            return poa_fail(e, "member %dx%d: the program's %s has no place in the pass", width, depth, v->name);
        r->value_offsets[i] = at;
    }
    if (!forward && g->output < 0) return poa_fail(e, "member %dx%d: the forward program has no output", width, depth);
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

int poa_vit_runs_find(poa_vit_run *fwd, poa_vit_run *bwd, const poa_vit *model, int width, int depth, int image_size,
                      long batch, int kind, int bf16, long *forward_count, long *arena_count, poa_error *e) {
    const poa_vit_config *c = &model->config;
    const int backward = kind != POA_VIT_INFERENCE;
    if (run_find(fwd, c, width, depth, image_size, kind, bf16, e) ||
        (backward && run_find(bwd, c, width, depth, image_size, kind + 1, bf16, e)))
        return -1;
    *forward_count = poa_lin_at(fwd->program->arena, batch);
    *arena_count = *forward_count + (backward ? poa_lin_at(bwd->program->arena, batch) : 0);
    return run_bind(fwd, model, NULL, width, depth, batch, 0, e) ||
           (backward && run_bind(bwd, model, fwd->program, width, depth, batch, *forward_count, e)) ? -1 : 0;
}

int poa_vit_pass_prepare(poa_vit_pass *p, const poa_vit *model, int width, int depth, long batch, int image_size,
                         poa_error *e) {
    const poa_vit_config *c = &model->config;
    if (width < c->head_dim || width > c->max_width || width % c->head_dim)
        return poa_fail(e, "member %dx%d: width must be a multiple of %d in %d..%d", width, depth,
                        c->head_dim, c->head_dim, c->max_width);
    if (depth < 1 || depth > c->max_depth)
        return poa_fail(e, "member %dx%d: depth must be in 1..%d", width, depth, c->max_depth);
    if (image_size <= 0 || image_size % c->patch_size)
        return poa_fail(e, "image size %d is not a multiple of the patch size %d", image_size,
                        c->patch_size);
    const long resample_grid = p->resample ? p->image_size / c->patch_size : 0; /* the grid p->resample was made for */
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
    p->kernels = p->mode == POA_VIT_PASS_LAYOUT ? NULL : poa_vit_kernels_for(width, c->head_dim, p->hidden);
    p->batch = batch;
    p->image_size = image_size;
    const long grid = image_size / c->patch_size;
    p->patches = grid * grid;
    p->tokens = p->patches + 1;
    p->rows = batch * p->tokens;
    p->alpha = (real)((double)c->max_width / width);
    /* the programs and the size of the arena: an inference pass, the forward's liveness arena; a training pass,
       the training forward's (its activations the backward reads kept to its end) and the backward's own after it */
    const int with_arena = p->mode != POA_VIT_PASS_LAYOUT;
    long forward_count;
    if (with_arena && poa_vit_runs_find(&p->fwd, &p->bwd, model, width, depth, image_size, batch,
                                        p->mode == POA_VIT_PASS_INFERENCE ? POA_VIT_INFERENCE : POA_VIT_FORWARD, 0,
                                        &forward_count, &p->arena_count, e)) {
        poa_vit_pass_free(p);
        return -1;
    }
    /* Buffers of an earlier shape are kept when they are large enough (a fresh arena
       costs a page fault per page on every step). */
    if (with_arena && (!p->arena || p->arena_capacity < p->arena_count)) {
        free(p->arena);
        p->arena = calloc((size_t)p->arena_count, sizeof(real));
        p->arena_capacity = p->arena_count;
    }
    free(p->ones);
    p->ones = malloc(sizeof(real) * (size_t)width);
    const long native_grid = c->image_size / c->patch_size;
    if (grid != resample_grid) {
        free(p->resample);
        p->resample = NULL;
        if (grid != native_grid) {
            p->resample = malloc(sizeof(real) * (size_t)(p->patches * native_grid * native_grid));
            if (p->resample) poa_vit_resample_matrix(p->resample, (int)native_grid, (int)grid);
        }
    }
    if ((with_arena && !p->arena) || !p->ones || (grid != native_grid && !p->resample)) {
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
    if (p->mode == POA_VIT_PASS_INFERENCE) return NULL; /* not kept */
    char name[32];
    if (j + 1 < p->depth) snprintf(name, sizeof name, "block%d.x_in", j + 1);
    else snprintf(name, sizeof name, "x_final");
    int v = poa_program_find(p->fwd.program, name);
    return v >= 0 ? p->arena + p->fwd.value_offsets[v] : NULL;
}

/* Runs the forward program over this pass's places of its values. */
void poa_vit_forward(poa_vit_pass *p, const real *params, const real *images,
                     const unsigned char *mask, const real *drop_scale) {
    void *const slots[POA_VIT_SLOTS] = { (void *)images, (void *)mask, (void *)drop_scale, NULL, p->resample, p->ones };
    p->mask = mask;
    p->drop_scale = drop_scale;
    set_bases(&p->fwd, p->arena, params, NULL, slots);
    poa_program_run(p->fwd.program, p->fwd.bases, p->batch, p->kernels);
}

/* Runs the backward program (gen/backward.lua) with the mask and drop-path scales of the
   last forward: every parameter gradient accumulated into grads. */
void poa_vit_backward(poa_vit_pass *p, const real *params, real *grads, const real *dout) {
    assert(p->mode == POA_VIT_PASS_TRAINING && "poa_vit_backward: an inference pass keeps no activations");
    void *const slots[POA_VIT_SLOTS] = { NULL, (void *)p->mask, (void *)p->drop_scale, (void *)dout, p->resample, p->ones };
    set_bases(&p->bwd, p->arena, params, grads, slots);
    poa_program_run(p->bwd.program, p->bwd.bases, p->batch, p->kernels);
}
