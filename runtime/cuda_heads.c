/* cuda_heads.c: the projection heads' forward and backward on the GPU (see cuda_heads.h). The
   steps follow runtime/head.c line by line; every device address is the CPU pass's pointer with
   the host buffer's base replaced by the device buffer's. */
#include "cuda_heads.h"

#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "recipe.h"

/* Fake device addresses when nothing runs: region r starts at r << 40 (beyond cuda_vit's). */
enum { REGION_ARENA = 32, REGION_ARENA_BF16, REGION_DLOGITS_BF16 };

int poa_cuda_heads_source(char **source, poa_error *e) {
    return poa_lua_text("return require('gen.template').fill('heads_kernels.cu.tmpl', {})", "heads kernels", source,
                        e);
}

/* Fails with "<what>: <e's message>" (the message copied first: it is also the destination). */
static int fail_with(poa_error *e, const char *what) {
    char message[sizeof e->message];
    snprintf(message, sizeof message, "%s", e->message);
    return poa_fail(e, "%s: %s", what, message);
}

static CUdeviceptr F(CUdeviceptr base, long elements) { return base + sizeof(float) * (size_t)elements; }

/* Launches kernel over count (elements, rows or columns: poa_heads_kernel_geometry). */
static int launch(poa_cuda_heads_pass *p, int kernel, long count, void **args, poa_error *e) {
    if (count <= 0) return 0;
    unsigned grid[3], block[3];
    if (poa_heads_kernel_geometry(kernel, count, grid, block, e)) return -1;
    p->launches++;
    return poa_cuda_exec_launch(&p->exec, p->functions[kernel], "heads_kernels.cu", poa_heads_kernel_names[kernel],
                                grid, block, args,
                                e);
}

static int gelu_forward(poa_cuda_heads_pass *p, CUdeviceptr y, CUdeviceptr x, long n, poa_error *e) {
    void *args[] = { &y, &x, &n };
    return launch(p, POA_HEADS_GELU_FORWARD, n, args, e);
}

static int gelu_backward(poa_cuda_heads_pass *p, CUdeviceptr dx, CUdeviceptr dy, CUdeviceptr x, long n,
                         poa_error *e) {
    void *args[] = { &dx, &dy, &x, &n };
    return launch(p, POA_HEADS_GELU_BACKWARD, n, args, e);
}

static int copy(poa_cuda_heads_pass *p, CUdeviceptr dst, CUdeviceptr src, long n, poa_error *e) {
    void *args[] = { &dst, &src, &n };
    return launch(p, POA_HEADS_COPY, n, args, e);
}

static int column_sum(poa_cuda_heads_pass *p, CUdeviceptr dst, CUdeviceptr src, long rows, long cols,
                      poa_error *e) {
    void *args[] = { &dst, &src, &rows, &cols };
    return launch(p, POA_HEADS_COLUMN_SUM, cols, args, e);
}

/* dst = src rounded to bf16, n elements. */
static int to_bf16(poa_cuda_heads_pass *p, CUdeviceptr dst, CUdeviceptr src, long n, poa_error *e) {
    void *args[] = { &dst, &src, &n };
    return launch(p, POA_HEADS_TO_BF16, n, args, e);
}

/* The bf16 form of a GEMM operand of `count` contiguous elements (or a parameter block): the
   parameters' shadow, an arena buffer cast now into the mirror at its own offset, or an
   incoming dlogits cast into the dlogits buffer. */
static int bf16_operand(poa_cuda_heads_pass *p, CUdeviceptr x, long count, CUdeviceptr *out, poa_error *e) {
    const size_t f = sizeof(float);
    if (x >= p->params && x < p->params + f * (size_t)p->heads->parameter_count) {
        *out = p->params_bf16 + (x - p->params) / 2;
        return 0;
    }
    if (x >= p->arena && x < p->arena + f * (size_t)p->layout.count) {
        *out = p->arena_bf16 + (x - p->arena) / 2;
        return to_bf16(p, *out, x, count, e);
    }
    *out = p->dlogits_bf16;
    return to_bf16(p, *out, x, count, e);
}

/* Row-major C (m x n, ldc) = alpha op(A) op(B) + beta C (+ bias[j] by the BIAS epilogue when
   bias is not 0). A and B are stored contiguously unless they are parameters (then the ld
   addresses a block of the full tensor). In bf16, A and B become bf16 (bf16_operand). */
