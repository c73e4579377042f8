/* head.c: the projection heads on the CPU backend (head.h; reference §2).

   Head h over rows x (width D), alpha = in / D:
     a0 = alpha x W0[:, :D]^T + b0      h0 = GELU(a0)           (GELU(t) = t Phi(t), exact erf)
     a1 = h0 W1^T + b1                  h1 = GELU(a1)
     z  = h1 W2^T + b2                  u  = z / max(||z||, 1e-12)
     Wn_k = g_k v_k / ||v_k||           logits = u Wn^T
   Every GEMM runs on the full parameter buffer; W0's first D columns are addressed with its
   leading dimension `in`, so no weight is copied. The arena holds, per head, a0 h0 a1 h1 z u
   ||z|| Wn ||v|| logits, then a copy of the input x (the backward's dW0 needs it, and the
   caller may reuse its buffer), then the backward's scratch (shared by the heads):
   poa_heads_layout_of. */
#include "head.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "train_kernels.h"
#include "random.h"
#include "safetensors.h"

#define HEAD_NORM_EPS 1e-12
#define HEAD_STREAM_TAG 0x4845414400000000ull /* "HEAD": streams apart from the ViT's */

static long add_tensor(poa_heads *heads, const char *name, int ndim, long long d0, long long d1) {
    poa_vit_tensor *t = &heads->tensors[heads->tensor_count++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim > 1 ? d1 : 1;
    t->shape[2] = t->shape[3] = 1;
    t->count = (long)(d0 * (ndim > 1 ? d1 : 1));
    t->offset = heads->parameter_count;
    heads->parameter_count += t->count;
    return t->offset;
}

int poa_heads_init(poa_heads *heads, const poa_head_config *config, poa_error *e) {
    memset(heads, 0, sizeof *heads);
    heads->config = *config;
    const poa_head_config *c = config;
    if (c->heads < 1 || c->heads > POA_MAX_HEADS)
        return poa_fail(e, "heads: count %d outside 1..%d", c->heads, POA_MAX_HEADS);
    if (c->in_dim < 1 || c->hidden < 1 || c->bottleneck < 1)
        return poa_fail(e, "heads: in_dim %d, hidden %d, bottleneck %d must be positive", c->in_dim,
                        c->hidden, c->bottleneck);
    for (int h = 0; h < c->heads; h++)
        if (c->prototypes[h] < 1)
            return poa_fail(e, "heads: prototypes[%d] = %d must be positive", h, c->prototypes[h]);
    heads->tensors = calloc((size_t)(8 * c->heads), sizeof *heads->tensors);
    if (!heads->tensors) return poa_fail(e, "heads: out of memory");
    const long long in = c->in_dim, hid = c->hidden, bot = c->bottleneck;
    for (int h = 0; h < c->heads; h++) {
        poa_head_offsets *o = &heads->head[h];
        const long long k = c->prototypes[h];
        char n[POA_VIT_NAME_SIZE];
#define HEAD_TENSOR(field, format, ndim, d0, d1) \
    snprintf(n, sizeof n, format, h);            \
    o->field = add_tensor(heads, n, ndim, d0, d1)
        HEAD_TENSOR(w0, "mlp%d.0.weight", 2, hid, in);
        HEAD_TENSOR(b0, "mlp%d.0.bias", 1, hid, 0);
        HEAD_TENSOR(w1, "mlp%d.2.weight", 2, hid, hid);
        HEAD_TENSOR(b1, "mlp%d.2.bias", 1, hid, 0);
        HEAD_TENSOR(w2, "mlp%d.4.weight", 2, bot, hid);
        HEAD_TENSOR(b2, "mlp%d.4.bias", 1, bot, 0);
        HEAD_TENSOR(weight_g, "last_layer%d.weight_g", 2, k, 1);
        HEAD_TENSOR(weight_v, "last_layer%d.weight_v", 2, k, bot);
#undef HEAD_TENSOR
    }
    return 0;
}

void poa_heads_official_name(char *out, size_t size, const char *prefix, const char *name) {
    const char *layer = strstr(name, ".0.");
    if (strncmp(name, "mlp", 3) == 0 && layer)
        snprintf(out, size, "%s%.*s.0.linear.%s", prefix, (int)(layer - name), name, layer + 3);
    else
        snprintf(out, size, "%s%s", prefix, name);
}

int poa_heads_load_parameters(const poa_heads *heads, real *params, const char *path, const char *prefix,
                              poa_error *e) {
    poa_safetensors f;
    if (poa_safetensors_open(&f, path, e)) return -1;
    int rc = 0;
    for (int i = 0; i < heads->tensor_count && rc == 0; i++) {
        const poa_vit_tensor *t = &heads->tensors[i];
        char ours[POA_VIT_NAME_SIZE + 64], official[POA_VIT_NAME_SIZE + 64];
        snprintf(ours, sizeof ours, "%s%s", prefix, t->name);
        poa_heads_official_name(official, sizeof official, prefix, t->name);
        const char *name = poa_safetensors_find(&f, official) ? official : ours;
        if (!poa_safetensors_find(&f, name))
            rc = poa_fail(e, "%s: missing head tensor '%s' (or '%s')", path, official, ours);
        else
            rc = poa_safetensors_read_shaped(&f, name, t->ndim, t->shape, params + t->offset, e);
    }
    poa_safetensors_close(&f);
    return rc;
}

void poa_heads_free(poa_heads *heads) {
    free(heads->tensors);
    heads->tensors = NULL;
}

/* Normal(0, std) truncated to [-2, 2] absolute, as torch.nn.init.trunc_normal_ (rejection). */
static double truncated_normal(uint64_t seed, uint64_t stream, uint64_t index, double std) {
    for (uint64_t attempt = 0;; attempt++) {
        double v = std * poa_normal(seed, stream, index * 64 + attempt);
        if (v >= -2.0 && v <= 2.0) return v;
    }
}

void poa_heads_init_parameters(const poa_heads *heads, real *params, unsigned long long seed) {
    const double bound = 1.0 / sqrt((double)heads->config.bottleneck);
    for (int i = 0; i < heads->tensor_count; i++) {
        const poa_vit_tensor *t = &heads->tensors[i];
        const uint64_t stream = HEAD_STREAM_TAG + (uint64_t)i;
        const size_t len = strlen(t->name);
        const int is_g = len > 9 && strcmp(t->name + len - 9, ".weight_g") == 0;
        const int is_v = len > 9 && strcmp(t->name + len - 9, ".weight_v") == 0;
        const int is_weight = len > 7 && strcmp(t->name + len - 7, ".weight") == 0;
        real *p = params + t->offset;
        for (long j = 0; j < t->count; j++) {
            double v = 0; /* biases */
            if (is_g)
                v = 1;
            else if (is_v)
                v = bound * (2 * poa_uniform(seed, stream, (uint64_t)j) - 1);
            else if (is_weight)
                v = truncated_normal(seed, stream, (uint64_t)j, 0.02);
            p[j] = (real)v;
        }
    }
}

void poa_heads_layout_of(const poa_head_config *c, long rows, long width,
                         poa_heads_layout *layout) {
    const long hid = c->hidden, bot = c->bottleneck;
    long at = 0, kmax = 0;
    memset(layout, 0, sizeof *layout);
    for (int h = 0; h < c->heads; h++) {
        poa_head_buffers *b = &layout->head[h];
        const long k = c->prototypes[h];
        kmax = k > kmax ? k : kmax;
        b->a0 = at, at += rows * hid;
        b->h0 = at, at += rows * hid;
        b->a1 = at, at += rows * hid;
        b->h1 = at, at += rows * hid;
        b->z = at, at += rows * bot;
        b->u = at, at += rows * bot;
        b->znorm = at, at += rows;
        b->wn = at, at += k * bot;
        b->vnorm = at, at += k;
        b->logits = at, at += rows * k;
    }
    layout->x = at, at += rows * width;
    layout->d_hidden_a = at, at += rows * hid;
    layout->d_hidden_b = at, at += rows * hid;
    layout->d_bottleneck_a = at, at += rows * bot;
    layout->d_bottleneck_b = at, at += rows * bot;
    layout->d_wn = at, at += kmax * bot;
    layout->count = at;
}

int poa_heads_pass_init(poa_heads_pass *pass, const poa_heads *heads, int width, long rows,
                        poa_error *e) {
    memset(pass, 0, sizeof *pass);
    return poa_heads_pass_prepare(pass, heads, width, rows, e);
}

int poa_heads_pass_prepare(poa_heads_pass *pass, const poa_heads *heads, int width, long rows,
                           poa_error *e) {
    real *arena = pass->arena;
    long capacity = pass->arena_capacity;
    memset(pass, 0, sizeof *pass);
    const poa_head_config *c = &heads->config;
    if (width < 1 || width > c->in_dim)
        return poa_fail(e, "heads pass: width %d outside 1..%d", width, c->in_dim);
    if (rows < 0) return poa_fail(e, "heads pass: rows %ld negative", rows);
    pass->heads = heads;
    pass->width = width;
    pass->rows = rows;
    pass->alpha = (real)((double)c->in_dim / width);
    poa_heads_layout layout;
    poa_heads_layout_of(c, rows, width, &layout);
    const long at = layout.count;
    pass->arena_count = at;
    if (arena && capacity >= at) { /* keep the buffer of an earlier shape */
        pass->arena = arena, pass->arena_capacity = capacity;
    } else {
        free(arena);
        pass->arena = calloc((size_t)(at > 0 ? at : 1), sizeof(real));
        pass->arena_capacity = at;
    }
    if (!pass->arena)
        return poa_fail(e, "heads pass: out of memory for %ld rows (%ld values)", rows, at);
    for (int h = 0; h < c->heads; h++) pass->logits[h] = pass->arena + layout.head[h].logits;
    return 0;
}

void poa_heads_pass_free(poa_heads_pass *pass) {
    free(pass->arena);
    pass->arena = NULL;
}

/* The GELUs below run blocks of GELU_BLOCK values in parallel; each block is a function
   compiled per instruction set (POA_CPU_CLONES, fast_math.h), every value computed alone, so
   the result is the same bits for any thread count and any version. */
enum { GELU_BLOCK = 4096 };

/* y = GELU(x) = x * Phi(x) = x/2 (1 + erf(x / sqrt 2)), values [begin, end); erf is
   real_fast_erf (fast_math.h in fp32: within 7.1e-8 of erf, vectorised; libm's erf in fp64). */
POA_CPU_CLONES
static void gelu_forward_block(real *y, const real *x, long begin, long end) {
#pragma omp simd
    for (long i = begin; i < end; i++) {
        const real t = x[i];
        y[i] = (real)0.5 * t * (1 + real_fast_erf(t * (real)0.70710678118654752440));
    }
}

static void gelu_forward(real *y, const real *x, long n) {
#pragma omp parallel for schedule(static)
    for (long b = 0; b < n; b += GELU_BLOCK)
        gelu_forward_block(y, x, b, b + GELU_BLOCK < n ? b + GELU_BLOCK : n);
}

/* dx = dy * GELU'(x), GELU'(t) = Phi(t) + t phi(t), phi(t) = exp(-t^2 / 2) / sqrt(2 pi),
   values [begin, end); in place allowed (dx == dy). */
POA_CPU_CLONES
static void gelu_backward_block(real *dx, const real *dy, const real *x, long begin, long end) {
#pragma omp simd
    for (long i = begin; i < end; i++) {
        const real t = x[i];
        const real cdf = (real)0.5 * (1 + real_fast_erf(t * (real)0.70710678118654752440));
        const real pdf = (real)0.39894228040143267794 * real_fast_exp((real)-0.5 * t * t);
        dx[i] = dy[i] * (cdf + t * pdf);
    }
}

static void gelu_backward(real *dx, const real *dy, const real *x, long n) {
#pragma omp parallel for schedule(static)
    for (long b = 0; b < n; b += GELU_BLOCK)
        gelu_backward_block(dx, dy, x, b, b + GELU_BLOCK < n ? b + GELU_BLOCK : n);
}

/* dst[j] += sum_r src[r * cols + j] (a bias gradient), double accumulators, the rows in
   increasing order; one thread per block of 16 columns, read a row segment at a time. */
static void column_sum_accumulate(real *dst, const real *src, long rows, long cols) {
    enum { CHUNK = 16 };
    const long chunks = (cols + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static)
    for (long c = 0; c < chunks; c++) {
        const long begin = c * CHUNK, count = begin + CHUNK < cols ? CHUNK : cols - begin;
        double acc[CHUNK] = { 0 };
        for (long r = 0; r < rows; r++) {
            const real *row = src + r * cols + begin;
            for (long j = 0; j < count; j++) acc[j] += row[j];
        }
        for (long j = 0; j < count; j++) dst[begin + j] += (real)acc[j];
    }
}

/* u_r = z_r / max(||z_r||, 1e-12); norm_r = ||z_r||. */
static void l2_normalize_rows(real *u, real *norm, const real *z, long rows, long d) {
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        double s = 0;
        for (long j = 0; j < d; j++) s += (double)z[r * d + j] * z[r * d + j];
        double n = sqrt(s), denom = n > HEAD_NORM_EPS ? n : HEAD_NORM_EPS;
        norm[r] = (real)n;
        for (long j = 0; j < d; j++) u[r * d + j] = (real)(z[r * d + j] / denom);
    }
}

