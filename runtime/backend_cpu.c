/* backend_cpu.c: the CPU backend's dense primitives: OpenBLAS GEMMs and
   deterministic row/column loops (each output element has one owner thread). */
#include "backend.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef POA_FP64
#define cblas_gemm cblas_dgemm
#else
#define cblas_gemm cblas_sgemm
#endif

void poa_gemm(int transpose_a, int transpose_b, long m, long n, long k, real alpha,
              const real *a, long lda, const real *b, long ldb, real beta, real *c, long ldc) {
    if (m <= 0 || n <= 0) return;
    cblas_gemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans,
               (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* Each thread owns a contiguous range of columns (cut at multiples of 16) and adds the rows
   into it in increasing order, SPAN columns per pass over the rows: every column is summed
   over the rows in the same order whatever the ranges, so the sums do not depend on the
   thread count; the rows are read in contiguous segments (one `omp simd` loop each). */
void poa_column_sum_accumulate(real *dst, const real *src, long ld, long rows, long cols) {
    enum { ALIGN = 16, SPAN = 1024 };
#pragma omp parallel
    {
        const long threads = omp_get_num_threads(), id = omp_get_thread_num();
        const long blocks = (cols + ALIGN - 1) / ALIGN;
        const long first = blocks * id / threads * ALIGN, last = blocks * (id + 1) / threads * ALIGN;
        const long end = last < cols ? last : cols;
        real acc[SPAN];
        for (long begin = first; begin < end; begin += SPAN) {
            const long count = end - begin < SPAN ? end - begin : SPAN;
            for (long j = 0; j < count; j++) acc[j] = 0;
            for (long r = 0; r < rows; r++) {
                const real *row = src + r * ld + begin;
#pragma omp simd
                for (long j = 0; j < count; j++) acc[j] += row[j];
            }
            for (long j = 0; j < count; j++) dst[begin + j] += acc[j];
        }
    }
}

void poa_add(real *y, const real *x, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) y[i] += x[i];
}

void poa_set_threads(int threads) {
    if (threads < 1) return;
    openblas_set_num_threads(threads);
    omp_set_num_threads(threads);
}

/* Two settings that libgomp and OpenBLAS read once, when they are loaded; where the user has
   not chosen them, poa chooses and re-executes itself once with them in the environment.
   - OMP_WAIT_POLICY=PASSIVE: OpenMP threads that spin at barriers starve the loader's threads
     and each other on a small machine (measured on the quickstart: 8 img/s spinning, 46 img/s
     passive).
   - OPENBLAS_CORETYPE: OpenBLAS picks its GEMM kernels by the CPU's model number and gives a
     model it does not know its generic Prescott (SSE3) kernels. Debian 12's 0.3.21 does so on
     Sapphire and Emerald Rapids: the training step measured 144 img/s there against 283 with
     the SkylakeX kernels the CPU's AVX-512 runs. So when OpenBLAS fell back to Prescott on a
     CPU with AVX-512 (or AVX2 and FMA), poa names SkylakeX (or Haswell). `poa version` says
     which kernels run. poa and bench/step_cpu call it first thing in main. */
static const char *openblas_core_to_choose(void) {
    if (getenv("OPENBLAS_CORETYPE") || strcmp(openblas_get_corename(), "Prescott") != 0)
        return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}

void poa_choose_library_settings(char **argv) {
    const char *core = openblas_core_to_choose();
    if (getenv("OMP_WAIT_POLICY") && !core) return;
    if (!getenv("OMP_WAIT_POLICY")) setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    if (core) setenv("OPENBLAS_CORETYPE", core, 1);
    execv("/proc/self/exe", argv); /* on failure, go on as we are */
}

void poa_blas_describe(char *out, size_t size) {
    const char *core = getenv("OPENBLAS_CORETYPE");
    snprintf(out, size, "%s; kernels %s%s%s", openblas_get_config(), openblas_get_corename(),
             core ? ", OPENBLAS_CORETYPE=" : "", core ? core : "");
}
