/* cuda_vit.c: one elastic ViT member's GPU pass (see cuda_vit.h): the sources, and the pass:
   device memory bound to the GPU programs' values. */
#include "cuda_vit.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "recipe.h"

/* ---- the sources ---- */

int poa_cuda_sources_load(poa_cuda_sources *s, const char *recipe, const char *overrides, poa_error *e) {
    memset(s, 0, sizeof *s);
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    int rc = 0;
    if (luaL_loadstring(L, "return require('gen.emit').cuda_modules(...)") != LUA_OK) {
        rc = poa_fail(e, "%s", lua_tostring(L, -1));
    } else {
        lua_pushstring(L, recipe);
        lua_pushstring(L, overrides);
        if (lua_pcall(L, 2, 1, 0) != LUA_OK) rc = poa_fail(e, "%s", lua_tostring(L, -1));
    }
    const int n = rc ? 0 : (int)luaL_len(L, -1);
    s->names = calloc((size_t)n + 1, sizeof *s->names), s->texts = calloc((size_t)n + 1, sizeof *s->texts);
    for (int i = 0; i < n && s->names && s->texts; i++, s->count++, lua_pop(L, 3)) {
        lua_rawgeti(L, -1, i + 1);
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        s->names[i] = strdup(lua_tostring(L, -2)), s->texts[i] = strdup(lua_tostring(L, -1));
        if (!s->names[i] || !s->texts[i]) break;
    }
    if (!rc && s->count < n) rc = poa_fail(e, "%s: out of memory for the CUDA modules' text", recipe ? recipe : "poa");
    lua_close(L);
    if (rc) poa_cuda_sources_free(s);
    return rc;
}

const char *poa_cuda_sources_find(const poa_cuda_sources *s, const char *name) {
    for (int i = 0; i < s->count; i++)
        if (!strcmp(s->names[i], name)) return s->texts[i];
    return NULL;
}

void poa_cuda_sources_free(poa_cuda_sources *s) {
    for (int i = 0; s->names && s->texts && i <= s->count; i++) free(s->names[i]), free(s->texts[i]);
    free(s->names), free(s->texts);
    memset(s, 0, sizeof *s);
}

int poa_cuda_upload_values(const poa_cuda_exec *x, CUdeviceptr to, const float *floats, const real *reals, long n,
                           int bf16, poa_error *e) {
    if (!poa_cuda_exec_runs(x)) return 0;
    const size_t size = bf16 ? 2 : sizeof(float);
    char *host = malloc(size * (size_t)(n > 0 ? n : 1));
    if (!host) return poa_fail(e, "out of memory for %ld values to upload", n);
    for (long i = 0; i < n; i++) {
        const float v = floats ? floats[i] : reals ? (float)reals[i] : 1.0f;
        if (bf16) ((uint16_t *)host)[i] = poa_bf16_from_float(v);
        else ((float *)host)[i] = v;
    }
    int rc = poa_cuda_exec_upload(x, to, host, size * (size_t)n, e) || poa_cuda_exec_synchronize(x, e) ? -1 : 0;
    free(host); /* after the synchronisation */
    return rc;
}

/* ---- the pass ---- */

enum { MODULE_SET, MODULE_FUSED, MODULE_GLUE, MODULES };

/* Fake device addresses of a pass that runs nowhere: region r starts at r << 40. */
enum { REGION_PARAMS = 1, REGION_GRADS, REGION_ARENA, REGION_ONES, REGION_RESAMPLE, REGION_IMAGES,
       REGION_MASK, REGION_DROP, REGION_PARAMS_BF16, REGION_ARENA_BF16, REGION_RESAMPLE_BF16, REGION_DOUT };

/* One of the pass's own glue kernels (not a program step) over `elements` threads, its
   geometry gen/emit.lua's (poa_runtime_launches). */
static int glue(poa_cuda_vit_pass *p, const char *name, long elements, void **args, poa_error *e) {
    if (!poa_cuda_exec_runs(&p->exec)) return 0;
    int i;
    const poa_program_launch *k = poa_runtime_launch(name, &i, e);
    CUfunction f = NULL;
    if (!k || (p->exec.cuda && poa_cuda_get_function(p->exec.cuda, p->modules[MODULE_GLUE], name, &f, e))) return -1;
    return poa_launch(&p->exec, f, k, elements, args, name, e);
}

static int fill(poa_cuda_vit_pass *p, CUdeviceptr dst, float value, long n, poa_error *e) {
    void *args[] = { &dst, &value, &n };
    return glue(p, "poa_glue_fill", n, args, e);
}

