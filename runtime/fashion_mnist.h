/* fashion_mnist.h: Fashion-MNIST (Debian dataset-fashion-mnist, gzip'd IDX files in
   /usr/share/datasets/fashion-mnist) turned into a JPEG folder tree that the loader reads
   like ImageNet: out/train/<k>_<class>/<n>.jpg (60,000) and out/val/... (10,000); the
   28 x 28 grey images are resized (bicubic) to size x size and stored as RGB JPEGs
   (quality 95, 4:4:4). Idempotent: a finished tree holds out/.complete describing it,
   and a second run with the same settings does nothing. */
#ifndef POA_FASHION_MNIST_H
#define POA_FASHION_MNIST_H

#include <stdio.h>

#include "error.h"

#define POA_FASHION_MNIST_SOURCE "/usr/share/datasets/fashion-mnist"

extern const char *const poa_fashion_mnist_classes[10];

typedef struct poa_fashion_mnist_result {
    int train, val;           /* images written (or found) per split */
    int train_per_class[10], val_per_class[10];
    int already_done;         /* 1: the tree was complete, nothing written */
} poa_fashion_mnist_result;

/* Reads one IDX file: images (n x rows x cols u8) or labels (n u8); *data is malloc'd. */
int poa_idx_read(const char *path, int expect_dims, unsigned char **data, int *n, int *rows,
                 int *cols, poa_error *e);

/* limit > 0 converts only the first `limit` images of each split (tests); progress (or NULL):
   where each split's progress lines go (progress.h). */
int poa_fashion_mnist_convert(const char *source, const char *out, int size, int limit,
                              FILE *progress, poa_fashion_mnist_result *result, poa_error *e);

#endif
