/* cublaslt.c: cuBLASLt through dlopen (see cublaslt.h). */
#include "cublaslt.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Values and layouts from cublasLt.h / cublas_api.h / library_types.h, spelled here so this
   file also builds without the toolkit; with its headers they are checked against them. */
enum {
    STATUS_SUCCESS = 0,
    COMPUTE_32F = 68,           /* CUBLAS_COMPUTE_32F */
    COMPUTE_32F_FAST_TF32 = 77, /* CUBLAS_COMPUTE_32F_FAST_TF32 */
    R_32F = 0,                  /* CUDA_R_32F */
    R_16BF = 14,                /* CUDA_R_16BF */
    OP_N = 0, OP_T = 1,         /* CUBLAS_OP_N, CUBLAS_OP_T */
    DESC_TRANSA = 3, DESC_TRANSB = 4,  /* CUBLASLT_MATMUL_DESC_TRANSA / _TRANSB */
    DESC_EPILOGUE = 7, DESC_BIAS_POINTER = 8,           /* CUBLASLT_MATMUL_DESC_... */
    DESC_EPILOGUE_AUX_POINTER = 11, DESC_EPILOGUE_AUX_LD = 12, DESC_BIAS_DATA_TYPE = 26,
    PREF_MAX_WORKSPACE_BYTES = 1,      /* CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES */
    PREF_MIN_ALIGNMENT_A_BYTES = 5,    /* ..._B = 6, _C = 7, _D = 8 */
};

typedef struct heuristic_result { /* cublasLtMatmulHeuristicResult_t */
    uint64_t algo[8];
    size_t workspace_size;
    int state;
    float waves_count;
    int reserved[4];
} heuristic_result;

#ifdef POA_HAVE_NVRTC
#include <cublasLt.h>
#define SAME(ours, theirs) _Static_assert((int)(ours) == (int)(theirs), #theirs)
SAME(COMPUTE_32F, CUBLAS_COMPUTE_32F);
SAME(COMPUTE_32F_FAST_TF32, CUBLAS_COMPUTE_32F_FAST_TF32);
SAME(R_32F, CUDA_R_32F);
SAME(R_16BF, CUDA_R_16BF);
SAME(POA_LT_BF16, CUDA_R_16BF);
SAME(DESC_EPILOGUE, CUBLASLT_MATMUL_DESC_EPILOGUE);
SAME(DESC_BIAS_POINTER, CUBLASLT_MATMUL_DESC_BIAS_POINTER);
SAME(DESC_EPILOGUE_AUX_POINTER, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER);
SAME(DESC_EPILOGUE_AUX_LD, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD);
SAME(DESC_BIAS_DATA_TYPE, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE);
SAME(POA_LT_EPILOGUE_NONE, CUBLASLT_EPILOGUE_DEFAULT);
SAME(POA_LT_EPILOGUE_BIAS, CUBLASLT_EPILOGUE_BIAS);
SAME(POA_LT_EPILOGUE_GELU_AUX_BIAS, CUBLASLT_EPILOGUE_GELU_AUX_BIAS);
SAME(POA_LT_EPILOGUE_DGELU, CUBLASLT_EPILOGUE_DGELU);
SAME(POA_LT_EPILOGUE_BGRADB, CUBLASLT_EPILOGUE_BGRADB);
SAME(OP_N, CUBLAS_OP_N);
SAME(OP_T, CUBLAS_OP_T);
SAME(DESC_TRANSA, CUBLASLT_MATMUL_DESC_TRANSA);
SAME(DESC_TRANSB, CUBLASLT_MATMUL_DESC_TRANSB);
SAME(PREF_MAX_WORKSPACE_BYTES, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES);
SAME(PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES);
SAME(PREF_MIN_ALIGNMENT_A_BYTES + 1, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES);
SAME(PREF_MIN_ALIGNMENT_A_BYTES + 2, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES);
SAME(PREF_MIN_ALIGNMENT_A_BYTES + 3, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES);
SAME(STATUS_SUCCESS, CUBLAS_STATUS_SUCCESS);
#undef SAME
_Static_assert(sizeof(heuristic_result) == sizeof(cublasLtMatmulHeuristicResult_t), "heuristic result");
_Static_assert(sizeof(cublasStatus_t) == sizeof(int) && sizeof(cublasComputeType_t) == sizeof(int) &&
                   sizeof(cudaDataType_t) == sizeof(int) && sizeof(cublasOperation_t) == sizeof(int),
               "enums are ints");
