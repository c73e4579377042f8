/* cuda_train.c: the POA training step on the GPU (see cuda_train.h): the device memory, the
   passes, and the primitives of runtime/train_step.h's step, which runs them in the CPU step's
   order, so that every loss term and every gradient is summed in the same order as on the CPU. */
#include "cuda_train.h"

/* The GPU step is fp32 on the host side too (its host buffers are the trainer's floats); the
   fp64 build, for gradient checks on the CPU, leaves it out. */
#ifndef POA_FP64

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recipe.h"
#include "train_kernels.h"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The device's loss accumulators (doubles): the step's four terms (loss_plan.h's
   POA_LOSS_TERMS), then every raw loss call's slot of poa_loss_calls, each times its call's
   factor / slot_scale (g->slot_unit, which end_step divides by). */
enum { TERM_COUNT = POA_LOSS_TERMS, SLOT_COUNT = (int)(sizeof(poa_loss_calls) / sizeof(double)),
       ACCUMULATORS = TERM_COUNT + SLOT_COUNT };

/* ---- data parallelism ---- */

/* In place, count floats (or doubles) of a device buffer over every rank. */
static int reduce_device(const poa_cuda_reduce *r, CUdeviceptr x, long count, int is_double, poa_dist_op op,
                         poa_error *e) {
    if (count <= 0) return 0;
    if (r->nccl)
        return poa_nccl_all_reduce(r->nccl, x, x, (size_t)count, is_double ? POA_NCCL_FLOAT64 : POA_NCCL_FLOAT32, op,
                                   r->cuda->stream, e);
    void *p = (void *)(uintptr_t)x; /* emulated: the "device" buffer is host memory */
    return is_double ? poa_dist_all_reduce_double(r->dist, p, count, op, e)
                     : poa_dist_all_reduce_float(r->dist, p, count, op, e);
}

/* Whether the step is data parallel. */
static int many(const poa_cuda_train *g) { return g->reduce && g->reduce->dist && g->reduce->dist->world_size > 1; }

/* ---- launches ---- */

/* The values of the symbols a training kernel's grid is an extent of. */
typedef struct train_dims {
    long n, rows, k, chunks;
} train_dims;

/* A kernel of poa_runtime_launches by name (a training or glue kernel), its grid evaluated at
   the value dims gives its symbol. */
static int launch(poa_cuda_train *g, const char *name, const train_dims *dims, void **args, poa_error *e) {
    int i, s = 0;
    const poa_program_launch *k = poa_runtime_launch(name, &i, e);
    if (!k) return -1;
    const struct { const char *name; long value; } symbols[] = {
        { "", 0 }, { "n", dims->n }, { "rows", dims->rows }, { "k", dims->k }, { "chunks", dims->chunks } };
    while (s < ARGC(symbols) && strcmp(symbols[s].name, k->over)) s++;
    if (s == ARGC(symbols)) return poa_fail(e, "GPU step: kernel %s: a grid over %s, not n, rows, k or chunks", name, k->over);
    unsigned grid[3];
    const int rc = poa_launch_geometry(k, symbols[s].value, grid, "GPU step", e);
    if (rc) return rc < 0 ? -1 : poa_fail(e, "GPU step: kernel %s: an empty grid", name);
    return poa_cuda_exec_launch(&g->exec, g->functions[i], k->module, name, grid, k->block, args, e);
}

static int fill_value(poa_cuda_train *g, CUdeviceptr x, float value, long n, poa_error *e) {
    train_dims dims = { .n = n };
    void *args[] = { &x, &value, &n };
    return launch(g, "poa_glue_fill", &dims, args, e);
}

static int fill(poa_cuda_train *g, CUdeviceptr x, long n, poa_error *e) { return fill_value(g, x, 0, n, e); }

static int add_double(poa_cuda_train *g, CUdeviceptr y, CUdeviceptr x, long n, poa_error *e) {
    train_dims dims = { .n = n };
    void *args[] = { &y, &x, &n };
    return launch(g, "poa_glue_add_double", &dims, args, e);
}

static long chunks_of(long n) { return (n + TRAIN_CHUNK - 1) / TRAIN_CHUNK; }

/* total[0] = sum of the n doubles at x (poa_train_sum). */
static int sum_doubles(poa_cuda_train *g, CUdeviceptr total, CUdeviceptr x, long n, poa_error *e) {
    train_dims dims = { .n = n };
    void *args[] = { &total, &x, &n };
    return launch(g, "poa_train_sum", &dims, args, e);
}

/* The sum of rows doubles at row_loss (a call's weighted loss) added to its term's
   accumulator and to its raw slot's. */
static int add_term(poa_cuda_train *g, const poa_loss_call *call, CUdeviceptr row_loss, long rows, poa_error *e) {
    if (rows <= 0) return 0;
    if (call->slot >= 0) g->slot_unit[call->slot] = call->factor / call->slot_scale;
    return sum_doubles(g, g->sum_scratch, row_loss, rows, e) ||
                   add_double(g, g->terms + sizeof(double) * (size_t)call->term, g->sum_scratch, 1, e) ||
                   (call->slot >= 0 &&
                    add_double(g, g->terms + sizeof(double) * (size_t)(TERM_COUNT + call->slot), g->sum_scratch, 1, e))
               ? -1
               : 0;
}

