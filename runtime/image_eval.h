/* image_eval.h: the evaluation transform of poa on 8-bit interleaved RGB images (width*3 bytes a
   row), with the semantics of torchvision 0.14 on PIL images: Resize(round(size * 256 / 224),
   bicubic) -> CenterCrop(size) -> ToTensor -> Normalize(mean, std). Used by the k-NN, the
   linear probe and the features (runtime/knn.c, eval_features.c), its resize by the
   augmentation (augment.h), and copied as it is into the program of `poa export --what c`
   (its main reads folders of JPEGs). Self-contained: error.h only. */
#ifndef POA_IMAGE_EVAL_H
#define POA_IMAGE_EVAL_H

#include <stddef.h>

#include "error.h"

static inline unsigned char poa_clip8(int v) { return (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v); }

/* PIL-style bicubic resize (a = -0.5, antialiased: the kernel widens by the downscale
   factor) of the source box [x0, x1) x [y0, y1) (real coordinates) to out_w x out_h;
   horizontal pass, 8-bit rounding, vertical pass, as PIL. scratch grows as needed. */
int poa_resize_bicubic(const unsigned char *src, int src_w, int src_h, double x0, double y0,
                       double x1, double y1, unsigned char *dst, int out_w, int out_h,
                       unsigned char **scratch, size_t *scratch_size, poa_error *e);

/* ToTensor + Normalize into planar CHW float: (x / 255 - mean[c]) / std[c]. */
void poa_normalize(const unsigned char *img, int w, int h, const float mean[3],
                   const float std[3], float *out);
extern const float poa_imagenet_mean[3], poa_imagenet_std[3];

/* The eval transform of one decoded RGB image: resize the shorter side to
   round(size * 256 / 224) (PIL bicubic) and center crop size x size into out. */
int poa_eval_transform(const unsigned char *rgb, int width, int height, int size,
                       unsigned char *out, unsigned char **scratch,
                       size_t *scratch_size, poa_error *e);

#endif