#endif

/* ---- loading ---- */

/* Loads one library and resolves every entry point; error names what failed. */
static int open_library(const char *path, poa_cublaslt_api *api, void **handle, char *error, size_t size) {
    void *library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        const char *why = dlerror();
        snprintf(error, size, "%s", why ? why : path);
        return -1;
    }
    struct { void **slot; const char *name; } symbols[] = {
        { (void **)&api->create, "cublasLtCreate" },
        { (void **)&api->destroy, "cublasLtDestroy" },
        { (void **)&api->get_version, "cublasLtGetVersion" },
        { (void **)&api->get_status_name, "cublasLtGetStatusName" },
        { (void **)&api->get_status_string, "cublasLtGetStatusString" },
        { (void **)&api->matmul_desc_create, "cublasLtMatmulDescCreate" },
        { (void **)&api->matmul_desc_destroy, "cublasLtMatmulDescDestroy" },
        { (void **)&api->matmul_desc_set_attribute, "cublasLtMatmulDescSetAttribute" },
        { (void **)&api->matrix_layout_create, "cublasLtMatrixLayoutCreate" },
        { (void **)&api->matrix_layout_destroy, "cublasLtMatrixLayoutDestroy" },
        { (void **)&api->preference_create, "cublasLtMatmulPreferenceCreate" },
        { (void **)&api->preference_destroy, "cublasLtMatmulPreferenceDestroy" },
        { (void **)&api->preference_set_attribute, "cublasLtMatmulPreferenceSetAttribute" },
        { (void **)&api->algo_get_heuristic, "cublasLtMatmulAlgoGetHeuristic" },
        { (void **)&api->matmul, "cublasLtMatmul" },
    };
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        *symbols[i].slot = dlsym(library, symbols[i].name);
        if (!*symbols[i].slot) {
            snprintf(error, size, "%s has no %s", path, symbols[i].name);
            dlclose(library);
            memset(api, 0, sizeof *api);
            return -1;
        }
    }
    *handle = library;
    return 0;
}

int poa_cublaslt_open_library(const char *path, poa_cublaslt_api *api, void **library, poa_error *e) {
    char error[768];
    memset(api, 0, sizeof *api);
    if (open_library(path, api, library, error, sizeof error)) return poa_fail(e, "cannot load cuBLASLt: %s", error);
    return 0;
}

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static poa_cublaslt_api loaded_api;
static int load_status; /* 0 ok, -1 failed */
static char load_name[512], load_error[1024];

static void load_library(void) {
    char candidates[2][512];
    int n = 0;
    const char *env = getenv("POA_LIBCUBLASLT");
    if (env && *env) {
        snprintf(candidates[n++], sizeof candidates[0], "%s", env);
    } else {
        snprintf(candidates[n++], sizeof candidates[0], "libcublasLt.so.13");
        const char *home = getenv("CUDA_HOME");
        snprintf(candidates[n++], sizeof candidates[0], "%s/lib64/libcublasLt.so.13",
                 home && *home ? home : "/usr/local/cuda");
    }
    size_t used = 0;
    load_error[0] = 0;
    load_status = -1;
    for (int i = 0; i < n && load_status; i++) {
        char error[768];
        void *library;
        if (open_library(candidates[i], &loaded_api, &library, error, sizeof error) == 0) {
            memcpy(load_name, candidates[i], sizeof load_name);
            load_status = 0;
        } else if (used < sizeof load_error - 1) {
            int w = snprintf(load_error + used, sizeof load_error - used, "%s%s", used ? "; " : "", error);
            if (w > 0) used += (size_t)w < sizeof load_error - used ? (size_t)w : sizeof load_error - used - 1;
        }
    }
}

int poa_cublaslt_load(const poa_cublaslt_api **api, char *name, size_t name_size, poa_error *e) {
    pthread_once(&load_once, load_library);
    if (load_status) return poa_fail(e, "cannot load cuBLASLt: %s", load_error);
    if (api) *api = &loaded_api;
    if (name && name_size) snprintf(name, name_size, "%s", load_name);
    return 0;
}

