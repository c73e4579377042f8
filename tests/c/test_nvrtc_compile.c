/* test_nvrtc_compile.c: NVRTC-compiles every generated CUDA kernel file (the list
   build/gen/cuda/files.txt written by gen/emit.lua) to a CUBIN for sm_80 and sm_90, with no GPU.
   PASS/FAIL per (file, arch); a failure prints the NVRTC log. Any log output (an error or a
   warning) fails: the generated code is meant to compile cleanly. Compiles run in parallel
   threads (one per core) and each prints its compile time. Without NVRTC: SKIP. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "files.h"

#ifndef POA_HAVE_NVRTC
int main(void) {
    CHECK_SKIP("nvrtc compile", "built without NVRTC (no CUDA toolkit found by configure.lua)");
    return 0;
}
#else
#include <nvrtc.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#define MAX_JOBS 256

typedef struct {
    const char *path, *arch;
    char *source;
    /* results */
    int ok;
    double seconds;
    size_t cubin_size;
    char *log; /* NVRTC log or our own error, malloc'd; NULL when empty */
} job;

static job jobs[MAX_JOBS];
static int job_count, next_job;
static pthread_mutex_t job_lock = PTHREAD_MUTEX_INITIALIZER;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static char *copy_text(const char *s) {
    char *t = malloc(strlen(s) + 1);
    strcpy(t, s);
    return t;
}

static void compile(job *j) {
    char arch_option[64];
    snprintf(arch_option, sizeof arch_option, "--gpu-architecture=%s", j->arch);
    const char *options[] = { arch_option, "--std=c++17" };
    nvrtcProgram program;
    double start = now();
    nvrtcResult rc = nvrtcCreateProgram(&program, j->source, j->path, 0, NULL, NULL);
    if (rc != NVRTC_SUCCESS) {
        j->log = copy_text(nvrtcGetErrorString(rc));
        return;
    }
    rc = nvrtcCompileProgram(program, 2, options);
    size_t log_size = 0;
    nvrtcGetProgramLogSize(program, &log_size);
    if (log_size > 1) {
        j->log = malloc(log_size);
        nvrtcGetProgramLog(program, j->log);
    }
    if (rc == NVRTC_SUCCESS && nvrtcGetCUBINSize(program, &j->cubin_size) == NVRTC_SUCCESS &&
        j->cubin_size > 0) {
        char *cubin = malloc(j->cubin_size);
        j->ok = nvrtcGetCUBIN(program, cubin) == NVRTC_SUCCESS && j->log == NULL;
        free(cubin);
    } else if (!j->log) {
        j->log = copy_text(nvrtcGetErrorString(rc));
    }
    j->seconds = now() - start;
    nvrtcDestroyProgram(&program);
}

static void *worker(void *unused) {
    (void)unused;
    for (;;) {
        pthread_mutex_lock(&job_lock);
        int i = next_job < job_count ? next_job++ : -1;
        pthread_mutex_unlock(&job_lock);
        if (i < 0) return NULL;
        compile(&jobs[i]);
    }
}

int main(void) {
    const char *list_path = POA_SOURCE_DIR "build/gen/cuda/files.txt";
    char *list = poa_read_text(list_path);
    CHECK("nvrtc file list", list != NULL, "cannot read %s (run ninja)", list_path);
    if (!list) CHECK_EXIT();
    static const char *arches[] = { "sm_80", "sm_90" };
    int files = 0;
    for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n")) {
        char path[4096];
        snprintf(path, sizeof path, "%s%s", POA_SOURCE_DIR, line);
        char *source = poa_read_text(path);
        if (!source) CHECK(line, 0, "cannot read %s", path);
        if (!source) continue;
        files++;
        for (int a = 0; a < 2 && job_count < MAX_JOBS; a++)
            jobs[job_count++] = (job){ .path = line, .arch = arches[a], .source = source };
    }
    CHECK("nvrtc file list is not empty", files > 0, "no .cu files listed in %s", list_path);
    int major = 0, minor = 0;
    nvrtcVersion(&major, &minor);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = cores < 1 ? 1 : cores > 16 ? 16 : (int)cores;
    printf("nvrtc %d.%d: %d files x 2 archs on %d threads\n", major, minor, files, threads);
    double start = now();
    pthread_t pool[16];
    for (int t = 0; t < threads; t++) pthread_create(&pool[t], NULL, worker, NULL);
    for (int t = 0; t < threads; t++) pthread_join(pool[t], NULL);
    double wall = now() - start, total = 0;
    for (int i = 0; i < job_count; i++) {
        job *j = &jobs[i];
        char name[4200];
        total += j->seconds;
        snprintf(name, sizeof name, "nvrtc %s %s (%.2f s, cubin %zu bytes)", j->path, j->arch, j->seconds,
                 j->cubin_size);
        CHECK(name, j->ok, "%s", j->log ? j->log : "no cubin");
    }
    printf("nvrtc: %d compiles, %.1f s of compile time, %.1f s wall\n", job_count, total, wall);
    CHECK_EXIT();
}
#endif
