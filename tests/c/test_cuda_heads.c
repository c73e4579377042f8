/* test_cuda_heads.c: the projection heads on the GPU (runtime/cuda_heads.c) and their kernels
   (templates/heads_kernels.cu.tmpl, C twins in runtime/heads_kernels.c).

   Everywhere (no GPU needed):
   - The kernel source defines every kernel of poa_heads_kernel_names (test_nvrtc_compile.c
     compiles it, build/gen/cuda/heads_kernels.cu, for sm_80 and sm_90 with an empty log).
   - The C twins refuse a launch geometry their kernel was not written for.
   - The pass emulated on the host (device addresses are host pointers; each launch runs the
     kernel's own .cu text through tests/c/cuda_host_run.h, thread by thread, after its C twin on
     the same inputs (each kernel's worst difference printed, within 1e-5), with the very argument
     array cuLaunchKernel would get; without g++ the C twins alone), each GEMM the
     column-major call cuBLASLt would get, by plain loops in tests/c/cuda_emulator.h), against
     the CPU heads (runtime/head.c) on the same random parameters, inputs and dlogits, for the
     intact width (96) and an elastic width (64) of 2 heads with K 48 and 80: the logits, every
     buffer of the arena (the same layout), every parameter gradient (accumulated onto
     nonzero gradients) and dx (written over garbage) within 1e-5 relative
     (max |gpu - cpu| / max |cpu| per tensor). This checks the GPU code's buffers, argument
     order, GEMM operands through the transposition trick, alpha and order, and the CUDA kernels
     themselves (barriers, shared memory, geometry); not cuBLASLt or the driver.
   - The same in bf16 (bf16 GEMM operands, fp32 accumulation and kernels) against the fp32 CPU
     heads: logits within 1e-2, gradients and dx within 2e-2 (norm-relative).

   With a GPU (else SKIP "no GPU"): the same two widths on the device, fp32 within 1e-4, bf16
   as emulated; no GEMM plan is built inside a pass after poa_cuda_heads_pass_plan_gemms. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cuda_emulator.h"
#include "cuda_heads.h"
#include "cuda_vit.h"
#include "fixture_util.h"
#include "head.h"
#include "random.h"

#define ROWS 9
#define EMULATED_TOLERANCE 1e-5
#define BF16_TOLERANCE 1e-2
#define BF16_GRADIENT_TOLERANCE 2e-2

static const poa_head_config config = { .heads = 2, .in_dim = 96, .hidden = 64, .bottleneck = 32,
                                        .prototypes = { 48, 80 } };

/* ---- the kernel source ---- */

static void check_source(void) {
    char *source = NULL;
    poa_error e = { { 0 } };
    if (poa_cuda_heads_source(&source, &e)) {
        CHECK("heads kernels: source", 0, "%s", e.message);
        return;
    }
    int missing = 0;
    for (int i = 0; i < POA_HEADS_KERNEL_COUNT; i++)
        if (!poa_cuda_source_defines(source, poa_heads_kernel_names[i])) {
            missing++;
            printf("  %s is not defined\n", poa_heads_kernel_names[i]);
        }
    CHECK("heads kernels: the source defines every kernel the pass launches", missing == 0, "%d missing", missing);
    free(source);
}

static void check_twin_geometry(void) {
    float z[4] = { 1, 2, 3, 4 }, u[4], norm[1];
    CUdeviceptr pu = (CUdeviceptr)(uintptr_t)u, pn = (CUdeviceptr)(uintptr_t)norm, pz = (CUdeviceptr)(uintptr_t)z;
    long rows = 1, d = 4;
    void *args[] = { &pu, &pn, &pz, &rows, &d };
    const unsigned grid[3] = { 1, 1, 1 }, wrong[3] = { 256, 1, 1 };
    unsigned right[3], right_grid[3];
    poa_error e = { { 0 } };
    int refused = poa_heads_kernel_emulate("poa_heads_l2_normalize_forward", grid, wrong, args, &e) == -1 &&
                  strstr(e.message, "block (128, 1, 1)") != NULL;
    int unknown = poa_heads_kernel_emulate("poa_heads_nothing", grid, wrong, args, &e) == -1;
    poa_heads_kernel_geometry(POA_HEADS_L2_NORMALIZE_FORWARD, rows, right_grid, right, &e);
    int ran = poa_heads_kernel_emulate("poa_heads_l2_normalize_forward", right_grid, right, args, &e) == 0 &&
              fabsf(norm[0] - sqrtf(30.0f)) < 1e-5f && fabsf(u[3] - 4 / sqrtf(30.0f)) < 1e-6f;
    CHECK("heads kernels: a twin refuses a block shape its kernel was not written for, and runs its own",
          refused && unknown && ran, "refused %d, unknown %d, ran %d: %s", refused, unknown, ran, e.message);
}

