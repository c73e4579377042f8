/* cuda_vit.c: one elastic ViT member's forward and backward on the GPU (see cuda_vit.h).
   The step functions below follow runtime/vit.c line by line; every device pointer is the
   CPU's pointer with the host buffer's base replaced by the device buffer's. */
#include "cuda_vit.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "nvrtc_cache.h"
#include "recipe.h"

/* ---- the kernel table and its expressions ---- */

/* Copies the text of a parenthesised list starting at s (at '(') into up to n parts split at
   top-level commas, trimmed; returns the number of parts, -1 when malformed; *end after ')'. */
static int split_list(const char *s, char parts[][96], int n, size_t part_size, const char **end) {
    if (*s != '(') return -1;
    int depth = 0, count = 0;
    const char *start = s + 1;
    for (const char *c = s; *c && *c != '\n'; c++) {
        if (*c == '(') depth++;
        if (*c == ')') depth--;
        if ((*c == ',' && depth == 1) || depth == 0) {
            if (count == n) return -1;
            const char *a = start, *b = c;
            while (a < b && isspace((unsigned char)*a)) a++;
            while (b > a && isspace((unsigned char)b[-1])) b--;
            if ((size_t)(b - a) >= part_size || b == a) return -1;
            memcpy(parts[count], a, (size_t)(b - a));
            parts[count][b - a] = 0;
            count++;
            start = c + 1;
            if (depth == 0) {
                *end = c + 1;
                return count;
            }
        }
    }
    return -1;
}

/* dst = src, cut to size - 1 characters. */
static void copy_text(char *dst, size_t size, const char *src) {
    size_t n = strlen(src);
    if (n >= size) n = size - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

int poa_cuda_kernel_table(const char *source, poa_cuda_kernel_entry **entries, int *count,
                          poa_error *e) {
    *entries = NULL;
    *count = 0;
    const char *at = strstr(source, "// Kernels, in launch order");
    if (!at) return poa_fail(e, "kernel source has no \"// Kernels, in launch order\" table");
    at = strchr(at, '\n');
    int capacity = 0;
    while (at && strncmp(at + 1, "//   ", 5) == 0) {
        const char *line = at + 6, *eol = strchr(line, '\n');
        if (!eol) eol = line + strlen(line);
        poa_cuda_kernel_entry k;
        memset(&k, 0, sizeof k);
        size_t name_length = strcspn(line, " \n");
        const char *grid = strstr(line, "grid ("), *block = strstr(line, "block (");
        if (name_length == 0 || name_length >= sizeof k.name || !grid || !block || grid > eol ||
            block > eol) {
            free(*entries);
            *entries = NULL;
            return poa_fail(e, "kernel table: cannot read the line \"%.*s\"", (int)(eol - line), line);
        }
        memcpy(k.name, line, name_length);
        char parts[3][96];
        const char *end;
        int g = split_list(grid + 5, parts, 3, sizeof parts[0], &end);
        for (int i = 0; i < 3; i++) copy_text(k.grid[i], sizeof k.grid[i], i < g ? parts[i] : "1");
        int b = split_list(block + 6, parts, 3, sizeof k.block[0], &end);
        for (int i = 0; i < 3; i++) copy_text(k.block[i], sizeof k.block[i], i < b ? parts[i] : "1");
        if (g < 1 || b < 1) {
            free(*entries);
            *entries = NULL;
            return poa_fail(e, "kernel table: bad grid or block in \"%.*s\"", (int)(eol - line), line);
        }
        if (*count == capacity) {
            capacity = capacity ? 2 * capacity : 32;
            poa_cuda_kernel_entry *grown = realloc(*entries, sizeof *grown * (size_t)capacity);
            if (!grown) {
                free(*entries);
                *entries = NULL;
                return poa_fail(e, "kernel table: out of memory");
            }
            *entries = grown;
        }
        (*entries)[(*count)++] = k;
        at = *eol ? eol : NULL;
    }
    if (*count == 0) return poa_fail(e, "kernel table: no kernels listed");
    return 0;
}

typedef struct parser {
    const char *s;
    const poa_cuda_dims *dims;
    const char *expression;
    poa_error *e;
    int failed;
} parser;

static long parse_sum(parser *p);

static void skip_space(parser *p) {
    while (isspace((unsigned char)*p->s)) p->s++;
}

static long parse_factor(parser *p) {
    skip_space(p);
    if (*p->s == '(') {
        p->s++;
        long v = parse_sum(p);
        skip_space(p);
        if (*p->s != ')') {
            if (!p->failed) poa_fail(p->e, "expression \"%s\": missing )", p->expression);
            p->failed = 1;
            return 1;
        }
        p->s++;
        return v;
    }
    if (isdigit((unsigned char)*p->s)) {
        char *end;
        long v = strtol(p->s, &end, 10);
        p->s = end;
        return v;
    }
    if (isalpha((unsigned char)*p->s) || *p->s == '_') {
        const char *start = p->s;
        while (isalnum((unsigned char)*p->s) || *p->s == '_') p->s++;
        size_t n = (size_t)(p->s - start);
        const struct { const char *name; long value; } names[] = {
            { "rows", p->dims->rows }, { "batch", p->dims->batch }, { "tokens", p->dims->tokens },
            { "T", p->dims->tokens }, { "patches", p->dims->patches }, { "WIDTH", p->dims->width },
            { "HEADS", p->dims->heads }, { "HEAD_DIM", p->dims->head_dim }, { "HIDDEN", p->dims->hidden },
            { "n", p->dims->n }, { "k", p->dims->k }, { "chunks", p->dims->chunks },
            { "TRAIN_CHUNK", p->dims->train_chunk },
        };
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strlen(names[i].name) == n && strncmp(names[i].name, start, n) == 0) return names[i].value;
        if (!p->failed) poa_fail(p->e, "expression \"%s\": unknown name %.*s", p->expression, (int)n, start);
        p->failed = 1;
        return 1;
    }
    if (!p->failed) poa_fail(p->e, "expression \"%s\": unexpected \"%s\"", p->expression, p->s);
    p->failed = 1;
    return 1;
}

static long parse_product(parser *p) {
    long v = parse_factor(p);
    for (;;) {
        skip_space(p);
        char op = *p->s;
        if (op != '*' && op != '/') return v;
        p->s++;
        long w = parse_factor(p);
        if (op == '*') {
            v *= w;
        } else if (w == 0) {
            if (!p->failed) poa_fail(p->e, "expression \"%s\": division by zero", p->expression);
            p->failed = 1;
        } else {
            v /= w;
        }
    }
}

static long parse_sum(parser *p) {
    long v = parse_product(p);
    for (;;) {
        skip_space(p);
        char op = *p->s;
        if (op != '+' && op != '-') return v;
        p->s++;
        long w = parse_product(p);
        v = op == '+' ? v + w : v - w;
    }
}

int poa_cuda_eval(const char *expression, const poa_cuda_dims *dims, long *value, poa_error *e) {
    parser p = { .s = expression, .dims = dims, .expression = expression, .e = e };
    *value = parse_sum(&p);
    skip_space(&p);
    if (!p.failed && *p.s) {
        poa_fail(e, "expression \"%s\": trailing \"%s\"", expression, p.s);
        p.failed = 1;
    }
    return p.failed ? -1 : 0;
}

int poa_cuda_source_defines(const char *source, const char *name) {
    const size_t n = strlen(name);
    static const char key[] = "extern \"C\" __global__";
    static const char bounds[] = "__launch_bounds__";
    for (const char *at = strstr(source, key); at; at = strstr(at + 1, key)) {
        const char *paren = strchr(at + sizeof key - 1, '(');
        if (!paren) return 0;
        if ((size_t)(paren - at) >= sizeof bounds - 1 &&
            strncmp(paren - (sizeof bounds - 1), bounds, sizeof bounds - 1) == 0) {
            const char *close = strchr(paren, ')');
            if (!close || !(paren = strchr(close, '('))) return 0;
        }
        const char *end = paren;
        while (end > at && isspace((unsigned char)end[-1])) end--;
        const char *begin = end;
        while (begin > at && (isalnum((unsigned char)begin[-1]) || begin[-1] == '_')) begin--;
        if ((size_t)(end - begin) == n && strncmp(begin, name, n) == 0) return 1;
    }
    return 0;
}

static const char *sources_lua =
    "local path, width = ...\n"
    "local emit = require('gen.emit')\n"
    "local template = require('gen.template')\n"
    "local loaded, sets = emit.collect({ path })\n"
    "if #loaded == 0 then error(path .. ': the family has no CUDA kernels (only vit has)', 0) end\n"
    "for _, set in ipairs(sets) do\n"
    "  if set.width == width then\n"
    "    return 'vit_' .. set.name .. '.cu', emit.cu_text(set), template.fill('vit_glue.cu.tmpl', {})\n"
    "  end\n"
    "end\n"
    "error(string.format('%s: no kernel set of width %d', path, width), 0)\n";

