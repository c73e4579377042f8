/* train_step.c: one POA micro-batch (reference §3-§4): teacher targets, then the intact
   and the elastic student with every loss term of §3.5, their backward into the one
   gradient buffer; poa_trainer_step adds the optimizer step. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loss.h"
#include "loss_plan.h"
#include "random.h"
#include "trainer.h"

void poa_trainer_apply(poa_trainer *t, poa_step_stats *s);

/* Shapes of one micro-batch. */
typedef struct shapes {
    long B;                 /* images */
    int G, L;               /* global and local crops per image */
    int S, s;               /* their sizes */
    long N;                 /* patches of a global crop */
    long masked;            /* masked global-crop tokens (iBOT), 0 when inactive */
} shapes;

/* Teacher targets per head: SK of the CLS logits (G*B rows, crop-major) and of the masked
   patch logits (masked rows), at the scheduled teacher temperature. */
typedef struct targets {
    real *cls[POA_MAX_HEADS], *patch[POA_MAX_HEADS];
} targets;

/* One student branch's outputs kept for the losses and the backward. The pointers are into
   the trainer's passes and work buffers (t->branch_work), kept across steps. */
typedef struct branch {
    int width, depth;
    double weight;            /* lambda or 1 - lambda (1 for the baseline) */
    poa_vit_pass *global, *local; /* the trainer's passes of this branch */
    poa_heads_pass *heads;        /* rows: L*B local CLS, G*B global CLS, masked patches */
    real *features;           /* head input rows x width */
    real *dlogits[POA_MAX_HEADS]; /* zeroed, the losses add into them */
    real *dfeatures;
    real *dout_global, *dout_local; /* d(backbone output), zeroed */
    real *drop_global, *drop_local; /* NULL when the drop-path rate is 0 */
} branch;

/* n values of b, zeroed; NULL when out of memory. */
static real *work_zeros(poa_work_buffer *b, long n) {
    real *p = poa_work_buffer_get(b, n);
    if (p) memset(p, 0, sizeof(real) * (size_t)(n > 0 ? n : 1));
    return p;
}

/* Stochastic depth with an exact keep count (reference §1.5): for every active block and
   residual branch, keep = max(int(batch (1 - rate)), 1) samples chosen by a random
   permutation get batch / keep, the others 0, written into the depth x 2 x batch `scale`.
   Returns scale, or NULL when rate is 0 (or out of memory: *failed is set). */
real *poa_draw_drop_path(real *scale, int depth, long batch, double rate, uint64_t seed,
                         uint64_t stream, int *failed) {
    if (rate <= 0) return NULL;
    long keep = (long)(batch * (1 - rate));
    if (keep < 1) keep = 1;
    long *order = malloc(sizeof(long) * (size_t)batch);
    if (!scale || !order) {
        free(order);
        *failed = 1;
        return NULL;
    }
    memset(scale, 0, sizeof(real) * (size_t)(depth * 2 * batch));
    for (int r = 0; r < depth * 2; r++) {
        for (long i = 0; i < batch; i++) order[i] = i;
        for (long i = batch - 1; i > 0; i--) {
            long j = (long)(poa_uniform(seed, stream + (uint64_t)r, (uint64_t)i) * (i + 1));
            long x = order[i];
            order[i] = order[j], order[j] = x;
        }
        for (long i = 0; i < keep; i++) scale[r * batch + order[i]] = (real)((double)batch / keep);
    }
    free(order);
    return scale;
}

real *poa_trainer_drop_path(const poa_trainer *t, int branch, int crops, real *scale, int depth, long batch,
                            uint64_t stream, int *failed) {
    const real *given = t->given_drop_path[branch][crops];
    if (!given) return poa_draw_drop_path(scale, depth, batch, t->config.drop_path_rate, t->config.seed, stream, failed);
    if (!scale) {
        *failed = 1;
        return NULL;
    }
    memcpy(scale, given, sizeof(real) * (size_t)(depth * 2 * batch));
    return scale;
}

