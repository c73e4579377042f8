/* augment.h: the DINOv2 / POA multi-crop augmentation (reference §6.2) on 8-bit RGB
   images, with the semantics of torchvision 0.14 applied to PIL images, which is what the
   reference pipeline runs:
     RandomResizedCrop(size, scale, ratio 3/4..4/3, bicubic) -> RandomHorizontalFlip(0.5)
     -> RandomApply(ColorJitter(0.4, 0.4, 0.2, 0.1), p=0.8) (four ops in random order)
     -> RandomGrayscale(0.2) -> GaussianBlur(p, 9x9, sigma U(0.1, 2)) -> [RandomSolarize(128, p)]
     -> ToTensor + Normalize(ImageNet mean/std).
   Every op keeps 8-bit pixels between steps exactly as PIL does (each op rounds or truncates
   the way PIL's does), so a crop can be compared with torchvision's pixel for pixel. */
#ifndef POA_AUGMENT_H
#define POA_AUGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "data_random.h"
#include "error.h"
#include "image_eval.h" /* the bicubic resize, ToTensor + Normalize */

/* ---- single ops (augment_ops.c); images are interleaved RGB, width*3 bytes a row ---- */

void poa_flip_horizontal(unsigned char *img, int w, int h);
/* ImageEnhance semantics: out = degenerate + f * (img - degenerate), truncated to 8 bits. */
void poa_adjust_brightness(unsigned char *img, int w, int h, float factor);
void poa_adjust_contrast(unsigned char *img, int w, int h, float factor);
void poa_adjust_saturation(unsigned char *img, int w, int h, float factor);
/* torchvision adjust_hue on PIL: RGB -> 8-bit HSV, H += uint8(factor * 255), back to RGB. */
void poa_adjust_hue(unsigned char *img, int w, int h, float factor);
/* PIL convert("L") (ITU-R 601-2 luma in 16-bit fixed point), replicated to 3 channels. */
void poa_grayscale(unsigned char *img, int w, int h);
/* torchvision gaussian_blur: 9x9 (kernel_size odd) Gaussian with sigma, reflect padding,
   computed in float, rounded half to even. */
int poa_gaussian_blur(unsigned char *img, int w, int h, int kernel_size, float sigma,
                      float **scratch, size_t *scratch_size, poa_error *e);
void poa_solarize(unsigned char *img, int w, int h, int threshold);

/* ---- random parameters and the per-crop pipeline (augment.c) ---- */

typedef struct poa_crop_spec {
    int count, size;
    float scale_min, scale_max;
    float blur_probability;      /* per crop of this kind */
    float solarize_probability;
} poa_crop_spec;

typedef struct poa_augment_config {
    poa_crop_spec global_first;  /* global crop 1 */
    poa_crop_spec global_second; /* global crop 2 (and any further global crops) */
    poa_crop_spec local;
    int global_count;
    float flip_probability, jitter_probability, grayscale_probability;
    float brightness, contrast, saturation, hue; /* ColorJitter strengths */
    float sigma_min, sigma_max;
    int blur_kernel;
} poa_augment_config;

/* The reference's crops with its effective blur probabilities 0 / 0.9 / 0.5 (paper_blur = 0)
   or the paper's 1.0 / 0.1 / 0.5 (paper_blur = 1). Solarize 0.2 on global crop 2 only. */
void poa_augment_config_default(poa_augment_config *c, int global_size, int local_size,
                                int local_count, int paper_blur);

/* Every random choice of one crop, drawn before decoding (only the image size is needed). */
typedef struct poa_crop_params {
    int top, left, height, width; /* RandomResizedCrop box in full-resolution pixels */
    int flip;
    int jitter, order[4];         /* order: 0 brightness, 1 contrast, 2 saturation, 3 hue */
    float brightness, contrast, saturation, hue;
    int grayscale;
    float sigma;                  /* 0: no blur */
    int blur_kernel;
    int solarize;
} poa_crop_params;

/* torchvision RandomResizedCrop.get_params with our random stream. */
void poa_random_resized_crop(poa_rng *rng, int width, int height, float scale_min,
                             float scale_max, int *top, int *left, int *crop_h, int *crop_w);
void poa_draw_crop_params(const poa_augment_config *c, const poa_crop_spec *spec, poa_rng *rng,
                          int width, int height, poa_crop_params *p);

/* Applies p to `image` (decoded at scale num/denom of full resolution) and writes the
   normalized size x size crop as planar float CHW to out. work holds scratch buffers. */
typedef struct poa_augment_work {
    unsigned char *crop, *resize_scratch;
    size_t crop_size, resize_scratch_size;
    float *blur_scratch;
    size_t blur_scratch_size;
} poa_augment_work;
int poa_augment_crop(const poa_crop_params *p, const unsigned char *image, int image_w,
                     int image_h, int scale_num, int scale_denom, int size,
                     poa_augment_work *work, float *out, poa_error *e);
void poa_augment_work_free(poa_augment_work *work);

#endif