int poa_cuda_vit_sources(const char *recipe_path, int width, char **kernel_set, char **glue,
                         char *name, size_t name_size, poa_error *e) {
    if (kernel_set) *kernel_set = NULL;
    if (glue) *glue = NULL;
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    int rc = 0;
    if (luaL_loadstring(L, sources_lua) != LUA_OK) {
        rc = poa_fail(e, "%s", lua_tostring(L, -1));
    } else {
        lua_pushstring(L, recipe_path);
        lua_pushinteger(L, width);
        if (lua_pcall(L, 2, 3, 0) != LUA_OK) {
            rc = poa_fail(e, "%s", lua_tostring(L, -1));
        } else {
            if (name && name_size) snprintf(name, name_size, "%s", lua_tostring(L, -3));
            if (kernel_set) *kernel_set = strdup(lua_tostring(L, -2));
            if (glue) *glue = strdup(lua_tostring(L, -1));
            if ((kernel_set && !*kernel_set) || (glue && !*glue)) rc = poa_fail(e, "out of memory");
        }
    }
    lua_close(L);
    return rc;
}

/* ---- the pass ---- */

enum { GLUE_PATCHIFY, GLUE_FILL_ROWS, GLUE_COLUMN_SUM, GLUE_ADD, GLUE_COPY, GLUE_FILL, GLUE_TO_BF16,
       GLUE_GATHER_ROWS, GLUE_SCATTER_ADD_ROWS, GLUE_COUNT };
_Static_assert(sizeof ((poa_cuda_vit_pass *)0)->glue / sizeof(CUfunction) == GLUE_COUNT, "glue table size");
static const char *const glue_names[GLUE_COUNT] = {
    "poa_glue_patchify", "poa_glue_fill_rows", "poa_glue_column_sum_accumulate", "poa_glue_add",
    "poa_glue_copy", "poa_glue_fill", "poa_glue_to_bf16", "poa_glue_gather_rows", "poa_glue_scatter_add_rows",
};

/* Fake device addresses of trace mode: region r starts at r << 40. */
enum { REGION_PARAMS = 1, REGION_GRADS, REGION_ARENA, REGION_ONES, REGION_RESAMPLE, REGION_IMAGES,
       REGION_MASK, REGION_DROP, REGION_PARAMS_BF16, REGION_ARENA_BF16, REGION_RESAMPLE_BF16 };

static const char *const static_names[] = {
    "patches", "patch_tokens", "pos", "x_final", "norm_mean", "norm_rstd", "out", "g", "ln", "grad.x",
    "grad.ln", "grad.qkv", "grad.attn", "grad.h", "grad.u", "grad.g", "grad.work",
    "grad.patch_tokens", "grad.pos",
};
static const char *const block_names[] = {
    "x_in", "ln1_mean", "ln1_rstd", "qkv", "probs", "attn", "h1", "x_mid",
    "ln2_mean", "ln2_rstd", "u", "h2",
};

static long buffer_offset(const poa_cuda_vit_pass *p, const char *name) {
    for (int i = 0; i < p->buffer_count; i++)
        if (strcmp(p->buffers[i].name, name) == 0) return p->buffers[i].offset;
    return -1;
}

/* Device address of an arena buffer (checked to exist at init). */
static CUdeviceptr A(const poa_cuda_vit_pass *p, const char *name) {
    return p->arena + sizeof(float) * (size_t)buffer_offset(p, name);
}

static CUdeviceptr AB(const poa_cuda_vit_pass *p, int j, const char *name) {
    char full[48];
    snprintf(full, sizeof full, "block%d.%s", j, name);
    return A(p, full);
}

/* Parameter (or gradient) address of an element offset; 0 (null) for an absent tensor. */
static CUdeviceptr P(const poa_cuda_vit_pass *p, long offset) {
    return offset >= 0 ? p->params + sizeof(float) * (size_t)offset : 0;
}
static CUdeviceptr G(const poa_cuda_vit_pass *p, long offset) {
    return offset >= 0 ? p->grads + sizeof(float) * (size_t)offset : 0;
}
static CUdeviceptr F(CUdeviceptr base, long elements) { return base + sizeof(float) * (size_t)elements; }

static int record(poa_cuda_vit_pass *p, const poa_cuda_step *s, poa_error *e) {
    if (!p->trace) return 0;
    if (p->step_count == p->step_capacity) {
        int capacity = p->step_capacity ? 2 * p->step_capacity : 256;
        poa_cuda_step *grown = realloc(p->steps, sizeof *grown * (size_t)capacity);
        if (!grown) return poa_fail(e, "trace: out of memory");
        p->steps = grown, p->step_capacity = capacity;
    }
    p->steps[p->step_count] = *s;
    p->steps[p->step_count].inside_mark = p->in_mark;
    p->step_count++;
    return 0;
}

static int mark(poa_cuda_vit_pass *p, const char *name, poa_error *e) {
    poa_cuda_step s = { .kind = POA_CUDA_STEP_MARK };
    snprintf(s.name, sizeof s.name, "%s", name);
    p->in_mark = 0;
    int rc = record(p, &s, e);
    p->in_mark = 1;
    return rc;
}

static void end_mark(poa_cuda_vit_pass *p) { p->in_mark = 0; }

/* A generated kernel by name, with the geometry of its table entry. */
#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

static int launch(poa_cuda_vit_pass *p, const char *name, void **args, int arg_count, poa_error *e) {
    int i = 0;
    while (i < p->kernel_count && strcmp(p->kernels[i].name, name)) i++;
    if (i == p->kernel_count)
        return poa_fail(e, "member %dx%d: kernel %s is not in the kernel set's table", p->width,
                        p->depth, name);
    poa_cuda_step s = { .kind = POA_CUDA_STEP_KERNEL, .arg_count = arg_count };
    snprintf(s.name, sizeof s.name, "%s", name);
    memcpy(s.grid, p->geometry[i][0], sizeof s.grid);
    memcpy(s.block, p->geometry[i][1], sizeof s.block);
    if (record(p, &s, e)) return -1;
    return poa_cuda_exec_launch(&p->exec, p->functions[i], p->set_name, name, p->geometry[i][0], p->geometry[i][1],
                                args, e);
}

/* A glue kernel over `elements` threads (or `elements` columns for the column sum). */
static int glue(poa_cuda_vit_pass *p, int which, long elements, void **args, int arg_count,
                const poa_cuda_step *step, poa_error *e) {
    poa_cuda_step s = *step;
    s.arg_count = arg_count;
    if (record(p, &s, e)) return -1;
    if (!poa_cuda_exec_runs(&p->exec) || elements <= 0) return 0;
    unsigned grid[3] = { 1, 1, 1 }, block[3] = { 256, 1, 1 };
    if (which == GLUE_COLUMN_SUM) {
        grid[0] = (unsigned)((elements + 31) / 32);
        block[0] = 32, block[1] = 8;
    } else {
        long blocks = (elements + 255) / 256;
        if (blocks > 0x7fffffffL) return poa_fail(e, "%s: %ld elements is too many", glue_names[which], elements);
        grid[0] = (unsigned)blocks;
    }
    return poa_cuda_exec_launch(&p->exec, p->glue[which], "vit_glue.cu", glue_names[which], grid, block, args, e);
}

static int copy(poa_cuda_vit_pass *p, CUdeviceptr dst, CUdeviceptr src, long n, poa_error *e) {
    poa_cuda_step s = { .kind = POA_CUDA_STEP_COPY, .name = "copy", .src = src, .dst = dst, .count = n };
    void *args[] = { &dst, &src, &n };
    return glue(p, GLUE_COPY, n, args, ARGC(args), &s, e);
}

static int add(poa_cuda_vit_pass *p, CUdeviceptr y, CUdeviceptr x, long n, poa_error *e) {
    poa_cuda_step s = { .kind = POA_CUDA_STEP_AXPY, .name = "axpy", .src = x, .dst = y, .count = n };
    void *args[] = { &y, &x, &n };
    return glue(p, GLUE_ADD, n, args, ARGC(args), &s, e);
}

static int fill(poa_cuda_vit_pass *p, CUdeviceptr dst, float value, long n, poa_error *e) {
    poa_cuda_step s = { .kind = POA_CUDA_STEP_GLUE, .name = "poa_glue_fill", .dst = dst, .count = n };
    void *args[] = { &dst, &value, &n };
    return glue(p, GLUE_FILL, n, args, ARGC(args), &s, e);
}

static int fill_rows(poa_cuda_vit_pass *p, CUdeviceptr dst, long ld, CUdeviceptr vec, long rows,
                     long cols, poa_error *e) {
    poa_cuda_step s = { .kind = POA_CUDA_STEP_GLUE, .name = "poa_glue_fill_rows", .dst = dst,
                        .src = vec, .m = rows, .n = cols, .ldc = ld };
    void *args[] = { &dst, &ld, &vec, &rows, &cols };
    return glue(p, GLUE_FILL_ROWS, rows * cols, args, ARGC(args), &s, e);
}

/* dst[j] += sum of the rows of src (rows x cols, ld): the bias gradient of a linear layer. */
static int bias_grad(poa_cuda_vit_pass *p, const char *what, CUdeviceptr dst, CUdeviceptr src, long ld,
                     long rows, long cols, poa_error *e) {
    poa_cuda_step s = { .kind = POA_CUDA_STEP_BIAS_GRAD, .src = src, .dst = dst, .m = rows,
                        .n = cols, .lda = ld };
    snprintf(s.name, sizeof s.name, "%s bgrad", what);
    void *args[] = { &dst, &src, &ld, &rows, &cols };
    return glue(p, GLUE_COLUMN_SUM, cols, args, ARGC(args), &s, e);
}