/* ---- errors ---- */

static int check(const poa_cublaslt *lt, int status, const char *what, poa_error *e) {
    if (status == STATUS_SUCCESS) return 0;
    const char *name = lt->api->get_status_name ? lt->api->get_status_name(status) : NULL;
    const char *text = lt->api->get_status_string ? lt->api->get_status_string(status) : NULL;
    return poa_fail(e, "%s: %s (%s)", what, name ? name : "cuBLAS status", text ? text : "");
}

/* ---- the handle ---- */

int poa_cublaslt_init(poa_cublaslt *lt, poa_cuda *cuda, size_t workspace_bytes, poa_error *e) {
    memset(lt, 0, sizeof *lt);
    if (poa_cublaslt_load(&lt->api, NULL, 0, e)) return -1;
    if (!cuda || !cuda->context) return poa_fail(e, "no GPU: cuBLASLt needs an open CUDA device");
    lt->cuda = cuda;
    if (check(lt, lt->api->create(&lt->handle), "cublasLtCreate", e)) {
        lt->handle = NULL;
        return -1;
    }
    lt->workspace_bytes = workspace_bytes ? workspace_bytes : (size_t)32 << 20;
    if (poa_cuda_alloc(cuda, &lt->workspace, lt->workspace_bytes, e)) {
        poa_cublaslt_free(lt);
        return -1;
    }
    return 0;
}

struct poa_cublaslt_plan {
    int transpose_a, transpose_b, beta_zero, tf32;
    long m, n, k, lda, ldb, ldc, aux_ld;
    int type_a, type_b, type_c, epilogue;
    unsigned align_a, align_b, align_c, align_bias, align_aux;
    void *desc, *layout_a, *layout_b, *layout_c; /* cuBLASLt's A (our B), B (our A), C = D */
    heuristic_result choice;
};

static void plan_release(const poa_cublaslt_api *api, poa_cublaslt_plan *p) {
    if (p->desc) api->matmul_desc_destroy(p->desc);
    if (p->layout_a) api->matrix_layout_destroy(p->layout_a);
    if (p->layout_b) api->matrix_layout_destroy(p->layout_b);
    if (p->layout_c) api->matrix_layout_destroy(p->layout_c);
    p->desc = p->layout_a = p->layout_b = p->layout_c = NULL;
}

void poa_cublaslt_free(poa_cublaslt *lt) {
    if (lt->api) {
        for (int i = 0; i < lt->plan_count; i++) plan_release(lt->api, &lt->plans[i]);
        if (lt->handle) lt->api->destroy(lt->handle);
    }
    free(lt->plans);
    if (lt->workspace && lt->cuda) {
        poa_error ignored;
        poa_cuda_free(lt->cuda, lt->workspace, &ignored);
    }
    memset(lt, 0, sizeof *lt);
}

void poa_cublaslt_colmajor_of(int transpose_a, int transpose_b, long m, long n, long k, long lda,
                              long ldb, long ldc, poa_cublaslt_colmajor *o) {
    memset(o, 0, sizeof *o);
    o->a_is_ours_b = 1;
    o->transa = transpose_b ? OP_T : OP_N;
    o->transb = transpose_a ? OP_T : OP_N;
    o->m = n, o->n = m, o->k = k;
    /* its A = our B as stored: row-major (k x n) is column-major (n x k); row-major (n x k),
       read transposed, is column-major (k x n) */
    o->a_rows = transpose_b ? k : n, o->a_cols = transpose_b ? n : k, o->lda = ldb;
    /* its B = our A: row-major (m x k) is column-major (k x m); transposed (k x m) is (m x k) */
    o->b_rows = transpose_a ? m : k, o->b_cols = transpose_a ? k : m, o->ldb = lda;
    o->c_rows = n, o->c_cols = m, o->ldc = ldc;
}

/* The alignment of a device address in bytes (2 to 256). */
static unsigned alignment_of(CUdeviceptr p) {
    unsigned a = 256;
    while (a > 2 && p % a) a >>= 1;
    return a;
}

