/* program.c: reads a program of gen/program.lua (program.h) and runs it on the CPU backend:
   GEMMs through OpenBLAS (backend.h), kernels of the member's generated set (kernels.h) and
   the generated layout kernels of gen/ops_runtime.lua (train_kernels.h). */
#include "program.h"

#include <assert.h>
#include <lauxlib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "lua_fields.h"
#include "recipe.h"
#include "train_kernels.h"

/* The kernels a CPU program may name, with the argument kinds of gen/graph.lua's params (b: buffer,
   s: scalar) and the call that runs one over a step's buffers P(i) and scalars S(i): the layout kernels
   of gen/ops_runtime.lua (generated: build/gen/train_kernels.c), the kernels of the member's set
   (kernels.h) in the C order of gen/ops.lua's params, column_sum (dst[:cols] += the column sums of
   src, rows x cols, rows ld apart) and add (y[:n] += x[:n]) of backend.h. */
#define P(i) (buf[i])
#define S(i) (scalar[i])
#define KERNELS(X)                                                                                                     \
    X(patchify, "bbssss", poa_patchify(P(0), P(1), S(2), S(3), S(4), S(5)))                                            \
    X(fill_rows, "bsbss", poa_fill_rows(P(0), S(1), P(2), S(3), S(4)))                                                 \
    X(layernorm_forward, "bbbbbbs", k->layernorm_forward(k, P(0), P(1), P(2), P(3), P(4), P(5), S(6)))                 \
    X(attention_forward, "bbbss", k->attention_forward(k, P(0), P(1), P(2), S(3), S(4)))                               \
    X(residual_forward, "bbbbss", k->residual_forward(k, P(0), P(1), P(2), P(3), S(4), S(5)))                          \
    X(gelu_forward, "bbs", k->gelu_forward(k, P(0), P(1), S(2)))                                                       \
    X(tokens_forward, "bbbbbsbss", k->tokens_forward(k, P(0), P(1), P(2), P(3), P(4), S(5), P(6), S(7), S(8)))         \
    X(layernorm_backward, "bbbbbbbbs", k->layernorm_backward(k, P(0), P(1), P(2), P(3), P(4), P(5), P(6), P(7), S(8))) \
    X(gelu_backward, "bbbs", k->gelu_backward(k, P(0), P(1), P(2), S(3)))                                              \
    X(attention_backward, "bbbbbss", k->attention_backward(k, P(0), P(1), P(2), P(3), P(4), S(5), S(6)))               \
    X(residual_backward, "bbbbbbss", k->residual_backward(k, P(0), P(1), P(2), P(3), P(4), P(5), S(6), S(7)))          \
    X(tokens_backward, "bbbbsbbss", k->tokens_backward(k, P(0), P(1), P(2), P(3), S(4), P(5), P(6), S(7), S(8)))       \
    X(column_sum, "bbsss", poa_column_sum_accumulate(P(0), P(1), S(2), S(3), S(4)))                                    \
    X(add, "bbs", poa_add(P(0), P(1), S(2)))

#define RUNNER(name, signature, call)                                                                   \
    static void run_##name(const poa_vit_kernels *k, void **buf, const long *scalar) { (void)k, call; }
KERNELS(RUNNER)

static const struct {
    const char *name, *signature; /* signature: the argument kinds */
    void (*run)(const poa_vit_kernels *k, void **buf, const long *scalar);
} kernel_table[] = {
#define ROW(name, signature, call) { #name, signature, run_##name },
    KERNELS(ROW)
};
enum { kernel_count = sizeof kernel_table / sizeof kernel_table[0] };

/* The lin at field `name` of table t ({b, c}); an integer counts as a constant. */
static poa_lin field_lin(lua_State *L, int t, const char *name) {
    poa_lin l = { 0, 0 };
    lua_getfield(L, t, name);
    if (lua_isinteger(L, -1)) {
        l.c = (long)lua_tointeger(L, -1);
    } else if (lua_istable(L, -1)) {
        int top = lua_gettop(L);
        l.b = poa_lua_field_integer(L, top, "b");
        l.c = poa_lua_field_integer(L, top, "c");
    }
    lua_pop(L, 1);
    return l;
}

