/* test_cuda_vit.c: the GPU forward and backward of one ViT member (runtime/cuda_vit.c) and
   its cuBLASLt GEMMs (runtime/cublaslt.c).

   Everywhere (no GPU needed):
   - cuBLASLt: the library loads by dlopen and resolves every entry point (SKIP when it is not
     installed); without a device, poa_cublaslt_init says "no GPU".
   - The transposition trick: the column-major call poa_cublaslt_colmajor_of makes of a
     row-major request, evaluated by a plain column-major GEMM with cuBLASLt's semantics,
     equals the row-major product, for all four transpositions with padded leading dimensions.
   - runtime/bf16.h's rounding (ties, overflow, NaN); the cuBLASLt epilogues (BIAS,
     GELU_AUX_BIAS, DGELU, BGRADB) and bf16 operands: what cublaslt.h promises row-major is what
     cuBLASLt's column-major semantics give for the call the trick makes.
   - Table expressions evaluate as written; unknown names are refused.
   - For every width of the tiny and the ViT-L families: each kernel of the .cu's table is
     defined in its text, and the glue source defines every glue kernel; NVRTC compiles the
     glue source for sm_80 and sm_90 (SKIP without NVRTC).
   - Traced passes (cuda == NULL) of tiny and ViT-L members, at the native size with a mask
     and stochastic depth and at a resampled size without: every kernel the pass launches is
     in its width's table; each op launches exactly the table's kernels of that op in table
     order; every table kernel is launched; and the pass's steps equal gen/plan.lua's
     vit_pass steps in order, and each launch passes as many arguments as its kernel's
     definition has parameters: kernel names, GEMMs with their operands (buffer or parameter
     and offset), shapes, leading dimensions, transpositions, alpha and beta, copies, adds and
     bias gradients.
   - The launch geometry read from the w96 table for a known shape.
   - The pass emulated on the host (poa_cuda_vit_pass_init_emulated): device pointers are host
     pointers, each launch runs its kernel's own .cu text through tests/c/cuda_host_run.h,
     thread by thread, after the CPU kernel of its op on the same inputs (each kernel's worst
     difference printed, within 1e-5; without g++ the CPU kernels alone), with the very argument
     array the pass gives cuLaunchKernel, each GEMM the column-major call cuBLASLt would get. It
     must pass the golden cases and match the CPU backend as the GPU must (below). This checks
     the GPU code's buffers, argument order, GEMM operands through the transposition trick and
     order, and the CUDA kernels themselves; not cuBLASLt or the driver. The same in bf16 (poa_cuda_vit_pass_use_bf16:
     bf16 GEMM operands from the shadow and the cast arena mirror, fp32 accumulation, bias
     epilogue) against the fp32 CPU backend: output within 1e-2, gradients within 2e-2
     (norm-relative; PyTorch's bf16 autocast is off by up to 2.2% on the same model).

   With a GPU (else SKIP lines say what did not run):
   - cuBLASLt GEMMs of all four transpositions at 4-byte-aligned offsets against poa_gemm.
   - The golden cases of tests/golden/fixtures/vit_*.safetensors (as test_vit_golden.c): the
     output of a global batch (mask, stochastic depth) and a local batch (resampling) and the
     gradient of every parameter within 1e-4 relative error.
   - The GPU against the CPU backend on the same random parameters and inputs (64x3 and 96x4,
     both crop sizes): outputs and all gradients within 1e-4. */
#include <ctype.h>
#include <lauxlib.h>
#include <string.h>

#include "backend.h"
#include "bf16.h"
#include "check.h"
#include "cublaslt.h"
#include "cuda_emulator.h"
#include "cuda_vit.h"
#include "fixture_util.h"
#include "nvrtc_cache.h"
#include "vit_test_util.h"

#define TINY "tests/recipes/tiny_vit.lua"
/* bf16 pass against the fp32 CPU pass, norm-relative: the output within the 1e-2; the
   gradients, three or four bf16 GEMM layers further, within 2e-2: PyTorch's own bf16 autocast
   on the same model and members is off by 1.3-2.2% on its worst gradient tensor
   (bench/bf16_error_torch.py), poa's bf16 pass by 1.1-1.4%. */
#define BF16_TOLERANCE 1e-2
#define BF16_GRADIENT_TOLERANCE 2e-2
#define LARGE "recipes/vit_l16_ee1200.lua"

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

/* Column-major D (m x n, ldc) = alpha op(A) op(B) + beta C, plain loops (cuBLASLt's meaning). */
static void colmajor_gemm(int ta, int tb, long m, long n, long k, double alpha, const double *a, long lda,
                          const double *b, long ldb, double beta, double *c, long ldc) {
    for (long j = 0; j < n; j++)
        for (long i = 0; i < m; i++) {
            double s = 0;
            for (long l = 0; l < k; l++) {
                double x = ta ? a[l + i * lda] : a[i + l * lda]; /* op(A)[i][l] */
                double y = tb ? b[j + l * ldb] : b[l + j * ldb]; /* op(B)[l][j] */
                s += x * y;
            }
            c[i + j * ldc] = alpha * s + beta * c[i + j * ldc];
        }
}

static void check_transposition_trick(void) {
    const long m = 5, n = 7, k = 3;
    int bad = 0;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            /* row-major stored shapes: A m x k (or k x m), B k x n (or n x k), padded */
            long lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 3, ldc = n + 1;
            long a_rows = ta ? k : m, b_rows = tb ? n : k;
            double a[64], b[64], c[64], want[64];
            for (long i = 0; i < a_rows * lda; i++) a[i] = (double)((i * 7) % 11) - 5;
            for (long i = 0; i < b_rows * ldb; i++) b[i] = (double)((i * 5) % 13) - 6;
            for (long i = 0; i < m * ldc; i++) c[i] = want[i] = (double)(i % 3);
            /* row-major reference */
            for (long i = 0; i < m; i++)
                for (long j = 0; j < n; j++) {
                    double s = 0;
                    for (long l = 0; l < k; l++)
                        s += (ta ? a[l * lda + i] : a[i * lda + l]) * (tb ? b[j * ldb + l] : b[l * ldb + j]);
                    want[i * ldc + j] = 2 * s + 0.5 * want[i * ldc + j];
                }
            poa_cublaslt_colmajor c2;
            poa_cublaslt_colmajor_of(ta, tb, m, n, k, lda, ldb, ldc, &c2);
            /* the layouts must describe the stored operands (rows <= ld in column-major) */
            int layouts_ok = c2.a_rows <= c2.lda && c2.b_rows <= c2.ldb && c2.c_rows <= c2.ldc &&
                             c2.c_rows == c2.m && c2.c_cols == c2.n &&
                             (c2.transa ? c2.a_cols : c2.a_rows) == c2.m &&
                             (c2.transa ? c2.a_rows : c2.a_cols) == c2.k &&
                             (c2.transb ? c2.b_cols : c2.b_rows) == c2.k &&
                             (c2.transb ? c2.b_rows : c2.b_cols) == c2.n;
            /* its A is our B, its B our A, C the same memory */
            colmajor_gemm(c2.transa, c2.transb, c2.m, c2.n, c2.k, 2, b, c2.lda, a, c2.ldb, 0.5, c, c2.ldc);
            double diff = 0;
            for (long i = 0; i < m * ldc; i++) diff = fmax(diff, fabs(c[i] - want[i]));
            if (!layouts_ok || diff > 1e-12) {
                bad++;
                printf("  trans %d%d: layouts %s, max difference %g\n", ta, tb, layouts_ok ? "ok" : "wrong", diff);
            }
        }
    CHECK("cuBLASLt transposition trick: column-major call = row-major product (NN NT TN TT, padded ld)",
          bad == 0, "%d of 4 wrong", bad);
}

static double relative_error_f(const float *a, const float *b, long n) { return relative_error(a, b, n); }

/* The epilogues and bf16 operands as cublaslt.h states them row-major, against cuBLASLt's
   column-major semantics applied to the call the trick makes (colmajor_matmul): the bias is
   per column j of our C, the GELU aux has our C's layout, BGRADB sums op(A)'s rows. */
