/* bench/step_info.h: the lines a step benchmark prints so that a PyTorch peer can rebuild
   the same step (bench/torch_step.py reads them): "config ..." (the shapes and loss
   settings, as `key value...` pairs) and "masks ..." (the iBOT mask count of every
   global-crop slot of the batch); and the command line the step benchmarks share. Used by
   bench/step_cpu.c, bench/step_config.c and bench/step_gpu.c. */
#ifndef POA_BENCH_STEP_INFO_H
#define POA_BENCH_STEP_INFO_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_loader.h"
#include "train_config.h"

static void print_step_info(const poa_train_config *c, const poa_batch *b, int ibot, int threads) {
    const poa_recipe *r = &c->recipe;
    printf("config width %d %d depth %d %d patch %d head_dim %d mlp_ratio %d layerscale %g "
           "global %d %d local %d %d batch %d heads %d hidden %d bottleneck %d prototypes",
           r->width_min, r->width_max, r->depth_min, r->depth_max, r->vit.patch_size,
           r->vit.head_dim, r->vit.mlp_ratio, r->vit.layerscale, r->global_crop_count,
           r->global_crop_size, r->local_crop_count, r->local_crop_size, c->batch_size,
           c->heads.heads, c->heads.hidden, c->heads.bottleneck);
    for (int h = 0; h < c->heads.heads; h++) printf(" %d", c->heads.prototypes[h]);
    printf(" drop_path %g lambda %g student_temp %g distill_temp %g dino_weight %g "
           "koleo_weight %g ibot_weight %g sinkhorn %d clip %g layerwise_decay %g "
           "patch_embed_lr_mult %g beta1 %g beta2 %g eps %g elastic %d ibot %d threads %d\n",
           c->drop_path_rate, c->lambda, c->student_temp, c->distill_temp, c->dino_weight,
           c->koleo_weight, c->ibot_weight, c->sinkhorn_iterations, c->clip_grad,
           c->layerwise_decay, c->patch_embed_lr_mult, c->beta1, c->beta2, c->eps, c->elastic,
           ibot, threads);
    printf("masks");
    for (int s = 0; s < b->masks.slots; s++) {
        int n = 0;
        for (int k = 0; k < b->masks.tokens; k++) n += b->masks.masks[(long)s * b->masks.tokens + k];
        printf(" %d", n);
    }
    printf("\n");
    fflush(stdout);
}

/* A step benchmark's command line: [RECIPE] [--steps N] [--warmup W] [--ibot 0|1] [--batch B]
   [--threads T] [--member WxD] [--members N] [section.field=value ...]. overrides gets the
   user's, then iBOT on from step 0 (or never), the batch size and one micro-batch. */
typedef struct step_options {
    const char *recipe, *member;
    int steps, warmup, ibot, threads, members;
    long batch;
    const char **overrides;
    int override_count;
    char batch_override[64];
} step_options;

/* 0 on success, -1 on a bad command line (the caller prints its usage). */
static int parse_step_options(int argc, char **argv, step_options *o) {
    o->overrides = calloc((size_t)argc + 4, sizeof(char *));
    o->override_count = 0;
    if (!o->overrides) return -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strncmp(a, "--", 2)) {
            if (!v) return -1;
            if (!strcmp(a, "--steps")) o->steps = atoi(v);
            else if (!strcmp(a, "--warmup")) o->warmup = atoi(v);
            else if (!strcmp(a, "--ibot")) o->ibot = atoi(v);
            else if (!strcmp(a, "--batch")) o->batch = atol(v);
            else if (!strcmp(a, "--threads")) o->threads = atoi(v);
            else if (!strcmp(a, "--member")) o->member = v;
            else if (!strcmp(a, "--members")) o->members = atoi(v);
            else return -1;
            i++;
        } else if (strchr(a, '=')) {
            o->overrides[o->override_count++] = a;
        } else {
            o->recipe = a;
        }
    }
    if (o->steps < 1 || o->warmup < 0 || o->threads < 1 || o->members < 0) return -1;
    o->overrides[o->override_count++] = o->ibot ? "ibot.activate_epochs=0" : "ibot.activate_epochs=1e9";
    if (o->batch > 0) {
        snprintf(o->batch_override, sizeof o->batch_override, "train.batch_size=%ld", o->batch);
        o->overrides[o->override_count++] = o->batch_override;
    }
    o->overrides[o->override_count++] = "train.accumulate=1";
    return 0;
}

#endif
