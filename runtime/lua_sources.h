/* lua_sources.h: where the runtime's Lua finds gen/, models/ and templates/: the copy built
   into the binary (build/lua_sources.c, written by tools/embed.lua), or a source tree named by
   the POA_HOME environment variable (development: edit gen/ and run poa without rebuilding). */
#ifndef POA_LUA_SOURCES_H
#define POA_LUA_SOURCES_H

#include <lua.h>
#include <stddef.h>

#include "error.h"

typedef struct poa_lua_source {
    const char *path; /* in the tree: "gen/recipe.lua", "models/vit.lua", "templates/x.tmpl" */
    const char *text;
    size_t size;
} poa_lua_source;

extern const poa_lua_source poa_lua_sources[];
extern const int poa_lua_source_count;

/* The embedded file at path, or NULL. */
const poa_lua_source *poa_lua_source_find(const char *path);

/* Points L's require at the embedded gen/ and models/ (a searcher; package.path and cpath
   emptied so that nothing of the working directory is picked up) and registers
   package.loaded["poa.embedded"] = { read = function(path) -> text | nil, message }, which
   gen/recipe.lua's read_source uses for models/ and templates/. With POA_HOME set, require
   reads $POA_HOME/gen and $POA_HOME/models instead (an error if $POA_HOME/gen/recipe.lua is
   missing). Either way package.loaded["poa.install"].recipe_dirs lists where shipped recipes
   are looked up by name (gen/recipe.lua's find): share/poa/recipes of the binary's install
   prefix, and recipes/ of the source tree holding build/poa. */
int poa_lua_sources_install(lua_State *L, poa_error *e);

/* "embedded (N files)" or "POA_HOME=DIR": what poa_lua_sources_install uses, for --version. */
void poa_lua_sources_describe(char *text, size_t size);

#endif
