/* cuda_emulator.h: what the host emulators of the GPU passes (tests/c/test_cuda_vit.c,
   test_cuda_heads.c, test_cuda_train.c) share: cuBLASLt's column-major GEMM, evaluated by plain
   loops in double for the very call poa_cublaslt_matmul would make, and the erf GELU it
   documents; the ViT kernels of a width's set run by its CPU kernels, and the glue kernels of
   vit_glue.cu by plain loops; and the emulator of the whole training step. */
#ifndef POA_TEST_CUDA_EMULATOR_H
#define POA_TEST_CUDA_EMULATOR_H

#include <math.h>
#include <stdint.h>

#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "bf16.h"
#include "check.h"
#include "cublaslt.h"
#include "cuda_host_run.h"
#include "error.h"
#include "heads_kernels.h"
#include "kernels.h"
#include "train_kernels.h"

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

/* The GPU checks' start: 1 with the device and a cuBLASLt handle open (name printed), 0 when
   there is no GPU (*why says so: the caller prints its SKIP lines), -1 after a FAIL line. */
static inline int open_gpu_for_tests(poa_cuda *cuda, poa_cublaslt *lt, poa_error *why) {
    if (poa_cuda_open(cuda, why)) {
        if (cuda->no_gpu) return 0;
        CHECK("gpu: open the device", 0, "%s", why->message);
        return -1;
    }
    printf("  GPU: %s (sm_%d%d)\n", cuda->device_name, cuda->major, cuda->minor);
    if (poa_cublaslt_init(lt, cuda, 0, why)) {
        CHECK("gpu: cuBLASLt handle and workspace", 0, "%s", why->message);
        poa_cuda_close(cuda);
        return -1;
    }
    return 1;
}

/* A launch's arguments: a device (here host) pointer, a long. */
static inline float *ptr(void **args, int i) { return (float *)(uintptr_t)*(CUdeviceptr *)args[i]; }
static inline long num(void **args, int i) { return *(long *)args[i]; }

/* A vit_glue.cu launch has 256 threads per block as its __launch_bounds__ (32 x 8 for the
   column sum) and enough of them for its arguments. */
static inline int check_glue_geometry(const char *name, const unsigned grid[3], const unsigned block[3], void **args,
                                      poa_error *e) {
    long need;
    int column_sum = !strcmp(name, "poa_glue_column_sum_accumulate");
    if (column_sum) need = num(args, 4);
    else if (!strcmp(name, "poa_glue_patchify"))
        need = num(args, 2) * (num(args, 4) / num(args, 5)) * (num(args, 4) / num(args, 5)) * num(args, 3) *
               num(args, 5) * num(args, 5);
    else if (!strcmp(name, "poa_glue_fill_rows") || !strcmp(name, "poa_glue_to_bf16")) need = num(args, 3) * num(args, 4);
    else if (!strcmp(name, "poa_glue_gather_rows") || !strcmp(name, "poa_glue_scatter_add_rows"))
        need = num(args, 3) * num(args, 4);
    else need = num(args, 2);
    long covered = (long)grid[0] * (column_sum ? 32 : (long)block[0]);
    if (block[0] * block[1] * block[2] != 256 || grid[1] != 1 || grid[2] != 1 || covered < need ||
        (column_sum && (block[0] != 32 || block[1] != 8)))
        return poa_fail(e, "emulator: %s launched with grid (%u, %u, %u) block (%u, %u, %u) for %ld", name, grid[0],
                        grid[1], grid[2], block[0], block[1], block[2], need);
    return 0;
}

/* Runs one launch of a ViT kernel set (with k, the CPU kernels of its width) or of vit_glue.cu,
   unpacking the argument array the pass hands to cuLaunchKernel by the .cu signatures (the C
   function's parameters in order, without k). A row kernel gets the op's accumulated outputs
   redirected to scratch and a column-sum kernel its written outputs, so each kernel does only
   its own part; the pair attention_backward_dq/_dkv runs the CPU attention_backward once (at
   _dq). scratch: scratch_count floats, at least 4 x the largest activation. */
