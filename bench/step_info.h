/* bench/step_info.h: the lines a step benchmark prints so that a PyTorch peer can rebuild
   the same step (bench/torch_step.py reads them): "config ..." (the shapes and loss
   settings, as `key value...` pairs) and "masks ..." (the iBOT mask count of every
   global-crop slot of the batch). Shared by bench/step_cpu.c and bench/step_config.c. */
#ifndef POA_BENCH_STEP_INFO_H
#define POA_BENCH_STEP_INFO_H

#include <stdio.h>

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

#endif
