/* loss_plan.h: the loss calls of one student branch (reference poa-vit-and-training.md §3.5)
   as a list: which targets and logits rows each reads, its weight in the step's loss, and
   where its raw value (the reference loss module's return value, trainer.h's poa_loss_calls)
   goes. The step (train_step.c, on the CPU and the GPU) runs this list, so the
   terms, their weights and their summation order are written once. */
#ifndef POA_LOSS_PLAN_H
#define POA_LOSS_PLAN_H

#include "train_config.h"

typedef enum { POA_LOSS_DINO, POA_LOSS_DISTILL, POA_LOSS_KOLEO, POA_LOSS_IBOT, POA_LOSS_TERMS } poa_loss_term;

/* The rows a cross-entropy call takes as targets: the teacher's Sinkhorn-Knopp CLS targets
   (G*B rows, crop-major), softmax(intact logits / distill_temp) of the head (the same rows as
   the branch's logits), or the teacher's masked-patch targets. */
typedef enum { POA_TARGETS_TEACHER_CLS, POA_TARGETS_DISTILL, POA_TARGETS_TEACHER_PATCH } poa_loss_targets;

typedef struct poa_loss_call {
    poa_loss_term term;
    int head;                 /* -1 for KoLeo */
    poa_loss_targets targets;
    long target_row;          /* first row of the targets */
    long row;                 /* first row of the branch's logits of the head; KoLeo: of the head input */
    long rows;
    int token_weights;        /* iBOT: each row weighted by 1 / (masked tokens of its image) */
    double norm;              /* raw value = the (weighted) sum of the rows' CE (KoLeo: its value) / norm */
    double factor;            /* the raw value's weight in the step's loss (micro-batch scale included) */
    int slot;                 /* the raw value's place in poa_loss_calls, in doubles */
    double slot_scale;        /* the slot accumulates slot_scale * raw */
} poa_loss_call;

/* Shapes of a micro-batch that the loss calls depend on. */
typedef struct poa_loss_shape {
    long B;                   /* images */
    int G, L;                 /* global and local crops per image */
    long masked;              /* masked global-crop tokens (0: iBOT inactive) */
} poa_loss_shape;

/* The calls of branch `index` (0 intact, 1 elastic, whose weight is lambda or 1 - lambda; the
   baseline's is 1) for a micro-batch of `scale` (1 / micro-batches), in the order they are
   summed: per head, cross-view DINO (for each teacher crop g: the local crops, then the other
   global crops), the elastic branch's same-view distillation (local rows, global rows), iBOT;
   then KoLeo per global crop. Calls of weight 0 are left out. Writes at most `capacity` calls;
   returns how many there are. */
int poa_loss_plan(const poa_train_config *c, int index, double weight, const poa_loss_shape *shape, double scale,
                  poa_loss_call *calls, int capacity);

/* An upper bound on poa_loss_plan's count. */
int poa_loss_plan_capacity(const poa_train_config *c, const poa_loss_shape *shape);

#endif
