/* backend.h: the few dense primitives the runtime needs from a backend.
   The CPU backend (backend_cpu.c) runs GEMMs through OpenBLAS on the full
   parameter buffers, addressing a member's prefix slice by leading dimension,
   so no weight is ever copied. All matrices are row-major. */
#ifndef POA_BACKEND_H
#define POA_BACKEND_H

#include <stddef.h>

#include "real.h"

/* C = alpha * op(A) * op(B) + beta * C, op(A) m x k, op(B) k x n. */
void poa_gemm(int transpose_a, int transpose_b, long m, long n, long k, real alpha,
              const real *a, long lda, const real *b, long ldb, real beta, real *c, long ldc);

/* Every row of a rows x cols block (rows ld apart) = a vector, or 0: poa_fill_rows, generated
   from gen/ops_runtime.lua (train_kernels.h). */

/* dst[j] += sum over rows of src[r * ld + j], j < cols (a bias gradient). */
void poa_column_sum_accumulate(real *dst, const real *src, long ld, long rows, long cols);

/* y += x, n elements. */
void poa_add(real *y, const real *x, long n);

/* Threads used by the backend (OpenBLAS and the kernels' OpenMP loops). */
void poa_set_threads(int threads);

/* Called first thing in main: sets OMP_WAIT_POLICY and, where OpenBLAS fell back to its
   generic kernels, OPENBLAS_CORETYPE, unless the user set them, and re-executes the program
   once (both are read when the libraries load). Comments in backend_cpu.c. */
void poa_choose_library_settings(char **argv);

/* OpenBLAS's build, the kernels it runs and OPENBLAS_CORETYPE if set (for `poa version`). */
void poa_blas_describe(char *out, size_t size);

#endif