static int gemm(poa_cuda_heads_pass *p, const char *what, int ta, int tb, long m, long n, long k, float alpha,
                CUdeviceptr a, long lda, CUdeviceptr b, long ldb, float beta, CUdeviceptr c, long ldc,
                CUdeviceptr bias, poa_error *e) {
    poa_cublaslt_call call = { .transpose_a = ta, .transpose_b = tb, .m = m, .n = n, .k = k, .alpha = alpha,
                               .beta = beta, .a = a, .b = b, .c = c, .lda = lda, .ldb = ldb, .ldc = ldc,
                               .type_a = POA_LT_F32, .type_b = POA_LT_F32, .type_c = POA_LT_F32,
                               .epilogue = bias ? POA_LT_EPILOGUE_BIAS : POA_LT_EPILOGUE_NONE, .bias = bias };
    if (p->bf16) {
        if (bf16_operand(p, a, m * k, &call.a, e) || bf16_operand(p, b, k * n, &call.b, e)) return -1;
        call.type_a = call.type_b = POA_LT_BF16;
    }
    p->gemms++;
    char label[96];
    snprintf(label, sizeof label, "heads %s of width %d", what, p->width);
    return poa_cuda_exec_gemm(&p->exec, &call, label, e);
}

static CUdeviceptr P(const poa_cuda_heads_pass *p, long offset) { return F(p->params, offset); }
static CUdeviceptr G(const poa_cuda_heads_pass *p, long offset) { return F(p->grads, offset); }
static CUdeviceptr A(const poa_cuda_heads_pass *p, long offset) { return F(p->arena, offset); }

int poa_cuda_heads_forward(poa_cuda_heads_pass *p, CUdeviceptr x, poa_error *e) {
    const poa_head_config *c = &p->heads->config;
    const long rows = p->rows, hid = c->hidden, bot = c->bottleneck, in = c->in_dim, width = p->width;
    const CUdeviceptr xa = A(p, p->layout.x);
    if (copy(p, xa, x, rows * width, e)) return -1;
    for (int h = 0; h < c->heads; h++) {
        const poa_head_offsets *o = &p->heads->head[h];
        const poa_head_buffers *b = &p->layout.head[h];
        long k = c->prototypes[h], d = bot;
        CUdeviceptr wn = A(p, b->wn), vnorm = A(p, b->vnorm), g = P(p, o->weight_g), v = P(p, o->weight_v);
        void *args[] = { &wn, &vnorm, &g, &v, &k, &d };
        if (launch(p, POA_HEADS_WEIGHT_NORM_FORWARD, k, args, e)) return -1;
        if (rows == 0) continue;
        if (gemm(p, "layer 0", 0, 1, rows, hid, width, p->alpha, xa, width, P(p, o->w0), in, 0, A(p, b->a0), hid,
                 P(p, o->b0), e) ||
            gelu_forward(p, A(p, b->h0), A(p, b->a0), rows * hid, e) ||
            gemm(p, "layer 1", 0, 1, rows, hid, hid, 1, A(p, b->h0), hid, P(p, o->w1), hid, 0, A(p, b->a1), hid,
                 P(p, o->b1), e) ||
            gelu_forward(p, A(p, b->h1), A(p, b->a1), rows * hid, e) ||
            gemm(p, "layer 2", 0, 1, rows, bot, hid, 1, A(p, b->h1), hid, P(p, o->w2), hid, 0, A(p, b->z), bot,
                 P(p, o->b2), e))
            return -1;
        long n = rows;
        CUdeviceptr u = A(p, b->u), norm = A(p, b->znorm), z = A(p, b->z);
        void *l2_args[] = { &u, &norm, &z, &n, &d };
        if (launch(p, POA_HEADS_L2_NORMALIZE_FORWARD, rows, l2_args, e) ||
            gemm(p, "last layer", 0, 1, rows, k, bot, 1, u, bot, wn, bot, 0, A(p, b->logits), k, 0, e))
            return -1;
    }
    return 0;
}

/* One head's backward (head.c's head_backward); dx += its input gradient when accumulate_dx,
   else dx = it. */
