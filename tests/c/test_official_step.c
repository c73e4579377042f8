/* test_official_step.c: one recorded step of the official POA code replayed through poa's
   trainer (reference/official-step/README.md; the recordings, dp0 without and dp02 with drop
   path, copied into tests/golden/fixtures/official_step/ by tests/golden/copy_official_step.py).

   The family is tests/recipes/official_step.lua. The student and the teacher start from the
   recorded student (official names, poa_trainer_init_from: `poa train --init`); the crops and
   iBOT masks are the recorded ones; the elastic member, the schedules' iteration and (dp02) the
   stochastic-depth rows of every call are given through the trainer's replay fields, so the
   step runs the code a training run runs. Checked, per recording:
   - the sampling list and the member's block ids, as recorded;
   - the teacher's head logits and Sinkhorn-Knopp targets (CLS and masked patches), every
     student head's logits (local, global, masked), the CLS features KoLeo sees: 1e-4 (max
     |diff| over max |recorded|);
   - every raw DINO, same-view and iBOT loss call of losses.json: 1e-5 relative;
   - every heads parameter's gradient: 1e-3 (norm of the difference over the norm), the heads'
     gradient norm before clipping 1e-4, and the heads after the step (student and teacher):
     1e-5, their step (after - before) 1e-3;
   - the update alone: the official gradients put into the gradient buffers, then poa's end of
     step (clipping per module, AdamW with every parameter group, the schedules at the recorded
     iteration, the EMA): both gradient norms 1e-4, every parameter after the step, student and
     teacher, 1e-5, and their steps 1e-3 (a step is ~1e-3 of a parameter, so this is what a
     wrong lr, weight decay or momentum changes).

   Each replay runs twice: through the CPU step, and through the GPU step (runtime/cuda_train.c)
   emulated on the host (tests/c/cuda_emulator.h: every launch and GEMM of the GPU step), fp32;
   dp02's step a third time with every launch running its kernel's .cu text thread by thread
   (tests/c/cuda_host_run.h), where g++ is present.

   KoLeo, and with it the backbone's gradient, cannot be compared with these recordings: the
   student at initialisation (LayerScale 1e-5) gives the 4 images nearly the same CLS token
   (norms equal to 7 digits), so KoLeo's nearest-neighbour distances are ~1.6e-5 on the unit
   sphere and the official float32 evaluation rounds them by ~1%: its KoLeo values are 0.3% to 6%
   away from the same formula evaluated exactly on its own recorded input (11.0309 against
   11.1856 for dp0's intact crop 1). KoLeo's gradient (~1/distance) is 99.8% of the backbone's
   gradient norm (6.1 without KoLeo, 1386 with it), so the recorded backbone gradient is mostly
   that rounding. Here KoLeo is checked against its exact value on the recorded features (1e-4;
   our features differ from the recorded ones by 2e-7, which the conditioning turns into ~4e-5),
   the total loss less KoLeo's four calls against the official one (1e-5), and the backbone's
   gradient and update are printed, not checked. */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "cuda_emulator.h"
#include "cuda_host_run.h"
#include "cuda_train.h"
#include "loss.h"
#include "fixture_util.h"
#include "recipe.h"
#include "trainer.h"

#define DIR FIXTURES "official_step/"

/* ---- the record (record.lua) ---- */

/* The number at a dotted path of the record table on top of L's stack. */
static double number_at(lua_State *L, const char *path) {
    char key[128];
    lua_pushvalue(L, -1);
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, ".");
        snprintf(key, sizeof key, "%.*s", (int)n, p);
        if (lua_type(L, -1) != LUA_TTABLE) break;
        if (key[0] >= '0' && key[0] <= '9') lua_geti(L, -1, atoi(key));
        else lua_getfield(L, -1, key);
        lua_remove(L, -2);
        p += n + (p[n] == '.');
    }
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : NAN;
    lua_pop(L, 1);
    return v;
}

