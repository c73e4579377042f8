/* recipe.h: recipes are Lua (recipes/NAME.lua); the runtime embeds Lua 5.4 and
   asks gen/ (the same modules the generator uses) for everything it needs. */
#ifndef POA_RECIPE_H
#define POA_RECIPE_H

#include <lua.h>

#include "error.h"
#include "vit.h"

typedef struct poa_recipe {
    char name[128];
    char path[1024];
    char overrides[2048]; /* "section.field=value" lines applied over the file */
    poa_vit_config vit;
    int width_min, width_max, width_step, depth_min, depth_max, depth_step;
    int global_crop_count, global_crop_size, local_crop_count, local_crop_size;
    double global_crop_scale[2], local_crop_scale[2]; /* RandomResizedCrop area range */
    int paper_blur; /* augment.blur = "paper": blur 1.0 / 0.1 / 0.5 instead of 0 / 0.9 / 0.5 */
    /* augment (gen/recipe.lua): blur per crop (global 1, global 2, local), its sigma range,
       ColorJitter's probability and strengths (brightness, contrast, saturation, hue), the
       grayscale, second-global-crop solarize and flip probabilities */
    double blur_probability[3], sigma[2], jitter_probability, jitter[4];
    double grayscale_probability, solarize_probability, flip_probability;
} poa_recipe;

/* A Lua state whose require() finds gen/ and models/: the copy built into poa, or the source
   tree $POA_HOME (runtime/lua_sources.h). NULL on failure. */
lua_State *poa_lua_open(poa_error *e);

/* Runs a Lua chunk (in a state of poa_lua_open) that returns one string: *text gets a malloc'd
   copy. Errors say `what` and Lua's message. */
int poa_lua_text(const char *chunk, const char *what, char **text, poa_error *e);

/* Loads and checks a recipe (gen/recipe.lua); errors name the file and field. */
int poa_recipe_load(lua_State *L, const char *path, poa_recipe *recipe, poa_error *e);

/* The same with "section.field=value" overrides applied before the checks. */
int poa_recipe_load_overrides(lua_State *L, const char *path, const char *const *overrides,
                              int override_count, poa_recipe *recipe, poa_error *e);

/* Pushes the recipe's Lua table (gen.recipe.load of its path and overrides). */
int poa_recipe_push(lua_State *L, const poa_recipe *recipe, poa_error *e);

/* Splits newline-separated overrides in place into at most max pointers; returns the count. */
int poa_split_overrides(char *text, const char **out, int max);

/* Pushes require(module)[function] on L's stack, or fails with Lua's message. */
int poa_lua_push_function(lua_State *L, const char *module, const char *function, poa_error *e);

/* Calls require(module)[function](recipe_path) and returns its string result
   (malloc'd), e.g. gen.space.list_text. */
char *poa_lua_call_string(lua_State *L, const char *module, const char *function,
                          const char *recipe_path, poa_error *e);

/* Parses a member: "WxD" (e.g. 640x16), "W_D", or a named member of the
   family (ViT-S, S, small, ...); checks it belongs to the family. */
int poa_recipe_member(lua_State *L, const poa_recipe *recipe, const char *text, int *width,
                      int *depth, poa_error *e);

#endif
