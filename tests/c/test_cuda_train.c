/* test_cuda_train.c: the POA training step on the GPU (runtime/cuda_train.c) against the CPU
   trainer, on tests/recipes/tiny_train.lua (elastic, iBOT on, drop path, KoLeo, 2 heads) with
   synthetic batches.

   Everywhere: the step emulated on the host. Every launch runs its kernel's own .cu text
   (ViT sets, fused, glue, heads, training kernels) thread by thread through
   tests/c/cuda_host_run.h, after its C twin on the same inputs: by module, the CPU kernels of
   the ViT set of that width (tests/c/cuda_emulator.h), the glue loops, the heads' C twins
   (runtime/heads_kernels.c) or the generated C of the training kernels
   (build/gen/train_kernels.c); each kernel's worst difference is printed and must be within
   1e-5 (without g++, the C twins alone). Every GEMM is the column-major evaluation of its
   cuBLASLt call. This checks the GPU step's buffers, arguments, order, loss weights,
   Sinkhorn-Knopp, the update, the EMA and the CUDA kernels; not cuBLASLt or the driver.
   - the first micro-batch: every loss term within 1e-5 and the whole gradient buffer (backbone
     and heads) within 1e-4 of the CPU trainer's (relative to its largest value);
   - three steps (the elastic members drawn from the same cycle): the student, the teacher and
     AdamW's moments within 1e-4, and every step's loss within 1e-5;
   - the elastic branch's backbone passes run in the intact branch's activation arenas, and the
     intact global pass in the teacher's;
   - `poa cuda plan`'s memory plan (the step run nowhere) is exactly what the step allocates;
   - two steps of two accumulated micro-batches (their own draws, losses halved) as the CPU's.
   With a GPU (else SKIP): the same on the device, fp32; and bf16 against the fp32 CPU trainer
   (loss terms within 1e-2, gradients within 2e-2 norm-relative). */
#include <lua.h>
#include <string.h>

#include "check.h"
#include "cuda_emulator.h"
#include "cuda_train.h"
#include "data_synthetic.h"
#include "fixture_util.h"
#include "recipe.h"

#define RECIPE "tests/recipes/tiny_train.lua"
enum { STEPS = 3 };

/* ---- the comparison ---- */

static int load_trainer_with(poa_trainer *t, const char *extra, poa_error *e) {
    lua_State *L = poa_lua_open(e);
    /* a larger eps: AdamW's first steps are close to lr * sign(g), which would turn the last-bit
       differences of two summation orders into whole steps */
    const char *overrides[] = { "optim.eps=1e-3", "optim.base_lr=0.02", extra };
    poa_train_config config;
    int rc = !L || poa_train_config_load(L, RECIPE, overrides, extra ? 3 : 2, &config, e) ? -1 : 0;
    if (L) lua_close(L);
    if (!rc) rc = poa_trainer_init(t, &config, e);
    return rc;
}

static int load_trainer(poa_trainer *t, poa_error *e) { return load_trainer_with(t, NULL, e); }

/* max |a - b| / max |b| over the backbone and the heads parts. */
static double state_error(const float *a, const float *a_heads, const float *b, const float *b_heads, long n,
                          long nh) {
    double x = relative_error(a, b, n), y = relative_error(a_heads, b_heads, nh);
    return x > y ? x : y;
}

static double term_error(const poa_step_stats *a, const poa_step_stats *b) {
    const double x[4] = { a->dino, a->distill, a->koleo, a->ibot }, y[4] = { b->dino, b->distill, b->koleo, b->ibot };
    double worst = 0;
    for (int i = 0; i < 4; i++) {
        double err = fabs(x[i] - y[i]) / (fabs(y[i]) > 1e-12 ? fabs(y[i]) : 1.0);
        if (err > worst) worst = err;
    }
    return worst;
}