static int allocate(poa_cuda_vit_pass *p, CUdeviceptr *pointer, int region, size_t bytes, poa_error *e) {
    return poa_cuda_exec_alloc(&p->exec, pointer, region, bytes, e);
}

/* The pass's programs (fp32 or bf16 GEMM operands), their offsets and, on a GPU, each launch's
   function. */
static int find_programs(poa_cuda_vit_pass *p, int bf16, poa_error *e) {
    if (poa_vit_runs_find(&p->fwd, &p->bwd, p->model, p->width, p->depth, (int)p->host.image_size, p->batch,
                          POA_VIT_GPU_FORWARD, bf16, &p->forward_count, &p->arena_count, e))
        return -1;
    p->programs_bf16 = bf16;
    return 0;
}

/* Each launch's function of both programs (GPU; every module loaded). */
static int find_functions(poa_cuda_vit_pass *p, poa_error *e) {
    const char *names[MODULES] = { p->set_name, "vit_fused.cu", "vit_glue.cu" };
    poa_vit_run *runs[2] = { &p->fwd, &p->bwd };
    for (int i = 0; i < 2; i++) {
        free(p->functions[i]);
        p->functions[i] = calloc((size_t)runs[i]->program->launch_count + 1, sizeof(CUfunction));
        if (!p->functions[i]) return poa_fail(e, "member %dx%d: out of memory", p->width, p->depth);
        if (poa_cuda_functions(runs[i]->program->launches, runs[i]->program->launch_count, p->exec.cuda, names,
                               p->modules, MODULES, p->functions[i], e))
            return -1;
    }
    return 0;
}

/* Device addresses of run r's values (and of their bf16 copies) for this call. */
static void bases_of(const poa_cuda_vit_pass *p, const poa_vit_run *r, CUdeviceptr *bases, CUdeviceptr *bf16) {
    const size_t f = sizeof(float);
    const CUdeviceptr slots[POA_VIT_SLOTS] = {
        p->images, p->has_mask ? p->mask : 0, p->has_drop_scale ? p->drop_scale : 0, p->dout, p->resample, p->ones,
        p->cast_bf16, p->cast_bf16 ? p->cast_bf16 + 2 * (size_t)p->cast_capacity : 0 };
    for (int i = 0; i < r->program->value_count; i++) {
        const long at = r->value_offsets[i];
        const int kind = r->program->values[i].kind;
        bf16[i] = 0;
        if (kind == POA_VALUE_ACT || kind == POA_VALUE_SAVED) {
            bases[i] = p->arena + f * (size_t)at;
        } else if (kind == POA_VALUE_PARAM) {
            bases[i] = p->params + f * (size_t)at;
            bf16[i] = p->params_bf16 ? p->params_bf16 + 2 * (size_t)at : 0;
        } else if (kind == POA_VALUE_GRAD) {
            bases[i] = p->grads + f * (size_t)at;
        } else {
            bases[i] = slots[at];
            if (at == POA_VIT_SLOT_RESAMPLE) bf16[i] = p->resample_bf16;
        }
    }
}

/* Runs program `which` (0 forward, 1 backward). */
static int run(poa_cuda_vit_pass *p, int which, poa_error *e) {
    const poa_vit_run *r = which ? &p->bwd : &p->fwd;
    if (p->programs_bf16 && !p->bf16)
        return poa_fail(e, "member %dx%d: bf16 programs without bf16 buffers (poa_cuda_vit_pass_use_bf16)", p->width,
                        p->depth);
    CUdeviceptr *bases = malloc(2 * sizeof *bases * (size_t)(r->program->value_count + 1));
    if (!bases) return poa_fail(e, "member %dx%d: out of memory", p->width, p->depth);
    bases_of(p, r, bases, bases + r->program->value_count + 1);
    char label[96];
    snprintf(label, sizeof label, "the %s of member %dx%d", which ? "backward" : "forward", p->width, p->depth);
    int rc = poa_program_run_cuda(r->program, &p->exec, p->functions[which], bases, bases + r->program->value_count + 1,
                                  p->batch, label, e);
    free(bases);
    return rc;
}

/* Frees p and fails with "label: what e's message". */
static int fail_freeing(poa_cuda_vit_pass *p, const char *label, const char *what, poa_error *e) {
    char message[sizeof e->message];
    snprintf(message, sizeof message, "%s", e->message);
    poa_cuda_vit_pass_free(p);
    return poa_fail(e, "%s: %s%s", label, what, message);
}