/* ---- one pass, emulated or on the device ---- */

static int emulate_launch(void *context, const char *module, const char *name, const unsigned grid[3],
                          const unsigned block[3], void **args, poa_error *e) {
    (void)context;
    if (strcmp(module, "heads_kernels.cu")) return poa_fail(e, "emulator: %s launched from module %s", name, module);
    return poa_heads_kernel_emulate(name, grid, block, args, e);
}

static int emulate_gemm(void *context, const poa_cublaslt_call *call, poa_error *e) {
    (void)context;
    return colmajor_matmul(call, e);
}

/* The inputs of one case and what a pass made of them (host copies). */
typedef struct heads_case {
    int width;
    float *params, *x, *dlogits[POA_MAX_HEADS], *grads0; /* inputs; grads0: the gradients before */
    float *logits[POA_MAX_HEADS], *arena, *grads, *dx;   /* results */
    long arena_count;
} heads_case;

static void case_init(heads_case *c, const poa_heads *heads, int width) {
    memset(c, 0, sizeof *c);
    c->width = width;
    const long count = heads->parameter_count;
    c->params = malloc(sizeof(float) * (size_t)count);
    c->grads0 = malloc(sizeof(float) * (size_t)count);
    /* weights ~ 1/sqrt(fan in), biases and weight_v ~ N(0, 0.1 .. 1), weight_g around 1 */
    for (int i = 0; i < heads->tensor_count; i++) {
        const poa_vit_tensor *t = &heads->tensors[i];
        const size_t n = strlen(t->name);
        double scale = t->shape[1] > 1 ? 1.0 / sqrt((double)t->shape[1]) : 0.1, offset = 0;
        if (n > 9 && !strcmp(t->name + n - 9, ".weight_g")) offset = 1, scale = 0.3;
        for (long j = 0; j < t->count; j++) {
            c->params[t->offset + j] = (float)(offset + scale * poa_normal(21, (uint64_t)i, (uint64_t)j));
            c->grads0[t->offset + j] = (float)(0.01 * poa_normal(22, (uint64_t)i, (uint64_t)j));
        }
    }
    c->x = malloc(sizeof(float) * ROWS * (size_t)width);
    for (long i = 0; i < ROWS * (long)width; i++) c->x[i] = (float)poa_normal(23, (uint64_t)width, (uint64_t)i);
    for (int h = 0; h < heads->config.heads; h++) {
        const long n = ROWS * (long)heads->config.prototypes[h];
        c->dlogits[h] = malloc(sizeof(float) * (size_t)n);
        c->logits[h] = malloc(sizeof(float) * (size_t)n);
        for (long i = 0; i < n; i++) c->dlogits[h][i] = (float)(0.1 * poa_normal(24, (uint64_t)h, (uint64_t)i));
    }
    c->grads = malloc(sizeof(float) * (size_t)count);
    c->dx = malloc(sizeof(float) * ROWS * (size_t)width);
}

static void case_free(heads_case *c) {
    free(c->params), free(c->x), free(c->grads0), free(c->arena), free(c->grads), free(c->dx);
    for (int h = 0; h < POA_MAX_HEADS; h++) free(c->dlogits[h]), free(c->logits[h]);
}

