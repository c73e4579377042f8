/* bench/step_gpu.c: GPU time of full POA training steps (runtime/cuda_train.c): teacher with
   Sinkhorn-Knopp targets, the intact and the elastic student, heads, every loss term, backward,
   clipping, AdamW with the bf16 shadows, EMA, on one synthetic micro-batch reused every step.
     build/bench/step_gpu [RECIPE] [--steps N] [--warmup W] [--ibot 0|1] [--batch B]
                          [--member WxD] [--precision bf16|fp32] [--profile 0|1] [section.field=value ...]
   RECIPE defaults to recipes/vit_l16_ee1200.lua. Prints what bench/step_cpu prints ("config ...",
   "masks ...", "members ...", "step median wall ms X ... images/s Y"; bench/step_gpu_torch.py
   reads them), and the set-up time (NVRTC through the on-disk cache, cold or cached as the cache
   is, the allocations and the upload), the peak device memory, and, with --profile 1 (the
   default), one more step with every launch and GEMM timed by events: the per-kernel breakdown.
   Without a GPU it says so and exits with status 2. */
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_train.h"
#include "data_synthetic.h"
#include "recipe.h"
#include "trainer.h"

#include "step_info.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(void) {
    fprintf(stderr, "usage: step_gpu [RECIPE] [--steps N] [--warmup W] [--ibot 0|1] [--batch B] [--member WxD] "
                    "[--precision bf16|fp32] [--profile 0|1] [section.field=value ...]\n");
}

/* Removes "--name value" from argv (the options step_options does not know); NULL if absent. */
static const char *take_option(int *argc, char **argv, const char *name) {
    for (int i = 1; i + 1 < *argc; i++)
        if (!strcmp(argv[i], name)) {
            const char *v = argv[i + 1];
            memmove(&argv[i], &argv[i + 2], sizeof(char *) * (size_t)(*argc - i - 2));
            *argc -= 2;
            return v;
        }
    return NULL;
}

/* One step on the device; the wall time to the end of its update (which synchronises). */
static int step(poa_cuda_train *g, const poa_batch *b, double *ms, poa_error *e) {
    double t0 = now_ms();
    poa_cuda_train_begin_step(g);
    if (poa_cuda_train_micro_batch(g, b, 0, e) || poa_cuda_train_end_step(g, e)) return -1;
    *ms = now_ms() - t0;
    return 0;
}

