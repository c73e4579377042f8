/* cuda_emulator.h: what the host emulators of the GPU passes (tests/c/test_cuda_vit.c,
   tests/c/test_cuda_heads.c) share: cuBLASLt's column-major GEMM, evaluated by plain loops in
   double for the very call poa_cublaslt_matmul would make, and the erf GELU it documents. */
#ifndef POA_TEST_CUDA_EMULATOR_H
#define POA_TEST_CUDA_EMULATOR_H

#include <math.h>
#include <stdint.h>

#include "bf16.h"
#include "cublaslt.h"
#include "error.h"

/* Reads element i of an operand of a POA_LT_ type. */
static inline double element(CUdeviceptr base, int type, long i) {
    if (type == POA_LT_BF16) return poa_bf16_to_float(((const uint16_t *)(uintptr_t)base)[i]);
    return ((const float *)(uintptr_t)base)[i];
}

static inline double gelu_of(double x) { return 0.5 * x * (1 + erf(x / sqrt(2.0))); }
static inline double gelu_grad_of(double x) { return 0.5 * (1 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2 * M_PI); }

/* Evaluates, by plain loops in double, the column-major cublasLtMatmul that poa_cublaslt_matmul
   makes of a row-major call (poa_cublaslt_colmajor_of: its A = our B, its B = our A), with
   cuBLASLt's documented semantics in its own column-major terms: D = alpha op(A) op(B) + beta C;
   BIAS adds bias[i] (length = D's rows) to every column; GELU_AUX_BIAS stores that value in aux
   (D's layout, ld aux_ld) and D = gelu of it; DGELU multiplies by gelu'(aux); BGRADB writes
   bias[j] = sum over k of op(B)[l][j] (length = D's columns). GELU here is the erf form. */
static inline int colmajor_matmul(const poa_cublaslt_call *g, poa_error *e) {
    poa_cublaslt_colmajor c;
    poa_cublaslt_colmajor_of(g->transpose_a, g->transpose_b, g->m, g->n, g->k, g->lda, g->ldb, g->ldc, &c);
    if (c.a_rows > c.lda || c.b_rows > c.ldb || c.c_rows > c.ldc)
        return poa_fail(e, "emulator: a layout's rows exceed its leading dimension");
    const CUdeviceptr its_a = g->b, its_b = g->a;
    const int type_a = g->type_b, type_b = g->type_a;
    int epilogue = g->epilogue ? g->epilogue : POA_LT_EPILOGUE_NONE;
    if (g->type_c != POA_LT_F32) return poa_fail(e, "emulator: only fp32 outputs");
    float *d = (float *)(uintptr_t)g->c, *bias = (float *)(uintptr_t)g->bias, *aux = (float *)(uintptr_t)g->aux;
    for (long j = 0; j < c.n; j++)
        for (long i = 0; i < c.m; i++) {
            double s = 0;
            for (long l = 0; l < c.k; l++)
                s += element(its_a, type_a, c.transa ? l + i * c.lda : i + l * c.lda) *
                     element(its_b, type_b, c.transb ? j + l * c.ldb : l + j * c.ldb);
            float *y = &d[i + j * c.ldc];
            double v = g->alpha * s + (g->beta == 0 ? 0.0 : g->beta * (double)*y);
            if (epilogue == POA_LT_EPILOGUE_BIAS || epilogue == POA_LT_EPILOGUE_GELU_AUX_BIAS) v += bias[i];
            if (epilogue == POA_LT_EPILOGUE_GELU_AUX_BIAS) {
                aux[i + j * g->aux_ld] = (float)v;
                v = gelu_of(v);
            }
            if (epilogue == POA_LT_EPILOGUE_DGELU) v *= gelu_grad_of(aux[i + j * g->aux_ld]);
            *y = (float)v;
        }
    if (epilogue == POA_LT_EPILOGUE_BGRADB)
        for (long j = 0; j < c.n; j++) {
            double s = 0;
            for (long l = 0; l < c.k; l++) s += element(its_b, type_b, c.transb ? j + l * c.ldb : l + j * c.ldb);
            bias[j] = (float)s;
        }
    return 0;
}

#endif
