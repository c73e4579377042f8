/* lua_fields.h: reading a field of a Lua table at stack index t, for the recipe reader and the
   program reader. A missing field reads as 0; a boolean as 0 or 1. */
#ifndef POA_LUA_FIELDS_H
#define POA_LUA_FIELDS_H

#include <lua.h>

static inline long poa_lua_field_integer(lua_State *L, int t, const char *name) {
    lua_getfield(L, t, name);
    long v = lua_isboolean(L, -1) ? lua_toboolean(L, -1) : (long)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

static inline double poa_lua_field_number(lua_State *L, int t, const char *name) {
    lua_getfield(L, t, name);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

#endif