/* runtime/bf16.h: round to nearest even on the bit pattern, NaN kept, exact widening. */
static void check_bf16_rounding(void) {
    const struct { uint32_t in; uint16_t out; } cases[] = {
        { 0x3f800000u, 0x3f80 },                          /* 1 */
        { 0x3f808000u, 0x3f80 }, { 0x3f818000u, 0x3f82 }, /* ties to even, down and up */
        { 0x3f808001u, 0x3f81 }, { 0x3f807fffu, 0x3f80 }, /* just above and below a tie */
        { 0xbf818000u, 0xbf82 },                          /* negative tie */
        { 0x7f7fffffu, 0x7f80 },                          /* the largest float rounds to infinity */
        { 0x7f800000u, 0x7f80 }, { 0xff800000u, 0xff80 }, /* infinities */
        { 0x00000001u, 0x0000 }, { 0x80000000u, 0x8000 }, /* a denormal, -0 */
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float x;
        memcpy(&x, &cases[i].in, sizeof x);
        if (poa_bf16_from_float(x) != cases[i].out) {
            bad++;
            printf("  bf16 of 0x%08x: 0x%04x, expected 0x%04x\n", cases[i].in, poa_bf16_from_float(x), cases[i].out);
        }
    }
    const uint32_t nans[] = { 0x7fc00000u, 0x7f800001u, 0xffffffffu, 0x7fffffffu };
    for (int i = 0; i < 4; i++) {
        float x;
        memcpy(&x, &nans[i], sizeof x);
        if (!isnan(poa_bf16_to_float(poa_bf16_from_float(x)))) bad++, printf("  NaN 0x%08x lost\n", nans[i]);
    }
    for (uint32_t h = 0; h < 0x10000u; h += 7) /* widening then rounding is the identity off NaN */
        if ((h & 0x7f80u) != 0x7f80u && poa_bf16_from_float(poa_bf16_to_float((uint16_t)h)) != h) bad++;
    CHECK("bf16: round to nearest even (ties both ways), overflow to infinity, NaN kept, exact widening", bad == 0,
          "%d wrong", bad);
}

static void check_epilogues(void) {
    const long m = 6, n = 5, k = 4;
    const int epilogues[] = { POA_LT_EPILOGUE_BIAS, POA_LT_EPILOGUE_GELU_AUX_BIAS, POA_LT_EPILOGUE_DGELU,
                              POA_LT_EPILOGUE_BGRADB, POA_LT_EPILOGUE_NONE };
    int bad = 0, cases = 0;
    for (int x = 0; x < 5; x++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                const int epilogue = epilogues[x], bf16 = x == 4; /* NONE: with bf16 operands */
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
                int rc = colmajor_matmul(&g, &e);
                double diff = 0;
                for (long i = 0; i < m; i++)
                    for (long j = 0; j < n; j++) {
                        diff = fmax(diff, fabs(c[i * ldc + j] - want[i * ldc + j]));
                        diff = fmax(diff, fabs(aux[i * aux_ld + j] - want_aux[i * aux_ld + j]));
                    }
                for (int j = 0; j < 8; j++) diff = fmax(diff, fabs(bias[j] - want_bias[j]));
                cases++;
                if (rc || diff > 1e-5) {
                    bad++;
                    printf("  epilogue %d trans %d%d: %s max difference %g\n", epilogue, ta, tb, rc ? e.message : "", diff);
                }
            }
    CHECK("cuBLASLt epilogues BIAS, GELU_AUX_BIAS, DGELU, BGRADB and bf16 operands: the column-major call does "
          "what cublaslt.h says row-major (NN NT TN TT)", bad == 0, "%d of %d wrong", bad, cases);
}

static void check_eval(void) {
    poa_cuda_dims d = { .rows = 34, .batch = 2, .tokens = 17, .patches = 16, .width = 96, .heads = 3,
                        .head_dim = 32, .hidden = 384 };
    struct { const char *text; long want; } cases[] = {
        { "rows", 34 }, { "batch * tokens", 34 }, { "batch * T", 34 }, { "(WIDTH + 31) / 32", 3 },
        { "(tokens + 3) / 4", 5 }, { "HEADS", 3 }, { "32 * 8", 256 }, { "HIDDEN - HEAD_DIM * 2", 320 },
        { "patches", 16 },
    };
    int bad = 0;
    poa_error e = { { 0 } };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long v = -1;
        if (poa_cuda_eval(cases[i].text, &d, &v, &e) || v != cases[i].want) {
            bad++;
            printf("  %s = %ld, want %ld %s\n", cases[i].text, v, cases[i].want, e.message);
        }
    }
    long v;
    int unknown = poa_cuda_eval("rows * depth", &d, &v, &e);
    int unknown_named = strstr(e.message, "unknown name depth") != NULL;
    int trailing = poa_cuda_eval("(rows", &d, &v, &e);
    CHECK("kernel table expressions evaluate; unknown names and bad syntax are refused",
          bad == 0 && unknown == -1 && unknown_named && trailing == -1, "%d wrong, unknown %d (%d), syntax %d",
          bad, unknown, unknown_named, trailing);
}

/* ---- the kernel files ---- */

static const char *const glue_kernels[] = {
    "poa_glue_patchify", "poa_glue_fill_rows", "poa_glue_column_sum_accumulate", "poa_glue_add",
    "poa_glue_copy", "poa_glue_fill", "poa_glue_to_bf16", "poa_glue_gather_rows", "poa_glue_scatter_add_rows",
};

/* One width of a family: every kernel of its .cu table is defined in the text, and traced
   passes (native size with mask and stochastic depth, local crop size without) find every
   kernel they launch in the table (a launch of a name not in it fails). Returns the number
   of problems, the first described in why. */
static int check_width(const poa_recipe *r, const poa_vit *m, int width, char *why, size_t size) {
    char name[96];
    char *set = NULL, *glue = NULL;
    poa_error e = { { 0 } };
    int problems = 0;
    if (poa_cuda_vit_sources(r->path, width, &set, &glue, name, sizeof name, &e)) {
        snprintf(why, size, "width %d: %.800s", width, e.message);
        return 1;
    }
    poa_cuda_kernel_entry *entries;
    int count;
    if (poa_cuda_kernel_table(set, &entries, &count, &e)) {
        if (problems++ == 0) snprintf(why, size, "%s: %.800s", name, e.message);
    } else {
        for (int i = 0; i < count; i++)
            if (!poa_cuda_source_defines(set, entries[i].name) && problems++ == 0)
                snprintf(why, size, "%s: %s is listed but not defined", name, entries[i].name);
        if (count < 16 && problems++ == 0) snprintf(why, size, "%s: only %d kernels listed", name, count);
        free(entries);
    }
    static const float fake_float[1];
    static const unsigned char fake_mask[1];
    const int sizes[2] = { r->global_crop_size, r->local_crop_size };
    for (int i = 0; i < 2 && problems == 0; i++) {
        poa_cuda_vit_pass p;
        if (poa_cuda_vit_pass_init(&p, NULL, NULL, m, width, r->depth_min, 2, sizes[i], set, glue, &e) ||
            poa_cuda_vit_forward(&p, fake_float, i == 0 ? fake_mask : NULL, i == 0 ? fake_float : NULL, &e) ||
            poa_cuda_vit_backward(&p, fake_float, &e)) {
            if (problems++ == 0) snprintf(why, size, "%s traced at %d px: %.800s", name, sizes[i], e.message);
        }
        poa_cuda_vit_pass_free(&p);
    }
    free(set);
    free(glue);
    return problems;
}

static void check_family(lua_State *L, const char *recipe_path) {
    char label[256], why[1024] = "";
    poa_recipe r;
    poa_vit m;
    poa_error e = { { 0 } };
    if (poa_recipe_load(L, recipe_path, &r, &e) || poa_vit_init(&m, &r.vit, &e)) {
        snprintf(label, sizeof label, "%s: kernel tables", recipe_path);
        CHECK(label, 0, "%s", e.message);
        return;
    }
    int widths = 0, problems = 0;
    for (int w = r.width_min; w <= r.width_max; w += r.width_step, widths++)
        problems += check_width(&r, &m, w, problems ? NULL : why, problems ? 0 : sizeof why);
    snprintf(label, sizeof label,
             "%s: all %d widths: every table kernel is defined in its .cu, every kernel a traced pass launches is in "
             "its table", recipe_path, widths);
    CHECK(label, problems == 0 && widths > 0, "%d problems; first: %s", problems, why);
    poa_vit_free(&m);
}

/* The glue kernels: defined in their source, and NVRTC compiles them. */
static void check_glue(void) {
    char *glue = NULL;
    poa_error e = { { 0 } };
    if (poa_cuda_vit_sources(TINY, 64, NULL, &glue, NULL, 0, &e)) {
        CHECK("glue source", 0, "%s", e.message);
        return;
    }
    int missing = 0;
    for (size_t i = 0; i < sizeof glue_kernels / sizeof glue_kernels[0]; i++)
        if (!poa_cuda_source_defines(glue, glue_kernels[i])) missing++;
    int defines_other = poa_cuda_source_defines(glue, "layernorm_forward");
    CHECK("glue source defines every glue kernel (and the name search is not fooled)",
          missing == 0 && !defines_other, "%d missing, other %d", missing, defines_other);
    if (poa_nvrtc_load(&e)) {
        CHECK_SKIP("NVRTC compiles the glue kernels for sm_80 and sm_90", e.message);
    } else {
        const char *arches[] = { "sm_80", "sm_90" };
        for (int a = 0; a < 2; a++) {
            poa_blob blob = { 0 };
            char what[96];
            snprintf(what, sizeof what, "NVRTC compiles the glue kernels for %s", arches[a]);
            int rc = poa_nvrtc_compile(glue, "vit_glue.cu", arches[a], poa_nvrtc_kernel_options,
                                       poa_nvrtc_kernel_option_count, &blob, NULL, &e);
            CHECK(what, rc == 0 && blob.size > 0, "%s", e.message);
            poa_blob_free(&blob);
        }
    }
    free(glue);
}