int poa_cuda_vit_pass_init(poa_cuda_vit_pass *p, const poa_cuda_exec *exec, const poa_vit *model, int width, int depth,
                           long batch, int image_size, const poa_cuda_sources *sources,
                           const poa_cuda_vit_shared *shared, poa_error *e) {
    poa_cuda *cuda = exec->cuda;
    memset(p, 0, sizeof *p);
    p->exec = *exec; /* with its module cache, allocation account and profile */
    p->exec.planning = 0;
    if (shared) {
        p->shared = *shared;
        if (!shared->params) return poa_fail(e, "CUDA ViT pass: shared memory needs the parameters");
    }
    if (cuda && !exec->lt) return poa_fail(e, "CUDA ViT pass: a GPU pass needs a cuBLASLt handle");
    if (poa_vit_pass_init(&p->host, model, width, depth, batch, image_size, POA_VIT_PASS_LAYOUT, e)) return -1;
    p->model = model;
    p->width = width, p->depth = depth, p->batch = batch;
    p->rows = p->host.rows, p->tokens = p->host.tokens, p->patches = p->host.patches;
    const poa_vit_config *c = &model->config;
    snprintf(p->set_name, sizeof p->set_name, "vit_w%d_h%d_f%d.cu", width, c->head_dim, p->host.hidden);
    char label[64];
    snprintf(label, sizeof label, "member %dx%d", width, depth);
    const char *names[MODULES] = { p->set_name, "vit_fused.cu", "vit_glue.cu" }, *texts[MODULES];
    for (int i = 0; i < MODULES; i++)
        if (!(texts[i] = poa_cuda_sources_find(sources, names[i]))) {
            poa_cuda_vit_pass_free(p);
            return poa_fail(e, "%s: no CUDA module %s among the recipe's", label, names[i]);
        }
    if (find_programs(p, shared && shared->bf16, e)) return fail_freeing(p, label, "", e);

    /* device memory */
    const long native = c->image_size / c->patch_size;
    const size_t f = sizeof(float);
    const long image_count = batch * c->in_channels * (long)image_size * image_size;
    if (shared) p->params = shared->params, p->grads = shared->grads;
    p->arena_shared = shared && shared->arena && shared->arena_capacity >= p->arena_count;
    if (p->arena_shared) p->arena = shared->arena;
    p->arena_capacity = p->arena_shared ? shared->arena_capacity : p->arena_count;
    if ((!shared && (allocate(p, &p->params, REGION_PARAMS, f * (size_t)model->parameter_count, e) ||
                     allocate(p, &p->grads, REGION_GRADS, f * (size_t)model->parameter_count, e))) ||
        (!p->arena_shared && allocate(p, &p->arena, REGION_ARENA, f * (size_t)p->arena_count, e)) ||
        allocate(p, &p->ones, REGION_ONES, f * (size_t)width, e) ||
        (p->host.resample && allocate(p, &p->resample, REGION_RESAMPLE,
                                      f * (size_t)(p->patches * native * native), e)) ||
        (shared && shared->images ? (p->images = shared->images, 0)
                                  : allocate(p, &p->images, REGION_IMAGES, f * (size_t)image_count, e)) ||
        allocate(p, &p->mask, REGION_MASK, (size_t)(batch * p->patches), e) ||
        allocate(p, &p->drop_scale, REGION_DROP, f * (size_t)(depth * 2 * batch), e) ||
        allocate(p, &p->dout, REGION_DOUT, f * (size_t)(p->rows * width), e))
        return fail_freeing(p, label, "device memory: ", e);
    if (!cuda && !exec->emulator) return 0;

    /* constants: LayerScale ones and the resampling matrix (as float) */
    int rc = poa_cuda_upload_values(&p->exec, p->ones, NULL, NULL, width, 0, e) ||
                     (p->host.resample && poa_cuda_upload_values(&p->exec, p->resample, NULL, p->host.resample,
                                                                 p->patches * native * native, 0, e))
                 ? -1
                 : 0;
    for (int i = 0; i < MODULES && !rc && cuda; i++)
        rc = poa_cuda_exec_load_module(&p->exec, texts[i], names[i], &p->modules[i], e);
    if (!rc && cuda) rc = find_functions(p, e);
    /* a zeroed arena (neither a GPU's nor an emulator's memory need start zeroed); a shared one
       is another pass's, written before read */
    if (!rc && !p->arena_shared) rc = fill(p, p->arena, 0.0f, p->arena_count, e);
    return rc ? fail_freeing(p, label, "", e) : 0;
}

