/* augment.c: random parameters of one crop (torchvision's draws, our random stream) and
   the per-crop pipeline of reference §6.2. */
#include "augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void poa_augment_config_default(poa_augment_config *c, int global_size, int local_size,
                                int local_count, int paper_blur) {
    memset(c, 0, sizeof *c);
    poa_crop_spec global = { 2, global_size, 0.32f, 1.0f, 0, 0 };
    c->global_first = global;
    c->global_first.blur_probability = paper_blur ? 1.0f : 0.0f;
    c->global_second = global;
    c->global_second.blur_probability = paper_blur ? 0.1f : 0.9f;
    c->global_second.solarize_probability = 0.2f;
    poa_crop_spec local = { local_count, local_size, 0.05f, 0.32f, 0.5f, 0 };
    c->local = local;
    c->global_count = 2;
    c->flip_probability = 0.5f;
    c->jitter_probability = 0.8f;
    c->grayscale_probability = 0.2f;
    c->brightness = 0.4f;
    c->contrast = 0.4f;
    c->saturation = 0.2f;
    c->hue = 0.1f;
    c->sigma_min = 0.1f;
    c->sigma_max = 2.0f;
    c->blur_kernel = 9;
}

void poa_random_resized_crop(poa_rng *rng, int width, int height, float scale_min,
                             float scale_max, int *top, int *left, int *crop_h, int *crop_w) {
    double area = (double)width * height;
    double log_min = log(3.0 / 4.0), log_max = log(4.0 / 3.0);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * poa_rng_range(rng, scale_min, scale_max);
        double aspect = exp(poa_rng_range(rng, log_min, log_max));
        int w = (int)nearbyint(sqrt(target * aspect)); /* Python round(): half to even */
        int h = (int)nearbyint(sqrt(target / aspect));
        if (w > 0 && w <= width && h > 0 && h <= height) {
            *top = (int)poa_rng_below(rng, (uint64_t)(height - h + 1));
            *left = (int)poa_rng_below(rng, (uint64_t)(width - w + 1));
            *crop_h = h;
            *crop_w = w;
            return;
        }
    }
    /* Fallback: the centred crop with the ratio clamped to [3/4, 4/3]. */
    double ratio = (double)width / height;
    int w = width, h = height;
    if (ratio < 3.0 / 4.0) h = (int)nearbyint(w / (3.0 / 4.0));
    else if (ratio > 4.0 / 3.0) w = (int)nearbyint(h * (4.0 / 3.0));
    *crop_w = w;
    *crop_h = h;
    *top = (height - h) / 2;
    *left = (width - w) / 2;
}

void poa_draw_crop_params(const poa_augment_config *c, const poa_crop_spec *spec, poa_rng *rng,
                          int width, int height, poa_crop_params *p) {
    memset(p, 0, sizeof *p);
    poa_random_resized_crop(rng, width, height, spec->scale_min, spec->scale_max, &p->top,
                            &p->left, &p->height, &p->width);
    p->flip = poa_rng_uniform(rng) < c->flip_probability;
    p->jitter = poa_rng_uniform(rng) < c->jitter_probability;
    for (int i = 0; i < 4; i++) p->order[i] = i;
    for (int i = 3; i > 0; i--) { /* a uniform permutation (Fisher-Yates) */
        int j = (int)poa_rng_below(rng, (uint64_t)i + 1), t = p->order[i];
        p->order[i] = p->order[j];
        p->order[j] = t;
    }
    p->brightness = (float)poa_rng_range(rng, 1 - c->brightness, 1 + c->brightness);
    p->contrast = (float)poa_rng_range(rng, 1 - c->contrast, 1 + c->contrast);
    p->saturation = (float)poa_rng_range(rng, 1 - c->saturation, 1 + c->saturation);
    p->hue = (float)poa_rng_range(rng, -c->hue, c->hue);
    p->grayscale = poa_rng_uniform(rng) < c->grayscale_probability;
    double blur = poa_rng_uniform(rng), sigma = poa_rng_range(rng, c->sigma_min, c->sigma_max);
    p->sigma = blur < spec->blur_probability ? (float)sigma : 0.0f;
    p->blur_kernel = c->blur_kernel;
    p->solarize = poa_rng_uniform(rng) < spec->solarize_probability;
}

int poa_augment_crop(const poa_crop_params *p, const unsigned char *image, int image_w,
                     int image_h, int scale_num, int scale_denom, int size,
                     poa_augment_work *work, float *out, poa_error *e) {
    size_t need = (size_t)size * size * 3;
    if (need > work->crop_size) {
        unsigned char *q = realloc(work->crop, need);
        if (!q) return poa_fail(e, "augment: out of memory");
        work->crop = q;
        work->crop_size = need;
    }
    /* The crop box in the decoded image's coordinates (DCT scaling is exactly num/denom). */
    double s = (double)scale_num / scale_denom;
    double x0 = p->left * s, y0 = p->top * s;
    double x1 = fmin((p->left + p->width) * s, image_w), y1 = fmin((p->top + p->height) * s, image_h);
    unsigned char *img = work->crop;
    if (poa_resize_bicubic(image, image_w, image_h, x0, y0, x1, y1, img, size, size,
                           &work->resize_scratch, &work->resize_scratch_size, e) != 0)
        return -1;
    if (p->flip) poa_flip_horizontal(img, size, size);
    for (int i = 0; p->jitter && i < 4; i++) {
        switch (p->order[i]) {
        case 0: poa_adjust_brightness(img, size, size, p->brightness); break;
        case 1: poa_adjust_contrast(img, size, size, p->contrast); break;
        case 2: poa_adjust_saturation(img, size, size, p->saturation); break;
        default: poa_adjust_hue(img, size, size, p->hue); break;
        }
    }
    if (p->grayscale) poa_grayscale(img, size, size);
    if (p->sigma > 0 && poa_gaussian_blur(img, size, size, p->blur_kernel, p->sigma, &work->blur_scratch,
                                          &work->blur_scratch_size, e) != 0)
        return -1;
    if (p->solarize) poa_solarize(img, size, size, 128);
    poa_normalize(img, size, size, poa_imagenet_mean, poa_imagenet_std, out);
    return 0;
}

void poa_augment_work_free(poa_augment_work *work) {
    free(work->crop);
    free(work->resize_scratch);
    free(work->blur_scratch);
    memset(work, 0, sizeof *work);
}