/* ---- the traced pass against gen/plan.lua ---- */

static const char *const ops[] = {
    "layernorm_forward", "layernorm_backward", "gelu_forward", "gelu_backward", "residual_forward",
    "residual_backward", "tokens_forward", "tokens_backward", "attention_forward", "attention_backward",
};

static const char *op_of(const char *kernel) {
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        size_t n = strlen(ops[i]);
        if (strncmp(kernel, ops[i], n) == 0 && (kernel[n] == 0 || kernel[n] == '_')) {
            /* layernorm_backward_dw_db is layernorm_backward's, not layernorm_'s */
            return ops[i];
        }
    }
    return NULL;
}

/* One step as the plan states it, from a trace. */
typedef struct flat_step {
    char op[16], name[64];
    char kernels[8][64];
    int kernel_count;
    const poa_cuda_step *s;
    int fill_rows_ok; /* GEMM: a bias-rows step of the same C preceded it */
} flat_step;

static int flatten(const poa_cuda_vit_pass *p, flat_step *out, int capacity, char *why, size_t why_size) {
    int n = 0;
    for (int i = 0; i < p->step_count; i++) {
        const poa_cuda_step *s = &p->steps[i];
        if (s->inside_mark || s->kind == POA_CUDA_STEP_GLUE) continue;
        if (s->kind == POA_CUDA_STEP_KERNEL) {
            const char *op = op_of(s->name);
            if (!op) {
                snprintf(why, why_size, "kernel %s belongs to no op", s->name);
                return -1;
            }
            flat_step *last = n ? &out[n - 1] : NULL;
            if (last && !strcmp(last->op, "kernel") && !strcmp(last->name, op) && strcmp(s->name, op) &&
                last->kernel_count < 8) {
                snprintf(last->kernels[last->kernel_count++], 64, "%s", s->name);
                continue;
            }
        }
        if (n == capacity) {
            snprintf(why, why_size, "more than %d steps", capacity);
            return -1;
        }
        flat_step *f = &out[n++];
        memset(f, 0, sizeof *f);
        f->s = s;
        switch (s->kind) {
        case POA_CUDA_STEP_KERNEL:
            snprintf(f->op, sizeof f->op, "kernel");
            snprintf(f->name, sizeof f->name, "%s", op_of(s->name));
            snprintf(f->kernels[f->kernel_count++], 64, "%s", s->name);
            break;
        case POA_CUDA_STEP_MARK:
            snprintf(f->op, sizeof f->op, "kernel");
            snprintf(f->name, sizeof f->name, "%s", s->name);
            break;
        case POA_CUDA_STEP_GEMM: {
            snprintf(f->op, sizeof f->op, "gemm");
            snprintf(f->name, sizeof f->name, "%s", s->name);
            const poa_cuda_step *prev = i > 0 ? &p->steps[i - 1] : NULL;
            f->fill_rows_ok = prev && prev->kind == POA_CUDA_STEP_GLUE &&
                              !strcmp(prev->name, "poa_glue_fill_rows") && prev->dst == s->c &&
                              prev->m == s->m && prev->n == s->n && prev->ldc == s->ldc && prev->src == s->bias;
            break;
        }
        case POA_CUDA_STEP_COPY: snprintf(f->op, sizeof f->op, "copy"); break;
        case POA_CUDA_STEP_AXPY: snprintf(f->op, sizeof f->op, "axpy"); break;
        case POA_CUDA_STEP_BIAS_GRAD:
            snprintf(f->op, sizeof f->op, "bias_grad");
            snprintf(f->name, sizeof f->name, "%s", s->name);
            break;
        default: break;
        }
    }
    return n;
}

static const char *field_string(lua_State *L, int index, const char *key, char *buffer, size_t size) {
    lua_getfield(L, index, key);
    const char *v = lua_isstring(L, -1) ? lua_tostring(L, -1) : NULL;
    snprintf(buffer, size, "%s", v ? v : "");
    lua_pop(L, 1);
    return v ? buffer : NULL;
}

static double field_number(lua_State *L, int index, const char *key, double otherwise) {
    lua_getfield(L, index, key);
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : otherwise;
    lua_pop(L, 1);
    return v;
}

/* The plan names parameters without the reference's wrapper modules: blocks.3.attn.qkv.weight
   for the state dict's blocks.3.attn.qkv.linear.weight, norm1.weight for norm1.norm.weight. */
static void plan_name(char *name) {
    static const char *const infixes[] = { ".linear.", ".norm." };
    for (int i = 0; i < 2; i++) {
        char *at = strstr(name, infixes[i]);
        if (at) memmove(at, at + strlen(infixes[i]) - 1, strlen(at + strlen(infixes[i]) - 1) + 1);
    }
}

/* "name+offset" of a device address in the trace, parameters named as the plan names them. */
static void where(const poa_cuda_vit_pass *p, CUdeviceptr address, char *out, size_t size) {
    char name[96];
    long offset = 0;
    if (!address) {
        snprintf(out, size, "(none)");
    } else if (poa_cuda_vit_address_name(p, address, name, sizeof name, &offset)) {
        snprintf(out, size, "(nowhere %llx)", (unsigned long long)address);
    } else {
        plan_name(name);
        snprintf(out, size, "%s+%ld", name, offset);
    }
}

/* The plan's operand as "name+offset". */
static void planned(lua_State *L, int index, const char *key, const char *offset_key, char *out, size_t size) {
    char name[96];
    if (!field_string(L, index, key, name, sizeof name)) {
        snprintf(out, size, "(none)");
        return;
    }
    snprintf(out, size, "%s+%ld", name, (long)field_number(L, index, offset_key, 0));
}

static int model_has(const poa_vit *m, const char *planned_name) {
    const char *colon = strchr(planned_name, ':');
    char tensor[96];
    snprintf(tensor, sizeof tensor, "%s", colon ? colon + 1 : planned_name);
    char *plus = strrchr(tensor, '+');
    if (plus) *plus = 0;
    for (int i = 0; i < m->tensor_count; i++) {
        char name[96];
        snprintf(name, sizeof name, "%s", m->tensors[i].name);
        plan_name(name);
        if (!strcmp(name, tensor)) return 1;
    }
    return 0;
}