/* The bf16 form of a GEMM operand stored as rows x cols, ld apart, at an fp32 address: the
   parameter's bf16 shadow, the resampling matrix's bf16 copy, or, for an arena buffer, its
   block cast now into cast slot `slot` (same ld). */
static int bf16_operand(poa_cuda_vit_pass *p, CUdeviceptr x, long rows, long cols, long ld, int slot,
                        CUdeviceptr *out, poa_error *e) {
    const size_t f = sizeof(float);
    if (x >= p->params && x < p->params + f * (size_t)p->model->parameter_count) {
        *out = p->params_bf16 + (x - p->params) / 2;
        return 0;
    }
    if (p->resample && x == p->resample) {
        *out = p->resample_bf16;
        return 0;
    }
    if (x >= p->arena && x < p->arena + f * (size_t)p->arena_count) {
        if ((rows - 1) * ld + cols > p->cast_capacity)
            return poa_fail(e, "member %dx%d: a GEMM operand of %ld x %ld (ld %ld) exceeds the cast slot of %ld", p->width,
                            p->depth, rows, cols, ld, p->cast_capacity);
        CUdeviceptr dst = p->cast_bf16 + 2 * (size_t)(slot * p->cast_capacity);
        poa_cuda_step s = { .kind = POA_CUDA_STEP_GLUE, .name = "poa_glue_to_bf16", .src = x, .dst = dst,
                            .m = rows, .n = cols, .ldc = ld };
        void *args[] = { &dst, &x, &ld, &rows, &cols };
        *out = dst;
        return glue(p, GLUE_TO_BF16, rows * cols, args, ARGC(args), &s, e);
    }
    return poa_fail(e, "member %dx%d: a GEMM operand has no bf16 form", p->width, p->depth);
}

/* Row-major C = alpha op(A) op(B) + beta C (+ bias[j] when bias_epilogue: cuBLASLt's BIAS
   epilogue; the fp32 pass adds the bias by a bias-rows step before, so bias only names it). In
   a bf16 pass, A and B are bf16 (bf16_operand) and C stays fp32, accumulated in fp32. */
static int gemm(poa_cuda_vit_pass *p, const char *what, int ta, int tb, long m, long n, long k,
                float alpha, CUdeviceptr a, long lda, CUdeviceptr b, long ldb, float beta,
                CUdeviceptr c, long ldc, CUdeviceptr bias, int bias_epilogue, poa_error *e) {
    poa_cublaslt_call call = { .transpose_a = ta, .transpose_b = tb, .m = m, .n = n, .k = k, .alpha = alpha,
                               .beta = beta, .a = a, .b = b, .c = c, .lda = lda, .ldb = ldb, .ldc = ldc,
                               .type_a = POA_LT_F32, .type_b = POA_LT_F32, .type_c = POA_LT_F32,
                               .epilogue = bias_epilogue ? POA_LT_EPILOGUE_BIAS : POA_LT_EPILOGUE_NONE,
                               .bias = bias_epilogue ? bias : 0 };
    if (p->bf16) {
        if (bf16_operand(p, a, ta ? k : m, ta ? m : k, lda, 0, &call.a, e) ||
            bf16_operand(p, b, tb ? n : k, tb ? k : n, ldb, 1, &call.b, e))
            return -1;
        call.type_a = call.type_b = POA_LT_BF16;
    }
    poa_cuda_step s = { .kind = POA_CUDA_STEP_GEMM, .trans_a = ta, .trans_b = tb, .m = m, .n = n,
                        .k = k, .lda = lda, .ldb = ldb, .ldc = ldc, .alpha = alpha, .beta = beta,
                        .a = a, .b = b, .c = c, .bias = bias };
    snprintf(s.name, sizeof s.name, "%s", what);
    if (record(p, &s, e)) return -1;
    char label[96];
    snprintf(label, sizeof label, "%s of member %dx%d", what, p->width, p->depth);
    return poa_cuda_exec_gemm(&p->exec, &call, label, e);
}

/* y (rows x n, ldy) = alpha x (rows x k) W[:n, :k]^T + bias[:n]; W rows ldw apart. */
static int linear_forward(poa_cuda_vit_pass *p, const char *what, CUdeviceptr y, long ldy,
                          CUdeviceptr x, long k, long weight, long ldw, long bias, long rows,
                          long n, float alpha, poa_error *e) {
    if (p->bf16) /* the bias by cuBLASLt's epilogue */
        return gemm(p, what, 0, 1, rows, n, k, alpha, x, k, P(p, weight), ldw, 0, y, ldy, P(p, bias), bias >= 0, e);
    if (fill_rows(p, y, ldy, P(p, bias), rows, n, e)) return -1;
    return gemm(p, what, 0, 1, rows, n, k, alpha, x, k, P(p, weight), ldw, 1, y, ldy, P(p, bias), 0, e);
}

/* From dy (rows x n, ldy): dx (rows x k) = alpha dy W[:n, :k] + beta dx (when dx is not 0),
   dW[:n, :k] += alpha dy^T x, db += column sums of dy: the plan's order. */
static int linear_backward(poa_cuda_vit_pass *p, const char *what, CUdeviceptr dx, float beta,
                           CUdeviceptr dy, long ldy, CUdeviceptr x, long k, long weight, long ldw,
                           long bias, long rows, long n, float alpha, poa_error *e) {
    char name[64];
    if (dx) {
        snprintf(name, sizeof name, "%s dgrad", what);
        if (gemm(p, name, 0, 0, rows, k, n, alpha, dy, ldy, P(p, weight), ldw, beta, dx, k, 0, 0, e)) return -1;
    }
    snprintf(name, sizeof name, "%s wgrad", what);
    if (gemm(p, name, 1, 0, n, k, rows, alpha, dy, ldy, x, k, 1, G(p, weight), ldw, 0, 0, e)) return -1;
    if (bias >= 0 && bias_grad(p, what, G(p, bias), dy, ldy, rows, n, e)) return -1;
    return 0;
}

static CUdeviceptr drop_scale_of(const poa_cuda_vit_pass *p, int j, int branch) {
    return p->has_drop_scale ? F(p->drop_scale, ((long)j * 2 + branch) * p->batch) : 0;
}

static CUdeviceptr gamma_of(const poa_cuda_vit_pass *p, long offset) {
    return offset >= 0 ? P(p, offset) : p->ones;
}

static int layernorm_forward(poa_cuda_vit_pass *p, CUdeviceptr y, CUdeviceptr mean, CUdeviceptr rstd,
                             CUdeviceptr x, CUdeviceptr w, CUdeviceptr b, poa_error *e) {
    long rows = p->rows;
    void *args[] = { &y, &mean, &rstd, &x, &w, &b, &rows };
    return launch(p, "layernorm_forward", args, ARGC(args), e);
}

static int layernorm_backward(poa_cuda_vit_pass *p, CUdeviceptr dx, CUdeviceptr dw, CUdeviceptr db,
                              CUdeviceptr dy, CUdeviceptr x, CUdeviceptr mean, CUdeviceptr rstd,
                              CUdeviceptr w, poa_error *e) {
    long rows = p->rows;
    void *args[] = { &dx, &dw, &db, &dy, &x, &mean, &rstd, &w, &rows };
    if (launch(p, "layernorm_backward", args, ARGC(args), e)) return -1;
    return launch(p, "layernorm_backward_dw_db", args, ARGC(args), e);
}

static int residual_forward(poa_cuda_vit_pass *p, CUdeviceptr x, CUdeviceptr h, CUdeviceptr gamma,
                            CUdeviceptr scale, poa_error *e) {
    long batch = p->batch, tokens = p->tokens;
    void *args[] = { &x, &h, &gamma, &scale, &batch, &tokens };
    return launch(p, "residual_forward", args, ARGC(args), e);
}

/* dgamma 0 (no LayerScale in the model): the dgamma column sums are not launched. */
static int residual_backward(poa_cuda_vit_pass *p, CUdeviceptr dh, CUdeviceptr dgamma, CUdeviceptr dx,
                             CUdeviceptr h, CUdeviceptr gamma, CUdeviceptr scale, poa_error *e) {
    long batch = p->batch, tokens = p->tokens;
    void *args[] = { &dh, &dgamma, &dx, &h, &gamma, &scale, &batch, &tokens };
    if (launch(p, "residual_backward", args, ARGC(args), e)) return -1;
    return dgamma ? launch(p, "residual_backward_dgamma", args, ARGC(args), e) : 0;
}

/* Kernel i of the fused set (0 forward, 1 backward, 2 its dw/db sums, 3 its dgamma sums). */
static int fused_launch(poa_cuda_vit_pass *p, int i, void **args, int arg_count, poa_error *e) {
    poa_cuda_step s = { .kind = POA_CUDA_STEP_KERNEL, .arg_count = arg_count };
    snprintf(s.name, sizeof s.name, "%s", p->fused_name[i]);
    memcpy(s.grid, p->fused_geometry[i][0], sizeof s.grid);
    memcpy(s.block, p->fused_geometry[i][1], sizeof s.block);
    if (record(p, &s, e)) return -1;
    return poa_cuda_exec_launch(&p->exec, p->fused_function[i], "vit_fused.cu", p->fused_name[i],
                                p->fused_geometry[i][0], p->fused_geometry[i][1], args, e);
}

