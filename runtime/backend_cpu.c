/* backend_cpu.c: the CPU backend's dense primitives: OpenBLAS GEMMs and
   deterministic row/column loops (each output element has one owner thread). */
#include "backend.h"

#include <cblas.h>
#include <omp.h>

void poa_gemm(int transpose_a, int transpose_b, long m, long n, long k, real alpha,
              const real *a, long lda, const real *b, long ldb, real beta, real *c, long ldc) {
    if (m <= 0 || n <= 0) return;
#ifdef POA_FP64
    cblas_dgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
                transpose_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, a,
                (int)lda, b, (int)ldb, beta, c, (int)ldc);
#else
    cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
                transpose_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, a,
                (int)lda, b, (int)ldb, beta, c, (int)ldc);
#endif
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