/* Compares one flat step to plan step at the top of the Lua stack; writes why on mismatch. */
static int same_step(lua_State *L, const poa_cuda_vit_pass *p, const flat_step *f, char *why, size_t size) {
    char op[32], text[128], mine[128], theirs[128];
    field_string(L, -1, "op", op, sizeof op);
    if (strcmp(op, f->op)) {
        snprintf(why, size, "plan %s, pass %s %s", op, f->op, f->name);
        return 0;
    }
    const poa_cuda_step *s = f->s;
    if (!strcmp(op, "kernel")) {
        field_string(L, -1, "kernel", text, sizeof text);
        if (strcmp(text, f->name)) {
            snprintf(why, size, "plan kernel %s, pass kernel %s", text, f->name);
            return 0;
        }
        return 1;
    }
    if (!strcmp(op, "gemm")) {
        field_string(L, -1, "what", text, sizeof text);
        if (strcmp(text, f->name)) {
            snprintf(why, size, "plan gemm %s, pass gemm %s", text, f->name);
            return 0;
        }
        const char *operands[3][2] = { { "a", "a_offset" }, { "b", "b_offset" }, { "c", "c_offset" } };
        CUdeviceptr addresses[3] = { s->a, s->b, s->c };
        for (int i = 0; i < 3; i++) {
            planned(L, -1, operands[i][0], operands[i][1], theirs, sizeof theirs);
            where(p, addresses[i], mine, sizeof mine);
            if (strcmp(theirs, mine)) {
                snprintf(why, size, "gemm %s: %s is %s in the plan, %s in the pass", f->name, operands[i][0],
                         theirs, mine);
                return 0;
            }
        }
        char ta[8], tb[8];
        field_string(L, -1, "trans_a", ta, sizeof ta);
        field_string(L, -1, "trans_b", tb, sizeof tb);
        long dims[6] = { (long)field_number(L, -1, "m", -1), (long)field_number(L, -1, "n", -1),
                         (long)field_number(L, -1, "k", -1), (long)field_number(L, -1, "lda", -1),
                         (long)field_number(L, -1, "ldb", -1), (long)field_number(L, -1, "ldc", -1) };
        long ours[6] = { s->m, s->n, s->k, s->lda, s->ldb, s->ldc };
        double alpha = field_number(L, -1, "alpha", NAN), beta = field_number(L, -1, "beta", NAN);
        int has_bias = field_string(L, -1, "bias", text, sizeof text) != NULL;
        /* the plan's forward GEMM with a bias: C = bias rows, then the GEMM adds (beta 1) */
        double want_beta = has_bias ? 1 : beta;
        if (memcmp(dims, ours, sizeof dims) || (ta[0] == 'T') != s->trans_a || (tb[0] == 'T') != s->trans_b ||
            fabs(alpha - s->alpha) > 1e-6 * fabs(alpha) || want_beta != s->beta || (has_bias && beta != 0)) {
            snprintf(why, size,
                     "gemm %s: plan %s%s m %ld n %ld k %ld ld %ld/%ld/%ld alpha %g beta %g%s, pass %s%s %ld %ld %ld "
                     "ld %ld/%ld/%ld alpha %g beta %g",
                     f->name, ta, tb, dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], alpha, beta,
                     has_bias ? " + bias" : "", s->trans_a ? "T" : "N", s->trans_b ? "T" : "N", s->m, s->n, s->k,
                     s->lda, s->ldb, s->ldc, s->alpha, s->beta);
            return 0;
        }
        if (has_bias) {
            planned(L, -1, "bias", "bias_offset", theirs, sizeof theirs);
            where(p, s->bias, mine, sizeof mine);
            int want_none = !model_has(p->model, theirs);
            if (!f->fill_rows_ok || (want_none ? strcmp(mine, "(none)") != 0 : strcmp(mine, theirs) != 0)) {
                snprintf(why, size, "gemm %s: bias %s in the plan, %s in the pass (bias rows step %s)", f->name,
                         theirs, mine, f->fill_rows_ok ? "ok" : "missing");
                return 0;
            }
        }
        return 1;
    }
    if (!strcmp(op, "copy") || !strcmp(op, "axpy")) {
        planned(L, -1, "src", "src_offset", theirs, sizeof theirs);
        where(p, s->src, mine, sizeof mine);
        char dst_theirs[128], dst_mine[128];
        planned(L, -1, "dst", "dst_offset", dst_theirs, sizeof dst_theirs);
        where(p, s->dst, dst_mine, sizeof dst_mine);
        long count = (long)field_number(L, -1, "count", -1);
        if (strcmp(theirs, mine) || strcmp(dst_theirs, dst_mine) || count != s->count ||
            (!strcmp(op, "axpy") && field_number(L, -1, "alpha", 0) != 1)) {
            snprintf(why, size, "%s: plan %s -> %s (%ld), pass %s -> %s (%ld)", op, theirs, dst_theirs, count, mine,
                     dst_mine, s->count);
            return 0;
        }
        return 1;
    }
    if (!strcmp(op, "bias_grad")) {
        field_string(L, -1, "what", text, sizeof text);
        planned(L, -1, "src", "src_offset", theirs, sizeof theirs);
        where(p, s->src, mine, sizeof mine);
        char dst_theirs[128], dst_mine[128];
        planned(L, -1, "dst", "dst_offset", dst_theirs, sizeof dst_theirs);
        where(p, s->dst, dst_mine, sizeof dst_mine);
        long m = (long)field_number(L, -1, "m", -1), n = (long)field_number(L, -1, "n", -1);
        long ld = (long)field_number(L, -1, "ld", -1);
        if (strcmp(text, f->name) || strcmp(theirs, mine) || strcmp(dst_theirs, dst_mine) || m != s->m ||
            n != s->n || ld != s->lda) {
            snprintf(why, size, "bias_grad: plan %s %s -> %s (%ldx%ld ld %ld), pass %s %s -> %s (%ldx%ld ld %ld)", text,
                     theirs, dst_theirs, m, n, ld, f->name, mine, dst_mine, s->m, s->n, s->lda);
            return 0;
        }
        return 1;
    }
    snprintf(why, size, "unknown plan op %s", op);
    return 0;
}

/* The number of parameters of kernel `name` as defined in source (`__global__ ... name(...)`),
   or -1 when it is not defined there. */
static int source_param_count(const char *source, const char *name) {
    size_t n = strlen(name);
    for (const char *at = strstr(source, name); at; at = strstr(at + 1, name)) {
        if (at == source || at[-1] != ' ' || at[n] != '(') continue;
        const char *line = at;
        while (line > source && line[-1] != '\n') line--;
        const char *global = strstr(line, "__global__");
        if (!global || global > at) continue;
        int depth = 0, count = 1, empty = 1;
        for (const char *c = at + n; *c; c++) {
            if (*c == '(') depth++;
            else if (*c == ')' && --depth == 0) return empty ? 0 : count;
            else if (*c == ',' && depth == 1) count++;
            else if (!isspace((unsigned char)*c)) empty = 0;
        }
        return -1;
    }
    return -1;
}

/* Every launch of a trace passes as many arguments as its kernel has parameters. */
static int check_argument_counts(const poa_cuda_vit_pass *p, const char *set, const char *glue, char *why,
                                 size_t size) {
    for (int i = 0; i < p->step_count; i++) {
        const poa_cuda_step *s = &p->steps[i];
        const char *kernel = s->name, *source = glue;
        switch (s->kind) {
        case POA_CUDA_STEP_KERNEL: source = set; break;
        case POA_CUDA_STEP_GLUE: break;
        case POA_CUDA_STEP_COPY: kernel = "poa_glue_copy"; break;
        case POA_CUDA_STEP_AXPY: kernel = "poa_glue_add"; break;
        case POA_CUDA_STEP_BIAS_GRAD: kernel = "poa_glue_column_sum_accumulate"; break;
        default: continue;
        }
        int want = source_param_count(source, kernel);
        if (want != s->arg_count) {
            snprintf(why, size, "step %d: %s gets %d arguments, its definition has %d parameters", i, kernel,
                     s->arg_count, want);
            return 0;
        }
    }
    return 1;
}