static int by_time(const void *a, const void *b, void *p) {
    const poa_cuda_profile *profile = p;
    double x = profile->milliseconds[*(const int *)a], y = profile->milliseconds[*(const int *)b];
    return (x < y) - (x > y);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(), 0;
    const char *precision = take_option(&argc, argv, "--precision");
    const char *profile_option = take_option(&argc, argv, "--profile");
    step_options o = { .recipe = "recipes/vit_l16_ee1200.lua", .steps = 5, .warmup = 2, .ibot = 1, .threads = 1 };
    if (parse_step_options(argc, argv, &o) || (precision && strcmp(precision, "bf16") && strcmp(precision, "fp32")))
        return usage(), 2;
    const int bf16 = !precision || !strcmp(precision, "bf16"), profiled = !profile_option || atoi(profile_option);

    poa_error e = { { 0 } };
    poa_cuda cuda;
    if (poa_cuda_open(&cuda, &e)) {
        fprintf(stderr, "step_gpu: %s\n", e.message);
        return cuda.no_gpu ? 2 : 1;
    }
    lua_State *L = poa_lua_open(&e);
    poa_train_config config;
    if (!L || poa_train_config_load(L, o.recipe, o.overrides, o.override_count, &config, &e)) {
        fprintf(stderr, "step_gpu: %s\n", e.message);
        return 1;
    }
    int fixed_w = 0, fixed_d = 0;
    if (o.member && poa_recipe_member(L, &config.recipe, o.member, &fixed_w, &fixed_d, &e)) {
        fprintf(stderr, "step_gpu: %s\n", e.message);
        return 1;
    }
    lua_close(L);
    poa_trainer t;
    if (poa_trainer_init(&t, &config, &e)) {
        fprintf(stderr, "step_gpu: %s\n", e.message);
        return 1;
    }
    if (o.member)
        for (int i = 0; i < t.config.slot_count; i++) t.config.slot_width[i] = fixed_w, t.config.slot_depth[i] = fixed_d;
    poa_batch b;
    if (poa_synthetic_batch(&b, &t.config, 11, &e)) {
        fprintf(stderr, "step_gpu: %s\n", e.message);
        return 1;
    }
    print_step_info(&t.config, &b, o.ibot, 1);
    printf("device %s sm_%d%d, %d SMs, %.1f GiB, driver %d, %s\n", cuda.device_name, cuda.major, cuda.minor,
           cuda.multiprocessors, cuda.total_memory / 1073741824.0, cuda.driver_version, bf16 ? "bf16" : "fp32");

    poa_cublaslt lt;
    poa_cuda_profile profile = { 0 };
    if (poa_cublaslt_init(&lt, &cuda, 0, &e) || (profiled && poa_cuda_profile_init(&profile, &cuda, 65536, &e))) {
        fprintf(stderr, "step_gpu: %s\n", e.message);
        return 1;
    }
    poa_cuda_exec exec = { .cuda = &cuda, .lt = &lt };
    poa_cuda_train g;
    double t0 = now_ms();
    if (poa_cuda_train_init(&g, &t, &exec, bf16, &e)) {
        fprintf(stderr, "step_gpu: %s\n", e.message);
        return 1;
    }
    printf("set-up s %.3f (kernel sources, NVRTC through the cache at %s, allocations, upload)\n",
           (now_ms() - t0) / 1e3, getenv("POA_CACHE") ? getenv("POA_CACHE") : "~/.cache/poa");

    double *wall = malloc(sizeof(double) * (size_t)o.steps);
    char *members = calloc((size_t)(o.warmup + o.steps), 16);
    for (int it = -o.warmup; it < o.steps; it++) {
        double ms;
        if (step(&g, &b, &ms, &e)) {
            fprintf(stderr, "step_gpu: step %d: %s\n", it, e.message);
            return 1;
        }
        if (it >= 0) wall[it] = ms;
        snprintf(members + (size_t)(it + o.warmup) * 16, 16, "%dx%d", t.last.width, t.last.depth);
        fprintf(stderr, "step %d member %dx%d loss %.4f wall ms %.1f\n", it, t.last.width, t.last.depth, t.last.loss,
                ms);
    }
    printf("members");
    for (int i = 0; i < o.warmup + o.steps; i++) printf(" %s", members + (size_t)i * 16);
    printf("\nwarmup %d steps %d (%s)\n", o.warmup, o.steps, o.member ? "fixed member" : "the trainer's elastic cycle");
    qsort(wall, (size_t)o.steps, sizeof(double), compare_doubles);
    double median = o.steps % 2 ? wall[o.steps / 2] : 0.5 * (wall[o.steps / 2 - 1] + wall[o.steps / 2]);
    printf("step median wall ms %.2f cpu ms %.2f images/s %.2f\n", median, median, t.config.batch_size / (median / 1e3));
    printf("peak device memory GiB %.2f (allocated through poa; cuBLASLt's workspace included)\n",
           cuda.memory.peak / 1073741824.0);
    if (profiled) {
        /* one more step, every launch and GEMM between events */
        g.exec.profile = &profile;
        for (int x = 0; x < 2; x++) { /* the passes copied the exec when they were made */
            g.branch[x].global.exec.profile = g.branch[x].local.exec.profile = &profile;
            g.branch[x].heads.exec.profile = &profile;
        }
        g.teacher_pass.exec.profile = g.teacher_heads.exec.profile = &profile;
        double ms;
        if (step(&g, &b, &ms, &e) || poa_cuda_profile_collect(&profile, &cuda, &e)) {
            fprintf(stderr, "step_gpu: profiled step: %s\n", e.message);
            return 1;
        }
        int *order = malloc(sizeof(int) * (size_t)profile.kinds);
        double total = 0;
        for (int i = 0; i < profile.kinds; i++) order[i] = i, total += profile.milliseconds[i];
        qsort_r(order, (size_t)profile.kinds, sizeof(int), by_time, &profile);
        printf("profile: one step (member %dx%d), %.2f ms wall, %.2f ms in %d kinds of launches and GEMMs\n",
               t.last.width, t.last.depth, ms, total, profile.kinds);
        for (int i = 0; i < profile.kinds; i++) {
            int k = order[i];
            printf("  %-44s %9.3f ms %6.2f%% %6ld calls\n", profile.kind[k], profile.milliseconds[k],
                   100 * profile.milliseconds[k] / total, profile.calls[k]);
        }
        free(order);
    }
    free(wall), free(members), free(o.overrides);
    poa_synthetic_batch_free(&b);
    poa_cuda_train_free(&g);
    poa_cuda_profile_free(&profile, &cuda);
    poa_cublaslt_free(&lt);
    poa_trainer_free(&t);
    poa_cuda_close(&cuda);
    return 0;
}
