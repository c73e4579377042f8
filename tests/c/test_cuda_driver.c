/* test_cuda_driver.c: the driver API through dlopen (runtime/cuda_driver.c).
   Everywhere: a missing library and the CUDA toolkit's stub library (exposed as libcuda.so.1
   through a temporary symlink and POA_LIBCUDA) are "no GPU" with a clear reason, no crash;
   poa_cuda_open_or_cpu falls back to the CPU and says so exactly once.
   With a GPU (the default libcuda.so.1 opens a device): the device's facts, a kernel compiled
   through the NVRTC cache for its architecture runs and matches the CPU, and every kernel of
   one generated kernel file loads from its CUBIN. Elsewhere those print SKIP. Everywhere: the
   device-memory account (in use, peak) through alloc and free, with host stand-ins. */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "files.h"
#include "cuda_driver.h"
#include "nvrtc_cache.h"

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* Host stand-ins for cuMemAlloc / cuMemFree: the account needs no device. */
static CUresult fake_alloc(CUdeviceptr *pointer, size_t bytes) {
    *pointer = (CUdeviceptr)(uintptr_t)malloc(bytes);
    return *pointer ? 0 : 2; /* CUDA_ERROR_OUT_OF_MEMORY */
}
static CUresult fake_free(CUdeviceptr pointer) {
    free((void *)(uintptr_t)pointer);
    return 0;
}

static void test_memory_account(void) {
    poa_cuda cuda;
    memset(&cuda, 0, sizeof cuda);
    cuda.api.mem_alloc = fake_alloc, cuda.api.mem_free = fake_free;
    poa_error e = { { 0 } };
    CUdeviceptr p[100];
    int rc = 0;
    for (int i = 0; i < 100; i++) rc |= poa_cuda_alloc(&cuda, &p[i], (size_t)(i + 1) * 16, &e); /* 80800 bytes */
    for (int i = 0; i < 100; i += 2) rc |= poa_cuda_free(&cuda, p[i], &e);                    /* - 40000 */
    CUdeviceptr q;
    rc |= poa_cuda_alloc(&cuda, &q, 1000, &e);
    size_t in_use = cuda.memory.in_use, peak = cuda.memory.peak;
    long live = cuda.memory.allocations;
    for (int i = 1; i < 100; i += 2) rc |= poa_cuda_free(&cuda, p[i], &e);
    rc |= poa_cuda_free(&cuda, q, &e);
    CHECK("device memory account: in use and peak through alloc and free", rc == 0 && in_use == 41800 &&
          peak == 80800 && live == 51 && cuda.memory.in_use == 0 && cuda.memory.allocations == 0,
          "rc %d in use %zu peak %zu live %ld, after %zu", rc, in_use, peak, live, cuda.memory.in_use);
    free(cuda.memory.pointers);
    free(cuda.memory.bytes);
}

static void test_missing_library(void) {
    poa_cuda cuda;
    poa_error e = { { 0 } };
    int rc = poa_cuda_open_device(&cuda, "/nonexistent/poa/libcuda.so.1", -1, &e);
    CHECK("missing libcuda: no GPU", rc == -1 && cuda.no_gpu && starts_with(e.message, "no GPU: ") &&
          strstr(e.message, "cannot load the CUDA driver"), "rc %d no_gpu %d: %s", rc, cuda.no_gpu, e.message);
    printf("missing libcuda: %s\n", e.message);
    CHECK("missing libcuda: nothing left open", cuda.library == NULL && cuda.context == NULL, "handles left");
}

/* The toolkit's stub, named libcuda.so.1 in a temporary directory, chosen with POA_LIBCUDA. */
static void test_stub_library(void) {
    const char *home = getenv("CUDA_HOME");
    char stub[1024];
    snprintf(stub, sizeof stub, "%s/lib64/stubs/libcuda.so", home ? home : "/usr/local/cuda");
    if (access(stub, R_OK) != 0) {
        CHECK_SKIP("stub libcuda: no GPU", "the CUDA toolkit's stub library is not installed");
        return;
    }
    char dir[] = "/tmp/poa_test_cuda_stub.XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK("stub libcuda: temporary directory", 0, "mkdtemp failed");
        return;
    }
    char link[256];
    snprintf(link, sizeof link, "%s/libcuda.so.1", dir);
    CHECK("stub libcuda: symlink", symlink(stub, link) == 0, "cannot link %s", link);
    const char *saved = getenv("POA_LIBCUDA");
    char *saved_copy = saved ? strdup(saved) : NULL;
    setenv("POA_LIBCUDA", link, 1);
    poa_cuda cuda;
    poa_error e = { { 0 } };
    int rc = poa_cuda_open(&cuda, &e);
    CHECK("stub libcuda: no GPU, named as the stub", rc == -1 && cuda.no_gpu && starts_with(e.message, "no GPU: ") &&
          strstr(e.message, "CUDA_ERROR_STUB_LIBRARY"), "rc %d no_gpu %d: %s", rc, cuda.no_gpu, e.message);
    printf("stub libcuda: %s\n", e.message);
    CHECK("stub libcuda: closed after the failure", cuda.library == NULL, "library left open");
    if (saved_copy) setenv("POA_LIBCUDA", saved_copy, 1);
    else unsetenv("POA_LIBCUDA");
    free(saved_copy);
    unlink(link);
    rmdir(dir);
}