static void check_trace(lua_State *L, const char *recipe_path, int width, int depth, long batch, int image,
                        int masked) {
    char label[256], why[2048] = "";
    snprintf(label, sizeof label, "traced pass %s %dx%d batch %ld at %d px%s: launches, operands and order equal gen/plan.lua's",
             recipe_path, width, depth, batch, image, masked ? " (mask, stochastic depth)" : "");
    poa_recipe r;
    poa_vit m;
    poa_error e = { { 0 } };
    char *set = NULL, *glue = NULL;
    if (poa_recipe_load(L, recipe_path, &r, &e) || poa_vit_init(&m, &r.vit, &e)) {
        CHECK(label, 0, "%s", e.message);
        return;
    }
    poa_cuda_vit_pass p;
    if (poa_cuda_vit_sources(recipe_path, width, &set, &glue, NULL, 0, &e) ||
        poa_cuda_vit_pass_init(&p, NULL, NULL, &m, width, depth, batch, image, set, glue, &e)) {
        CHECK(label, 0, "%s", e.message);
        free(set), free(glue);
        poa_vit_free(&m);
        return;
    }
    /* trace mode reads no host data: the arguments only say whether mask and drop exist */
    static const float fake_float[1];
    static const unsigned char fake_mask[1];
    int rc = poa_cuda_vit_forward(&p, fake_float, masked ? fake_mask : NULL, masked ? fake_float : NULL, &e);
    if (!rc) rc = poa_cuda_vit_backward(&p, fake_float, &e);
    if (rc) {
        CHECK(label, 0, "%s", e.message);
        goto done;
    }
    /* every launched kernel is in the table; each op launches its table kernels in order; all
       table kernels are used */
    int used[POA_CUDA_VIT_MAX_KERNELS] = { 0 }, problems = 0;
    flat_step *flat = malloc(sizeof *flat * (size_t)(p.step_count + 1));
    int n = flatten(&p, flat, p.step_count + 1, why, sizeof why);
    if (n < 0) problems++;
    for (int i = 0; i < n; i++) {
        if (strcmp(flat[i].op, "kernel") || flat[i].kernel_count == 0) continue;
        char want[8][64];
        int want_count = 0;
        for (int t = 0; t < p.kernel_count; t++)
            if (op_of(p.kernels[t].name) && !strcmp(op_of(p.kernels[t].name), flat[i].name)) {
                if (!strcmp(p.kernels[t].name, "residual_backward_dgamma") && m.blocks[0].ls1 < 0) continue;
                snprintf(want[want_count++], 64, "%s", p.kernels[t].name);
            }
        int same = want_count == flat[i].kernel_count;
        for (int k = 0; same && k < want_count; k++) same = !strcmp(want[k], flat[i].kernels[k]);
        if (!same && problems++ == 0)
            snprintf(why, sizeof why, "op %s launches %d kernels (first %s), the table has %d", flat[i].name,
                     flat[i].kernel_count, flat[i].kernels[0], want_count);
        for (int k = 0; k < flat[i].kernel_count; k++) {
            int t = 0;
            while (t < p.kernel_count && strcmp(p.kernels[t].name, flat[i].kernels[k])) t++;
            if (t == p.kernel_count) {
                if (problems++ == 0) snprintf(why, sizeof why, "%s is not in the table", flat[i].kernels[k]);
            } else {
                used[t] = 1;
            }
        }
    }
    if (problems == 0 && !check_argument_counts(&p, set, glue, why, sizeof why)) problems++;
    for (int t = 0; t < p.kernel_count; t++)
        if (!used[t] && problems++ == 0)
            snprintf(why, sizeof why, "table kernel %s is never launched", p.kernels[t].name);
    /* the plan */
    char script[512];
    snprintf(script, sizeof script,
             "local r = require('gen.recipe').load('%s') "
             "return require('gen.plan').vit_pass(r.model, %d, %d, %ld, %ld, %ld).steps",
             recipe_path, width, depth, batch, p.tokens, p.patches);
    int compared = 0, planned_count = 0;
    if (luaL_dostring(L, script) != LUA_OK) {
        if (problems++ == 0) snprintf(why, sizeof why, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
    } else {
        planned_count = (int)luaL_len(L, -1);
        int at = 0;
        for (int i = 1; i <= planned_count && problems == 0; i++) {
            lua_rawgeti(L, -1, i);
            char op[32], dst[128];
            field_string(L, -1, "op", op, sizeof op);
            /* the plan lists bias gradients of biases the model may not have */
            if (!strcmp(op, "bias_grad") && field_string(L, -1, "dst", dst, sizeof dst) && !model_has(&m, dst)) {
                lua_pop(L, 1);
                continue;
            }
            if (at >= n) {
                problems++;
                snprintf(why, sizeof why, "the pass ends before plan step %d (%s)", i, op);
            } else if (!same_step(L, &p, &flat[at], why, sizeof why)) {
                problems++;
                char copy[1536];
                snprintf(copy, sizeof copy, "%s", why);
                snprintf(why, sizeof why, "plan step %d: %s", i, copy);
            } else {
                compared++;
            }
            at++;
            lua_pop(L, 1);
        }
        if (problems == 0 && at != n) {
            problems++;
            snprintf(why, sizeof why, "the pass has %d steps after the plan's last", n - at);
        }
        lua_pop(L, 1);
    }
    printf("  %dx%d at %d px: %d trace steps, %d plan steps, %d compared\n", width, depth, image, p.step_count,
           planned_count, compared);
    CHECK(label, problems == 0 && compared > 0, "%s", why);
    free(flat);
done:
    poa_cuda_vit_pass_free(&p);
    free(set), free(glue);
    poa_vit_free(&m);
}

/* The launch geometry a pass takes from its table, for 96x4, batch 2 at 32 px (17 tokens). */
static void check_geometry(void) {
    const char *label = "launch geometry from the w96 table: layernorm, gelu, dpos column sums, attention";
    poa_recipe r;
    poa_vit m;
    poa_error e = { { 0 } };
    char *set = NULL;
    poa_cuda_vit_pass p;
    test_load_model(TINY, &r, &m);
    if (poa_cuda_vit_sources(TINY, 96, &set, NULL, NULL, 0, &e) ||
        poa_cuda_vit_pass_init(&p, NULL, NULL, &m, 96, 4, 2, 32, set, "", &e)) {
        CHECK(label, 0, "%s", e.message);
    } else {
        const struct { const char *name; unsigned grid[3], block[3]; } want[] = {
            { "layernorm_forward", { 34, 1, 1 }, { 96, 1, 1 } },
            { "gelu_forward", { 34, 1, 1 }, { 256, 1, 1 } },
            { "tokens_backward_dpos", { 3, 17, 1 }, { 32, 8, 1 } },
            { "attention_forward", { 5, 3, 2 }, { 128, 1, 1 } },
            { "attention_backward_dkv", { 5, 3, 2 }, { 128, 1, 1 } },
        };
        int bad = 0;
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
            int t = 0;
            while (t < p.kernel_count && strcmp(p.kernels[t].name, want[i].name)) t++;
            if (t == p.kernel_count || memcmp(p.geometry[t][0], want[i].grid, sizeof want[i].grid) ||
                memcmp(p.geometry[t][1], want[i].block, sizeof want[i].block)) {
                bad++;
                if (t < p.kernel_count)
                    printf("  %s: grid (%u, %u, %u) block (%u, %u, %u)\n", want[i].name, p.geometry[t][0][0],
                           p.geometry[t][0][1], p.geometry[t][0][2], p.geometry[t][1][0], p.geometry[t][1][1],
                           p.geometry[t][1][2]);
            }
        }
        CHECK(label, bad == 0, "%d of %zu wrong", bad, sizeof want / sizeof want[0]);
        poa_cuda_vit_pass_free(&p);
    }
    free(set);
    poa_vit_free(&m);
}

/* ---- the pass emulated on the host ---- */

/* The emulator runs each launch with the CPU backend's kernel of the same op (the generated
   C set of the width, runtime/kernels.h), unpacking the argument array the pass hands to
   cuLaunchKernel by the .cu signatures (the C function's parameters in order, without k). A
   row kernel gets the op's accumulated outputs redirected to scratch and a column-sum kernel
   its written outputs, so each kernel does only its own part; the pair
   attention_backward_dq/_dkv runs the CPU attention_backward once (at _dq). GEMMs evaluate
   the column-major call cuBLASLt would get, by plain loops. Glue kernels: plain loops. */
typedef struct emulator_state {
    const char *set;                 /* the kernel set's source: signatures and table */
    poa_cuda_kernel_entry *table;
    int table_count;
    poa_cuda_dims dims;              /* width, heads, head_dim, hidden */
    long geometry_checked;
    const poa_vit_kernels *k;
    poa_vit_kernels reference;
    float *scratch;
    long scratch_count;
    long launches, gemms;
} emulator_state;

/* The pass's kernels from their .cu text (tests/c/cuda_host_run.h), each launch checked against
   its C twin (vit_twin); unused without a host C++ compiler. */
static host_runner from_cu_runner = { .recipe = TINY };
static int from_cu;

static int vit_twin(void *context, const char *module, const char *name, const unsigned grid[3],
                    const unsigned block[3], void **args, poa_error *e) {
    emulator_state *st = context;
    (void)module, (void)grid, (void)block;
    return emulate_vit_kernel(st->k, st->scratch, st->scratch_count, name, args, e);
}

static int run_kernel(emulator_state *st, const char *module, const char *name, const unsigned grid[3],
                      const unsigned block[3], void **args, poa_error *e) {
    if (!from_cu) return vit_twin(st, module, name, grid, block, args, e);
    from_cu_runner.twin = vit_twin, from_cu_runner.twin_context = st;
    return host_runner_launch(&from_cu_runner, module, name, grid, block, args, e);
}


/* The launch geometry of a generated kernel, evaluated again from its table entry with rows,
   batch, tokens and patches bound to the values of its own arguments of those names (T =
   patches + 1 where the kernel has no tokens argument), must be what the pass launched with
   (which bound them to the pass's shape). */
static int check_launch_geometry(emulator_state *st, const char *name, const unsigned grid[3],
                                 const unsigned block[3], void **args, poa_error *e) {
    int t = 0;
    while (t < st->table_count && strcmp(st->table[t].name, name)) t++;
    if (t == st->table_count) return poa_fail(e, "emulator: %s is not in the table", name);
    /* the parameter list of the definition */
    const char *at = NULL;
    size_t n = strlen(name);
    for (const char *c = strstr(st->set, name); c && !at; c = strstr(c + 1, name))
        if (c > st->set && c[-1] == ' ' && c[n] == '(') at = c + n + 1;
    if (!at) return poa_fail(e, "emulator: no definition of %s", name);
    poa_cuda_dims d = st->dims;
    d.rows = d.batch = d.tokens = d.patches = -1000000; /* an expression using an unbound name fails below */
    int has_tokens = 0;
    for (int i = 0; *at && *at != ')'; i++) {
        const char *end = at;
        while (*end && *end != ',' && *end != ')') end++;
        const char *word = end;
        while (word > at && (isalnum((unsigned char)word[-1]) || word[-1] == '_')) word--;
        int is_long = strncmp(at + strspn(at, " \n"), "long ", 5) == 0;
        if (is_long) {
            size_t len = (size_t)(end - word);
            long v = num(args, i);
            if (len == 4 && !strncmp(word, "rows", 4)) d.rows = v;
            if (len == 5 && !strncmp(word, "batch", 5)) d.batch = v;
            if (len == 6 && !strncmp(word, "tokens", 6)) d.tokens = v, has_tokens = 1;
            if (len == 7 && !strncmp(word, "patches", 7)) d.patches = v;
        }
        at = *end == ',' ? end + 1 : end;
    }
    if (!has_tokens && d.patches > 0) d.tokens = d.patches + 1;
    for (int g = 0; g < 2; g++)
        for (int k = 0; k < 3; k++) {
            long v;
            if (poa_cuda_eval(g ? st->table[t].block[k] : st->table[t].grid[k], &d, &v, e)) return -1;
            unsigned launched = g ? block[k] : grid[k];
            if (v != (long)launched)
                return poa_fail(e, "emulator: %s launched with %s %c = %u, its arguments give %ld", name,
                                g ? "block" : "grid", "xyz"[k], launched, v);
        }
    st->geometry_checked++;
    return 0;
}

