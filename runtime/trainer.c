/* trainer.c: training state, schedules, the optimizer update and the teacher EMA. */
#include "trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "random.h"

static real *zeros(long n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(real)); }

int poa_trainer_init(poa_trainer *t, poa_train_config *c, poa_error *e) {
    memset(t, 0, sizeof *t);
    t->config = *c;
    memset(c, 0, sizeof *c); /* the trainer owns the slot arrays now */
    c = &t->config;
    if (poa_vit_init(&t->model, &c->recipe.vit, e)) return -1;
    if (poa_heads_init(&t->heads, &c->heads, e)) return -1;
    const long n = t->model.parameter_count, nh = t->heads.parameter_count;
    t->student = zeros(n), t->teacher = zeros(n), t->grads = zeros(n);
    t->adam_m = zeros(n), t->adam_v = zeros(n);
    t->student_heads = zeros(nh), t->teacher_heads = zeros(nh), t->grads_heads = zeros(nh);
    t->adam_m_heads = zeros(nh), t->adam_v_heads = zeros(nh);
    t->groups = calloc((size_t)t->model.tensor_count, sizeof *t->groups);
    t->groups_heads = calloc((size_t)t->heads.tensor_count, sizeof *t->groups_heads);
    t->rates = malloc(sizeof(double) * 2 * (size_t)(t->model.tensor_count + t->heads.tensor_count));
    if (!t->rates || !t->student || !t->teacher || !t->grads || !t->adam_m || !t->adam_v ||
        !t->student_heads || !t->teacher_heads || !t->grads_heads || !t->adam_m_heads ||
        !t->adam_v_heads || !t->groups || !t->groups_heads)
        return poa_fail(e, "out of memory for %ld + %ld parameters", n, nh);
    poa_vit_init_parameters(&t->model, t->student, c->seed);
    poa_heads_init_parameters(&t->heads, t->student_heads, c->seed + 1);
    memcpy(t->teacher, t->student, sizeof(real) * (size_t)n);
    memcpy(t->teacher_heads, t->student_heads, sizeof(real) * (size_t)nh);
    poa_vit_param_groups(&t->model, c->layerwise_decay, c->patch_embed_lr_mult, t->groups);
    poa_heads_param_groups(&t->heads, t->groups_heads);

    /* Schedules (reference §5.3), in optimizer steps; the lr scales with the global batch. */
    const double epoch = c->official_epoch_length;
    const double global_batch = (double)c->batch_size * c->accumulate * (c->world_size > 0 ? c->world_size : 1);
    t->total_steps = (long)(c->epochs * epoch);
    double peak = c->base_lr * (c->lr_sqrt_rule ? sqrt(global_batch / 1024.0) : 1.0);
    t->lr = (poa_cosine_schedule){ peak, c->min_lr, t->total_steps,
                                   (long)(c->warmup_epochs * epoch), 0, c->iter_num_scale };
    t->weight_decay = (poa_cosine_schedule){ c->weight_decay, c->weight_decay_end, t->total_steps,
                                             0, 0, c->iter_num_scale };
    t->momentum = (poa_cosine_schedule){ c->momentum, c->final_momentum, t->total_steps, 0, 0,
                                         c->iter_num_scale };
    t->teacher_temp = (poa_cosine_schedule){ c->temp, c->temp, t->total_steps,
                                             (long)(c->warmup_temp_epochs * epoch),
                                             c->warmup_temp, c->iter_num_scale };
    t->freeze_last_layer_steps = (long)(c->freeze_last_layer_epochs * epoch);
    t->ibot_start_step = (long)(c->ibot_activate_epochs * epoch);
    return 0;
}

