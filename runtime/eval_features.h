/* eval_features.h: a member's frozen features for evaluation (k-NN, linear probe): its forward in
   eval mode over eval-transformed (or augmented) images, and from chosen active blocks the
   output passed through the final LayerNorm, as DINOv2's get_intermediate_layers(norm=True):
   the CLS token of each chosen block, then (avgpool) the mean patch token of the last one. */
#ifndef POA_EVAL_FEATURES_H
#define POA_EVAL_FEATURES_H

#include "error.h"
#include "knn.h"
#include "real.h"
#include "vit.h"

#define POA_FEATURES_MAX_LAYERS 4

typedef struct poa_feature_spec {
    int layer_count;                        /* 1..4 */
    int layers[POA_FEATURES_MAX_LAYERS];    /* active-block positions, ascending, < depth */
    int avgpool;                            /* append the mean patch token of the last layer */
} poa_feature_spec;

/* Columns of one image's feature row: (layer_count + avgpool) * width. */
int poa_feature_columns(const poa_feature_spec *s, int width);

/* features: images->count rows of poa_feature_columns: [cls(layers[0]) .. cls(layers[n-1]),
   mean patch(layers[n-1])]. batch <= 0 picks a batch whose activations fit in ~1 GiB; progress (or
   NULL) counts the images. */
int poa_features_compute(const poa_vit *model, const real *params, int width, int depth,
                         const poa_feature_spec *spec, const poa_knn_images *images, long batch,
                         real *features, poa_progress *progress, poa_error *e);

#endif
