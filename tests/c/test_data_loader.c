/* test_data_loader.c: the threaded multi-crop loader on the odd-file folder
   (tests/data/folder: 5 readable images, 3 bad files). Same seed, rank and step give
   bit-identical batches with 1 and with 4 worker threads; bad files are skipped and
   counted, never returned; an epoch visits every image once; layout and value ranges. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data_loader.h"

#define STEPS 6

typedef struct run {
    float *global, *local;
    int *indices, *labels;
    unsigned char *masks;
    long skipped;
} run;

static int collect(const poa_dataset *d, int threads, int rank, run *r, poa_error *e) {
    poa_loader_config c;
    poa_loader_config_default(&c, d, 32, 16, 4, 8, 4); /* tiny_vit crops, B = 4 */
    c.threads = threads;
    c.prefetch = 3;
    c.seed = 1234;
    c.rank = rank;
    c.world_size = 2;
    c.quiet = 1;
    size_t g = 2 * 4 * 3 * 32 * 32, l = 4 * 4 * 3 * 16 * 16, m = 2 * 4 * 16;
    r->global = malloc(sizeof(float) * g * STEPS);
    r->local = malloc(sizeof(float) * l * STEPS);
    r->indices = malloc(sizeof(int) * 4 * STEPS);
    r->labels = malloc(sizeof(int) * 4 * STEPS);
    r->masks = malloc(m * STEPS);
    poa_loader *loader;
    if (poa_loader_create(&loader, &c, e) != 0) return -1;
    for (int s = 0; s < STEPS; s++) {
        const poa_batch *b;
        if (poa_loader_next(loader, &b, e) != 0) {
            poa_loader_destroy(loader);
            return -1;
        }
        if (b->step != s || b->masks.slots != 8 || b->masks.tokens != 16) {
            poa_loader_destroy(loader);
            return poa_fail(e, "batch %ld: %d mask slots of %d tokens", b->step, b->masks.slots,
                            b->masks.tokens);
        }
        memcpy(r->global + g * s, b->global_crops, sizeof(float) * g);
        memcpy(r->local + l * s, b->local_crops, sizeof(float) * l);
        memcpy(r->indices + 4 * s, b->image_indices, sizeof(int) * 4);
        memcpy(r->labels + 4 * s, b->labels, sizeof(int) * 4);
        memcpy(r->masks + m * s, b->masks.masks, m);
        r->skipped += b->skipped;
    }
    if (poa_loader_skipped(loader) < r->skipped) r->skipped = -1; /* total includes prefetch */
    poa_loader_destroy(loader);
    return 0;
}

static void free_run(run *r) {
    free(r->global);
    free(r->local);
    free(r->indices);
    free(r->labels);
    free(r->masks);
}

int main(void) {
    poa_dataset d;
    poa_error e = { "" };
    if (poa_dataset_open_folder(&d, POA_SOURCE_DIR "tests/data/folder", &e) != 0) {
        CHECK("loader dataset", 0, "%s", e.message);
        CHECK_EXIT();
    }
    run one = { 0 }, four = { 0 }, other_rank = { 0 };
    int ok1 = collect(&d, 1, 0, &one, &e);
    CHECK("loader 1 thread", ok1 == 0, "%s", e.message);
    int ok4 = collect(&d, 4, 0, &four, &e);
    CHECK("loader 4 threads", ok4 == 0, "%s", e.message);
    int ok_rank = collect(&d, 2, 1, &other_rank, &e);
    CHECK("loader rank 1", ok_rank == 0, "%s", e.message);
    if (ok1 == 0 && ok4 == 0 && ok_rank == 0) {
        size_t g = 2 * 4 * 3 * 32 * 32 * STEPS, l = 4 * 4 * 3 * 16 * 16 * STEPS;
        CHECK("1 vs 4 threads: global crops identical",
              memcmp(one.global, four.global, g * sizeof(float)) == 0, "differ");
        CHECK("1 vs 4 threads: local crops identical",
              memcmp(one.local, four.local, l * sizeof(float)) == 0, "differ");
        CHECK("1 vs 4 threads: images, labels, masks identical",
              memcmp(one.indices, four.indices, sizeof(int) * 4 * STEPS) == 0 &&
              memcmp(one.labels, four.labels, sizeof(int) * 4 * STEPS) == 0 &&
              memcmp(one.masks, four.masks, 2 * 4 * 16 * STEPS) == 0, "differ");
        CHECK("1 vs 4 threads: same skips", one.skipped == four.skipped, "%ld vs %ld",
              one.skipped, four.skipped);
        CHECK("another rank sees other crops", memcmp(one.global, other_rank.global,
              g * sizeof(float)) != 0, "rank 0 and rank 1 batches are equal");
        /* Bad files (empty, not_an_image, truncated) are skipped and never returned. */
        int bad_returned = 0, label_wrong = 0;
        for (int i = 0; i < 4 * STEPS; i++) {
            const char *p = d.paths[one.indices[i]];
            if (strstr(p, "empty") || strstr(p, "not_an_image") || strstr(p, "truncated"))
                bad_returned++;
            if (one.labels[i] != d.labels[one.indices[i]]) label_wrong++;
        }
        CHECK("bad files never returned", bad_returned == 0, "%d samples are bad files", bad_returned);
        CHECK("labels follow the images", label_wrong == 0, "%d wrong", label_wrong);
        /* With 3 of 8 files bad, 24 samples hit some; every hit is counted. */
        long first_choice_bad = 0;
        poa_loader_config c;
        poa_loader_config_default(&c, &d, 32, 16, 4, 8, 4);
        c.seed = 1234;
        c.world_size = 2;
        for (int s = 0; s < STEPS; s++)
            for (int i = 0; i < 4; i++) {
                const char *p = d.paths[poa_loader_sample_index(&c, s, i)];
                if (strstr(p, "empty") || strstr(p, "not_an_image") || strstr(p, "truncated"))
                    first_choice_bad++;
            }
        CHECK("skips counted", one.skipped >= first_choice_bad && first_choice_bad > 0,
              "skipped %ld, first-choice bad samples %ld", one.skipped, first_choice_bad);
        float lo = (0 - 0.485f) / 0.229f - 1e-5f, hi = (1 - 0.406f) / 0.225f + 1e-5f;
        int out_of_range = 0;
        for (size_t i = 0; i < g; i++) out_of_range += one.global[i] < lo || one.global[i] > hi;
        for (size_t i = 0; i < l; i++) out_of_range += one.local[i] < lo || one.local[i] > hi;
        CHECK("normalized values in range", out_of_range == 0, "%d values outside", out_of_range);
    }
    /* The sampler: positions 0..7 of an epoch (two ranks x B = 4) are a permutation. */
    poa_loader_config c;
    poa_loader_config_default(&c, &d, 32, 16, 4, 8, 4);
    c.seed = 99;
    c.world_size = 2;
    int seen[8] = { 0 }, duplicates = 0;
    for (int rank = 0; rank < 2; rank++) {
        c.rank = rank;
        for (int i = 0; i < 4; i++) duplicates += seen[poa_loader_sample_index(&c, 0, i)]++ > 0;
    }
    CHECK("epoch is a permutation over ranks", duplicates == 0, "%d repeated images", duplicates);
    free_run(&one);
    free_run(&four);
    free_run(&other_rank);
    poa_dataset_free(&d);
    CHECK_EXIT();
}
