/* test_cublaslt.c: runtime/cublaslt.c (the GEMMs of every GPU pass; runtime/bf16.h's rounding:
   tests/c/test_train_kernels.c).

   Everywhere (no GPU needed):
   - cuBLASLt: the library loads by dlopen and resolves every entry point (SKIP when it is not
     installed); without a device, poa_cublaslt_init says "no GPU".
   - The transposition trick: the column-major call poa_cublaslt_colmajor_of makes of a
     row-major request (its layouts those of the stored operands), evaluated with cuBLASLt's
     semantics by a plain column-major GEMM (tests/c/cuda_emulator.h's colmajor_matmul), equals
     the row-major product, and with the epilogues (BIAS, GELU_AUX_BIAS, DGELU, BGRADB) and bf16
     operands does what cublaslt.h promises row-major, for all four transpositions with padded
     leading dimensions.

   With a GPU (else a SKIP line):
   - cuBLASLt GEMMs of all four transpositions at 4-byte-aligned offsets against poa_gemm. */
#include <string.h>

#include "backend.h"
#include "bf16.h"
#include "check.h"
#include "cublaslt.h"
#include "cuda_emulator.h"
#include "fixture_util.h"
#include "vit_test_util.h"

/* ---- cuBLASLt without a GPU ---- */

static void check_cublaslt_load(void) {
    const poa_cublaslt_api *api;
    char name[512];
    poa_error e = { { 0 } };
    poa_cublaslt_api other;
    void *library = NULL;
    int missing = poa_cublaslt_open_library("/nonexistent/libcublasLt.so.13", &other, &library, &e);
    int missing_named = strstr(e.message, "cannot load cuBLASLt: ") && strstr(e.message, "/nonexistent");
    int foreign = poa_cublaslt_open_library("libm.so.6", &other, &library, &e);
    int foreign_named = strstr(e.message, "libm.so.6 has no cublasLtCreate") != NULL;
    CHECK("cuBLASLt: a missing library and one without its entry points are clear errors",
          missing == -1 && missing_named && foreign == -1 && foreign_named, "%d %d %d %d: %s", missing,
          missing_named, foreign, foreign_named, e.message);
    if (poa_cublaslt_load(&api, name, sizeof name, &e)) {
        if (strstr(e.message, "cannot load cuBLASLt")) {
            CHECK_SKIP("cuBLASLt loads by dlopen", e.message);
        } else {
            CHECK("cuBLASLt loads by dlopen", 0, "%s", e.message);
        }
        return;
    }
    size_t version = api->get_version();
    printf("  cuBLASLt %s, version %zu\n", name, version);
    CHECK("cuBLASLt loads by dlopen and resolves every entry point", version > 0, "version %zu", version);
    poa_cublaslt lt;
    int rc = poa_cublaslt_init(&lt, NULL, 0, &e);
    CHECK("cuBLASLt without an open device: no GPU", rc == -1 && strncmp(e.message, "no GPU: ", 8) == 0,
          "rc %d: %s", rc, e.message);
}

/* The transposition trick, the epilogues and bf16 operands as cublaslt.h states them row-major,
   against cuBLASLt's column-major semantics applied to the call the trick makes
   (colmajor_matmul: its A is our B, its B our A, C the same memory): the plain product, the bias
   per column j of our C, the GELU aux in our C's layout, BGRADB summing op(A)'s rows. */
