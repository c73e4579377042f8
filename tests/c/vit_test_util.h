/* vit_test_util.h: shared set-up of the ViT tests: the tiny golden family
   (tests/recipes/tiny_vit.lua) and deterministic random tensors. */
#ifndef POA_VIT_TEST_UTIL_H
#define POA_VIT_TEST_UTIL_H

#include <lua.h>
#include <stdlib.h>

#include "random.h"
#include "recipe.h"
#include "vit.h"

/* Loads a recipe's ViT; exits on failure (tests only). */
static inline void test_load_model(const char *recipe_path, poa_recipe *recipe, poa_vit *model) {
    poa_error e = { { 0 } };
    lua_State *L = poa_lua_open(&e);
    if (!L || poa_recipe_load(L, recipe_path, recipe, &e) || poa_vit_init(model, &recipe->vit, &e)) {
        printf("FAIL load %s: %s\n", recipe_path, e.message);
        exit(1);
    }
    lua_close(L);
}

/* n values ~ scale * N(0, 1) (plus offset), from (seed, stream). */
static inline void test_fill_normal(real *x, long n, double offset, double scale, uint64_t seed,
                             uint64_t stream) {
    for (long i = 0; i < n; i++) x[i] = (real)(offset + scale * poa_normal(seed, stream, (uint64_t)i));
}

/* Parameters that make every path matter: LayerScale and LayerNorm weights
   around 1, weights ~ 1/sqrt(fan_in). */
static inline void test_random_parameters(const poa_vit *m, real *params, uint64_t seed) {
    for (int i = 0; i < m->tensor_count; i++) {
        const poa_vit_tensor *t = &m->tensors[i];
        double scale = 0.1, offset = 0;
        if (t->ndim == 2 && t->shape[1] > 1 && t->shape[0] > 1) scale = 1.0 / sqrt((double)t->shape[1]);
        if (t->ndim == 4) scale = 1.0 / sqrt((double)(t->shape[1] * t->shape[2] * t->shape[3]));
        size_t n = strlen(t->name);
        if (n > 6 && (strcmp(t->name + n - 6, ".gamma") == 0 ||
                      strcmp(t->name + n - 11 > t->name ? t->name + n - 11 : t->name, "norm.weight") == 0))
            offset = 1;
        test_fill_normal(params + t->offset, t->count, offset, scale, seed, (uint64_t)i + 1);
    }
}

#endif