int poa_trainer_init_from(poa_trainer *t, const char *path, poa_error *e) {
    const long n = t->model.parameter_count, nh = t->heads.parameter_count;
    /* into the teacher's buffers first, so that a failure leaves the student as it was */
    if (poa_vit_load_parameters(&t->model, t->teacher, path, NULL, e) ||
        poa_heads_load_parameters(&t->heads, t->teacher_heads, path, "dino_head.", e)) {
        memcpy(t->teacher, t->student, sizeof(real) * (size_t)n);
        memcpy(t->teacher_heads, t->student_heads, sizeof(real) * (size_t)nh);
        return -1;
    }
    memcpy(t->student, t->teacher, sizeof(real) * (size_t)n);
    memcpy(t->student_heads, t->teacher_heads, sizeof(real) * (size_t)nh);
    return 0;
}

void poa_trainer_free(poa_trainer *t) {
    real *buffers[] = { t->student, t->teacher, t->grads, t->adam_m, t->adam_v,
                        t->student_heads, t->teacher_heads, t->grads_heads, t->adam_m_heads,
                        t->adam_v_heads };
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++) free(buffers[i]);
    free(t->groups);
    free(t->groups_heads);
    free(t->rates);
    poa_vit_pass_free(&t->teacher_pass);
    poa_heads_pass_free(&t->teacher_heads_pass);
    for (int b = 0; b < 2; b++) {
        poa_vit_pass_free(&t->student_global[b]);
        poa_vit_pass_free(&t->student_local[b]);
        poa_heads_pass_free(&t->student_heads_pass[b]);
    }
    poa_work_buffer *work[] = { &t->teacher_input, &t->distill_targets, &t->ibot_weights,
                                &t->koleo_features, &t->koleo_grads };
    for (size_t i = 0; i < sizeof work / sizeof work[0]; i++) poa_work_buffer_free(work[i]);
    for (int h = 0; h < POA_MAX_HEADS; h++) {
        poa_work_buffer_free(&t->targets_cls[h]);
        poa_work_buffer_free(&t->targets_patch[h]);
    }
    for (int b = 0; b < 2; b++) {
        poa_branch_work *w = &t->branch_work[b];
        poa_work_buffer *branch[] = { &w->features, &w->dfeatures, &w->dout_global,
                                      &w->dout_local, &w->drop_global, &w->drop_local };
        for (size_t i = 0; i < sizeof branch / sizeof branch[0]; i++) poa_work_buffer_free(branch[i]);
        for (int h = 0; h < POA_MAX_HEADS; h++) poa_work_buffer_free(&w->dlogits[h]);
    }
    poa_vit_free(&t->model);
    poa_heads_free(&t->heads);
    poa_train_config_free(&t->config);
    memset(t, 0, sizeof *t);
}

real *poa_work_buffer_get(poa_work_buffer *b, long n) {
    if (n < 1) n = 1;
    if (b->capacity < n) {
        free(b->data);
        b->data = malloc(sizeof(real) * (size_t)n);
        b->capacity = b->data ? n : 0;
    }
    return b->data;
}

void poa_work_buffer_free(poa_work_buffer *b) {
    free(b->data);
    b->data = NULL;
    b->capacity = 0;
}

/* Slot `draw % slots` of the cycle `draw / slots`: each cycle is a fresh Fisher-Yates
   shuffle of the replicated slots keyed by (seed, rank, cycle), so every cycle trains each
   member exactly its replica count, ranks draw independently (reference §3.2), and the
   state is the draw counter alone. */
void poa_trainer_next_member(poa_trainer *t, int *width, int *depth) {
    const poa_train_config *c = &t->config;
    if (t->forced_width > 0) {
        *width = t->forced_width, *depth = t->forced_depth;
        t->draws++;
        return;
    }
    const long n = c->slot_count, cycle = t->draws / n, at = t->draws % n;
    int *order = malloc(sizeof(int) * (size_t)n);
    for (long i = 0; i < n; i++) order[i] = (int)i;
    for (long i = n - 1; i > 0; i--) {
        long j = (long)(poa_uniform(c->seed, 0x5a3c1e00ull + ((uint64_t)c->rank << 40) + (uint64_t)cycle,
                                    (uint64_t)i) * (i + 1));
        int tmp = order[i];
        order[i] = order[j], order[j] = tmp;
    }
    *width = c->slot_width[order[at]];
    *depth = c->slot_depth[order[at]];
    free(order);
    t->draws++;
}

