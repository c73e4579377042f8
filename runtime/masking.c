/* masking.c: iBOT block masks and their collation (see masking.h). */
#include "masking.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void poa_mask_generator_init(poa_mask_generator *g, int height, int width) {
    g->height = height;
    g->width = width;
    g->min_patches = 4;
    g->max_patches = (int)(0.5 * height * width);
    g->log_aspect_min = log(0.3);
    g->log_aspect_max = log(1 / 0.3);
}

int poa_mask_add_block(const poa_mask_generator *g, poa_rng *rng, unsigned char *mask,
                       int budget, int *block_h, int *block_w) {
    for (int attempt = 0; attempt < 10; attempt++) {
        double area = poa_rng_range(rng, g->min_patches, budget);
        double aspect = exp(poa_rng_range(rng, g->log_aspect_min, g->log_aspect_max));
        int h = (int)nearbyint(sqrt(area * aspect)), w = (int)nearbyint(sqrt(area / aspect));
        if (h >= g->height || w >= g->width) continue;
        int top = (int)poa_rng_below(rng, (uint64_t)(g->height - h + 1));
        int left = (int)poa_rng_below(rng, (uint64_t)(g->width - w + 1));
        int already = 0;
        for (int y = top; y < top + h; y++)
            for (int x = left; x < left + w; x++) already += mask[y * g->width + x];
        int added = h * w - already;
        if (added > 0 && added <= budget) {
            for (int y = top; y < top + h; y++)
                for (int x = left; x < left + w; x++) mask[y * g->width + x] = 1;
            if (block_h) *block_h = h;
            if (block_w) *block_w = w;
            return added;
        }
    }
    return 0;
}

int poa_mask_generate(const poa_mask_generator *g, poa_rng *rng, int target,
                      unsigned char *mask) {
    memset(mask, 0, (size_t)g->height * g->width);
    int count = 0;
    while (count < target) {
        int budget = target - count;
        if (budget > g->max_patches) budget = g->max_patches;
        int added = poa_mask_add_block(g, rng, mask, budget, NULL, NULL);
        if (added == 0) break;
        count += added;
    }
    return count;
}

int poa_mask_batch_alloc(poa_mask_batch *b, int slots, int tokens, poa_error *e) {
    memset(b, 0, sizeof *b);
    b->slots = slots;
    b->tokens = tokens;
    size_t n = (size_t)slots * tokens;
    b->masks = calloc(n, 1);
    b->indices = malloc(n * sizeof *b->indices);
    b->weights = malloc(n * sizeof *b->weights);
    if (!b->masks || !b->indices || !b->weights) {
        poa_mask_batch_free(b);
        return poa_fail(e, "masks: out of memory for %d x %d", slots, tokens);
    }
    return 0;
}

void poa_mask_batch_free(poa_mask_batch *b) {
    free(b->masks);
    free(b->indices);
    free(b->weights);
    memset(b, 0, sizeof *b);
}

void poa_collate_masks(const poa_mask_generator *g, poa_rng *rng, double probability,
                       double ratio_min, double ratio_max, poa_mask_batch *b) {
    int slots = b->slots, tokens = b->tokens;
    int masked_slots = (int)(slots * probability);
    int *order = malloc(sizeof(int) * slots);
    unsigned char *drawn = malloc((size_t)slots * tokens);
    b->upperbound = 0;
    for (int i = 0; i < slots; i++) {
        unsigned char *m = drawn + (size_t)i * tokens;
        if (i < masked_slots) {
            /* np.linspace: start + i * step, the last point exactly the stop */
            double step = (ratio_max - ratio_min) / masked_slots;
            double lo = ratio_min + i * step;
            double hi = i + 1 == masked_slots ? ratio_max : ratio_min + (i + 1) * step;
            poa_mask_generate(g, rng, (int)(tokens * poa_rng_range(rng, lo, hi)), m);
            b->upperbound += (int)(tokens * hi);
        } else {
            memset(m, 0, (size_t)tokens);
        }
        order[i] = i;
    }
    for (int i = slots - 1; i > 0; i--) { /* shuffle the slots (Fisher-Yates) */
        int j = (int)poa_rng_below(rng, (uint64_t)i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    b->masked = 0;
    for (int s = 0; s < slots; s++) {
        unsigned char *m = b->masks + (size_t)s * tokens;
        memcpy(m, drawn + (size_t)order[s] * tokens, (size_t)tokens);
        int count = 0;
        for (int t = 0; t < tokens; t++) count += m[t];
        for (int t = 0; t < tokens; t++)
            if (m[t]) {
                b->indices[b->masked] = s * tokens + t;
                b->weights[b->masked++] = 1.0f / (float)count;
            }
    }
    free(order);
    free(drawn);
}
