/* train_config.h: the training sections of a recipe (gen/training.lua), as C numbers. */
#ifndef POA_TRAIN_CONFIG_H
#define POA_TRAIN_CONFIG_H

#include <lua.h>

#include "error.h"
#include "head.h"
#include "recipe.h"

typedef struct poa_train_config {
    poa_recipe recipe;
    poa_head_config heads;
    /* loss */
    double dino_weight, koleo_weight, ibot_weight, lambda, student_temp, distill_temp, distill_weight;
    int sinkhorn_iterations;
    /* ibot */
    double mask_probability, mask_ratio_min, mask_ratio_max, ibot_activate_epochs;
    double drop_path_rate; /* model.drop_path_rate, student only */
    /* teacher */
    double momentum, final_momentum, warmup_temp, temp, warmup_temp_epochs;
    /* optim */
    double epochs, base_lr, min_lr, warmup_epochs, weight_decay, weight_decay_end, clip_grad;
    double freeze_last_layer_epochs, patch_embed_lr_mult, layerwise_decay, beta1, beta2, eps;
    double iter_num_scale;
    int lr_sqrt_rule;
    /* train */
    int batch_size, accumulate, official_epoch_length, elastic, draw_per_step;
    int checkpoint_every, keep_checkpoints, log_every, threads, loader_threads;
    unsigned long long seed;
    /* This process's place in a data-parallel run: rank 0 of 1 as loaded; `poa train` sets
       them from runtime/dist.c (torchrun or Slurm variables) before poa_trainer_init. The rank
       keys the elastic draws; the world size scales the global batch (lr rule). */
    int rank, world_size;
    char output[1024];
    /* data */
    char train_data[1024], val_data[1024];
    /* the elastic cycle's slots (gen/space.lua replicas().slots, width-major) */
    int slot_count;
    int *slot_width, *slot_depth;
} poa_train_config;

/* Loads recipe + overrides ("section.field=value"); errors name the file and field. */
int poa_train_config_load(lua_State *L, const char *path, const char *const *overrides,
                          int override_count, poa_train_config *c, poa_error *e);
void poa_train_config_free(poa_train_config *c);

#endif