/* Copies the CLS rows and the masked patch rows of a pass's output into head-input rows. */
static void gather_rows(real *dst, const poa_vit_pass *p, const int *indices, long count,
                        long patches) {
    const real *out = poa_vit_output(p);
    const long D = p->width;
    if (!indices) {
        for (long b = 0; b < p->batch; b++)
            memcpy(dst + b * D, out + b * p->tokens * D, sizeof(real) * (size_t)D);
        return;
    }
    for (long i = 0; i < count; i++) {
        long slot = indices[i] / patches, token = indices[i] % patches;
        memcpy(dst + i * D, out + (slot * p->tokens + 1 + token) * D, sizeof(real) * (size_t)D);
    }
}

/* The transpose of gather_rows: adds head-input gradient rows into d(output). */
static void scatter_rows(real *dout, const poa_vit_pass *p, const real *src, const int *indices,
                         long count, long patches) {
    const long D = p->width;
    if (!indices) {
        for (long b = 0; b < p->batch; b++)
            for (long i = 0; i < D; i++) dout[b * p->tokens * D + i] += src[b * D + i];
        return;
    }
    for (long r = 0; r < count; r++) {
        long slot = indices[r] / patches, token = indices[r] % patches;
        for (long i = 0; i < D; i++) dout[(slot * p->tokens + 1 + token) * D + i] += src[r * D + i];
    }
}

/* The micro-batch's crops as `real` (the loader writes float; the fp64 build converts). */
typedef struct crops {
    const real *global, *local;
    real *owned[2];
} crops;

static void crops_of(crops *c, const poa_batch *mb, const shapes *sh) {
    const float *src[2] = { mb->global_crops, mb->local_crops };
    long n[2] = { sh->G * sh->B * 3L * sh->S * sh->S, sh->L * sh->B * 3L * sh->s * sh->s };
    for (int i = 0; i < 2; i++) {
#ifdef POA_FP64
        c->owned[i] = malloc(sizeof(real) * (size_t)n[i]);
        for (long j = 0; j < n[i]; j++) c->owned[i][j] = src[i][j];
        (i ? &c->local : &c->global)[0] = c->owned[i];
#else
        (void)n;
        c->owned[i] = NULL;
        (i ? &c->local : &c->global)[0] = src[i];
#endif
    }
}

static int teacher_targets(poa_trainer *t, const poa_batch *mb, const crops *crops, const shapes *sh,
                           double temp, int ibot_active, targets *tg, poa_step_diagnostics *diag,
                           poa_error *e) {
    const poa_vit_config *vc = &t->model.config;
    poa_vit_pass *pass = &t->teacher_pass;
    poa_heads_pass *heads = &t->teacher_heads_pass;
    const long rows = sh->G * sh->B + sh->masked;
    if (poa_vit_pass_prepare(pass, &t->model, vc->max_width, vc->max_depth, sh->G * sh->B, sh->S, e) ||
        poa_heads_pass_prepare(heads, &t->heads, vc->max_width, rows, e))
        return -1;
    real *input = poa_work_buffer_get(&t->teacher_input, rows * vc->max_width);
    for (int h = 0; h < t->heads.config.heads && input; h++) {
        const long K = t->heads.config.prototypes[h];
        tg->cls[h] = poa_work_buffer_get(&t->targets_cls[h], sh->G * sh->B * K);
        tg->patch[h] = sh->masked ? poa_work_buffer_get(&t->targets_patch[h], sh->masked * K) : NULL;
        if (!tg->cls[h] || (sh->masked && !tg->patch[h])) input = NULL;
    }
    if (!input) return poa_fail(e, "teacher: out of memory for %ld head rows", rows);
    poa_vit_forward(pass, t->teacher, crops->global, NULL, NULL);
    gather_rows(input, pass, NULL, 0, sh->N);
    gather_rows(input + sh->G * sh->B * vc->max_width, pass, mb->masks.indices, sh->masked, sh->N);
    poa_heads_forward(heads, t->teacher_heads, input);
    /* Over several ranks the targets are over the global batch, and every rank joins the
       patch targets' collectives while iBOT is on, also with no masked token of its own. */
    const int many = t->dist && t->dist->world_size > 1;
    for (int h = 0; h < t->heads.config.heads; h++) {
        const long K = t->heads.config.prototypes[h];
        if (poa_sinkhorn_knopp_global(tg->cls[h], heads->logits[h], sh->G * sh->B, K, temp,
                                      t->config.sinkhorn_iterations, t->dist, e))
            return -1;
        if ((sh->masked || (many && ibot_active)) &&
            poa_sinkhorn_knopp_global(tg->patch[h], heads->logits[h] + sh->G * sh->B * K, sh->masked,
                                      K, temp, t->config.sinkhorn_iterations, t->dist, e))
            return -1;
    }
    poa_diagnose_targets(diag, tg->cls[0], heads->logits[0], sh->G * sh->B, t->heads.config.prototypes[0], temp);
    const long step = t->step + 1; /* the step this micro-batch makes */
    if (step == 1 || step % POA_DIAGNOSE_EVERY == 0) poa_diagnose_features(diag, input, sh->G * sh->B, vc->max_width);
    return 0;
}

