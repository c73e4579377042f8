/* test_data_recipe.c: a recipe's crops and its augment.blur switch reach the loader:
   the default gives the official code's effective blur probabilities 0 / 0.9 / 0.5, the
   switch the paper's 1.0 / 0.1 / 0.5; crop counts, sizes and scales come from the recipe;
   a wrong value names the field. */
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data_recipe.h"

static const char *write_recipe(const char *augment) {
    static char path[64];
    snprintf(path, sizeof path, "build/tests/recipe_%d.lua", (int)strlen(augment));
    FILE *f = fopen(path, "w");
    fprintf(f, "return { name = 'r', model = { family = 'vit', patch_size = 8, head_dim = 32,\n"
               "  width = { 32, 64, 32 }, depth = { 2, 3, 1 } },\n"
               "  global_crops = { count = 2, size = 48, scale = { 0.4, 0.9 } },\n"
               "  local_crops = { count = 6, size = 24, scale = { 0.1, 0.3 } }, %s }\n",
            augment);
    fclose(f);
    return path;
}

static int load(lua_State *L, const char *augment, poa_recipe *r, poa_error *e) {
    return poa_recipe_load(L, write_recipe(augment), r, e);
}

int main(void) {
    poa_error e = { { 0 } };
    lua_State *L = poa_lua_open(&e);
    poa_recipe r;
    poa_loader_config c;
    poa_dataset dataset = { 0 };

    CHECK("default recipe loads", load(L, "", &r, &e) == 0, "%s", e.message);
    poa_loader_config_from_recipe(&c, &r, &dataset, 4);
    CHECK("default blur is the official code's 0 / 0.9 / 0.5",
          c.augment.global_first.blur_probability == 0.0f &&
              c.augment.global_second.blur_probability == 0.9f &&
              c.augment.local.blur_probability == 0.5f,
          "%g %g %g", c.augment.global_first.blur_probability,
          c.augment.global_second.blur_probability, c.augment.local.blur_probability);
    CHECK("crop counts, sizes and scales come from the recipe",
          c.augment.global_count == 2 && c.augment.local.count == 6 &&
              c.augment.global_first.size == 48 && c.augment.local.size == 24 &&
              c.augment.global_first.scale_min == 0.4f && c.augment.global_second.scale_max == 0.9f &&
              c.augment.local.scale_min == 0.1f && c.augment.local.scale_max == 0.3f &&
              c.patch_size == 8 && c.batch_size == 4,
          "global %d x %d [%g, %g], local %d x %d [%g, %g]", c.augment.global_count,
          c.augment.global_first.size, c.augment.global_first.scale_min,
          c.augment.global_first.scale_max, c.augment.local.count, c.augment.local.size,
          c.augment.local.scale_min, c.augment.local.scale_max);

    CHECK("augment.blur = paper loads", load(L, "augment = { blur = 'paper' }", &r, &e) == 0, "%s",
          e.message);
    poa_loader_config_from_recipe(&c, &r, &dataset, 4);
    CHECK("augment.blur = paper gives 1.0 / 0.1 / 0.5",
          c.augment.global_first.blur_probability == 1.0f &&
              c.augment.global_second.blur_probability == 0.1f &&
              c.augment.local.blur_probability == 0.5f,
          "%g %g %g", c.augment.global_first.blur_probability,
          c.augment.global_second.blur_probability, c.augment.local.blur_probability);

    int rc = load(L, "augment = { blur = 'papers' }", &r, &e);
    CHECK("a wrong augment.blur names the field", rc != 0 && strstr(e.message, "augment.blur"),
          "rc %d: %s", rc, e.message);
    rc = load(L, "augment = { blurr = 'paper' }", &r, &e);
    CHECK("an unknown augment field names it", rc != 0 && strstr(e.message, "augment.blurr"),
          "rc %d: %s", rc, e.message);
    lua_close(L);
    CHECK_EXIT();
}