/* Whether two plans are the same shape, types, epilogue and alignments. */
static int same_plan(const poa_cublaslt_plan *p, const poa_cublaslt_plan *q) {
    return p->transpose_a == q->transpose_a && p->transpose_b == q->transpose_b &&
           p->beta_zero == q->beta_zero && p->tf32 == q->tf32 && p->m == q->m && p->n == q->n &&
           p->k == q->k && p->lda == q->lda && p->ldb == q->ldb && p->ldc == q->ldc &&
           p->aux_ld == q->aux_ld && p->type_a == q->type_a && p->type_b == q->type_b &&
           p->type_c == q->type_c && p->epilogue == q->epilogue && p->align_a == q->align_a &&
           p->align_b == q->align_b && p->align_c == q->align_c && p->align_bias == q->align_bias &&
           p->align_aux == q->align_aux;
}

/* Sets the per-call pointers of an epilogue on the plan's descriptor. */
static int set_epilogue_pointers(poa_cublaslt *lt, poa_cublaslt_plan *p, CUdeviceptr bias, CUdeviceptr aux,
                                 poa_error *e) {
    const poa_cublaslt_api *api = lt->api;
    int uses_bias = p->epilogue == POA_LT_EPILOGUE_BIAS || p->epilogue == POA_LT_EPILOGUE_GELU_AUX_BIAS ||
                    p->epilogue == POA_LT_EPILOGUE_BGRADB;
    int uses_aux = p->epilogue == POA_LT_EPILOGUE_GELU_AUX_BIAS || p->epilogue == POA_LT_EPILOGUE_DGELU;
    void *bias_pointer = (void *)(uintptr_t)bias, *aux_pointer = (void *)(uintptr_t)aux;
    if (uses_bias && check(lt, api->matmul_desc_set_attribute(p->desc, DESC_BIAS_POINTER, &bias_pointer,
                                                              sizeof bias_pointer), "bias pointer", e))
        return -1;
    if (uses_aux && check(lt, api->matmul_desc_set_attribute(p->desc, DESC_EPILOGUE_AUX_POINTER, &aux_pointer,
                                                             sizeof aux_pointer), "epilogue aux pointer", e))
        return -1;
    return 0;
}