/* Forward of one student branch: backbone on the global (masked if iBOT) and local crops,
   then the heads on [local CLS; global CLS; masked patches]. */
static int branch_forward(poa_trainer *t, int index, branch *x, const poa_batch *mb,
                          const crops *crops, const shapes *sh, uint64_t stream, poa_error *e) {
    const long D = x->width, rows = sh->L * sh->B + sh->G * sh->B + sh->masked;
    x->global = &t->student_global[index], x->local = &t->student_local[index];
    x->heads = &t->student_heads_pass[index];
    if (poa_vit_pass_prepare(x->global, &t->model, x->width, x->depth, sh->G * sh->B, sh->S, e) ||
        poa_vit_pass_prepare(x->local, &t->model, x->width, x->depth, sh->L * sh->B, sh->s, e) ||
        poa_heads_pass_prepare(x->heads, &t->heads, x->width, rows, e))
        return -1;
    poa_branch_work *w = &t->branch_work[index];
    const long drop_count = x->depth * 2L * (sh->G > sh->L ? sh->G : sh->L) * sh->B;
    int failed = 0;
    x->drop_global = poa_trainer_drop_path(t, index, 0, poa_work_buffer_get(&w->drop_global, drop_count),
                                           x->depth, sh->G * sh->B, stream, &failed);
    x->drop_local = poa_trainer_drop_path(t, index, 1, poa_work_buffer_get(&w->drop_local, drop_count),
                                          x->depth, sh->L * sh->B, stream + 4096, &failed);
    x->features = poa_work_buffer_get(&w->features, rows * D);
    x->dfeatures = poa_work_buffer_get(&w->dfeatures, rows * D);
    x->dout_global = work_zeros(&w->dout_global, x->global->rows * D);
    x->dout_local = work_zeros(&w->dout_local, x->local->rows * D);
    failed = failed || !x->features || !x->dfeatures || !x->dout_global || !x->dout_local;
    for (int h = 0; h < t->heads.config.heads && !failed; h++) {
        x->dlogits[h] = work_zeros(&w->dlogits[h], rows * t->heads.config.prototypes[h]);
        failed = !x->dlogits[h];
    }
    if (failed) return poa_fail(e, "member %ldx%d: out of memory for the branch's buffers", D, x->depth);
    poa_vit_forward(x->global, t->student, crops->global, sh->masked ? mb->masks.masks : NULL,
                    x->drop_global);
    poa_vit_forward(x->local, t->student, crops->local, NULL, x->drop_local);
    gather_rows(x->features, x->local, NULL, 0, sh->N);
    gather_rows(x->features + sh->L * sh->B * D, x->global, NULL, 0, sh->N);
    gather_rows(x->features + (sh->L + sh->G) * sh->B * D, x->global, mb->masks.indices,
                sh->masked, sh->N);
    poa_heads_forward(x->heads, t->student_heads, x->features);
    return 0;
}

/* KoLeo of call's B rows of the head input (one global crop's CLS features): its raw value;
   its gradient times call->factor accumulates into x->dout_global (and its squared norm into
   *koleo_sq). */
