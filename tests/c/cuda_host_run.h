/* cuda_host_run.h: an emulated GPU pass whose launches run the kernels' own .cu text through
   tests/c/cuda_host.h. The module sources come by name from the generator, as the runtime gets
   them (poa_cuda_sources_load: vit_wW_hH_fF.cu and vit_fused.cu of the recipe, vit_glue.cu,
   heads_kernels.cu, train_kernels.cu). Differential check: each launch first runs the emulator's C twin (the CPU
   backend's kernels, the glue loops, the heads' and training kernels' C) on the same inputs;
   then memory is restored and the .cu kernel runs; each kernel's worst difference over every
   element either of them wrote (host_difference) is kept for the report. The .cu results are
   what the pass goes on with, so the pass's own checks against the CPU are checks of the .cu
   kernels. Device memory is cuda_host_alloc's (poisoned, guard pages). */
#ifndef POA_TEST_CUDA_HOST_RUN_H
#define POA_TEST_CUDA_HOST_RUN_H

#include <ctype.h>
#include <math.h>
#include <time.h>

#include "cuda_host.h"
#include "cuda_heads.h"
#include "cuda_train.h"
#include "cuda_vit.h"
#include "recipe.h"

typedef int (*host_twin_fn)(void *context, const char *module, const char *name, const unsigned grid[3],
                            const unsigned block[3], void **args, poa_error *e);

typedef struct host_kernel_error {
    char name[96];
    double worst, worst_relative; /* host_difference's worst[0] and worst[1] */
    long launches;
} host_kernel_error;

enum { HOST_KERNELS = 160, HOST_TOUCHED = 32 };

typedef struct host_runner {
    cuda_host host;
    const char *recipe;          /* the recipe of the vit_* modules */
    host_twin_fn twin;           /* NULL: no differential check */
    void *twin_context;
    host_kernel_error errors[HOST_KERNELS];
    int error_count;
    long launches;
    double cu_seconds, twin_seconds;
} host_runner;

/* Whether the host C++ compiler is there (else the callers run the C twins only and say so). */
static inline int host_runner_available(void) { return system("${CXX:-g++} --version >/dev/null 2>&1") == 0; }

static inline void *host_runner_alloc(void *context, size_t bytes) {
    (void)context;
    return cuda_host_alloc(bytes);
}
static inline void host_runner_release(void *context, void *pointer) {
    (void)context;
    cuda_host_free(pointer);
}

