/* trainer.h: the POA tri-branch training state and step on the CPU backend
   (reference poa-vit-and-training.md §3-§5): an EMA teacher, the intact student and
   an elastic student drawn per micro-batch from the shuffled replicated cycle,
   sharing one parameter set and one gradient buffer. */
#ifndef POA_TRAINER_H
#define POA_TRAINER_H

#include <stdint.h>

#include "data_loader.h"
#include "dist.h"
#include "error.h"
#include "head.h"
#include "optim.h"
#include "safetensors.h"
#include "train_config.h"
#include "train_diagnostics.h"
#include "vit.h"

#define POA_LOSS_CALL_CROPS 8 /* global crops whose KoLeo calls are kept apart */

/* The step's loss calls as the reference's loss modules return them (its losses.json `raw`
   values), before their weights in the total, as the mean over micro-batches (and ranks).
   Per branch (0 intact, 1 elastic) and head h:
     dino_local   DINOLoss on the local crops: the sum over (local crop, teacher crop) pairs of
                  the row-mean CE;
     dino_global  DINOLoss on the global crops: the mean over the G(G-1) cross-view pairs of
                  the row-mean CE (the reference's one 2B-row mean for G = 2);
     ibot         iBOTPatchLoss.forward_masked: sum over masked tokens of w_t CE, over G*B;
   the elastic branch's same-view distillation (row means over the local / global rows), and
   KoLeo per branch and global crop (the first POA_LOSS_CALL_CROPS). */
typedef struct poa_loss_calls {
    double dino_local[2][POA_MAX_HEADS], dino_global[2][POA_MAX_HEADS], ibot[2][POA_MAX_HEADS];
    double distill_local[POA_MAX_HEADS], distill_global[POA_MAX_HEADS];
    double koleo[2][POA_LOSS_CALL_CROPS];
} poa_loss_calls;

typedef struct poa_step_stats {
    double loss, dino, distill, koleo, ibot;        /* this step's terms (mean over micro-batches) */
    poa_loss_calls calls;                            /* ... and the loss calls they are made of */
    double lr, weight_decay, momentum, teacher_temp;
    double grad_norm_backbone, grad_norm_heads;      /* before clipping */
    int width, depth;                                /* the last elastic member */
    int ibot_active, skipped;                        /* skipped: NaN loss, no update, no EMA */
    poa_step_diagnostics diag;                       /* the CPU step's (train_diagnostics.h) */
} poa_step_stats;

/* A work buffer kept across steps: grown when a micro-batch needs more, never shrunk. */
typedef struct poa_work_buffer {
    real *data;
    long capacity; /* values */
} poa_work_buffer;

/* The first n values of b (contents undefined), grown if needed; NULL when out of memory. */
real *poa_work_buffer_get(poa_work_buffer *b, long n);
void poa_work_buffer_free(poa_work_buffer *b);

/* A student branch's work buffers (runtime/train_cpu.c): head input and its gradient,
   the loss gradients per head, the backbone output gradients, the drop-path scales. */
typedef struct poa_branch_work {
    poa_work_buffer features, dfeatures, dlogits[POA_MAX_HEADS];
    poa_work_buffer dout_global, dout_local, drop_global, drop_local;
} poa_branch_work;

typedef struct poa_trainer {
    poa_train_config config;
    /* The data-parallel world (not owned; NULL or a world of 1: one process), set by the
       caller after poa_trainer_init, with config.rank and config.world_size matching it. */
    poa_dist *dist;
    poa_vit model;
    poa_heads heads;
    real *student, *teacher, *student_heads, *teacher_heads; /* parameters */
    real *grads, *grads_heads;
    real *adam_m, *adam_v, *adam_m_heads, *adam_v_heads;
    poa_param_group *groups, *groups_heads;
    double *rates;       /* per tensor of [backbone | heads]: its lr, then its weight decay */
    long step;           /* optimizer steps done */
    long draws;          /* elastic draws done */
    long total_steps;    /* epochs x official_epoch_length */
    poa_cosine_schedule lr, weight_decay, momentum, teacher_temp;
    long freeze_last_layer_steps, ibot_start_step;
    poa_step_stats current, last;
    /* Work buffers kept across steps: the teacher's pass and heads pass, and per student
       branch (intact, elastic) its global, local and heads passes. */
    poa_vit_pass teacher_pass, student_global[2], student_local[2];
    int programs_built; /* the members' programs built into the cache (train_cpu.c's build_programs) */
    poa_heads_pass teacher_heads_pass, student_heads_pass[2];
    /* ... and the micro-batch's other buffers: the teacher's head input and targets, per
       branch its poa_branch_work, the distillation targets, iBOT weights, KoLeo rows. */
    poa_work_buffer teacher_input, targets_cls[POA_MAX_HEADS], targets_patch[POA_MAX_HEADS];
    poa_branch_work branch_work[2];
    poa_work_buffer distill_targets, ibot_weights, koleo_features, koleo_grads;
    /* Given instead of drawn (the official step's replay, tests/c/test_official_step.c; all
       zero in a training run):
       schedule_offset: iterations added to the step wherever the schedules, the last layer's
         freeze and iBOT's start are read (poa_trainer_iteration); AdamW's own step count
         (its bias correction) is the optimizer steps done, not moved;
       forced_width, forced_depth (> 0): the member every elastic draw returns;
       given_drop_path[branch][crops] (branch 0 intact, 1 elastic; crops 0 global, 1 local):
         the stochastic-depth factors (depth x 2 x batch, as poa_draw_drop_path writes them)
         that poa_trainer_drop_path returns instead of drawing. */
    long schedule_offset;
    int forced_width, forced_depth;
    const real *given_drop_path[2][2];
} poa_trainer;

