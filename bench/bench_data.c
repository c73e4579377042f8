/* bench_data.c: decode + multi-crop throughput of the loader's per-sample path on one
   core, for the ViT-L recipe's crops (2 x 224 + 8 x 96, reference §6.2 probabilities).
     build/bench/bench_data [image.jpg] [images]
   Prints "images/s/core: X" with DCT-scaled decoding (the loader's default) and with
   full-size decoding (what PIL does). bench/data_torchvision.py runs the same on the same
   image with PIL + torchvision and prints the ratio. Not a test. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "data_loader.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int run(const poa_dataset *d, int images, int full_decode, double *rate) {
    poa_loader_config c;
    poa_loader_config_default(&c, d, 224, 96, 8, 16, 1);
    c.full_decode = full_decode;
    c.seed = 7;
    poa_batch b = { 0 };
    b.batch_size = 1;
    b.global_size = 224;
    b.local_size = 96;
    b.global_crops = malloc(sizeof(float) * 2 * 3 * 224 * 224);
    b.local_crops = malloc(sizeof(float) * 8 * 3 * 96 * 96);
    b.image_indices = malloc(sizeof(int));
    b.labels = malloc(sizeof(int));
    poa_sample_worker *w = poa_sample_worker_create();
    long skipped = 0;
    poa_error e = { "" };
    double start = now();
    for (int i = 0; i < images; i++)
        if (poa_load_sample(w, &c, i, 0, &b, &skipped, &e) < 0) {
            fprintf(stderr, "bench_data: %s\n", e.message);
            return -1;
        }
    *rate = images / (now() - start);
    poa_sample_worker_destroy(w);
    free(b.global_crops);
    free(b.local_crops);
    free(b.image_indices);
    free(b.labels);
    return 0;
}

int main(int argc, char **argv) {
    char *path = argc > 1 ? argv[1] : "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg";
    int images = argc > 2 ? atoi(argv[2]) : 200;
    int label = 0;
    poa_dataset d = { 1, &path, &label, 1, NULL };
    double scaled, full;
    if (run(&d, images, 0, &scaled) != 0 || run(&d, images, 1, &full) != 0) return 1;
    printf("image: %s, %d images, crops 2 x 224 + 8 x 96, 1 thread\n", path, images);
    printf("images/s/core: %.1f (DCT-scaled decode)\n", scaled);
    printf("images/s/core full decode: %.1f\n", full);
    return 0;
}
