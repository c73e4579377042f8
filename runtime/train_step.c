/* train_step.c: the tri-branch step (see train_step.h), written once; a backend supplies its
   primitives. One micro-batch (reference §3-§4): the teacher's targets, then the intact and the
   elastic student, each its forward, every loss term of §3.5 and its backward into the one
   gradient buffer; poa_step_end adds the update. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "random.h"
#include "train_step.h"

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

/* The teacher (the intact network in eval mode) on the global crops, its heads on [CLS;
   masked patches], then each head's Sinkhorn-Knopp targets at the scheduled temperature. */
static int teacher_targets(poa_trainer *t, const poa_step_ops *ops, void *self, const poa_step_shapes *sh,
                           poa_error *e) {
    const poa_vit_config *vc = &t->model.config;
    const long GB = sh->G * sh->B;
    const double temp = t->current.teacher_temp;
    /* over several ranks every rank joins the patch targets' collectives while iBOT is on,
       also with no masked token of its own */
    const int patches = sh->masked || (t->dist && t->dist->world_size > 1 && t->current.ibot_active);
    if (ops->prepare(self, POA_STEP_TEACHER, vc->max_width, vc->max_depth, GB + sh->masked, e) ||
        ops->forward(self, POA_STEP_TEACHER, POA_CROPS_GLOBAL, NULL, NULL, e) ||
        ops->rows(self, POA_STEP_TEACHER, POA_CROPS_GLOBAL, 0, 0, 0, e) ||
        ops->rows(self, POA_STEP_TEACHER, POA_CROPS_GLOBAL, GB, 1, 0, e) ||
        ops->heads_forward(self, POA_STEP_TEACHER, e))
        return -1;
    for (int h = 0; h < t->heads.config.heads; h++)
        if (ops->sinkhorn(self, h, 0, 0, GB, temp, e) ||
            (patches && ops->sinkhorn(self, h, 1, GB, sh->masked, temp, e)))
            return -1;
    return 0;
}

/* Forward of a student branch: its stochastic-depth draws, the backbone on the global (masked
   when iBOT is on) and the local crops, the heads on [local CLS; global CLS; masked patches]. */
static int branch_forward(poa_trainer *t, const poa_step_ops *ops, void *self, int index, int width, int depth,
                          const poa_batch *mb, const poa_step_shapes *sh, uint64_t stream, poa_error *e) {
    poa_branch_work *w = &t->branch_work[index];
    const long GB = sh->G * sh->B, LB = sh->L * sh->B;
    const long drop_count = depth * 2L * (sh->G > sh->L ? sh->G : sh->L) * sh->B;
    int failed = 0;
    const real *drop_global = poa_trainer_drop_path(t, index, 0, poa_work_buffer_get(&w->drop_global, drop_count),
                                                    depth, GB, stream, &failed);
    const real *drop_local = poa_trainer_drop_path(t, index, 1, poa_work_buffer_get(&w->drop_local, drop_count),
                                                   depth, LB, stream + 4096, &failed);
    if (failed) return poa_fail(e, "member %dx%d: out of memory for the drop-path draws", width, depth);
    return ops->prepare(self, index, width, depth, LB + GB + sh->masked, e) ||
                   ops->forward(self, index, POA_CROPS_GLOBAL, sh->masked ? mb->masks.masks : NULL, drop_global, e) ||
                   (LB && ops->forward(self, index, POA_CROPS_LOCAL, NULL, drop_local, e)) ||
                   (LB && ops->rows(self, index, POA_CROPS_LOCAL, 0, 0, 0, e)) ||
                   ops->rows(self, index, POA_CROPS_GLOBAL, LB, 0, 0, e) ||
                   ops->rows(self, index, POA_CROPS_GLOBAL, LB + GB, 1, 0, e) || ops->heads_forward(self, index, e)
               ? -1
               : 0;
}

/* The loss calls of branch `index` (loss_plan.h: the terms, weights, rows and summation order
   of reference §3.5) for a micro-batch of `scale` (1 / micro-batches); the distillation
   targets of a head are made once, before its first call. */