/* The operand at field `name` (absent: value -1); value ids become 0-based. */
static poa_operand field_operand(lua_State *L, int t, const char *name) {
    poa_operand o = { -1, { 0, 0 }, 0 };
    lua_getfield(L, t, name);
    if (lua_istable(L, -1)) {
        int top = lua_gettop(L);
        o.value = (int)poa_lua_field_integer(L, top, "value") - 1;
        o.offset = field_lin(L, top, "offset");
        o.bf16 = (int)poa_lua_field_integer(L, top, "bf16");
    }
    lua_pop(L, 1);
    return o;
}

/* Copies string field `name` of table t into dst (size bytes); 0, or -1 when absent or too long. */
static int field_text(lua_State *L, int t, const char *name, char *dst, size_t size) {
    lua_getfield(L, t, name);
    const char *v = lua_tostring(L, -1);
    int rc = v && strlen(v) < size ? (snprintf(dst, size, "%s", v), 0) : -1;
    lua_pop(L, 1);
    return rc;
}

/* The index of text among names[0 .. count - 1], or -1. */
static int index_of(const char *text, const char *const *names, int count) {
    while (count-- > 0)
        if (strcmp(text, names[count]) == 0) return count;
    return -1;
}

static int read_value(lua_State *L, int t, poa_program_value *v, poa_error *e) {
    static const char *const kinds[] = { "act", "param", "input", "const", "saved", "grad", "cast" };
    char kind[16], elem[8] = "";
    if (field_text(L, t, "name", v->name, sizeof v->name) || field_text(L, t, "kind", kind, sizeof kind))
        return poa_fail(e, "program: a value without a name or kind");
    if ((v->kind = index_of(kind, kinds, 7)) < 0)
        return poa_fail(e, "program: value %s of unknown kind %s", v->name, kind);
    field_text(L, t, "elem", elem, sizeof elem);
    v->elem_size = strcmp(elem, "u8") == 0 ? 1 : strcmp(elem, "bf16") == 0 ? 2 : (int)sizeof(real);
    v->size = field_lin(L, t, "size");
    v->offset = field_lin(L, t, "offset");
    return 0;
}