static void check_epilogues(void) {
    const long m = 6, n = 5, k = 4;
    const int epilogues[] = { POA_LT_EPILOGUE_BIAS, POA_LT_EPILOGUE_GELU_AUX_BIAS, POA_LT_EPILOGUE_DGELU,
                              POA_LT_EPILOGUE_BGRADB, POA_LT_EPILOGUE_NONE, POA_LT_EPILOGUE_NONE };
    int bad = 0, cases = 0;
    for (int x = 0; x < 6; x++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                /* NONE with bf16 operands, then the plain fp32 product (the trick alone: exact) */
                const int epilogue = epilogues[x], bf16 = x == 4;
                long lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 2, ldc = n + 3, aux_ld = 8;
                float a[64], b[64], c[64], want[64], bias[8] = { 0 }, want_bias[8] = { 0 }, aux[64], want_aux[64];
                uint16_t a16[64], b16[64];
                for (int i = 0; i < 64; i++) {
                    a[i] = (float)sin(1.3 * i + 0.1) * 1.7f, b[i] = (float)cos(0.7 * i) * 1.3f;
                    c[i] = want[i] = (float)(i % 5) * 0.25f;
                    aux[i] = want_aux[i] = (float)sin(0.9 * i) * 2;
                    a16[i] = poa_bf16_from_float(a[i]), b16[i] = poa_bf16_from_float(b[i]);
                }
                for (int j = 0; j < 8; j++) bias[j] = want_bias[j] = 0.5f * (float)j - 1;
                const double alpha = 1.5, beta = 0.5;
                for (long i = 0; i < m; i++)
                    for (long j = 0; j < n; j++) {
                        double sum = 0;
                        for (long l = 0; l < k; l++) {
                            double av = ta ? a[l * lda + i] : a[i * lda + l], bv = tb ? b[j * ldb + l] : b[l * ldb + j];
                            if (bf16) av = poa_bf16_round((float)av), bv = poa_bf16_round((float)bv);
                            sum += av * bv;
                        }
                        double v = alpha * sum + beta * want[i * ldc + j];
                        if (epilogue == POA_LT_EPILOGUE_BIAS || epilogue == POA_LT_EPILOGUE_GELU_AUX_BIAS) v += bias[j];
                        if (epilogue == POA_LT_EPILOGUE_GELU_AUX_BIAS) want_aux[i * aux_ld + j] = (float)v, v = gelu_of(v);
                        if (epilogue == POA_LT_EPILOGUE_DGELU) v *= gelu_grad_of(aux[i * aux_ld + j]);
                        want[i * ldc + j] = (float)v;
                    }
                if (epilogue == POA_LT_EPILOGUE_BGRADB)
                    for (long i = 0; i < m; i++) {
                        double sum = 0;
                        for (long l = 0; l < k; l++) sum += ta ? a[l * lda + i] : a[i * lda + l];
                        want_bias[i] = (float)sum;
                    }
                poa_cublaslt_call g = {
                    .transpose_a = ta, .transpose_b = tb, .m = m, .n = n, .k = k, .alpha = (float)alpha,
                    .beta = (float)beta, .a = (CUdeviceptr)(uintptr_t)(bf16 ? (void *)a16 : (void *)a),
                    .b = (CUdeviceptr)(uintptr_t)(bf16 ? (void *)b16 : (void *)b), .c = (CUdeviceptr)(uintptr_t)c,
                    .lda = lda, .ldb = ldb, .ldc = ldc, .type_a = bf16 ? POA_LT_BF16 : POA_LT_F32,
                    .type_b = bf16 ? POA_LT_BF16 : POA_LT_F32, .type_c = POA_LT_F32, .epilogue = epilogue,
                    .bias = (CUdeviceptr)(uintptr_t)bias, .aux = (CUdeviceptr)(uintptr_t)aux, .aux_ld = aux_ld,
                };
                poa_error e = { { 0 } };
                poa_cublaslt_colmajor l; /* the layouts must describe the stored operands (rows <= ld) */
                poa_cublaslt_colmajor_of(ta, tb, m, n, k, lda, ldb, ldc, &l);
                const int layouts_ok = l.a_rows <= l.lda && l.b_rows <= l.ldb && l.c_rows <= l.ldc && l.c_rows == l.m &&
                                       l.c_cols == l.n && (l.transa ? l.a_cols : l.a_rows) == l.m &&
                                       (l.transa ? l.a_rows : l.a_cols) == l.k &&
                                       (l.transb ? l.b_cols : l.b_rows) == l.k && (l.transb ? l.b_rows : l.b_cols) == l.n;
                int rc = colmajor_matmul(&g, &e);
                double diff = 0;
                for (long i = 0; i < m; i++)
                    for (long j = 0; j < n; j++) {
                        diff = fmax(diff, fabs(c[i * ldc + j] - want[i * ldc + j]));
                        diff = fmax(diff, fabs(aux[i * aux_ld + j] - want_aux[i * aux_ld + j]));
                    }
                for (int j = 0; j < 8; j++) diff = fmax(diff, fabs(bias[j] - want_bias[j]));
                cases++;
                if (rc || !layouts_ok || diff > (x == 5 ? 1e-12 : 1e-5)) {
                    bad++;
                    printf("  epilogue %d%s trans %d%d: %s layouts %s, max difference %g\n", epilogue, bf16 ? " bf16" : "",
                           ta, tb, rc ? e.message : "", layouts_ok ? "ok" : "wrong", diff);
                }
            }
    CHECK("cuBLASLt transposition trick, epilogues BIAS, GELU_AUX_BIAS, DGELU, BGRADB and bf16 operands: the "
          "column-major call (its layouts those of the stored operands) does what cublaslt.h says row-major (NN NT TN "
          "TT, padded ld; the plain fp32 product within 1e-12)", bad == 0, "%d of %d wrong", bad, cases);
}

