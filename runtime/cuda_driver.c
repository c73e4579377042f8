/* cuda_driver.c: the CUDA driver API through dlopen (see cuda_driver.h). */
#include "cuda_driver.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Values from cuda.h, spelled here so this file also builds without it. */
enum {
    RESULT_SUCCESS = 0,
    RESULT_STUB_LIBRARY = 34,        /* CUDA_ERROR_STUB_LIBRARY: the toolkit's link stub */
    RESULT_INSUFFICIENT_DRIVER = 35, /* CUDA_ERROR_INSUFFICIENT_DRIVER */
    RESULT_NO_DEVICE = 100,          /* CUDA_ERROR_NO_DEVICE */
    ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
    ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
    ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
    STREAM_NON_BLOCKING = 1,
};

/* Names for the results that matter before cuGetErrorName can be trusted (the stub's own
   cuGetErrorName fails with 34). */
static const char *known_result_name(CUresult r) {
    switch ((int)r) {
    case 0: return "CUDA_SUCCESS";
    case 1: return "CUDA_ERROR_INVALID_VALUE";
    case 2: return "CUDA_ERROR_OUT_OF_MEMORY";
    case 3: return "CUDA_ERROR_NOT_INITIALIZED";
    case RESULT_STUB_LIBRARY: return "CUDA_ERROR_STUB_LIBRARY";
    case RESULT_INSUFFICIENT_DRIVER: return "CUDA_ERROR_INSUFFICIENT_DRIVER";
    case RESULT_NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
    case 101: return "CUDA_ERROR_INVALID_DEVICE";
    case 803: return "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH";
    case 804: return "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE";
    default: return NULL;
    }
}

int poa_cuda_check(const poa_cuda *cuda, CUresult result, const char *what, poa_error *e) {
    if ((int)result == RESULT_SUCCESS) return 0;
    const char *name = NULL, *text = NULL;
    if (cuda && cuda->api.get_error_name && (int)cuda->api.get_error_name(result, &name) != RESULT_SUCCESS)
        name = NULL;
    if (cuda && cuda->api.get_error_string && (int)cuda->api.get_error_string(result, &text) != RESULT_SUCCESS)
        text = NULL;
    if (!name) name = known_result_name(result);
    if (name && text) return poa_fail(e, "%s: %s (%s)", what, name, text);
    if (name) return poa_fail(e, "%s: %s", what, name);
    return poa_fail(e, "%s: CUDA error %d", what, (int)result);
}

static int no_gpu(poa_cuda *cuda, poa_error *e, const char *format, const char *detail) {
    cuda->no_gpu = 1;
    char reason[768];
    snprintf(reason, sizeof reason, format, detail);
    return poa_fail(e, "no GPU: %s", reason);
}

static int resolve(poa_cuda *cuda, poa_error *e) {
    poa_cuda_api *a = &cuda->api;
    struct { void **slot; const char *symbol; } symbols[] = {
        { (void **)&a->init, "cuInit" },
        { (void **)&a->driver_get_version, "cuDriverGetVersion" },
        { (void **)&a->device_get_count, "cuDeviceGetCount" },
        { (void **)&a->device_get, "cuDeviceGet" },
        { (void **)&a->device_get_attribute, "cuDeviceGetAttribute" },
        { (void **)&a->device_get_name, "cuDeviceGetName" },
        { (void **)&a->device_total_mem, "cuDeviceTotalMem_v2" },
        { (void **)&a->primary_ctx_retain, "cuDevicePrimaryCtxRetain" },
        { (void **)&a->primary_ctx_release, "cuDevicePrimaryCtxRelease_v2" },
        { (void **)&a->ctx_set_current, "cuCtxSetCurrent" },
        { (void **)&a->ctx_synchronize, "cuCtxSynchronize" },
        { (void **)&a->stream_create, "cuStreamCreate" },
        { (void **)&a->stream_destroy, "cuStreamDestroy_v2" },
        { (void **)&a->stream_synchronize, "cuStreamSynchronize" },
        { (void **)&a->module_load_data, "cuModuleLoadData" },
        { (void **)&a->module_unload, "cuModuleUnload" },
        { (void **)&a->module_get_function, "cuModuleGetFunction" },
        { (void **)&a->launch_kernel, "cuLaunchKernel" },
        { (void **)&a->mem_alloc, "cuMemAlloc_v2" },
        { (void **)&a->mem_free, "cuMemFree_v2" },
        { (void **)&a->mem_get_info, "cuMemGetInfo_v2" },
        { (void **)&a->memcpy_htod_async, "cuMemcpyHtoDAsync_v2" },
        { (void **)&a->memcpy_dtoh_async, "cuMemcpyDtoHAsync_v2" },
        { (void **)&a->get_error_name, "cuGetErrorName" },
        { (void **)&a->get_error_string, "cuGetErrorString" },
        { (void **)&a->event_create, "cuEventCreate" },
        { (void **)&a->event_record, "cuEventRecord" },
        { (void **)&a->event_synchronize, "cuEventSynchronize" },
        { (void **)&a->event_elapsed_time, "cuEventElapsedTime" },
        { (void **)&a->event_destroy, "cuEventDestroy_v2" },
    };
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        *symbols[i].slot = dlsym(cuda->library, symbols[i].symbol);
        if (!*symbols[i].slot)
            return poa_fail(e, "%s: no symbol %s (driver too old?)", cuda->library_name, symbols[i].symbol);
    }
    return 0;
}

