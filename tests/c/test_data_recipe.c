/* test_data_recipe.c: a recipe's crops and its augment section reach the loader:
   the default gives the official code's effective blur probabilities 0 / 0.9 / 0.5 and
   the reference's other augmentations (poa_augment_config_default), the switch the paper's
   1.0 / 0.1 / 0.5; every augment field (blur per crop, sigma, jitter, grayscale, solarize,
   flip) reaches the loader; crop counts, sizes and scales come from the recipe; a wrong
   value names the field. */
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

    /* the defaults are the reference's ImageNet pipeline, as poa_augment_config_default */
    poa_augment_config want;
    poa_augment_config_default(&want, 48, 24, 6, 0);
    CHECK("default recipe loads (again)", load(L, "", &r, &e) == 0, "%s", e.message);
    poa_loader_config_from_recipe(&c, &r, &dataset, 4);
    poa_augment_config *a = &c.augment;
    CHECK("the default augment is the reference's (jitter, grayscale, solarize, flip, sigma)",
          a->jitter_probability == want.jitter_probability && a->brightness == want.brightness &&
              a->contrast == want.contrast && a->saturation == want.saturation && a->hue == want.hue &&
              a->grayscale_probability == want.grayscale_probability &&
              a->global_second.solarize_probability == want.global_second.solarize_probability &&
              a->global_first.solarize_probability == 0 && a->flip_probability == want.flip_probability &&
              a->sigma_min == want.sigma_min && a->sigma_max == want.sigma_max,
          "jitter %g grayscale %g solarize %g flip %g sigma %g..%g", a->jitter_probability,
          a->grayscale_probability, a->global_second.solarize_probability, a->flip_probability,
          a->sigma_min, a->sigma_max);
    CHECK("every augment field loads",
          load(L, "augment = { blur_probability = { 0.1, 0.2, 0.3 }, sigma = { 0.2, 0.7 },\n"
                  "  jitter_probability = 0.25, jitter = { 0.1, 0.2, 0.0, 0.05 }, grayscale_probability = 0,\n"
                  "  solarize_probability = 0.05, flip_probability = 0.75 }", &r, &e) == 0, "%s", e.message);
    poa_loader_config_from_recipe(&c, &r, &dataset, 4);
    CHECK("every augment field reaches the loader",
          a->global_first.blur_probability == 0.1f && a->global_second.blur_probability == 0.2f &&
              a->local.blur_probability == 0.3f && a->sigma_min == 0.2f && a->sigma_max == 0.7f &&
              a->jitter_probability == 0.25f && a->brightness == 0.1f && a->contrast == 0.2f &&
              a->saturation == 0.0f && a->hue == 0.05f && a->grayscale_probability == 0.0f &&
              a->global_second.solarize_probability == 0.05f && a->flip_probability == 0.75f,
          "blur %g %g %g", a->global_first.blur_probability, a->global_second.blur_probability,
          a->local.blur_probability);
    int rc = load(L, "augment = { jitter_probability = 1.5 }", &r, &e);
    CHECK("a probability outside [0, 1] names the field",
          rc != 0 && strstr(e.message, "augment.jitter_probability"), "rc %d: %s", rc, e.message);
    rc = load(L, "augment = { blur_probability = { 0.1, 0.2 } }", &r, &e);
    CHECK("augment.blur_probability needs three", rc != 0 && strstr(e.message, "augment.blur_probability"),
          "rc %d: %s", rc, e.message);
    rc = load(L, "augment = { blur = 'papers' }", &r, &e);
    CHECK("a wrong augment.blur names the field", rc != 0 && strstr(e.message, "augment.blur"),
          "rc %d: %s", rc, e.message);
    rc = load(L, "augment = { blurr = 'paper' }", &r, &e);
    CHECK("an unknown augment field names it", rc != 0 && strstr(e.message, "augment.blurr"),
          "rc %d: %s", rc, e.message);
    lua_close(L);
    CHECK_EXIT();
}