/* Whether the source defines `extern "C" __global__ ... name(`. */
static inline int poa_cuda_source_defines(const char *source, const char *name) {
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

static inline double host_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The distinct allocations the pointer arguments of a launch point into. */
typedef struct host_touched {
    int count;
    const cuda_host_allocation *a[HOST_TOUCHED];
    char *copy[HOST_TOUCHED];  /* before the launch */
    char *twin[HOST_TOUCHED];  /* after the C twin */
} host_touched;

static inline int host_touch(host_touched *t, const char *signature, void **args, poa_error *e) {
    for (int i = 0; signature[i]; i++) {
        if (signature[i] == 'v') continue;
        const char *p = (const char *)(uintptr_t) * (CUdeviceptr *)args[i];
        const cuda_host_allocation *a = p ? cuda_host_allocation_of(p) : NULL;
        if (!p) continue;
        if (!a) return poa_fail(e, "argument %d points at %p, outside every device allocation", i, (const void *)p);
        int j = 0;
        while (j < t->count && t->a[j] != a) j++;
        if (j < t->count) continue;
        if (t->count == HOST_TOUCHED) return poa_fail(e, "more than %d allocations", HOST_TOUCHED);
        t->a[j] = a;
        t->copy[j] = malloc(a->bytes), t->twin[j] = malloc(a->bytes);
        t->count++;
        if (!t->copy[j] || !t->twin[j]) return poa_fail(e, "out of memory for %zu bytes", a->bytes);
        memcpy(t->copy[j], a->base, a->bytes);
    }
    return 0;
}

static inline void host_untouch(host_touched *t) {
    for (int j = 0; j < t->count; j++) free(t->copy[j]), free(t->twin[j]);
    t->count = 0;
}

static inline double host_element(const char *at, char type) {
    switch (type) {
    case 'd': { double v; memcpy(&v, at, 8); return v; }
    case 'l': { long v; memcpy(&v, at, 8); return (double)v; }
    case 'i': { int v; memcpy(&v, at, 4); return v; }
    case 'h': { uint16_t v; memcpy(&v, at, 2); return poa_bf16_to_float(v); }
    case 'b': return (unsigned char)*at;
    default: { float v; memcpy(&v, at, 4); return v; }
    }
}

/* The worst, over the outputs, of max |cu - twin| / max(1, max |twin|) (worst[0]: relative for
   outputs beyond 1, absolute below, as sums that cancel to rounding noise are) and of
   max |cu - twin| / max |twin| (worst[1]), over every element either wrote, read as the type of
   the pointer argument at or before it (skip: an argument to leave out, -1 none). */
static inline void host_difference(const host_touched *t, const char *signature, void **args, int skip,
                                   double worst[2]) {
    worst[0] = worst[1] = 0;
    for (int i = 0; signature[i]; i++) {
        if (signature[i] == 'v' || i == skip) continue;
        const char *p = (const char *)(uintptr_t) * (CUdeviceptr *)args[i];
        if (!p) continue;
        int j = 0;
        while (j < t->count && !((const char *)p >= t->a[j]->base && p < t->a[j]->base + t->a[j]->bytes)) j++;
        if (j == t->count) continue;
        const char *base = t->a[j]->base, *end = base + t->a[j]->bytes; /* up to the next argument */
        for (int k = 0; signature[k]; k++) {
            const char *q = signature[k] == 'v' ? NULL : (const char *)(uintptr_t) * (CUdeviceptr *)args[k];
            if (q && q > p && q < end) end = q;
        }
        const char type = signature[i];
        const size_t size = type == 'd' || type == 'l' ? 8 : type == 'h' ? 2 : type == 'b' ? 1 : 4;
        double diff = 0, ref = 0;
        const char *before = t->copy[j] + (p - base), *after = t->twin[j] + (p - base);
        for (size_t o = 0; p + o + size <= end; o += size) {
            if (o % 256 == 0 && p + o + 256 <= end && !memcmp(p + o, before + o, 256) &&
                !memcmp(after + o, before + o, 256)) { /* a block neither wrote */
                o += 256 - size;
                continue;
            }
            uint64_t x = 0, b = 0, a = 0; /* constant-size copies: no calls in this loop */
            if (size == 8) memcpy(&x, p + o, 8), memcpy(&b, before + o, 8), memcpy(&a, after + o, 8);
            else if (size == 4) memcpy(&x, p + o, 4), memcpy(&b, before + o, 4), memcpy(&a, after + o, 4);
            else if (size == 2) memcpy(&x, p + o, 2), memcpy(&b, before + o, 2), memcpy(&a, after + o, 2);
            else memcpy(&x, p + o, 1), memcpy(&b, before + o, 1), memcpy(&a, after + o, 1);
            if (x == b && a == b) continue;
            const double cu = host_element(p + o, type), twin = host_element(after + o, type);
            if (x != a) diff = fmax(diff, isnan(cu) != isnan(twin) ? INFINITY : fabs(cu - twin));
            ref = fmax(ref, fabs(twin));
        }
        worst[0] = fmax(worst[0], diff == 0 ? 0 : diff / fmax(ref, 1.0));
        worst[1] = fmax(worst[1], diff == 0 ? 0 : diff / (ref > 0 ? ref : 1));
    }
}

static inline void host_record(host_runner *r, const char *name, const double err[2]) {
    int i = 0;
    while (i < r->error_count && strcmp(r->errors[i].name, name)) i++;
    if (i == r->error_count) {
        if (i == HOST_KERNELS) return;
        snprintf(r->errors[r->error_count++].name, sizeof r->errors[0].name, "%s", name);
    }
    r->errors[i].worst = fmax(r->errors[i].worst, err[0]);
    r->errors[i].worst_relative = fmax(r->errors[i].worst_relative, err[1]);
    r->errors[i].launches++;
}

/* attention_backward_dq and _dkv are one C twin (run at _dq): differentially, _dq runs both .cu
   kernels, and the work buffer (argument 1, scratch of each) is left out. */
static inline int host_is_pair(const char *name, int which) {
    return !strcmp(name, which ? "attention_backward_dkv" : "attention_backward_dq");
}

/* Runs one launch of module's kernel `name` from its .cu text (compiled on first use). */
static inline int host_runner_launch(host_runner *r, const char *module, const char *name, const unsigned grid[3],
                                     const unsigned block[3], void **args, poa_error *e) {
    const cuda_host_module *m = cuda_host_load(&r->host, module, NULL, e);
    if (!m) {
        poa_cuda_sources sources;
        if (poa_cuda_sources_load(&sources, r->recipe, NULL, e)) return -1;
        const char *source = poa_cuda_sources_find(&sources, module);
        m = source ? cuda_host_load(&r->host, module, source, e) : NULL;
        if (!source) poa_fail(e, "cuda_host: no source for module %s%s", module, r->recipe ? "" : " (no recipe)");
        poa_cuda_sources_free(&sources);
        if (!m) return -1;
    }
    r->launches++;
    const char *signature = m->signature(name);
    if (!signature) return poa_fail(e, "cuda_host: %s has no kernel %s", module, name);
    if (!r->twin) {
        double t0 = host_seconds();
        int rc = cuda_host_launch(&r->host, module, name, grid, block, args, e);
        r->cu_seconds += host_seconds() - t0;
        return rc;
    }
    if (host_is_pair(name, 1)) return 0; /* ran with _dq */
    host_touched t = { 0 };
    int rc = host_touch(&t, signature, args, e);
    double t0 = host_seconds();
    if (!rc) rc = r->twin(r->twin_context, module, name, grid, block, args, e);
    double t1 = host_seconds();
    for (int j = 0; j < t.count && !rc; j++) {
        memcpy(t.twin[j], t.a[j]->base, t.a[j]->bytes);
        memcpy(t.a[j]->base, t.copy[j], t.a[j]->bytes);
    }
    if (!rc) rc = cuda_host_launch(&r->host, module, name, grid, block, args, e);
    if (!rc && host_is_pair(name, 0)) rc = cuda_host_launch(&r->host, module, "attention_backward_dkv", grid, block, args, e);
    r->twin_seconds += t1 - t0, r->cu_seconds += host_seconds() - t1;
    if (!rc) {
        char label[96]; /* module:kernel (a ViT set's kernels have the same names in every set) */
        snprintf(label, sizeof label, "%s:%s%s", module, name, host_is_pair(name, 0) ? " + _dkv" : "");
        double err[2];
        host_difference(&t, signature, args, host_is_pair(name, 0) ? 1 : -1, err);
        host_record(r, label, err);
    }
    host_untouch(&t);
    return rc;
}

/* Prints the per-kernel table (worst[0] and worst[1] of host_difference, launches) and returns
   the worst worst[0]. */
static inline double host_runner_report(const host_runner *r, const char *prefix) {
    double worst = 0;
    for (int i = 0; i < r->error_count; i++) {
        printf("  %s %-66s worst %.3g (relative %.3g) over %ld launches\n", prefix, r->errors[i].name,
               r->errors[i].worst, r->errors[i].worst_relative, r->errors[i].launches);
        worst = fmax(worst, r->errors[i].worst);
    }
    printf("  %s: %ld launches from .cu text (%.2f s), C twins %.2f s; %d modules compiled in %.1f s, %d reused\n",
           prefix, r->launches, r->cu_seconds, r->twin_seconds, r->host.compiled, r->host.compile_seconds,
           r->host.reused);
    return worst;
}

#endif
