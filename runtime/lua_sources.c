/* lua_sources.c: require() and read_source for the Lua built into the binary (lua_sources.h). */
#include "lua_sources.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const poa_lua_source *poa_lua_source_find(const char *path) {
    for (int i = 0; i < poa_lua_source_count; i++)
        if (strcmp(poa_lua_sources[i].path, path) == 0) return &poa_lua_sources[i];
    return NULL;
}

/* "gen.recipe" -> "gen/recipe.lua"; 0 when it does not fit. */
static int module_path(const char *module, char *path, size_t size) {
    if (strlen(module) + 5 > size) return 0;
    size_t i = 0;
    for (; module[i]; i++) path[i] = module[i] == '.' ? '/' : module[i];
    memcpy(path + i, ".lua", 5);
    return 1;
}

/* package.searchers entry: the loader of an embedded module, or a line saying it is not one. */
static int search_embedded(lua_State *L) {
    const char *module = luaL_checkstring(L, 1);
    char path[256], chunkname[260];
    const poa_lua_source *s = module_path(module, path, sizeof path) ? poa_lua_source_find(path) : NULL;
    if (!s) {
        lua_pushfstring(L, "no embedded file '%s' in poa", module_path(module, path, sizeof path) ? path : module);
        return 1;
    }
    snprintf(chunkname, sizeof chunkname, "@%s", path);
    if (luaL_loadbufferx(L, s->text, s->size, chunkname, "t") != LUA_OK)
        return luaL_error(L, "error loading embedded module '%s': %s", module, lua_tostring(L, -1));
    lua_pushstring(L, path);
    return 2;
}

/* poa.embedded.read(path) -> text, or nil and a message. */
static int read_embedded(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    const poa_lua_source *s = poa_lua_source_find(path);
    if (!s) {
        luaL_pushfail(L);
        lua_pushfstring(L, "%s: no such file embedded in poa", path);
        return 2;
    }
    lua_pushlstring(L, s->text, s->size);
    return 1;
}

static int use_source_tree(lua_State *L, const char *home, poa_error *e) {
    char probe[1100];
    const char *slash = home[strlen(home) - 1] == '/' ? "" : "/";
    snprintf(probe, sizeof probe, "%s%sgen/recipe.lua", home, slash);
    if (access(probe, R_OK) != 0)
        return poa_fail(e, "POA_HOME=%s: no %s there (POA_HOME names a poa source tree; unset it to "
                           "use the Lua built into poa)", home, probe);
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s%s?.lua", home, slash);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    return 0;
}

/* package.loaded["poa.install"] = { recipe_dirs = { PREFIX/share/poa/recipes, PREFIX/recipes } }
   (PREFIX: the folder above the running binary's): where gen/recipe.lua's find looks for a recipe given
   by name, installed (ninja install) or in the source tree that built build/poa. */
static void register_recipe_dirs(lua_State *L) {
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_createtable(L, 0, 1);
    lua_createtable(L, 2, 0);
    if (n > 0) {
        exe[n] = 0;
        for (int up = 0; up < 2; up++) { /* PREFIX/bin/poa -> PREFIX */
            char *slash = strrchr(exe, '/');
            if (slash) *slash = 0;
        }
        lua_pushfstring(L, "%s/share/poa/recipes", exe);
        lua_rawseti(L, -2, 1);
        lua_pushfstring(L, "%s/recipes", exe);
        lua_rawseti(L, -2, 2);
    }
    lua_setfield(L, -2, "recipe_dirs");
    lua_setfield(L, -2, "poa.install");
    lua_pop(L, 2);
}

int poa_lua_sources_install(lua_State *L, poa_error *e) {
    register_recipe_dirs(L);
    const char *home = getenv("POA_HOME");
    if (home && home[0]) return use_source_tree(L, home, e);
    lua_getglobal(L, "package");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "path");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "cpath");
    lua_getfield(L, -1, "searchers"); /* after package.preload's searcher, before the rest */
    for (lua_Integer i = (lua_Integer)luaL_len(L, -1); i >= 2; i--) {
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, search_embedded);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 1);
    lua_getfield(L, -1, "loaded");
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, read_embedded);
    lua_setfield(L, -2, "read");
    lua_setfield(L, -2, "poa.embedded");
    lua_pop(L, 2);
    return 0;
}

void poa_lua_sources_describe(char *text, size_t size) {
    const char *home = getenv("POA_HOME");
    size_t bytes = 0;
    for (int i = 0; i < poa_lua_source_count; i++) bytes += poa_lua_sources[i].size;
    if (home && home[0]) snprintf(text, size, "from the source tree POA_HOME=%s", home);
    else snprintf(text, size, "embedded (%d files, %zu KiB)", poa_lua_source_count, bytes / 1024);
}