static int head_backward(poa_cuda_heads_pass *p, int h, CUdeviceptr dlogits, CUdeviceptr dx, int accumulate_dx,
                         poa_error *e) {
    const poa_head_config *c = &p->heads->config;
    const poa_head_offsets *o = &p->heads->head[h];
    const poa_head_buffers *b = &p->layout.head[h];
    const poa_heads_layout *l = &p->layout;
    const long rows = p->rows, hid = c->hidden, bot = c->bottleneck, in = c->in_dim, width = p->width;
    long k = c->prototypes[h], d = bot, n = rows;
    const CUdeviceptr dha = A(p, l->d_hidden_a), dhb = A(p, l->d_hidden_b), dba = A(p, l->d_bottleneck_a);
    const CUdeviceptr dbb = A(p, l->d_bottleneck_b), xa = A(p, l->x);
    CUdeviceptr dwn = A(p, l->d_wn);
    /* logits = u Wn^T: du = G Wn, dWn = G^T u */
    if (gemm(p, "last layer dgrad", 0, 0, rows, bot, k, 1, dlogits, k, A(p, b->wn), bot, 0, dba, bot, 0, e) ||
        gemm(p, "last layer wgrad", 1, 0, k, bot, rows, 1, dlogits, k, A(p, b->u), bot, 0, dwn, bot, 0, e))
        return -1;
    {
        CUdeviceptr dg = G(p, o->weight_g), dv = G(p, o->weight_v), g = P(p, o->weight_g), v = P(p, o->weight_v);
        CUdeviceptr vnorm = A(p, b->vnorm);
        void *args[] = { &dg, &dv, &dwn, &g, &v, &vnorm, &k, &d };
        if (launch(p, POA_HEADS_WEIGHT_NORM_BACKWARD, k, args, e)) return -1;
    }
    {
        CUdeviceptr dz = dbb, du = dba, u = A(p, b->u), norm = A(p, b->znorm);
        void *args[] = { &dz, &du, &u, &norm, &n, &d };
        if (launch(p, POA_HEADS_L2_NORMALIZE_BACKWARD, rows, args, e)) return -1;
    }
    /* z = h1 W2^T + b2 */
    if (column_sum(p, G(p, o->b2), dbb, rows, bot, e) ||
        gemm(p, "layer 2 wgrad", 1, 0, bot, hid, rows, 1, dbb, bot, A(p, b->h1), hid, 1, G(p, o->w2), hid, 0, e) ||
        gemm(p, "layer 2 dgrad", 0, 0, rows, hid, bot, 1, dbb, bot, P(p, o->w2), hid, 0, dha, hid, 0, e) ||
        gelu_backward(p, dha, dha, A(p, b->a1), rows * hid, e) ||
        /* a1 = h0 W1^T + b1 */
        column_sum(p, G(p, o->b1), dha, rows, hid, e) ||
        gemm(p, "layer 1 wgrad", 1, 0, hid, hid, rows, 1, dha, hid, A(p, b->h0), hid, 1, G(p, o->w1), hid, 0, e) ||
        gemm(p, "layer 1 dgrad", 0, 0, rows, hid, hid, 1, dha, hid, P(p, o->w1), hid, 0, dhb, hid, 0, e) ||
        gelu_backward(p, dhb, dhb, A(p, b->a0), rows * hid, e) ||
        /* a0 = alpha x W0[:, :D]^T + b0: dW0[:, :D] += alpha da0^T x, dx (+)= alpha da0 W0[:, :D] */
        column_sum(p, G(p, o->b0), dhb, rows, hid, e) ||
        gemm(p, "layer 0 wgrad", 1, 0, hid, width, rows, p->alpha, dhb, hid, xa, width, 1, G(p, o->w0), in, 0, e))
        return -1;
    if (dx && gemm(p, "layer 0 dgrad", 0, 0, rows, width, hid, p->alpha, dhb, hid, P(p, o->w0), in,
                   accumulate_dx ? 1 : 0, dx, width, 0, e))
        return -1;
    return 0;
}

int poa_cuda_heads_backward(poa_cuda_heads_pass *p, const CUdeviceptr *dlogits, CUdeviceptr dx, poa_error *e) {
    if (!p->grads) return poa_fail(e, "heads backward: the pass has no gradient buffer");
    if (p->rows == 0) return 0;
    for (int h = 0; h < p->heads->config.heads; h++)
        if (head_backward(p, h, dlogits[h], dx, h > 0, e)) return -1;
    return 0;
}

/* ---- set-up ---- */

/* (Re)allocates *pointer for `needed` elements of `size` bytes unless *capacity suffices. */
static int ensure(poa_cuda_heads_pass *p, CUdeviceptr *pointer, long *capacity, long needed, size_t size,
                  int region, poa_error *e) {
    if (*pointer && *capacity >= needed) return 0;
    poa_cuda_exec_free(&p->exec, pointer);
    *capacity = 0;
    if (poa_cuda_exec_alloc(&p->exec, pointer, region, size * (size_t)(needed > 0 ? needed : 1), e)) return -1;
    *capacity = needed;
    return 0;
}

static long max_prototypes(const poa_head_config *c) {
    long k = 0;
    for (int h = 0; h < c->heads; h++) k = c->prototypes[h] > k ? c->prototypes[h] : k;
    return k;
}

