/* cublaslt.h: GEMMs through cuBLASLt, loaded with dlopen (never linked, like libcuda and
   NVRTC), for row-major matrices addressed by leading dimension.

   The transposition trick: cuBLASLt is column-major, and a row-major matrix X (r x c, rows ld
   apart) is, byte for byte, the column-major matrix X^T (c x r, columns ld apart). So the
   row-major C = alpha op(A) op(B) + beta C is computed as the column-major
       C^T = alpha op(B)^T op(A)^T + beta C^T,
   i.e. one cublasLtMatmul with the operands swapped (its "A" is our B, its "B" is our A), its
   transa = our transb and transb = our transa, its (m, n, k) = our (n, m, k), and the same
   leading dimensions. Layouts (column-major, as stored before op): its A is (n x k) for N or
   (k x n) for T with ld = ldb; its B is (k x m) for N or (m x k) for T with ld = lda; C and D
   are (n x m) with ld = ldc.

   Precision: each of A, B and C/D is fp32 or bf16 (poa_cublaslt_matmul; poa_cublaslt_gemm is
   fp32 throughout); the scale type (alpha, beta) is fp32 and the compute type
   CUBLAS_COMPUTE_32F (fp32 accumulation; bf16 inputs run on the tensor cores), or
   CUBLAS_COMPUTE_32F_FAST_TF32 for fp32 inputs when tf32 is set.

   Epilogues, said row-major (what cuBLASLt applies to its column-major D = our C^T):
     BIAS           C[r][j] = alpha (op(A) op(B))[r][j] + beta C[r][j] + bias[j]   (bias: n, D's type)
     GELU_AUX_BIAS  aux[r][j] = the value above, C[r][j] = gelu(aux[r][j])  (aux: m x n, ld aux_ld)
     DGELU          C[r][j] = (alpha op(A) op(B) + beta C)[r][j] * gelu'(aux[r][j])
     BGRADB         as NONE, and bias[j] = sum_l op(A)[j][l]  (bias: m; written, not added): the
                    bias gradient sum_r dY[r][j] of a weight-gradient GEMM dW = dY^T X
   The reference's nn.GELU is the erf form; cuBLASLt documents its GELU epilogue only as
   "GELU" (PyTorch routes only gelu(approximate="tanh") to it), so the ViT pass uses BIAS only
   and keeps its own exact GELU kernels until a GPU run has measured the difference.

   Descriptors are built once per shape and cached: the key is (transa, transb, m, n, k, lda,
   ldb, ldc, beta == 0, the alignment of each pointer up to 256 bytes, tf32). For each key one
   cublasLtMatmulAlgoGetHeuristic call picks the algorithm, with the workspace's size and the
   pointers' actual alignments as preferences (prefix slices of the parameter buffer and
   column offsets such as q/k/v at g * D are often only 4- to 128-byte aligned; the defaults
   assume 256). */
#ifndef POA_CUBLASLT_H
#define POA_CUBLASLT_H

#include <stddef.h>
#include <stdint.h>

#include "cuda_driver.h"
#include "error.h"

/* The entry points, resolved by name from the library. Handles are opaque pointers. */
typedef struct poa_cublaslt_api {
    int (*create)(void **handle);                                    /* cublasLtCreate */
    int (*destroy)(void *handle);                                    /* cublasLtDestroy */
    size_t (*get_version)(void);                                     /* cublasLtGetVersion */
    const char *(*get_status_name)(int status);                      /* cublasLtGetStatusName */
    const char *(*get_status_string)(int status);                    /* cublasLtGetStatusString */
    int (*matmul_desc_create)(void **desc, int compute_type, int scale_type);
    int (*matmul_desc_destroy)(void *desc);
    int (*matmul_desc_set_attribute)(void *desc, int attribute, const void *value, size_t size);
    int (*matrix_layout_create)(void **layout, int type, uint64_t rows, uint64_t cols, int64_t ld);
    int (*matrix_layout_destroy)(void *layout);
    int (*preference_create)(void **preference);
    int (*preference_destroy)(void *preference);
    int (*preference_set_attribute)(void *preference, int attribute, const void *value, size_t size);
    int (*algo_get_heuristic)(void *handle, void *desc, void *a, void *b, void *c, void *d,
                              void *preference, int requested, void *results, int *returned);
    int (*matmul)(void *handle, void *desc, const void *alpha, const void *a, void *a_layout,
                  const void *b, void *b_layout, const void *beta, const void *c, void *c_layout,
                  void *d, void *d_layout, const void *algo, void *workspace,
                  size_t workspace_bytes, void *stream);
} poa_cublaslt_api;

/* Loads the library and resolves every entry point (no GPU needed). The library is
   POA_LIBCUBLASLT when set, else libcublasLt.so.13, else $CUDA_HOME/lib64/libcublasLt.so.13
   (CUDA_HOME defaults to /usr/local/cuda). name (may be NULL) receives what was loaded.
   Fails with "cannot load cuBLASLt: ..." naming every place tried. The library stays loaded
   for the life of the process (thread-safe; one load). */
