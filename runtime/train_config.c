/* train_config.c: reads the training sections of a recipe through gen/recipe.lua. */
#include "train_config.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

static double number(lua_State *L, int recipe, const char *section, const char *field) {
    lua_getfield(L, recipe, section);
    lua_getfield(L, -1, field);
    double v = lua_isboolean(L, -1) ? lua_toboolean(L, -1) : lua_tonumber(L, -1);
    lua_pop(L, 2);
    return v;
}

static void string_field(lua_State *L, int recipe, const char *section, const char *field,
                         char *out, size_t size) {
    lua_getfield(L, recipe, section);
    lua_getfield(L, -1, field);
    snprintf(out, size, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
    lua_pop(L, 2);
}

static int pair(lua_State *L, int recipe, const char *section, const char *field, double *a,
                double *b) {
    lua_getfield(L, recipe, section);
    lua_getfield(L, -1, field);
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    *a = lua_tonumber(L, -2);
    *b = lua_tonumber(L, -1);
    lua_pop(L, 4);
    return 0;
}

/* The elastic slots: require("gen.space").replicas(recipe.model).slots. */
static int load_slots(lua_State *L, int recipe, poa_train_config *c, poa_error *e) {
    lua_getglobal(L, "require");
    lua_pushstring(L, "gen.space");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) return poa_fail(e, "%s", lua_tostring(L, -1));
    lua_getfield(L, -1, "replicas");
    lua_getfield(L, recipe, "model");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) return poa_fail(e, "%s", lua_tostring(L, -1));
    lua_getfield(L, -1, "slots");
    c->slot_count = (int)luaL_len(L, -1);
    c->slot_width = malloc(sizeof(int) * (size_t)(c->slot_count + 1));
    c->slot_depth = malloc(sizeof(int) * (size_t)(c->slot_count + 1));
    for (int i = 0; i < c->slot_count; i++) {
        lua_rawgeti(L, -1, i + 1);
        lua_getfield(L, -1, "width");
        lua_getfield(L, -2, "depth");
        c->slot_width[i] = (int)lua_tointeger(L, -2);
        c->slot_depth[i] = (int)lua_tointeger(L, -1);
        lua_pop(L, 3);
    }
    lua_pop(L, 3);
    return 0;
}

int poa_train_config_load(lua_State *L, const char *path, const char *const *overrides,
                          int override_count, poa_train_config *c, poa_error *e) {
    memset(c, 0, sizeof *c);
    if (poa_recipe_load_overrides(L, path, overrides, override_count, &c->recipe, e)) return -1;
    if (poa_recipe_push(L, &c->recipe, e)) return -1;
    int r = lua_gettop(L);
    lua_getfield(L, r, "heads");
    lua_getfield(L, -1, "prototypes");
    c->heads.heads = (int)luaL_len(L, -1);
    for (int h = 0; h < c->heads.heads && h < POA_MAX_HEADS; h++) {
        lua_rawgeti(L, -1, h + 1);
        c->heads.prototypes[h] = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
    c->heads.in_dim = c->recipe.vit.max_width;
    c->heads.hidden = (int)number(L, r, "heads", "hidden");
    c->heads.bottleneck = (int)number(L, r, "heads", "bottleneck");
    c->dino_weight = number(L, r, "loss", "dino_weight");
    c->koleo_weight = number(L, r, "loss", "koleo_weight");
    c->ibot_weight = number(L, r, "loss", "ibot_weight");
    c->lambda = number(L, r, "loss", "lambda");
    c->student_temp = number(L, r, "loss", "student_temp");
    c->distill_temp = number(L, r, "loss", "distill_temp");
    c->distill_weight = number(L, r, "loss", "distill_weight");
    c->sinkhorn_iterations = (int)number(L, r, "loss", "sinkhorn_iterations");
    c->mask_probability = number(L, r, "ibot", "mask_probability");
    pair(L, r, "ibot", "mask_ratio", &c->mask_ratio_min, &c->mask_ratio_max);
    c->ibot_activate_epochs = number(L, r, "ibot", "activate_epochs");
    c->drop_path_rate = number(L, r, "model", "drop_path_rate");
    c->momentum = number(L, r, "teacher", "momentum");
    c->final_momentum = number(L, r, "teacher", "final_momentum");
    c->warmup_temp = number(L, r, "teacher", "warmup_temp");
    c->temp = number(L, r, "teacher", "temp");
    c->warmup_temp_epochs = number(L, r, "teacher", "warmup_temp_epochs");
    c->epochs = number(L, r, "optim", "epochs");
    c->base_lr = number(L, r, "optim", "base_lr");
    c->min_lr = number(L, r, "optim", "min_lr");
    c->warmup_epochs = number(L, r, "optim", "warmup_epochs");
    c->weight_decay = number(L, r, "optim", "weight_decay");
    c->weight_decay_end = number(L, r, "optim", "weight_decay_end");
    c->clip_grad = number(L, r, "optim", "clip_grad");
    c->freeze_last_layer_epochs = number(L, r, "optim", "freeze_last_layer_epochs");
    c->patch_embed_lr_mult = number(L, r, "optim", "patch_embed_lr_mult");
    c->layerwise_decay = number(L, r, "optim", "layerwise_decay");
    c->beta1 = number(L, r, "optim", "beta1");
    c->beta2 = number(L, r, "optim", "beta2");
    c->eps = number(L, r, "optim", "eps");
    c->iter_num_scale = number(L, r, "optim", "iter_num_scale");
    char rule[32];
    string_field(L, r, "optim", "lr_rule", rule, sizeof rule);
    c->lr_sqrt_rule = strcmp(rule, "sqrt_wrt_1024") == 0;
    c->batch_size = (int)number(L, r, "train", "batch_size");
    c->accumulate = (int)number(L, r, "train", "accumulate");
    c->official_epoch_length = (int)number(L, r, "train", "official_epoch_length");
    c->elastic = (int)number(L, r, "train", "elastic");
    char draws[32];
    string_field(L, r, "train", "draws", draws, sizeof draws);
    c->draw_per_step = strcmp(draws, "step") == 0;
    c->seed = (unsigned long long)number(L, r, "train", "seed");
    c->rank = 0, c->world_size = 1; /* a single process until the caller says otherwise */
    c->checkpoint_every = (int)number(L, r, "train", "checkpoint_every");
    c->keep_checkpoints = (int)number(L, r, "train", "keep_checkpoints");
    c->log_every = (int)number(L, r, "train", "log_every");
    c->threads = (int)number(L, r, "train", "threads");
    c->loader_threads = (int)number(L, r, "train", "loader_threads");
    string_field(L, r, "train", "output", c->output, sizeof c->output);
    string_field(L, r, "data", "train", c->train_data, sizeof c->train_data);
    string_field(L, r, "data", "val", c->val_data, sizeof c->val_data);
    int rc = load_slots(L, r, c, e);
    lua_settop(L, r - 1);
    if (rc == 0 && c->heads.heads > POA_MAX_HEADS)
        rc = poa_fail(e, "%s: field 'heads.prototypes': at most %d heads", path, POA_MAX_HEADS);
    return rc;
}

void poa_train_config_free(poa_train_config *c) {
    free(c->slot_width);
    free(c->slot_depth);
    c->slot_width = c->slot_depth = NULL;
}
