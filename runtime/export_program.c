/* export_program.c: `poa export --what c|cuda|all`: the member's standalone C (CUDA) program, written by
   gen/export_c.lua (through the Lua built into poa) from the member-sized ViT's config, its
   tensors (poa's names, the names of model.safetensors, shapes) and the image sizes. */
#include <lauxlib.h>
#include <string.h>

#include "export.h"
#include "recipe.h"

/* The spec table of gen/export_c.lua's write(dir, spec), on L's stack. */
static void push_spec(lua_State *L, const char *what, const poa_export_info *info, const poa_vit *member,
                      const int *sizes, int size_count) {
    char text[64];
    lua_createtable(L, 0, 8);
    poa_vit_push_config(L, &member->config);
    lua_setfield(L, -2, "cfg");
    lua_pushinteger(L, info->width), lua_setfield(L, -2, "width");
    lua_pushinteger(L, info->depth), lua_setfield(L, -2, "depth");
    snprintf(text, sizeof text, "%dx%d", info->width, info->depth);
    lua_pushstring(L, text), lua_setfield(L, -2, "member");
    lua_pushstring(L, info->recipe_name), lua_setfield(L, -2, "recipe");
    lua_pushstring(L, poa_export_names_text(info->names)), lua_setfield(L, -2, "names");
    lua_pushstring(L, what), lua_setfield(L, -2, "what");
    lua_createtable(L, size_count, 0);
    for (int i = 0; i < size_count; i++) lua_pushinteger(L, sizes[i]), lua_rawseti(L, -2, i + 1);
    lua_setfield(L, -2, "sizes");
    lua_createtable(L, member->tensor_count, 0);
    for (int i = 0; i < member->tensor_count; i++) {
        const poa_vit_tensor *t = &member->tensors[i];
        char name[POA_VIT_NAME_SIZE];
        lua_createtable(L, 0, 3);
        lua_pushstring(L, t->name), lua_setfield(L, -2, "name");
        if (poa_export_name(info->names, t->name, name, sizeof name)) lua_pushstring(L, name), lua_setfield(L, -2, "file");
        lua_createtable(L, t->ndim, 0);
        for (int d = 0; d < t->ndim; d++) lua_pushinteger(L, t->shape[d]), lua_rawseti(L, -2, d + 1);
        lua_setfield(L, -2, "shape");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "tensors");
}

int poa_export_program(const char *dir, const char *what, const poa_export_info *info, const poa_vit *member,
                       const int *sizes,
                       int size_count, char *written, size_t written_size, poa_error *e) {
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    lua_getglobal(L, "require");
    lua_pushstring(L, "gen.export_c");
    int rc = lua_pcall(L, 1, 1, 0);
    if (rc == LUA_OK) {
        lua_getfield(L, -1, "write");
        lua_pushstring(L, dir);
        push_spec(L, what, info, member, sizes, size_count);
        rc = lua_pcall(L, 2, 1, 0);
    }
    if (rc != LUA_OK) rc = poa_fail(e, "member %dx%d: the %s program: %s", info->width, info->depth, what, lua_tostring(L, -1));
    else snprintf(written, written_size, "%s", lua_tostring(L, -1));
    lua_close(L);
    return rc;
}