static inline int emulate_vit_kernel(const poa_vit_kernels *k, float *scratch, long scratch_count, const char *name,
                                     void **args, poa_error *e) {
    float *s1 = scratch, *s2 = scratch + scratch_count / 4, *s3 = scratch + scratch_count / 2;
    if (!strcmp(name, "layernorm_forward")) {
        k->layernorm_forward(k, ptr(args, 0), ptr(args, 1), ptr(args, 2), ptr(args, 3), ptr(args, 4), ptr(args, 5), num(args, 6));
    } else if (!strcmp(name, "layernorm_backward")) {
        k->layernorm_backward(k, ptr(args, 0), s1, s2, ptr(args, 3), ptr(args, 4), ptr(args, 5), ptr(args, 6), ptr(args, 7),
                              num(args, 8));
    } else if (!strcmp(name, "layernorm_backward_dw_db")) {
        k->layernorm_backward(k, s1, ptr(args, 1), ptr(args, 2), ptr(args, 3), ptr(args, 4), ptr(args, 5), ptr(args, 6),
                              ptr(args, 7), num(args, 8));
    } else if (!strcmp(name, "gelu_forward")) {
        k->gelu_forward(k, ptr(args, 0), ptr(args, 1), num(args, 2));
    } else if (!strcmp(name, "gelu_backward")) {
        k->gelu_backward(k, ptr(args, 0), ptr(args, 1), ptr(args, 2), num(args, 3));
    } else if (!strcmp(name, "residual_forward")) {
        k->residual_forward(k, ptr(args, 0), ptr(args, 1), ptr(args, 2), ptr(args, 3), num(args, 4), num(args, 5));
    } else if (!strcmp(name, "residual_backward")) {
        k->residual_backward(k, ptr(args, 0), s1, ptr(args, 2), ptr(args, 3), ptr(args, 4), ptr(args, 5), num(args, 6),
                             num(args, 7));
    } else if (!strcmp(name, "residual_backward_dgamma")) {
        k->residual_backward(k, s1, ptr(args, 1), ptr(args, 2), ptr(args, 3), ptr(args, 4), ptr(args, 5), num(args, 6),
                             num(args, 7));
    } else if (!strcmp(name, "tokens_forward")) {
        k->tokens_forward(k, ptr(args, 0), ptr(args, 1), ptr(args, 2), ptr(args, 3), ptr(args, 4), num(args, 5),
                          (const unsigned char *)ptr(args, 6), num(args, 7), num(args, 8));
    } else if (!strncmp(name, "tokens_backward", 15)) {
        /* dpatch, dcls, dmask_token, dpos, pos_ld, dx, mask, batch, patches */
        float *out[4] = { s1, s2, s2, s3 };
        int which = !strcmp(name, "tokens_backward") ? 0 : !strcmp(name, "tokens_backward_dcls") ? 1
                    : !strcmp(name, "tokens_backward_dmask_token") ? 2 : !strcmp(name, "tokens_backward_dpos") ? 3 : -1;
        if (which < 0) return poa_fail(e, "emulator: no kernel %s", name);
        out[which] = ptr(args, which);
        k->tokens_backward(k, out[0], out[1], out[2], out[3], num(args, 4), ptr(args, 5),
                           (const unsigned char *)ptr(args, 6), num(args, 7), num(args, 8));
    } else if (!strncmp(name, "residual_layernorm_forward_", 27)) {
        /* vit_fused.cu: the residual add then the LayerNorm (the generated fused op is their
           arithmetic, tested bit for bit in tests/c/test_train_kernels.c) */
        k->residual_forward(k, ptr(args, 0), ptr(args, 4), ptr(args, 5), ptr(args, 6), num(args, 9), num(args, 10));
        k->layernorm_forward(k, ptr(args, 1), ptr(args, 2), ptr(args, 3), ptr(args, 0), ptr(args, 7), ptr(args, 8),
                             num(args, 9) * num(args, 10));
    } else if (!strncmp(name, "residual_layernorm_backward_", 28)) {
        /* dx, dh, dw, db, dgamma, dy, x, mean, rstd, w, h, gamma, sample_scale, batch, tokens:
           the row kernel dx += LayerNorm'(dy), dh = s gamma dx; _dw_db the LayerNorm's column
           sums; _dgamma the residual's (each with the others' outputs sent to scratch) */
        const long batch = num(args, 13), tokens = num(args, 14), rows = batch * tokens;
        const size_t n = strlen(name);
        const int dw_db = n > 6 && !strcmp(name + n - 6, "_dw_db"), dgamma = n > 7 && !strcmp(name + n - 7, "_dgamma");
        float *dx = ptr(args, 0);
        if (dw_db) {
            k->layernorm_backward(k, s1, ptr(args, 2), ptr(args, 3), ptr(args, 5), ptr(args, 6), ptr(args, 7),
                                  ptr(args, 8), ptr(args, 9), rows);
        } else if (dgamma) {
            k->residual_backward(k, s1, ptr(args, 4), dx, ptr(args, 10), ptr(args, 11), ptr(args, 12), batch, tokens);
        } else {
            k->layernorm_backward(k, s1, s2, s3, ptr(args, 5), ptr(args, 6), ptr(args, 7), ptr(args, 8), ptr(args, 9),
                                  rows);
            poa_add(dx, s1, rows * (long)k->width);
            k->residual_backward(k, ptr(args, 1), s2, dx, ptr(args, 10), ptr(args, 11), ptr(args, 12), batch, tokens);
        }
    } else if (!strcmp(name, "attention_forward")) {
        k->attention_forward(k, ptr(args, 0), ptr(args, 1), ptr(args, 2), num(args, 3), num(args, 4));
    } else if (!strcmp(name, "attention_backward_dq")) {
        k->attention_backward(k, ptr(args, 0), ptr(args, 1), ptr(args, 2), ptr(args, 3), ptr(args, 4), num(args, 5),
                              num(args, 6));
    } else if (!strcmp(name, "attention_backward_dkv")) {
        /* done with _dq */
    } else if (!strcmp(name, "poa_glue_patchify")) {
        float *patches = ptr(args, 0);
        const float *images = ptr(args, 1);
        long batch = num(args, 2), channels = num(args, 3), size = num(args, 4), patch = num(args, 5);
        long g = size / patch, len = channels * patch * patch;
        for (long i = 0; i < batch * g * g * len; i++) {
            long row = i / len, col = i % len, b = row / (g * g), cell = row % (g * g);
            long c = col / (patch * patch), kk = col % (patch * patch);
            patches[i] = images[((b * channels + c) * size + cell / g * patch + kk / patch) * size +
                                cell % g * patch + kk % patch];
        }
    } else if (!strcmp(name, "poa_glue_fill_rows")) {
        poa_fill_rows(ptr(args, 0), num(args, 1), ptr(args, 2), num(args, 3), num(args, 4));
    } else if (!strcmp(name, "poa_glue_column_sum_accumulate")) {
        poa_column_sum_accumulate(ptr(args, 0), ptr(args, 1), num(args, 2), num(args, 3), num(args, 4));
    } else if (!strcmp(name, "poa_glue_add")) {
        poa_add(ptr(args, 0), ptr(args, 1), num(args, 2));
    } else if (!strcmp(name, "poa_glue_copy")) {
        memcpy(ptr(args, 0), ptr(args, 1), sizeof(float) * (size_t)num(args, 2));
    } else if (!strcmp(name, "poa_glue_to_bf16")) {
        uint16_t *dst = (uint16_t *)ptr(args, 0);
        const float *src = ptr(args, 1);
        long ld = num(args, 2), rows = num(args, 3), cols = num(args, 4);
        for (long r = 0; r < rows; r++)
            for (long c = 0; c < cols; c++) dst[r * ld + c] = poa_bf16_from_float(src[r * ld + c]);
    } else if (!strcmp(name, "poa_glue_gather_rows") || !strcmp(name, "poa_glue_scatter_add_rows")) {
        float *dst = ptr(args, 0);
        const float *src = ptr(args, 1);
        const int *indices = (const int *)ptr(args, 2);
        long count = num(args, 3), width = num(args, 4), tokens = num(args, 5), patches = num(args, 6);
        int gather = !strcmp(name, "poa_glue_gather_rows");
        for (long r = 0; r < count; r++) {
            long row = indices ? indices[r] / patches * tokens + 1 + indices[r] % patches : r * tokens;
            for (long j = 0; j < width; j++) {
                if (gather) dst[r * width + j] = src[row * width + j];
                else dst[row * width + j] += src[r * width + j];
            }
        }
    } else if (!strcmp(name, "poa_glue_scale")) {
        float *x = ptr(args, 0), a = *(float *)args[1];
        for (long i = 0; i < num(args, 2); i++) x[i] *= a;
    } else if (!strcmp(name, "poa_glue_add_double")) {
        double *y = (double *)ptr(args, 0);
        const double *x = (const double *)ptr(args, 1);
        for (long i = 0; i < num(args, 2); i++) y[i] += x[i];
    } else if (!strcmp(name, "poa_glue_fill")) {
        float *dst = ptr(args, 0), value = *(float *)args[1];
        for (long i = 0; i < num(args, 2); i++) dst[i] = value;
    } else {
        return poa_fail(e, "emulator: no kernel %s", name);
    }
    return 0;
}

