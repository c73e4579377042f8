/* train_cpu.c: the CPU backend of the tri-branch step (train_step.h): the trainer's passes
   (runtime/vit.c, head.c: OpenBLAS + generated C) and work buffers, the losses of runtime/loss.c,
   the optimizer of optim.c; and poa_trainer_micro_batch / end_step, which run the step on it. */
#include <stdlib.h>
#include <string.h>

#include "loss.h"
#include "train_step.h"

/* The step's state on the CPU: the trainer (its passes and work buffers) and the micro-batch. */
typedef struct cpu_step {
    poa_trainer *t;
    const poa_batch *mb;
    poa_step_shapes sh;
    const real *crops[2];   /* global, local: the loader's floats (the fp64 build: a copy) */
    real *owned[2];
} cpu_step;

static poa_vit_pass *pass_of(cpu_step *c, int branch, int crops) {
    if (branch == POA_STEP_TEACHER) return &c->t->teacher_pass;
    return crops == POA_CROPS_LOCAL ? &c->t->student_local[branch] : &c->t->student_global[branch];
}

static poa_heads_pass *heads_of(cpu_step *c, int branch) {
    return branch == POA_STEP_TEACHER ? &c->t->teacher_heads_pass : &c->t->student_heads_pass[branch];
}

/* The head input of a branch (rows x width). */
static real *input_of(cpu_step *c, int branch) {
    return branch == POA_STEP_TEACHER ? c->t->teacher_input.data : c->t->branch_work[branch].features.data;
}

/* d(backbone output) of a student's pass. */
static real *dout_of(cpu_step *c, int branch, int crops) {
    poa_branch_work *w = &c->t->branch_work[branch];
    return crops == POA_CROPS_LOCAL ? w->dout_local.data : w->dout_global.data;
}

/* Head-input rows from a pass's output: its CLS rows (indices NULL), or the masked patch rows
   indices[0..count) (image * patches + patch); back: the transpose, adding head-input gradient
   rows into d(output). */
static void move_rows(real *rows, const poa_vit_pass *p, real *out, const int *indices, long count, long patches,
                      int back) {
    const long D = p->width;
    if (!indices) count = p->batch;
    for (long r = 0; r < count; r++) {
        const long token = indices ? (indices[r] / patches) * p->tokens + 1 + indices[r] % patches : r * p->tokens;
        real *x = out + token * D, *y = rows + r * D;
        if (!back) memcpy(y, x, sizeof(real) * (size_t)D);
        else
            for (long i = 0; i < D; i++) x[i] += y[i];
    }
}

static int cpu_begin(void *self, const poa_batch *mb, const poa_step_shapes *sh, int micro, poa_error *e) {
    cpu_step *c = self;
    poa_trainer *t = c->t;
    (void)micro; /* the loss terms accumulate in t->current, zeroed by poa_trainer_begin_step */
    c->mb = mb, c->sh = *sh;
    const float *src[2] = { mb->global_crops, mb->local_crops };
    const long n[2] = { sh->G * sh->B * 3L * sh->S * sh->S, sh->L * sh->B * 3L * sh->s * sh->s };
    for (int i = 0; i < 2; i++) {
#ifdef POA_FP64
        c->owned[i] = malloc(sizeof(real) * (size_t)(n[i] > 0 ? n[i] : 1));
        if (!c->owned[i]) return poa_fail(e, "step: out of memory for the crops");
        for (long j = 0; j < n[i]; j++) c->owned[i][j] = src[i][j];
        c->crops[i] = c->owned[i];
#else
        (void)n;
        c->crops[i] = src[i];
#endif
    }
    /* the loss scratch, sized for the widest member */
    long kmax = 0;
    for (int h = 0; h < t->heads.config.heads; h++)
        kmax = t->heads.config.prototypes[h] > kmax ? t->heads.config.prototypes[h] : kmax;
    const long D = t->model.config.max_width;
    if (!poa_work_buffer_get(&t->distill_targets, (sh->L + sh->G) * sh->B * kmax) ||
        !poa_work_buffer_get(&t->ibot_weights, sh->masked) || !poa_work_buffer_get(&t->koleo_features, sh->B * D) ||
        !poa_work_buffer_get(&t->koleo_grads, sh->B * D))
        return poa_fail(e, "losses: out of memory for %ld rows of %ld prototypes", (sh->L + sh->G) * sh->B, kmax);
    for (long i = 0; i < sh->masked; i++) t->ibot_weights.data[i] = mb->masks.weights[i];
    return 0;
}