static const char *string_field(lua_State *L, int table, const char *key, char *out, size_t size) {
    lua_getfield(L, table, key);
    snprintf(out, size, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
    lua_pop(L, 1);
    return out;
}

/* ---- comparisons ---- */

static double worst_of(double a, double b) { return isnan(b) || b > a ? b : a; }

/* The recorded tensor `name` of f against ours (count values): max |diff| / max |recorded|. */
static double against(const poa_safetensors *f, const char *name, const real *ours, long long count) {
    long long n;
    real *want = read_tensor(f, name, &n);
    double err = n == count ? relative_error(ours, want, n) : INFINITY;
    free(want);
    return err;
}

/* ---- the replay ---- */

/* Where the step's buffers are read after the micro-batch (host copies on the GPU). */
typedef struct step_view {
    real *targets_cls[POA_MAX_HEADS], *targets_patch[POA_MAX_HEADS], *teacher_logits[POA_MAX_HEADS];
    real *logits[2][POA_MAX_HEADS], *features[2];
    real *grads, *grads_heads;
} step_view;

typedef struct replay {
    const char *run, *name; /* "dp0", and "dp0" or "dp0 (emulated GPU step)" ... */
    lua_State *L;       /* the record on top */
    poa_trainer t;
    poa_batch batch;
    real *drop[2][2];   /* given stochastic-depth factors */
    real *before, *before_heads;
    const poa_cuda_exec *exec; /* NULL: the CPU step; else the GPU step on it */
    poa_cuda_train g;
    int has_gpu_step;
    step_view v;
    real *downloads;    /* the GPU step's host copies behind v */
} replay;

/* The recorded crops and masks as a micro-batch. */
static int read_inputs(replay *r, poa_error *e) {
    poa_safetensors f;
    open_fixture(&f, DIR "inputs.safetensors");
    long long n;
    poa_batch *b = &r->batch;
    memset(b, 0, sizeof *b);
    const poa_recipe *rc = &r->t.config.recipe;
    b->batch_size = r->t.config.batch_size, b->global_count = rc->global_crop_count;
    b->local_count = rc->local_crop_count, b->global_size = rc->global_crop_size, b->local_size = rc->local_crop_size;
    real *g = read_tensor(&f, "collated_global_crops", &n), *l = read_tensor(&f, "collated_local_crops", &n);
    long ng = (long)b->global_count * b->batch_size * 3 * b->global_size * b->global_size;
    long nl = (long)b->local_count * b->batch_size * 3 * b->local_size * b->local_size;
    b->global_crops = malloc(sizeof(float) * (size_t)ng), b->local_crops = malloc(sizeof(float) * (size_t)nl);
    for (long i = 0; i < ng; i++) b->global_crops[i] = (float)g[i];
    for (long i = 0; i < nl; i++) b->local_crops[i] = (float)l[i];
    free(g), free(l);
    const poa_tensor_info *masks = poa_safetensors_find(&f, "collated_masks");
    const poa_tensor_info *indices = poa_safetensors_find(&f, "mask_indices_list");
    const int slots = (int)masks->shape[0], tokens = (int)masks->shape[1];
    if (poa_mask_batch_alloc(&b->masks, slots, tokens, e)) return -1;
    memcpy(b->masks.masks, f.data + masks->offset, (size_t)(slots * tokens)); /* BOOL: one byte, 0/1 */
    b->masks.masked = (int)indices->shape[0];
    for (int i = 0; i < b->masks.masked; i++) {
        int64_t v;
        memcpy(&v, f.data + indices->offset + 8 * (size_t)i, 8);
        b->masks.indices[i] = (int)v;
    }
    real *w = read_tensor(&f, "masks_weight", &n);
    for (int i = 0; i < b->masks.masked; i++) b->masks.weights[i] = (float)w[i];
    free(w);
    poa_safetensors_close(&f);
    return 0;
}

/* dp02: every stochastic-depth call's recorded permutation as the factors poa's passes take:
   the rows perm[:keep] of call (block, attn|mlp) get batch / keep, keep = max(int(batch (1 -
   rate)), 1) (reference §1.5). */
static void read_drop_path(replay *r, const poa_safetensors *f, double rate) {
    const int elastic_depth = (int)number_at(r->L, "member.2");
    lua_getfield(r->L, -1, "droppath_tags");
    const int calls = (int)luaL_len(r->L, -1);
    for (int c = 0; c < calls; c++) {
        lua_geti(r->L, -1, c + 1);
        char tag[64], branch[16], crops[16], kind[8];
        int block;
        snprintf(tag, sizeof tag, "%s", lua_tostring(r->L, -1));
        lua_pop(r->L, 1);
        for (char *p = tag; *p; p++) if (*p == '.') *p = ' ';
        if (sscanf(tag, "%15s %15s block%d %7s", branch, crops, &block, kind) != 4) continue;
        const int b = strcmp(branch, "elastic") == 0, k = strcmp(crops, "local") == 0;
        const int depth = b ? elastic_depth : r->t.model.config.max_depth;
        const long batch = (long)r->batch.batch_size * (k ? r->batch.local_count : r->batch.global_count);
        /* the active index of the block: its place among the member's block ids */
        int active = block;
        if (b) {
            lua_getfield(r->L, -2, "elastic_block_idx");
            for (int j = 0; j < depth; j++) {
                lua_geti(r->L, -1, j + 1);
                if (lua_tointeger(r->L, -1) == block) active = j;
                lua_pop(r->L, 1);
            }
            lua_pop(r->L, 1);
        }
        if (!r->drop[b][k]) r->drop[b][k] = calloc((size_t)(depth * 2 * batch), sizeof(real));
        char name[32];
        snprintf(name, sizeof name, "droppath.%04d", c);
        const poa_tensor_info *perm = poa_safetensors_find(f, name);
        long keep = (long)(batch * (1 - rate));
        if (keep < 1) keep = 1;
        real *row = r->drop[b][k] + (active * 2 + (strcmp(kind, "mlp") == 0)) * batch;
        for (long i = 0; perm && i < keep; i++) {
            int64_t v;
            memcpy(&v, f->data + perm->offset + 8 * (size_t)i, 8);
            row[v] = (real)((double)batch / keep);
        }
    }
    lua_pop(r->L, 1);
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 2; k++) r->t.given_drop_path[b][k] = r->drop[b][k];
}