enum { MAX_SETS = 8 };

/* ---- the whole training step (runtime/cuda_train.c) ----

   Every launch by module: the CPU kernels of the ViT set of that width, the glue loops, the
   heads' C twins (runtime/heads_kernels.c) or the generated C of the training kernels
   (build/gen/train_kernels.c, the same description as their CUDA); every GEMM the column-major
   evaluation of its cuBLASLt call. */

typedef struct step_emulator {
    int sets;
    char names[MAX_SETS][80];
    poa_vit_kernels generic[MAX_SETS];
    const poa_vit_kernels *kernels[MAX_SETS];
    float *scratch;
    long scratch_count;
    long launches, gemms, train_launches, heads_launches, glue_launches;
    host_runner *host;  /* non-NULL: launches run their .cu text (tests/c/cuda_host_run.h), checked against
                           the C twins below when host->twin is emulate_step_twin */
} step_emulator;

/* The CPU kernels of the ViT set a module name says ("vit_w64_h32_f256.cu"). */
static inline const poa_vit_kernels *set_of(step_emulator *em, const char *module, poa_error *e) {
    for (int i = 0; i < em->sets; i++)
        if (!strcmp(em->names[i], module)) return em->kernels[i];
    int width, head_dim, hidden;
    if (sscanf(module, "vit_w%d_h%d_f%d.cu", &width, &head_dim, &hidden) != 3 || em->sets == MAX_SETS) {
        poa_fail(e, "emulator: no kernel set for module %s", module);
        return NULL;
    }
    const poa_vit_kernels *k = poa_vit_kernels_find(width, head_dim, hidden);
    if (!k) {
        poa_vit_kernels_generic_for(&em->generic[em->sets], width, head_dim, hidden);
        k = &em->generic[em->sets];
    }
    snprintf(em->names[em->sets], sizeof em->names[0], "%s", module);
    em->kernels[em->sets++] = k;
    return k;
}

