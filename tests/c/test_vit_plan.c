/* test_vit_plan.c: the CPU runtime's activation arena and block ids are the
   ones gen/plan.lua plans: the same buffers, names, offsets and sizes, for
   members of the tiny and the ViT-L families at global and local crop sizes. */
#include <lauxlib.h>
#include <string.h>

#include "check.h"
#include "vit_test_util.h"

static void compare(lua_State *L, const char *recipe_path, int width, int depth, long batch,
                    int image) {
    poa_recipe r;
    poa_vit m;
    poa_vit_pass pass;
    poa_error e = { { 0 } };
    char label[128];
    snprintf(label, sizeof label, "arena and blocks of %s %dx%d batch %ld at %d px equal gen/plan.lua's",
             recipe_path, width, depth, batch, image);
    if (poa_recipe_load(L, recipe_path, &r, &e) || poa_vit_init(&m, &r.vit, &e) ||
        poa_vit_pass_init(&pass, &m, width, depth, batch, image, &e)) {
        CHECK(label, 0, "%s", e.message);
        return;
    }
    int n = poa_vit_pass_buffers(&pass, NULL, 0);
    poa_vit_buffer *ours = malloc(sizeof *ours * (size_t)n);
    poa_vit_pass_buffers(&pass, ours, n);
    /* plan.vit_pass(recipe.model, width, depth, batch, tokens, patches).buffers */
    char script[512];
    snprintf(script, sizeof script,
             "local r = require('gen.recipe').load('%s') "
             "return require('gen.plan').vit_pass(r.model, %d, %d, %ld, %ld, %ld)", recipe_path,
             width, depth, batch, pass.tokens, pass.patches);
    int mismatches = 0, planned = -1;
    if (luaL_dostring(L, script) != LUA_OK) {
        printf("  %s\n", lua_tostring(L, -1));
        mismatches = 1;
    } else {
        lua_getfield(L, -1, "buffers");
        planned = (int)luaL_len(L, -1);
        for (int i = 0; i < planned && i < n; i++) {
            lua_rawgeti(L, -1, i + 1);
            lua_getfield(L, -1, "name");
            lua_getfield(L, -2, "offset");
            lua_getfield(L, -3, "count");
            const char *name = lua_tostring(L, -3);
            long offset = (long)lua_tointeger(L, -2), count = (long)lua_tointeger(L, -1);
            if (strcmp(name, ours[i].name) || offset != ours[i].offset || count != ours[i].count) {
                if (mismatches++ < 3)
                    printf("  buffer %d: plan %s @%ld x%ld, runtime %s @%ld x%ld\n", i, name,
                           offset, count, ours[i].name, ours[i].offset, ours[i].count);
            }
            lua_pop(L, 4);
        }
        lua_pop(L, 1);
        lua_getfield(L, -1, "block_ids");
        for (int j = 0; j < depth; j++) {
            lua_rawgeti(L, -1, j + 1);
            if (lua_tointeger(L, -1) != pass.block_ids[j] && mismatches++ < 3)
                printf("  block %d: plan id %lld, runtime %d\n", j, (long long)lua_tointeger(L, -1),
                       pass.block_ids[j]);
            lua_pop(L, 1);
        }
        lua_pop(L, 2);
    }
    CHECK(label, mismatches == 0 && planned == n, "%d mismatches, %d planned vs %d buffers",
          mismatches, planned, n);
    free(ours);
    poa_vit_pass_free(&pass);
    poa_vit_free(&m);
}

int main(void) {
    poa_error e = { { 0 } };
    lua_State *L = poa_lua_open(&e);
    compare(L, "tests/recipes/tiny_vit.lua", 96, 4, 2, 32);
    compare(L, "tests/recipes/tiny_vit.lua", 32, 2, 3, 16);
    compare(L, "tests/recipes/tiny_vit.lua", 64, 3, 5, 32);
    compare(L, "recipes/vit_l16_ee1200.lua", 384, 12, 2, 224);
    compare(L, "recipes/vit_l16_ee1200.lua", 640, 17, 3, 96);
    lua_close(L);
    CHECK_EXIT();
}
