/* data_loader.h: the multi-crop training loader. Worker threads decode and augment the
   samples of the next `prefetch` steps into batch buffers laid out as reference §3.1:
   global crops crop-major ([crop 1 of all B images; crop 2 of all B], each 3 x S x S
   float, normalized) and local crops crop-major (L*B x 3 x s x s), plus the iBOT masks of
   the global crops. Which image a sample is and every random choice it sees depend only
   on (seed, rank, step, sample, crop), never on the number of threads or their timing.
   Sampling: an epoch is a pseudo-random permutation of the dataset (a keyed bijection,
   no state), ranks take interleaved slices of B (the sharded infinite sampler).
   A file that cannot be decoded is skipped with a warning naming it, counted, and the
   sample is replaced by another image chosen from the same (seed, rank, step, sample). */
#ifndef POA_DATA_LOADER_H
#define POA_DATA_LOADER_H

#include <stdint.h>

#include "augment.h"
#include "data_folder.h"
#include "masking.h"

typedef struct poa_loader_config {
    const poa_dataset *dataset;
    poa_augment_config augment;
    int batch_size;    /* images per rank per step (B) */
    int threads;       /* worker threads (>= 1) */
    int prefetch;      /* steps prepared ahead (>= 1) */
    uint64_t seed;
    int rank, world_size;
    long first_step;   /* to resume */
    int patch_size;    /* iBOT mask grid = global size / patch size */
    double mask_probability, mask_ratio_min, mask_ratio_max; /* 0.5, 0.1, 0.5 */
    int full_decode;   /* 1: decode at full size (no DCT scaling), as PIL does */
    int quiet;         /* 1: count skipped files without printing warnings */
} poa_loader_config;

/* Fills the reference defaults for a dataset and crop sizes (ViT-L: 224 / 96 / 8 / 16). */
void poa_loader_config_default(poa_loader_config *c, const poa_dataset *dataset,
                               int global_size, int local_size, int local_count,
                               int patch_size, int batch_size);

typedef struct poa_batch {
    long step;
    int batch_size, global_count, local_count, global_size, local_size;
    float *global_crops; /* global_count * B * 3 * global_size^2 */
    float *local_crops;  /* local_count * B * 3 * local_size^2 */
    int *image_indices;  /* B: dataset index of each image (after replacement) */
    int *labels;         /* B */
    poa_mask_batch masks;
    long skipped;        /* unreadable files skipped while building this batch */
} poa_batch;

typedef struct poa_loader poa_loader;

int poa_loader_create(poa_loader **out, const poa_loader_config *c, poa_error *e);
/* The next step's batch; valid until the next call. Blocks until it is ready. */
int poa_loader_next(poa_loader *l, const poa_batch **batch, poa_error *e);
/* Files skipped so far (each skip counted once per occurrence). */
long poa_loader_skipped(const poa_loader *l);
void poa_loader_destroy(poa_loader *l);

/* The dataset index of (step, rank, sample) before any replacement. */
long poa_loader_sample_index(const poa_loader_config *c, long step, int sample);

/* Decodes and augments one sample into its crop slots (used by the workers; exposed for
   the benchmark). Returns the dataset index used, or -1 if no readable image was found. */
typedef struct poa_sample_worker poa_sample_worker;
poa_sample_worker *poa_sample_worker_create(void);
void poa_sample_worker_destroy(poa_sample_worker *w);
long poa_load_sample(poa_sample_worker *w, const poa_loader_config *c, long step, int sample,
                     poa_batch *batch, long *skipped, poa_error *e);

#endif