static int build_plan(poa_cublaslt *lt, poa_cublaslt_plan *p, CUdeviceptr bias, CUdeviceptr aux, poa_error *e) {
    const poa_cublaslt_api *api = lt->api;
    poa_cublaslt_colmajor c;
    poa_cublaslt_colmajor_of(p->transpose_a, p->transpose_b, p->m, p->n, p->k, p->lda, p->ldb,
                             p->ldc, &c);
    char what[200];
    snprintf(what, sizeof what, "cuBLASLt plan %c%c m %ld n %ld k %ld ld %ld/%ld/%ld types %d/%d/%d epilogue %d",
             p->transpose_a ? 'T' : 'N', p->transpose_b ? 'T' : 'N', p->m, p->n, p->k, p->lda,
             p->ldb, p->ldc, p->type_a, p->type_b, p->type_c, p->epilogue);
    void *pref = NULL;
    int rc = -1;
    int all_f32 = p->type_a == R_32F && p->type_b == R_32F;
    int compute = p->tf32 && all_f32 ? COMPUTE_32F_FAST_TF32 : COMPUTE_32F;
    if (check(lt, api->matmul_desc_create(&p->desc, compute, R_32F), "cublasLtMatmulDescCreate", e))
        goto done;
    int32_t ta = c.transa, tb = c.transb, epilogue = p->epilogue, bias_type = p->type_c;
    int64_t aux_ld = p->aux_ld;
    /* its A = our B, its B = our A */
    if (check(lt, api->matmul_desc_set_attribute(p->desc, DESC_TRANSA, &ta, sizeof ta), "TRANSA", e) ||
        check(lt, api->matmul_desc_set_attribute(p->desc, DESC_TRANSB, &tb, sizeof tb), "TRANSB", e) ||
        check(lt, api->matrix_layout_create(&p->layout_a, p->type_b, (uint64_t)c.a_rows, (uint64_t)c.a_cols, c.lda),
              "layout A", e) ||
        check(lt, api->matrix_layout_create(&p->layout_b, p->type_a, (uint64_t)c.b_rows, (uint64_t)c.b_cols, c.ldb),
              "layout B", e) ||
        check(lt, api->matrix_layout_create(&p->layout_c, p->type_c, (uint64_t)c.c_rows, (uint64_t)c.c_cols, c.ldc),
              "layout C", e) ||
        check(lt, api->preference_create(&pref), "cublasLtMatmulPreferenceCreate", e))
        goto done;
    if (p->epilogue != POA_LT_EPILOGUE_NONE &&
        (check(lt, api->matmul_desc_set_attribute(p->desc, DESC_EPILOGUE, &epilogue, sizeof epilogue), "epilogue", e) ||
         check(lt, api->matmul_desc_set_attribute(p->desc, DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type),
               "bias type", e) ||
         ((p->epilogue == POA_LT_EPILOGUE_GELU_AUX_BIAS || p->epilogue == POA_LT_EPILOGUE_DGELU) &&
          check(lt, api->matmul_desc_set_attribute(p->desc, DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof aux_ld),
                "epilogue aux ld", e)) ||
         set_epilogue_pointers(lt, p, bias, aux, e)))
        goto done;
    uint64_t workspace = lt->workspace_bytes;
    /* its A is our B, its B our A; C and D are the same buffer */
    uint32_t align[4] = { p->align_b, p->align_a, p->align_c, p->align_c };
    if (check(lt, api->preference_set_attribute(pref, PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace),
              "workspace preference", e))
        goto done;
    for (int i = 0; i < 4; i++)
        if (check(lt, api->preference_set_attribute(pref, PREF_MIN_ALIGNMENT_A_BYTES + i, &align[i],
                                                    sizeof align[i]),
                  "alignment preference", e))
            goto done;
    int returned = 0;
    if (check(lt, api->algo_get_heuristic(lt->handle, p->desc, p->layout_a, p->layout_b, p->layout_c,
                                          p->layout_c, pref, 1, &p->choice, &returned),
              what, e))
        goto done;
    if (returned < 1 || p->choice.state != STATUS_SUCCESS) {
        poa_fail(e, "%s: cublasLtMatmulAlgoGetHeuristic found no algorithm (alignments %u/%u/%u)",
                 what, p->align_a, p->align_b, p->align_c);
        goto done;
    }
    lt->heuristic_calls++;
    rc = 0;
done:
    if (pref) api->preference_destroy(pref);
    if (rc) plan_release(api, p);
    return rc;
}

