/* masking.h: iBOT block masks (reference §6.3, BEiT-style block masking) and the mask
   part of the collate function (§6.4: stratified ratios over the global-crop slots,
   shuffled, flat indices and per-token weights). */
#ifndef POA_MASKING_H
#define POA_MASKING_H

#include "data_random.h"
#include "error.h"

typedef struct poa_mask_generator {
    int height, width;          /* the patch grid, e.g. 14 x 14 */
    int min_patches, max_patches; /* per block: 4 and 0.5 * height * width */
    double log_aspect_min, log_aspect_max; /* log 0.3, log (1 / 0.3) */
} poa_mask_generator;

void poa_mask_generator_init(poa_mask_generator *g, int height, int width);

/* Adds one block to mask (height*width bytes, 0/1) with at most budget new cells: up to
   10 tries of area U(min, budget), log-uniform aspect, h = round(sqrt(area r)),
   w = round(sqrt(area / r)), h < height, w < width, a uniform position; the first try
   that adds 1..budget new cells is kept. Returns the cells added (0 if none);
   *block_h / *block_w (may be NULL) get the kept block's shape. */
int poa_mask_add_block(const poa_mask_generator *g, poa_rng *rng, unsigned char *mask,
                       int budget, int *block_h, int *block_w);

/* A mask with up to target cells: blocks until the count reaches target or a block
   adds nothing. Returns the number of masked cells. */
int poa_mask_generate(const poa_mask_generator *g, poa_rng *rng, int target,
                      unsigned char *mask);

/* The masks of one batch's 2B global-crop slots (slot = crop * B + image). */
typedef struct poa_mask_batch {
    int slots, tokens;        /* 2B and height * width */
    unsigned char *masks;     /* slots * tokens, 0/1 */
    int *indices;             /* flat indices (slot * tokens + token) of masked tokens */
    float *weights;           /* per masked token: 1 / masked tokens of its slot */
    int masked;               /* number of masked tokens (n_masked_patches) */
    int upperbound;           /* sum over masked slots of int(tokens * ratio upper edge) */
} poa_mask_batch;

int poa_mask_batch_alloc(poa_mask_batch *b, int slots, int tokens, poa_error *e);
void poa_mask_batch_free(poa_mask_batch *b);

/* Fills b: int(slots * probability) slots get int(tokens * U(p_i, p_i+1)) target cells,
   p = linspace(ratio_min, ratio_max, masked slots + 1); the others are empty; the slot
   order is then shuffled. */
void poa_collate_masks(const poa_mask_generator *g, poa_rng *rng, double probability,
                       double ratio_min, double ratio_max, poa_mask_batch *b);

#endif