/* Cross-entropy rows of a loss call (poa_train_cross_entropy), their sum added by add_term. */
static int cross_entropy(poa_cuda_train *g, const poa_loss_call *call, CUdeviceptr targets, CUdeviceptr logits, long k,
                         double temperature, CUdeviceptr weight, CUdeviceptr dlogits, poa_error *e) {
    long rows = call->rows;
    if (rows <= 0) return 0;
    double scale = call->factor / call->norm;
    train_dims dims = { .rows = rows, .k = k };
    CUdeviceptr row_loss = g->row_loss;
    void *args[] = { &row_loss, &dlogits, &targets, &logits, &weight, &temperature, &scale, &rows, &k };
    return launch(g, "poa_train_cross_entropy", &dims, args, e) || add_term(g, call, row_loss, rows, e) ? -1 : 0;
}

/* Sinkhorn-Knopp targets of rows x k logits (runtime/loss.c's poa_sinkhorn_knopp_global):
   exponentials after the max of the whole block, normalised to total 1, then `iterations`
   rounds of column then row scaling, kept as factors; targets = e r c samples. Over several
   ranks the max, the total, the sample count and the column sums are of the global batch, and
   every rank takes part, also with no rows of its own. */
static int sinkhorn_knopp(poa_cuda_train *g, CUdeviceptr targets, CUdeviceptr logits, long rows, long k, double tau,
                          int iterations, poa_error *e) {
    const int dp = many(g);
    if (k <= 0 || (rows <= 0 && !dp)) return 0;
    long n = rows * k, chunks = chunks_of(n);
    CUdeviceptr partial = g->sk_max_partial, max = g->sk_max, row_sum = g->sk_row_sum, total = g->sk_total;
    CUdeviceptr row_scale = g->sk_row_scale, colsum = g->sk_colsum, column_scale = g->sk_column_scale;
    train_dims flat = { .n = n }, partials = { .n = chunks }, block = { .rows = rows, .k = k };
    train_dims one = { .rows = rows, .n = rows }, columns = { .k = k };
    double samples_sum = (double)rows;
    if (dp && poa_dist_all_reduce_double(g->reduce->dist, &samples_sum, 1, POA_DIST_SUM, e)) return -1;
    long samples = (long)samples_sum;
    void *a_partial[] = { &partial, &logits, &n };
    void *a_max[] = { &max, &partial, &chunks };
    void *a_exp[] = { &targets, &row_sum, &logits, &max, &tau, &rows, &k };
    void *a_fill[] = { &row_scale, &total, &rows };
    void *a_columns[] = { &colsum, &targets, &row_scale, &rows, &k };
    void *a_column_scale[] = { &column_scale, &colsum, &k };
    void *a_rows[] = { &row_scale, &targets, &column_scale, &samples, &rows, &k };
    void *a_finish[] = { &targets, &targets, &row_scale, &column_scale, &samples, &rows, &k };
    if (rows > 0 ? launch(g, "poa_train_max_partial", &flat, a_partial, e) ||
                       launch(g, "poa_train_max", &partials, a_max, e)
                 : fill_value(g, max, -FLT_MAX, 1, e))
        return -1;
    if (dp && reduce_device(g->reduce, max, 1, 0, POA_DIST_MAX, e)) return -1;
    if (rows > 0 ? launch(g, "poa_train_sinkhorn_exp", &block, a_exp, e) || sum_doubles(g, total, row_sum, rows, e)
                 : fill(g, total, 2, e))
        return -1;
    if (dp && reduce_device(g->reduce, total, 1, 1, POA_DIST_SUM, e)) return -1;
    if (rows > 0 && launch(g, "poa_train_sinkhorn_fill", &one, a_fill, e)) return -1;
    for (int it = 0; it < iterations; it++)
        if ((rows > 0 ? launch(g, "poa_train_sinkhorn_columns_colsum", &block, a_columns, e)
                      : fill(g, colsum, 2 * k, e)) ||
            (dp && reduce_device(g->reduce, colsum, k, 1, POA_DIST_SUM, e)) ||
            launch(g, "poa_train_sinkhorn_column_scale", &columns, a_column_scale, e) ||
            (rows > 0 && launch(g, "poa_train_sinkhorn_rows", &block, a_rows, e)))
            return -1;
    return rows > 0 ? launch(g, "poa_train_sinkhorn_finish", &block, a_finish, e) : 0;
}

/* ---- memory ---- */

/* Bump allocation of the work buffers: a sizing walk (base 0), then the real one. */
typedef struct bump {
    CUdeviceptr base;
    size_t at;
} bump;

static CUdeviceptr take(bump *b, size_t bytes) {
    CUdeviceptr p = b->base + b->at;
    b->at += (bytes + 255) / 256 * 256;
    return p;
}

static long kmax_of(const poa_heads *h) {
    long k = 0;
    for (int i = 0; i < h->config.heads; i++) k = h->config.prototypes[i] > k ? h->config.prototypes[i] : k;
    return k;
}