/* The trainer of the recorded family, from the recorded student, with the record's member,
   iteration and drop path given. */
static int open_replay(replay *r, const char *run, const poa_cuda_exec *exec, const char *how, poa_error *e) {
    static char names[4][64];
    static int next;
    char path[256], override[64];
    memset(r, 0, sizeof *r);
    r->run = run, r->exec = exec, r->name = names[next++ % 4];
    snprintf(names[(next - 1) % 4], sizeof names[0], "%s%s", run, how);
    r->L = poa_lua_open(e);
    snprintf(path, sizeof path, DIR "%s/record.lua", run);
    if (!r->L || luaL_dofile(r->L, path) != LUA_OK)
        return poa_fail(e, "%s: %s", path, r->L ? lua_tostring(r->L, -1) : e->message);
    const double rate = number_at(r->L, "drop_path");
    snprintf(override, sizeof override, "model.drop_path_rate=%.17g", rate);
    const char *overrides[] = { override };
    poa_train_config config;
    lua_State *C = poa_lua_open(e);
    int rc = !C || poa_train_config_load(C, "tests/recipes/official_step.lua", overrides, 1, &config, e) ||
             poa_trainer_init(&r->t, &config, e) ||
             poa_trainer_init_from(&r->t, DIR "student_init.safetensors", e);
    if (C) lua_close(C);
    if (rc || read_inputs(r, e)) return -1;
    r->t.schedule_offset = (long)number_at(r->L, "schedule.iteration");
    r->t.forced_width = (int)number_at(r->L, "member.1"), r->t.forced_depth = (int)number_at(r->L, "member.2");
    if (rate > 0) {
        poa_safetensors f;
        snprintf(path, sizeof path, DIR "%s/intermediates.safetensors", run);
        open_fixture(&f, path);
        read_drop_path(r, &f, rate);
        poa_safetensors_close(&f);
    }
    const long n = r->t.model.parameter_count, nh = r->t.heads.parameter_count;
    r->before = malloc(sizeof(real) * (size_t)n), r->before_heads = malloc(sizeof(real) * (size_t)nh);
    memcpy(r->before, r->t.student, sizeof(real) * (size_t)n);
    memcpy(r->before_heads, r->t.student_heads, sizeof(real) * (size_t)nh);
    if (exec) {
        if (poa_cuda_train_init(&r->g, &r->t, exec, 0, e)) return -1;
        r->has_gpu_step = 1;
    }
    return 0;
}

/* The step up to its update: begin, the micro-batch; then r->v points at its buffers. */
static int run_micro_batch(replay *r, poa_error *e) {
    poa_trainer *t = &r->t;
    step_view *v = &r->v;
    if (!r->exec) {
        poa_trainer_begin_step(t);
        if (poa_trainer_micro_batch(t, &r->batch, 0, e)) return -1;
        for (int h = 0; h < t->heads.config.heads; h++) {
            v->targets_cls[h] = t->targets_cls[h].data, v->targets_patch[h] = t->targets_patch[h].data;
            v->teacher_logits[h] = t->teacher_heads_pass.logits[h];
            for (int b = 0; b < 2; b++) v->logits[b][h] = t->student_heads_pass[b].logits[h];
        }
        for (int b = 0; b < 2; b++) v->features[b] = t->branch_work[b].features.data;
        v->grads = t->grads, v->grads_heads = t->grads_heads;
        return 0;
    }
    poa_cuda_train *g = &r->g;
    poa_cuda_train_begin_step(g);
    if (poa_cuda_train_micro_batch(g, &r->batch, 0, e)) return -1;
    /* host copies: targets, logits (teacher: CLS and masked rows; students: every head row),
       features, gradients */
    const long B = r->batch.batch_size, G = r->batch.global_count, L = r->batch.local_count;
    const long masked = r->batch.masks.masked, teacher_rows = G * B + masked, rows = (L + G) * B + masked;
    const long n = t->model.parameter_count, nh = t->heads.parameter_count, D = t->model.config.max_width;
    long total = n + nh + 2 * rows * D;
    for (int h = 0; h < t->heads.config.heads; h++) total += (2 * teacher_rows + 2 * rows) * t->heads.config.prototypes[h];
    real *at = r->downloads = malloc(sizeof(real) * (size_t)total);
    if (!at) return poa_fail(e, "out of memory");
    int rc = 0;
#define FETCH(dst, src, count) \
    (dst = at, at += (count), rc = rc ? rc : poa_cuda_exec_download(&g->exec, dst, src, sizeof(real) * (size_t)(count), e))
    for (int h = 0; h < t->heads.config.heads; h++) {
        const long K = t->heads.config.prototypes[h];
        FETCH(v->targets_cls[h], g->targets_cls[h], G * B * K);
        FETCH(v->targets_patch[h], g->targets_patch[h], masked * K);
        FETCH(v->teacher_logits[h], g->teacher_heads.logits[h], teacher_rows * K);
        for (int b = 0; b < 2; b++) FETCH(v->logits[b][h], g->branch[b].heads.logits[h], rows * K);
    }
    for (int b = 0; b < 2; b++) FETCH(v->features[b], g->branch[b].features, rows * g->branch[b].global.width);
    FETCH(v->grads, g->grads, n + nh);
#undef FETCH
    v->grads_heads = v->grads + n;
    return rc;
}