static int local_rank(poa_error *e) {
    const char *text = getenv("LOCAL_RANK");
    if (!text || !text[0]) text = getenv("SLURM_LOCALID");
    if (!text || !text[0]) return 0;
    char *end;
    long v = strtol(text, &end, 10);
    if (*end || v < 0 || v > 1023) return poa_fail(e, "LOCAL_RANK=%s is not a device number", text);
    return (int)v;
}

int poa_cuda_open_device(poa_cuda *cuda, const char *library, int ordinal, poa_error *e) {
    memset(cuda, 0, sizeof *cuda);
    if (!library) library = getenv("POA_LIBCUDA");
    if (!library || !library[0]) library = "libcuda.so.1";
    snprintf(cuda->library_name, sizeof cuda->library_name, "%s", library);
    cuda->library = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (!cuda->library) return no_gpu(cuda, e, "cannot load the CUDA driver (%s)", dlerror());
    int rc = -1;
    if (resolve(cuda, e)) goto fail;
    CUresult r = cuda->api.init(0);
    if ((int)r == RESULT_STUB_LIBRARY) {
        rc = no_gpu(cuda, e, "%s is the CUDA toolkit's stub library, not a driver "
                             "(CUDA_ERROR_STUB_LIBRARY)", library);
        goto fail;
    }
    if ((int)r == RESULT_NO_DEVICE || (int)r == RESULT_INSUFFICIENT_DRIVER) {
        rc = no_gpu(cuda, e, "cuInit: %s", known_result_name(r));
        goto fail;
    }
    if (poa_cuda_check(cuda, r, "cuInit", e)) goto fail;
    cuda->api.driver_get_version(&cuda->driver_version);
    if (poa_cuda_check(cuda, cuda->api.device_get_count(&cuda->device_count), "cuDeviceGetCount", e))
        goto fail;
    if (cuda->device_count == 0) {
        rc = no_gpu(cuda, e, "%s", "the driver sees no device");
        goto fail;
    }
    if (ordinal < 0 && (ordinal = local_rank(e)) < 0) goto fail;
    if (ordinal >= cuda->device_count) {
        poa_fail(e, "device %d (LOCAL_RANK) does not exist: the driver sees %d", ordinal, cuda->device_count);
        goto fail;
    }
    cuda->ordinal = ordinal;
    poa_cuda_api *a = &cuda->api;
    if (poa_cuda_check(cuda, a->device_get(&cuda->device, ordinal), "cuDeviceGet", e) ||
        poa_cuda_check(cuda, a->device_get_name(cuda->device_name, (int)sizeof cuda->device_name, cuda->device),
                       "cuDeviceGetName", e) ||
        poa_cuda_check(cuda, a->device_get_attribute(&cuda->major, (CUdevice_attribute)ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, cuda->device),
                       "cuDeviceGetAttribute (compute capability)", e) ||
        poa_cuda_check(cuda, a->device_get_attribute(&cuda->minor, (CUdevice_attribute)ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, cuda->device),
                       "cuDeviceGetAttribute (compute capability)", e) ||
        poa_cuda_check(cuda, a->device_get_attribute(&cuda->multiprocessors, (CUdevice_attribute)ATTRIBUTE_MULTIPROCESSOR_COUNT,
                                                     cuda->device), "cuDeviceGetAttribute (SM count)", e) ||
        poa_cuda_check(cuda, a->device_total_mem(&cuda->total_memory, cuda->device), "cuDeviceTotalMem", e))
        goto fail;
    if (poa_cuda_check(cuda, a->primary_ctx_retain(&cuda->context, cuda->device), "cuDevicePrimaryCtxRetain", e))
        goto fail;
    if (poa_cuda_check(cuda, a->ctx_set_current(cuda->context), "cuCtxSetCurrent", e) ||
        poa_cuda_check(cuda, a->stream_create(&cuda->stream, STREAM_NON_BLOCKING), "cuStreamCreate", e))
        goto fail;
    return 0;
fail:
    {
        int was_no_gpu = cuda->no_gpu;
        poa_cuda_close(cuda);
        cuda->no_gpu = was_no_gpu;
    }
    return rc;
}

int poa_cuda_open(poa_cuda *cuda, poa_error *e) { return poa_cuda_open_device(cuda, NULL, -1, e); }

void poa_cuda_close(poa_cuda *cuda) {
    if (cuda->library) {
        if (cuda->stream) cuda->api.stream_destroy(cuda->stream);
        if (cuda->context) cuda->api.primary_ctx_release(cuda->device);
        dlclose(cuda->library);
    }
    poa_cuda_memory_free(&cuda->memory);
    memset(cuda, 0, sizeof *cuda);
}