/* Lays the work buffers out from base; returns the bytes used. */
static size_t lay_out_work(poa_cuda_train *g, CUdeviceptr base) {
    const poa_trainer *t = g->t;
    const poa_train_config *c = &t->config;
    const poa_recipe *r = &c->recipe;
    const long B = c->batch_size, G = r->global_crop_count, L = r->local_crop_count;
    const long N = (long)(r->global_crop_size / r->vit.patch_size) * (r->global_crop_size / r->vit.patch_size);
    const long D = t->model.config.max_width, H = t->heads.config.heads, kmax = kmax_of(&t->heads);
    const long chunks_total = chunks_of(g->n > g->nh ? g->n : g->nh);
    /* the collate function masks int(G B probability) slots of at most int(N ratio_max) tokens */
    g->max_masked = (long)((double)(G * B) * c->mask_probability) * (long)((double)N * c->mask_ratio_max);
    g->max_rows = (L + G) * B + g->max_masked;
    const long rows = g->max_rows, sk_chunks = chunks_of(g->max_rows * kmax);
    bump b = { base, 0 };
    const size_t f = sizeof(float), d = sizeof(double);
    g->teacher_input = take(&b, f * (size_t)((G * B + g->max_masked) * D));
    for (int h = 0; h < H; h++) {
        const long K = t->heads.config.prototypes[h];
        g->targets_cls[h] = take(&b, f * (size_t)(G * B * K));
        g->targets_patch[h] = take(&b, f * (size_t)(g->max_masked * K));
    }
    for (int x = 0; x < 2; x++) {
        poa_cuda_branch *br = &g->branch[x];
        br->features = take(&b, f * (size_t)(rows * D));
        br->dfeatures = take(&b, f * (size_t)(rows * D));
        for (int h = 0; h < H; h++) br->dlogits[h] = take(&b, f * (size_t)(rows * t->heads.config.prototypes[h]));
    }
    g->distill_targets = take(&b, f * (size_t)((L + G) * B * kmax));
    g->ibot_weights = take(&b, f * (size_t)g->max_masked);
    g->mask_indices = take(&b, sizeof(int) * (size_t)g->max_masked);
    g->row_loss = take(&b, d * (size_t)rows);
    g->terms = take(&b, d * ACCUMULATORS);
    g->sum_scratch = take(&b, d);
    g->sk_max_partial = take(&b, f * (size_t)sk_chunks);
    g->sk_max = take(&b, f);
    g->sk_row_sum = take(&b, d * (size_t)rows);
    g->sk_row_scale = take(&b, d * (size_t)rows);
    g->sk_total = take(&b, d);
    g->sk_colsum = take(&b, d * (size_t)kmax);
    g->sk_column_scale = take(&b, d * (size_t)kmax);
    g->koleo_zhat = take(&b, d * (size_t)(B * D));
    g->koleo_g = take(&b, d * (size_t)(B * D));
    g->koleo_norm = take(&b, d * (size_t)B);
    g->koleo_row_loss = take(&b, d * (size_t)B);
    g->koleo_nn = take(&b, sizeof(long) * (size_t)B);
    g->koleo_grads = take(&b, f * (size_t)(G * B * D));
    g->norm_partial = take(&b, d * (size_t)chunks_total);
    g->norms = take(&b, d * 2);
    return b.at;
}

/* ---- set-up ---- */

/* The trainer's student, teacher and AdamW moments ([backbone | heads] on the device) to the
   device (up) or back. */