/* The CPU heads (head.c) on the case. */
static void run_cpu(const poa_heads *heads, heads_case *c) {
    poa_heads_pass pass;
    poa_error e = { { 0 } };
    if (poa_heads_pass_init(&pass, heads, c->width, ROWS, &e)) {
        printf("FAIL cpu heads pass: %s\n", e.message);
        exit(1);
    }
    memcpy(c->grads, c->grads0, sizeof(float) * (size_t)heads->parameter_count);
    for (long i = 0; i < ROWS * (long)c->width; i++) c->dx[i] = 1e3f;
    poa_heads_forward(&pass, c->params, c->x);
    poa_heads_backward(&pass, c->params, c->grads, c->dlogits, c->dx);
    for (int h = 0; h < heads->config.heads; h++)
        memcpy(c->logits[h], pass.logits[h], sizeof(float) * ROWS * (size_t)heads->config.prototypes[h]);
    c->arena_count = pass.arena_count;
    c->arena = malloc(sizeof(float) * (size_t)pass.arena_count);
    memcpy(c->arena, pass.arena, sizeof(float) * (size_t)pass.arena_count);
    poa_heads_pass_free(&pass);
}

/* The GPU pass on the case through exec (a device or the emulator); bf16 with a shadow. */
static int run_gpu(const poa_cuda_exec *exec, const char *source, int bf16, const poa_heads *heads, heads_case *c,
                   poa_error *e) {
    const long count = heads->parameter_count, nx = ROWS * (long)c->width;
    const size_t f = sizeof(float);
    const int H = heads->config.heads;
    CUdeviceptr params = 0, grads = 0, shadow = 0, x = 0, dx = 0, dlogits[POA_MAX_HEADS] = { 0 };
    uint16_t *host_shadow = NULL;
    float *garbage = malloc(f * (size_t)nx);
    for (long i = 0; i < nx; i++) garbage[i] = 1e3f;
    poa_cuda_heads_pass pass;
    memset(&pass, 0, sizeof pass);
    int rc = poa_cuda_exec_alloc(exec, &params, 1, f * (size_t)count, e) ||
             poa_cuda_exec_alloc(exec, &grads, 2, f * (size_t)count, e) ||
             poa_cuda_exec_alloc(exec, &shadow, 3, 2 * (size_t)count, e) ||
             poa_cuda_exec_alloc(exec, &x, 4, f * (size_t)nx, e) || poa_cuda_exec_alloc(exec, &dx, 5, f * (size_t)nx, e);
    for (int h = 0; h < H && !rc; h++)
        rc = poa_cuda_exec_alloc(exec, &dlogits[h], 6 + h, f * ROWS * (size_t)heads->config.prototypes[h], e);
    if (!rc) {
        host_shadow = malloc(2 * (size_t)count);
        for (long i = 0; i < count; i++) host_shadow[i] = poa_bf16_from_float(c->params[i]);
        rc = poa_cuda_exec_upload(exec, params, c->params, f * (size_t)count, e) ||
             poa_cuda_exec_upload(exec, shadow, host_shadow, 2 * (size_t)count, e) ||
             poa_cuda_exec_upload(exec, grads, c->grads0, f * (size_t)count, e) ||
             poa_cuda_exec_upload(exec, x, c->x, f * (size_t)nx, e) ||
             poa_cuda_exec_upload(exec, dx, garbage, f * (size_t)nx, e);
    }
    for (int h = 0; h < H && !rc; h++)
        rc = poa_cuda_exec_upload(exec, dlogits[h], c->dlogits[h], f * ROWS * (size_t)heads->config.prototypes[h], e);
    /* made for another shape (more rows), then prepared for this one, keeping its buffers */
    if (!rc) rc = poa_cuda_heads_pass_init(&pass, exec, heads, 32, ROWS + 3, params, grads, source, e) ||
                  (bf16 && poa_cuda_heads_pass_use_bf16(&pass, shadow, e)) ||
                  poa_cuda_heads_pass_prepare(&pass, c->width, ROWS, e) ||
                  poa_cuda_heads_pass_plan_gemms(&pass, dlogits, dx, e);
    long planned = exec->lt ? exec->lt->heuristic_calls : 0;
    if (!rc) rc = poa_cuda_heads_forward(&pass, x, e) || poa_cuda_heads_backward(&pass, dlogits, dx, e);
    if (!rc && exec->lt && exec->lt->heuristic_calls != planned)
        rc = poa_fail(e, "%ld GEMM shapes were planned inside the pass, none were expected after "
                         "poa_cuda_heads_pass_plan_gemms", exec->lt->heuristic_calls - planned);
    for (int h = 0; h < H && !rc; h++)
        rc = poa_cuda_exec_download(exec, c->logits[h], pass.logits[h], f * ROWS * (size_t)heads->config.prototypes[h],
                                    e);
    if (!rc) {
        c->arena_count = pass.layout.count;
        c->arena = malloc(f * (size_t)c->arena_count);
        rc = poa_cuda_heads_download_arena(&pass, c->arena, e) ||
             poa_cuda_exec_download(exec, c->grads, grads, f * (size_t)count, e) ||
             poa_cuda_exec_download(exec, c->dx, dx, f * (size_t)nx, e);
    }
    poa_error ignored;
    poa_cuda_exec_synchronize(exec, &ignored); /* no upload still reads garbage or host_shadow */
    poa_cuda_heads_pass_free(&pass);
    CUdeviceptr *pointers[] = { &params, &grads, &shadow, &x, &dx };
    for (size_t i = 0; i < sizeof pointers / sizeof pointers[0]; i++) poa_cuda_exec_free(exec, pointers[i]);
    for (int h = 0; h < H; h++) poa_cuda_exec_free(exec, &dlogits[h]);
    free(garbage), free(host_shadow);
    return rc ? -1 : 0;
}