static pthread_once_t fallback_once = PTHREAD_ONCE_INIT;
static char fallback_reason[1024];

static void say_fallback(void) {
    fprintf(stderr, "poa: %s; running on the CPU backend\n", fallback_reason);
}

int poa_cuda_open_or_cpu(poa_cuda *cuda, poa_error *e) {
    poa_error why = { { 0 } };
    if (poa_cuda_open(cuda, &why) == 0) return 1;
    if (!cuda->no_gpu) return poa_fail(e, "%s", why.message);
    snprintf(fallback_reason, sizeof fallback_reason, "%s", why.message);
    pthread_once(&fallback_once, say_fallback);
    return 0;
}

void poa_cuda_arch(const poa_cuda *cuda, char *arch, size_t size) {
    snprintf(arch, size, "sm_%d%d", cuda->major, cuda->minor);
}

int poa_cuda_memory_add(poa_cuda_memory *m, CUdeviceptr pointer, size_t bytes) {
    if (m->allocations == m->capacity) {
        long capacity = m->capacity ? 2 * m->capacity : 64;
        CUdeviceptr *pointers = realloc(m->pointers, sizeof *pointers * (size_t)capacity);
        if (pointers) m->pointers = pointers;
        size_t *sizes = pointers ? realloc(m->bytes, sizeof *sizes * (size_t)capacity) : NULL;
        if (!sizes) return -1;
        m->bytes = sizes, m->capacity = capacity;
    }
    m->pointers[m->allocations] = pointer, m->bytes[m->allocations] = bytes, m->allocations++;
    m->in_use += bytes;
    if (m->in_use > m->peak) m->peak = m->in_use;
    return 0;
}

void poa_cuda_memory_remove(poa_cuda_memory *m, CUdeviceptr pointer) {
    for (long i = m->allocations - 1; i >= 0; i--)
        if (m->pointers[i] == pointer) {
            m->in_use -= m->bytes[i];
            m->allocations--;
            m->pointers[i] = m->pointers[m->allocations], m->bytes[i] = m->bytes[m->allocations];
            return;
        }
}

void poa_cuda_memory_free(poa_cuda_memory *m) {
    free(m->pointers), free(m->bytes);
    memset(m, 0, sizeof *m);
}

int poa_cuda_alloc(poa_cuda *cuda, CUdeviceptr *pointer, size_t bytes, poa_error *e) {
    poa_cuda_memory *m = &cuda->memory;
    char what[160];
    snprintf(what, sizeof what, "cuMemAlloc (%zu bytes, %zu in use)", bytes, m->in_use);
    if (poa_cuda_check(cuda, cuda->api.mem_alloc(pointer, bytes), what, e)) return -1;
    if (poa_cuda_memory_add(m, *pointer, bytes)) {
        cuda->api.mem_free(*pointer);
        return poa_fail(e, "cuMemAlloc (%zu bytes): out of host memory for the account", bytes);
    }
    return 0;
}

int poa_cuda_free(poa_cuda *cuda, CUdeviceptr pointer, poa_error *e) {
    poa_cuda_memory_remove(&cuda->memory, pointer);
    return poa_cuda_check(cuda, cuda->api.mem_free(pointer), "cuMemFree", e);
}

int poa_cuda_copy_to_device_async(poa_cuda *cuda, CUdeviceptr to, const void *from, size_t bytes,
                                  poa_error *e) {
    return poa_cuda_check(cuda, cuda->api.memcpy_htod_async(to, from, bytes, cuda->stream),
                          "cuMemcpyHtoDAsync", e);
}

int poa_cuda_copy_to_host_async(poa_cuda *cuda, void *to, CUdeviceptr from, size_t bytes,
                                poa_error *e) {
    return poa_cuda_check(cuda, cuda->api.memcpy_dtoh_async(to, from, bytes, cuda->stream),
                          "cuMemcpyDtoHAsync", e);
}

int poa_cuda_synchronize(poa_cuda *cuda, poa_error *e) {
    return poa_cuda_check(cuda, cuda->api.stream_synchronize(cuda->stream), "cuStreamSynchronize", e);
}

int poa_cuda_load_module(poa_cuda *cuda, const void *image, CUmodule *module, poa_error *e) {
    return poa_cuda_check(cuda, cuda->api.module_load_data(module, image), "cuModuleLoadData", e);
}

int poa_cuda_get_function(poa_cuda *cuda, CUmodule module, const char *name, CUfunction *function,
                          poa_error *e) {
    char what[160];
    snprintf(what, sizeof what, "cuModuleGetFunction (%s)", name);
    return poa_cuda_check(cuda, cuda->api.module_get_function(function, module, name), what, e);
}

int poa_cuda_launch(poa_cuda *cuda, CUfunction function, const unsigned grid[3],
                    const unsigned block[3], unsigned shared_bytes, void **parameters,
                    poa_error *e) {
    return poa_cuda_check(cuda, cuda->api.launch_kernel(function, grid[0], grid[1], grid[2], block[0],
                                                        block[1], block[2], shared_bytes, cuda->stream,
                                                        parameters, NULL),
                          "cuLaunchKernel", e);
}