/* Reads a launch table at stack index t ({name, module, grid = 3 extents, block = 3 integers}). */
static int read_launch(lua_State *L, int t, poa_program_launch *k, poa_error *e) {
    memset(k, 0, sizeof *k);
    if (field_text(L, t, "name", k->name, sizeof k->name) || field_text(L, t, "module", k->module, sizeof k->module))
        return poa_fail(e, "program: a launch without a name or module");
    int rc = 0;
    lua_getfield(L, t, "grid");
    lua_getfield(L, t, "block");
    for (int d = 0; d < 3 && rc == 0; d++) {
        lua_rawgeti(L, -2, d + 1);
        lua_rawgeti(L, -2, d + 1);
        const int x = lua_gettop(L) - 1; /* grid[d], then block[d] */
        const lua_Integer v = lua_tointeger(L, -1);
        char over[sizeof k->over] = "";
        k->block[d] = (unsigned)v;
        if (v < 1 || v > 1024) {
            rc = poa_fail(e, "launch %s: field block[%d] is not 1..1024", k->name, d + 1);
        } else if (!lua_istable(L, x)) {
            rc = poa_fail(e, "launch %s: field grid[%d] is not an extent {b, c, d}", k->name, d + 1);
        } else {
            k->grid[d] = (poa_extent){ poa_lua_field_integer(L, x, "b"), poa_lua_field_integer(L, x, "c"),
                                       poa_lua_field_integer(L, x, "d") };
            if (k->grid[d].b && field_text(L, x, "over", over, sizeof over))
                rc = poa_fail(e, "launch %s: field grid[%d].over is missing", k->name, d + 1);
            else if (k->grid[d].d < 1)
                rc = poa_fail(e, "launch %s: field grid[%d].d = %ld", k->name, d + 1, k->grid[d].d);
            else if (over[0] && k->over[0] && strcmp(over, k->over))
                rc = poa_fail(e, "launch %s: a grid over both %s and %s", k->name, k->over, over);
            else if (over[0])
                snprintf(k->over, sizeof k->over, "%s", over);
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 2);
    return rc;
}

/* A GPU program step's CUDA launches (field "launches": {name, module, grid = {3}, block = {3}}),
   appended to p->launches. */
static int read_launches(lua_State *L, int t, poa_program_step *s, poa_program *p, poa_error *e) {
    lua_getfield(L, t, "launches");
    int list = lua_gettop(L), rc = 0;
    int count = lua_istable(L, list) ? (int)luaL_len(L, list) : 0;
    if (count == 0) rc = poa_fail(e, "program: a GPU step without CUDA launches");
    poa_program_launch *grown = rc ? NULL : realloc(p->launches, sizeof *grown * (size_t)(p->launch_count + count));
    if (!rc && !grown) rc = poa_fail(e, "program: out of memory");
    if (!rc) p->launches = grown, s->first_launch = p->launch_count, s->launch_count = count;
    for (int i = 0; i < count && rc == 0; i++) {
        lua_rawgeti(L, list, i + 1);
        rc = read_launch(L, lua_gettop(L), &p->launches[p->launch_count + i], e);
        lua_pop(L, 1);
    }
    if (rc == 0) p->launch_count += count;
    lua_pop(L, 1);
    return rc;
}

static poa_program runtime_program;
static poa_error runtime_error;
static pthread_once_t runtime_once = PTHREAD_ONCE_INIT;

static void read_runtime_launches(void) {
    poa_program_step s;
    lua_State *L = poa_lua_open(&runtime_error);
    if (L && luaL_dostring(L, "return { launches = require('gen.emit').runtime_launches() }") != LUA_OK)
        poa_fail(&runtime_error, "%s", lua_tostring(L, -1));
    else if (L)
        read_launches(L, lua_gettop(L), &s, &runtime_program, &runtime_error);
    if (L) lua_close(L);
}

const poa_program *poa_runtime_launches(poa_error *e) {
    pthread_once(&runtime_once, read_runtime_launches);
    if (!runtime_error.message[0]) return &runtime_program;
    poa_fail(e, "the runtime's launches (gen/emit.lua): %s", runtime_error.message);
    return NULL;
}

const poa_program_launch *poa_runtime_launch(const char *name, int *index, poa_error *e) {
    const poa_program *p = poa_runtime_launches(e);
    for (int i = 0; p && i < p->launch_count; i++)
        if (strcmp(p->launches[i].name, name) == 0) return *index = i, &p->launches[i];
    if (p) poa_fail(e, "kernel %s is not among the runtime's launches (gen/emit.lua)", name);
    return NULL;
}

static int read_kernel(lua_State *L, int t, poa_program_step *s, poa_program *p, poa_error *e) {
    char name[POA_PROGRAM_NAME_SIZE] = "(none)";
    const int unnamed = field_text(L, t, "kernel", name, sizeof name);
    s->kernel = -1;
    for (int i = 0; i < kernel_count; i++)
        if (strcmp(name, kernel_table[i].name) == 0) s->kernel = i;
    /* a GPU program may name kernels the CPU executor has no runner of (its launches say what) */
    if (unnamed || (s->kernel < 0 && !p->gpu)) return poa_fail(e, "program: unknown kernel %s", name);
    int rc = 0;
    const char *sig = s->kernel >= 0 ? kernel_table[s->kernel].signature : NULL;
    lua_getfield(L, t, "args");
    int args = lua_gettop(L);
    s->arg_count = (int)luaL_len(L, args);
    if (sig && s->arg_count != (int)strlen(sig))
        rc = poa_fail(e, "program: kernel %s takes %zu arguments, the step gives %d", name, strlen(sig), s->arg_count);
    if (s->arg_count > POA_PROGRAM_MAX_ARGS)
        rc = poa_fail(e, "program: kernel %s: %d arguments, at most %d", name, s->arg_count, POA_PROGRAM_MAX_ARGS);
    for (int i = 0; i < s->arg_count && rc == 0; i++) {
        lua_rawgeti(L, args, i + 1);
        int a = lua_gettop(L);
        s->is_scalar[i] = lua_getfield(L, a, "scalar") != LUA_TNIL;
        lua_pop(L, 1);
        if (sig && s->is_scalar[i] != (sig[i] == 's'))
            rc = poa_fail(e, "program: kernel %s argument %d must be a %s", name, i + 1, sig[i] == 's' ? "scalar" : "buffer");
        if (s->is_scalar[i]) s->scalars[i] = field_lin(L, a, "scalar");
        else s->args[i] = field_operand(L, a, "buffer");
        if (!s->is_scalar[i] && s->args[i].value >= p->value_count)
            rc = poa_fail(e, "program: kernel %s argument %d names no value", name, i + 1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (rc == 0 && p->gpu) rc = read_launches(L, t, s, p, e);
    if (rc) snprintf(e->message + strlen(e->message), sizeof e->message - strlen(e->message), " (kernel %s)", name);
    return rc;
}

static int read_step(lua_State *L, int t, poa_program_step *s, poa_program *p, poa_error *e) {
    static const char *const kinds[] = { "gemm", "kernel", "copy" }; /* POA_STEP_* */
    char kind[8] = "";
    memset(s, 0, sizeof *s);
    field_text(L, t, "kind", kind, sizeof kind);
    s->kind = index_of(kind, kinds, 3);
    if (s->kind == POA_STEP_KERNEL) return read_kernel(L, t, s, p, e);
    if (s->kind == POA_STEP_COPY) {
        s->a = field_operand(L, t, "src");
        s->c = field_operand(L, t, "dst");
        s->m = field_lin(L, t, "count");
        if (s->a.value < 0 || s->c.value < 0) return poa_fail(e, "program: a copy without source or destination");
        return p->gpu ? read_launches(L, t, s, p, e) : 0;
    }
    if (s->kind != POA_STEP_GEMM) return poa_fail(e, "program: a step of unknown kind");
    s->ta = (int)poa_lua_field_integer(L, t, "ta");
    s->tb = (int)poa_lua_field_integer(L, t, "tb");
    s->m = field_lin(L, t, "m");
    s->n = poa_lua_field_integer(L, t, "n");
    s->k = field_lin(L, t, "k");
    s->lda = poa_lua_field_integer(L, t, "lda");
    s->ldb = poa_lua_field_integer(L, t, "ldb");
    s->ldc = poa_lua_field_integer(L, t, "ldc");
    s->alpha = poa_lua_field_number(L, t, "alpha");
    s->beta = poa_lua_field_number(L, t, "beta");
    s->a = field_operand(L, t, "a");
    s->b = field_operand(L, t, "b");
    s->c = field_operand(L, t, "c");
    s->bias = field_operand(L, t, "bias");
    if (s->bias.value >= 0 && !p->gpu) return poa_fail(e, "program: a CPU GEMM with a bias epilogue");
    return s->a.value < 0 || s->b.value < 0 || s->c.value < 0 ? poa_fail(e, "program: a GEMM without operands") : 0;
}

int poa_program_from_lua(lua_State *L, int index, poa_program *p, poa_error *e) {
    memset(p, 0, sizeof *p);
    int t = lua_absindex(L, index), rc = 0;
    if (!lua_istable(L, t)) return poa_fail(e, "program: not a table");
    lua_getfield(L, t, "values");
    lua_getfield(L, t, "steps");
    int values = lua_gettop(L) - 1, steps = lua_gettop(L);
    if (!lua_istable(L, values) || !lua_istable(L, steps)) {
        lua_pop(L, 2);
        return poa_fail(e, "program: no values or steps");
    }
    char device[4] = "";
    p->gpu = field_text(L, t, "device", device, sizeof device) == 0 && strcmp(device, "gpu") == 0;
    p->value_count = (int)luaL_len(L, values);
    p->step_count = (int)luaL_len(L, steps);
    p->values = calloc((size_t)p->value_count + 1, sizeof *p->values);
    p->steps = calloc((size_t)p->step_count + 1, sizeof *p->steps);
    if (!p->values || !p->steps) rc = poa_fail(e, "program: out of memory");
    for (int i = 0; i < p->value_count && rc == 0; i++) {
        lua_rawgeti(L, values, i + 1);
        rc = read_value(L, lua_gettop(L), &p->values[i], e);
        lua_pop(L, 1);
    }
    for (int i = 0; i < p->step_count && rc == 0; i++) {
        lua_rawgeti(L, steps, i + 1);
        rc = read_step(L, lua_gettop(L), &p->steps[i], p, e);
        if (rc) snprintf(e->message + strlen(e->message), sizeof e->message - strlen(e->message), " (step %d)", i + 1);
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
    p->arena = field_lin(L, t, "arena");
    p->output = (int)poa_lua_field_integer(L, t, "output") - 1;
    if (rc) poa_program_free(p);
    return rc;
}

void poa_program_free(poa_program *p) {
    free(p->values);
    free(p->steps);
    free(p->launches);
    memset(p, 0, sizeof *p);
}

int poa_program_find(const poa_program *p, const char *name) {
    for (int i = 0; i < p->value_count; i++)
        if (strcmp(p->values[i].name, name) == 0) return i;
    return -1;
}

#define CACHE_ENTRIES 1024
#define CACHE_BYTES (64L << 20)

static struct cache_entry {
    void *key;
    size_t size;
    poa_program program; /* never moves: cache[] is never reallocated */
} cache[CACHE_ENTRIES];
static int cache_count;
static long cache_bytes;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static const poa_program *find_locked(const void *key, size_t size) {
    for (int i = 0; i < cache_count; i++)
        if (cache[i].size == size && memcmp(cache[i].key, key, size) == 0) return &cache[i].program;
    return NULL;
}

const poa_program *poa_program_cache_find(const void *key, size_t size) {
    pthread_mutex_lock(&cache_lock);
    const poa_program *found = find_locked(key, size);
    pthread_mutex_unlock(&cache_lock);
    return found;
}

const poa_program *poa_program_cache_add(const void *key, size_t size, poa_program *p) {
    const long bytes = (long)(sizeof *p->values * (size_t)p->value_count + sizeof *p->steps * (size_t)p->step_count +
                              sizeof *p->launches * (size_t)p->launch_count);
    pthread_mutex_lock(&cache_lock);
    const poa_program *found = find_locked(key, size);
    if (found) {
        poa_program_free(p); /* built twice by two threads: keep the first */
    } else if (cache_count < CACHE_ENTRIES && cache_bytes + bytes <= CACHE_BYTES) {
        void *k = malloc(size);
        if (k) {
            memcpy(k, key, size);
            cache[cache_count] = (struct cache_entry){ k, size, *p };
            memset(p, 0, sizeof *p);
            found = &cache[cache_count++].program;
            cache_bytes += bytes;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    return found;
}

static void *pointer(const poa_program *p, void *const *bases, poa_operand o, long batch) {
    if (o.value < 0 || !bases[o.value]) return NULL;
    return (char *)bases[o.value] + (size_t)p->values[o.value].elem_size * (size_t)poa_lin_at(o.offset, batch);
}

void poa_program_run(const poa_program *p, void *const *bases, long batch, const poa_vit_kernels *k) {
    assert(!p->gpu && "poa_program_run: a GPU program (runtime/program_cuda.c runs those)");
    for (int i = 0; i < p->step_count; i++) {
        const poa_program_step *s = &p->steps[i];
        if (s->kind == POA_STEP_GEMM) {
            poa_gemm(s->ta, s->tb, poa_lin_at(s->m, batch), s->n, poa_lin_at(s->k, batch), (real)s->alpha, pointer(p, bases, s->a, batch),
                     s->lda, pointer(p, bases, s->b, batch), s->ldb, (real)s->beta, pointer(p, bases, s->c, batch),
                     s->ldc);
        } else if (s->kind == POA_STEP_COPY) {
            memcpy(pointer(p, bases, s->c, batch), pointer(p, bases, s->a, batch),
                   sizeof(real) * (size_t)poa_lin_at(s->m, batch));
        } else {
            void *buf[POA_PROGRAM_MAX_ARGS];
            long scalar[POA_PROGRAM_MAX_ARGS];
            for (int j = 0; j < s->arg_count; j++) {
                buf[j] = s->is_scalar[j] ? NULL : pointer(p, bases, s->args[j], batch);
                scalar[j] = s->is_scalar[j] ? poa_lin_at(s->scalars[j], batch) : 0;
            }
            kernel_table[s->kernel].run(k, buf, scalar);
        }
    }
}