/* Puts grads (backbone then heads, the trainer's layout) into the step's gradient buffer. */
static int set_gradients(replay *r, const real *grads, const real *grads_heads, poa_error *e) {
    const long n = r->t.model.parameter_count, nh = r->t.heads.parameter_count;
    if (!r->exec) {
        memmove(r->t.grads, grads, sizeof(real) * (size_t)n);
        memmove(r->t.grads_heads, grads_heads, sizeof(real) * (size_t)nh);
        return 0;
    }
    return poa_cuda_exec_upload(&r->g.exec, r->g.grads, grads, sizeof(real) * (size_t)n, e) ||
                   poa_cuda_exec_upload(&r->g.exec, r->g.grads + sizeof(real) * (size_t)n, grads_heads,
                                        sizeof(real) * (size_t)nh, e)
               ? -1
               : 0;
}

/* The update (clipping, AdamW, EMA); then the trainer's host buffers hold the state after. */
static int run_update(replay *r, poa_error *e) {
    if (!r->exec) {
        poa_trainer_end_step(&r->t);
        return 0;
    }
    return poa_cuda_train_end_step(&r->g, e) || poa_cuda_train_download(&r->g, e) ? -1 : 0;
}

static void close_replay(replay *r) {
    if (r->has_gpu_step) poa_cuda_train_free(&r->g);
    free(r->downloads);
    for (int b = 0; b < 2; b++) free(r->drop[b][0]), free(r->drop[b][1]);
    free(r->batch.global_crops), free(r->batch.local_crops);
    poa_mask_batch_free(&r->batch.masks);
    free(r->before), free(r->before_heads);
    poa_trainer_free(&r->t);
    if (r->L) lua_close(r->L);
}

/* The sampling list and the member's block ids, as recorded. */
static void check_family(replay *r) {
    char label[160];
    const poa_train_config *c = &r->t.config;
    lua_getfield(r->L, -1, "networks");
    const int count = (int)luaL_len(r->L, -1);
    int same = count == c->slot_count + 1; /* the recorded list ends with the intact net */
    for (int i = 0; same && i < c->slot_count; i++) {
        lua_geti(r->L, -1, i + 1);
        lua_geti(r->L, -1, 1), lua_geti(r->L, -2, 2);
        same = lua_tointeger(r->L, -2) == c->slot_width[i] && lua_tointeger(r->L, -1) == c->slot_depth[i];
        lua_pop(r->L, 3);
    }
    lua_pop(r->L, 1);
    snprintf(label, sizeof label, "%s: the elastic sampling list is the recorded one (%d slots)", r->name, count - 1);
    CHECK(label, same, "poa has %d slots", c->slot_count);
    const poa_vit_pass *p = r->exec ? &r->g.branch[1].global.host : &r->t.student_global[1];
    int ids = p->depth == (int)number_at(r->L, "member.2");
    for (int j = 0; ids && j < p->depth; j++) {
        char key[32];
        snprintf(key, sizeof key, "elastic_block_idx.%d", j + 1);
        ids = p->block_ids[j] == (int)number_at(r->L, key);
    }
    snprintf(label, sizeof label, "%s: member %dx%d runs the recorded block ids", r->name, p->width, p->depth);
    CHECK(label, ids, "depth %d, first ids %d %d", p->depth, p->block_ids[0], p->depth > 1 ? p->block_ids[1] : -1);
}

/* KoLeo (poa_koleo, in double) of the recorded CLS features of a branch's global crop g: the
   reference's formula evaluated exactly on the official step's own input. */
static double koleo_of_recorded(const replay *r, int b, int g) {
    char path[256], name[96];
    poa_safetensors f;
    snprintf(path, sizeof path, DIR "%s/intermediates.safetensors", r->run);
    open_fixture(&f, path);
    snprintf(name, sizeof name, "student.%s.global_cls_feat.crop%d", b ? "elastic" : "intact", g + 1);
    long long n;
    real *x = read_tensor(&f, name, &n);
    const long rows = r->batch.batch_size;
    double v = poa_koleo(x, rows, (long)(n / rows), 1, NULL);
    free(x);
    poa_safetensors_close(&f);
    return v;
}

/* Every raw loss call of losses.json against poa's; KoLeo's against its exact value on the
   recorded features (see the top of this file). */