static int cpu_end(void *self, int rc, poa_error *e) {
    cpu_step *c = self;
    (void)e;
    free(c->owned[0]), free(c->owned[1]);
    return rc;
}

static int cpu_prepare(void *self, int b, int width, int depth, long rows, poa_error *e) {
    cpu_step *c = self;
    poa_trainer *t = c->t;
    const poa_step_shapes *sh = &c->sh;
    const int H = t->heads.config.heads;
    if (poa_vit_pass_prepare(pass_of(c, b, POA_CROPS_GLOBAL), &t->model, width, depth, sh->G * sh->B, sh->S, e) ||
        (b != POA_STEP_TEACHER &&
         poa_vit_pass_prepare(pass_of(c, b, POA_CROPS_LOCAL), &t->model, width, depth, sh->L * sh->B, sh->s, e)) ||
        poa_heads_pass_prepare(heads_of(c, b), &t->heads, width, rows, e))
        return -1;
    int failed = 0;
    if (b == POA_STEP_TEACHER) {
        failed = !poa_work_buffer_get(&t->teacher_input, rows * width);
        for (int h = 0; h < H; h++) {
            const long K = t->heads.config.prototypes[h];
            failed = failed || !poa_work_buffer_get(&t->targets_cls[h], sh->G * sh->B * K) ||
                     !poa_work_buffer_get(&t->targets_patch[h], sh->masked * K);
        }
        return failed ? poa_fail(e, "teacher: out of memory for %ld head rows", rows) : 0;
    }
    poa_branch_work *w = &t->branch_work[b];
    failed = !poa_work_buffer_get(&w->features, rows * width) || !poa_work_buffer_get(&w->dfeatures, rows * width) ||
             !poa_work_buffer_get(&w->dout_global, pass_of(c, b, POA_CROPS_GLOBAL)->rows * width) ||
             !poa_work_buffer_get(&w->dout_local, pass_of(c, b, POA_CROPS_LOCAL)->rows * width);
    for (int h = 0; h < H; h++) failed = failed || !poa_work_buffer_get(&w->dlogits[h], rows * t->heads.config.prototypes[h]);
    return failed ? poa_fail(e, "member %dx%d: out of memory for the branch's buffers", width, depth) : 0;
}

static int cpu_forward(void *self, int b, int crops, const unsigned char *masks, const real *drop, poa_error *e) {
    cpu_step *c = self;
    (void)e;
    poa_vit_forward(pass_of(c, b, crops), b == POA_STEP_TEACHER ? c->t->teacher : c->t->student, c->crops[crops], masks,
                    drop);
    return 0;
}

static int cpu_rows(void *self, int b, int crops, long row, int masked, int back, poa_error *e) {
    cpu_step *c = self;
    (void)e;
    poa_vit_pass *p = pass_of(c, b, crops);
    if (masked && !c->sh.masked) return 0;
    real *rows = (back ? c->t->branch_work[b].dfeatures.data : input_of(c, b)) + row * p->width;
    move_rows(rows, p, back ? dout_of(c, b, crops) : poa_vit_output(p), masked ? c->mb->masks.indices : NULL,
              c->sh.masked, c->sh.N, back);
    return 0;
}

static int cpu_heads_forward(void *self, int b, poa_error *e) {
    cpu_step *c = self;
    poa_trainer *t = c->t;
    (void)e;
    poa_heads_pass *heads = heads_of(c, b);
    poa_heads_forward(heads, b == POA_STEP_TEACHER ? t->teacher_heads : t->student_heads, input_of(c, b));
    if (b == POA_STEP_TEACHER) return 0;
    poa_branch_work *w = &t->branch_work[b];
    for (int h = 0; h < t->heads.config.heads; h++)
        memset(w->dlogits[h].data, 0, sizeof(real) * (size_t)(heads->rows * t->heads.config.prototypes[h]));
    for (int crops = 0; crops < 2; crops++)
        memset(dout_of(c, b, crops), 0, sizeof(real) * (size_t)(pass_of(c, b, crops)->rows * heads->width));
    return 0;
}