/* The GPU step (exec: emulated or on the device) against the CPU trainer. */
static void compare(const char *prefix, const poa_cuda_exec *exec, int bf16) {
    poa_error e = { { 0 } };
    poa_trainer cpu, gpu;
    char label[256];
    if (load_trainer(&cpu, &e) || load_trainer(&gpu, &e)) {
        CHECK(prefix, 0, "trainers: %s", e.message);
        return;
    }
    poa_cuda_train g;
    if (poa_cuda_train_init(&g, &gpu, exec, bf16, &e)) {
        snprintf(label, sizeof label, "%s: GPU step set-up", prefix);
        CHECK(label, 0, "%s", e.message);
        poa_trainer_free(&cpu), poa_trainer_free(&gpu);
        return;
    }
    const long n = cpu.model.parameter_count, nh = cpu.heads.parameter_count;
    float *grads = malloc(sizeof(float) * (size_t)(n + nh));
    poa_batch batch[STEPS];
    int rc = grads ? 0 : poa_fail(&e, "out of memory");
    for (int s = 0; s < STEPS && !rc; s++) rc = poa_synthetic_batch(&batch[s], &cpu.config, 21 + (uint64_t)s, &e);
    double worst_terms = 0, worst_loss = 0;
    const double term_tolerance = bf16 ? 1e-2 : 1e-5;
    for (int s = 0; s < STEPS && !rc; s++) {
        poa_trainer_begin_step(&cpu);
        poa_cuda_train_begin_step(&g);
        rc = poa_trainer_micro_batch(&cpu, &batch[s], 0, &e) || poa_cuda_train_micro_batch(&g, &batch[s], 0, &e);
        if (rc) break;
        if (s == 0) {
            /* the gradients of the first micro-batch, before the update zeroes them */
            rc = poa_cuda_exec_download(&g.exec, grads, g.grads, sizeof(float) * (size_t)(n + nh), &e);
            if (rc) break;
            double err = bf16 ? fmax(norm_error(grads, cpu.grads, n), norm_error(grads + n, cpu.grads_heads, nh))
                              : state_error(grads, grads + n, cpu.grads, cpu.grads_heads, n, nh);
            snprintf(label, sizeof label, "%s: first micro-batch: the gradient buffer within %g of the CPU trainer's",
                     prefix, bf16 ? 2e-2 : 1e-4);
            CHECK(label, err <= (bf16 ? 2e-2 : 1e-4) && (!bf16 || err > 1e-6), "relative error %.3g", err);
            printf("  %s: gradients %.3g, member %dx%d\n", prefix, err, cpu.current.width, cpu.current.depth);
        }
        poa_trainer_end_step(&cpu);
        rc = poa_cuda_train_end_step(&g, &e);
        if (rc) break;
        double terms = term_error(&gpu.last, &cpu.last);
        double loss = fabs(gpu.last.loss - cpu.last.loss) / fabs(cpu.last.loss);
        worst_terms = fmax(worst_terms, terms), worst_loss = fmax(worst_loss, loss);
        printf("  %s step %d member %dx%d (GPU %dx%d): loss %.6f (CPU %.6f), terms %.3g, grad norms %.5g %.5g (CPU %.5g %.5g)\n",
               prefix, s, cpu.last.width, cpu.last.depth, gpu.last.width, gpu.last.depth, gpu.last.loss, cpu.last.loss,
               terms, gpu.last.grad_norm_backbone, gpu.last.grad_norm_heads, cpu.last.grad_norm_backbone,
               cpu.last.grad_norm_heads);
        if (cpu.last.width != gpu.last.width || cpu.last.depth != gpu.last.depth)
            rc = poa_fail(&e, "step %d: the GPU step drew %dx%d, the CPU %dx%d", s, gpu.last.width, gpu.last.depth,
                          cpu.last.width, cpu.last.depth);
    }
    if (rc) {
        snprintf(label, sizeof label, "%s: %d steps", prefix, STEPS);
        CHECK(label, 0, "%s", e.message);
    } else {
        snprintf(label, sizeof label, "%s: every step's loss terms within %g of the CPU trainer's", prefix,
                 term_tolerance);
        CHECK(label, worst_terms <= term_tolerance, "worst %.3g (loss %.3g)", worst_terms, worst_loss);
        if (!bf16) {
            rc = poa_cuda_train_download(&g, &e);
            double student = state_error(gpu.student, gpu.student_heads, cpu.student, cpu.student_heads, n, nh);
            double teacher = state_error(gpu.teacher, gpu.teacher_heads, cpu.teacher, cpu.teacher_heads, n, nh);
            double m = state_error(gpu.adam_m, gpu.adam_m_heads, cpu.adam_m, cpu.adam_m_heads, n, nh);
            double v = state_error(gpu.adam_v, gpu.adam_v_heads, cpu.adam_v, cpu.adam_v_heads, n, nh);
            snprintf(label, sizeof label,
                     "%s: after %d steps the student, teacher and AdamW moments within 1e-4 of the CPU trainer's",
                     prefix, STEPS);
            CHECK(label, !rc && student <= 1e-4 && teacher <= 1e-4 && m <= 1e-4 && v <= 1e-4,
                  "%s student %.3g teacher %.3g m %.3g v %.3g", rc ? e.message : "", student, teacher, m, v);
            printf("  %s: student %.3g, teacher %.3g, m %.3g, v %.3g\n", prefix, student, teacher, m, v);
        }
    }
    if (!rc) {
        /* the elastic branch's backbones run in the intact branch's arenas (and bf16 mirrors) */
        const poa_cuda_branch *intact = &g.branch[0], *elastic = &g.branch[1];
        snprintf(label, sizeof label, "%s: the elastic passes use the intact passes' activation arenas and crops, the intact "
                 "global pass the teacher's", prefix);
        CHECK(label, elastic->global.arena_shared && elastic->global.arena == intact->global.arena &&
                         intact->global.arena == g.teacher_pass.arena &&
                         intact->global.images == g.teacher_pass.images && elastic->local.images == intact->local.images &&
                         elastic->local.arena == intact->local.arena &&
                         (!bf16 || (elastic->local.cast_bf16 == g.teacher_pass.cast_bf16 &&
                                    intact->global.cast_bf16 == g.teacher_pass.cast_bf16)),
              "global %d local %d", elastic->global.arena_shared, elastic->local.arena_shared);
    }
    for (int s = 0; s < STEPS; s++) poa_synthetic_batch_free(&batch[s]);
    free(grads);
    poa_cuda_train_free(&g);
    poa_trainer_free(&cpu), poa_trainer_free(&gpu);
}