/* Weight norm: wn_k = g_k v_k / ||v_k||, vnorm_k = ||v_k||, k < K, rows of length d. */
static void weight_norm_forward(real *wn, real *vnorm, const real *g, const real *v, long k,
                                long d) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < k; i++) {
        double s = 0;
        for (long j = 0; j < d; j++) s += (double)v[i * d + j] * v[i * d + j];
        double n = sqrt(s), f = g[i] / n;
        vnorm[i] = (real)n;
        for (long j = 0; j < d; j++) wn[i * d + j] = (real)(f * v[i * d + j]);
    }
}

void poa_heads_forward(poa_heads_pass *pass, const real *params, const real *x) {
    const poa_head_config *c = &pass->heads->config;
    const long rows = pass->rows, hid = c->hidden, bot = c->bottleneck, in = c->in_dim;
    const long width = pass->width;
    real *a = pass->arena;
    poa_heads_layout layout;
    poa_heads_layout_of(c, rows, width, &layout);
    if (rows > 0) memcpy(a + layout.x, x, sizeof(real) * (size_t)(rows * width));
    for (int h = 0; h < c->heads; h++) {
        const poa_head_offsets *o = &pass->heads->head[h];
        const poa_head_buffers b = layout.head[h];
        const long k = c->prototypes[h];
        weight_norm_forward(a + b.wn, a + b.vnorm, params + o->weight_g, params + o->weight_v, k,
                            bot);
        if (rows == 0) continue;
        poa_fill_rows(a + b.a0, hid, params + o->b0, rows, hid);
        poa_gemm(0, 1, rows, hid, width, pass->alpha, x, width, params + o->w0, in, 1, a + b.a0,
                 hid);
        gelu_forward(a + b.h0, a + b.a0, rows * hid);
        poa_fill_rows(a + b.a1, hid, params + o->b1, rows, hid);
        poa_gemm(0, 1, rows, hid, hid, 1, a + b.h0, hid, params + o->w1, hid, 1, a + b.a1, hid);
        gelu_forward(a + b.h1, a + b.a1, rows * hid);
        poa_fill_rows(a + b.z, bot, params + o->b2, rows, bot);
        poa_gemm(0, 1, rows, bot, hid, 1, a + b.h1, hid, params + o->w2, hid, 1, a + b.z, bot);
        l2_normalize_rows(a + b.u, a + b.znorm, a + b.z, rows, bot);
        poa_gemm(0, 1, rows, k, bot, 1, a + b.u, bot, a + b.wn, bot, 0, a + b.logits, k);
    }
}