static int cpu_sinkhorn(void *self, int h, int patch, long row, long rows, double temp, poa_error *e) {
    cpu_step *c = self;
    poa_trainer *t = c->t;
    const long K = t->heads.config.prototypes[h];
    real *targets = rows ? (patch ? t->targets_patch : t->targets_cls)[h].data : NULL;
    const real *logits = t->teacher_heads_pass.logits[h] + row * K;
    if (poa_sinkhorn_knopp_global(targets, logits, rows, K, temp, t->config.sinkhorn_iterations, t->dist, e)) return -1;
    if (h == 0 && !patch) { /* the step's diagnostics: the first head's CLS targets, the teacher's features */
        poa_step_diagnostics *diag = &t->current.diag;
        const long step = t->step + 1; /* the step this micro-batch makes */
        poa_diagnose_targets(diag, targets, logits, rows, K, temp);
        if (step == 1 || step % POA_DIAGNOSE_EVERY == 0)
            poa_diagnose_features(diag, t->teacher_input.data, rows, t->model.config.max_width);
    }
    return 0;
}

/* A loss call's raw value into the step's term (times its factor) and its raw slot. */
static void add_call(poa_step_stats *st, const poa_loss_call *call, double raw) {
    double *terms[POA_LOSS_TERMS] = { &st->dino, &st->distill, &st->koleo, &st->ibot };
    *terms[call->term] += call->factor * raw;
    if (call->slot >= 0) ((double *)&st->calls)[call->slot] += call->slot_scale * raw; /* a struct of doubles */
}

static int cpu_cross_entropy(void *self, int b, const poa_loss_call *call, int distill, poa_error *e) {
    cpu_step *c = self;
    poa_trainer *t = c->t;
    (void)e;
    const int h = call->head;
    const long K = t->heads.config.prototypes[h];
    if (distill)
        poa_softmax_rows(t->distill_targets.data, t->student_heads_pass[0].logits[h], (c->sh.L + c->sh.G) * c->sh.B, K,
                         t->config.distill_temp);
    const real *P = call->targets == POA_TARGETS_TEACHER_CLS     ? t->targets_cls[h].data
                    : call->targets == POA_TARGETS_TEACHER_PATCH ? t->targets_patch[h].data
                                                                 : t->distill_targets.data;
    const double raw =
        poa_soft_cross_entropy(P + call->target_row * K, t->student_heads_pass[b].logits[h] + call->row * K, call->rows, K,
                               t->config.student_temp, call->token_weights ? t->ibot_weights.data : NULL,
                               call->factor / call->norm, t->branch_work[b].dlogits[h].data + call->row * K) /
        call->factor;
    add_call(&t->current, call, raw);
    return 0;
}

/* KoLeo of the call's B rows of the head input (one global crop's CLS features): its gradient
   times call->factor adds into d(global output) (and its squared norm into the diagnostics). */
static int cpu_koleo(void *self, int b, const poa_loss_call *call, poa_error *e) {
    cpu_step *c = self;
    poa_trainer *t = c->t;
    (void)e;
    const poa_vit_pass *global = pass_of(c, b, POA_CROPS_GLOBAL);
    const long B = call->rows, D = global->width, first = call->row - c->sh.L * c->sh.B; /* a global row */
    real *f = t->koleo_features.data, *df = t->koleo_grads.data, *dout = dout_of(c, b, POA_CROPS_GLOBAL);
    memcpy(f, input_of(c, b) + call->row * D, sizeof(real) * (size_t)(B * D));
    memset(df, 0, sizeof(real) * (size_t)(B * D));
    const double raw = poa_koleo(f, B, D, call->factor, df) / call->factor;
    t->current.diag.dout_koleo_sq[b] += poa_sum_of_squares(df, B * D);
    for (long r = 0; r < B; r++)
        for (long i = 0; i < D; i++) dout[((first + r) * global->tokens) * D + i] += df[r * D + i];
    add_call(&t->current, call, raw);
    return 0;
}

/* The heads' backward; the squared norm of what they send the backbone into the diagnostics. */
static int cpu_heads_backward(void *self, int b, poa_error *e) {
    cpu_step *c = self;
    poa_trainer *t = c->t;
    (void)e;
    poa_heads_pass *heads = heads_of(c, b);
    poa_branch_work *w = &t->branch_work[b];
    real *dlogits[POA_MAX_HEADS];
    for (int h = 0; h < t->heads.config.heads; h++) dlogits[h] = w->dlogits[h].data;
    poa_heads_backward(heads, t->student_heads, t->grads_heads, dlogits, w->dfeatures.data);
    t->current.diag.dout_heads_sq[b] += poa_sum_of_squares(w->dfeatures.data, heads->rows * heads->width);
    return 0;
}

static int cpu_backward(void *self, int b, int crops, poa_error *e) {
    cpu_step *c = self;
    (void)e;
    poa_vit_backward(pass_of(c, b, crops), c->t->student, c->t->grads, dout_of(c, b, crops));
    return 0;
}