static int branch_losses(poa_trainer *t, const poa_step_ops *ops, void *self, int index, double weight,
                         const poa_step_shapes *sh, double scale, poa_error *e) {
    const poa_loss_shape shape = { sh->B, sh->G, sh->L, sh->masked };
    const int capacity = poa_loss_plan_capacity(&t->config, &shape);
    poa_loss_call *calls = malloc(sizeof *calls * (size_t)capacity);
    if (!calls) return poa_fail(e, "losses: out of memory for %d calls", capacity);
    const int count = poa_loss_plan(&t->config, index, weight, &shape, scale, calls, capacity);
    int rc = 0, distill_head = -1;
    for (int i = 0; i < count && !rc; i++) {
        const poa_loss_call *call = &calls[i];
        const int distill = call->term != POA_LOSS_KOLEO && call->targets == POA_TARGETS_DISTILL &&
                            distill_head != call->head;
        if (distill) distill_head = call->head;
        rc = call->term == POA_LOSS_KOLEO ? ops->koleo(self, index, call, e)
                                          : ops->cross_entropy(self, index, call, distill, e);
    }
    free(calls);
    return rc;
}

/* Heads backward, the head-input gradients into the backbones' output gradients (the
   transpose of branch_forward's rows), the backbones' backward: global, then local crops. */
static int branch_backward(const poa_step_ops *ops, void *self, int index, const poa_step_shapes *sh,
                           poa_error *e) {
    const long GB = sh->G * sh->B, LB = sh->L * sh->B;
    return ops->heads_backward(self, index, e) || (LB && ops->rows(self, index, POA_CROPS_LOCAL, 0, 0, 1, e)) ||
                   ops->rows(self, index, POA_CROPS_GLOBAL, LB, 0, 1, e) ||
                   ops->rows(self, index, POA_CROPS_GLOBAL, LB + GB, 1, 1, e) ||
                   ops->backward(self, index, POA_CROPS_GLOBAL, e) ||
                   (LB && ops->backward(self, index, POA_CROPS_LOCAL, e))
               ? -1
               : 0;
}

int poa_step_micro_batch(poa_trainer *t, const poa_step_ops *ops, void *self, const poa_batch *mb, int micro,
                         poa_error *e) {
    const poa_train_config *c = &t->config;
    const poa_vit_config *vc = &t->model.config;
    poa_step_stats *st = &t->current;
    const long grid = mb->global_size / vc->patch_size;
    const poa_step_shapes sh = { mb->batch_size, mb->global_count, mb->local_count, mb->global_size, mb->local_size,
                                 grid * grid, st->ibot_active ? mb->masks.masked : 0 };
    int rc = ops->begin(self, mb, &sh, micro, e);
    if (!rc) rc = teacher_targets(t, ops, self, &sh, e);
    /* the intact branch, then the elastic one (a member drawn per micro-batch, or per step) */
    const int branches = c->elastic ? 2 : 1;
    if (!rc && branches == 2 && (micro == 0 || !c->draw_per_step)) poa_trainer_next_member(t, &st->width, &st->depth);
    const uint64_t stream = ((uint64_t)t->step * 64 + (uint64_t)micro) << 16;
    for (int b = 0; b < branches && !rc; b++) {
        const int width = b ? st->width : vc->max_width, depth = b ? st->depth : vc->max_depth;
        const double weight = b ? 1 - c->lambda : c->elastic ? c->lambda : 1.0;
        rc = branch_forward(t, ops, self, b, width, depth, mb, &sh, stream + (uint64_t)b * 8192, e) ||
                     branch_losses(t, ops, self, b, weight, &sh, 1.0 / c->accumulate, e) ||
                     branch_backward(ops, self, b, &sh, e)
                 ? -1
                 : 0;
    }
    return ops->end(self, rc, e);
}

int poa_step_end(poa_trainer *t, const poa_step_ops *ops, void *self, poa_error *e) {
    poa_step_stats *s = &t->current;
    if (ops->read_step && ops->read_step(self, s, e)) return -1;
    s->loss = s->dino + s->distill + s->koleo + s->ibot;
    double *lr = t->rates, *wd = t->rates + t->model.tensor_count + t->heads.tensor_count;
    poa_trainer_update_rates(t, s, lr, wd);
    s->skipped = isnan(s->loss) || isinf(s->loss);
    if (ops->update(self, s, lr, wd, e)) return -1;
    t->step++;
    t->last = *s;
    return 0;
}

void poa_trainer_begin_step(poa_trainer *t) {
    poa_step_stats *st = &t->current;
    memset(st, 0, sizeof *st);
    st->teacher_temp = poa_cosine_value(&t->teacher_temp, poa_trainer_iteration(t));
    st->ibot_active = poa_trainer_iteration(t) >= t->ibot_start_step;
    st->width = t->model.config.max_width, st->depth = t->model.config.max_depth;
}