/* poa_cuda_open_or_cpu twice with no driver: 0 both times, one line on stderr. */
static void test_fallback_said_once(void) {
    char log_path[] = "/tmp/poa_test_cuda_log.XXXXXX";
    int log_fd = mkstemp(log_path);
    if (log_fd < 0) {
        CHECK("fallback: temporary file", 0, "mkstemp failed");
        return;
    }
    setenv("POA_LIBCUDA", "/nonexistent/poa/libcuda.so.1", 1);
    fflush(stderr);
    int saved_stderr = dup(2);
    dup2(log_fd, 2);
    poa_cuda cuda;
    poa_error e = { { 0 } };
    int first = poa_cuda_open_or_cpu(&cuda, &e);
    int second = poa_cuda_open_or_cpu(&cuda, &e);
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    unsetenv("POA_LIBCUDA");
    char text[4096] = "";
    ssize_t n = pread(log_fd, text, sizeof text - 1, 0);
    text[n > 0 ? n : 0] = 0;
    close(log_fd);
    unlink(log_path);
    int lines = 0;
    for (char *p = text; *p; p++) lines += *p == '\n';
    CHECK("fallback: no GPU means the CPU backend (0), twice", first == 0 && second == 0, "returned %d, %d: %s",
          first, second, e.message);
    CHECK("fallback: said once", lines == 1 && strstr(text, "no GPU") && strstr(text, "CPU backend"),
          "%d lines: '%s'", lines, text);
    printf("fallback: %s", text);
}

static void gpu_axpy(poa_cuda *cuda, const char *arch) {
    static const char *source =
        "extern \"C\" __global__ void axpy(float *y, const float *x, float a, int n) {\n"
        "    int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
        "    if (i < n) y[i] += a * x[i];\n"
        "}\n";
    const char *options[] = { "--std=c++17" };
    poa_error e = { { 0 } };
    poa_blob cubin = { 0 };
    int hit = 0;
    if (poa_nvrtc_compile_cached(source, "axpy.cu", arch, options, 1, &cubin, &hit, &e)) {
        CHECK("gpu: compile axpy", 0, "%s", e.message);
        return;
    }
    enum { N = 1000 };
    float x[N], y[N], expected[N], got[N];
    for (int i = 0; i < N; i++) {
        x[i] = (float)i * 0.5f;
        y[i] = 1.0f - (float)i;
        expected[i] = y[i] + 3.0f * x[i];
    }
    CUmodule module = NULL;
    CUfunction function;
    CUdeviceptr dx = 0, dy = 0;
    float a = 3.0f;
    int n = N;
    void *parameters[] = { &dy, &dx, &a, &n };
    const unsigned grid[3] = { (N + 255) / 256, 1, 1 }, block[3] = { 256, 1, 1 };
    int rc = poa_cuda_load_module(cuda, cubin.data, &module, &e) ||
             poa_cuda_get_function(cuda, module, "axpy", &function, &e) ||
             poa_cuda_alloc(cuda, &dx, sizeof x, &e) || poa_cuda_alloc(cuda, &dy, sizeof y, &e) ||
             poa_cuda_copy_to_device_async(cuda, dx, x, sizeof x, &e) ||
             poa_cuda_copy_to_device_async(cuda, dy, y, sizeof y, &e) ||
             poa_cuda_launch(cuda, function, grid, block, 0, parameters, &e) ||
             poa_cuda_copy_to_host_async(cuda, got, dy, sizeof got, &e) || poa_cuda_synchronize(cuda, &e);
    CHECK("gpu: axpy loads, launches and copies back", rc == 0, "%s", e.message);
    if (rc == 0) {
        int wrong = 0;
        for (int i = 0; i < N; i++) wrong += got[i] != expected[i];
        CHECK("gpu: axpy matches the CPU exactly", wrong == 0, "%d of %d differ", wrong, N);
    }
    if (dx) poa_cuda_free(cuda, dx, &e);
    if (dy) poa_cuda_free(cuda, dy, &e);
    if (module) cuda->api.module_unload(module);
    poa_blob_free(&cubin);
}