static inline double dbl(void **args, int i) { return *(double *)args[i]; }
static inline float flt(void **args, int i) { return *(float *)args[i]; }
static inline double *dptr(void **args, int i) { return (double *)ptr(args, i); }

/* The training kernels by name: their generated C, arguments as train_kernels.h declares. */
static inline int emulate_train(const char *name, void **args, poa_error *e) {
    if (!strcmp(name, "poa_train_adamw"))
        poa_train_adamw(ptr(args, 0), ptr(args, 1), ptr(args, 2), (uint16_t *)ptr(args, 3), ptr(args, 4),
                        (const long *)ptr(args, 5), (const long *)ptr(args, 6), (const long *)ptr(args, 7),
                        ptr(args, 8), ptr(args, 9), flt(args, 10), flt(args, 11), flt(args, 12), flt(args, 13),
                        flt(args, 14), flt(args, 15), num(args, 16));
    else if (!strcmp(name, "poa_train_ema"))
        poa_train_ema(ptr(args, 0), (uint16_t *)ptr(args, 1), ptr(args, 2), flt(args, 3), flt(args, 4), num(args, 5));
    else if (!strcmp(name, "poa_train_cast_bf16"))
        poa_train_cast_bf16((uint16_t *)ptr(args, 0), ptr(args, 1), num(args, 2));
    else if (!strcmp(name, "poa_train_sum_squares"))
        poa_train_sum_squares(dptr(args, 0), ptr(args, 1), num(args, 2));
    else if (!strcmp(name, "poa_train_sum"))
        poa_train_sum(dptr(args, 0), dptr(args, 1), num(args, 2));
    else if (!strcmp(name, "poa_train_clip_scale"))
        poa_train_clip_scale(ptr(args, 0), dptr(args, 1), dbl(args, 2), num(args, 3));
    else if (!strcmp(name, "poa_train_max_partial"))
        poa_train_max_partial(ptr(args, 0), ptr(args, 1), num(args, 2));
    else if (!strcmp(name, "poa_train_max"))
        poa_train_max(ptr(args, 0), ptr(args, 1), num(args, 2));
    else if (!strcmp(name, "poa_train_softmax"))
        poa_train_softmax(ptr(args, 0), ptr(args, 1), dbl(args, 2), num(args, 3), num(args, 4));
    else if (!strcmp(name, "poa_train_cross_entropy"))
        poa_train_cross_entropy(dptr(args, 0), ptr(args, 1), ptr(args, 2), ptr(args, 3), ptr(args, 4), dbl(args, 5),
                                dbl(args, 6), num(args, 7), num(args, 8));
    else if (!strcmp(name, "poa_train_sinkhorn_exp"))
        poa_train_sinkhorn_exp(ptr(args, 0), dptr(args, 1), ptr(args, 2), ptr(args, 3), dbl(args, 4), num(args, 5),
                               num(args, 6));
    else if (!strcmp(name, "poa_train_sinkhorn_fill"))
        poa_train_sinkhorn_fill(dptr(args, 0), dptr(args, 1), num(args, 2));
    else if (!strcmp(name, "poa_train_sinkhorn_columns_colsum"))
        poa_train_sinkhorn_columns(dptr(args, 0), ptr(args, 1), dptr(args, 2), num(args, 3), num(args, 4));
    else if (!strcmp(name, "poa_train_sinkhorn_column_scale"))
        poa_train_sinkhorn_column_scale(dptr(args, 0), dptr(args, 1), num(args, 2));
    else if (!strcmp(name, "poa_train_sinkhorn_rows"))
        poa_train_sinkhorn_rows(dptr(args, 0), ptr(args, 1), dptr(args, 2), num(args, 3), num(args, 4), num(args, 5));
    else if (!strcmp(name, "poa_train_sinkhorn_finish"))
        poa_train_sinkhorn_finish(ptr(args, 0), ptr(args, 1), dptr(args, 2), dptr(args, 3), num(args, 4),
                                  num(args, 5), num(args, 6));
    else if (!strcmp(name, "poa_train_koleo_normalize"))
        poa_train_koleo_normalize(dptr(args, 0), dptr(args, 1), ptr(args, 2), num(args, 3), num(args, 4));
    else if (!strcmp(name, "poa_train_koleo_neighbours"))
        poa_train_koleo_neighbours(dptr(args, 0), (long *)ptr(args, 1), dptr(args, 2), dptr(args, 3), dbl(args, 4),
                                   num(args, 5), num(args, 6));
    else if (!strcmp(name, "poa_train_koleo_backward"))
        poa_train_koleo_backward(ptr(args, 0), dptr(args, 1), (const long *)ptr(args, 2), dptr(args, 3),
                                 dptr(args, 4), num(args, 5), num(args, 6));
    else
        return poa_fail(e, "emulator: no training kernel %s", name);
    return 0;
}

