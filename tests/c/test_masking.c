/* test_masking.c: statistics of iBOT block masks and their collation over many draws,
   against the rules of reference §6.3-6.4 (14 x 14 grid, blocks of 4..98 cells with
   aspect in [0.3, 1/0.3], never more than the target; B of 2B slots masked with
   stratified ratios in [0.1, 0.5], spread over both global crops by the shuffle). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "masking.h"

int main(void) {
    poa_mask_generator g;
    poa_mask_generator_init(&g, 14, 14);
    CHECK("mask generator constants", g.min_patches == 4 && g.max_patches == 98, "%d %d",
          g.min_patches, g.max_patches);

    /* Single blocks on an empty grid: shape and size rules. */
    unsigned char mask[196];
    int bad_shape = 0, over_budget = 0, blocks = 0;
    double log_aspect_sum = 0;
    for (int i = 0; i < 20000; i++) {
        poa_rng rng = poa_rng_make(1, 0, (uint64_t)i, 0, 0, 7);
        memset(mask, 0, sizeof mask);
        int budget = 4 + i % 95, h = 0, w = 0;
        int added = poa_mask_add_block(&g, &rng, mask, budget, &h, &w);
        if (added == 0) continue;
        blocks++;
        if (h < 1 || w < 1 || h >= 14 || w >= 14 || added != h * w) bad_shape++;
        /* round(sqrt(a r)) / round(sqrt(a / r)) with r in [0.3, 3.33]: h / w stays within
           that range widened by the rounding of each side (half a cell). */
        if ((h - 0.5) / (w + 0.5) > 1 / 0.3 || (h + 0.5) / (w - 0.5 > 0 ? w - 0.5 : 1e-9) < 0.3)
            bad_shape++;
        if (added > budget) over_budget++;
        log_aspect_sum += log((double)h / w);
    }
    CHECK("blocks placed", blocks > 19000, "%d of 20000 single blocks placed", blocks);
    CHECK("block shapes", bad_shape == 0, "%d blocks break the shape rules", bad_shape);
    CHECK("block within budget", over_budget == 0, "%d blocks over budget", over_budget);
    CHECK("block aspect symmetric", fabs(log_aspect_sum / blocks) < 0.03,
          "mean log(h/w) %.4f", log_aspect_sum / blocks);

    /* Whole masks: never above target, close to it on average. */
    long target_sum = 0, got_sum = 0;
    int exceed = 0, short_masks = 0;
    for (int i = 0; i < 20000; i++) {
        poa_rng rng = poa_rng_make(2, 0, (uint64_t)i, 0, 0, 7);
        int target = 19 + i % 80; /* int(196 * U(0.1, 0.5)) covers 19..98 */
        int got = poa_mask_generate(&g, &rng, target, mask);
        int count = 0;
        for (int t = 0; t < 196; t++) count += mask[t];
        if (got > target || count != got) exceed++;
        if (got < target) short_masks++;
        target_sum += target;
        got_sum += got;
    }
    double fill = (double)got_sum / target_sum;
    CHECK("mask never exceeds target", exceed == 0, "%d masks above target", exceed);
    CHECK("mask fills its target on average", fill > 0.9 && fill <= 1.0,
          "masked / target = %.4f (%d of 20000 short)", fill, short_masks);
    printf("info: masked/target %.4f, %.1f%% of masks short of target\n", fill, short_masks / 200.0);
    memset(mask, 1, sizeof mask);
    CHECK("empty target gives empty mask", poa_mask_generate(&g, NULL, 0, mask) == 0 &&
          memchr(mask, 1, sizeof mask) == NULL, "non-empty");

    /* Collate: B = 50, 2B = 100 slots. */
    int B = 50, slots = 2 * B, batches = 400;
    poa_mask_batch mb;
    poa_error e;
    CHECK("mask batch alloc", poa_mask_batch_alloc(&mb, slots, 196, &e) == 0, "%s", e.message);
    int wrong_masked_share = 0, wrong_indices = 0, wrong_weights = 0, wrong_strata = 0;
    int wrong_upperbound = 0, masked_in_first_crop = 0, masked_total = 0;
    int expect_upper = 0;
    for (int i = 0; i < B; i++) expect_upper += (int)(196 * (i + 1 == B ? 0.5 : 0.1 + (i + 1) * (0.4 / B)));
    for (int n = 0; n < batches; n++) {
        poa_rng rng = poa_rng_make(3, 0, (uint64_t)n, 0, 0, 9);
        poa_collate_masks(&g, &rng, 0.5, 0.1, 0.5, &mb);
        int counts[100], masked_slots = 0, k = 0;
        for (int s = 0; s < slots; s++) {
            counts[s] = 0;
            for (int t = 0; t < 196; t++) counts[s] += mb.masks[s * 196 + t];
            if (counts[s] > 0) {
                masked_slots++;
                if (s < B) masked_in_first_crop++;
            }
            float wsum = 0;
            for (int t = 0; t < 196; t++)
                if (mb.masks[s * 196 + t]) {
                    if (k >= mb.masked || mb.indices[k] != s * 196 + t) wrong_indices++;
                    else wsum += mb.weights[k];
                    k++;
                }
            if (counts[s] > 0 && fabsf(wsum - 1.0f) > 1e-4f) wrong_weights++;
        }
        masked_total += masked_slots;
        if (masked_slots != B) wrong_masked_share++;
        if (k != mb.masked) wrong_indices++;
        if (mb.upperbound != expect_upper) wrong_upperbound++;
        /* Stratified: the i-th smallest count is at most int(196 * p_{i+1}) where
           p = linspace(0.1, 0.5, B + 1), and the non-empty ones at least ~int(196*0.1)/2. */
        int sorted[100];
        memcpy(sorted, counts, sizeof counts);
        for (int a = 1; a < slots; a++)
            for (int b = a; b > 0 && sorted[b - 1] > sorted[b]; b--) {
                int t = sorted[b]; sorted[b] = sorted[b - 1]; sorted[b - 1] = t;
            }
        for (int i = 0; i < B; i++)
            if (sorted[B + i] > (int)(196 * (0.1 + (i + 1) * 0.4 / B)) + 0) wrong_strata++;
    }
    CHECK("collate masks B of 2B slots", wrong_masked_share == 0, "%d batches wrong", wrong_masked_share);
    CHECK("collate indices match masks", wrong_indices == 0, "%d mismatches", wrong_indices);
    CHECK("collate weights 1/count", wrong_weights == 0, "%d slots wrong", wrong_weights);
    CHECK("collate upperbound", wrong_upperbound == 0, "%d batches (want %d, last %d)",
          wrong_upperbound, expect_upper, mb.upperbound);
    CHECK("collate stratified ratios", wrong_strata == 0, "%d order statistics above their stratum",
          wrong_strata);
    double first_share = (double)masked_in_first_crop / masked_total;
    CHECK("collate shuffle spreads masks over both crops", fabs(first_share - 0.5) < 0.02,
          "share in crop 1: %.4f", first_share);
    poa_mask_batch_free(&mb);
    CHECK_EXIT();
}