/* Tracks the worst error of a comparison and counts the tensors over the tolerance. */
typedef struct comparison {
    double tolerance, worst;
    int bad, bf16;
    char worst_name[64];
} comparison;

static void compare(comparison *k, const char *name, const float *got, const float *want, long n) {
    double err = k->bf16 ? norm_error(got, want, n) : relative_error(got, want, n);
    if (err > k->tolerance && k->bad++ < 6) printf("  %s: relative error %.3g\n", name, err);
    if (err > k->worst || !k->worst_name[0]) k->worst = err, snprintf(k->worst_name, sizeof k->worst_name, "%s", name);
}

/* The GPU pass (emulated or on the device) against the CPU heads at width. */
static void check_against_cpu(const char *prefix, const poa_cuda_exec *exec, const char *source, int bf16,
                              double tolerance, const poa_heads *heads, int width) {
    char label[256];
    const int H = heads->config.heads;
    if (bf16)
        snprintf(label, sizeof label, "%s: heads at width %d (K 48, 80): logits within %g, every parameter gradient and "
                 "dx within %g of the fp32 CPU heads' (norm-relative)", prefix, width, BF16_TOLERANCE,
                 BF16_GRADIENT_TOLERANCE);
    else
        snprintf(label, sizeof label, "%s: heads at width %d (K 48, 80): logits, every arena buffer, every parameter "
                 "gradient and dx within %g of the CPU heads'", prefix, width, tolerance);
    heads_case cpu, gpu;
    case_init(&cpu, heads, width);
    case_init(&gpu, heads, width);
    run_cpu(heads, &cpu);
    poa_error e = { { 0 } };
    if (run_gpu(exec, source, bf16, heads, &gpu, &e)) {
        CHECK(label, 0, "%s", e.message);
        case_free(&cpu), case_free(&gpu);
        return;
    }
    comparison logits = { .tolerance = bf16 ? BF16_TOLERANCE : tolerance, .bf16 = bf16 };
    comparison rest = { .tolerance = bf16 ? BF16_GRADIENT_TOLERANCE : tolerance, .bf16 = bf16 };
    comparison arena = { .tolerance = bf16 ? INFINITY : tolerance };
    char name[96];
    for (int h = 0; h < H; h++) {
        snprintf(name, sizeof name, "logits[%d]", h);
        compare(&logits, name, gpu.logits[h], cpu.logits[h], ROWS * (long)heads->config.prototypes[h]);
    }
    for (int i = 0; i < heads->tensor_count; i++) {
        const poa_vit_tensor *t = &heads->tensors[i];
        snprintf(name, sizeof name, "grad %s", t->name);
        /* the change, so that a gradient that did not accumulate is not hidden by grads0 */
        float *got = malloc(sizeof(float) * (size_t)t->count), *want = malloc(sizeof(float) * (size_t)t->count);
        for (long j = 0; j < t->count; j++)
            got[j] = gpu.grads[t->offset + j] - gpu.grads0[t->offset + j],
            want[j] = cpu.grads[t->offset + j] - cpu.grads0[t->offset + j];
        compare(&rest, name, got, want, t->count);
        free(got), free(want);
    }
    compare(&rest, "dx", gpu.dx, cpu.dx, ROWS * (long)width);
    /* the arena, buffer by buffer (the same layout; fp32 only: in bf16 every buffer after the
       first GEMM carries bf16's rounding) */
    poa_heads_layout l;
    poa_heads_layout_of(&heads->config, ROWS, width, &l);
    const long hid = heads->config.hidden, bot = heads->config.bottleneck;
    long kmax = 0;
    for (int h = 0; h < H; h++) {
        const poa_head_buffers *b = &l.head[h];
        const long k = heads->config.prototypes[h];
        kmax = k > kmax ? k : kmax;
        const struct { const char *name; long offset, count; } buffers[] = {
            { "a0", b->a0, ROWS * hid }, { "h0", b->h0, ROWS * hid }, { "a1", b->a1, ROWS * hid },
            { "h1", b->h1, ROWS * hid }, { "z", b->z, ROWS * bot }, { "u", b->u, ROWS * bot },
            { "znorm", b->znorm, ROWS }, { "wn", b->wn, k * bot }, { "vnorm", b->vnorm, k },
            { "logits", b->logits, ROWS * k },
        };
        for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++) {
            snprintf(name, sizeof name, "arena head %d %s", h, buffers[i].name);
            compare(&arena, name, gpu.arena + buffers[i].offset, cpu.arena + buffers[i].offset, buffers[i].count);
        }
    }
    const struct { const char *name; long offset, count; } scratch[] = {
        { "x", l.x, ROWS * (long)width }, { "d_hidden_a", l.d_hidden_a, ROWS * hid },
        { "d_hidden_b", l.d_hidden_b, ROWS * hid }, { "d_bottleneck_a", l.d_bottleneck_a, ROWS * bot },
        { "d_bottleneck_b", l.d_bottleneck_b, ROWS * bot }, { "d_wn", l.d_wn, kmax * bot },
    };
    for (size_t i = 0; i < sizeof scratch / sizeof scratch[0]; i++) {
        snprintf(name, sizeof name, "arena %s", scratch[i].name);
        compare(&arena, name, gpu.arena + scratch[i].offset, cpu.arena + scratch[i].offset, scratch[i].count);
    }
    int covered = l.d_wn + kmax * bot == l.count && gpu.arena_count == cpu.arena_count;
    if (bf16) {
        printf("  %s width %d: norm-relative error: worst logits %.3g, worst gradient %s %.3g\n", prefix, width,
               logits.worst, rest.worst_name, rest.worst);
        /* bf16 operands must show: an fp32-exact result would mean the bf16 path did not run */
        CHECK(label, logits.bad == 0 && rest.bad == 0 && logits.worst > 1e-5, "logits %.3g, %d gradients off, worst %s %.3g",
              logits.worst, rest.bad, rest.worst_name, rest.worst);
    } else {
        printf("  %s width %d: worst logits %.3g, worst gradient %s %.3g, worst arena buffer %s %.3g\n", prefix, width,
               logits.worst, rest.worst_name, rest.worst, arena.worst_name, arena.worst);
        CHECK(label, logits.bad == 0 && rest.bad == 0 && arena.bad == 0 && covered,
              "logits worst %.3g; %d of gradients and dx off, worst %s %.3g; %d arena buffers off, worst %s %.3g; "
              "layout covered %d", logits.worst, rest.bad, rest.worst_name, rest.worst, arena.bad, arena.worst_name,
              arena.worst, covered);
    }
    case_free(&cpu), case_free(&gpu);
}