/* x += scale[b] * gamma * h, then y = LayerNorm(x) (mean, rstd saved): one fused kernel, or the
   two ops. */
static int residual_layernorm(poa_cuda_vit_pass *p, CUdeviceptr x, CUdeviceptr h, CUdeviceptr gamma, CUdeviceptr scale,
                              CUdeviceptr y, CUdeviceptr mean, CUdeviceptr rstd, CUdeviceptr w, CUdeviceptr b,
                              poa_error *e) {
    if (!p->fused)
        return residual_forward(p, x, h, gamma, scale, e) || layernorm_forward(p, y, mean, rstd, x, w, b, e) ? -1 : 0;
    long batch = p->batch, tokens = p->tokens;
    void *args[] = { &x, &y, &mean, &rstd, &h, &gamma, &scale, &w, &b, &batch, &tokens };
    return fused_launch(p, 0, args, ARGC(args), e);
}

/* The backward of residual_layernorm: dx += LayerNorm'(dy) (dx holds the gradient from above),
   dh = scale[b] * gamma * dx, dw and db += the LayerNorm's, dgamma += sum of scale * h * dx (when
   dgamma is not 0). */
static int residual_layernorm_backward(poa_cuda_vit_pass *p, CUdeviceptr dx, CUdeviceptr dh, CUdeviceptr dw,
                                       CUdeviceptr db, CUdeviceptr dgamma, CUdeviceptr dy, CUdeviceptr x,
                                       CUdeviceptr mean, CUdeviceptr rstd, CUdeviceptr w, CUdeviceptr h,
                                       CUdeviceptr gamma, CUdeviceptr scale, poa_error *e) {
    long batch = p->batch, tokens = p->tokens;
    void *args[] = { &dx, &dh, &dw, &db, &dgamma, &dy, &x, &mean, &rstd, &w, &h, &gamma, &scale, &batch, &tokens };
    return fused_launch(p, 1, args, ARGC(args), e) || fused_launch(p, 2, args, ARGC(args), e) ||
                   (dgamma && fused_launch(p, 3, args, ARGC(args), e))
               ? -1
               : 0;
}

static int block_forward(poa_cuda_vit_pass *p, const float alpha, int j, poa_error *e) {
    const poa_vit_block_offsets *o = &p->model->blocks[p->host.block_ids[j]];
    const long M = p->rows, D = p->width, Fh = p->host.hidden, Dmax = p->model->config.max_width;
    const long Fmax = Dmax * p->model->config.mlp_ratio;
    /* fused: block j > 0's first LayerNorm came with the previous block's last residual add */
    if ((j == 0 || !p->fused) &&
        layernorm_forward(p, A(p, "ln"), AB(p, j, "ln1_mean"), AB(p, j, "ln1_rstd"), AB(p, j, "x_in"),
                          P(p, o->norm1_weight), P(p, o->norm1_bias), e))
        return -1;
    for (int g = 0; g < 3; g++) { /* q, k, v: rows g*Dmax .. g*Dmax + D of the full weight */
        char what[16];
        snprintf(what, sizeof what, "qkv[%d]", g);
        if (linear_forward(p, what, F(AB(p, j, "qkv"), g * D), 3 * D, A(p, "ln"), D,
                           o->qkv_weight + g * Dmax * Dmax, Dmax,
                           o->qkv_bias >= 0 ? o->qkv_bias + g * Dmax : -1, M, D, alpha, e))
            return -1;
    }
    {
        CUdeviceptr out = AB(p, j, "attn"), probs = AB(p, j, "probs"), qkv = AB(p, j, "qkv");
        long batch = p->batch, tokens = p->tokens;
        void *args[] = { &out, &probs, &qkv, &batch, &tokens };
        if (launch(p, "attention_forward", args, ARGC(args), e)) return -1;
    }
    if (linear_forward(p, "proj", AB(p, j, "h1"), D, AB(p, j, "attn"), D, o->proj_weight, Dmax,
                       o->proj_bias, M, D, alpha, e) ||
        copy(p, AB(p, j, "x_mid"), AB(p, j, "x_in"), M * D, e) ||
        residual_layernorm(p, AB(p, j, "x_mid"), AB(p, j, "h1"), gamma_of(p, o->ls1), drop_scale_of(p, j, 0),
                           A(p, "ln"), AB(p, j, "ln2_mean"), AB(p, j, "ln2_rstd"), P(p, o->norm2_weight),
                           P(p, o->norm2_bias), e) ||
        linear_forward(p, "fc1", AB(p, j, "u"), Fh, A(p, "ln"), D, o->fc1_weight, Dmax, o->fc1_bias,
                       M, Fh, alpha, e))
        return -1;
    {
        CUdeviceptr g = A(p, "g"), u = AB(p, j, "u"); /* one g for all blocks (the backward recomputes it) */
        long rows = M;
        void *args[] = { &g, &u, &rows };
        if (launch(p, "gelu_forward", args, ARGC(args), e)) return -1;
    }
    CUdeviceptr x_out = j + 1 < p->depth ? AB(p, j + 1, "x_in") : A(p, "x_final");
    if (linear_forward(p, "fc2", AB(p, j, "h2"), D, A(p, "g"), Fh, o->fc2_weight, Fmax, o->fc2_bias,
                       M, D, alpha, e) ||
        copy(p, x_out, AB(p, j, "x_mid"), M * D, e))
        return -1;
    if (!p->fused) return residual_forward(p, x_out, AB(p, j, "h2"), gamma_of(p, o->ls2), drop_scale_of(p, j, 1), e);
    /* fused: with the next block's first LayerNorm, or the final one */
    const poa_vit *m = p->model;
    if (j + 1 < p->depth) {
        const poa_vit_block_offsets *next = &m->blocks[p->host.block_ids[j + 1]];
        return residual_layernorm(p, x_out, AB(p, j, "h2"), gamma_of(p, o->ls2), drop_scale_of(p, j, 1),
                                  A(p, "ln"), AB(p, j + 1, "ln1_mean"), AB(p, j + 1, "ln1_rstd"),
                                  P(p, next->norm1_weight), P(p, next->norm1_bias), e);
    }
    return residual_layernorm(p, x_out, AB(p, j, "h2"), gamma_of(p, o->ls2), drop_scale_of(p, j, 1), A(p, "out"),
                              A(p, "norm_mean"), A(p, "norm_rstd"), P(p, m->norm_weight), P(p, m->norm_bias), e);
}

static int upload(poa_cuda_vit_pass *p, CUdeviceptr to, const void *from, size_t bytes, poa_error *e) {
    return poa_cuda_exec_upload(&p->exec, to, from, bytes, e);
}


int poa_cuda_vit_forward(poa_cuda_vit_pass *p, const float *images, const unsigned char *mask,
                         const float *drop_scale, poa_error *e) {
    const poa_vit *m = p->model;
    const poa_vit_config *c = &m->config;
    const long D = p->width, Dmax = c->max_width, BN = p->batch * p->patches;
    const long patch_len = (long)c->in_channels * c->patch_size * c->patch_size;
    const long image_count = p->batch * c->in_channels * p->host.image_size * p->host.image_size;
    p->has_mask = mask != NULL;
    p->has_drop_scale = drop_scale != NULL;
    if (!images && !p->shared.images && !p->exec.planning)
        return poa_fail(e, "member %dx%d: forward without images", p->width, p->depth);
    if ((images && upload(p, p->images, images, sizeof(float) * (size_t)image_count, e)) ||
        (mask && upload(p, p->mask, mask, (size_t)BN, e)) ||
        (drop_scale && upload(p, p->drop_scale, drop_scale, sizeof(float) * (size_t)(p->depth * 2 * p->batch), e)))
        return -1;
    {
        CUdeviceptr patches = A(p, "patches"), imgs = p->images;
        long batch = p->batch, channels = c->in_channels, size = p->host.image_size, patch = c->patch_size;
        void *args[] = { &patches, &imgs, &batch, &channels, &size, &patch };
        poa_cuda_step s = { .kind = POA_CUDA_STEP_GLUE, .name = "poa_glue_patchify", .src = imgs,
                            .dst = patches, .count = BN * patch_len };
        if (glue(p, GLUE_PATCHIFY, BN * patch_len, args, ARGC(args), &s, e)) return -1;
    }
    /* The conv's first D output channels; no alpha (its input is the image). */
    if (linear_forward(p, "patch_embed", A(p, "patch_tokens"), D, A(p, "patches"), patch_len,
                       m->patch_weight, patch_len, m->patch_bias, BN, D, 1, e))
        return -1;
    /* The position table: the full table (ld Dmax) at the native size, else row 0 copied
       and rows 1.. = R (patches x native^2) pos_embed[1:, :D]. */
    CUdeviceptr pos = P(p, m->pos_embed);
    long pos_ld = Dmax;
    if (mark(p, "pos_resample", e)) return -1;
    if (p->host.resample) {
        const long native = c->image_size / c->patch_size;
        pos = A(p, "pos");
        pos_ld = D;
        if (copy(p, pos, P(p, m->pos_embed), D, e) ||
            gemm(p, "pos_resample", 0, 0, p->patches, D, native * native, 1, p->resample, native * native,
                 P(p, m->pos_embed + Dmax), Dmax, 0, F(pos, D), D, 0, 0, e))
            return -1;
    }
    end_mark(p);
    {
        CUdeviceptr x = p->depth > 0 ? AB(p, 0, "x_in") : A(p, "x_final"), patch = A(p, "patch_tokens");
        CUdeviceptr cls = P(p, m->cls_token), mask_token = P(p, m->mask_token);
        CUdeviceptr mask_d = p->has_mask ? p->mask : 0;
        long batch = p->batch, patches = p->patches;
        void *args[] = { &x, &patch, &cls, &mask_token, &pos, &pos_ld, &mask_d, &batch, &patches };
        if (launch(p, "tokens_forward", args, ARGC(args), e)) return -1;
    }
    for (int j = 0; j < p->depth; j++)
        if (block_forward(p, p->alpha, j, e)) return -1;
    if (p->fused) return 0; /* the final LayerNorm came with the last residual add */
    return layernorm_forward(p, A(p, "out"), A(p, "norm_mean"), A(p, "norm_rstd"), A(p, "x_final"),
                             P(p, m->norm_weight), P(p, m->norm_bias), e);
}