int poa_cublaslt_load(const poa_cublaslt_api **api, char *name, size_t name_size, poa_error *e);

/* Loads the library at path (uncached; for tests and tools) into *api; *library is the dlopen
   handle (the caller may dlclose it). Fails with "cannot load cuBLASLt: <why>": dlopen's
   message, or "<path> has no <symbol>". */
int poa_cublaslt_open_library(const char *path, poa_cublaslt_api *api, void **library, poa_error *e);

typedef struct poa_cublaslt_plan poa_cublaslt_plan; /* one cached shape */

typedef struct poa_cublaslt {
    const poa_cublaslt_api *api;
    poa_cuda *cuda; /* stream and allocations */
    void *handle;
    int tf32;       /* 1: CUBLAS_COMPUTE_32F_FAST_TF32 for descriptors built from now on */
    CUdeviceptr workspace;
    size_t workspace_bytes;
    poa_cublaslt_plan *plans;
    int plan_count, plan_capacity;
    long heuristic_calls; /* how many shapes were planned (descriptors built) */
} poa_cublaslt;

/* A handle on cuda's current context with a workspace of workspace_bytes (0: 32 MiB) on the
   device. Without the library: "cannot load cuBLASLt: ..."; without a GPU (cuda NULL or not
   open): "no GPU: ...". */
int poa_cublaslt_init(poa_cublaslt *lt, poa_cuda *cuda, size_t workspace_bytes, poa_error *e);
void poa_cublaslt_free(poa_cublaslt *lt);

/* Row-major C (m x n, ldc) = alpha op(A) op(B) + beta C on cuda's stream, fp32; op(A) is
   m x k, op(B) is k x n; A, B, C are device pointers (bytes). Asynchronous. The first call of
   a shape builds and caches its descriptors and algorithm. */
int poa_cublaslt_gemm(poa_cublaslt *lt, int transpose_a, int transpose_b, long m, long n, long k,
                      float alpha, CUdeviceptr a, long lda, CUdeviceptr b, long ldb, float beta,
                      CUdeviceptr c, long ldc, poa_error *e);

/* Element types (cudaDataType values) and epilogues (cublasLtEpilogue_t values). */
enum { POA_LT_F32 = 0, POA_LT_BF16 = 14 };
enum {
    POA_LT_EPILOGUE_NONE = 1,
    POA_LT_EPILOGUE_BIAS = 4,
    POA_LT_EPILOGUE_GELU_AUX_BIAS = 32 | 128 | 4,
    POA_LT_EPILOGUE_DGELU = 64 | 128,
    POA_LT_EPILOGUE_BGRADB = 512,
};

/* One row-major GEMM: C (m x n, ldc, type_c) = alpha op(A) op(B) + beta C, then the epilogue.
   Pointers are device addresses; bias and aux as the epilogue needs them (else 0). */
typedef struct poa_cublaslt_call {
    int transpose_a, transpose_b;
    long m, n, k;
    float alpha, beta;
    CUdeviceptr a, b, c;
    long lda, ldb, ldc;
    int type_a, type_b, type_c; /* POA_LT_F32 or POA_LT_BF16 */
    int epilogue;               /* POA_LT_EPILOGUE_*; 0 means NONE */
    CUdeviceptr bias, aux;
    long aux_ld;
} poa_cublaslt_call;

/* The general form of poa_cublaslt_gemm (types and epilogue); the descriptors of each distinct
   (shape, types, epilogue, alignments) are built and its algorithm chosen once, at its first
   call; bias and aux pointers are set on the cached descriptor per call. */
int poa_cublaslt_matmul(poa_cublaslt *lt, const poa_cublaslt_call *call, poa_error *e);

/* Builds and caches the call's plan without running it (a pass plans all its GEMMs at set-up,
   so that no descriptor is built and no heuristic runs inside a step). */
int poa_cublaslt_prepare(poa_cublaslt *lt, const poa_cublaslt_call *call, poa_error *e);

/* Bytes of one element of a POA_LT_ type. */
static inline long poa_lt_type_size(int type) { return type == POA_LT_BF16 ? 2 : 4; }

/* The column-major call the trick makes of a row-major request (for tests and traces). */
typedef struct poa_cublaslt_colmajor {
    int transa, transb;   /* cuBLASLt's op of its A and B: 0 N, 1 T */
    long m, n, k;         /* its (m, n, k) */
    int a_is_ours_b;      /* always 1: its A is our B */
    long a_rows, a_cols, lda, b_rows, b_cols, ldb, c_rows, c_cols, ldc; /* layouts */
} poa_cublaslt_colmajor;

void poa_cublaslt_colmajor_of(int transpose_a, int transpose_b, long m, long n, long k, long lda,
                              long ldb, long ldc, poa_cublaslt_colmajor *out);

#endif
