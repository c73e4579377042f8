/* cuda_exec.c: the GPU code's launches, GEMMs, memory and copies (see cuda_exec.h). */
#include "cuda_exec.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nvrtc_cache.h"

static unsigned long fake_allocations; /* makes the fake addresses distinct */

int poa_cuda_exec_alloc(const poa_cuda_exec *x, CUdeviceptr *pointer, int region, size_t bytes, poa_error *e) {
    if (x->cuda) return poa_cuda_alloc(x->cuda, pointer, bytes ? bytes : 4, e);
    if (x->emulator) {
        const poa_cuda_emulator *m = x->emulator;
        *pointer = (CUdeviceptr)(uintptr_t)(m->alloc ? m->alloc(m->context, bytes ? bytes : 4) : calloc(bytes ? bytes : 4, 1));
        if (!*pointer) return poa_fail(e, "out of host memory for %zu bytes", bytes);
    } else {
        *pointer = ((CUdeviceptr)region << 40) + (CUdeviceptr)(fake_allocations++ % 4096) * 4096;
    }
    if (x->account && poa_cuda_memory_add(x->account, *pointer, bytes))
        return poa_fail(e, "out of host memory for the allocation account");
    return 0;
}

void poa_cuda_exec_free(const poa_cuda_exec *x, CUdeviceptr *pointer) {
    if (!*pointer) return;
    if (x->account && !x->cuda) poa_cuda_memory_remove(x->account, *pointer);
    if (x->emulator && x->emulator->release) x->emulator->release(x->emulator->context, (void *)(uintptr_t)*pointer);
    else if (x->emulator) free((void *)(uintptr_t)*pointer);
    if (x->cuda) {
        poa_error ignored;
        poa_cuda_free(x->cuda, *pointer, &ignored);
    }
    *pointer = 0;
}

int poa_cuda_exec_upload(const poa_cuda_exec *x, CUdeviceptr to, const void *from, size_t bytes, poa_error *e) {
    if (!poa_cuda_exec_runs(x) || bytes == 0) return 0;
    if (x->emulator) {
        memcpy((void *)(uintptr_t)to, from, bytes);
        return 0;
    }
    return poa_cuda_copy_to_device_async(x->cuda, to, from, bytes, e);
}

int poa_cuda_exec_download(const poa_cuda_exec *x, void *to, CUdeviceptr from, size_t bytes, poa_error *e) {
    if (x->emulator) {
        memcpy(to, (const void *)(uintptr_t)from, bytes);
        return 0;
    }
    if (!x->cuda) return poa_fail(e, "download: no GPU");
    if (poa_cuda_copy_to_host_async(x->cuda, to, from, bytes, e)) return -1;
    return poa_cuda_synchronize(x->cuda, e);
}

int poa_cuda_exec_synchronize(const poa_cuda_exec *x, poa_error *e) {
    return x->cuda ? poa_cuda_synchronize(x->cuda, e) : 0;
}

/* ---- profile ---- */

int poa_cuda_profile_init(poa_cuda_profile *p, poa_cuda *cuda, int capacity, poa_error *e) {
    memset(p, 0, sizeof *p);
    p->start = calloc((size_t)capacity, sizeof *p->start);
    p->stop = calloc((size_t)capacity, sizeof *p->stop);
    p->pending = calloc((size_t)capacity, sizeof *p->pending);
    p->kind = calloc((size_t)capacity + 1, sizeof *p->kind);
    p->milliseconds = calloc((size_t)capacity + 1, sizeof *p->milliseconds);
    p->calls = calloc((size_t)capacity + 1, sizeof *p->calls);
    if (!p->start || !p->stop || !p->pending || !p->kind || !p->milliseconds || !p->calls) {
        poa_cuda_profile_free(p, cuda);
        return poa_fail(e, "profile: out of memory for %d events", capacity);
    }
    for (int i = 0; i < capacity; i++) {
        if (poa_cuda_check(cuda, cuda->api.event_create(&p->start[i], 0), "cuEventCreate", e) ||
            poa_cuda_check(cuda, cuda->api.event_create(&p->stop[i], 0), "cuEventCreate", e)) {
            poa_cuda_profile_free(p, cuda);
            return -1;
        }
        p->capacity = i + 1;
    }
    return 0;
}

static void profile_add(poa_cuda_profile *p, const char *name, double ms) {
    int i = 0;
    while (i < p->kinds && strcmp(p->kind[i], name)) i++;
    if (i == p->kinds) snprintf(p->kind[p->kinds++], sizeof p->kind[0], "%s", name);
    p->milliseconds[i] += ms;
    p->calls[i]++;
}

int poa_cuda_profile_collect(poa_cuda_profile *p, poa_cuda *cuda, poa_error *e) {
    if (poa_cuda_synchronize(cuda, e)) return -1;
    const int timed = p->count < p->capacity ? p->count : p->capacity;
    for (int i = 0; i < timed; i++) {
        float ms = 0;
        if (poa_cuda_check(cuda, cuda->api.event_elapsed_time(&ms, p->start[i], p->stop[i]), "cuEventElapsedTime", e))
            return -1;
        profile_add(p, p->pending[i], ms);
    }
    for (int i = timed; i < p->count; i++) profile_add(p, "(untimed)", 0);
    p->count = 0;
    return 0;
}

void poa_cuda_profile_free(poa_cuda_profile *p, poa_cuda *cuda) {
    for (int i = 0; i < p->capacity && cuda; i++) {
        if (p->start && p->start[i]) cuda->api.event_destroy(p->start[i]);
        if (p->stop && p->stop[i]) cuda->api.event_destroy(p->stop[i]);
    }
    free(p->start), free(p->stop), free(p->pending), free(p->kind), free(p->milliseconds), free(p->calls);
    memset(p, 0, sizeof *p);
}