static int move_state(poa_cuda_train *g, int up, poa_error *e) {
    poa_trainer *t = g->t;
    const size_t f = sizeof(float), n = (size_t)g->n, nh = (size_t)g->nh;
    struct { CUdeviceptr at; float *backbone, *heads; } parts[] = {
        { g->student, t->student, t->student_heads }, { g->teacher, t->teacher, t->teacher_heads },
        { g->adam_m, t->adam_m, t->adam_m_heads }, { g->adam_v, t->adam_v, t->adam_v_heads },
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (up ? poa_cuda_exec_upload(&g->exec, parts[i].at, parts[i].backbone, f * n, e) ||
                     poa_cuda_exec_upload(&g->exec, parts[i].at + f * n, parts[i].heads, f * nh, e)
               : poa_cuda_exec_download(&g->exec, parts[i].backbone, parts[i].at, f * n, e) ||
                     poa_cuda_exec_download(&g->exec, parts[i].heads, parts[i].at + f * n, f * nh, e))
            return -1;
    return 0;
}

/* The state, its bf16 shadows, and zero gradients. */
static int upload_state(poa_cuda_train *g, poa_error *e) {
    poa_trainer *t = g->t;
    const long n = g->n, nh = g->nh;
    int rc = move_state(g, 1, e);
    for (int which = 0; which < 2 && !rc; which++) {
        const CUdeviceptr shadow = which ? g->teacher_bf16 : g->student_bf16;
        rc = poa_cuda_upload_values(&g->exec, shadow, which ? t->teacher : t->student, NULL, n, 1, e) ||
             poa_cuda_upload_values(&g->exec, shadow + 2 * (size_t)n, which ? t->teacher_heads : t->student_heads,
                                    NULL, nh, 1, e);
    }
    return rc || fill(g, g->grads, n + nh, e) ? -1 : 0;
}

int poa_cuda_train_download(poa_cuda_train *g, poa_error *e) { return move_state(g, 0, e); }

/* AdamW's chunk table over [backbone | heads], uploaded once. */
static int build_chunks(poa_cuda_train *g, poa_error *e) {
    const poa_trainer *t = g->t;
    const int count = t->model.tensor_count + t->heads.tensor_count;
    g->tensor_count = count;
    g->tensor_offset = malloc(sizeof(long) * (size_t)count);
    g->tensor_count_of = malloc(sizeof(long) * (size_t)count);
    if (!g->tensor_offset || !g->tensor_count_of) return poa_fail(e, "GPU step: out of memory");
    for (int i = 0; i < count; i++) {
        const int heads = i >= t->model.tensor_count;
        const poa_vit_tensor *x = heads ? &t->heads.tensors[i - t->model.tensor_count] : &t->model.tensors[i];
        g->tensor_offset[i] = x->offset + (heads ? g->n : 0);
        g->tensor_count_of[i] = x->count;
    }
    g->chunks = poa_train_adamw_chunks(g->tensor_offset, g->tensor_count_of, count, NULL, NULL, NULL);
    long *table = malloc(3 * sizeof(long) * (size_t)g->chunks);
    if (!table) return poa_fail(e, "GPU step: out of memory for %ld chunks", g->chunks);
    poa_train_adamw_chunks(g->tensor_offset, g->tensor_count_of, count, table, table + g->chunks, table + 2 * g->chunks);
    const size_t bytes = sizeof(long) * (size_t)g->chunks;
    int rc = poa_cuda_exec_alloc(&g->exec, &g->chunk_start, 20, bytes, e) ||
             poa_cuda_exec_alloc(&g->exec, &g->chunk_count, 21, bytes, e) ||
             poa_cuda_exec_alloc(&g->exec, &g->chunk_tensor, 22, bytes, e) ||
             poa_cuda_exec_alloc(&g->exec, &g->decay, 23, sizeof(float) * (size_t)count, e) ||
             poa_cuda_exec_alloc(&g->exec, &g->neg_step, 24, sizeof(float) * (size_t)count, e) ||
             poa_cuda_exec_upload(&g->exec, g->chunk_start, table, bytes, e) ||
             poa_cuda_exec_upload(&g->exec, g->chunk_count, table + g->chunks, bytes, e) ||
             poa_cuda_exec_upload(&g->exec, g->chunk_tensor, table + 2 * g->chunks, bytes, e) ||
             poa_cuda_exec_synchronize(&g->exec, e);
    free(table);
    return rc ? -1 : 0;
}

int poa_cuda_train_init(poa_cuda_train *g, poa_trainer *t, const poa_cuda_exec *exec, int bf16, poa_error *e) {
    memset(g, 0, sizeof *g);
    g->t = t;
    g->exec = *exec;
    g->exec.planning = 0;
    g->exec.modules = &g->modules; /* every pass shares the modules, loaded once */
    g->bf16 = bf16;
    g->n = t->model.parameter_count, g->nh = t->heads.parameter_count;
    const poa_train_config *c = &t->config;
    if (c->sinkhorn_iterations < 1)
        return poa_fail(e, "GPU step: loss.sinkhorn_iterations = %d; the GPU step needs at least 1",
                        c->sinkhorn_iterations);
    if (c->accumulate < 1) return poa_fail(e, "GPU step: train.accumulate = %d", c->accumulate);
    /* every kernel of the run compiled (in parallel) and loaded now */
    int rc = poa_cuda_sources_load(&g->sources, c->recipe.path, c->recipe.overrides, e) ||
                     poa_cuda_exec_preload(&g->exec, (const char *const *)g->sources.texts,
                                           (const char *const *)g->sources.names, g->sources.count, e)
                 ? -1
                 : 0;
    const poa_program *launches = rc ? NULL : poa_runtime_launches(e);
    if (!launches) rc = -1;
    else if (launches->launch_count > (int)(sizeof g->functions / sizeof g->functions[0]))
        rc = poa_fail(e, "GPU step: %d kernels launched by name, at most %zu", launches->launch_count,
                      sizeof g->functions / sizeof g->functions[0]);
    if (!rc && exec->cuda) { /* the modules of the kernels launched by name, from the module cache */
        static const char *const names[2] = { "train_kernels.cu", "vit_glue.cu" };
        CUmodule modules[2] = { 0 };
        for (int i = 0; i < 2 && !rc; i++)
            rc = poa_cuda_exec_load_module(&g->exec, poa_cuda_sources_find(&g->sources, names[i]), names[i],
                                           &modules[i], e);
        if (!rc)
            rc = poa_cuda_functions(launches->launches, launches->launch_count, exec->cuda, names, modules, 2,
                                    g->functions, e);
    }
    /* device memory: the fp32 state, then the two bf16 shadows */
    const size_t f = sizeof(float), all = (size_t)(g->n + g->nh);
    CUdeviceptr *state[] = { &g->student, &g->teacher, &g->grads, &g->adam_m, &g->adam_v, &g->student_bf16,
                             &g->teacher_bf16 };
    for (int i = 0; i < ARGC(state) && !rc; i++)
        rc = poa_cuda_exec_alloc(&g->exec, state[i], 10 + i, (i < 5 ? f : 2) * all, e);
    if (!rc) {
        g->work_bytes = lay_out_work(g, 0);
        rc = poa_cuda_exec_alloc(&g->exec, &g->work, 17, g->work_bytes, e);
        if (!rc) lay_out_work(g, g->work);
    }
    if (!rc) rc = build_chunks(g, e);
    if (!rc) rc = upload_state(g, e);
    if (rc) poa_cuda_train_free(g); /* which leaves e as it is */
    return rc ? -1 : 0;
}

void poa_cuda_train_free(poa_cuda_train *g) {
    for (int x = 0; x < 2; x++) {
        poa_cuda_vit_pass_free(&g->branch[x].global), poa_cuda_vit_pass_free(&g->branch[x].local);
        poa_cuda_heads_pass_free(&g->branch[x].heads);
    }
    poa_cuda_vit_pass_free(&g->teacher_pass);
    poa_cuda_heads_pass_free(&g->teacher_heads);
    CUdeviceptr *pointers[] = { &g->student, &g->teacher, &g->grads, &g->adam_m, &g->adam_v, &g->student_bf16,
                                &g->teacher_bf16, &g->work, &g->chunk_start, &g->chunk_count, &g->chunk_tensor,
                                &g->decay, &g->neg_step };
    for (size_t i = 0; i < sizeof pointers / sizeof pointers[0]; i++) poa_cuda_exec_free(&g->exec, pointers[i]);
    if (g->exec.cuda) poa_cuda_modules_free(&g->modules, g->exec.cuda);
    poa_cuda_sources_free(&g->sources);
    free(g->tensor_offset), free(g->tensor_count_of);
    memset(g, 0, sizeof *g);
}

/* ---- passes ---- */

/* A backbone pass over the step's parameters (a made pass, model set, is made again only when
   its member or shapes change); arena_of (or NULL): a pass of the same batch whose arena it may
   use, being done with by then. */
static int vit_pass(poa_cuda_train *g, poa_cuda_vit_pass *p, int width, int depth, long batch, int size,
                    int teacher, const poa_cuda_vit_pass *arena_of, poa_error *e) {
    if (p->model && p->width == width && p->depth == depth && p->batch == batch && p->host.image_size == size)
        return 0;
    poa_cuda_vit_pass_free(p);
    poa_cuda_vit_shared shared = {
        .params = teacher ? g->teacher : g->student, .grads = teacher ? 0 : g->grads,
        .params_bf16 = teacher ? g->teacher_bf16 : g->student_bf16, .bf16 = g->bf16,
    };
    if (arena_of && arena_of->model && arena_of->batch == batch && arena_of->host.image_size == size) /* its crops */
        shared.arena = arena_of->arena, shared.arena_capacity = arena_of->arena_capacity,
        shared.images = arena_of->images;
    /* one pair of bf16 cast slots for every pass of the step (they run one after another): the
       teacher's, the largest */
    if (g->teacher_pass.bf16 && p != &g->teacher_pass)
        shared.cast_bf16 = g->teacher_pass.cast_bf16, shared.cast_capacity = g->teacher_pass.cast_capacity;
    if (poa_cuda_vit_pass_init(p, &g->exec, &g->t->model, width, depth, batch, size, &g->sources, &shared, e))
        return -1;
    if ((g->bf16 && poa_cuda_vit_pass_use_bf16(p, e)) || poa_cuda_vit_pass_plan_gemms(p, e)) {
        poa_cuda_vit_pass_free(p);
        return -1;
    }
    return 0;
}

/* A heads pass over the step's parameters (made once, heads set; then prepared for the rows). */
static int heads_pass(poa_cuda_train *g, poa_cuda_heads_pass *p, int width, long rows, int teacher, poa_error *e) {
    const size_t f = sizeof(float);
    if (p->heads) return poa_cuda_heads_pass_prepare(p, width, rows, e);
    CUdeviceptr params = (teacher ? g->teacher : g->student) + f * (size_t)g->n;
    CUdeviceptr grads = teacher ? 0 : g->grads + f * (size_t)g->n;
    if (poa_cuda_heads_pass_init(p, &g->exec, &g->t->heads, width, rows, params, grads,
                                 poa_cuda_sources_find(&g->sources, "heads_kernels.cu"), e))
        return -1;
    CUdeviceptr shadow = (teacher ? g->teacher_bf16 : g->student_bf16) + 2 * (size_t)g->n;
    return g->bf16 && poa_cuda_heads_pass_use_bf16(p, shadow, e) ? -1 : 0;
}

/* ---- the step's primitives (train_step.h) ---- */

static poa_cuda_vit_pass *pass_of(poa_cuda_train *g, int branch, int crops) {
    if (branch == POA_STEP_TEACHER) return &g->teacher_pass;
    return crops == POA_CROPS_LOCAL ? &g->branch[branch].local : &g->branch[branch].global;
}

/* The head input of a branch (rows x width). */
static CUdeviceptr input_of(poa_cuda_train *g, int branch) {
    return branch == POA_STEP_TEACHER ? g->teacher_input : g->branch[branch].features;
}

/* The micro-batch within what the work buffers were sized for; the loss accumulators zeroed
   at the step's first; iBOT's token indices and weights uploaded. */
static int gpu_begin(void *self, const poa_batch *mb, const poa_step_shapes *sh, int micro, poa_error *e) {
    poa_cuda_train *g = self;
    const poa_train_config *c = &g->t->config;
    g->batch = mb, g->shape = *sh;
    if (sh->masked > g->max_masked || sh->B > c->batch_size || sh->G > c->recipe.global_crop_count ||
        sh->L > c->recipe.local_crop_count || sh->S > c->recipe.global_crop_size || sh->s > c->recipe.local_crop_size)
        return poa_fail(e, "GPU step: a micro-batch of %ld images of %d + %d crops (%ld masked tokens) is larger than "
                           "the recipe's (%d images, %ld masked tokens at most)",
                        sh->B, sh->G, sh->L, sh->masked, c->batch_size, g->max_masked);
    if (micro == 0 && fill(g, g->terms, 2 * ACCUMULATORS, e)) return -1; /* the doubles as floats */
    if (sh->masked &&
        (poa_cuda_exec_upload(&g->exec, g->mask_indices, mb->masks.indices, sizeof(int) * (size_t)sh->masked, e) ||
         poa_cuda_exec_upload(&g->exec, g->ibot_weights, mb->masks.weights, sizeof(float) * (size_t)sh->masked, e)))
        return -1;
    return 0;
}

/* The masks' host buffers may change with the next batch: finish reading them. */
static int gpu_end(void *self, int rc, poa_error *e) {
    poa_cuda_train *g = self;
    return rc ? -1 : poa_cuda_exec_synchronize(&g->exec, e);
}

/* The passes, made again when the member or the shapes change. The intact branch runs after the
   teacher: its global pass uses the teacher's arena; the elastic branch runs after the intact
   one: it uses the intact passes' arenas. */
static int gpu_prepare(void *self, int b, int width, int depth, long rows, poa_error *e) {
    poa_cuda_train *g = self;
    const poa_step_shapes *sh = &g->shape;
    if (b == POA_STEP_TEACHER)
        return vit_pass(g, &g->teacher_pass, width, depth, sh->G * sh->B, sh->S, 1, NULL, e) ||
                       heads_pass(g, &g->teacher_heads, width, rows, 1, e)
                   ? -1
                   : 0;
    poa_cuda_branch *x = &g->branch[b], *intact = &g->branch[0];
    return vit_pass(g, &x->global, width, depth, sh->G * sh->B, sh->S, 0, b ? &intact->global : &g->teacher_pass,
                    e) ||
                   vit_pass(g, &x->local, width, depth, sh->L * sh->B, sh->s, 0, b ? &intact->local : NULL, e) ||
                   heads_pass(g, &x->heads, width, rows, 0, e)
               ? -1
               : 0;
}

/* The crops are uploaded by the first pass on them (the teacher's global, the intact local). */
static int gpu_forward(void *self, int b, int crops, const unsigned char *masks, const real *drop, poa_error *e) {
    poa_cuda_train *g = self;
    poa_cuda_vit_pass *p = pass_of(g, b, crops);
    const float *images = crops == POA_CROPS_LOCAL ? g->batch->local_crops : g->batch->global_crops;
    return poa_cuda_vit_forward(p, p->shared.images ? NULL : images, masks, drop, e);
}

static int gpu_rows(void *self, int b, int crops, long row, int masked, int back, poa_error *e) {
    poa_cuda_train *g = self;
    poa_cuda_vit_pass *p = pass_of(g, b, crops);
    const CUdeviceptr rows = (back ? g->branch[b].dfeatures : input_of(g, b)) + sizeof(float) * (size_t)(row * p->width);
    const CUdeviceptr indices = masked ? g->mask_indices : 0;
    const long count = masked ? g->shape.masked : p->batch;
    return poa_cuda_vit_move_rows(p, back, rows, indices, count, e);
}

/* The heads; a student's douts, logits' gradients and KoLeo's gradient rows then zeroed. */
static int gpu_heads_forward(void *self, int b, poa_error *e) {
    poa_cuda_train *g = self;
    const poa_trainer *t = g->t;
    if (poa_cuda_heads_forward(b == POA_STEP_TEACHER ? &g->teacher_heads : &g->branch[b].heads, input_of(g, b), e))
        return -1;
    if (b == POA_STEP_TEACHER) return 0;
    poa_cuda_branch *x = &g->branch[b];
    if (poa_cuda_vit_zero_dout(&x->global, e) || (x->local.batch && poa_cuda_vit_zero_dout(&x->local, e))) return -1;
    for (int h = 0; h < t->heads.config.heads; h++)
        if (fill(g, x->dlogits[h], x->heads.rows * t->heads.config.prototypes[h], e)) return -1;
    return fill(g, g->koleo_grads, x->global.batch * x->global.width, e);
}

static int gpu_sinkhorn(void *self, int h, int patch, long row, long rows, double temp, poa_error *e) {
    poa_cuda_train *g = self;
    const long K = g->t->heads.config.prototypes[h];
    return sinkhorn_knopp(g, patch ? g->targets_patch[h] : g->targets_cls[h],
                          g->teacher_heads.logits[h] + sizeof(float) * (size_t)(row * K), rows, K, temp,
                          g->t->config.sinkhorn_iterations, e);
}

static int gpu_cross_entropy(void *self, int b, const poa_loss_call *call, int distill, poa_error *e) {
    poa_cuda_train *g = self;
    const int h = call->head;
    long K = g->t->heads.config.prototypes[h];
    const size_t f = sizeof(float);
    if (distill) { /* softmax(intact logits / distill_temp) */
        CUdeviceptr Q = g->distill_targets, SI = g->branch[0].heads.logits[h];
        long rows = (g->shape.L + g->shape.G) * g->shape.B;
        double distill_temp = g->t->config.distill_temp;
        void *args[] = { &Q, &SI, &distill_temp, &rows, &K };
        if (launch(g, "poa_train_softmax", &(train_dims){ .rows = rows, .k = K }, args, e)) return -1;
    }
    const CUdeviceptr P = call->targets == POA_TARGETS_TEACHER_CLS     ? g->targets_cls[h]
                          : call->targets == POA_TARGETS_TEACHER_PATCH ? g->targets_patch[h]
                                                                       : g->distill_targets;
    poa_cuda_branch *x = &g->branch[b];
    return cross_entropy(g, call, P + f * (size_t)(call->target_row * K), x->heads.logits[h] + f * (size_t)(call->row * K),
                         K, g->t->config.student_temp, call->token_weights ? g->ibot_weights : 0,
                         x->dlogits[h] + f * (size_t)(call->row * K), e);
}

/* KoLeo of a call's rows of the head input (one global crop's CLS features); the gradients
   into g->koleo_grads (global rows x width), added to the global dout by gpu_heads_backward. */
static int gpu_koleo(void *self, int b, const poa_loss_call *call, poa_error *e) {
    poa_cuda_train *g = self;
    poa_cuda_branch *x = &g->branch[b];
    const size_t f = sizeof(float);
    long n = call->rows, d = x->global.width;
    double factor = call->factor;
    CUdeviceptr features = x->features + f * (size_t)(call->row * d);
    CUdeviceptr grads = g->koleo_grads + f * (size_t)((call->row - g->shape.L * g->shape.B) * d);
    CUdeviceptr zhat = g->koleo_zhat, norm = g->koleo_norm, kg = g->koleo_g, nn = g->koleo_nn;
    CUdeviceptr row_loss = g->koleo_row_loss;
    train_dims dims = { .n = n };
    void *a_normalize[] = { &zhat, &norm, &features, &n, &d };
    void *a_neighbours[] = { &kg, &nn, &row_loss, &zhat, &factor, &n, &d };
    void *a_backward[] = { &grads, &kg, &nn, &zhat, &norm, &n, &d };
    return launch(g, "poa_train_koleo_normalize", &dims, a_normalize, e) ||
                   launch(g, "poa_train_koleo_neighbours", &dims, a_neighbours, e) ||
                   launch(g, "poa_train_koleo_backward", &dims, a_backward, e) || add_term(g, call, row_loss, n, e)
               ? -1
               : 0;
}

/* KoLeo's gradient rows into the global dout, then the heads' backward. */
static int gpu_heads_backward(void *self, int b, poa_error *e) {
    poa_cuda_train *g = self;
    poa_cuda_branch *x = &g->branch[b];
    return poa_cuda_vit_move_rows(&x->global, 1, g->koleo_grads, 0, x->global.batch, e) ||
                   poa_cuda_heads_backward(&x->heads, x->dlogits, x->dfeatures, e)
               ? -1
               : 0;
}

static int gpu_backward(void *self, int b, int crops, poa_error *e) {
    return poa_cuda_vit_backward(pass_of(self, b, crops), NULL, e);
}

int poa_cuda_train_plan_memory(poa_trainer *t, int bf16, const poa_batch *batch, poa_cuda_train_plan *plan,
                               poa_error *e) {
    memset(plan, 0, sizeof *plan);
    poa_cuda_memory account = { 0 };
    poa_cuda_exec nowhere = { .account = &account };
    poa_cuda_train g;
    int rc = poa_cuda_train_init(&g, t, &nowhere, bf16, e);
    if (!rc) {
        poa_cuda_train_begin_step(&g);
        rc = poa_cuda_train_micro_batch(&g, batch, 0, e);
        const size_t all = (size_t)(g.n + g.nh);
        plan->state = all * (5 * sizeof(float) + 2 * sizeof(uint16_t));
        plan->work = g.work_bytes;
        plan->teacher_arena = sizeof(float) * (size_t)g.teacher_pass.arena_count; /* 0: a pass not made */
        plan->global_arena = sizeof(float) * (size_t)g.branch[0].global.arena_count;
        plan->local_arena = sizeof(float) * (size_t)g.branch[0].local.arena_count;
        poa_cuda_train_free(&g);
    }
    plan->peak = account.peak;
    poa_cuda_memory_free(&account);
    return rc;
}

/* ---- the update ---- */

static int sum_squares(poa_cuda_train *g, CUdeviceptr total, CUdeviceptr x, long n, poa_error *e) {
    CUdeviceptr partial = g->norm_partial;
    train_dims dims = { .n = n };
    void *args[] = { &partial, &x, &n };
    return launch(g, "poa_train_sum_squares", &dims, args, e) || sum_doubles(g, total, partial, chunks_of(n), e) ? -1
                                                                                                                 : 0;
}

static int clip(poa_cuda_train *g, CUdeviceptr x, CUdeviceptr total, long n, poa_error *e) {
    double max_norm = g->t->config.clip_grad;
    train_dims dims = { .n = n };
    void *args[] = { &x, &total, &max_norm, &n };
    return launch(g, "poa_train_clip_scale", &dims, args, e);
}

int poa_cuda_train_reduce_step(poa_cuda_train *g, poa_error *e) {
    if (!many(g)) return 0;
    const int world = g->reduce->dist->world_size;
    CUdeviceptr grads = g->grads;
    float inverse = (float)(1.0 / world);
    long all = g->n + g->nh;
    void *args[] = { &grads, &inverse, &all };
    return reduce_device(g->reduce, g->grads, all, 0, POA_DIST_SUM, e) ||
                   launch(g, "poa_glue_scale", &(train_dims){ .n = all }, args, e) ||
                   reduce_device(g->reduce, g->terms, ACCUMULATORS, 1, POA_DIST_SUM, e)
               ? -1
               : 0;
}

/* The one synchronisation of the step: the loss terms (summed over the ranks by reduce_step)
   and the gradient norms, kept for gpu_update. */
static int gpu_read_step(void *self, poa_step_stats *s, poa_error *e) {
    poa_cuda_train *g = self;
    const long n = g->n, nh = g->nh;
    double terms[ACCUMULATORS];
    const int world = many(g) ? g->reduce->dist->world_size : 1;
    if (sum_squares(g, g->norms, g->grads, n, e) ||
        sum_squares(g, g->norms + sizeof(double), g->grads + sizeof(float) * (size_t)n, nh, e) ||
        poa_cuda_exec_download(&g->exec, terms, g->terms, sizeof terms, e) ||
        poa_cuda_exec_download(&g->exec, g->norm_values, g->norms, sizeof g->norm_values, e))
        return -1;
    s->dino = terms[POA_LOSS_DINO] / world, s->distill = terms[POA_LOSS_DISTILL] / world;
    s->koleo = terms[POA_LOSS_KOLEO] / world, s->ibot = terms[POA_LOSS_IBOT] / world;
    double *calls = (double *)&s->calls; /* a struct of doubles only */
    for (int i = 0; i < SLOT_COUNT; i++) calls[i] = g->slot_unit[i] != 0 ? terms[TERM_COUNT + i] / g->slot_unit[i] / world : 0;
    return 0;
}

/* Unless skipped: clipping, AdamW (and the student's shadow), EMA (and the teacher's); then the
   gradients zeroed. */
static int gpu_update(void *self, poa_step_stats *s, const double *lr, const double *wd, poa_error *e) {
    poa_cuda_train *g = self;
    if (s->skipped) return fill(g, g->grads, g->n + g->nh, e);
    poa_trainer *t = g->t;
    const poa_train_config *c = &t->config;
    const long n = g->n, nh = g->nh;
    const size_t f = sizeof(float);
    s->grad_norm_backbone = sqrt(g->norm_values[0]), s->grad_norm_heads = sqrt(g->norm_values[1]);
    float *scalars = malloc(sizeof(float) * (size_t)g->tensor_count * 2);
    if (!scalars) return poa_fail(e, "GPU step: out of memory");
    poa_train_adamw_constants k;
    poa_train_adamw_scalars(lr, wd, g->tensor_count, c->beta1, c->beta2, c->eps, t->step + 1, scalars,
                            scalars + g->tensor_count, &k);
    CUdeviceptr p = g->student, m = g->adam_m, v = g->adam_v, shadow = g->student_bf16, grads = g->grads;
    CUdeviceptr cs = g->chunk_start, cc = g->chunk_count, ct = g->chunk_tensor, decay = g->decay;
    CUdeviceptr neg_step = g->neg_step;
    long chunks = g->chunks, all = n + nh;
    train_dims adam = { .chunks = chunks }, flat = { .n = all };
    void *a_adam[] = { &p, &m, &v, &shadow, &grads, &cs, &cc, &ct, &decay, &neg_step, &k.beta1,
                       &k.one_minus_beta1, &k.beta2, &k.one_minus_beta2, &k.correction2_sqrt, &k.epsilon,
                       &chunks };
    float keep = (float)s->momentum, take = (float)(1 - s->momentum);
    CUdeviceptr teacher = g->teacher, teacher_shadow = g->teacher_bf16, student = g->student;
    void *a_ema[] = { &teacher, &teacher_shadow, &student, &keep, &take, &all };
    int rc = clip(g, g->grads, g->norms, n, e) || clip(g, g->grads + f * (size_t)n, g->norms + sizeof(double), nh, e) ||
             poa_cuda_exec_upload(&g->exec, g->decay, scalars, sizeof(float) * (size_t)g->tensor_count, e) ||
             poa_cuda_exec_upload(&g->exec, g->neg_step, scalars + g->tensor_count,
                                  sizeof(float) * (size_t)g->tensor_count, e) ||
             launch(g, "poa_train_adamw", &adam, a_adam, e) || launch(g, "poa_train_ema", &flat, a_ema, e);
    if (!rc) rc = poa_cuda_exec_synchronize(&g->exec, e); /* scalars is freed next */
    free(scalars);
    return rc || fill(g, g->grads, all, e) ? -1 : 0;
}

static const poa_step_ops gpu_ops = {
    .begin = gpu_begin, .end = gpu_end, .prepare = gpu_prepare, .forward = gpu_forward, .rows = gpu_rows,
    .heads_forward = gpu_heads_forward, .sinkhorn = gpu_sinkhorn, .cross_entropy = gpu_cross_entropy,
    .koleo = gpu_koleo, .heads_backward = gpu_heads_backward, .backward = gpu_backward, .read_step = gpu_read_step,
    .update = gpu_update,
};

void poa_cuda_train_begin_step(poa_cuda_train *g) { poa_trainer_begin_step(g->t); }

int poa_cuda_train_micro_batch(poa_cuda_train *g, const poa_batch *mb, int micro, poa_error *e) {
    return poa_step_micro_batch(g->t, &gpu_ops, g, mb, micro, e);
}

int poa_cuda_train_end_step(poa_cuda_train *g, poa_error *e) { return poa_step_end(g->t, &gpu_ops, g, e); }

#endif /* POA_FP64 */
