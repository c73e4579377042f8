/* backend_cpu.c: the CPU backend's dense primitives: OpenBLAS GEMMs and
   deterministic row/column loops (each output element has one owner thread). */
#include "backend.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

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

void poa_fill_rows(real *dst, long ld, const real *vec, long rows, long cols) {
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        if (vec)
            memcpy(dst + r * ld, vec, (size_t)cols * sizeof(real));
        else
            memset(dst + r * ld, 0, (size_t)cols * sizeof(real));
    }
}

/* One thread per block of 16 columns (a cache line of floats; D / 16 blocks to share), each
   column summed over the rows in increasing order, so the sums do not depend on the thread
   count; a full block's 16 sums are one `omp simd` loop per row. */
void poa_column_sum_accumulate(real *dst, const real *src, long ld, long rows, long cols) {
    enum { CHUNK = 16 };
    long chunks = (cols + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static)
    for (long c = 0; c < chunks; c++) {
        const long begin = c * CHUNK, count = begin + CHUNK < cols ? CHUNK : cols - begin;
        real acc[CHUNK] = { 0 };
        if (count == CHUNK) {
            for (long r = 0; r < rows; r++) {
                const real *row = src + r * ld + begin;
#pragma omp simd
                for (int j = 0; j < CHUNK; j++) acc[j] += row[j];
            }
        } else {
            for (long r = 0; r < rows; r++)
                for (long j = 0; j < count; j++) acc[j] += src[r * ld + begin + j];
        }
        for (long j = 0; j < count; j++) dst[begin + j] += acc[j];
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