static int emulate_launch(void *context, const char *module, const char *name, const unsigned grid[3],
                          const unsigned block[3], void **args, poa_error *e) {
    emulator_state *st = context;
    char set[80];
    snprintf(set, sizeof set, "vit_w%ld_h%ld_f%ld.cu", st->dims.width, st->dims.head_dim, st->dims.hidden);
    /* the fused kernels of this set: residual_layernorm_{forward,backward}_<set>[_dw_db|_dgamma] */
    char suffix[64];
    snprintf(suffix, sizeof suffix, "_w%ld_h%ld_f%ld", st->dims.width, st->dims.head_dim, st->dims.hidden);
    const char *at = strstr(name, suffix);
    int is_fused = !strncmp(name, "residual_layernorm_", 19) && at;
    if (strcmp(module, is_fused ? "vit_fused.cu" : strncmp(name, "poa_glue_", 9) ? set : "vit_glue.cu"))
        return poa_fail(e, "emulator: %s launched from module %s", name, module);
    if (is_fused) { /* a block of WIDTH threads per row, or (32, 8) per 32 columns, as the table says */
        int forward = !strncmp(name, "residual_layernorm_forward_", 27), columns = at[strlen(suffix)] != 0;
        long rows = forward ? num(args, 9) * num(args, 10) : num(args, 13) * num(args, 14);
        unsigned want_grid = columns ? (unsigned)((st->dims.width + 31) / 32) : (unsigned)rows;
        unsigned want_block[2] = { columns ? 32u : (unsigned)st->dims.width, columns ? 8u : 1u };
        if (grid[0] != want_grid || grid[1] != 1 || block[0] != want_block[0] || block[1] != want_block[1])
            return poa_fail(e, "emulator: %s launched with grid %u block (%u, %u)", name, grid[0], block[0], block[1]);
        st->launches++, st->geometry_checked++;
        return run_kernel(st, module, name, grid, block, args, e);
    }
    st->launches++;
    if (strncmp(name, "poa_glue_", 9) && check_launch_geometry(st, name, grid, block, args, e)) return -1;
    if (!strncmp(name, "poa_glue_", 9)) {
        if (check_glue_geometry(name, grid, block, args, e)) return -1;
        st->geometry_checked++;
    }
    return run_kernel(st, module, name, grid, block, args, e);
}

static int emulate_gemm(void *context, const poa_cublaslt_call *call, poa_error *e) {
    emulator_state *st = context;
    st->gemms++;
    return colmajor_matmul(call, e);
}

/* One emulated pass: forward and backward, output into out, gradients accumulated. */
static int emulated_pass(const poa_vit *m, const char *recipe, int width, int depth, long batch, int image,
                         int bf16, int fused, const float *params, const float *images, const unsigned char *mask,
                         const float *drop, const float *dout, float *out, float *grads, long *launches,
                         float **arena, poa_error *e) {
    char *set = NULL;
    emulator_state st = { 0 };
    const int hidden = width * m->config.mlp_ratio;
    st.k = poa_vit_kernels_find(width, m->config.head_dim, hidden);
    if (!st.k) {
        poa_vit_kernels_reference(&st.reference, width, m->config.head_dim, hidden);
        st.k = &st.reference;
    }
    const long tokens = (long)(image / m->config.patch_size) * (image / m->config.patch_size) + 1;
    st.scratch_count = 4 * (batch * tokens * 3 * (long)hidden + tokens * m->config.max_width + 64);
    st.scratch = calloc((size_t)st.scratch_count, sizeof(float));
    poa_cuda_emulator em = { .context = &st, .launch = emulate_launch, .gemm = emulate_gemm,
                             .alloc = from_cu ? host_runner_alloc : NULL, .release = from_cu ? host_runner_release : NULL };
    poa_cuda_vit_pass p;
    int rc = st.scratch ? 0 : poa_fail(e, "out of memory");
    if (!rc) rc = poa_cuda_vit_sources(recipe, width, &set, NULL, NULL, 0, e);
    if (!rc) rc = poa_cuda_kernel_table(set, &st.table, &st.table_count, e);
    st.set = set;
    st.dims = (poa_cuda_dims){ .width = width, .heads = width / m->config.head_dim,
                               .head_dim = m->config.head_dim, .hidden = hidden };
    if (!rc) rc = poa_cuda_vit_pass_init_emulated(&p, &em, m, width, depth, batch, image, set, e);
    char *fused_source = NULL;
    if (!rc && ((bf16 && poa_cuda_vit_pass_use_bf16(&p, e)) ||
                (fused && (poa_cuda_vit_fused_source(recipe, &fused_source, e) ||
                           poa_cuda_vit_pass_use_fused(&p, fused_source, e))) ||
                poa_cuda_vit_pass_plan_gemms(&p, e))) {
        poa_cuda_vit_pass_free(&p);
        rc = -1;
    }
    free(fused_source);
    if (!rc) {
        rc = poa_cuda_vit_upload_parameters(&p, params, e) || poa_cuda_vit_upload_gradients(&p, grads, e) ||
             poa_cuda_vit_forward(&p, images, mask, drop, e) || poa_cuda_vit_download_output(&p, out, e) ||
             poa_cuda_vit_backward(&p, dout, e) || poa_cuda_vit_download_gradients(&p, grads, e)
                 ? -1 : 0;
        if (!rc && arena) {
            *arena = malloc(sizeof(float) * (size_t)p.arena_count);
            rc = !*arena || poa_cuda_vit_download_arena(&p, *arena, e) ? -1 : 0;
        }
        poa_cuda_vit_pass_free(&p);
    }
    free(st.scratch);
    free(st.table);
    free(set);
    if (launches) *launches += st.geometry_checked;
    return rc;
}

/* ---- on a GPU ---- */

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

/* One GPU pass: forward and backward of a batch, output into out, gradients accumulated on
   the device; the arena after both into *arena (malloc'd) when arena is not NULL. */
static int gpu_pass(poa_cuda *cuda, poa_cublaslt *lt, const poa_vit *m, const char *recipe, int width,
                    int depth, long batch, int image, int bf16, int fused, const float *params, const float *images,
                    const unsigned char *mask, const float *drop, const float *dout, float *out,
                    float *grads, float **arena, poa_error *e) {
    char *set = NULL, *glue = NULL;
    poa_cuda_vit_pass p;
    if (poa_cuda_vit_sources(recipe, width, &set, &glue, NULL, 0, e)) return -1;
    int rc = poa_cuda_vit_pass_init(&p, cuda, lt, m, width, depth, batch, image, set, glue, e);
    free(set), free(glue);
    if (rc) return -1;
    char *fused_source = NULL;
    if ((bf16 && poa_cuda_vit_pass_use_bf16(&p, e)) ||
        (fused && (poa_cuda_vit_fused_source(recipe, &fused_source, e) ||
                   poa_cuda_vit_pass_use_fused(&p, fused_source, e))) ||
        poa_cuda_vit_pass_plan_gemms(&p, e)) {
        free(fused_source);
        poa_cuda_vit_pass_free(&p);
        return -1;
    }
    free(fused_source);
    const long planned = lt->heuristic_calls;
    rc = poa_cuda_vit_upload_parameters(&p, params, e) || poa_cuda_vit_upload_gradients(&p, grads, e) ||
         poa_cuda_vit_forward(&p, images, mask, drop, e) || poa_cuda_vit_download_output(&p, out, e) ||
         poa_cuda_vit_backward(&p, dout, e) || poa_cuda_vit_download_gradients(&p, grads, e);
    if (!rc && arena) {
        *arena = malloc(sizeof(float) * (size_t)p.arena_count);
        rc = !*arena || poa_cuda_vit_download_arena(&p, *arena, e);
    }
    if (!rc && lt->heuristic_calls != planned)
        rc = poa_fail(e, "%ld GEMM shapes were planned during the pass, none were expected after "
                         "poa_cuda_vit_pass_plan_gemms", lt->heuristic_calls - planned);
    poa_cuda_vit_pass_free(&p);
    return rc ? -1 : 0;
}