/* Builds the networks from the config (taking ownership of it), initialises the student
   as the reference does and copies it into the teacher. */
int poa_trainer_init(poa_trainer *t, poa_train_config *config, poa_error *e);
void poa_trainer_free(poa_trainer *t);

/* Initialises the student from a state dict under the official names (backbone.* and
   dino_head.*, as the official POA code saves its student; "teacher.backbone." is accepted
   too) at the intact shapes, copies it into the teacher, and leaves the optimizer fresh:
   `poa train --init`. Called before training (the teacher equal to the student); the file and
   the tensor are named on failure, and then the student and teacher are as they were. */
int poa_trainer_init_from(poa_trainer *t, const char *path, poa_error *e);

/* The next elastic member of this rank's cycle (config.rank; advances t->draws). */
void poa_trainer_next_member(poa_trainer *t, int *width, int *depth);

/* The iteration the schedules are read at: t->step + t->schedule_offset. */
long poa_trainer_iteration(const poa_trainer *t);

/* The update's rates at this iteration (reference §5.3): s->lr, s->weight_decay and
   s->momentum, and per tensor of [backbone | heads] (model.tensor_count + heads.tensor_count
   values each) its group's lr (the last layer's is 0 while frozen) and weight decay. */
void poa_trainer_update_rates(const poa_trainer *t, poa_step_stats *s, double *lr, double *wd);

/* The stochastic-depth factors of a branch's pass (branch 0 intact, 1 elastic; crops 0
   global, 1 local) into scale (depth x 2 x batch): t->given_drop_path when set, else
   poa_draw_drop_path keyed by (config.seed, stream). Returns scale, or NULL when the rate is 0
   and nothing is given (or memory runs out: then *failed is set). The CPU and GPU steps call it. */
real *poa_trainer_drop_path(const poa_trainer *t, int branch, int crops, real *scale, int depth, long batch,
                            uint64_t stream, int *failed);

/* One optimizer step: begin, then config.accumulate micro-batches (one loader batch each,
   micro = 0, 1, ...), then reduce, then end (NaN check, clipping, AdamW, EMA; stats in
   t->last). Over several ranks every rank runs the same steps: the teacher's Sinkhorn-Knopp
   targets are taken over the global batch inside micro_batch (reference §3.3), and reduce
   averages the gradients and the loss terms over the ranks (so every rank clips, steps and
   logs the same numbers, and the parameters stay identical). With one process reduce does
   nothing and may be left out. */
void poa_trainer_begin_step(poa_trainer *t);
int poa_trainer_micro_batch(poa_trainer *t, const poa_batch *batch, int micro, poa_error *e);
int poa_trainer_reduce_step(poa_trainer *t, poa_error *e);
void poa_trainer_end_step(poa_trainer *t);

/* Over several ranks, before the first step: every rank takes rank 0's parameters, teacher
   and AdamW moments (as DDP and FSDP's sync_module_states do), and all must be at the same
   step and draw count (else an error: they resumed from different checkpoints). */
int poa_trainer_sync(poa_trainer *t, poa_error *e);

/* Checkpoints: student, teacher (backbone and heads), AdamW moments, step and draw
   counters and the recipe, in one safetensors file written atomically. */
int poa_trainer_save(const poa_trainer *t, const char *path, poa_error *e);
int poa_trainer_load(poa_trainer *t, const char *path, poa_error *e);

/* That f is a poa checkpoint (its metadata format) of a network with these backbone and
   heads parameter counts (only the format when backbone_count < 0); the error names the file
   and what differs. */
int poa_checkpoint_check(const poa_safetensors *f, long backbone_count, long heads_count, poa_error *e);

/* The recipe path and the overrides (one a line) a checkpoint was trained with, from its
   metadata; fails naming the file when it records no recipe. */
int poa_checkpoint_recipe(const char *path, char *recipe, size_t recipe_size, char *overrides,
                          size_t overrides_size, poa_error *e);

/* Stochastic depth with an exact keep count (reference §1.5) for `depth` active blocks x 2
   residual branches x batch samples into scale (depth x 2 x batch): keep = max(int(batch
   (1 - rate)), 1) samples of each row, chosen by a permutation keyed by (seed, stream), get
   batch / keep, the others 0. Returns scale, or NULL when rate is 0 (or when scale is NULL or
   memory runs out: then *failed is set). The CPU and GPU steps draw with it. */
real *poa_draw_drop_path(real *scale, int depth, long batch, double rate, uint64_t seed, uint64_t stream,
                         int *failed);

#endif
