/* kernels_compiled.c: the kernel set of a width that no recipe of the build has (kernels.h,
   poa_vit_kernels_for). gen/emit.lua's c_text, run in the embedded Lua, writes the same C the
   build compiles for its own widths; the C compiler makes it a shared object in the kernel
   cache, which is loaded with dlopen. When that cannot be done, the pass runs the generic
   kernels (build/gen/vit_generic.c) and says so, once per width. */
#include "kernels.h"

#include <dlfcn.h>
#include <errno.h>
#include <lauxlib.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "files.h"
#include "lua_sources.h"
#include "nvrtc_cache.h"
#include "recipe.h"

/* The build's compiler and its flags for generated C (configure.lua passes them). */
#ifndef POA_KERNEL_CC
#define POA_KERNEL_CC "cc"
#endif
#ifndef POA_KERNEL_CFLAGS
#define POA_KERNEL_CFLAGS "-std=c11 -O2"
#endif
#ifdef POA_FP64
#define PRECISION_FLAG " -DPOA_FP64"
#else
#define PRECISION_FLAG ""
#endif
#define FLAGS POA_KERNEL_CFLAGS PRECISION_FLAG " -fPIC -shared"

/* The runtime headers the generated set includes (embedded by configure.lua). */
static const char *const headers[] = { "kernels.h", "real.h", "fast_math.h" };
enum { HEADER_COUNT = sizeof headers / sizeof headers[0], MAX_SETS = 64 };

static struct entry {
    int width, head_dim, hidden;
    const poa_vit_kernels *kernels;
    poa_vit_kernels generic; /* the generic set, when the width's could not be had */
} entries[MAX_SETS];
static int entry_count;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The compiler: $CC when set, else the build's. */
static const char *compiler(void) {
    const char *cc = getenv("CC");
    return cc && cc[0] ? cc : POA_KERNEL_CC;
}

/* Writes size bytes of text to dir/name. */
static int write_text(const char *dir, const char *name, const char *text, size_t size, poa_error *e) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return poa_fail(e, "cannot write %s: %s", path, strerror(errno));
    int ok = fwrite(text, 1, size, f) == size;
    if (fclose(f) != 0 || !ok) return poa_fail(e, "cannot write %s", path);
    return 0;
}

/* The first line of file `path` into dst (after `prefix`), for a one-line reason. */
static void first_line(const char *path, const char *prefix, char *dst, size_t size) {
    char *text = poa_read_text(path);
    const char *line = text ? text : "";
    while (*line == '\n') line++;
    int n = (int)strcspn(line, "\n");
    snprintf(dst, size, "%s%s%.*s", prefix, n ? ": " : "", n > 200 ? 200 : n, line);
    free(text);
}

/* The set's name, C text (gen/emit.lua's c_text) and fused-op header (fused_h_text). */
static int generate(int width, int head_dim, int hidden, char **name, char **c_text, char **h_text, poa_error *e) {
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    static const char chunk[] =
        "local emit = require('gen.emit')\n"
        "local set = emit.kernel_set(...)\n"
        "return set.name, emit.c_text(set, 'compiled at run time'), emit.fused_h_text({ set })\n";
    int rc = luaL_loadstring(L, chunk);
    if (rc == LUA_OK) {
        lua_pushinteger(L, width), lua_pushinteger(L, head_dim), lua_pushinteger(L, hidden);
        rc = lua_pcall(L, 3, 3, 0);
    }
    if (rc != LUA_OK) {
        rc = poa_fail(e, "gen/emit.lua: %s", lua_tostring(L, -1));
    } else {
        *name = strdup(lua_tostring(L, -3)), *c_text = strdup(lua_tostring(L, -2)), *h_text = strdup(lua_tostring(L, -1));
        rc = *name && *c_text && *h_text ? 0 : poa_fail(e, "out of memory");
    }
    lua_close(L);
    return rc;
}

static void key_part(uint8_t *digest, const char *text) {
    /* digest = sha256(digest | sha256(text)): each part hashed on its own, so none can run into the next */
    uint8_t both[64];
    memcpy(both, digest, 32);
    poa_sha256(text, strlen(text), both + 32);
    poa_sha256(both, sizeof both, digest);
}

/* The compiler's identity: the first line of `cc --version` (e.g. "cc (Debian 12.2.0-14) 12.2.0"). */
static int compiler_version(const char *dir, char *version, size_t size, poa_error *e) {
    char command[2048], log[1100];
    snprintf(log, sizeof log, "%s/version.txt", dir);
    snprintf(command, sizeof command, "%s --version", compiler());
    int rc = poa_run_logged(command, log);
    if (rc != 0) {
        char prefix[600];
        snprintf(prefix, sizeof prefix, "the C compiler '%s' does not run (%s %d; set CC)", compiler(),
                 rc < 0 ? "shell error" : "exit status", rc);
        first_line(log, prefix, e->message, sizeof e->message);
        return -1;
    }
    first_line(log, "", version, size);
    return 0;
}

/* Loads the shared object at path and its set poa_vit_kernels_<name>; NULL: e says why. */
static const poa_vit_kernels *load(const char *path, const char *name, poa_error *e) {
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        poa_fail(e, "%s", dlerror());
        return NULL;
    }
    char symbol[128];
    snprintf(symbol, sizeof symbol, "poa_vit_kernels_%s", name);
    const poa_vit_kernels *k = dlsym(handle, symbol);
    if (!k) {
        poa_fail(e, "%s: no %s", path, symbol);
        dlclose(handle);
    }
    return k;
}