/* Weight-norm backward, from dw = dL/dWn (K x d):
   dg_k += <dw_k, v_k> / ||v_k||;  dv_k += (g_k / ||v_k||) (dw_k - (<dw_k, v_k> / ||v_k||^2) v_k). */
static void weight_norm_backward(real *dg, real *dv, const real *dw, const real *g, const real *v,
                                 const real *vnorm, long k, long d) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < k; i++) {
        double dot = 0, n = vnorm[i];
        for (long j = 0; j < d; j++) dot += (double)dw[i * d + j] * v[i * d + j];
        dg[i] += (real)(dot / n);
        double f = g[i] / n, proj = dot / (n * n);
        for (long j = 0; j < d; j++) dv[i * d + j] += (real)(f * (dw[i * d + j] - proj * v[i * d + j]));
    }
}

/* L2-normalise backward: with n = ||z|| > eps, dz = (du - u <du, u>) / n; else dz = du / eps
   (the clamp is constant there). */
static void l2_normalize_backward(real *dz, const real *du, const real *u, const real *norm,
                                  long rows, long d) {
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        double n = norm[r];
        if (n > HEAD_NORM_EPS) {
            double dot = 0;
            for (long j = 0; j < d; j++) dot += (double)du[r * d + j] * u[r * d + j];
            for (long j = 0; j < d; j++) dz[r * d + j] = (real)((du[r * d + j] - u[r * d + j] * dot) / n);
        } else {
            for (long j = 0; j < d; j++) dz[r * d + j] = (real)(du[r * d + j] / HEAD_NORM_EPS);
        }
    }
}