/* Unless skipped: clipping per module (measuring the norms), AdamW over every tensor of
   [backbone | heads] at its lr and weight decay, the EMA; then the gradients zeroed. The loss
   terms are already in t->current (no read_step). */
static int cpu_update(void *self, poa_step_stats *s, const double *lr, const double *wd, poa_error *e) {
    poa_trainer *t = ((cpu_step *)self)->t;
    const poa_train_config *c = &t->config;
    const long n = t->model.parameter_count, nh = t->heads.parameter_count;
    (void)e;
    if (!s->skipped) {
        s->grad_norm_backbone = poa_clip_grad_norm(t->grads, n, c->clip_grad);
        s->grad_norm_heads = poa_clip_grad_norm(t->grads_heads, nh, c->clip_grad);
        for (int pass = 0, i = 0; pass < 2; pass++) {
            const poa_vit_tensor *tensors = pass ? t->heads.tensors : t->model.tensors;
            const int count = pass ? t->heads.tensor_count : t->model.tensor_count;
            real *p = pass ? t->student_heads : t->student, *g = pass ? t->grads_heads : t->grads;
            real *m = pass ? t->adam_m_heads : t->adam_m, *v = pass ? t->adam_v_heads : t->adam_v;
            for (int j = 0; j < count; j++, i++) {
                const poa_vit_tensor *x = &tensors[j];
                poa_adamw_update(p + x->offset, g + x->offset, m + x->offset, v + x->offset, x->count, lr[i], wd[i],
                                 c->beta1, c->beta2, c->eps, t->step + 1);
            }
        }
        poa_ema_update(t->teacher, t->student, n, s->momentum);
        poa_ema_update(t->teacher_heads, t->student_heads, nh, s->momentum);
    }
    memset(t->grads, 0, sizeof(real) * (size_t)n);
    memset(t->grads_heads, 0, sizeof(real) * (size_t)nh);
    return 0;
}

static const poa_step_ops cpu_ops = {
    .begin = cpu_begin, .end = cpu_end, .prepare = cpu_prepare, .forward = cpu_forward, .rows = cpu_rows,
    .heads_forward = cpu_heads_forward, .sinkhorn = cpu_sinkhorn, .cross_entropy = cpu_cross_entropy,
    .koleo = cpu_koleo, .heads_backward = cpu_heads_backward, .backward = cpu_backward, .update = cpu_update,
};

/* Before the first step: the training programs of every member the elastic cycle draws (and of
   the intact network), at both crop sizes, built into the process-wide program cache, as the GPU
   step compiles its kernels at start-up. runtime/vit.c would build a member's on its first use
   instead: a cost the run pays once per member (about 30 ms for a small_vit member), but inside
   a step. Stops when the cache is full; the members left are built on first use. */
static int build_programs(poa_trainer *t, poa_error *e) {
    const poa_train_config *c = &t->config;
    const int sizes[2] = { c->recipe.global_crop_size, c->recipe.local_crop_count ? c->recipe.local_crop_size : 0 };
    poa_vit_pass p = { 0 };
    int rc = 0, full = 0;
    /* crop size outermost (the pass's resampling matrix made once per size); a slot that repeats the one
       before it (gen/space.lua groups a member's replicas) is skipped */
    for (int s = 0; s < 2 && sizes[s] && !rc && !full; s++)
        for (int i = -1; i < c->slot_count && !rc && !full; i++) {
            if (i > 0 && c->slot_width[i] == c->slot_width[i - 1] && c->slot_depth[i] == c->slot_depth[i - 1])
                continue;
            rc = poa_vit_pass_prepare(&p, &t->model, i < 0 ? t->model.config.max_width : c->slot_width[i],
                                      i < 0 ? t->model.config.max_depth : c->slot_depth[i], 1, sizes[s], e);
            full = p.fwd.program == &p.fwd.owned || p.bwd.program == &p.bwd.owned;
        }
    poa_vit_pass_free(&p);
    t->programs_built = 1;
    return rc;
}

int poa_trainer_micro_batch(poa_trainer *t, const poa_batch *batch, int micro, poa_error *e) {
    cpu_step c = { .t = t };
    if (!t->programs_built && build_programs(t, e)) return -1;
    return poa_step_micro_batch(t, &cpu_ops, &c, batch, micro, e);
}

void poa_trainer_end_step(poa_trainer *t) {
    cpu_step c = { .t = t };
    poa_error e; /* the CPU's update cannot fail */
    poa_step_end(t, &cpu_ops, &c, &e);
}
