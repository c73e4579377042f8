/* train_step.h: the tri-branch step (reference §3-§4), written once for every backend: which
   branches run on which crops, the teacher's targets, the loss calls (loss_plan.h) with their
   weights and rows, the backward of each branch into the one gradient buffer, and the update's
   order (NaN check, clipping, AdamW, EMA). It knows branches, losses and the optimizer, not
   layers or memory: a backend supplies the primitives below on its own buffers. The CPU's are in
   runtime/train_cpu.c (OpenBLAS + generated C), the GPU's in runtime/cuda_train.c (cuBLASLt +
   NVRTC kernels, or the host emulator).

   Head rows of a student branch: [local CLS (L*B); global CLS (G*B); masked patches]; of the
   teacher: [global CLS; masked patches]. Every row range below is in these rows. */
#ifndef POA_TRAIN_STEP_H
#define POA_TRAIN_STEP_H

#include "loss_plan.h"
#include "trainer.h"

/* Shapes of one micro-batch. */
typedef struct poa_step_shapes {
    long B;                 /* images */
    int G, L;               /* global and local crops per image */
    int S, s;               /* their sizes */
    long N;                 /* patches of a global crop */
    long masked;            /* masked global-crop tokens (iBOT), 0 when inactive */
} poa_step_shapes;

/* Who runs a pass: the teacher, or a student branch (0 intact, 1 elastic). */
enum { POA_STEP_TEACHER = -1 };
/* Which crops a backbone pass runs on. */
enum { POA_CROPS_GLOBAL, POA_CROPS_LOCAL };

/* A backend's primitives; self is the backend's state. Each returns 0, or -1 with e set. */
typedef struct poa_step_ops {
    /* Before the micro-batch: the crops, masks and loss weights at hand, the loss scratch
       sized; micro 0 starts the step's loss accumulators. */
    int (*begin)(void *self, const poa_batch *batch, const poa_step_shapes *shape, int micro, poa_error *e);
    /* After it (rc: the step's result so far): what begin took is let go. */
    int (*end)(void *self, int rc, poa_error *e);
    /* The branch's backbone passes for member width x depth (the teacher: on the global crops
       only) and its heads pass over `rows` head rows. */
    int (*prepare)(void *self, int branch, int width, int depth, long rows, poa_error *e);
    /* The branch's backbone on its crops: masks (NULL: none) and stochastic-depth scales
       (depth x 2 x batch; NULL: none) are host values. */
    int (*forward)(void *self, int branch, int crops, const unsigned char *masks, const real *drop, poa_error *e);
    /* Backbone output rows into the head input from head row `row`: each crop's CLS token, or
       (masked) the masked patch tokens; back (the transpose): the head input's gradient rows
       add into the backbone output's gradient. */
    int (*rows)(void *self, int branch, int crops, long row, int masked, int back, poa_error *e);
    /* The heads on the head input; a student's logits' and backbone outputs' gradients are then
       zeroed, for the losses to add into. */
    int (*heads_forward)(void *self, int branch, poa_error *e);
    /* Sinkhorn-Knopp targets of head h from `rows` rows of the teacher's logits at `row`: the
       CLS targets (patch 0) or the masked patches' (patch 1), over the global batch. */
    int (*sinkhorn)(void *self, int head, int patch, long row, long rows, double temperature, poa_error *e);
    /* A loss call of the branch (cross-entropy, or KoLeo of its head-input rows): its value
       adds into the step's term and raw slot, its gradient into the logits' (KoLeo: the global
       backbone output's) gradient. distill: the call is the head's first on the distillation
       targets, which are made first: softmax(intact logits / distill_temp). */
    int (*cross_entropy)(void *self, int branch, const poa_loss_call *call, int distill, poa_error *e);
    int (*koleo)(void *self, int branch, const poa_loss_call *call, poa_error *e);
    /* The heads' backward into the head parameters' gradients and the head-input gradient. */
    int (*heads_backward)(void *self, int branch, poa_error *e);
    /* The backbone's backward into the backbone parameters' gradients. */
    int (*backward)(void *self, int branch, int crops, poa_error *e);
    /* Before the update (NULL: nothing to do): the step's loss terms and calls into s, as the
       CPU step keeps them. */
    int (*read_step)(void *self, poa_step_stats *s, poa_error *e);
    /* Unless s->skipped: clipping per module (s's gradient norms set), AdamW at the tensors'
       rates lr and weight decays wd, then the teacher's EMA at s->momentum. Then the gradient
       buffer is zeroed for the next step. */
    int (*update)(void *self, poa_step_stats *s, const double *lr, const double *wd, poa_error *e);
} poa_step_ops;

/* One micro-batch (micro = 0, 1, ... of config.accumulate) of t's step on a backend:
   the teacher's targets, then per student branch its forward, losses and backward. */
int poa_step_micro_batch(poa_trainer *t, const poa_step_ops *ops, void *self, const poa_batch *batch, int micro,
                         poa_error *e);

/* The end of t's step on a backend: the loss, the rates, the NaN check, the update unless
   skipped, the gradients zeroed, t->step advanced, t->last set. */
int poa_step_end(poa_trainer *t, const poa_step_ops *ops, void *self, poa_error *e);

#endif