/* poa_cuda_train_plan_memory (the set-up and a micro-batch run nowhere) counts exactly what the
   emulated step allocates, and what it reports adds up. */
static void check_plan(void) {
    poa_error e = { { 0 } };
    poa_trainer planned, run;
    poa_batch b;
    if (load_trainer(&planned, &e) || load_trainer(&run, &e) || poa_synthetic_batch(&b, &run.config, 21, &e)) {
        CHECK("memory plan", 0, "%s", e.message);
        return;
    }
    poa_cuda_train_plan plan;
    int rc = poa_cuda_train_plan_memory(&planned, 1, &b, &plan, &e);
    step_emulator em = { .scratch_count = 4L << 20 };
    em.scratch = calloc((size_t)em.scratch_count, sizeof(float));
    poa_cuda_emulator callbacks = { .context = &em, .launch = emulate_step_launch, .gemm = emulate_step_gemm };
    poa_cuda_memory account = { 0 };
    poa_cuda_exec exec = { .emulator = &callbacks, .account = &account };
    poa_cuda_train g;
    if (!rc) rc = poa_cuda_train_init(&g, &run, &exec, 1, &e);
    if (!rc) {
        poa_cuda_train_begin_step(&g);
        rc = poa_cuda_train_micro_batch(&g, &b, 0, &e);
        poa_cuda_train_free(&g);
    }
    printf("  plan: peak %zu bytes (state %zu, work %zu, teacher arena %zu, local arena %zu); emulated step: peak "
           "%zu bytes, %zu left after it\n", plan.peak, plan.state, plan.work, plan.teacher_arena, plan.local_arena,
           account.peak, account.in_use);
    CHECK("memory plan: the planned peak of a bf16 step is exactly what the emulated step allocates, all freed after",
          !rc && plan.peak == account.peak && account.in_use == 0 &&
              plan.peak > plan.state + plan.work + plan.teacher_arena + plan.local_arena,
          "%s planned %zu, emulated %zu (in use after %zu)", rc ? e.message : "", plan.peak, account.peak,
          account.in_use);
    poa_cuda_memory_free(&account);
    free(em.scratch);
    poa_synthetic_batch_free(&b);
    poa_trainer_free(&planned), poa_trainer_free(&run);
}

