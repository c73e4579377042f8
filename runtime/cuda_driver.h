/* cuda_driver.h: the CUDA driver API through dlopen("libcuda.so.1"), never linked, so poa
   starts on machines without a driver. cuda.h gives the types only (when configure.lua found
   the toolkit); every call goes through the function pointers of poa_cuda_api, resolved by
   their exported names (the _v2 ones where cuda.h maps the plain name to them).

   poa_cuda_open picks device LOCAL_RANK (0 when unset), retains its primary context (the one
   the runtime API and cuBLASLt share), makes it current and creates one non-blocking stream.
   With no libcuda, the toolkit's stub library (CUDA_ERROR_STUB_LIBRARY), no device or a
   driver too old for the library, it fails with a message starting "no GPU: " and sets
   cuda->no_gpu, so the caller can run on the CPU backend instead. Any other failure (a
   device that is there but cannot be used) is an error without no_gpu. */
#ifndef POA_CUDA_DRIVER_H
#define POA_CUDA_DRIVER_H

#include <stddef.h>

#include "error.h"

#ifdef POA_HAVE_NVRTC /* set by configure.lua when the CUDA toolkit's headers are present */
#include <cuda.h>
#else
typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUevent_st *CUevent;
typedef int CUdevice_attribute;
#endif

typedef struct poa_cuda_api {
    CUresult (*init)(unsigned int flags);                                /* cuInit */
    CUresult (*driver_get_version)(int *version);                        /* cuDriverGetVersion */
    CUresult (*device_get_count)(int *count);                            /* cuDeviceGetCount */
    CUresult (*device_get)(CUdevice *device, int ordinal);               /* cuDeviceGet */
    CUresult (*device_get_attribute)(int *value, CUdevice_attribute attribute, CUdevice device);
    CUresult (*device_get_name)(char *name, int length, CUdevice device);
    CUresult (*device_total_mem)(size_t *bytes, CUdevice device);        /* cuDeviceTotalMem_v2 */
    CUresult (*primary_ctx_retain)(CUcontext *context, CUdevice device); /* cuDevicePrimaryCtxRetain */
    CUresult (*primary_ctx_release)(CUdevice device);                    /* ..._v2 */
    CUresult (*ctx_set_current)(CUcontext context);
    CUresult (*ctx_synchronize)(void);
    CUresult (*stream_create)(CUstream *stream, unsigned int flags);
    CUresult (*stream_destroy)(CUstream stream);                         /* cuStreamDestroy_v2 */
    CUresult (*stream_synchronize)(CUstream stream);
    CUresult (*module_load_data)(CUmodule *module, const void *image);
    CUresult (*module_unload)(CUmodule module);
    CUresult (*module_get_function)(CUfunction *function, CUmodule module, const char *name);
    CUresult (*launch_kernel)(CUfunction f, unsigned grid_x, unsigned grid_y, unsigned grid_z,
                              unsigned block_x, unsigned block_y, unsigned block_z,
                              unsigned shared_bytes, CUstream stream, void **parameters,
                              void **extra);
    CUresult (*mem_alloc)(CUdeviceptr *pointer, size_t bytes);           /* cuMemAlloc_v2 */
    CUresult (*mem_free)(CUdeviceptr pointer);                           /* cuMemFree_v2 */
    CUresult (*mem_get_info)(size_t *free_bytes, size_t *total_bytes);   /* cuMemGetInfo_v2 */
    CUresult (*memcpy_htod_async)(CUdeviceptr to, const void *from, size_t bytes, CUstream stream);
    CUresult (*memcpy_dtoh_async)(void *to, CUdeviceptr from, size_t bytes, CUstream stream);
    CUresult (*get_error_name)(CUresult error, const char **text);
    CUresult (*get_error_string)(CUresult error, const char **text);
    CUresult (*event_create)(CUevent *event, unsigned int flags);         /* cuEventCreate */
    CUresult (*event_record)(CUevent event, CUstream stream);             /* cuEventRecord */
    CUresult (*event_synchronize)(CUevent event);                         /* cuEventSynchronize */
    CUresult (*event_elapsed_time)(float *milliseconds, CUevent start, CUevent end); /* cuEventElapsedTime */
    CUresult (*event_destroy)(CUevent event);                             /* cuEventDestroy_v2 */
} poa_cuda_api;