int poa_cuda_vit_pass_use_bf16(poa_cuda_vit_pass *p, poa_error *e) {
    if (p->bf16) return 0;
    if (p->shared.params && !p->shared.params_bf16)
        return poa_fail(e, "member %dx%d: bf16 with shared parameters needs their shared bf16 shadow", p->width,
                        p->depth);
    if (!p->programs_bf16 && (find_programs(p, 1, e) || (p->exec.cuda && find_functions(p, e))))
        return -1;
    if (p->arena_count > p->arena_capacity) /* never so far: bf16 drops the bias rows, adds no activation */
        return poa_fail(e, "member %dx%d: the bf16 programs need an arena of %ld floats, the pass has %ld (make it bf16 "
                           "at init: poa_cuda_vit_shared.bf16)", p->width, p->depth, p->arena_count, p->arena_capacity);
    const long native = p->model->config.image_size / p->model->config.patch_size;
    const long resample_count = p->host.resample ? p->patches * native * native : 0;
    if (p->shared.params_bf16) p->params_bf16 = p->shared.params_bf16;
    /* the cast slots: as large as the largest operand the programs cast (gen/schedule.lua's sizes) */
    const poa_program *programs[2] = { p->fwd.program, p->bwd.program };
    p->cast_capacity = 0;
    for (int g = 0; g < 2; g++)
        for (int i = 0; i < programs[g]->value_count; i++)
            if (programs[g]->values[i].kind == POA_VALUE_CAST && poa_lin_at(programs[g]->values[i].size, p->batch) > p->cast_capacity)
                p->cast_capacity = poa_lin_at(programs[g]->values[i].size, p->batch);
    p->cast_shared = p->shared.cast_bf16 && p->shared.cast_capacity >= p->cast_capacity;
    if (p->cast_shared) p->cast_bf16 = p->shared.cast_bf16, p->cast_capacity = p->shared.cast_capacity;
    if ((!p->shared.params_bf16 &&
         allocate(p, &p->params_bf16, REGION_PARAMS_BF16, 2 * (size_t)p->model->parameter_count, e)) ||
        (p->cast_shared ? 0 : allocate(p, &p->cast_bf16, REGION_ARENA_BF16, 2 * 2 * (size_t)p->cast_capacity, e)) ||
        (resample_count && allocate(p, &p->resample_bf16, REGION_RESAMPLE_BF16, 2 * (size_t)resample_count, e)))
        return poa_fail(e, "member %dx%d: bf16 buffers: %s", p->width, p->depth, e->message);
    p->bf16 = 1;
    if (!resample_count) return 0;
    return poa_cuda_upload_values(&p->exec, p->resample_bf16, NULL, p->host.resample, resample_count, 1, e);
}

int poa_cuda_vit_pass_plan_gemms(poa_cuda_vit_pass *p, poa_error *e) {
    if (!p->exec.cuda) return 0;
    p->exec.planning = 1;
    int rc = run(p, 0, e) || run(p, 1, e) ? -1 : 0;
    p->exec.planning = 0;
    return rc;
}

void poa_cuda_vit_pass_free(poa_cuda_vit_pass *p) {
    if (p->shared.params) p->params = p->grads = 0; /* not ours */
    if (p->shared.params_bf16) p->params_bf16 = 0;
    if (p->arena_shared) p->arena = 0;
    if (p->cast_shared) p->cast_bf16 = 0;
    if (p->shared.images) p->images = 0;
    CUdeviceptr *pointers[] = { &p->params, &p->grads, &p->arena, &p->ones, &p->resample,
                                &p->images, &p->mask, &p->drop_scale, &p->params_bf16,
                                &p->cast_bf16, &p->resample_bf16, &p->dout };
    for (size_t i = 0; i < sizeof pointers / sizeof pointers[0]; i++) poa_cuda_exec_free(&p->exec, pointers[i]);
    if (p->exec.cuda && !p->exec.modules)
        for (int i = 0; i < MODULES; i++) poa_cuda_exec_unload_module(&p->exec, p->modules[i]);
    poa_vit_run *runs[2] = { &p->fwd, &p->bwd };
    for (int i = 0; i < 2; i++) {
        free(runs[i]->value_offsets);
        free(runs[i]->bases);
        poa_program_free(&runs[i]->owned);
        free(p->functions[i]);
    }
    poa_vit_pass_free(&p->host);
    memset(p, 0, sizeof *p);
}

