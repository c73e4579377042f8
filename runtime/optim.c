/* optim.c: AdamW (torch.optim.AdamW, foreach=False), the reference's parameter
   groups and cosine schedules, gradient clipping by global L2 norm and the
   teacher EMA (reference poa-vit-and-training.md §3.7, §5).

   The element-wise loops are OpenMP-parallel with a static split; every
   element's arithmetic is independent of the split, and the one reduction
   (the clipping norm) sums fixed-size chunks in a fixed order, so results do
   not depend on the thread count. */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef POA_FP64
#define real_fma fma
#else
#define real_fma fmaf
#endif

/* adamw_range and ema_range in two versions, dispatched once at load time (ifunc):
   plain x86-64 calls fma(); x86-64-v3 inlines it as vfmadd and vectorizes. Both
   round fma, sqrt and division correctly, so they give the same bits. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CPU_CLONES __attribute__((target_clones("default", "arch=x86-64-v3")))
#else
#define CPU_CLONES
#endif

/* Below this many elements a loop runs on one thread. */
#define PARALLEL_MIN 32768
/* Element-wise loops hand out blocks of this many elements. */
#define PARALLEL_CHUNK 8192
/* The clipping norm sums squares per chunk of this many elements, then the chunks in order. */
#define NORM_CHUNK 16384

/* Elements [begin, end) of the update below. */
CPU_CLONES
static void adamw_range(real *params, const real *grads, real *m, real *v, long begin, long end,
                        real decay, real b1, real one_minus_b1, real b2, real one_minus_b2,
                        real neg_step_size, real correction2_sqrt, real epsilon) {
    for (long i = begin; i < end; i++) {
        real g = grads[i];
        real p = params[i] * decay;
        real mi = real_fma(g, one_minus_b1, m[i] * b1);
        real vi = real_fma(one_minus_b2 * g, g, v[i] * b2);
        real denom = real_sqrt(vi) / correction2_sqrt;
        denom = denom + epsilon;
        params[i] = p + neg_step_size * mi / denom;
        m[i] = mi;
        v[i] = vi;
    }
}

/* AdamW step in the order PyTorch 1.13's _single_tensor_adamw evaluates it
   (scalars in double, as Python computes them; each tensor op rounds to real):
     p = p * (1 - lr wd)
     m = fma(g, 1 - b1, m b1)               exp_avg.mul_(b1).add_(g, alpha=1-b1)
     v = fma((1 - b2) g, g, v b2)           exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2)
     p = p + (-(lr / (1 - b1^step)) m) / (sqrt(v) / sqrt(1 - b2^step) + eps)
   The scalar factors are rounded to real before use, as torch does with a
   Python number applied to a float tensor. The two fused multiply-adds are
   what torch's CPU kernels compute (measured on 1003 float64 elements: with plain
   multiply-then-add, 30% of m and 18% of v differ from torch after step 2). */