/* The event pair bracketing one launch or GEMM (NULL when not profiling or the pool is used up). */
static int profile_begin(const poa_cuda_exec *x, const char *name, int *slot, poa_error *e) {
    *slot = -1;
    poa_cuda_profile *p = x->profile;
    if (!p || !x->cuda) return 0;
    if (p->count >= p->capacity) {
        p->count++;
        return 0;
    }
    *slot = p->count++;
    snprintf(p->pending[*slot], sizeof p->pending[0], "%s", name);
    return poa_cuda_check(x->cuda, x->cuda->api.event_record(p->start[*slot], x->cuda->stream), "cuEventRecord", e);
}

static int profile_end(const poa_cuda_exec *x, int slot, poa_error *e) {
    if (slot < 0) return 0;
    return poa_cuda_check(x->cuda, x->cuda->api.event_record(x->profile->stop[slot], x->cuda->stream), "cuEventRecord",
                          e);
}

int poa_cuda_exec_preload(const poa_cuda_exec *x, const char *const *sources, const char *const *names, int count,
                          poa_error *e) {
    if (!x->cuda || !x->modules || count <= 0) return 0;
    char arch[32];
    poa_cuda_arch(x->cuda, arch, sizeof arch);
    if (poa_nvrtc_compile_all(sources, names, count, arch, e)) return -1;
    for (int i = 0; i < count; i++) { /* from the disk cache now */
        CUmodule module;
        if (poa_cuda_exec_load_module(x, sources[i], names[i], &module, e)) return -1;
    }
    return 0;
}

void poa_cuda_exec_unload_module(const poa_cuda_exec *x, CUmodule module) {
    if (module && x->cuda && !x->modules) x->cuda->api.module_unload(module);
}

void poa_cuda_modules_free(poa_cuda_modules *m, poa_cuda *cuda) {
    for (int i = 0; i < m->count && cuda; i++) cuda->api.module_unload(m->module[i]);
    free(m->name), free(m->module);
    memset(m, 0, sizeof *m);
}

int poa_cuda_exec_launch(const poa_cuda_exec *x, CUfunction function, const char *module, const char *name,
                         const unsigned grid[3],
                         const unsigned block[3], void **args, poa_error *e) {
    if (!poa_cuda_exec_runs(x)) return 0;
    if (x->emulator) return x->emulator->launch(x->emulator->context, module, name, grid, block, args, e);
    int slot;
    if (profile_begin(x, name, &slot, e)) return -1;
    if (poa_cuda_launch(x->cuda, function, grid, block, 0, args, e)) {
        char message[sizeof e->message];
        snprintf(message, sizeof message, "%s", e->message);
        return poa_fail(e, "launch %s: %s", name, message);
    }
    return profile_end(x, slot, e);
}

int poa_cuda_exec_gemm(const poa_cuda_exec *x, const poa_cublaslt_call *call, const char *what, poa_error *e) {
    int rc;
    if (x->planning) rc = x->cuda ? poa_cublaslt_prepare(x->lt, call, e) : 0;
    else if (x->emulator) rc = x->emulator->gemm(x->emulator->context, call, e);
    else if (!x->cuda) return 0;
    else {
        /* profiled as "gemm <what, up to ' of '>" (the layer, not the member) */
        char name[48];
        const char *of = strstr(what, " of ");
        snprintf(name, sizeof name, "gemm %.*s", (int)(of ? (size_t)(of - what) : strlen(what)), what);
        int slot;
        rc = profile_begin(x, name, &slot, e) || poa_cublaslt_matmul(x->lt, call, e) || profile_end(x, slot, e);
    }
    if (rc) {
        char message[sizeof e->message];
        snprintf(message, sizeof message, "%s", e->message);
        return poa_fail(e, "GEMM %s: %s", what, message);
    }
    return 0;
}

int poa_cuda_exec_load_module(const poa_cuda_exec *x, const char *source, const char *name, CUmodule *module,
                              poa_error *e) {
    if (!x->cuda) return poa_fail(e, "load %s: no GPU", name);
    poa_cuda_modules *m = x->modules;
    if (m) {
        for (int i = 0; i < m->count; i++)
            if (!strcmp(m->name[i], name)) {
                *module = m->module[i];
                return 0;
            }
        if (m->count == m->capacity) {
            int capacity = m->capacity ? 2 * m->capacity : 16;
            char(*names)[80] = realloc(m->name, sizeof *names * (size_t)capacity);
            if (names) m->name = names;
            CUmodule *modules = names ? realloc(m->module, sizeof *modules * (size_t)capacity) : NULL;
            if (!modules) return poa_fail(e, "load %s: out of memory", name);
            m->module = modules, m->capacity = capacity;
        }
        poa_cuda_exec uncached = *x;
        uncached.modules = NULL;
        if (poa_cuda_exec_load_module(&uncached, source, name, module, e)) return -1;
        snprintf(m->name[m->count], sizeof m->name[0], "%s", name);
        m->module[m->count++] = *module;
        return 0;
    }
    char arch[32];
    poa_cuda_arch(x->cuda, arch, sizeof arch);
    poa_blob blob = { 0 };
    int hit = 0;
    if (poa_nvrtc_compile_cached(source, name, arch, poa_nvrtc_kernel_options, poa_nvrtc_kernel_option_count, &blob,
                                 &hit, e))
        return -1;
    int rc = poa_cuda_load_module(x->cuda, blob.data, module, e);
    poa_blob_free(&blob);
    return rc;
}