/* A pass that runs nowhere (neither a GPU nor an emulator) allocates nothing real and issues
   nothing, yet walks every step: per head, forward = weight norm, 2 GELUs, L2-normalise and 4
   GEMMs (plus one input copy); backward = weight norm, L2-normalise, 2 GELU backwards and 3
   column sums, and 8 GEMMs (with dx). The emulated pass issues exactly as many. */
static void check_counts(const poa_heads *heads) {
    poa_cuda_emulator em = { .launch = emulate_launch, .gemm = emulate_gemm };
    const poa_cuda_exec nowhere = { 0 }, emulated = { .emulator = &em };
    const poa_cuda_exec *execs[2] = { &nowhere, &emulated };
    const long H = heads->config.heads;
    long launches[2] = { 0 }, gemms[2] = { 0 };
    poa_error e = { { 0 } };
    int rc = 0;
    for (int i = 0; i < 2 && !rc; i++) {
        heads_case c;
        case_init(&c, heads, 64);
        CUdeviceptr params = 0, grads = 0, x = 0, dx = 0, dlogits[POA_MAX_HEADS] = { 0 };
        const size_t f = sizeof(float);
        poa_cuda_heads_pass pass;
        memset(&pass, 0, sizeof pass);
        rc = poa_cuda_exec_alloc(execs[i], &params, 1, f * (size_t)heads->parameter_count, &e) ||
             poa_cuda_exec_alloc(execs[i], &grads, 2, f * (size_t)heads->parameter_count, &e) ||
             poa_cuda_exec_alloc(execs[i], &x, 3, f * ROWS * 64, &e) || poa_cuda_exec_alloc(execs[i], &dx, 4, f * ROWS * 64, &e);
        for (int h = 0; h < H && !rc; h++)
            rc = poa_cuda_exec_alloc(execs[i], &dlogits[h], 5 + h, f * ROWS * (size_t)heads->config.prototypes[h], &e);
        if (!rc) rc = poa_cuda_exec_upload(execs[i], params, c.params, f * (size_t)heads->parameter_count, &e) ||
                      poa_cuda_heads_pass_init(&pass, execs[i], heads, 64, ROWS, params, grads, NULL, &e) ||
                      poa_cuda_heads_forward(&pass, x, &e) || poa_cuda_heads_backward(&pass, dlogits, dx, &e);
        launches[i] = pass.launches, gemms[i] = pass.gemms;
        poa_cuda_heads_pass_free(&pass);
        CUdeviceptr *pointers[] = { &params, &grads, &x, &dx, &dlogits[0], &dlogits[1] };
        for (size_t j = 0; j < sizeof pointers / sizeof pointers[0]; j++) poa_cuda_exec_free(execs[i], pointers[j]);
        case_free(&c);
    }
    CHECK("heads pass: run nowhere it walks every step without touching memory; emulated it issues the same "
          "11 launches and 12 GEMMs per head (and one copy)",
          !rc && launches[0] == 1 + 11 * H && gemms[0] == 12 * H && launches[1] == launches[0] && gemms[1] == gemms[0],
          "%s launches %ld / %ld, GEMMs %ld / %ld (expected %ld, %ld)", rc ? e.message : "", launches[0], launches[1],
          gemms[0], gemms[1], 1 + 11 * H, 12 * H);
}