void poa_adamw_update(real *params, const real *grads, real *m, real *v, long n, double lr,
                      double weight_decay, double beta1, double beta2, double eps, long step) {
    const real decay = (real)(1 - lr * weight_decay);
    const real b1 = (real)beta1, one_minus_b1 = (real)(1 - beta1);
    const real b2 = (real)beta2, one_minus_b2 = (real)(1 - beta2);
    const double correction1 = 1 - pow(beta1, (double)step);
    const double correction2 = 1 - pow(beta2, (double)step);
    const real neg_step_size = (real)(-(lr / correction1));
    const real correction2_sqrt = (real)sqrt(correction2);
    const real epsilon = (real)eps;
    const long chunks = (n + PARALLEL_CHUNK - 1) / PARALLEL_CHUNK;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (long c = 0; c < chunks; c++) {
        long end = (c + 1) * PARALLEL_CHUNK < n ? (c + 1) * PARALLEL_CHUNK : n;
        adamw_range(params, grads, m, v, c * PARALLEL_CHUNK, end, decay, b1, one_minus_b1, b2,
                    one_minus_b2, neg_step_size, correction2_sqrt, epsilon);
    }
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* wd_mult = 0 iff the name ends in ".bias" or contains "norm" or "gamma"
   (get_params_groups_with_decay), else 1. */
static float weight_decay_multiplier(const char *name) {
    return ends_with(name, ".bias") || strstr(name, "norm") || strstr(name, "gamma") ? 0.0f : 1.0f;
}

/* layer_id = 0 for patch_embed, pos_embed, cls_token, mask_token; i + 1 for
   blocks.i.*; Lmax + 1 otherwise. lr_mult = layer_decay^(Lmax + 1 - layer_id)
   (times patch_embed_lr_mult for patch_embed.*), computed in double. */
void poa_vit_param_groups(const poa_vit *model, double layer_decay, double patch_embed_lr_mult,
                          poa_param_group *groups) {
    const int layers = model->config.max_depth;
    for (int i = 0; i < model->tensor_count; i++) {
        const char *name = model->tensors[i].name;
        int layer_id = layers + 1;
        if (strstr(name, "patch_embed") || strstr(name, "pos_embed") || strstr(name, "mask_token") ||
            strstr(name, "cls_token"))
            layer_id = 0;
        else if (strncmp(name, "blocks.", 7) == 0)
            layer_id = atoi(name + 7) + 1;
        double lr_mult = pow(layer_decay, (double)(layers + 1 - layer_id));
        if (strstr(name, "patch_embed")) lr_mult *= patch_embed_lr_mult;
        groups[i].lr_mult = (float)lr_mult;
        groups[i].wd_mult = weight_decay_multiplier(name);
        groups[i].last_layer = strstr(name, "last_layer") != NULL;
    }
}

/* Heads have no blocks (n_blocks = 0): lr_mult = 1 everywhere; the weight-decay
   rule of the backbone (so biases 0, weight_g and weight_v 1); last_layer for
   names containing "last_layer". */
void poa_heads_param_groups(const poa_heads *heads, poa_param_group *groups) {
    for (int i = 0; i < heads->tensor_count; i++) {
        const char *name = heads->tensors[i].name;
        groups[i].lr_mult = 1.0f;
        groups[i].wd_mult = weight_decay_multiplier(name);
        groups[i].last_layer = strstr(name, "last_layer") != NULL;
    }
}

/* Iteration it of CosineScheduler(base, final, total, warmup, start_warmup, s):
     it < warmup:           numpy.linspace(start_warmup, base, warmup)[it]
                            = start_warmup + it * ((base - start_warmup) / (warmup - 1)),
                              exactly base at it = warmup - 1 (and start_warmup when warmup = 1);
     warmup <= it < total:  final + 0.5 (base - final) (1 + cos(pi (it - warmup) / Lc)),
                              Lc = int(total / s) - warmup;
     it >= total:           final.
   A negative iteration counts as 0. */
double poa_cosine_value(const poa_cosine_schedule *s, long iteration) {
    long it = iteration < 0 ? 0 : iteration;
    if (it >= s->total) return s->final;
    if (it < s->warmup) {
        if (s->warmup == 1) return s->start_warmup;
        if (it == s->warmup - 1) return s->base;
        double delta = s->base - s->start_warmup, divisions = (double)(s->warmup - 1);
        double step = delta / divisions;
        if (step == 0) return (double)it / divisions * delta + s->start_warmup; /* as numpy does */
        return (double)it * step + s->start_warmup;
    }
    long cosine_length = (long)((double)s->total / s->iter_num_scale) - s->warmup;
    double j = (double)(it - s->warmup);
    return s->final + 0.5 * (s->base - s->final) * (1 + cos(M_PI * j / (double)cosine_length));
}

/* norm = sqrt(sum g_i^2) (accumulated in double, per chunk, chunks in order);
   coef = max_norm / (norm + 1e-6); when coef < 1, g_i *= coef. */
double poa_clip_grad_norm(real *grads, long n, double max_norm) {
    long chunks = (n + NORM_CHUNK - 1) / NORM_CHUNK;
    double partial_local[64];
    double *partial = chunks <= 64 ? partial_local : malloc(sizeof(double) * (size_t)chunks);
    double sum = 0;
    if (!partial) { /* out of memory: sum serially in the same chunk order */
        for (long c = 0; c < chunks; c++) {
            double s = 0;
            long end = (c + 1) * NORM_CHUNK < n ? (c + 1) * NORM_CHUNK : n;
            for (long i = c * NORM_CHUNK; i < end; i++) s += (double)grads[i] * grads[i];
            sum += s;
        }
    } else {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
        for (long c = 0; c < chunks; c++) {
            double s = 0;
            long end = (c + 1) * NORM_CHUNK < n ? (c + 1) * NORM_CHUNK : n;
            for (long i = c * NORM_CHUNK; i < end; i++) s += (double)grads[i] * grads[i];
            partial[c] = s;
        }
        for (long c = 0; c < chunks; c++) sum += partial[c];
        if (partial != partial_local) free(partial);
    }
    double norm = sqrt(sum);
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1) {
        const real scale = (real)coef;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
        for (long i = 0; i < n; i++) grads[i] *= scale;
    }
    return norm;
}

/* Elements [begin, end) of the EMA below. */
CPU_CLONES
static void ema_range(real *teacher, const real *student, long begin, long end, real keep, real take) {
    for (long i = begin; i < end; i++) teacher[i] = real_fma(student[i], take, teacher[i] * keep);
}

/* teacher = fma(student, 1 - m, teacher m): DINOv2's _foreach_mul_(m) then
   _foreach_add_(student, alpha = 1 - m), whose add with alpha torch's CPU
   kernels fuse as in poa_adamw_update; scalars rounded to real. */
void poa_ema_update(real *teacher, const real *student, long n, double momentum) {
    const real keep = (real)momentum, take = (real)(1 - momentum);
    const long chunks = (n + PARALLEL_CHUNK - 1) / PARALLEL_CHUNK;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (long c = 0; c < chunks; c++) {
        long end = (c + 1) * PARALLEL_CHUNK < n ? (c + 1) * PARALLEL_CHUNK : n;
        ema_range(teacher, student, c * PARALLEL_CHUNK, end, keep, take);
    }
}