long poa_trainer_iteration(const poa_trainer *t) { return t->step + t->schedule_offset; }

void poa_trainer_update_rates(const poa_trainer *t, poa_step_stats *s, double *lr, double *wd) {
    const long it = poa_trainer_iteration(t);
    s->lr = poa_cosine_value(&t->lr, it);
    s->weight_decay = poa_cosine_value(&t->weight_decay, it);
    s->momentum = poa_cosine_value(&t->momentum, it);
    const double lr_last = it < t->freeze_last_layer_steps ? 0 : s->lr;
    for (int i = 0; i < t->model.tensor_count + t->heads.tensor_count; i++) {
        const int heads = i >= t->model.tensor_count;
        const poa_param_group *group = heads ? &t->groups_heads[i - t->model.tensor_count] : &t->groups[i];
        lr[i] = (group->last_layer ? lr_last : s->lr) * group->lr_mult;
        wd[i] = s->weight_decay * group->wd_mult;
    }
}

/* A host all-reduce (sum) of `real` values: float, or double in the fp64 build. */
static int all_reduce_real(poa_dist *d, real *x, long n, poa_error *e) {
#ifdef POA_FP64
    return poa_dist_all_reduce_double(d, x, n, POA_DIST_SUM, e);
#else
    return poa_dist_all_reduce_float(d, x, n, POA_DIST_SUM, e);
#endif
}

/* Gradients and loss terms: the sum over ranks, divided by the world size (the mean of the
   per-rank means is the mean over the global batch when every rank has B images). */
int poa_trainer_reduce_step(poa_trainer *t, poa_error *e) {
    poa_dist *d = t->dist;
    if (!d || d->world_size <= 1) return 0;
    const long n = t->model.parameter_count, nh = t->heads.parameter_count;
    if (all_reduce_real(d, t->grads, n, e) || all_reduce_real(d, t->grads_heads, nh, e)) return -1;
    const real inverse = (real)(1.0 / d->world_size);
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) t->grads[i] *= inverse;
    for (long i = 0; i < nh; i++) t->grads_heads[i] *= inverse;
    poa_step_stats *s = &t->current;
    double terms[4] = { s->dino, s->distill, s->koleo, s->ibot };
    double *calls = (double *)&s->calls; /* a struct of doubles only */
    const long call_count = (long)(sizeof s->calls / sizeof(double));
    if (poa_dist_all_reduce_double(d, terms, 4, POA_DIST_SUM, e) ||
        poa_dist_all_reduce_double(d, calls, call_count, POA_DIST_SUM, e))
        return -1;
    s->dino = terms[0] / d->world_size, s->distill = terms[1] / d->world_size;
    s->koleo = terms[2] / d->world_size, s->ibot = terms[3] / d->world_size;
    for (long i = 0; i < call_count; i++) calls[i] /= d->world_size;
    return 0;
}

int poa_trainer_sync(poa_trainer *t, poa_error *e) {
    poa_dist *d = t->dist;
    if (!d || d->world_size <= 1) return 0;
    long counters[2] = { t->step, t->draws }, ours[2] = { t->step, t->draws };
    if (poa_dist_broadcast(d, counters, sizeof counters, e)) return -1;
    if (counters[0] != ours[0] || counters[1] != ours[1])
        return poa_fail(e, "rank %d is at step %ld (draw %ld) but rank 0 at step %ld (draw %ld): "
                           "every rank must resume from the same checkpoint",
                        d->rank, ours[0], ours[1], counters[0], counters[1]);
    const long n = t->model.parameter_count, nh = t->heads.parameter_count;
    real *buffers[] = { t->student, t->teacher, t->adam_m, t->adam_v,
                        t->student_heads, t->teacher_heads, t->adam_m_heads, t->adam_v_heads };
    for (int i = 0; i < 8; i++)
        if (poa_dist_broadcast(d, buffers[i], sizeof(real) * (size_t)(i < 4 ? n : nh), e)) return -1;
    return 0;
}