/* The cached plan of a call, built (descriptors, layouts, algorithm) when new. */
static int plan_of(poa_cublaslt *lt, const poa_cublaslt_call *g, poa_cublaslt_plan **out, poa_error *e) {
    if (!lt->handle) return poa_fail(e, "cuBLASLt GEMM: no handle (poa_cublaslt_init failed or not called)");
    long m = g->m, n = g->n, k = g->k;
    if (m <= 0 || n <= 0 || k <= 0) return poa_fail(e, "cuBLASLt GEMM: empty shape m %ld n %ld k %ld", m, n, k);
    if (g->lda < (g->transpose_a ? m : k) || g->ldb < (g->transpose_b ? k : n) || g->ldc < n)
        return poa_fail(e, "cuBLASLt GEMM %c%c m %ld n %ld k %ld: leading dimensions %ld/%ld/%ld too small",
                        g->transpose_a ? 'T' : 'N', g->transpose_b ? 'T' : 'N', m, n, k, g->lda, g->ldb, g->ldc);
    int types[3] = { g->type_a, g->type_b, g->type_c };
    for (int i = 0; i < 3; i++)
        if (types[i] != POA_LT_F32 && types[i] != POA_LT_BF16)
            return poa_fail(e, "cuBLASLt GEMM: operand %c has type %d (POA_LT_F32 or POA_LT_BF16)", "ABC"[i], types[i]);
    int epilogue = g->epilogue ? g->epilogue : POA_LT_EPILOGUE_NONE;
    int needs_bias = epilogue == POA_LT_EPILOGUE_BIAS || epilogue == POA_LT_EPILOGUE_GELU_AUX_BIAS ||
                     epilogue == POA_LT_EPILOGUE_BGRADB;
    int needs_aux = epilogue == POA_LT_EPILOGUE_GELU_AUX_BIAS || epilogue == POA_LT_EPILOGUE_DGELU;
    if (epilogue != POA_LT_EPILOGUE_NONE && !needs_bias && !needs_aux)
        return poa_fail(e, "cuBLASLt GEMM: unknown epilogue %d", epilogue);
    if ((needs_bias && !g->bias) || (needs_aux && (!g->aux || g->aux_ld < n || g->aux_ld % 8)))
        return poa_fail(e, "cuBLASLt GEMM epilogue %d: needs %s", epilogue,
                        needs_bias && !g->bias ? "a bias pointer" : "an aux pointer and an aux ld >= n, a multiple of 8");
    poa_cublaslt_plan key = {
        .transpose_a = !!g->transpose_a, .transpose_b = !!g->transpose_b, .beta_zero = g->beta == 0.0f,
        .tf32 = !!lt->tf32, .m = m, .n = n, .k = k, .lda = g->lda, .ldb = g->ldb, .ldc = g->ldc,
        .aux_ld = needs_aux ? g->aux_ld : 0, .type_a = g->type_a, .type_b = g->type_b, .type_c = g->type_c,
        .epilogue = epilogue, .align_a = alignment_of(g->a), .align_b = alignment_of(g->b),
        .align_c = alignment_of(g->c), .align_bias = needs_bias ? alignment_of(g->bias) : 0,
        .align_aux = needs_aux ? alignment_of(g->aux) : 0,
    };
    poa_cublaslt_plan *p = NULL;
    for (int i = 0; i < lt->plan_count && !p; i++)
        if (same_plan(&lt->plans[i], &key)) p = &lt->plans[i];
    if (!p) {
        if (lt->plan_count == lt->plan_capacity) {
            int capacity = lt->plan_capacity ? 2 * lt->plan_capacity : 64;
            poa_cublaslt_plan *grown = realloc(lt->plans, sizeof *grown * (size_t)capacity);
            if (!grown) return poa_fail(e, "cuBLASLt: out of memory for %d plans", capacity);
            lt->plans = grown, lt->plan_capacity = capacity;
        }
        if (build_plan(lt, &key, g->bias, g->aux, e)) return -1;
        p = &lt->plans[lt->plan_count++];
        *p = key;
    }
    *out = p;
    return 0;
}

int poa_cublaslt_prepare(poa_cublaslt *lt, const poa_cublaslt_call *g, poa_error *e) {
    poa_cublaslt_plan *p;
    return plan_of(lt, g, &p, e);
}

int poa_cublaslt_matmul(poa_cublaslt *lt, const poa_cublaslt_call *g, poa_error *e) {
    poa_cublaslt_plan *p;
    if (plan_of(lt, g, &p, e)) return -1;
    if (p->epilogue != POA_LT_EPILOGUE_NONE && set_epilogue_pointers(lt, p, g->bias, g->aux, e)) return -1;
    /* its A = our B, its B = our A */
    return check(lt, lt->api->matmul(lt->handle, p->desc, &g->alpha, (const void *)(uintptr_t)g->b, p->layout_a,
                                     (const void *)(uintptr_t)g->a, p->layout_b, &g->beta,
                                     (const void *)(uintptr_t)g->c, p->layout_c, (void *)(uintptr_t)g->c,
                                     p->layout_c, p->choice.algo, (void *)(uintptr_t)lt->workspace,
                                     lt->workspace_bytes, lt->cuda->stream),
                 "cublasLtMatmul", e);
}

int poa_cublaslt_gemm(poa_cublaslt *lt, int transpose_a, int transpose_b, long m, long n, long k,
                      float alpha, CUdeviceptr a, long lda, CUdeviceptr b, long ldb, float beta,
                      CUdeviceptr c, long ldc, poa_error *e) {
    poa_cublaslt_call g = { .transpose_a = transpose_a, .transpose_b = transpose_b, .m = m, .n = n, .k = k,
                            .alpha = alpha, .beta = beta, .a = a, .b = b, .c = c, .lda = lda, .ldb = ldb,
                            .ldc = ldc, .type_a = POA_LT_F32, .type_b = POA_LT_F32, .type_c = POA_LT_F32,
                            .epilogue = POA_LT_EPILOGUE_NONE };
    return poa_cublaslt_matmul(lt, &g, e);
}