/* A launch of the step by its C twin. */
static inline int emulate_step_twin(void *context, const char *module, const char *name, const unsigned grid[3],
                                    const unsigned block[3], void **args, poa_error *e) {
    step_emulator *em = context;
    if (!strcmp(module, "train_kernels.cu")) return emulate_train(name, args, e);
    if (!strcmp(module, "heads_kernels.cu")) return poa_heads_kernel_emulate(name, grid, block, args, e);
    if (!strcmp(module, "vit_glue.cu")) {
        return check_glue_geometry(name, grid, block, args, e) ||
                       emulate_vit_kernel(NULL, em->scratch, em->scratch_count, name, args, e)
                   ? -1
                   : 0;
    }
    char set[80];
    if (!strcmp(module, "vit_fused.cu")) { /* the set is the kernel name's suffix */
        const char *at = strstr(name, "_w");
        snprintf(set, sizeof set, "vit%s.cu", at ? at : "");
        module = set;
    }
    const poa_vit_kernels *k = set_of(em, module, e);
    return k ? emulate_vit_kernel(k, em->scratch, em->scratch_count, name, args, e) : -1;
}

/* A launch of the step: from its .cu text with em->host, else by its C twin. */
static inline int emulate_step_launch(void *context, const char *module, const char *name, const unsigned grid[3],
                                      const unsigned block[3], void **args, poa_error *e) {
    step_emulator *em = context;
    em->launches++;
    if (!strcmp(module, "train_kernels.cu")) em->train_launches++;
    if (!strcmp(module, "heads_kernels.cu")) em->heads_launches++;
    if (!strcmp(module, "vit_glue.cu")) em->glue_launches++;
    if (!em->host) return emulate_step_twin(context, module, name, grid, block, args, e);
    if (!strcmp(module, "vit_glue.cu") && check_glue_geometry(name, grid, block, args, e)) return -1;
    return host_runner_launch(em->host, module, name, grid, block, args, e);
}

static inline int emulate_step_gemm(void *context, const poa_cublaslt_call *call, poa_error *e) {
    ((step_emulator *)context)->gemms++;
    return colmajor_matmul(call, e);
}

#endif
