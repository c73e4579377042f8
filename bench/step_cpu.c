/* bench/step_cpu.c: CPU time of full POA training steps (reference §3-§5): teacher on the
   global crops with Sinkhorn-Knopp targets, the intact and the elastic student (global crops
   masked when iBOT is on, local crops), heads, every loss term, backward, clipping per
   module, AdamW, EMA, on one synthetic micro-batch reused every step.
     build/bench/step_cpu [RECIPE] [--steps N] [--warmup W] [--ibot 0|1] [--batch B]
                          [--threads T] [--member WxD] [section.field=value ...]
   RECIPE defaults to recipes/quickstart.lua. --member fixes the elastic member of every
   step (the cycle's slots are all set to it); without it the members come from the
   trainer's own cycle and are printed in order, warm-up steps included, so that a peer
   can replay the same sequence (bench/step_cpu_torch.py does). Prints the step's shapes
   ("config ..."), the members, the mask counts per global-crop slot, then the median wall
   and process-CPU ms per step and images/s. */
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "data_random.h"
#include "masking.h"
#include "random.h"
#include "data_synthetic.h"
#include "trainer.h"

#include "step_info.h"

static double clock_ms(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), compare);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void usage(void) {
    fprintf(stderr, "usage: step_cpu [RECIPE] [--steps N] [--warmup W] [--ibot 0|1] [--batch B] "
                    "[--threads T] [--member WxD] [section.field=value ...]\n");
}

int main(int argc, char **argv) {
    poa_choose_library_settings(argv); /* as poa itself: OpenMP waiting, OpenBLAS's kernels */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(), 0;
    step_options o = { .recipe = "recipes/quickstart.lua", .steps = 5, .warmup = 2, .ibot = 1,
                       .threads = (int)sysconf(_SC_NPROCESSORS_ONLN) };
    if (parse_step_options(argc, argv, &o)) return usage(), 2;
    const char *recipe = o.recipe, *member = o.member;
    const int steps = o.steps, warmup = o.warmup, ibot = o.ibot, threads = o.threads;

    poa_set_threads(threads);
    poa_error e = { { 0 } };
    lua_State *L = poa_lua_open(&e);
    poa_train_config config;
    poa_trainer t;
    if (!L || poa_train_config_load(L, recipe, o.overrides, o.override_count, &config, &e)) {
        fprintf(stderr, "step_cpu: %s\n", e.message);
        return 1;
    }
    int fixed_w = 0, fixed_d = 0;
    if (member && poa_recipe_member(L, &config.recipe, member, &fixed_w, &fixed_d, &e)) {
        fprintf(stderr, "step_cpu: %s\n", e.message);
        return 1;
    }
    lua_close(L);
    if (poa_trainer_init(&t, &config, &e)) {
        fprintf(stderr, "step_cpu: %s\n", e.message);
        return 1;
    }
    if (member) /* every slot of the cycle is the chosen member */
        for (int i = 0; i < t.config.slot_count; i++)
            t.config.slot_width[i] = fixed_w, t.config.slot_depth[i] = fixed_d;

    const poa_train_config *c = &t.config;
    poa_batch b;
    if (poa_synthetic_batch(&b, c, 11, &e)) {
        fprintf(stderr, "step_cpu: %s\n", e.message);
        return 1;
    }
    print_step_info(c, &b, ibot, threads);

    double *wall = malloc(sizeof(double) * (size_t)steps), *cpu = malloc(sizeof(double) * (size_t)steps);
    char *members = calloc((size_t)(warmup + steps), 16);
    for (int it = -warmup; it < steps; it++) {
        double w0 = clock_ms(CLOCK_MONOTONIC), c0 = clock_ms(CLOCK_PROCESS_CPUTIME_ID);
        poa_trainer_begin_step(&t);
        if (poa_trainer_micro_batch(&t, &b, 0, &e)) {
            fprintf(stderr, "step_cpu: %s\n", e.message);
            return 1;
        }
        poa_trainer_end_step(&t);
        double w1 = clock_ms(CLOCK_MONOTONIC), c1 = clock_ms(CLOCK_PROCESS_CPUTIME_ID);
        if (it >= 0) wall[it] = w1 - w0, cpu[it] = c1 - c0;
        snprintf(members + (size_t)(it + warmup) * 16, 16, "%dx%d", t.last.width, t.last.depth);
        fprintf(stderr, "step %d member %dx%d loss %.4f wall ms %.1f\n", it, t.last.width,
                t.last.depth, t.last.loss, w1 - w0);
    }
    printf("members");
    for (int i = 0; i < warmup + steps; i++) printf(" %s", members + (size_t)i * 16);
    printf("\nwarmup %d steps %d (%s)\n", warmup, steps,
           member ? "fixed member" : "the trainer's elastic cycle");
    double wall_ms = median(wall, steps), cpu_ms = median(cpu, steps);
    printf("step median wall ms %.2f cpu ms %.2f images/s %.2f\n", wall_ms, cpu_ms,
           c->batch_size / (wall_ms / 1e3));
    free(wall), free(cpu), free(members), free(o.overrides);
    free(b.global_crops), free(b.local_crops);
    poa_mask_batch_free(&b.masks);
    poa_trainer_free(&t);
    return 0;
}