/* On entry grad.x holds d(loss)/d(block output); on exit d(loss)/d(block input). */
static int block_backward(poa_cuda_vit_pass *p, int j, poa_error *e) {
    const poa_vit_block_offsets *o = &p->model->blocks[p->host.block_ids[j]];
    const long M = p->rows, D = p->width, Fh = p->host.hidden, Dmax = p->model->config.max_width;
    const long Fmax = Dmax * p->model->config.mlp_ratio;
    const float alpha = p->alpha;
    CUdeviceptr dx = A(p, "grad.x"), dh = A(p, "grad.h"), dln = A(p, "grad.ln"), du = A(p, "grad.u");
    CUdeviceptr dg = A(p, "grad.g"), dattn = A(p, "grad.attn"), dqkv = A(p, "grad.qkv");
    /* x_out = x_mid + s * ls2 * h2 (fused: dh = d(h2) already, from the op after this block) */
    if (!p->fused && residual_backward(p, dh, G(p, o->ls2), dx, AB(p, j, "h2"), gamma_of(p, o->ls2),
                                       drop_scale_of(p, j, 1), e))
        return -1;
    { /* g = GELU(u) again, for fc2's weight gradient */
        CUdeviceptr g = A(p, "g"), u = AB(p, j, "u");
        long rows = M;
        void *args[] = { &g, &u, &rows };
        if (launch(p, "gelu_forward", args, ARGC(args), e)) return -1;
    }
    if (linear_backward(p, "fc2", dg, 0, dh, D, A(p, "g"), Fh, o->fc2_weight, Fmax, o->fc2_bias, M, D, alpha, e))
        return -1;
    {
        CUdeviceptr u = AB(p, j, "u");
        long rows = M;
        void *args[] = { &du, &dg, &u, &rows };
        if (launch(p, "gelu_backward", args, ARGC(args), e)) return -1;
    }
    /* ln2 again, for fc1's weight gradient */
    if (layernorm_forward(p, A(p, "ln"), AB(p, j, "ln2_mean"), AB(p, j, "ln2_rstd"), AB(p, j, "x_mid"),
                          P(p, o->norm2_weight), P(p, o->norm2_bias), e) ||
        linear_backward(p, "fc1", dln, 0, du, Fh, A(p, "ln"), D, o->fc1_weight, Dmax, o->fc1_bias,
                        M, Fh, alpha, e))
        return -1;
    /* ln2 = LayerNorm(x_mid), x_mid = x_in + s * ls1 * h1 */
    if (p->fused ? residual_layernorm_backward(p, dx, dh, G(p, o->norm2_weight), G(p, o->norm2_bias), G(p, o->ls1), dln,
                                               AB(p, j, "x_mid"), AB(p, j, "ln2_mean"), AB(p, j, "ln2_rstd"),
                                               P(p, o->norm2_weight), AB(p, j, "h1"), gamma_of(p, o->ls1),
                                               drop_scale_of(p, j, 0), e)
                 : layernorm_backward(p, dh, G(p, o->norm2_weight), G(p, o->norm2_bias), dln, AB(p, j, "x_mid"),
                                      AB(p, j, "ln2_mean"), AB(p, j, "ln2_rstd"), P(p, o->norm2_weight), e) ||
                       add(p, dx, dh, M * D, e) ||
                       residual_backward(p, dh, G(p, o->ls1), dx, AB(p, j, "h1"), gamma_of(p, o->ls1),
                                         drop_scale_of(p, j, 0), e))
        return -1;
    if (linear_backward(p, "proj", dattn, 0, dh, D, AB(p, j, "attn"), D, o->proj_weight, Dmax,
                        o->proj_bias, M, D, alpha, e))
        return -1;
    {
        CUdeviceptr work = A(p, "grad.work"), qkv = AB(p, j, "qkv"), probs = AB(p, j, "probs");
        long batch = p->batch, tokens = p->tokens;
        void *args[] = { &dqkv, &work, &dattn, &qkv, &probs, &batch, &tokens };
        if (launch(p, "attention_backward_dq", args, ARGC(args), e) || launch(p, "attention_backward_dkv", args, ARGC(args), e))
            return -1;
    }
    /* ln1 again, for qkv's weight gradients */
    if (layernorm_forward(p, A(p, "ln"), AB(p, j, "ln1_mean"), AB(p, j, "ln1_rstd"), AB(p, j, "x_in"),
                          P(p, o->norm1_weight), P(p, o->norm1_bias), e))
        return -1;
    for (int g = 0; g < 3; g++) {
        char what[16];
        snprintf(what, sizeof what, "qkv[%d]", g);
        if (linear_backward(p, what, dln, g ? 1 : 0, F(dqkv, g * D), 3 * D, A(p, "ln"), D,
                            o->qkv_weight + g * Dmax * Dmax, Dmax,
                            o->qkv_bias >= 0 ? o->qkv_bias + g * Dmax : -1, M, D, alpha, e))
            return -1;
    }
    if (p->fused && j > 0) { /* ln1 = LayerNorm(x_in), x_in = the previous block's x_mid + s * ls2 * h2 */
        const poa_vit_block_offsets *prev = &p->model->blocks[p->host.block_ids[j - 1]];
        return residual_layernorm_backward(p, dx, dh, G(p, o->norm1_weight), G(p, o->norm1_bias), G(p, prev->ls2), dln,
                                           AB(p, j, "x_in"), AB(p, j, "ln1_mean"), AB(p, j, "ln1_rstd"),
                                           P(p, o->norm1_weight), AB(p, j - 1, "h2"), gamma_of(p, prev->ls2),
                                           drop_scale_of(p, j - 1, 1), e);
    }
    if (layernorm_backward(p, dh, G(p, o->norm1_weight), G(p, o->norm1_bias), dln, AB(p, j, "x_in"),
                           AB(p, j, "ln1_mean"), AB(p, j, "ln1_rstd"), P(p, o->norm1_weight), e) ||
        add(p, dx, dh, M * D, e))
        return -1;
    return 0;
}

static int tokens_backward(poa_cuda_vit_pass *p, CUdeviceptr dpatch, CUdeviceptr dcls, CUdeviceptr dmask,
                           CUdeviceptr dpos, long pos_ld, CUdeviceptr dx, poa_error *e) {
    CUdeviceptr mask_d = p->has_mask ? p->mask : 0;
    long batch = p->batch, patches = p->patches;
    void *args[] = { &dpatch, &dcls, &dmask, &dpos, &pos_ld, &dx, &mask_d, &batch, &patches };
    return launch(p, "tokens_backward", args, ARGC(args), e) || launch(p, "tokens_backward_dcls", args, ARGC(args), e) ||
                   launch(p, "tokens_backward_dpos", args, ARGC(args), e) ||
                   launch(p, "tokens_backward_dmask_token", args, ARGC(args), e)
               ? -1
               : 0;
}