static int ensure_bf16(poa_cuda_heads_pass *p, poa_error *e) {
    return ensure(p, &p->arena_bf16, &p->bf16_capacity, p->layout.count, 2, REGION_ARENA_BF16, e) ||
                   ensure(p, &p->dlogits_bf16, &p->dlogits_capacity, p->rows * max_prototypes(&p->heads->config), 2,
                          REGION_DLOGITS_BF16, e)
               ? -1
               : 0;
}

int poa_cuda_heads_pass_prepare(poa_cuda_heads_pass *p, int width, long rows, poa_error *e) {
    const poa_head_config *c = &p->heads->config;
    if (width < 1 || width > c->in_dim)
        return poa_fail(e, "heads pass: width %d outside 1..%d", width, c->in_dim);
    if (rows < 0) return poa_fail(e, "heads pass: rows %ld negative", rows);
    p->width = width;
    p->rows = rows;
    p->alpha = (float)((double)c->in_dim / width);
    poa_heads_layout_of(c, rows, width, &p->layout);
    if (ensure(p, &p->arena, &p->arena_capacity, p->layout.count, sizeof(float), REGION_ARENA, e) ||
        (p->bf16 && ensure_bf16(p, e))) {
        char what[96];
        snprintf(what, sizeof what, "heads pass of width %d, %ld rows: device memory", width, rows);
        return fail_with(e, what);
    }
    for (int h = 0; h < c->heads; h++) p->logits[h] = A(p, p->layout.head[h].logits);
    return 0;
}

int poa_cuda_heads_pass_init(poa_cuda_heads_pass *p, const poa_cuda_exec *exec, const poa_heads *heads,
                             int width, long rows, CUdeviceptr params, CUdeviceptr grads, const char *source,
                             poa_error *e) {
    memset(p, 0, sizeof *p);
    p->heads = heads;
    p->exec = *exec;
    p->exec.planning = 0;
    p->params = params, p->grads = grads;
    if (poa_cuda_heads_pass_prepare(p, width, rows, e)) {
        poa_cuda_heads_pass_free(p);
        return -1;
    }
    if (!exec->cuda) return 0;
    int rc = source ? poa_cuda_exec_load_module(&p->exec, source, "heads_kernels.cu", &p->module, e)
                    : poa_fail(e, "heads pass: no kernel source");
    for (int i = 0; !rc && i < POA_HEADS_KERNEL_COUNT; i++)
        rc = poa_cuda_get_function(exec->cuda, p->module, poa_heads_kernel_names[i], &p->functions[i], e);
    if (rc) {
        poa_cuda_heads_pass_free(p);
        return fail_with(e, "heads pass");
    }
    return 0;
}

int poa_cuda_heads_pass_use_bf16(poa_cuda_heads_pass *p, CUdeviceptr params_bf16, poa_error *e) {
    if (!params_bf16) return poa_fail(e, "heads pass: bf16 without a bf16 parameter shadow");
    p->params_bf16 = params_bf16;
    p->bf16 = 1;
    if (ensure_bf16(p, e)) return fail_with(e, "heads pass: bf16 buffers");
    return 0;
}

int poa_cuda_heads_pass_plan_gemms(poa_cuda_heads_pass *p, const CUdeviceptr *dlogits, CUdeviceptr dx,
                                   poa_error *e) {
    if (!p->exec.cuda) return 0;
    const long launches = p->launches, gemms = p->gemms;
    p->exec.planning = 1;
    int rc = poa_cuda_heads_forward(p, p->arena, e) || (p->grads && poa_cuda_heads_backward(p, dlogits, dx, e));
    p->exec.planning = 0;
    p->launches = launches, p->gemms = gemms;
    return rc ? -1 : 0;
}

void poa_cuda_heads_pass_free(poa_cuda_heads_pass *p) {
    poa_cuda_exec_free(&p->exec, &p->arena);
    poa_cuda_exec_free(&p->exec, &p->arena_bf16);
    poa_cuda_exec_free(&p->exec, &p->dlogits_bf16);
    poa_cuda_exec_unload_module(&p->exec, p->module);
    memset(p, 0, sizeof *p);
}

int poa_cuda_heads_download_arena(poa_cuda_heads_pass *p, float *arena, poa_error *e) {
    if (!p->exec.cuda && !p->exec.emulator) return poa_fail(e, "heads pass: download arena: no GPU");
    return poa_cuda_exec_download(&p->exec, arena, p->arena, sizeof(float) * (size_t)p->layout.count, e);
}