/* One head's backward (see the file comment for the forward it inverts); dx += its input
   gradient when accumulate_dx, else dx = it. */
static void head_backward(poa_heads_pass *pass, int h, const poa_head_buffers *b, const real *params,
                          real *grads, const real *dlogits, const real *x, real *dx,
                          int accumulate_dx,
                          real *d_hid_a, real *d_hid_b, real *d_bot_a, real *d_bot_b,
                          real *d_wn) {
    const poa_head_config *c = &pass->heads->config;
    const poa_head_offsets *o = &pass->heads->head[h];
    const long rows = pass->rows, hid = c->hidden, bot = c->bottleneck, in = c->in_dim;
    const long k = c->prototypes[h], width = pass->width;
    const real *a = pass->arena;
    /* logits = u Wn^T: du = G Wn, dWn = G^T u */
    poa_gemm(0, 0, rows, bot, k, 1, dlogits, k, a + b->wn, bot, 0, d_bot_a, bot);
    poa_gemm(1, 0, k, bot, rows, 1, dlogits, k, a + b->u, bot, 0, d_wn, bot);
    weight_norm_backward(grads + o->weight_g, grads + o->weight_v, d_wn, params + o->weight_g,
                         params + o->weight_v, a + b->vnorm, k, bot);
    l2_normalize_backward(d_bot_b, d_bot_a, a + b->u, a + b->znorm, rows, bot);
    /* z = h1 W2^T + b2 */
    column_sum_accumulate(grads + o->b2, d_bot_b, rows, bot);
    poa_gemm(1, 0, bot, hid, rows, 1, d_bot_b, bot, a + b->h1, hid, 1, grads + o->w2, hid);
    poa_gemm(0, 0, rows, hid, bot, 1, d_bot_b, bot, params + o->w2, hid, 0, d_hid_a, hid);
    gelu_backward(d_hid_a, d_hid_a, a + b->a1, rows * hid);
    /* a1 = h0 W1^T + b1 */
    column_sum_accumulate(grads + o->b1, d_hid_a, rows, hid);
    poa_gemm(1, 0, hid, hid, rows, 1, d_hid_a, hid, a + b->h0, hid, 1, grads + o->w1, hid);
    poa_gemm(0, 0, rows, hid, hid, 1, d_hid_a, hid, params + o->w1, hid, 0, d_hid_b, hid);
    gelu_backward(d_hid_b, d_hid_b, a + b->a0, rows * hid);
    /* a0 = alpha x W0[:, :D]^T + b0: dW0[:, :D] += alpha da0^T x, dx (+)= alpha da0 W0[:, :D] */
    column_sum_accumulate(grads + o->b0, d_hid_b, rows, hid);
    poa_gemm(1, 0, hid, width, rows, pass->alpha, d_hid_b, hid, x, width, 1,
             grads + o->w0, in);
    if (dx)
        poa_gemm(0, 0, rows, width, hid, pass->alpha, d_hid_b, hid, params + o->w0, in,
                 accumulate_dx ? 1 : 0, dx, width);
}

void poa_heads_backward(poa_heads_pass *pass, const real *params, real *grads,
                        real *const *dlogits, real *dx) {
    const poa_head_config *c = &pass->heads->config;
    const long rows = pass->rows;
    real *a = pass->arena;
    poa_heads_layout l;
    poa_heads_layout_of(c, rows, pass->width, &l);
    if (rows == 0) return;
    for (int h = 0; h < c->heads; h++)
        head_backward(pass, h, &l.head[h], params, grads, dlogits[h], a + l.x, dx, h > 0,
                      a + l.d_hidden_a, a + l.d_hidden_b, a + l.d_bottleneck_a,
                      a + l.d_bottleneck_b, a + l.d_wn);
}