int poa_cuda_vit_backward(poa_cuda_vit_pass *p, const float *dout, poa_error *e) {
    const poa_vit *m = p->model;
    const poa_vit_config *c = &m->config;
    const long D = p->width, Dmax = c->max_width, BN = p->batch * p->patches;
    const long patch_len = (long)c->in_channels * c->patch_size * c->patch_size;
    CUdeviceptr dx = A(p, "grad.x"), dout_d = A(p, "grad.ln");
    /* d(loss)/d(output) goes where the plan reads it: grad.ln */
    if (dout && upload(p, dout_d, dout, sizeof(float) * (size_t)(p->rows * D), e)) return -1;
    if (p->fused) { /* out = LayerNorm(x_final), x_final = the last block's x_mid + s * ls2 * h2 */
        const int last = p->depth - 1;
        const poa_vit_block_offsets *o = &m->blocks[p->host.block_ids[last]];
        if (fill(p, dx, 0.0f, p->rows * D, e) ||
            residual_layernorm_backward(p, dx, A(p, "grad.h"), G(p, m->norm_weight), G(p, m->norm_bias), G(p, o->ls2),
                                        dout_d, A(p, "x_final"), A(p, "norm_mean"), A(p, "norm_rstd"),
                                        P(p, m->norm_weight), AB(p, last, "h2"), gamma_of(p, o->ls2),
                                        drop_scale_of(p, last, 1), e))
            return -1;
    } else if (layernorm_backward(p, dx, G(p, m->norm_weight), G(p, m->norm_bias), dout_d, A(p, "x_final"),
                                  A(p, "norm_mean"), A(p, "norm_rstd"), P(p, m->norm_weight), e)) {
        return -1;
    }
    for (int j = p->depth - 1; j >= 0; j--)
        if (block_backward(p, j, e)) return -1;
    CUdeviceptr dpatch = A(p, "grad.patch_tokens");
    if (!p->host.resample) {
        if (tokens_backward(p, dpatch, G(p, m->cls_token), G(p, m->mask_token), G(p, m->pos_embed), Dmax,
                            dx, e) ||
            mark(p, "pos_resample_backward", e))
            return -1;
        end_mark(p);
    } else {
        /* Through the fixed resampling matrix: dpos_table += R^T dpos. */
        const long native = c->image_size / c->patch_size;
        CUdeviceptr dpos = A(p, "grad.pos");
        if (fill(p, dpos, 0.0f, p->tokens * D, e) ||
            tokens_backward(p, dpatch, G(p, m->cls_token), G(p, m->mask_token), dpos, D, dx, e) ||
            mark(p, "pos_resample_backward", e) ||
            add(p, G(p, m->pos_embed), dpos, D, e) ||
            gemm(p, "pos_resample_backward", 1, 0, native * native, D, p->patches, 1, p->resample,
                 native * native, F(dpos, D), D, 1, G(p, m->pos_embed + Dmax), Dmax, 0, 0, e))
            return -1;
        end_mark(p);
    }
    return linear_backward(p, "patch_embed", 0, 0, dpatch, D, A(p, "patches"), patch_len, m->patch_weight,
                           patch_len, m->patch_bias, BN, D, 1, e);
}

/* ---- set-up ---- */

static int allocate(poa_cuda_vit_pass *p, CUdeviceptr *pointer, int region, size_t bytes, poa_error *e) {
    return poa_cuda_exec_alloc(&p->exec, pointer, region, bytes, e);
}

static int load_module(poa_cuda_vit_pass *p, const char *source, const char *name, CUmodule *module,
                       poa_error *e) {
    return poa_cuda_exec_load_module(&p->exec, source, name, module, e);
}

static int pass_init(poa_cuda_vit_pass *p, const poa_cuda_exec *exec, const poa_vit *model, int width, int depth,
                     long batch, int image_size, const char *kernel_set, const char *glue_source,
                     const poa_cuda_vit_shared *shared, poa_error *e) {
    poa_cuda *cuda = exec->cuda;
    poa_cublaslt *lt = exec->lt;
    const poa_cuda_emulator *emulator = exec->emulator;
    memset(p, 0, sizeof *p);
    p->exec = *exec; /* with its module cache, allocation account and profile */
    p->exec.planning = 0;
    if (shared) {
        p->shared = *shared;
        if (!shared->params) return poa_fail(e, "CUDA ViT pass: shared memory needs the parameters");
    }
    if (cuda && !lt) return poa_fail(e, "CUDA ViT pass: a GPU pass needs a cuBLASLt handle");
    /* the host pass: the shape, block ids, resampling matrix and arena layout, no arena */
    if (poa_vit_pass_layout(&p->host, model, width, depth, batch, image_size, e)) return -1;
    p->model = model;
    p->trace = cuda == NULL; /* trace-only and emulated passes */
    p->width = width, p->depth = depth, p->batch = batch;
    p->rows = p->host.rows, p->tokens = p->host.tokens, p->patches = p->host.patches;
    p->arena_count = p->host.arena_count;
    p->alpha = (float)p->host.alpha;
    const poa_vit_config *c = &model->config;
    snprintf(p->set_name, sizeof p->set_name, "vit_w%d_h%d_f%d.cu", width, c->head_dim, p->host.hidden);
    char label[64];
    snprintf(label, sizeof label, "member %dx%d", width, depth);

    /* arena buffers: every name the steps use must be there */
    p->buffer_count = poa_vit_pass_buffers(&p->host, NULL, 0);
    p->buffers = malloc(sizeof *p->buffers * (size_t)p->buffer_count);
    if (!p->buffers) {
        poa_cuda_vit_pass_free(p);
        return poa_fail(e, "%s: out of memory", label);
    }
    poa_vit_pass_buffers(&p->host, p->buffers, p->buffer_count);
    for (size_t i = 0; i < sizeof static_names / sizeof static_names[0]; i++)
        if (buffer_offset(p, static_names[i]) < 0) {
            poa_cuda_vit_pass_free(p);
            return poa_fail(e, "%s: the arena has no buffer %s", label, static_names[i]);
        }
    for (int j = 0; j < depth; j++)
        for (size_t i = 0; i < sizeof block_names / sizeof block_names[0]; i++) {
            char name[48];
            snprintf(name, sizeof name, "block%d.%s", j, block_names[i]);
            if (buffer_offset(p, name) < 0) {
                poa_cuda_vit_pass_free(p);
                return poa_fail(e, "%s: the arena has no buffer %s", label, name);
            }
        }

    /* the kernel table and each kernel's geometry for this shape */
    poa_cuda_kernel_entry *entries;
    int count;
    if (poa_cuda_kernel_table(kernel_set, &entries, &count, e)) {
        poa_cuda_vit_pass_free(p);
        return -1;
    }
    if (count > POA_CUDA_VIT_MAX_KERNELS) {
        free(entries);
        poa_cuda_vit_pass_free(p);
        return poa_fail(e, "%s: %d kernels in the table, at most %d", label, count, POA_CUDA_VIT_MAX_KERNELS);
    }
    memcpy(p->kernels, entries, sizeof *entries * (size_t)count);
    p->kernel_count = count;
    free(entries);
    const poa_cuda_dims dims = { .rows = p->rows, .batch = batch, .tokens = p->tokens,
                                 .patches = p->patches, .width = width, .heads = p->host.heads,
                                 .head_dim = c->head_dim, .hidden = p->host.hidden };
    /* the set must be the one of this width */
    char expected[64];
    snprintf(expected, sizeof expected, "enum { WIDTH = %d, HEADS = %d, HEAD_DIM = %d, HIDDEN = %d }",
             width, p->host.heads, c->head_dim, p->host.hidden);
    if (!strstr(kernel_set, expected)) {
        poa_cuda_vit_pass_free(p);
        return poa_fail(e, "%s: the kernel source is not the set of this shape (no \"%s\")", label, expected);
    }
    for (int i = 0; i < count; i++) {
        for (int g = 0; g < 2; g++) {
            long product = 1;
            for (int d = 0; d < 3; d++) {
                long v;
                if (poa_cuda_eval(g ? p->kernels[i].block[d] : p->kernels[i].grid[d], &dims, &v, e)) {
                    char message[sizeof e->message];
                    snprintf(message, sizeof message, "%s", e->message);
                    poa_cuda_vit_pass_free(p);
                    return poa_fail(e, "%s: kernel %s: %s", label, p->kernels[i].name, message);
                }
                long limit = g ? 1024 : d == 0 ? 0x7fffffffL : 65535;
                if (v < 1 || v > limit) {
                    poa_cuda_vit_pass_free(p);
                    return poa_fail(e, "%s: kernel %s: %s %c = %ld is out of 1..%ld", label,
                                    p->kernels[i].name, g ? "block" : "grid", "xyz"[d], v, limit);
                }
                product *= v;
                p->geometry[i][g][d] = (unsigned)v;
            }
            if (g && product > 1024) {
                poa_cuda_vit_pass_free(p);
                return poa_fail(e, "%s: kernel %s: %ld threads per block", label, p->kernels[i].name, product);
            }
        }
    }

    /* device memory */
    const long native = c->image_size / c->patch_size;
    const size_t f = sizeof(float);
    const long image_count = batch * c->in_channels * (long)image_size * image_size;
    if (shared) p->params = shared->params, p->grads = shared->grads;
    p->arena_shared = shared && shared->arena && shared->arena_capacity >= p->arena_count;
    if (p->arena_shared) p->arena = shared->arena;
    p->arena_capacity = p->arena_shared ? shared->arena_capacity : p->arena_count;
    if ((!shared && (allocate(p, &p->params, REGION_PARAMS, f * (size_t)model->parameter_count, e) ||
                     allocate(p, &p->grads, REGION_GRADS, f * (size_t)model->parameter_count, e))) ||
        (!p->arena_shared && allocate(p, &p->arena, REGION_ARENA, f * (size_t)p->arena_count, e)) ||
        allocate(p, &p->ones, REGION_ONES, f * (size_t)width, e) ||
        (p->host.resample && allocate(p, &p->resample, REGION_RESAMPLE,
                                      f * (size_t)(p->patches * native * native), e)) ||
        (shared && shared->images ? (p->images = shared->images, 0)
                                  : allocate(p, &p->images, REGION_IMAGES, f * (size_t)image_count, e)) ||
        allocate(p, &p->mask, REGION_MASK, (size_t)(batch * p->patches), e) ||
        allocate(p, &p->drop_scale, REGION_DROP, f * (size_t)(depth * 2 * batch), e)) {
        char message[sizeof e->message];
        snprintf(message, sizeof message, "%s", e->message);
        poa_cuda_vit_pass_free(p);
        return poa_fail(e, "%s: device memory: %s", label, message);
    }
    if (!cuda && !emulator) return 0;

    /* constants: LayerScale ones and the resampling matrix (as float) */
    long constant_count = p->host.resample ? p->patches * native * native : 0;
    if (constant_count < width) constant_count = width;
    float *host = malloc(f * (size_t)constant_count);
    int rc = host ? 0 : poa_fail(e, "%s: out of memory", label);
    if (!rc) {
        for (long i = 0; i < width; i++) host[i] = 1;
        rc = upload(p, p->ones, host, f * (size_t)width, e);
    }
    if (!rc && p->host.resample) {
        for (long i = 0; i < p->patches * native * native; i++) host[i] = (float)p->host.resample[i];
        rc = upload(p, p->resample, host, f * (size_t)(p->patches * native * native), e);
    }
    if (!rc && cuda) rc = poa_cuda_synchronize(cuda, e); /* host is freed next */
    free(host);
    /* modules and functions (emulated: launches go to the emulator by name) */
    if (!rc && cuda) rc = load_module(p, kernel_set, p->set_name, &p->set_module, e);
    if (!rc && cuda) rc = load_module(p, glue_source, "vit_glue.cu", &p->glue_module, e);
    for (int i = 0; !rc && cuda && i < p->kernel_count; i++)
        rc = poa_cuda_get_function(cuda, p->set_module, p->kernels[i].name, &p->functions[i], e);
    for (int i = 0; !rc && cuda && i < GLUE_COUNT; i++)
        rc = poa_cuda_get_function(cuda, p->glue_module, glue_names[i], &p->glue[i], e);
    /* a zeroed arena, as the CPU's calloc'd one (buffers a shape leaves unused stay 0), emulated
       too (neither a GPU's nor an emulator's memory need start zeroed); a shared one is another
       pass's, written before read as the CPU's reused arenas are */
    if (!rc && !p->arena_shared) {
        int trace = p->trace;
        p->trace = 0;
        rc = fill(p, p->arena, 0.0f, p->arena_count, e);
        p->trace = trace;
    }
    if (rc) {
        char message[sizeof e->message];
        snprintf(message, sizeof message, "%s", e->message);
        poa_cuda_vit_pass_free(p);
        return poa_fail(e, "%s: %s", label, message);
    }
    return 0;
}