/* Gradient accumulation: 2 steps of 2 micro-batches each (each its own elastic draw, losses
   scaled by 1/2), emulated, against the CPU trainer. */
static void check_accumulation(const poa_cuda_exec *exec) {
    poa_error e = { { 0 } };
    poa_trainer cpu, gpu;
    poa_batch batch[4];
    poa_cuda_train g;
    int made = 0, has_g = 0;
    int rc = load_trainer_with(&cpu, "train.accumulate=2", &e) || load_trainer_with(&gpu, "train.accumulate=2", &e);
    for (int i = 0; i < 4 && !rc; i++, made++) rc = poa_synthetic_batch(&batch[i], &cpu.config, 41 + (uint64_t)i, &e);
    if (!rc) rc = poa_cuda_train_init(&g, &gpu, exec, 0, &e);
    has_g = !rc;
    double worst = 0;
    for (int s = 0; s < 2 && !rc; s++) {
        poa_trainer_begin_step(&cpu);
        poa_cuda_train_begin_step(&g);
        for (int m = 0; m < 2 && !rc; m++)
            rc = poa_trainer_micro_batch(&cpu, &batch[2 * s + m], m, &e) ||
                 poa_cuda_train_micro_batch(&g, &batch[2 * s + m], m, &e);
        if (rc) break;
        poa_trainer_end_step(&cpu);
        rc = poa_cuda_train_end_step(&g, &e);
        worst = fmax(worst, term_error(&gpu.last, &cpu.last));
    }
    double student = 1, teacher = 1;
    if (!rc && !(rc = poa_cuda_train_download(&g, &e))) {
        const long n = cpu.model.parameter_count, nh = cpu.heads.parameter_count;
        student = state_error(gpu.student, gpu.student_heads, cpu.student, cpu.student_heads, n, nh);
        teacher = state_error(gpu.teacher, gpu.teacher_heads, cpu.teacher, cpu.teacher_heads, n, nh);
    }
    printf("  emulated, accumulating 2 micro-batches: terms %.3g, student %.3g, teacher %.3g, draws %ld and %ld\n",
           worst, student, teacher, cpu.draws, gpu.draws);
    CHECK("emulated: 2 steps of 2 accumulated micro-batches: loss terms within 1e-5, student and teacher within "
          "1e-4 of the CPU trainer's, the same draws",
          !rc && worst <= 1e-5 && student <= 1e-4 && teacher <= 1e-4 && cpu.draws == gpu.draws && cpu.draws == 4,
          "%s", rc ? e.message : "off");
    if (has_g) poa_cuda_train_free(&g);
    for (int i = 0; i < made; i++) poa_synthetic_batch_free(&batch[i]);
    poa_trainer_free(&cpu), poa_trainer_free(&gpu);
}

/* The two kernels of the step's modules that a one-process step never launches, from their .cu
   text against their twins: poa_glue_scale (the gradients' mean after the all-reduce of several
   ranks) and poa_train_cast_bf16 (n not a multiple of the chunk, with ties and a NaN). */
