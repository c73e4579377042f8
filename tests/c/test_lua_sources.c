/* test_lua_sources.c: the Lua built into poa (tools/embed.lua -> build/lua_sources.c,
   runtime/lua_sources.c): every file of gen/ and models/ (*.lua) and of templates/, and the
   runtime files an exported program carries (gen/export_c.lua), is embedded, byte for byte,
   and nothing else; require() in poa's Lua state takes the embedded copy and nothing of the
   working directory; POA_HOME points it at a source tree instead, and a wrong
   POA_HOME is an error that names it. Run from the repository root (tests/run). */
#include <dirent.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "files.h"
#include "lua_sources.h"
#include "recipe.h"

/* Whether the file at path is embedded with the same bytes (else says how, and counts it). */
static void compare_file(const char *path, int *mismatches) {
    char *text = poa_read_text(path);
    const poa_lua_source *s = poa_lua_source_find(path);
    if (!text || !s || s->size != strlen(text) || memcmp(s->text, text, s->size)) {
        printf("  %s: %s\n", path, !s ? "not embedded" : "embedded bytes differ");
        (*mismatches)++;
    }
    free(text);
}

/* How many files of dir end with suffix; each must be embedded with the same bytes. */
static int compare_folder(const char *dir, const char *suffix, int *mismatches) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *entry;
    while (d && (entry = readdir(d))) {
        size_t len = strlen(entry->d_name), slen = strlen(suffix);
        if (entry->d_name[0] == '.' || len < slen || strcmp(entry->d_name + len - slen, suffix)) continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
        compare_file(path, mismatches);
        n++;
    }
    if (d) closedir(d);
    return n;
}

/* The runtime files an exported program carries (gen/export_c.lua's `copied`), each
   embedded with the same bytes; how many. */
static int compare_copied(int *mismatches) {
    poa_error e = { { 0 } };
    lua_State *L = poa_lua_open(&e);
    int n = 0;
    if (L && luaL_dostring(L, "return table.concat(require('gen.export_c').copied, ' ')") == LUA_OK) {
        char list[1024], path[600];
        snprintf(list, sizeof list, "%s", lua_tostring(L, -1));
        for (char *name = strtok(list, " "); name; name = strtok(NULL, " "), n++) {
            snprintf(path, sizeof path, "runtime/%s", name);
            compare_file(path, mismatches);
        }
    } else {
        printf("  gen/export_c.lua's list: %s\n", L ? lua_tostring(L, -1) : e.message);
        (*mismatches)++;
    }
    if (L) lua_close(L);
    return n;
}

/* Runs chunk in a fresh poa Lua state; returns its string result (static) or the error. */
static const char *run_lua(const char *chunk) {
    static char out[2048];
    poa_error e = { { 0 } };
    lua_State *L = poa_lua_open(&e);
    if (!L) {
        snprintf(out, sizeof out, "open failed: %s", e.message);
        return out;
    }
    if (luaL_dostring(L, chunk) != LUA_OK) snprintf(out, sizeof out, "error: %s", lua_tostring(L, -1));
    else snprintf(out, sizeof out, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "(nil)");
    lua_close(L);
    return out;
}

int main(void) {
    int mismatches = 0;
    int files = compare_folder("gen", ".lua", &mismatches) + compare_folder("models", ".lua", &mismatches) +
                compare_folder("templates", "", &mismatches);
    CHECK("every file of gen/, models/ and templates/ is embedded byte for byte", files > 30 && mismatches == 0,
          "%d files, %d mismatches", files, mismatches);
    int copied_mismatches = 0, copied = compare_copied(&copied_mismatches);
    /* and the header a kernel set compiled at run time includes (runtime/kernels_compiled.c) */
    compare_file("runtime/kernels.h", &copied_mismatches), copied++;
    CHECK("the runtime files an exported program carries, and kernels.h, are embedded byte for byte", copied > 0 && copied_mismatches == 0,
          "%d files, %d mismatches", copied, copied_mismatches);
    CHECK("nothing else is embedded", poa_lua_source_count == files + copied, "%d embedded, %d in the tree",
          poa_lua_source_count, files + copied);

    unsetenv("POA_HOME");
    const char *where = run_lua("require('gen.recipe'); return debug.getinfo(require('gen.recipe').load_model, 'S').source"
                                " .. ' ' .. tostring(package.loaded['poa.embedded'] ~= nil)");
    CHECK("require takes gen/ from the binary", strcmp(where, "@gen/recipe.lua true") == 0, "%s", where);
    const char *model = run_lua("return tostring(require('gen.recipe').load_model('vit').patch_size)");
    CHECK("models/vit.lua read from the binary", strcmp(model, "16") == 0, "%s", model);
    const char *missing = run_lua("return require('gen.nonexistent')");
    CHECK("a module that is not embedded is named, and no file of the working directory is tried",
          strstr(missing, "no embedded file 'gen/nonexistent.lua'") && !strstr(missing, "./gen"), "%s", missing);

    setenv("POA_HOME", ".", 1);
    where = run_lua("return debug.getinfo(require('gen.recipe').load_model, 'S').source .. ' ' .. "
                    "tostring(package.loaded['poa.embedded'] ~= nil)");
    CHECK("POA_HOME=. takes gen/ from the source tree", strcmp(where, "@./gen/recipe.lua false") == 0, "%s", where);
    setenv("POA_HOME", "tests/data", 1);
    const char *wrong = run_lua("return 1");
    CHECK("a POA_HOME without gen/recipe.lua is an error naming it",
          strstr(wrong, "open failed: POA_HOME=tests/data: no tests/data/gen/recipe.lua"), "%s", wrong);
    CHECK_EXIT();
}