/* ---- running, host <-> device ---- */

static int need_gpu(const poa_cuda_vit_pass *p, const char *what, poa_error *e) {
    return p->exec.cuda || p->exec.emulator ? 0 : poa_fail(e, "%s: no GPU (a pass that runs nowhere)", what);
}

int poa_cuda_vit_forward(poa_cuda_vit_pass *p, const float *images, const unsigned char *mask,
                         const float *drop_scale, poa_error *e) {
    const poa_vit_config *c = &p->model->config;
    const long image_count = p->batch * c->in_channels * p->host.image_size * p->host.image_size;
    p->has_mask = mask != NULL;
    p->has_drop_scale = drop_scale != NULL;
    if (!images && !p->shared.images)
        return poa_fail(e, "member %dx%d: forward without images", p->width, p->depth);
    if ((images && poa_cuda_exec_upload(&p->exec, p->images, images, sizeof(float) * (size_t)image_count, e)) ||
        (mask && poa_cuda_exec_upload(&p->exec, p->mask, mask, (size_t)(p->batch * p->patches), e)) ||
        (drop_scale && poa_cuda_exec_upload(&p->exec, p->drop_scale, drop_scale,
                                            sizeof(float) * (size_t)(p->depth * 2 * p->batch), e)))
        return -1;
    return run(p, 0, e);
}

int poa_cuda_vit_backward(poa_cuda_vit_pass *p, const float *dout, poa_error *e) {
    if (dout && poa_cuda_exec_upload(&p->exec, p->dout, dout, sizeof(float) * (size_t)(p->rows * p->width), e))
        return -1;
    return run(p, 1, e);
}

int poa_cuda_vit_upload_parameters(poa_cuda_vit_pass *p, const float *params, poa_error *e) {
    if (need_gpu(p, "upload parameters", e)) return -1;
    const long n = p->model->parameter_count;
    if (poa_cuda_exec_upload(&p->exec, p->params, params, sizeof(float) * (size_t)n, e)) return -1;
    return p->bf16 ? poa_cuda_upload_values(&p->exec, p->params_bf16, params, NULL, n, 1, e) : 0;
}

int poa_cuda_vit_upload_gradients(poa_cuda_vit_pass *p, const float *grads, poa_error *e) {
    if (need_gpu(p, "upload gradients", e)) return -1;
    return poa_cuda_exec_upload(&p->exec, p->grads, grads, sizeof(float) * (size_t)p->model->parameter_count, e);
}

/* The output of the last forward (rows x width, final LayerNorm) on the device. */
static CUdeviceptr output_of(const poa_cuda_vit_pass *p) {
    return p->arena + sizeof(float) * (size_t)p->fwd.value_offsets[p->fwd.program->output];
}

/* poa_glue_gather_rows or (back) poa_glue_scatter_add_rows. */
int poa_cuda_vit_move_rows(poa_cuda_vit_pass *p, int back, CUdeviceptr rows, CUdeviceptr indices, long count,
                           poa_error *e) {
    CUdeviceptr dst = back ? p->dout : rows, src = back ? rows : output_of(p);
    long width = p->width, tokens = p->tokens, patches = p->patches;
    void *args[] = { &dst, &src, &indices, &count, &width, &tokens, &patches };
    return glue(p, back ? "poa_glue_scatter_add_rows" : "poa_glue_gather_rows", count * width, args, e);
}

int poa_cuda_vit_zero_dout(poa_cuda_vit_pass *p, poa_error *e) {
    return fill(p, p->dout, 0.0f, p->rows * p->width, e);
}

int poa_cuda_vit_download_gradients(poa_cuda_vit_pass *p, float *grads, poa_error *e) {
    if (need_gpu(p, "download gradients", e)) return -1;
    return poa_cuda_exec_download(&p->exec, grads, p->grads, sizeof(float) * (size_t)p->model->parameter_count, e);
}

int poa_cuda_vit_download_output(poa_cuda_vit_pass *p, float *out, poa_error *e) {
    if (need_gpu(p, "download output", e)) return -1;
    return poa_cuda_exec_download(&p->exec, out, output_of(p), sizeof(float) * (size_t)(p->rows * p->width), e);
}

int poa_cuda_vit_download_arena(poa_cuda_vit_pass *p, float *arena, poa_error *e) {
    if (need_gpu(p, "download arena", e)) return -1;
    return poa_cuda_exec_download(&p->exec, arena, p->arena, sizeof(float) * (size_t)p->arena_count, e);
}