static void check_losses(replay *r, const poa_loss_calls *calls) {
    char label[160], module[64], branch[16], crops[16], term[32];
    double worst = 0, worst_koleo = 0;
    int compared = 0, koleo = 0;
    lua_getfield(r->L, -1, "raw_calls");
    const int count = (int)luaL_len(r->L, -1);
    for (int i = 1; i <= count; i++) {
        lua_geti(r->L, -1, i);
        const int at = lua_gettop(r->L);
        string_field(r->L, at, "module", module, sizeof module);
        const int b = strcmp(string_field(r->L, at, "branch", branch, sizeof branch), "elastic") == 0;
        string_field(r->L, at, "crops", crops, sizeof crops);
        string_field(r->L, at, "term", term, sizeof term);
        lua_getfield(r->L, at, "head"), lua_getfield(r->L, at, "global_crop"), lua_getfield(r->L, at, "raw");
        const int h = (int)lua_tointeger(r->L, -3), g = (int)lua_tointeger(r->L, -2) - 1;
        const double want = lua_tonumber(r->L, -1);
        lua_pop(r->L, 4);
        const int local = strcmp(crops, "local") == 0;
        double ours = NAN;
        if (strcmp(module, "DINOLoss.forward") == 0 && strcmp(term, "cross_view") == 0)
            ours = local ? calls->dino_local[b][h] : calls->dino_global[b][h];
        else if (strcmp(module, "DINOLoss.forward") == 0 && b)
            ours = local ? calls->distill_local[h] : calls->distill_global[h];
        else if (strcmp(module, "iBOTPatchLoss.forward_masked") == 0)
            ours = calls->ibot[b][h];
        else if (strcmp(module, "KoLeoLoss.forward") == 0 && g >= 0 && g < POA_LOSS_CALL_CROPS)
            ours = calls->koleo[b][g];
        const int is_koleo = strcmp(module, "KoLeoLoss.forward") == 0;
        const double exact = is_koleo ? koleo_of_recorded(r, b, g) : want;
        const double err = fabs(ours - exact) / fabs(exact);
        printf("  %s: %-28s %-7s %-7s %-17s head %d crop %d: official %.8g poa %.8g (%.2g)", r->name, module,
               branch, crops, term, h, g + 1, want, ours, fabs(ours - want) / fabs(want));
        if (is_koleo) printf("; exact on the recorded features %.8g (poa %.2g)", exact, err);
        printf("\n");
        if (is_koleo) worst_koleo = worst_of(worst_koleo, err), koleo++;
        else worst = worst_of(worst, err), compared++;
    }
    lua_pop(r->L, 1);
    snprintf(label, sizeof label, "%s: all %d raw DINO, same-view and iBOT loss calls of the official step within 1e-5",
             r->name, compared);
    CHECK(label, compared + koleo == count && compared > 0 && worst <= 1e-5, "worst relative error %.3g", worst);
    snprintf(label, sizeof label, "%s: the %d KoLeo calls within 1e-4 of KoLeo evaluated exactly on the recorded features",
             r->name, koleo);
    CHECK(label, koleo > 0 && worst_koleo <= 1e-4, "worst relative error %.3g", worst_koleo);
}

