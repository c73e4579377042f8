/* bench/vit_cpu.c: CPU forward + backward time of two members of a family
   (the intact net and the smallest member) on one batch of global crops.
     build/bench/vit_cpu RECIPE BATCH [ITERATIONS]
   Prints one line per member: "member WxD batch B image S forward+backward ms M".
   bench/vit_cpu_torch.py runs this and the same step in PyTorch and prints the ratio. */
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "random.h"
#include "recipe.h"
#include "vit.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: vit_cpu RECIPE BATCH [ITERATIONS]\n");
        return 2;
    }
    long batch = atol(argv[2]);
    int iterations = argc > 3 ? atoi(argv[3]) : 10;
    poa_error e = { { 0 } };
    poa_recipe r;
    poa_vit m;
    lua_State *L = poa_lua_open(&e);
    if (!L || poa_recipe_load(L, argv[1], &r, &e) || poa_vit_init(&m, &r.vit, &e)) {
        fprintf(stderr, "vit_cpu: %s\n", e.message);
        return 1;
    }
    lua_close(L);
    real *params = malloc(sizeof(real) * (size_t)m.parameter_count);
    real *grads = calloc((size_t)m.parameter_count, sizeof(real));
    poa_vit_init_parameters(&m, params, 1);
    const int S = r.global_crop_size;
    long n_images = batch * r.vit.in_channels * S * S;
    real *images = malloc(sizeof(real) * (size_t)n_images);
    for (long i = 0; i < n_images; i++) images[i] = (real)poa_normal(2, 0, (uint64_t)i);
    int members[2][2] = { { r.width_max, r.depth_max }, { r.width_min, r.depth_min } };
    for (int k = 0; k < 2; k++) {
        poa_vit_pass pass;
        if (poa_vit_pass_init(&pass, &m, members[k][0], members[k][1], batch, S, POA_VIT_PASS_TRAINING, &e)) {
            fprintf(stderr, "vit_cpu: %s\n", e.message);
            return 1;
        }
        long n_out = pass.rows * pass.width;
        real *dout = malloc(sizeof(real) * (size_t)n_out);
        for (long i = 0; i < n_out; i++) dout[i] = (real)poa_normal(3, 0, (uint64_t)i);
        double *times = malloc(sizeof(double) * (size_t)iterations);
        for (int it = -2; it < iterations; it++) { /* two warm-up steps */
            double t0 = now_ms();
            poa_vit_forward(&pass, params, images, NULL, NULL);
            poa_vit_backward(&pass, params, grads, dout);
            if (it >= 0) times[it] = now_ms() - t0;
        }
        qsort(times, (size_t)iterations, sizeof(double), compare);
        printf("member %dx%d batch %ld image %d kernels %s forward+backward ms %.3f\n",
               members[k][0], members[k][1], batch, S, pass.kernels->origin,
               times[iterations / 2]);
        free(times);
        free(dout);
        poa_vit_pass_free(&pass);
    }
    free(params), free(grads), free(images);
    poa_vit_free(&m);
    return 0;
}