static void check_bad_shapes(const poa_heads *heads) {
    poa_cuda_emulator em = { .launch = emulate_launch, .gemm = emulate_gemm };
    const poa_cuda_exec exec = { .emulator = &em };
    poa_cuda_heads_pass pass;
    poa_error e = { { 0 } };
    int wide = poa_cuda_heads_pass_init(&pass, &exec, heads, 97, ROWS, 0, 0, NULL, &e) == -1 &&
               strstr(e.message, "width 97 outside 1..96") != NULL;
    int negative = poa_cuda_heads_pass_init(&pass, &exec, heads, 64, -1, 0, 0, NULL, &e) == -1 &&
                   strstr(e.message, "rows -1 negative") != NULL;
    int no_grads = poa_cuda_heads_pass_init(&pass, &exec, heads, 64, ROWS, 0, 0, NULL, &e) == 0 &&
                   poa_cuda_heads_backward(&pass, NULL, 0, &e) == -1 && strstr(e.message, "no gradient buffer") != NULL;
    poa_cuda_heads_pass_free(&pass);
    CHECK("heads pass: a width beyond in_dim, negative rows and a backward without gradients fail with a message",
          wide && negative && no_grads, "%d %d %d: %s", wide, negative, no_grads, e.message);
}

/* A launch from heads_kernels.cu's own text (tests/c/cuda_host_run.h), checked against its C twin. */
static int launch_from_cu(void *context, const char *module, const char *name, const unsigned grid[3],
                          const unsigned block[3], void **args, poa_error *e) {
    if (strcmp(module, "heads_kernels.cu")) return poa_fail(e, "emulator: %s launched from module %s", name, module);
    return host_runner_launch(context, module, name, grid, block, args, e);
}

