/* recipe.c: the embedded Lua that reads recipes through gen/. */
#include "recipe.h"
#include "lua_fields.h"
#include "lua_sources.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

lua_State *poa_lua_open(poa_error *e) {
    lua_State *L = luaL_newstate();
    if (!L) {
        poa_fail(e, "cannot create a Lua state");
        return NULL;
    }
    luaL_openlibs(L);
    if (poa_lua_sources_install(L, e)) {
        lua_close(L);
        return NULL;
    }
    return L;
}

int poa_lua_text(const char *chunk, const char *what, char **text, poa_error *e) {
    *text = NULL;
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    int rc = 0;
    if (luaL_loadstring(L, chunk) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
        rc = poa_fail(e, "%s: %s", what, lua_tostring(L, -1));
    } else if (!lua_isstring(L, -1)) {
        rc = poa_fail(e, "%s: the generator returned no text", what);
    } else if (!(*text = strdup(lua_tostring(L, -1)))) {
        rc = poa_fail(e, "%s: out of memory", what);
    }
    lua_close(L);
    return rc;
}

int poa_lua_push_function(lua_State *L, const char *module, const char *function, poa_error *e) {
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        poa_fail(e, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    lua_getfield(L, -1, function);
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        return poa_fail(e, "%s has no function %s", module, function);
    }
    return 0;
}