static double koleo_call(poa_trainer *t, branch *x, const poa_loss_call *call, const shapes *sh,
                         double *koleo_sq) {
    const long B = call->rows, D = x->width, first = call->row - sh->L * sh->B; /* a global row */
    real *f = t->koleo_features.data, *df = t->koleo_grads.data;
    memcpy(f, x->features + call->row * D, sizeof(real) * (size_t)(B * D));
    memset(df, 0, sizeof(real) * (size_t)(B * D));
    const double raw = poa_koleo(f, B, D, call->factor, df) / call->factor;
    *koleo_sq += poa_sum_of_squares(df, B * D);
    for (long b = 0; b < B; b++)
        for (long i = 0; i < D; i++) x->dout_global[((first + b) * x->global->tokens) * D + i] += df[b * D + i];
    return raw;
}

/* The loss calls of branch `index` (runtime/loss_plan.h: reference §3.5), each call's raw
   value into st->calls and its weighted value into st's terms, for a micro-batch of `scale`
   (1 / micro-batches); their gradients accumulate into x->dlogits and, for KoLeo, into
   x->dout_global. intact is the intact branch when x is the elastic one (the same-view
   targets), else NULL. The scratch buffers are the trainer's (distill_targets, ibot_weights,
   koleo_*), sized by losses_prepare. */
static int branch_losses(poa_trainer *t, int index, branch *x, const branch *intact, const targets *tg,
                         const poa_batch *mb, const shapes *sh, double scale, poa_step_stats *st, poa_error *e) {
    const poa_train_config *c = &t->config;
    const poa_loss_shape shape = { sh->B, sh->G, sh->L, sh->masked };
    const int capacity = poa_loss_plan_capacity(c, &shape);
    poa_loss_call *calls = malloc(sizeof *calls * (size_t)capacity);
    if (!calls) return poa_fail(e, "losses: out of memory for %d calls", capacity);
    const int count = poa_loss_plan(c, index, x->weight, &shape, scale, calls, capacity);
    double *terms[POA_LOSS_TERMS] = { &st->dino, &st->distill, &st->koleo, &st->ibot };
    double *slots = (double *)&st->calls; /* a struct of doubles only */
    real *weights = t->ibot_weights.data;
    for (long i = 0; i < sh->masked; i++) weights[i] = mb->masks.weights[i];
    int distill_head = -1;
    for (int i = 0; i < count; i++) {
        const poa_loss_call *call = &calls[i];
        const int h = call->head;
        double raw;
        if (call->term == POA_LOSS_KOLEO) {
            raw = koleo_call(t, x, call, sh, &st->diag.dout_koleo_sq[index]);
        } else {
            const long K = t->heads.config.prototypes[h];
            if (call->targets == POA_TARGETS_DISTILL && distill_head != h) {
                poa_softmax_rows(t->distill_targets.data, intact->heads->logits[h], (sh->L + sh->G) * sh->B, K,
                                 c->distill_temp);
                distill_head = h;
            }
            const real *P = call->targets == POA_TARGETS_TEACHER_CLS     ? tg->cls[h]
                            : call->targets == POA_TARGETS_TEACHER_PATCH ? tg->patch[h]
                                                                         : t->distill_targets.data;
            raw = poa_soft_cross_entropy(P + call->target_row * K, x->heads->logits[h] + call->row * K, call->rows, K,
                                         c->student_temp, call->token_weights ? weights : NULL,
                                         call->factor / call->norm, x->dlogits[h] + call->row * K) /
                  call->factor;
        }
        *terms[call->term] += call->factor * raw;
        if (call->slot >= 0) slots[call->slot] += call->slot_scale * raw;
    }
    free(calls);
    return 0;
}

/* Sizes the loss scratch of branch_losses for this micro-batch (the widest member). */
static int losses_prepare(poa_trainer *t, const shapes *sh, poa_error *e) {
    long kmax = 0;
    for (int h = 0; h < t->heads.config.heads; h++)
        kmax = t->heads.config.prototypes[h] > kmax ? t->heads.config.prototypes[h] : kmax;
    const long D = t->model.config.max_width;
    if (!poa_work_buffer_get(&t->distill_targets, (sh->L + sh->G) * sh->B * kmax) ||
        !poa_work_buffer_get(&t->ibot_weights, sh->masked) ||
        !poa_work_buffer_get(&t->koleo_features, sh->B * D) ||
        !poa_work_buffer_get(&t->koleo_grads, sh->B * D))
        return poa_fail(e, "losses: out of memory for %ld rows of %ld prototypes",
                        (sh->L + sh->G) * sh->B, kmax);
    return 0;
}