/* Device memory of the process through poa_cuda_alloc/free: what is allocated now and the
   most that ever was (the peak a run reports). */
typedef struct poa_cuda_memory {
    size_t in_use, peak;
    long allocations;   /* live */
    CUdeviceptr *pointers;
    size_t *bytes;
    long capacity;
} poa_cuda_memory;

typedef struct poa_cuda {
    void *library;
    char library_name[512]; /* what was dlopen'ed */
    int no_gpu;             /* after a failed open: 1 when the reason is "no GPU" */
    int driver_version;     /* e.g. 13000 */
    int device_count, ordinal;
    CUdevice device;
    char device_name[256];
    int major, minor, multiprocessors; /* compute capability, SM count */
    size_t total_memory;
    CUcontext context; /* the device's primary context, current on the opening thread */
    CUstream stream;
    poa_cuda_api api;
    poa_cuda_memory memory;
} poa_cuda;

/* Opens the driver, device LOCAL_RANK, its primary context and a stream. The library is
   POA_LIBCUDA when set (a path, e.g. to test with the toolkit's stub), else "libcuda.so.1". */
int poa_cuda_open(poa_cuda *cuda, poa_error *e);

/* The same with an explicit library (NULL: as poa_cuda_open) and device ordinal (-1:
   LOCAL_RANK, default 0). */
int poa_cuda_open_device(poa_cuda *cuda, const char *library, int ordinal, poa_error *e);

/* Releases the stream and the primary context and closes the library; safe on a failed or
   zeroed poa_cuda. */
void poa_cuda_close(poa_cuda *cuda);

/* Opens the GPU for a run, or decides on the CPU backend: returns 1 with cuda open, 0 when
   there is no GPU (one line "poa: no GPU (<reason>); running on the CPU backend" on stderr,
   printed once per process), -1 on any other error. */
int poa_cuda_open_or_cpu(poa_cuda *cuda, poa_error *e);

/* 0 for CUDA_SUCCESS, else -1 with "<what>: <CUDA_ERROR_NAME> (<description>)". */
int poa_cuda_check(const poa_cuda *cuda, CUresult result, const char *what, poa_error *e);

/* "sm_90" for compute capability 9.0. */
void poa_cuda_arch(const poa_cuda *cuda, char *arch, size_t size);

/* The account's bookkeeping: an allocation of bytes at pointer, and its release (unknown
   pointers are ignored). */
int poa_cuda_memory_add(poa_cuda_memory *m, CUdeviceptr pointer, size_t bytes);
void poa_cuda_memory_remove(poa_cuda_memory *m, CUdeviceptr pointer);
void poa_cuda_memory_free(poa_cuda_memory *m);

/* Thin checked wrappers on cuda->stream (asynchronous where the name says so). alloc and free
   keep cuda->memory's account (in use, peak). */
int poa_cuda_alloc(poa_cuda *cuda, CUdeviceptr *pointer, size_t bytes, poa_error *e);
int poa_cuda_free(poa_cuda *cuda, CUdeviceptr pointer, poa_error *e);
int poa_cuda_copy_to_device_async(poa_cuda *cuda, CUdeviceptr to, const void *from, size_t bytes,
                                  poa_error *e);
int poa_cuda_copy_to_host_async(poa_cuda *cuda, void *to, CUdeviceptr from, size_t bytes,
                                poa_error *e);
int poa_cuda_synchronize(poa_cuda *cuda, poa_error *e);
/* Loads a CUBIN (or NUL-terminated PTX) image and finds one kernel in it. */
int poa_cuda_load_module(poa_cuda *cuda, const void *image, CUmodule *module, poa_error *e);
int poa_cuda_get_function(poa_cuda *cuda, CUmodule module, const char *name, CUfunction *function,
                          poa_error *e);
int poa_cuda_launch(poa_cuda *cuda, CUfunction function, const unsigned grid[3],
                    const unsigned block[3], unsigned shared_bytes, void **parameters,
                    poa_error *e);

#endif