static void check_gpu_gemm(poa_cublaslt *lt, poa_cuda *cuda) {
    const long m = 37, n = 45, k = 29, pad = 3, offset = 1; /* 4-byte-aligned operands */
    int bad = 0;
    poa_error e = { { 0 } };
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            long lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
            long a_rows = ta ? k : m, b_rows = tb ? n : k;
            long na = a_rows * lda + offset, nb = b_rows * ldb + offset, nc = m * ldc + offset;
            float *a = malloc(sizeof(float) * (size_t)na), *b = malloc(sizeof(float) * (size_t)nb);
            float *c = malloc(sizeof(float) * (size_t)nc), *want = malloc(sizeof(float) * (size_t)nc);
            test_fill_normal(a, na, 0, 1, 7, 1);
            test_fill_normal(b, nb, 0, 1, 7, 2);
            test_fill_normal(c, nc, 0, 1, 7, 3);
            memcpy(want, c, sizeof(float) * (size_t)nc);
            poa_gemm(ta, tb, m, n, k, 1.5f, a + offset, lda, b + offset, ldb, 0.5f, want + offset, ldc);
            CUdeviceptr da = 0, db = 0, dc = 0;
            int rc = poa_cuda_alloc(cuda, &da, sizeof(float) * (size_t)na, &e) ||
                     poa_cuda_alloc(cuda, &db, sizeof(float) * (size_t)nb, &e) ||
                     poa_cuda_alloc(cuda, &dc, sizeof(float) * (size_t)nc, &e) ||
                     poa_cuda_copy_to_device_async(cuda, da, a, sizeof(float) * (size_t)na, &e) ||
                     poa_cuda_copy_to_device_async(cuda, db, b, sizeof(float) * (size_t)nb, &e) ||
                     poa_cuda_copy_to_device_async(cuda, dc, c, sizeof(float) * (size_t)nc, &e) ||
                     poa_cublaslt_gemm(lt, ta, tb, m, n, k, 1.5f, da + 4 * offset, lda, db + 4 * offset, ldb,
                                       0.5f, dc + 4 * offset, ldc, &e) ||
                     poa_cuda_copy_to_host_async(cuda, c, dc, sizeof(float) * (size_t)nc, &e) ||
                     poa_cuda_synchronize(cuda, &e);
            double err = rc ? INFINITY : relative_error(c, want, nc);
            if (rc || err > 1e-5) {
                bad++;
                printf("  gemm %c%c: %s relative error %.3g\n", ta ? 'T' : 'N', tb ? 'T' : 'N', rc ? e.message : "",
                       err);
            }
            if (da) poa_cuda_free(cuda, da, &e);
            if (db) poa_cuda_free(cuda, db, &e);
            if (dc) poa_cuda_free(cuda, dc, &e);
            free(a), free(b), free(c), free(want);
        }
    CHECK("gpu: cuBLASLt fp32 GEMM NN NT TN TT, padded ld, 4-byte-aligned offsets, equals poa_gemm within 1e-5",
          bad == 0, "%d of 4 wrong", bad);
}

int main(void) {
    check_cublaslt_load();
    check_epilogues();
    poa_cuda cuda;
    poa_cublaslt lt;
    poa_error e = { { 0 } };
    int rc = open_gpu_for_tests(&cuda, &lt, &e);
    if (rc == 0) CHECK_SKIP("gpu: cuBLASLt fp32 GEMM NN NT TN TT against poa_gemm", e.message);
    if (rc > 0) {
        check_gpu_gemm(&lt, &cuda);
        poa_cublaslt_free(&lt);
        poa_cuda_close(&cuda);
    }
    CHECK_EXIT();
}