/* Every kernel named in the table at the top of the first generated .cu file is found in
   its CUBIN on this device. */
static void gpu_generated_module(poa_cuda *cuda, const char *arch) {
    char *list = poa_read_text(POA_SOURCE_DIR "build/gen/cuda/files.txt");
    char path[4096];
    if (!list || !list[0]) {
        CHECK("gpu: generated kernels listed", 0, "cannot read build/gen/cuda/files.txt (run ninja)");
        free(list);
        return;
    }
    snprintf(path, sizeof path, "%s%.*s", POA_SOURCE_DIR, (int)strcspn(list, "\n"), list);
    free(list);
    char *source = poa_read_text(path);
    poa_error e = { { 0 } };
    poa_blob cubin = { 0 };
    const char *options[] = { "--std=c++17" };
    int hit;
    if (!source || poa_nvrtc_compile_cached(source, path, arch, options, 1, &cubin, &hit, &e)) {
        CHECK("gpu: compile a generated kernel file", 0, "%s: %s", path, source ? e.message : "cannot read");
        free(source);
        return;
    }
    CUmodule module = NULL;
    int rc = poa_cuda_load_module(cuda, cubin.data, &module, &e);
    CHECK("gpu: a generated CUBIN loads", rc == 0, "%s: %s", path, e.message);
    int found = 0, missing = 0;
    const char *table = strstr(source, "launch order");
    for (const char *line = table; rc == 0 && line && (line = strstr(line, "\n//   "));) {
        line += 6;
        char name[128];
        if (sscanf(line, "%127s", name) != 1 || !strstr(line, "grid")) break;
        CUfunction function;
        if (poa_cuda_get_function(cuda, module, name, &function, &e)) {
            missing++;
            printf("gpu: %s\n", e.message);
        } else {
            found++;
        }
    }
    if (rc == 0)
        CHECK("gpu: every kernel of the generated table is in the module", found > 0 && missing == 0,
              "%d found, %d missing", found, missing);
    if (module) cuda->api.module_unload(module);
    poa_blob_free(&cubin);
    free(source);
}

int main(void) {
    test_missing_library();
    test_stub_library();
    test_memory_account();
    poa_cuda cuda;
    poa_error e = { { 0 } };
    unsetenv("POA_LIBCUDA");
    int rc = poa_cuda_open(&cuda, &e);
    if (rc != 0 && !cuda.no_gpu) {
        CHECK("gpu: open", 0, "a driver is present but the device cannot be used: %s", e.message);
    } else if (rc != 0) {
        test_fallback_said_once();
        printf("default libcuda.so.1: %s\n", e.message);
        CHECK_SKIP("gpu: device, context, stream, axpy, generated module", "no GPU");
    } else {
        char arch[16];
        poa_cuda_arch(&cuda, arch, sizeof arch);
        printf("gpu: %s, %s, %d SMs, %.1f GiB, driver %d, device %d of %d\n", cuda.device_name, arch,
               cuda.multiprocessors, (double)cuda.total_memory / (1 << 30), cuda.driver_version, cuda.ordinal,
               cuda.device_count);
        CHECK("gpu: device facts", cuda.major >= 3 && cuda.multiprocessors > 0 && cuda.total_memory > 0 &&
              cuda.context && cuda.stream, "cc %d.%d, %d SMs", cuda.major, cuda.minor, cuda.multiprocessors);
        char cache[] = "/tmp/poa_test_cuda_cache.XXXXXX";
        if (mkdtemp(cache)) setenv("POA_CACHE", cache, 1);
        if (poa_nvrtc_load(&e)) {
            CHECK_SKIP("gpu: axpy, generated module", e.message);
        } else {
            gpu_axpy(&cuda, arch);
            gpu_generated_module(&cuda, arch);
        }
        char command[128];
        snprintf(command, sizeof command, "rm -rf '%s'", cache);
        if (system(command) != 0) printf("could not remove %s\n", cache);
        poa_cuda_close(&cuda);
    }
    CHECK_EXIT();
}