/* Where a pass runs: on the GPU (cuda non-NULL) or emulated on the host. */
typedef struct runner {
    const char *prefix; /* "gpu", "emulated", "gpu bf16", "emulated bf16" */
    poa_cuda *cuda;
    poa_cublaslt *lt;
    int bf16;           /* the pass in bf16 (poa_cuda_vit_pass_use_bf16) */
    int fused;          /* residual + LayerNorm fused (poa_cuda_vit_pass_use_fused) */
    long launches;
} runner;

static int run_pass(runner *r, const poa_vit *m, const char *recipe, int width, int depth, long batch, int image,
                    const float *params, const float *images, const unsigned char *mask, const float *drop,
                    const float *dout, float *out, float *grads, float **arena, poa_error *e) {
    if (r->cuda)
        return gpu_pass(r->cuda, r->lt, m, recipe, width, depth, batch, image, r->bf16, r->fused, params, images, mask, drop,
                        dout, out, grads, arena, e);
    return emulated_pass(m, recipe, width, depth, batch, image, r->bf16, r->fused, params, images, mask, drop, dout, out,
                         grads, &r->launches, arena, e);
}

static void check_golden(runner *r, const poa_vit *m, const float *params, const char *name) {
    char path[256], label[256];
    snprintf(path, sizeof path, FIXTURES "vit_%s.safetensors", name);
    poa_safetensors f;
    open_fixture(&f, path);
    int width = atoi(poa_safetensors_metadata(&f, "width"));
    int depth = atoi(poa_safetensors_metadata(&f, "depth"));
    long long n;
    const char *batches[2] = { "global", "local" };
    const long sizes[2][2] = { { 2, 32 }, { 3, 16 } };
    const poa_tensor_info *mask_info = poa_safetensors_find(&f, "input.mask");
    const unsigned char *mask = f.data + mask_info->offset;
    float *grads = calloc((size_t)m->parameter_count, sizeof(float));
    poa_error e = { { 0 } };
    int failed = 0;
    for (int i = 0; i < 2 && !failed; i++) {
        char key[64];
        snprintf(key, sizeof key, "input.%s", batches[i]);
        real *images = read_tensor(&f, key, &n);
        snprintf(key, sizeof key, "droppath.%s", batches[i]);
        real *drop = read_tensor(&f, key, &n);
        snprintf(key, sizeof key, "dout.%s", batches[i]);
        real *dout = read_tensor(&f, key, &n);
        snprintf(key, sizeof key, "out.%s", batches[i]);
        real *want = read_tensor(&f, key, &n);
        float *out = malloc(sizeof(float) * (size_t)n);
        snprintf(label, sizeof label, "%s: golden %s %dx%d %s output within 1e-4", r->prefix, name, width, depth,
                 batches[i]);
        if (run_pass(r, m, TINY, width, depth, sizes[i][0], (int)sizes[i][1], params, images,
                     i == 0 ? mask : NULL, drop, dout, out, grads, NULL, &e)) {
            CHECK(label, 0, "%s", e.message);
            failed = 1;
        } else {
            double err = relative_error(out, want, n);
            CHECK(label, n == sizes[i][0] * (sizes[i][1] / 8 * sizes[i][1] / 8 + 1) * width && err <= TOLERANCE,
                  "relative error %.3g", err);
        }
        free(images), free(drop), free(dout), free(want), free(out);
    }
    if (!failed) {
        int bad = 0;
        double worst = 0;
        for (int i = 0; i < m->tensor_count; i++) {
            char grad_name[96];
            snprintf(grad_name, sizeof grad_name, "grad.%s", m->tensors[i].name);
            real *want = read_tensor(&f, grad_name, &n);
            double err = n == m->tensors[i].count ? relative_error(grads + m->tensors[i].offset, want, n) : INFINITY;
            if (err > TOLERANCE) {
                bad++;
                printf("  %s %s: relative error %.3g\n", name, grad_name, err);
            }
            worst = fmax(worst, err);
            free(want);
        }
        snprintf(label, sizeof label, "%s: golden %s %dx%d gradients of all %d parameters within 1e-4", r->prefix,
                 name, width, depth, m->tensor_count);
        CHECK(label, bad == 0, "%d tensors off, worst %.3g", bad, worst);
    }
    free(grads);
    poa_safetensors_close(&f);
}

/* The GPU against the CPU backend on the same random parameters and inputs. */
static void check_against_cpu(runner *r, const poa_vit *m, int width, int depth, long batch, int image,
                              int masked) {
    char label[256];
    const double tolerance = r->bf16 ? BF16_TOLERANCE : TOLERANCE;
    const double gradient_tolerance = r->bf16 ? BF16_GRADIENT_TOLERANCE : TOLERANCE;
    snprintf(label, sizeof label, "%s: %dx%d batch %ld at %d px%s: output within %g and gradients within %g of the CPU backend's",
             r->prefix, width, depth, batch, image, masked ? " (mask, stochastic depth)" : "", tolerance,
             gradient_tolerance);
    poa_error e = { { 0 } };
    poa_vit_pass cpu;
    if (poa_vit_pass_init(&cpu, m, width, depth, batch, image, &e)) {
        CHECK(label, 0, "%s", e.message);
        return;
    }
    const long count = m->parameter_count, pixels = batch * m->config.in_channels * image * image;
    const long out_count = cpu.rows * width;
    float *params = malloc(sizeof(float) * (size_t)count), *images = malloc(sizeof(float) * (size_t)pixels);
    float *dout = malloc(sizeof(float) * (size_t)out_count), *out = malloc(sizeof(float) * (size_t)out_count);
    float *drop = malloc(sizeof(float) * (size_t)(2 * depth * batch));
    float *cpu_grads = calloc((size_t)count, sizeof(float)), *gpu_grads = calloc((size_t)count, sizeof(float));
    unsigned char *mask = malloc((size_t)(batch * cpu.patches));
    test_random_parameters(m, params, 11);
    test_fill_normal(images, pixels, 0, 1, 12, 1);
    test_fill_normal(dout, out_count, 0, 1, 12, 2);
    for (long i = 0; i < 2 * depth * batch; i++) drop[i] = (i % 3 == 1) ? 0.0f : 1.25f;
    for (long i = 0; i < batch * cpu.patches; i++) mask[i] = (unsigned char)(i % 5 == 2);
    poa_vit_forward(&cpu, params, images, masked ? mask : NULL, masked ? drop : NULL);
    poa_vit_backward(&cpu, params, cpu_grads, dout);
    float *arena = NULL;
    if (run_pass(r, m, TINY, width, depth, batch, image, params, images, masked ? mask : NULL,
                 masked ? drop : NULL, dout, out, gpu_grads, &arena, &e)) {
        CHECK(label, 0, "%s", e.message);
    } else {
        /* every buffer of the arena after forward and backward, against the CPU pass's (the
           same layout): on a GPU a diagnostic that says where a mismatch starts, emulated a
           check. Not the grad.* buffers: on the CPU that region holds the backward program's
           own cotangents, laid out by liveness (gen/backward.lua), not the GPU pass's scratch;
           the parameter gradients are compared below. */
        int n = poa_vit_pass_buffers(&cpu, NULL, 0), off = 0;
        poa_vit_buffer *buffers = malloc(sizeof *buffers * (size_t)n);
        poa_vit_pass_buffers(&cpu, buffers, n);
        char first[128] = "";
        for (int i = 0; i < n; i++) {
            if (strncmp(buffers[i].name, "grad.", 5) == 0) continue;
            double err = (r->bf16 ? norm_error : relative_error_f)(arena + buffers[i].offset,
                                                                   cpu.arena + buffers[i].offset, buffers[i].count);
            if (err > gradient_tolerance) {
                if (off++ < 8) printf("  %s arena buffer %s: relative error %.3g\n", r->prefix, buffers[i].name, err);
                if (!first[0]) snprintf(first, sizeof first, "%s", buffers[i].name);
            }
        }
        if (!r->cuda) {
            char arena_label[300];
            snprintf(arena_label, sizeof arena_label, "%s: %dx%d batch %ld at %d px: every activation buffer of the arena within %g of the CPU pass's",
                     r->prefix, width, depth, batch, image, gradient_tolerance);
            CHECK(arena_label, off == 0, "%d buffers differ, first %s", off, first);
        } else {
            printf("  %s: %d arena buffers differ from the CPU pass's%s%s\n", r->prefix, off, off ? ", first " : "", first);
        }
        free(buffers);
        free(arena);
        double (*error_of)(const float *, const float *, long) = r->bf16 ? norm_error : relative_error_f;
        double out_err = error_of(out, poa_vit_output(&cpu), out_count);
        double max_out = relative_error(out, poa_vit_output(&cpu), out_count), max_grad = 0;
        int bad = 0;
        double worst = 0;
        const char *worst_name = "";
        for (int i = 0; i < m->tensor_count; i++) {
            const poa_vit_tensor *t = &m->tensors[i];
            double err = error_of(gpu_grads + t->offset, cpu_grads + t->offset, t->count);
            max_grad = fmax(max_grad, relative_error(gpu_grads + t->offset, cpu_grads + t->offset, t->count));
            if (err > gradient_tolerance) bad++;
            if (err > worst) worst = err, worst_name = t->name;
        }
        if (r->bf16)
            printf("  %s %dx%d at %d px: norm-relative error: output %.3g, worst gradient %s %.3g; "
                   "max|diff|/max|ref|: output %.3g, worst gradient %.3g\n",
                   r->prefix, width, depth, image, out_err, worst_name, worst, max_out, max_grad);
        /* bf16 operands must show: an fp32-exact result would mean the bf16 path did not run */
        CHECK(label, out_err <= tolerance && bad == 0 && (!r->bf16 || out_err > 1e-5),
              "output %.3g, %d gradients off, worst %s %.3g", out_err, bad, worst_name, worst);
    }
    free(params), free(images), free(dout), free(out), free(drop), free(cpu_grads), free(gpu_grads), free(mask);
    poa_vit_pass_free(&cpu);
}

