/* bench/loss_curve.c: the GPU step's loss curve against the CPU backend's, side by side: two
   trainers from the same initialisation take the same synthetic batches (a new one every step)
   for N steps, one on the CPU (runtime/train_cpu.c), one on the GPU (runtime/cuda_train.c).
     build/bench/loss_curve [RECIPE] [--steps N] [--precision bf16|fp32] [section.field=value ...]
   RECIPE defaults to tests/recipes/tiny_train.lua, N to 300. Prints every 10th step's losses
   and, at the end, "curve steps N max relative difference X mean Y final loss cpu A gpu B":
   how far the GPU run's loss strays from the CPU run's (the two drift apart slowly as rounding
   differences compound; in fp32 they should stay within a few percent over a few hundred
   steps). Without a GPU it says so and exits with status 2. */
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_train.h"
#include "data_synthetic.h"
#include "recipe.h"

static void usage(void) {
    fprintf(stderr, "usage: loss_curve [RECIPE] [--steps N] [--precision bf16|fp32] [section.field=value ...]\n");
}

static int load(poa_trainer *t, const char *recipe, const char **overrides, int count, poa_error *e) {
    lua_State *L = poa_lua_open(e);
    poa_train_config config;
    int rc = !L || poa_train_config_load(L, recipe, overrides, count, &config, e) ? -1 : 0;
    if (L) lua_close(L);
    return rc ? -1 : poa_trainer_init(t, &config, e);
}

int main(int argc, char **argv) {
    const char *recipe = "tests/recipes/tiny_train.lua", *precision = "fp32";
    long steps = 300;
    const char **overrides = calloc((size_t)argc + 1, sizeof(char *));
    int count = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atol(argv[++i]);
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc) precision = argv[++i];
        else if (strchr(argv[i], '=')) overrides[count++] = argv[i];
        else if (argv[i][0] != '-') recipe = argv[i];
        else return usage(), 2;
    }
    if (steps < 1 || (strcmp(precision, "bf16") && strcmp(precision, "fp32"))) return usage(), 2;
    poa_error e = { { 0 } };
    poa_cuda cuda;
    if (poa_cuda_open(&cuda, &e)) {
        fprintf(stderr, "loss_curve: %s\n", e.message);
        return cuda.no_gpu ? 2 : 1;
    }
    poa_trainer cpu, gpu;
    poa_cublaslt lt;
    poa_cuda_train g;
    if (load(&cpu, recipe, overrides, count, &e) || load(&gpu, recipe, overrides, count, &e) ||
        poa_cublaslt_init(&lt, &cuda, 0, &e)) {
        fprintf(stderr, "loss_curve: %s\n", e.message);
        return 1;
    }
    poa_cuda_exec exec = { .cuda = &cuda, .lt = &lt };
    if (poa_cuda_train_init(&g, &gpu, &exec, !strcmp(precision, "bf16"), &e)) {
        fprintf(stderr, "loss_curve: %s\n", e.message);
        return 1;
    }
    printf("loss_curve %s: %ld steps of %d images, GPU %s in %s\n", recipe, steps, cpu.config.batch_size,
           cuda.device_name, precision);
    double worst = 0, sum = 0;
    for (long s = 0; s < steps; s++) {
        poa_batch b;
        if (poa_synthetic_batch(&b, &cpu.config, 1000 + (uint64_t)s, &e)) {
            fprintf(stderr, "loss_curve: %s\n", e.message);
            return 1;
        }
        poa_trainer_begin_step(&cpu);
        poa_cuda_train_begin_step(&g);
        if (poa_trainer_micro_batch(&cpu, &b, 0, &e) || poa_cuda_train_micro_batch(&g, &b, 0, &e) ||
            poa_cuda_train_reduce_step(&g, &e)) {
            fprintf(stderr, "loss_curve: step %ld: %s\n", s, e.message);
            return 1;
        }
        poa_trainer_end_step(&cpu);
        if (poa_cuda_train_end_step(&g, &e)) {
            fprintf(stderr, "loss_curve: step %ld: %s\n", s, e.message);
            return 1;
        }
        poa_synthetic_batch_free(&b);
        double d = fabs(gpu.last.loss - cpu.last.loss) / fabs(cpu.last.loss);
        worst = d > worst ? d : worst, sum += d;
        if (s % 10 == 0 || s + 1 == steps)
            printf("step %4ld member %dx%d loss cpu %.6f gpu %.6f relative difference %.2e\n", s, cpu.last.width,
                   cpu.last.depth, cpu.last.loss, gpu.last.loss, d);
    }
    printf("curve steps %ld max relative difference %.3e mean %.3e final loss cpu %.6f gpu %.6f\n", steps, worst,
           sum / (double)steps, cpu.last.loss, gpu.last.loss);
    poa_cuda_train_free(&g);
    poa_cublaslt_free(&lt);
    poa_trainer_free(&cpu), poa_trainer_free(&gpu);
    poa_cuda_close(&cuda);
    free(overrides);
    return 0;
}