static int launch_the_others(host_runner *r, poa_error *e) {
    const long n = 2 * TRAIN_CHUNK + 77;
    float *x = cuda_host_alloc(sizeof(float) * (size_t)n);
    uint16_t *y = cuda_host_alloc(sizeof(uint16_t) * (size_t)n);
    if (!x || !y) return poa_fail(e, "out of memory");
    for (long i = 0; i < n; i++) x[i] = (float)(i % 7 == 3 ? 1.0 + ldexp(1.0, -8) : sin(0.1 * (double)i) * 3.0);
    x[5] = NAN;
    CUdeviceptr dx = (CUdeviceptr)(uintptr_t)x, dy = (CUdeviceptr)(uintptr_t)y;
    long count = n;
    float a = 0.37f;
    void *scale_args[] = { &dx, &a, &count }, *cast_args[] = { &dy, &dx, &count };
    const unsigned block[3] = { 256, 1, 1 }, scale_grid[3] = { (unsigned)((n + 255) / 256), 1, 1 };
    const unsigned cast_grid[3] = { (unsigned)((n + TRAIN_CHUNK - 1) / TRAIN_CHUNK), 1, 1 };
    int rc = host_runner_launch(r, "vit_glue.cu", "poa_glue_scale", scale_grid, block, scale_args, e) ||
             host_runner_launch(r, "train_kernels.cu", "poa_train_cast_bf16", cast_grid, block, cast_args, e);
    cuda_host_free(x), cuda_host_free(y);
    return rc;
}

/* The emulated step: its launches run the kernels' .cu text (tests/c/cuda_host_run.h), each
   also checked against its C twin on the same inputs (every kernel's worst difference printed);
   without a host C++ compiler, the C twins. */
static void check_emulated(void) {
    step_emulator em = { 0 };
    em.scratch_count = 4L << 20;
    em.scratch = calloc((size_t)em.scratch_count, sizeof(float));
    host_runner runner = { .recipe = RECIPE, .twin = emulate_step_twin, .twin_context = &em };
    const int from_cu = host_runner_available();
    if (from_cu) em.host = &runner;
    else CHECK_SKIP("emulated: the step's kernels run from their .cu text", "no host C++ compiler (g++)");
    poa_cuda_emulator callbacks = { .context = &em, .launch = emulate_step_launch, .gemm = emulate_step_gemm,
                                    .alloc = from_cu ? host_runner_alloc : NULL,
                                    .release = from_cu ? host_runner_release : NULL };
    poa_cuda_exec exec = { .emulator = &callbacks };
    compare("emulated", &exec, 0);
    printf("  emulated: %ld launches (%ld training, %ld heads, %ld glue), %ld GEMMs\n", em.launches,
           em.train_launches, em.heads_launches, em.glue_launches, em.gemms);
    compare("emulated bf16", &exec, 1);
    check_accumulation(&exec);
    if (from_cu) {
        poa_error e = { { 0 } };
        if (launch_the_others(&runner, &e)) CHECK("emulated: poa_glue_scale and poa_train_cast_bf16 from .cu", 0, "%s", e.message);
        double worst = host_runner_report(&runner, "emulated step");
        CHECK("emulated: every kernel the step launched (and poa_glue_scale, poa_train_cast_bf16) ran from its .cu "
              "text within 1e-5 of its C twin on the same inputs (max |cu - twin| / max(1, max |twin|) per output)", runner.error_count > 0 && worst <= 1e-5, "worst %.3g over %d kernels", worst,
              runner.error_count);
        cuda_host_close(&runner.host);
    }
    free(em.scratch);
}

static void check_gpu(void) {
    poa_cuda cuda;
    poa_cublaslt lt;
    poa_error e = { { 0 } };
    int rc = open_gpu_for_tests(&cuda, &lt, &e);
    if (rc == 0) {
        CHECK_SKIP("gpu: the training step against the CPU trainer (gradients 1e-4, 3 steps 1e-4)", e.message);
        CHECK_SKIP("gpu bf16: the training step against the fp32 CPU trainer (terms 1e-2, gradients 2e-2)", e.message);
    }
    if (rc <= 0) return;
    poa_cuda_exec exec = { .cuda = &cuda, .lt = &lt };
    compare("gpu", &exec, 0);
    compare("gpu bf16", &exec, 1);
    printf("  gpu: peak device memory %.1f MiB\n", cuda.memory.peak / 1048576.0);
    poa_cublaslt_free(&lt);
    poa_cuda_close(&cuda);
}

int main(void) {
    check_plan();
    check_emulated();
    check_gpu();
    CHECK_EXIT();
}