int poa_cuda_vit_pass_init(poa_cuda_vit_pass *p, poa_cuda *cuda, poa_cublaslt *lt, const poa_vit *model,
                           int width, int depth, long batch, int image_size, const char *kernel_set,
                           const char *glue_source, poa_error *e) {
    poa_cuda_exec exec = { .cuda = cuda, .lt = lt };
    return pass_init(p, &exec, model, width, depth, batch, image_size, kernel_set, glue_source, NULL, e);
}

int poa_cuda_vit_pass_init_emulated(poa_cuda_vit_pass *p, const poa_cuda_emulator *emulator,
                                    const poa_vit *model, int width, int depth, long batch, int image_size,
                                    const char *kernel_set, poa_error *e) {
    if (!emulator) return poa_fail(e, "emulated pass: no emulator");
    poa_cuda_exec exec = { .emulator = emulator };
    return pass_init(p, &exec, model, width, depth, batch, image_size, kernel_set, "", NULL, e);
}

int poa_cuda_vit_pass_init_shared(poa_cuda_vit_pass *p, const poa_cuda_exec *exec, const poa_vit *model, int width,
                                  int depth, long batch, int image_size, const char *kernel_set,
                                  const char *glue_source, const poa_cuda_vit_shared *shared, poa_error *e) {
    if (exec->cuda && !exec->lt) return poa_fail(e, "CUDA ViT pass: a GPU pass needs a cuBLASLt handle");
    return pass_init(p, exec, model, width, depth, batch, image_size, kernel_set, exec->cuda ? glue_source : "",
                     shared, e);
}

int poa_cuda_vit_pass_use_bf16(poa_cuda_vit_pass *p, poa_error *e) {
    if (p->bf16) return 0;
    if (p->shared.params && !p->shared.params_bf16)
        return poa_fail(e, "member %dx%d: bf16 with shared parameters needs their shared bf16 shadow", p->width,
                        p->depth);
    const long native = p->model->config.image_size / p->model->config.patch_size;
    const long resample_count = p->host.resample ? p->patches * native * native : 0;
    if (p->shared.params_bf16) p->params_bf16 = p->shared.params_bf16;
    /* the cast slots: as large as the largest activation operand (rows x the widest of 3 x width,
       the MLP's hidden width and a patch) */
    const long patch_len = (long)p->model->config.in_channels * p->model->config.patch_size * p->model->config.patch_size;
    long widest = 3L * p->width > p->host.hidden ? 3L * p->width : p->host.hidden;
    if (patch_len > widest) widest = patch_len;
    p->cast_capacity = p->rows * widest;
    p->cast_shared = p->shared.cast_bf16 && p->shared.cast_capacity >= p->cast_capacity;
    if (p->cast_shared) p->cast_bf16 = p->shared.cast_bf16, p->cast_capacity = p->shared.cast_capacity;
    if ((!p->shared.params_bf16 &&
         allocate(p, &p->params_bf16, REGION_PARAMS_BF16, 2 * (size_t)p->model->parameter_count, e)) ||
        (p->cast_shared ? 0 : allocate(p, &p->cast_bf16, REGION_ARENA_BF16, 2 * 2 * (size_t)p->cast_capacity, e)) ||
        (resample_count && allocate(p, &p->resample_bf16, REGION_RESAMPLE_BF16, 2 * (size_t)resample_count, e)))
        return poa_fail(e, "member %dx%d: bf16 buffers: %s", p->width, p->depth, e->message);
    p->bf16 = 1;
    if (!resample_count || (!p->exec.cuda && !p->exec.emulator)) return 0;
    uint16_t *host = malloc(2 * (size_t)resample_count);
    if (!host) return poa_fail(e, "member %dx%d: out of memory", p->width, p->depth);
    for (long i = 0; i < resample_count; i++) host[i] = poa_bf16_from_float((float)p->host.resample[i]);
    int rc = upload(p, p->resample_bf16, host, 2 * (size_t)resample_count, e);
    if (!rc && p->exec.cuda) rc = poa_cuda_synchronize(p->exec.cuda, e);
    free(host);
    return rc;
}

int poa_cuda_vit_fused_source(const char *recipe_path, char **source, poa_error *e) {
    char chunk[1400];
    if (strchr(recipe_path, '\'') || strlen(recipe_path) > 1024)
        return poa_fail(e, "fused kernels: cannot quote the recipe path %s", recipe_path);
    snprintf(chunk, sizeof chunk,
             "local emit = require('gen.emit')\n"
             "local loaded, sets = emit.collect({ '%s' })\n"
             "local names = {}\n"
             "for i, r in ipairs(loaded) do names[i] = r.name end\n"
             "return emit.fused_cu_text(sets, names)\n",
             recipe_path);
    return poa_lua_text(chunk, "fused kernels", source, e);
}

int poa_cuda_vit_pass_use_fused(poa_cuda_vit_pass *p, const char *fused_source, poa_error *e) {
    if (p->fused) return 0;
    const poa_vit_config *c = &p->model->config;
    static const char *const kinds[4] = { "forward", "backward", "backward", "backward" };
    static const char *const suffixes[4] = { "", "", "_dw_db", "_dgamma" };
    for (int k = 0; k < 4; k++)
        snprintf(p->fused_name[k], sizeof p->fused_name[k], "residual_layernorm_%s_w%d_h%d_f%ld%s", kinds[k], p->width,
                 c->head_dim, (long)p->host.hidden, suffixes[k]);
    poa_cuda_kernel_entry *entries;
    int count;
    if (poa_cuda_kernel_table(fused_source, &entries, &count, e)) return -1;
    const poa_cuda_dims dims = { .rows = p->rows, .batch = p->batch, .tokens = p->tokens, .patches = p->patches,
                                 .width = p->width, .heads = p->host.heads, .head_dim = c->head_dim,
                                 .hidden = p->host.hidden };
    int rc = 0;
    for (int k = 0; k < 4 && !rc; k++) {
        int i = 0;
        while (i < count && strcmp(entries[i].name, p->fused_name[k])) i++;
        if (i == count) {
            rc = poa_fail(e, "member %dx%d: the fused source has no kernel %s", p->width, p->depth, p->fused_name[k]);
            break;
        }
        for (int g = 0; g < 2 && !rc; g++)
            for (int d = 0; d < 3 && !rc; d++) {
                long v;
                rc = poa_cuda_eval(g ? entries[i].block[d] : entries[i].grid[d], &dims, &v, e);
                if (!rc && (v < 1 || v > (g ? 1024 : d == 0 ? 0x7fffffffL : 65535)))
                    rc = poa_fail(e, "member %dx%d: %s: %s %c = %ld is out of range", p->width, p->depth,
                                  p->fused_name[k], g ? "block" : "grid", "xyz"[d], v);
                if (!rc) p->fused_geometry[k][g][d] = (unsigned)v;
            }
    }
    free(entries);
    if (!rc && p->exec.cuda) {
        rc = load_module(p, fused_source, "vit_fused.cu", &p->fused_module, e);
        for (int k = 0; k < 4 && !rc; k++)
            rc = poa_cuda_get_function(p->exec.cuda, p->fused_module, p->fused_name[k], &p->fused_function[k], e);
    }
    if (!rc) p->fused = 1;
    return rc ? -1 : 0;
}