/* The recorded intermediates against the trainer's buffers after the micro-batch. */
static void check_intermediates(replay *r) {
    char path[256], name[96], label[160];
    poa_safetensors f;
    snprintf(path, sizeof path, DIR "%s/intermediates.safetensors", r->run);
    open_fixture(&f, path);
    const poa_trainer *t = &r->t;
    const long B = r->batch.batch_size, G = r->batch.global_count, L = r->batch.local_count;
    const long masked = r->batch.masks.masked;
    double targets = 0, logits = 0, features = 0;
    for (int h = 0; h < t->heads.config.heads; h++) {
        const long K = t->heads.config.prototypes[h];
        /* the teacher's CLS rows, swapped: [crop 2; crop 1] */
        real *swapped = malloc(sizeof(real) * (size_t)(G * B * K)), *swapped_logits = malloc(sizeof(real) * (size_t)(G * B * K));
        for (long g = 0; g < G; g++) {
            memcpy(swapped + (G - 1 - g) * B * K, r->v.targets_cls[h] + g * B * K, sizeof(real) * (size_t)(B * K));
            memcpy(swapped_logits + (G - 1 - g) * B * K, r->v.teacher_logits[h] + g * B * K,
                   sizeof(real) * (size_t)(B * K));
        }
        snprintf(name, sizeof name, "teacher.cls_targets_swapped.h%d", h);
        targets = worst_of(targets, against(&f, name, swapped, G * B * K));
        snprintf(name, sizeof name, "teacher.cls_logits_swapped.h%d", h);
        logits = worst_of(logits, against(&f, name, swapped_logits, G * B * K));
        free(swapped), free(swapped_logits);
        snprintf(name, sizeof name, "teacher.masked_patch_targets.h%d", h);
        targets = worst_of(targets, against(&f, name, r->v.targets_patch[h], masked * K));
        snprintf(name, sizeof name, "teacher.masked_patch_logits.h%d", h);
        logits = worst_of(logits, against(&f, name, r->v.teacher_logits[h] + G * B * K, masked * K));
        for (int b = 0; b < 2; b++) {
            const char *branch = b ? "elastic" : "intact";
            const real *S = r->v.logits[b][h];
            snprintf(name, sizeof name, "student.%s.local_logits.h%d", branch, h);
            logits = worst_of(logits, against(&f, name, S, L * B * K));
            snprintf(name, sizeof name, "student.%s.global_logits.h%d", branch, h);
            logits = worst_of(logits, against(&f, name, S + L * B * K, G * B * K));
            snprintf(name, sizeof name, "student.%s.masked_patch_logits.h%d", branch, h);
            logits = worst_of(logits, against(&f, name, S + (L + G) * B * K, masked * K));
        }
    }
    for (int b = 0; b < 2; b++) {
        const long D = b ? (long)number_at(r->L, "member.1") : t->model.config.max_width;
        for (long g = 0; g < G; g++) {
            snprintf(name, sizeof name, "student.%s.global_cls_feat.crop%ld", b ? "elastic" : "intact", g + 1);
            features = worst_of(features, against(&f, name, r->v.features[b] + (L * B + g * B) * D, B * D));
        }
    }
    poa_safetensors_close(&f);
    printf("  %s: Sinkhorn-Knopp targets %.3g, head logits %.3g, KoLeo's CLS features %.3g\n", r->name, targets, logits,
           features);
    snprintf(label, sizeof label, "%s: the teacher's Sinkhorn-Knopp targets (CLS and masked patches) within 1e-4", r->name);
    CHECK(label, targets <= 1e-4, "%.3g", targets);
    snprintf(label, sizeof label, "%s: every head's logits (teacher; both students' local, global, masked) and the "
             "KoLeo features within 1e-4", r->name);
    CHECK(label, logits <= 1e-4 && features <= 1e-4, "logits %.3g, features %.3g", logits, features);
}

/* The official name of one of poa's tensors: "backbone." + name, or the head's. */
static void official(char *out, size_t size, const replay *r, int heads, int i) {
    if (heads) poa_heads_official_name(out, size, "dino_head.", r->t.heads.tensors[i].name);
    else snprintf(out, size, "backbone.%s", r->t.model.tensors[i].name);
}

enum { BACKBONE = 1, HEADS = 2 };

/* Over the tensors of `parts` that the file has: the worst ||ours - recorded|| / ||recorded||
   against `ours` (backbone and heads buffers); with base (and base_heads), of (ours - base)
   against (recorded - base). */
static double per_tensor(const replay *r, const char *file, int parts, const real *ours, const real *ours_heads,
                         const real *base, const real *base_heads, char *worst_name, size_t size) {
    char path[256], name[128];
    poa_safetensors f;
    snprintf(path, sizeof path, DIR "%s/%s", r->run, file);
    open_fixture(&f, path);
    double worst = 0;
    for (int heads = 0; heads < 2; heads++) {
        if (!(parts & (heads ? HEADS : BACKBONE))) continue;
        const int count = heads ? r->t.heads.tensor_count : r->t.model.tensor_count;
        for (int i = 0; i < count; i++) {
            const poa_vit_tensor *x = heads ? &r->t.heads.tensors[i] : &r->t.model.tensors[i];
            official(name, sizeof name, r, heads, i);
            if (!poa_safetensors_find(&f, name)) continue; /* no gradient recorded */
            long long n;
            real *want = read_tensor(&f, name, &n), *have = malloc(sizeof(real) * (size_t)x->count);
            const real *o = (heads ? ours_heads : ours) + x->offset, *b = base ? (heads ? base_heads : base) + x->offset : NULL;
            for (long j = 0; j < x->count; j++) {
                have[j] = b ? o[j] - b[j] : o[j];
                if (b) want[j] -= b[j];
            }
            double err = n == x->count ? norm_error(have, want, x->count) : INFINITY;
            if (!(err <= worst)) worst = err, snprintf(worst_name, size, "%s", name);
            free(want), free(have);
        }
    }
    poa_safetensors_close(&f);
    return worst;
}

/* The student and the teacher after the step (of `parts`) against the recording: the values
   within 1e-5, the steps (after - before) within 1e-3. */