/* Heads backward, then the backbone backward of both crop batches; the squared norm of what
   the heads send the backbone adds into *heads_sq. */
static void branch_backward(poa_trainer *t, branch *x, const poa_batch *mb, const shapes *sh,
                            double *heads_sq) {
    const long D = x->width, local_rows = sh->L * sh->B;
    real *dout_global = x->dout_global, *dout_local = x->dout_local;
    poa_heads_backward(x->heads, t->student_heads, t->grads_heads, x->dlogits, x->dfeatures);
    *heads_sq += poa_sum_of_squares(x->dfeatures, (local_rows + sh->G * sh->B + sh->masked) * D);
    scatter_rows(dout_local, x->local, x->dfeatures, NULL, 0, sh->N);
    scatter_rows(dout_global, x->global, x->dfeatures + local_rows * D, NULL, 0, sh->N);
    scatter_rows(dout_global, x->global, x->dfeatures + (local_rows + sh->G * sh->B) * D,
                 mb->masks.indices, sh->masked, sh->N);
    poa_vit_backward(x->global, t->student, t->grads, dout_global);
    poa_vit_backward(x->local, t->student, t->grads, dout_local);
}

/* One micro-batch: teacher targets, the intact branch, the elastic branch. */
static int micro_batch(poa_trainer *t, const poa_batch *mb, int micro, double scale,
                       poa_step_stats *st, poa_error *e) {
    const poa_train_config *c = &t->config;
    const poa_vit_config *vc = &t->model.config;
    shapes sh = { mb->batch_size, mb->global_count, mb->local_count, mb->global_size,
                  mb->local_size, (long)(mb->global_size / vc->patch_size) * (mb->global_size / vc->patch_size),
                  st->ibot_active ? mb->masks.masked : 0 };
    crops cr;
    crops_of(&cr, mb, &sh);
    targets tg = { { 0 }, { 0 } };
    branch x[2];
    memset(x, 0, sizeof x);
    int branches = c->elastic ? 2 : 1, rc = 0;
    rc = losses_prepare(t, &sh, e);
    if (rc == 0) rc = teacher_targets(t, mb, &cr, &sh, st->teacher_temp, st->ibot_active, &tg, &st->diag, e);
    x[0].width = vc->max_width, x[0].depth = vc->max_depth;
    x[0].weight = c->elastic ? c->lambda : 1.0;
    if (branches == 2) {
        if (micro == 0 || !c->draw_per_step) poa_trainer_next_member(t, &st->width, &st->depth);
        x[1].width = st->width, x[1].depth = st->depth, x[1].weight = 1 - c->lambda;
    }
    const uint64_t stream = ((uint64_t)t->step * 64 + (uint64_t)micro) << 16;
    for (int b = 0; b < branches && rc == 0; b++) {
        rc = branch_forward(t, b, &x[b], mb, &cr, &sh, stream + (uint64_t)b * 8192, e);
        if (rc) break;
        rc = branch_losses(t, b, &x[b], b ? &x[0] : NULL, &tg, mb, &sh, scale, st, e);
        if (rc) break;
        branch_backward(t, &x[b], mb, &sh, &st->diag.dout_heads_sq[b]);
    }
    free(cr.owned[0]), free(cr.owned[1]);
    return rc;
}

void poa_trainer_begin_step(poa_trainer *t) {
    poa_step_stats *st = &t->current;
    memset(st, 0, sizeof *st);
    st->teacher_temp = poa_cosine_value(&t->teacher_temp, poa_trainer_iteration(t));
    st->ibot_active = poa_trainer_iteration(t) >= t->ibot_start_step;
    st->width = t->model.config.max_width, st->depth = t->model.config.max_depth;
}

int poa_trainer_micro_batch(poa_trainer *t, const poa_batch *batch, int micro, poa_error *e) {
    return micro_batch(t, batch, micro, 1.0 / t->config.accumulate, &t->current, e);
}

void poa_trainer_end_step(poa_trainer *t) {
    poa_step_stats *st = &t->current;
    st->loss = st->dino + st->distill + st->koleo + st->ibot;
    poa_trainer_apply(t, st);
    t->last = *st;
}
