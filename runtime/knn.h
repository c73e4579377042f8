/* knn.h: weighted k-NN evaluation of a backbone's members (reference
   poa-vit-and-training.md §8.1, formats-and-platform.md §4.1, the DINOv2 variant).

   Features: the eval transform (resize the shorter side to round(size * 256 / 224),
   PIL bicubic; center crop size x size; ImageNet normalisation), the member's
   final-LayerNorm CLS token, L2-normalised. Classifier: cosine similarity of each
   val feature to every train feature, the top max_k = max(ks) neighbours (fewer when
   the bank is smaller), weights softmax(sim / T) over those, class score for k = the
   sum of the weights of the first k neighbours of that class; top-1 and top-5. */
#ifndef POA_KNN_H
#define POA_KNN_H

#include "data_folder.h"
#include "error.h"
#include "progress.h"
#include "real.h"
#include "vit.h"

#define POA_KNN_TEMPERATURE 0.07
#define POA_KNN_K_COUNT 4
extern const int poa_knn_default_ks[POA_KNN_K_COUNT]; /* 10, 20, 100, 200 */

/* ---- the classifier ---- */

/* train: n_train x dim, val: n_val x dim, both L2-normalised rows; labels in
   [0, class_count). For each k of ks (k_count of them): top1[i], top5[i] = the
   fraction of val rows whose label is the best class / among the best min(5,
   class_count) classes. Ties between classes go to the lower class index;
   between neighbours of equal similarity, to the lower train index.
   predictions, if not NULL, receives n_val x k_count predicted classes. */
int poa_knn_classify(const real *train, const int *train_labels, long n_train,
                     const real *val, const int *val_labels, long n_val, int dim,
                     int class_count, const int *ks, int k_count, double temperature,
                     double *top1, double *top5, int *predictions, poa_error *e);

/* ---- the subset and the images ---- */

/* limit evenly spaced indices of [0, count): index i = floor(i * count / limit), so
   a class-sorted dataset keeps every class once limit >= the number of classes
   times the largest class share. limit <= 0 or >= count: all of them. Returns how
   many were written (indices NULL: only counts them). */
long poa_knn_subset(long count, long limit, long *indices);

/* Images decoded and eval-transformed once (they do not depend on the member):
   count x size x size x 3 bytes (the center crop, before normalisation). */
typedef struct poa_knn_images {
    long count;
    int size;
    unsigned char *pixels;
    int *labels;
    int class_count;
} poa_knn_images;

/* Decodes the subset of `limit` images (poa_knn_subset) of d and applies resize +
   center crop; threads <= 0 uses OpenMP's default; progress (or NULL) counts the images.
   Errors name the file. */
int poa_knn_load_images(poa_knn_images *out, const poa_dataset *d, long limit, int size,
                        int threads, poa_progress *progress, poa_error *e);
/* The same subset through the linear probe's train transform (DINOv2): RandomResizedCrop
   (size, scale 0.08..1, bicubic) and a horizontal flip (0.5), drawn from (seed, epoch, index). */
int poa_knn_load_augmented(poa_knn_images *out, const poa_dataset *d, long limit, int size,
                           int threads, unsigned long long seed, long epoch, poa_error *e);
void poa_knn_images_free(poa_knn_images *images);

/* ---- features ---- */

/* features (images->count x width) of member (width, depth): the L2-normalised
   final-LN CLS token. batch <= 0 picks a batch whose activations fit in ~1 GiB; progress (or
   NULL) counts the images. */
int poa_knn_features(const poa_vit *model, const real *params, int width, int depth,
                     const poa_knn_images *images, long batch, real *features,
                     poa_progress *progress, poa_error *e);

/* The raw-pixel baseline: each image as the network is fed it (eval transform, ImageNet
   normalisation, channels first: poa_knn_pixel_dim values), L2-normalised, into features
   (images->count x poa_knn_pixel_dim). */
static inline int poa_knn_pixel_dim(const poa_knn_images *images) {
    return 3 * images->size * images->size;
}
int poa_knn_pixel_features(const poa_knn_images *images, real *features, poa_error *e);

#endif