/* The width's set from the cache, or compiled into it; NULL: e says why. Says what it did. */
static const poa_vit_kernels *compiled(int width, int head_dim, int hidden, poa_error *e) {
    char dir[900], build[1000], path[1100];
    char *name = NULL, *c_text = NULL, *h_text = NULL;
    const poa_vit_kernels *k = NULL;
    const double start = now();
    if (poa_cache_dir("kernels", dir, sizeof dir, e) || generate(width, head_dim, hidden, &name, &c_text, &h_text, e))
        goto done;
    /* A private build folder in the cache (made if missing): concurrent processes never write the same file. */
    snprintf(path, sizeof path, "%s/.build", dir);
    if (poa_stage_open(path, build, sizeof build, e)) goto done;
    char version[256];
    if (compiler_version(build, version, sizeof version, e)) goto cleanup;
    /* The key: the generated text, the headers it includes, the compiler, its version and flags. */
    uint8_t key[32] = { 0 };
    const char *parts[] = { "poa kernel cache 1", c_text, h_text, compiler(), version, FLAGS };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) key_part(key, parts[i]);
    const poa_lua_source *sources[HEADER_COUNT];
    for (int i = 0; i < HEADER_COUNT; i++) {
        char embedded[64];
        snprintf(embedded, sizeof embedded, "runtime/%s", headers[i]);
        if (!(sources[i] = poa_lua_source_find(embedded))) {
            poa_fail(e, "%s is not embedded in this poa", embedded);
            goto cleanup;
        }
        key_part(key, sources[i]->text);
    }
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", key[i]);
    snprintf(path, sizeof path, "%s/vit_%s.%.16s.so", dir, name, hex);
    if (access(path, R_OK) == 0) {
        if ((k = load(path, name, e))) {
            fprintf(stderr, "poa: width %d: kernel set from the cache, %s\n", width, path);
            goto cleanup;
        }
        fprintf(stderr, "poa: width %d: a bad cache entry (%s), compiling again\n", width, e->message);
    }
    for (int i = 0; i < HEADER_COUNT; i++)
        if (write_text(build, headers[i], sources[i]->text, sources[i]->size, e)) goto cleanup;
    if (write_text(build, "vit_fused.h", h_text, strlen(h_text), e) ||
        write_text(build, "set.c", c_text, strlen(c_text), e))
        goto cleanup;
    if (strchr(build, '\'')) {
        poa_fail(e, "the cache folder %s holds a quote", dir);
        goto cleanup;
    }
    char file[1200], log[1200], command[4096];
    snprintf(log, sizeof log, "%s/log.txt", build);
    snprintf(command, sizeof command, "%s %s -I'%s' -o '%s/set.so' '%s/set.c'", compiler(), FLAGS, build, build, build);
    int rc = poa_run_logged(command, log);
    if (rc != 0) {
        char prefix[600];
        snprintf(prefix, sizeof prefix, "'%s' failed on the generated set (exit status %d)", compiler(), rc);
        first_line(log, prefix, e->message, sizeof e->message);
        goto cleanup;
    }
    snprintf(file, sizeof file, "%s/set.so", build);
    if (rename(file, path) != 0) { /* the rename is atomic: a reader sees no half-written entry */
        poa_fail(e, "cannot store %s: %s", path, strerror(errno));
        goto cleanup;
    }
    if (!(k = load(path, name, e))) goto cleanup;
    fprintf(stderr, "poa: width %d (head_dim %d, MLP %d) has no kernel set in this build: generated it "
                    "(gen/emit.lua) and compiled it with %s in %.1f s into %s\n",
            width, head_dim, hidden, compiler(), now() - start, path);
cleanup:
    poa_stage_discard(build);
done:
    free(name), free(c_text), free(h_text);
    return k;
}

void poa_vit_kernels_generic_for(poa_vit_kernels *k, int width, int head_dim, int hidden) {
    extern const poa_vit_kernels poa_vit_kernels_generic;
    *k = poa_vit_kernels_generic;
    k->width = width, k->heads = width / head_dim, k->head_dim = head_dim, k->hidden = hidden;
}

const poa_vit_kernels *poa_vit_kernels_for(int width, int head_dim, int hidden) {
    const poa_vit_kernels *k = poa_vit_kernels_find(width, head_dim, hidden);
    if (k) return k;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < entry_count && !k; i++)
        if (entries[i].width == width && entries[i].head_dim == head_dim && entries[i].hidden == hidden)
            k = entries[i].kernels;
    if (!k) {
        poa_error why = { { 0 } };
        struct entry *slot = entry_count < MAX_SETS ? &entries[entry_count] : NULL;
        k = slot ? compiled(width, head_dim, hidden, &why) : NULL;
        if (!slot) poa_fail(&why, "more than %d widths without a kernel set", MAX_SETS);
        if (!k) {
            fprintf(stderr, "poa: width %d (head_dim %d, MLP %d) runs the generic kernels "
                            "(the shape read at run time, slower): no specialized set: %s\n",
                    width, head_dim, hidden, why.message);
            static poa_vit_kernels overflow;
            poa_vit_kernels *generic = slot ? &slot->generic : &overflow;
            poa_vit_kernels_generic_for(generic, width, head_dim, hidden);
            k = generic;
        }
        if (slot) {
            slot->width = width, slot->head_dim = head_dim, slot->hidden = hidden, slot->kernels = k;
            entry_count++;
        }
    }
    pthread_mutex_unlock(&lock);
    return k;
}