static int call(lua_State *L, int args, int results, poa_error *e) {
    if (lua_pcall(L, args, results, 0) != LUA_OK) {
        poa_fail(e, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

static void field_range(lua_State *L, int table, const char *name, int *lo, int *hi, int *step) {
    lua_getfield(L, table, name);
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    lua_rawgeti(L, -3, 3);
    *lo = (int)lua_tointeger(L, -3);
    *hi = (int)lua_tointeger(L, -2);
    *step = (int)lua_tointeger(L, -1);
    lua_pop(L, 4);
}

static void field_crops(lua_State *L, int table, const char *name, int *count, int *size,
                        double scale[2]) {
    lua_getfield(L, table, name);
    int t = lua_gettop(L);
    *count = (int)poa_lua_field_integer(L, t, "count");
    *size = (int)poa_lua_field_integer(L, t, "size");
    lua_getfield(L, t, "scale");
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    scale[0] = lua_tonumber(L, -2);
    scale[1] = lua_tonumber(L, -1);
    lua_pop(L, 4);
}

/* n numbers of the list t[name] (checked by gen/recipe.lua) into out. */
static void field_numbers(lua_State *L, int t, const char *name, double *out, int n) {
    lua_getfield(L, t, name);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        out[i] = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* recipe.augment (completed by gen/recipe.lua) */
static void field_augment(lua_State *L, int t, poa_recipe *r) {
    lua_getfield(L, t, "augment");
    int a = lua_gettop(L);
    lua_getfield(L, a, "blur");
    r->paper_blur = strcmp(lua_tostring(L, -1), "paper") == 0;
    lua_pop(L, 1);
    field_numbers(L, a, "blur_probability", r->blur_probability, 3);
    field_numbers(L, a, "sigma", r->sigma, 2);
    field_numbers(L, a, "jitter", r->jitter, 4);
    r->jitter_probability = poa_lua_field_number(L, a, "jitter_probability");
    r->grayscale_probability = poa_lua_field_number(L, a, "grayscale_probability");
    r->solarize_probability = poa_lua_field_number(L, a, "solarize_probability");
    r->flip_probability = poa_lua_field_number(L, a, "flip_probability");
    lua_pop(L, 1);
}

int poa_recipe_load(lua_State *L, const char *path, poa_recipe *r, poa_error *e) {
    return poa_recipe_load_overrides(L, path, NULL, 0, r, e);
}

int poa_recipe_load_overrides(lua_State *L, const char *path, const char *const *overrides,
                              int override_count, poa_recipe *r, poa_error *e) {
    memset(r, 0, sizeof *r);
    for (int i = 0; i < override_count; i++) {
        size_t used = strlen(r->overrides), n = strlen(overrides[i]);
        if (strchr(overrides[i], '\n') || used + n + 2 > sizeof r->overrides)
            return poa_fail(e, "%s: override '%s' is too long or has a line break", path, overrides[i]);
        snprintf(r->overrides + used, sizeof r->overrides - used, "%s%s", used ? "\n" : "", overrides[i]);
    }
    if (poa_lua_push_function(L, "gen.recipe", "load", e)) return -1;
    lua_pushstring(L, path);
    lua_createtable(L, override_count, 0);
    for (int i = 0; i < override_count; i++) {
        lua_pushstring(L, overrides[i]);
        lua_rawseti(L, -2, i + 1);
    }
    if (call(L, 2, 1, e)) return -1;
    int t = lua_gettop(L);
    lua_getfield(L, t, "name");
    snprintf(r->name, sizeof r->name, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    snprintf(r->path, sizeof r->path, "%s", path);
    field_crops(L, t, "global_crops", &r->global_crop_count, &r->global_crop_size,
                r->global_crop_scale);
    field_crops(L, t, "local_crops", &r->local_crop_count, &r->local_crop_size,
                r->local_crop_scale);
    field_augment(L, t, r);
    lua_getfield(L, t, "model");
    int m = lua_gettop(L);
    lua_getfield(L, m, "family");
    int is_vit = strcmp(lua_tostring(L, -1), "vit") == 0;
    lua_pop(L, 1);
    if (!is_vit) {
        lua_settop(L, t - 1);
        return poa_fail(e, "%s: field 'model.family': only the vit family runs so far", path);
    }
    field_range(L, m, "width", &r->width_min, &r->width_max, &r->width_step);
    field_range(L, m, "depth", &r->depth_min, &r->depth_max, &r->depth_step);
    poa_vit_config *c = &r->vit;
    c->max_width = r->width_max;
    c->max_depth = r->depth_max;
    c->head_dim = (int)poa_lua_field_integer(L, m, "head_dim");
    c->mlp_ratio = (int)poa_lua_field_integer(L, m, "mlp_ratio");
    c->patch_size = (int)poa_lua_field_integer(L, m, "patch_size");
    c->in_channels = (int)poa_lua_field_integer(L, m, "in_channels");
    c->image_size = r->global_crop_size;
    c->qkv_bias = (int)poa_lua_field_integer(L, m, "qkv_bias");
    c->proj_bias = (int)poa_lua_field_integer(L, m, "proj_bias");
    c->ffn_bias = (int)poa_lua_field_integer(L, m, "ffn_bias");
    c->layerscale = poa_lua_field_number(L, m, "layerscale");
    c->norm_eps = poa_lua_field_number(L, m, "norm_eps");
    lua_settop(L, t - 1);
    return 0;
}

char *poa_lua_call_string(lua_State *L, const char *module, const char *function,
                          const char *recipe_path, poa_error *e) {
    if (poa_lua_push_function(L, module, function, e)) return NULL;
    if (poa_lua_push_function(L, "gen.recipe", "load", e)) {
        lua_pop(L, 1);
        return NULL;
    }
    lua_pushstring(L, recipe_path);
    if (call(L, 1, 1, e) || call(L, 1, 1, e)) return NULL;
    char *text = lua_isstring(L, -1) ? strdup(lua_tostring(L, -1)) : NULL;
    if (!text) poa_fail(e, "%s.%s returned no text", module, function);
    lua_pop(L, 1);
    return text;
}

int poa_split_overrides(char *text, const char **out, int max) {
    int n = 0;
    for (char *line = strtok(text, "\n"); line && n < max; line = strtok(NULL, "\n"))
        out[n++] = line;
    return n;
}

int poa_recipe_push(lua_State *L, const poa_recipe *r, poa_error *e) {
    char text[sizeof r->overrides];
    const char *overrides[64];
    snprintf(text, sizeof text, "%s", r->overrides);
    int n = poa_split_overrides(text, overrides, 64);
    if (poa_lua_push_function(L, "gen.recipe", "load", e)) return -1;
    lua_pushstring(L, r->path);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, overrides[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return call(L, 2, 1, e);
}

int poa_recipe_member(lua_State *L, const poa_recipe *r, const char *text, int *width,
                      int *depth, poa_error *e) {
    if (poa_lua_push_function(L, "gen.space", "parse_member", e)) return -1;
    if (poa_recipe_push(L, r, e)) {
        lua_pop(L, 1);
        return -1;
    }
    lua_pushstring(L, text);
    if (call(L, 2, 2, e)) return -1;
    *width = (int)lua_tointeger(L, -2);
    *depth = (int)lua_tointeger(L, -1);
    lua_pop(L, 2);
    return 0;
}