static void check_after(replay *r, int parts, const char *what) {
    char label[240], where[128] = "", where_step[128] = "";
    const poa_trainer *t = &r->t;
    double student = per_tensor(r, "student_after.safetensors", parts, t->student, t->student_heads, NULL, NULL, where,
                                sizeof where);
    double teacher = per_tensor(r, "teacher_after.safetensors", parts, t->teacher, t->teacher_heads, NULL, NULL, where,
                                sizeof where);
    double student_step = per_tensor(r, "student_after.safetensors", parts, t->student, t->student_heads, r->before,
                                     r->before_heads, where_step, sizeof where_step);
    double teacher_step = per_tensor(r, "teacher_after.safetensors", parts, t->teacher, t->teacher_heads, r->before,
                                     r->before_heads, where_step, sizeof where_step);
    printf("  %s: %s: student %.3g (its step %.3g), teacher %.3g (its step %.3g; worst %s)\n", r->name, what, student,
           student_step, teacher, teacher_step, where_step);
    snprintf(label, sizeof label, "%s: %s: student and teacher within 1e-5 of the official step's", r->name, what);
    CHECK(label, student <= 1e-5 && teacher <= 1e-5, "student %.3g teacher %.3g (%s)", student, teacher, where);
    snprintf(label, sizeof label, "%s: %s: the step (after - before) of the student and the teacher within 1e-3",
             r->name, what);
    CHECK(label, student_step <= 1e-3 && teacher_step <= 1e-3, "student %.3g teacher %.3g (%s)", student_step,
          teacher_step, where_step);
}

/* The gradient norms before clipping and the schedule values, as recorded. */
static void check_update_values(replay *r, const char *what, int parts) {
    char label[200];
    const poa_step_stats *s = &r->t.last;
    const double nb = number_at(r->L, "grad_norms.backbone"), nh = number_at(r->L, "grad_norms.heads");
    const double norms = fmax(parts & BACKBONE ? fabs(s->grad_norm_backbone - nb) / nb : 0,
                              fabs(s->grad_norm_heads - nh) / nh);
    printf("  %s: %s: gradient norms %.7g %.7g (official %.7g %.7g)\n", r->name, what, s->grad_norm_backbone,
           s->grad_norm_heads, nb, nh);
    snprintf(label, sizeof label, "%s: %s: the gradient norm%s before clipping within 1e-4", r->name, what,
             parts & BACKBONE ? "s (backbone, heads)" : " of the heads");
    CHECK(label, norms <= 1e-4, "%.3g", norms);
    const double schedule = fmax(fmax(fabs(s->lr / number_at(r->L, "schedule.lr") - 1),
                                      fabs(s->weight_decay / number_at(r->L, "schedule.wd") - 1)),
                                 fmax(fabs(s->momentum / number_at(r->L, "schedule.momentum") - 1),
                                      fabs(s->teacher_temp / number_at(r->L, "schedule.teacher_temp") - 1)));
    snprintf(label, sizeof label, "%s: %s: lr, weight decay, momentum and teacher temperature at iteration %ld, iBOT on",
             r->name, what, poa_trainer_iteration(&r->t) - 1);
    CHECK(label, schedule <= 1e-12 && s->ibot_active, "worst %.3g, iBOT %d", schedule, s->ibot_active);
}

/* The whole step replayed: the forward, every loss call, the gradients, the update. The
   backbone's gradient and update are printed, not checked (the top of this file says why). */
static void replay_step(const char *run, const poa_cuda_exec *exec, const char *how) {
    replay r;
    poa_error e = { { 0 } };
    char label[200], where[128] = "";
    if (open_replay(&r, run, exec, how, &e) || run_micro_batch(&r, &e)) {
        snprintf(label, sizeof label, "%s: the replayed step", r.name);
        CHECK(label, 0, "%s", e.message);
        close_replay(&r);
        return;
    }
    poa_trainer *t = &r.t;
    check_family(&r);
    check_intermediates(&r);
    double heads = per_tensor(&r, "student_grads.safetensors", HEADS, r.v.grads, r.v.grads_heads, NULL, NULL, where,
                              sizeof where);
    snprintf(label, sizeof label, "%s: every heads parameter's gradient within 1e-3 of the official step's", r.name);
    CHECK(label, heads <= 1e-3, "worst %.3g (%s)", heads, where);
    double backbone = per_tensor(&r, "student_grads.safetensors", BACKBONE, r.v.grads, r.v.grads_heads, NULL, NULL,
                                 where, sizeof where);
    printf("  %s: gradients: heads %.3g; backbone %.3g (%s), KoLeo's rounding (not checked)\n", r.name, heads, backbone,
           where);
    if (run_update(&r, &e)) {
        snprintf(label, sizeof label, "%s: the update", r.name);
        CHECK(label, 0, "%s", e.message);
        close_replay(&r);
        return;
    }
    const poa_step_stats *s = &t->last;
    check_losses(&r, &s->calls);
    /* the total without KoLeo's four calls, on both sides */
    double official_koleo = 0, ours_koleo = 0;
    lua_getfield(r.L, -1, "raw_calls");
    for (int i = 1; i <= (int)luaL_len(r.L, -1); i++) {
        lua_geti(r.L, -1, i);
        lua_getfield(r.L, -1, "module"), lua_getfield(r.L, -2, "raw");
        if (strcmp(lua_tostring(r.L, -2), "KoLeoLoss.forward") == 0) official_koleo += lua_tonumber(r.L, -1);
        lua_pop(r.L, 3);
    }
    lua_pop(r.L, 1);
    const double fk = t->config.koleo_weight * 0.5;
    for (int b = 0; b < 2; b++)
        for (int g = 0; g < r.batch.global_count; g++) ours_koleo += s->calls.koleo[b][g];
    const double total = number_at(r.L, "total"), rest = total - fk * official_koleo;
    const double loss = fabs((s->loss - fk * ours_koleo) - rest) / rest;
    printf("  %s: loss %.8g (official %.8g); without KoLeo %.8g (official %.8g)\n", r.name, s->loss, total,
           s->loss - fk * ours_koleo, rest);
    snprintf(label, sizeof label, "%s: the total loss less KoLeo within 1e-5 of the official step's", r.name);
    CHECK(label, loss <= 1e-5, "%.3g", loss);
    check_update_values(&r, "poa's gradients", HEADS);
    check_after(&r, HEADS, "the heads after the step with poa's gradients");
    double b_after = per_tensor(&r, "student_after.safetensors", BACKBONE, t->student, t->student_heads, NULL, NULL,
                                where, sizeof where);
    printf("  %s: the backbone after the step with poa's gradients: %.3g (not checked)\n", r.name, b_after);
    close_replay(&r);
}