int poa_cuda_vit_pass_plan_gemms(poa_cuda_vit_pass *p, poa_error *e) {
    int trace = p->trace;
    p->exec.planning = 1, p->trace = 0;
    int rc = poa_cuda_vit_forward(p, NULL, NULL, NULL, e) || poa_cuda_vit_backward(p, NULL, e) ? -1 : 0;
    p->exec.planning = 0, p->trace = trace;
    return rc;
}

void poa_cuda_vit_pass_free(poa_cuda_vit_pass *p) {
    if (p->shared.params) p->params = p->grads = 0; /* not ours */
    if (p->shared.params_bf16) p->params_bf16 = 0;
    if (p->arena_shared) p->arena = 0;
    if (p->cast_shared) p->cast_bf16 = 0;
    if (p->shared.images) p->images = 0;
    CUdeviceptr *pointers[] = { &p->params, &p->grads, &p->arena, &p->ones, &p->resample,
                                &p->images, &p->mask, &p->drop_scale, &p->params_bf16,
                                &p->cast_bf16, &p->resample_bf16 };
    for (size_t i = 0; i < sizeof pointers / sizeof pointers[0]; i++) poa_cuda_exec_free(&p->exec, pointers[i]);
    if (p->exec.cuda) {
        poa_cuda_exec_unload_module(&p->exec, p->set_module);
        poa_cuda_exec_unload_module(&p->exec, p->glue_module);
        poa_cuda_exec_unload_module(&p->exec, p->fused_module);
    }
    poa_vit_pass_free(&p->host);
    free(p->buffers);
    free(p->steps);
    memset(p, 0, sizeof *p);
}

/* ---- host <-> device ---- */

static int need_gpu(const poa_cuda_vit_pass *p, const char *what, poa_error *e) {
    return p->exec.cuda || p->exec.emulator ? 0 : poa_fail(e, "%s: no GPU (a trace-only pass)", what);
}

int poa_cuda_vit_upload_parameters(poa_cuda_vit_pass *p, const float *params, poa_error *e) {
    if (need_gpu(p, "upload parameters", e)) return -1;
    const long n = p->model->parameter_count;
    if (upload(p, p->params, params, sizeof(float) * (size_t)n, e)) return -1;
    if (!p->bf16) return 0;
    uint16_t *shadow = malloc(2 * (size_t)n);
    if (!shadow) return poa_fail(e, "upload parameters: out of memory for the bf16 shadow");
    for (long i = 0; i < n; i++) shadow[i] = poa_bf16_from_float(params[i]);
    int rc = upload(p, p->params_bf16, shadow, 2 * (size_t)n, e);
    if (!rc && p->exec.cuda) rc = poa_cuda_synchronize(p->exec.cuda, e); /* shadow is freed next */
    free(shadow);
    return rc;
}

int poa_cuda_vit_upload_gradients(poa_cuda_vit_pass *p, const float *grads, poa_error *e) {
    if (need_gpu(p, "upload gradients", e)) return -1;
    return upload(p, p->grads, grads, sizeof(float) * (size_t)p->model->parameter_count, e);
}

int poa_cuda_vit_zero_gradients(poa_cuda_vit_pass *p, poa_error *e) {
    if (need_gpu(p, "zero gradients", e)) return -1;
    int trace = p->trace;
    p->trace = 0; /* not a step of the pass */
    int rc = fill(p, p->grads, 0.0f, p->model->parameter_count, e);
    p->trace = trace;
    return rc;
}

static int download(poa_cuda_vit_pass *p, void *to, CUdeviceptr from, size_t bytes, poa_error *e) {
    return poa_cuda_exec_download(&p->exec, to, from, bytes, e);
}

CUdeviceptr poa_cuda_vit_output(const poa_cuda_vit_pass *p) { return A(p, "out"); }
CUdeviceptr poa_cuda_vit_dout(const poa_cuda_vit_pass *p) { return A(p, "grad.ln"); }

/* poa_glue_gather_rows or poa_glue_scatter_add_rows between rows of the pass's output (or
   dout) and `count` packed rows at `rows`. */
static int move_rows(poa_cuda_vit_pass *p, int which, CUdeviceptr rows, CUdeviceptr indices, long count,
                     poa_error *e) {
    CUdeviceptr dst = which == GLUE_GATHER_ROWS ? rows : poa_cuda_vit_dout(p);
    CUdeviceptr src = which == GLUE_GATHER_ROWS ? poa_cuda_vit_output(p) : rows;
    long width = p->width, tokens = p->tokens, patches = p->patches;
    poa_cuda_step s = { .kind = POA_CUDA_STEP_GLUE, .src = src, .dst = dst, .m = count, .n = width };
    snprintf(s.name, sizeof s.name, "%s", glue_names[which]);
    void *args[] = { &dst, &src, &indices, &count, &width, &tokens, &patches };
    return glue(p, which, count * width, args, ARGC(args), &s, e);
}

int poa_cuda_vit_gather_rows(poa_cuda_vit_pass *p, CUdeviceptr rows, CUdeviceptr indices, long count, poa_error *e) {
    return move_rows(p, GLUE_GATHER_ROWS, rows, indices, count, e);
}

int poa_cuda_vit_scatter_add_rows(poa_cuda_vit_pass *p, CUdeviceptr rows, CUdeviceptr indices, long count,
                                  poa_error *e) {
    return move_rows(p, GLUE_SCATTER_ADD_ROWS, rows, indices, count, e);
}

int poa_cuda_vit_zero_dout(poa_cuda_vit_pass *p, poa_error *e) {
    return fill(p, poa_cuda_vit_dout(p), 0.0f, p->rows * p->width, e);
}

int poa_cuda_vit_download_gradients(poa_cuda_vit_pass *p, float *grads, poa_error *e) {
    if (need_gpu(p, "download gradients", e)) return -1;
    return download(p, grads, p->grads, sizeof(float) * (size_t)p->model->parameter_count, e);
}

int poa_cuda_vit_download_output(poa_cuda_vit_pass *p, float *out, poa_error *e) {
    if (need_gpu(p, "download output", e)) return -1;
    return download(p, out, A(p, "out"), sizeof(float) * (size_t)(p->rows * p->width), e);
}

int poa_cuda_vit_download_arena(poa_cuda_vit_pass *p, float *arena, poa_error *e) {
    if (need_gpu(p, "download arena", e)) return -1;
    return download(p, arena, p->arena, sizeof(float) * (size_t)p->arena_count, e);
}

/* ---- addresses of a trace ---- */

int poa_cuda_vit_address_name(const poa_cuda_vit_pass *p, CUdeviceptr address, char *name, size_t size,
                              long *offset) {
    const size_t f = sizeof(float);
    const long native = p->model->config.image_size / p->model->config.patch_size;
    struct { CUdeviceptr base; size_t bytes; const char *name; int kind; } regions[] = {
        { p->params, f * (size_t)p->model->parameter_count, "param", 1 },
        { p->grads, f * (size_t)p->model->parameter_count, "param_grad", 1 },
        { p->arena, f * (size_t)p->arena_count, "arena", 2 },
        { p->ones, f * (size_t)p->width, "ones", 0 },
        { p->resample, p->host.resample ? f * (size_t)(p->patches * native * native) : 0, "resample", 0 },
        { p->images, f * (size_t)(p->batch * p->model->config.in_channels * p->host.image_size *
                                  p->host.image_size), "images", 0 },
        { p->mask, (size_t)(p->batch * p->patches), "mask", 0 },
        { p->drop_scale, f * (size_t)(p->depth * 2 * p->batch), "drop_scale", 0 },
    };
    for (size_t r = 0; r < sizeof regions / sizeof regions[0]; r++) {
        if (!regions[r].base || address < regions[r].base || address >= regions[r].base + regions[r].bytes)
            continue;
        size_t bytes = address - regions[r].base;
        long element = (long)(bytes / (regions[r].kind == 0 && !strcmp(regions[r].name, "mask") ? 1 : f));
        if (regions[r].kind == 1) {
            for (int i = 0; i < p->model->tensor_count; i++) {
                const poa_vit_tensor *t = &p->model->tensors[i];
                if (element >= t->offset && element < t->offset + t->count) {
                    snprintf(name, size, "%s:%s", regions[r].name, t->name);
                    *offset = element - t->offset;
                    return 0;
                }
            }
            return -1;
        }
        if (regions[r].kind == 2) {
            for (int i = 0; i < p->buffer_count; i++) {
                const poa_vit_buffer *b = &p->buffers[i];
                if (element >= b->offset && element < b->offset + b->count) {
                    snprintf(name, size, "%s", b->name);
                    *offset = element - b->offset;
                    return 0;
                }
            }
            return -1;
        }
        snprintf(name, size, "%s", regions[r].name);
        *offset = element;
        return 0;
    }
    return -1;
}
