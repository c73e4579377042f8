/* data_synthetic.c: random crops and real iBOT masks in the loader's batch layout. */
#include "data_synthetic.h"

#include <stdlib.h>
#include <string.h>

#include "random.h"

int poa_synthetic_batch(poa_batch *b, const poa_train_config *c, uint64_t seed, poa_error *e) {
    const poa_recipe *r = &c->recipe;
    memset(b, 0, sizeof *b);
    b->batch_size = c->batch_size, b->global_count = r->global_crop_count;
    b->local_count = r->local_crop_count, b->global_size = r->global_crop_size;
    b->local_size = r->local_crop_size;
    long ng = (long)b->global_count * b->batch_size * 3 * b->global_size * b->global_size;
    long nl = (long)b->local_count * b->batch_size * 3 * b->local_size * b->local_size;
    b->global_crops = malloc(sizeof(float) * (size_t)ng);
    b->local_crops = malloc(sizeof(float) * (size_t)nl);
    int grid = b->global_size / r->vit.patch_size;
    if (!b->global_crops || !b->local_crops ||
        poa_mask_batch_alloc(&b->masks, b->global_count * b->batch_size, grid * grid, e)) {
        poa_synthetic_batch_free(b);
        return poa_fail(e, "synthetic batch: out of memory");
    }
    for (long i = 0; i < ng; i++) b->global_crops[i] = (float)poa_normal(seed, 1, (uint64_t)i);
    for (long i = 0; i < nl; i++) b->local_crops[i] = (float)poa_normal(seed, 2, (uint64_t)i);
    poa_mask_generator g;
    poa_mask_generator_init(&g, grid, grid);
    poa_rng rng = poa_rng_make(seed, 0, 0, 0, 0, 7);
    poa_collate_masks(&g, &rng, c->mask_probability, c->mask_ratio_min, c->mask_ratio_max,
                      &b->masks);
    return 0;
}

void poa_synthetic_batch_free(poa_batch *b) {
    free(b->global_crops);
    free(b->local_crops);
    poa_mask_batch_free(&b->masks);
    b->global_crops = b->local_crops = NULL;
}