/* The update alone: the official gradients put into the gradient buffer after the
   micro-batch, then poa's end of step (clipping per module, AdamW with the parameter groups and
   the schedules, EMA), compared with the recorded parameters after. */
static void replay_update(const char *run, const poa_cuda_exec *exec, const char *how) {
    replay r;
    poa_error e = { { 0 } };
    char label[200], name[128], path[256];
    int rc = open_replay(&r, run, exec, how, &e) || run_micro_batch(&r, &e);
    poa_trainer *t = &r.t;
    const long n = t->model.parameter_count, nh = t->heads.parameter_count;
    real *grads = calloc((size_t)(n + nh), sizeof(real));
    poa_safetensors f;
    snprintf(path, sizeof path, DIR "%s/student_grads.safetensors", run);
    open_fixture(&f, path);
    for (int heads = 0; heads < 2 && !rc; heads++) {
        const int count = heads ? t->heads.tensor_count : t->model.tensor_count;
        for (int i = 0; i < count && !rc; i++) {
            const poa_vit_tensor *x = heads ? &t->heads.tensors[i] : &t->model.tensors[i];
            official(name, sizeof name, &r, heads, i);
            if (poa_safetensors_find(&f, name)) /* else no gradient: 0 */
                rc = poa_safetensors_read_shaped(&f, name, x->ndim, x->shape, grads + (heads ? n : 0) + x->offset, &e);
        }
    }
    poa_safetensors_close(&f);
    if (!rc) rc = set_gradients(&r, grads, grads + n, &e) || run_update(&r, &e);
    free(grads);
    if (rc) {
        snprintf(label, sizeof label, "%s: the update of the official gradients", r.name);
        CHECK(label, 0, "%s", e.message);
    } else {
        check_update_values(&r, "the official gradients", BACKBONE | HEADS);
        check_after(&r, BACKBONE | HEADS, "after the update of the official gradients");
    }
    close_replay(&r);
}

int main(void) {
    const char *runs[] = { "dp0", "dp02" };
    step_emulator em = { .scratch_count = 4L << 20 };
    em.scratch = calloc((size_t)em.scratch_count, sizeof(float));
    poa_cuda_emulator callbacks = { .context = &em, .launch = emulate_step_launch, .gemm = emulate_step_gemm };
    poa_cuda_exec emulated = { .emulator = &callbacks };
    for (int i = 0; i < 2; i++) {
        replay_step(runs[i], NULL, "");
        replay_update(runs[i], NULL, "");
    }
    for (int i = 0; i < 2; i++) {
        replay_step(runs[i], &emulated, " (emulated GPU step)");
        replay_update(runs[i], &emulated, " (emulated GPU step)");
    }
    /* dp02 (drop path, iBOT, every loss) once more with every launch running its kernel's .cu
       text thread by thread (tests/c/cuda_host_run.h), where a host C++ compiler is present */
    host_runner runner = { .recipe = "tests/recipes/official_step.lua" };
    if (host_runner_available()) {
        step_emulator from_cu = { .scratch_count = em.scratch_count, .scratch = em.scratch, .host = &runner };
        poa_cuda_emulator cu_callbacks = { .context = &from_cu, .launch = emulate_step_launch,
                                           .gemm = emulate_step_gemm, .alloc = host_runner_alloc,
                                           .release = host_runner_release };
        poa_cuda_exec cu = { .emulator = &cu_callbacks };
        replay_step("dp02", &cu, " (emulated GPU step, kernels from .cu)");
        cuda_host_close(&runner.host);
    } else {
        CHECK_SKIP("dp02 (emulated GPU step, kernels from .cu): the replay", "no host C++ compiler (g++)");
    }
    free(em.scratch);
    CHECK_EXIT();
}
