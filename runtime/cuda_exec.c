/* cuda_exec.c: the GPU code's launches, GEMMs, memory and copies (see cuda_exec.h). */
#include "cuda_exec.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nvrtc_cache.h"

int poa_cuda_exec_alloc(const poa_cuda_exec *x, CUdeviceptr *pointer, int region, size_t bytes, poa_error *e) {
    if (x->emulator) {
        *pointer = (CUdeviceptr)(uintptr_t)calloc(bytes ? bytes : 4, 1);
        return *pointer ? 0 : poa_fail(e, "out of host memory for %zu bytes", bytes);
    }
    if (!x->cuda) {
        *pointer = (CUdeviceptr)region << 40;
        return 0;
    }
    return poa_cuda_alloc(x->cuda, pointer, bytes ? bytes : 4, e);
}

void poa_cuda_exec_free(const poa_cuda_exec *x, CUdeviceptr *pointer) {
    if (!*pointer) return;
    if (x->emulator) free((void *)(uintptr_t)*pointer);
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

int poa_cuda_exec_launch(const poa_cuda_exec *x, CUfunction function, const char *module, const char *name,
                         const unsigned grid[3],
                         const unsigned block[3], void **args, poa_error *e) {
    if (!poa_cuda_exec_runs(x)) return 0;
    if (x->emulator) return x->emulator->launch(x->emulator->context, module, name, grid, block, args, e);
    if (poa_cuda_launch(x->cuda, function, grid, block, 0, args, e)) {
        char message[sizeof e->message];
        snprintf(message, sizeof message, "%s", e->message);
        return poa_fail(e, "launch %s: %s", name, message);
    }
    return 0;
}

int poa_cuda_exec_gemm(const poa_cuda_exec *x, const poa_cublaslt_call *call, const char *what, poa_error *e) {
    int rc;
    if (x->planning) rc = x->cuda ? poa_cublaslt_prepare(x->lt, call, e) : 0;
    else if (x->emulator) rc = x->emulator->gemm(x->emulator->context, call, e);
    else if (!x->cuda) return 0;
    else rc = poa_cublaslt_matmul(x->lt, call, e);
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
