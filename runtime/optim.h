/* optim.h: AdamW with PyTorch semantics, the reference's parameter groups and
   schedules, per-module gradient clipping and the teacher EMA (reference
   poa-vit-and-training.md §3.7, §5). */
#ifndef POA_OPTIM_H
#define POA_OPTIM_H

#include "error.h"
#include "head.h"
#include "real.h"
#include "vit.h"

/* torch.optim.AdamW on n parameters (step counts from 1):
     p *= 1 - lr * wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
     p -= lr * (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps)   */
void poa_adamw_update(real *params, const real *grads, real *m, real *v, long n, double lr,
                      double weight_decay, double beta1, double beta2, double eps, long step);

/* Per-tensor multipliers of a parameter group (reference §5.2). */
typedef struct poa_param_group {
    float lr_mult, wd_mult;
    int last_layer; /* uses the last-layer lr (0 while frozen) */
} poa_param_group;

/* Backbone: layer_id 0 for patch_embed, pos_embed, cls_token, mask_token; i + 1 for
   block i; Lmax + 1 otherwise; lr_mult = layer_decay^(Lmax + 1 - layer_id), times
   patch_embed_lr_mult for patch_embed.*; wd_mult = 0 for names ending in .bias or
   containing norm or gamma, else 1. groups: one entry per model tensor. */
void poa_vit_param_groups(const poa_vit *model, double layer_decay, double patch_embed_lr_mult,
                          poa_param_group *groups);
/* Heads: lr_mult 1; wd_mult 0 for biases, else 1; last_layer for last_layer*. */
void poa_heads_param_groups(const poa_heads *heads, poa_param_group *groups);

/* CosineScheduler (reference §5.3): linspace(start_warmup, base, warmup) over the first
   `warmup` iterations, then final + (base - final)/2 (1 + cos(pi j / Lc)) for
   j = it - warmup, Lc = int(total / iter_num_scale) - warmup; `final` from total on. */
typedef struct poa_cosine_schedule {
    double base, final;
    long total, warmup;
    double start_warmup, iter_num_scale;
} poa_cosine_schedule;
double poa_cosine_value(const poa_cosine_schedule *s, long iteration);

/* Scales grads so that their L2 norm is at most max_norm (torch clip_grad_norm_: factor
   max_norm / (norm + 1e-6) when below 1). Returns the norm before clipping. */
double poa_clip_grad_norm(real *grads, long n, double max_norm);

/* teacher = momentum * teacher + (1 - momentum) * student. */
void poa_ema_update(real *teacher, const real *student, long n, double momentum);

#endif