/* The bf16 pass (bf16 GEMM operands, fp32 accumulation and kernels) against the fp32 CPU
   backend, within the 1e-2. */
static void check_bf16(runner *r, const poa_vit *m) {
    check_against_cpu(r, m, 64, 3, 3, 32, 1);
    check_against_cpu(r, m, 96, 4, 2, 16, 0);
}

/* The forward with residual + LayerNorm fused against the CPU backend (fp32, 1e-4; every arena
   buffer too, so the unfused backward reads what it expects). */
static void check_fused(runner *r, const poa_vit *m) {
    check_against_cpu(r, m, 64, 3, 3, 32, 1);
    check_against_cpu(r, m, 96, 4, 2, 16, 0);
}

static const char *const golden_cases[] = { "intact_96x4", "elastic_32x2", "elastic_64x3", "elastic_96x2",
                                             "elastic_32x4" };

static void check_all(runner *r, const poa_vit *m, const float *params) {
    for (int i = 0; i < 5; i++) check_golden(r, m, params, golden_cases[i]);
    check_against_cpu(r, m, 64, 3, 3, 32, 1);
    check_against_cpu(r, m, 64, 3, 3, 16, 0);
    check_against_cpu(r, m, 96, 4, 2, 32, 1);
    check_against_cpu(r, m, 32, 2, 4, 16, 0);
}

/* The same checks with the pass emulated on the host: the GPU code's buffers, arguments,
   GEMM operands (through the transposition trick) and order against PyTorch and the CPU. */
static void check_emulated(void) {
    from_cu = host_runner_available();
    if (!from_cu) CHECK_SKIP("emulated: the pass's kernels run from their .cu text", "no host C++ compiler (g++)");
    poa_recipe recipe;
    poa_vit m;
    poa_error e = { { 0 } };
    test_load_model(TINY, &recipe, &m);
    float *params = malloc(sizeof(float) * (size_t)m.parameter_count);
    if (poa_vit_load_parameters(&m, params, FIXTURES "vit_tiny_params.safetensors", NULL, &e)) {
        CHECK("emulated: golden parameters", 0, "%s", e.message);
    } else {
        runner r = { .prefix = "emulated" };
        check_all(&r, &m, params);
        printf("  emulated: %ld launches had their geometry checked against their own arguments\n", r.launches);
        runner r16 = { .prefix = "emulated bf16", .bf16 = 1 };
        check_bf16(&r16, &m);
        runner fused = { .prefix = "emulated fused" , .fused = 1 };
        check_fused(&fused, &m);
    }
    if (from_cu) {
        double worst = host_runner_report(&from_cu_runner, "emulated pass");
        CHECK("emulated: every kernel the pass launched ran from its .cu text within 1e-5 of its C twin on the same "
              "inputs (max |cu - twin| / max(1, max |twin|) per output)", from_cu_runner.error_count > 0 && worst <= 1e-5,
              "worst %.3g over %d kernels", worst, from_cu_runner.error_count);
        cuda_host_close(&from_cu_runner.host);
    }
    free(params);
    poa_vit_free(&m);
}

static void skip_gpu(const char *why) {
    CHECK_SKIP("gpu: cuBLASLt fp32 GEMM NN NT TN TT against poa_gemm", why);
    const char *cases[] = { "intact_96x4", "elastic_32x2", "elastic_64x3", "elastic_96x2", "elastic_32x4" };
    for (int i = 0; i < 5; i++) {
        char label[160];
        snprintf(label, sizeof label, "gpu: golden %s global and local outputs and all gradients within 1e-4", cases[i]);
        CHECK_SKIP(label, why);
    }
    CHECK_SKIP("gpu: 64x3 batch 3 at 32 px (mask, stochastic depth) against the CPU backend", why);
    CHECK_SKIP("gpu: 64x3 batch 3 at 16 px against the CPU backend", why);
    CHECK_SKIP("gpu: 96x4 batch 2 at 32 px (mask, stochastic depth) against the CPU backend", why);
    CHECK_SKIP("gpu: 32x2 batch 4 at 16 px against the CPU backend", why);
    CHECK_SKIP("gpu bf16: 64x3 batch 3 at 32 px (mask, stochastic depth) against the CPU backend (output 1e-2, gradients 2e-2)", why);
    CHECK_SKIP("gpu bf16: 96x4 batch 2 at 16 px against the CPU backend (output 1e-2, gradients 2e-2)", why);
    CHECK_SKIP("gpu fused: 64x3 batch 3 at 32 px (mask, stochastic depth) against the CPU backend", why);
    CHECK_SKIP("gpu fused: 96x4 batch 2 at 16 px against the CPU backend", why);
}

static void check_gpu(void) {
    poa_cuda cuda;
    poa_cublaslt lt;
    poa_error e = { { 0 } };
    int rc = open_gpu_for_tests(&cuda, &lt, &e);
    if (rc == 0) skip_gpu(e.message);
    if (rc <= 0) return;
    check_gpu_gemm(&lt, &cuda);
    poa_recipe recipe;
    poa_vit m;
    test_load_model(TINY, &recipe, &m);
    float *params = malloc(sizeof(float) * (size_t)m.parameter_count);
    if (poa_vit_load_parameters(&m, params, FIXTURES "vit_tiny_params.safetensors", NULL, &e)) {
        CHECK("gpu: golden parameters", 0, "%s", e.message);
    } else {
        runner r = { .prefix = "gpu", .cuda = &cuda, .lt = &lt };
        check_all(&r, &m, params);
        runner r16 = { .prefix = "gpu bf16", .cuda = &cuda, .lt = &lt, .bf16 = 1 };
        check_bf16(&r16, &m);
        runner fused = { .prefix = "gpu fused", .cuda = &cuda, .lt = &lt, .fused = 1 };
        check_fused(&fused, &m);
    }
    printf("  cuBLASLt: %ld shapes planned\n", lt.heuristic_calls);
    free(params);
    poa_vit_free(&m);
    poa_cublaslt_free(&lt);
    poa_cuda_close(&cuda);
}

int main(void) {
    poa_error e = { { 0 } };
    check_cublaslt_load();
    check_transposition_trick();
    check_bf16_rounding();
    check_epilogues();
    check_eval();
    check_glue();
    lua_State *L = poa_lua_open(&e);
    if (!L) {
        printf("FAIL lua: %s\n", e.message);
        return 1;
    }
    const char *families[] = { TINY, "tests/recipes/tiny_train.lua", "recipes/quickstart.lua",
                               "recipes/small_vit.lua", LARGE };
    for (int i = 0; i < 5; i++) check_family(L, families[i]);
    check_trace(L, TINY, 96, 4, 2, 32, 1);
    check_trace(L, TINY, 64, 3, 3, 32, 1);
    check_trace(L, TINY, 32, 2, 3, 16, 0);
    check_trace(L, TINY, 64, 2, 4, 16, 1);
    check_trace(L, LARGE, 384, 12, 2, 224, 1);
    check_trace(L, LARGE, 640, 17, 3, 96, 0);
    lua_close(L);
    check_geometry();
    check_emulated();
    check_gpu();
    CHECK_EXIT();
}