/* The emulated pass: its kernels from their .cu text, each launch also run by its C twin on the
   same inputs (without a host C++ compiler, the C twins only). */
static void check_emulated(const poa_heads *heads) {
    host_runner runner = { .twin = emulate_launch };
    const int from_cu = host_runner_available();
    if (!from_cu) CHECK_SKIP("emulated: the heads' kernels run from their .cu text", "no host C++ compiler (g++)");
    poa_cuda_emulator em = { .context = &runner, .launch = from_cu ? launch_from_cu : emulate_launch,
                             .gemm = emulate_gemm, .alloc = from_cu ? host_runner_alloc : NULL,
                             .release = from_cu ? host_runner_release : NULL };
    poa_cuda_exec exec = { .emulator = &em };
    check_against_cpu("emulated", &exec, NULL, 0, EMULATED_TOLERANCE, heads, 96);
    check_against_cpu("emulated", &exec, NULL, 0, EMULATED_TOLERANCE, heads, 64);
    check_against_cpu("emulated bf16", &exec, NULL, 1, EMULATED_TOLERANCE, heads, 96);
    check_against_cpu("emulated bf16", &exec, NULL, 1, EMULATED_TOLERANCE, heads, 64);
    if (from_cu) {
        double worst = host_runner_report(&runner, "emulated heads");
        CHECK("emulated: every heads kernel the pass launched ran from its .cu text within 1e-5 of its C twin on the "
              "same inputs (max |cu - twin| / max(1, max |twin|) per output)", runner.error_count > 0 && worst <= 1e-5,
              "worst %.3g over %d kernels", worst, runner.error_count);
        cuda_host_close(&runner.host);
    }
}

static void check_gpu(const poa_heads *heads) {
    poa_cuda cuda;
    poa_cublaslt lt;
    poa_error e = { { 0 } };
    int rc = open_gpu_for_tests(&cuda, &lt, &e);
    if (rc == 0) {
        CHECK_SKIP("gpu: heads at width 96 against the CPU heads within 1e-4", e.message);
        CHECK_SKIP("gpu: heads at width 64 against the CPU heads within 1e-4", e.message);
        CHECK_SKIP("gpu bf16: heads at width 96 against the CPU heads (logits 1e-2, gradients 2e-2)", e.message);
        CHECK_SKIP("gpu bf16: heads at width 64 against the CPU heads (logits 1e-2, gradients 2e-2)", e.message);
    }
    if (rc <= 0) return;
    char *source = NULL;
    if (poa_cuda_heads_source(&source, &e)) {
        CHECK("gpu: heads kernel source", 0, "%s", e.message);
        poa_cublaslt_free(&lt);
    } else {
        poa_cuda_exec exec = { .cuda = &cuda, .lt = &lt };
        check_against_cpu("gpu", &exec, source, 0, TOLERANCE, heads, 96);
        check_against_cpu("gpu", &exec, source, 0, TOLERANCE, heads, 64);
        check_against_cpu("gpu bf16", &exec, source, 1, TOLERANCE, heads, 96);
        check_against_cpu("gpu bf16", &exec, source, 1, TOLERANCE, heads, 64);
        free(source);
        poa_cublaslt_free(&lt);
    }
    poa_cuda_close(&cuda);
}

int main(void) {
    poa_heads heads;
    poa_error e = { { 0 } };
    if (poa_heads_init(&heads, &config, &e)) {
        printf("FAIL heads: %s\n", e.message);
        return 1;
    }
    check_source();
    check_twin_geometry();
    check_counts(&heads);
    check_bad_shapes(&heads);
    check_emulated(&heads);
    check_gpu(&heads);
    poa_heads_free(&heads);
    CHECK_EXIT();
}
