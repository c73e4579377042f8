/* cuda_exec.h: where the GPU code's launches, GEMMs, allocations and copies go: to the device
   (the driver API and cuBLASLt), to a host emulator (tests on machines without a GPU run the
   very same GPU code with host memory and the CPU kernels), or nowhere (set-ups that only
   count what a step would allocate, and planning walks that only build cuBLASLt plans).
   runtime/cuda_vit.c (the backbone pass) and the other GPU passes share it. */
#ifndef POA_CUDA_EXEC_H
#define POA_CUDA_EXEC_H

#include "cublaslt.h"
#include "cuda_driver.h"
#include "error.h"

/* Host emulation: device addresses are host pointers (calloc'd), copies are memcpy, and every
   launch and GEMM goes to these callbacks instead of the driver and cuBLASLt. launch gets the
   name of the kernel's module (its source file: "vit_w64_h32_f256.cu", "vit_glue.cu", ...; the
   same kernel name can be in several), the kernel's name, the geometry it would launch with and
   the very argument array cuLaunchKernel would get. gemm gets the very row-major call poa_cublaslt_matmul would get (operand types,
   epilogue, bias); an emulator evaluates the column-major call of poa_cublaslt_colmajor_of
   with cuBLASLt's semantics. */
typedef struct poa_cuda_emulator {
    void *context;
    int (*launch)(void *context, const char *module, const char *kernel, const unsigned grid[3],
                  const unsigned block[3], void **args, poa_error *e);
    int (*gemm)(void *context, const poa_cublaslt_call *call, poa_error *e);
    /* optional device memory (NULL: calloc and free): bytes of host memory, NULL when out of
       memory; like cuMemAlloc's, its content is undefined (tests/c/cuda_host.h's starts as 0xff
       bytes and ends at a guard page, so that kernels reading past an allocation fault) */
    void *(*alloc)(void *context, size_t bytes);
    void (*release)(void *context, void *pointer);
} poa_cuda_emulator;

/* Per-kernel GPU time: with a profile, every launch and GEMM on a GPU is bracketed by two
   events (from a pool made once); poa_cuda_profile_collect then adds the elapsed times up by
   name ("gemm <what>" for GEMMs). For a profiled step apart from the timed ones: the events
   cost a little. */
typedef struct poa_cuda_profile {
    int capacity, count;          /* event pairs in the pool, used since the last collect */
    CUevent *start, *stop;
    char (*pending)[48];          /* the name of each used pair */
    int kinds;
    char (*kind)[48];
    double *milliseconds;
    long *calls;
} poa_cuda_profile;

int poa_cuda_profile_init(poa_cuda_profile *p, poa_cuda *cuda, int capacity, poa_error *e);
/* Waits for the stream and adds the recorded pairs' times to the totals (pairs beyond the pool's
   capacity are not timed; their count is in the "(untimed)" kind). */
int poa_cuda_profile_collect(poa_cuda_profile *p, poa_cuda *cuda, poa_error *e);
void poa_cuda_profile_free(poa_cuda_profile *p, poa_cuda *cuda);

/* Modules loaded once per process and shared by every pass (a pass made again for another
   member finds its kernels loaded): by the source's name, which must name one text. */
typedef struct poa_cuda_modules {
    int count, capacity;
    char (*name)[80];
    CUmodule *module;
} poa_cuda_modules;

void poa_cuda_modules_free(poa_cuda_modules *m, poa_cuda *cuda);

typedef struct poa_cuda_exec {
    poa_cuda *cuda;                     /* a GPU; NULL: emulated or nowhere */
    poa_cublaslt *lt;                   /* with cuda */
    const poa_cuda_emulator *emulator;  /* non-NULL: emulated on the host */
    int planning;                       /* 1: GEMMs only build their cuBLASLt plans, nothing runs */
    poa_cuda_profile *profile;          /* non-NULL: time every launch and GEMM (GPU only) */
    poa_cuda_modules *modules;          /* non-NULL: modules come from (and stay in) this cache */
    poa_cuda_memory *account;           /* non-NULL: emulated and planned allocations are counted here
                                           (on a GPU the driver's cuda->memory counts them) */
} poa_cuda_exec;

/* Whether anything runs (a GPU or an emulator, and not planning). */
static inline int poa_cuda_exec_runs(const poa_cuda_exec *x) {
    return (x->cuda || x->emulator) && !x->planning;
}

/* Memory: on the GPU, emulated (calloc'd host memory) or, nowhere, a fake address in region r's
   terabyte from r << 40 (each a distinct one) so that a planning run can count what a step would
   allocate (x->account). */
int poa_cuda_exec_alloc(const poa_cuda_exec *x, CUdeviceptr *pointer, int region, size_t bytes, poa_error *e);
void poa_cuda_exec_free(const poa_cuda_exec *x, CUdeviceptr *pointer);
/* Host -> device, asynchronous on the GPU (keep `from` alive until a synchronize). */
int poa_cuda_exec_upload(const poa_cuda_exec *x, CUdeviceptr to, const void *from, size_t bytes, poa_error *e);
/* Device -> host, synchronous. */
int poa_cuda_exec_download(const poa_cuda_exec *x, void *to, CUdeviceptr from, size_t bytes, poa_error *e);
int poa_cuda_exec_synchronize(const poa_cuda_exec *x, poa_error *e);

/* Launches function (the emulator gets module and name) unless planning or nowhere; errors name
   the kernel. */
int poa_cuda_exec_launch(const poa_cuda_exec *x, CUfunction function, const char *module, const char *name,
                         const unsigned grid[3],
                         const unsigned block[3], void **args, poa_error *e);
/* Runs the GEMM (planning: builds its plan only); errors say `what`. */
int poa_cuda_exec_gemm(const poa_cuda_exec *x, const poa_cublaslt_call *call, const char *what, poa_error *e);

/* Compiles source (named name) for the device's architecture through the NVRTC cache and loads
   it as a module; with x->modules, once per name (later calls get the same module). */
int poa_cuda_exec_load_module(const poa_cuda_exec *x, const char *source, const char *name, CUmodule *module,
                              poa_error *e);
/* Start-up: compiles every source (named names[i]) for the device in parallel threads through
   the NVRTC cache, then loads them into x->modules, so that no pass compiles or loads anything
   later. A no-op without a GPU or a module cache. */
int poa_cuda_exec_preload(const poa_cuda_exec *x, const char *const *sources, const char *const *names, int count,
                          poa_error *e);

/* Unloads a module of poa_cuda_exec_load_module (not one the cache owns). */
void poa_cuda_exec_unload_module(const poa_cuda_exec *x, CUmodule module);

#endif
