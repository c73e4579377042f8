/* data_synthetic.h: a batch of random crops, laid out as the loader's (reference §3.1), for
   tests and benchmarks that must not depend on a dataset. */
#ifndef POA_DATA_SYNTHETIC_H
#define POA_DATA_SYNTHETIC_H

#include <stdint.h>

#include "data_loader.h"
#include "train_config.h"

/* Crops ~ N(0, 1) per value (as after the loader's normalisation), keyed by seed, and the
   collate function's iBOT masks for the global-crop slots with the config's probability and
   ratios. Free with poa_synthetic_batch_free. */
int poa_synthetic_batch(poa_batch *batch, const poa_train_config *config, uint64_t seed,
                        poa_error *e);
void poa_synthetic_batch_free(poa_batch *batch);

#endif
