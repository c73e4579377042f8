/* image_eval.c: the evaluation transform of poa (k-NN, linear probe, features, and the exported
   program's image folders): PIL-style bicubic resize, resize + center crop, ToTensor +
   Normalize (image_eval.h). Self-contained (error.h only), so `poa export --what c` copies it
   into the member's program as it is. */
#include "image_eval.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const float poa_imagenet_mean[3] = { 0.485f, 0.456f, 0.406f };
const float poa_imagenet_std[3] = { 0.229f, 0.224f, 0.225f };

/* ---- bicubic resize ---- */

/* Cubic convolution kernel with a = -0.5 (Keys), support 2. */
static double cubic(double x) {
    const double a = -0.5;
    if (x < 0) x = -x;
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
}

enum { WEIGHT_BITS = 22 }; /* fixed-point weights: sum of 8-bit x weight fits in int32 */

/* For each output index, the first input index, the tap count, and the fixed-point
   weights (taps per output <= max_taps). The filter widens by the downscale factor. */
typedef struct axis_filter {
    int *first, *taps, max_taps;
    int32_t *weights;
} axis_filter;

static int make_filter(axis_filter *f, int in_size, double box0, double box1, int out_size) {
    double scale = (box1 - box0) / out_size, filter_scale = scale < 1 ? 1 : scale;
    double support = 2.0 * filter_scale;
    f->max_taps = (int)ceil(support) * 2 + 1;
    f->first = malloc(sizeof(int) * out_size);
    f->taps = malloc(sizeof(int) * out_size);
    f->weights = malloc(sizeof(int32_t) * out_size * f->max_taps);
    double *w = malloc(sizeof(double) * f->max_taps);
    if (!f->first || !f->taps || !f->weights || !w) {
        free(w);
        return -1;
    }
    /* Taps stay inside the box (rounded out to whole pixels): torchvision crops first and
       then resizes the crop, so pixels outside the box never contribute. */
    int origin = (int)floor(box0), end = (int)ceil(box1);
    if (origin < 0) origin = 0;
    if (end > in_size) end = in_size;
    for (int i = 0; i < out_size; i++) {
        double center = box0 - origin + (i + 0.5) * scale;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > end - origin) hi = end - origin;
        lo += origin;
        hi += origin;
        center += origin;
        int n = hi - lo;
        if (n > f->max_taps) n = f->max_taps;
        double total = 0;
        for (int j = 0; j < n; j++) {
            w[j] = cubic((j + lo - center + 0.5) / filter_scale);
            total += w[j];
        }
        for (int j = 0; j < n; j++) {
            double v = total != 0 ? w[j] / total : 0;
            f->weights[i * f->max_taps + j] =
                (int32_t)(v * (1 << WEIGHT_BITS) + (v < 0 ? -0.5 : 0.5));
        }
        f->first[i] = lo;
        f->taps[i] = n;
    }
    free(w);
    return 0;
}

static void free_filter(axis_filter *f) {
    free(f->first);
    free(f->taps);
    free(f->weights);
}

int poa_resize_bicubic(const unsigned char *src, int src_w, int src_h, double x0, double y0,
                       double x1, double y1, unsigned char *dst, int out_w, int out_h,
                       unsigned char **scratch, size_t *scratch_size, poa_error *e) {
    axis_filter fx = { 0 }, fy = { 0 };
    if (make_filter(&fx, src_w, x0, x1, out_w) != 0 || make_filter(&fy, src_h, y0, y1, out_h) != 0) {
        free_filter(&fx);
        free_filter(&fy);
        return poa_fail(e, "resize: out of memory");
    }
    /* Only the source rows the vertical pass reads get a horizontal pass. */
    int row0 = fy.first[0], row1 = fy.first[out_h - 1] + fy.taps[out_h - 1];
    size_t need = (size_t)(row1 - row0) * out_w * 3;
    if (need > *scratch_size) {
        unsigned char *p = realloc(*scratch, need);
        if (!p) {
            free_filter(&fx);
            free_filter(&fy);
            return poa_fail(e, "resize: out of memory");
        }
        *scratch = p;
        *scratch_size = need;
    }
    unsigned char *mid = *scratch;
    const int32_t half = 1 << (WEIGHT_BITS - 1);
    for (int y = row0; y < row1; y++) {
        const unsigned char *in = src + (size_t)y * src_w * 3;
        unsigned char *out = mid + (size_t)(y - row0) * out_w * 3;
        for (int x = 0; x < out_w; x++) {
            const int32_t *k = fx.weights + x * fx.max_taps;
            const unsigned char *p = in + fx.first[x] * 3;
            int32_t r = half, g = half, b = half;
            for (int j = 0; j < fx.taps[x]; j++, p += 3) {
                r += p[0] * k[j];
                g += p[1] * k[j];
                b += p[2] * k[j];
            }
            out[3 * x] = poa_clip8(r >> WEIGHT_BITS);
            out[3 * x + 1] = poa_clip8(g >> WEIGHT_BITS);
            out[3 * x + 2] = poa_clip8(b >> WEIGHT_BITS);
        }
    }
    int row_bytes = out_w * 3;
    for (int y = 0; y < out_h; y++) {
        const int32_t *k = fy.weights + y * fy.max_taps;
        const unsigned char *base = mid + (size_t)(fy.first[y] - row0) * row_bytes;
        unsigned char *out = dst + (size_t)y * row_bytes;
        for (int x = 0; x < row_bytes; x++) {
            int32_t v = half;
            for (int j = 0; j < fy.taps[y]; j++) v += base[(size_t)j * row_bytes + x] * k[j];
            out[x] = poa_clip8(v >> WEIGHT_BITS);
        }
    }
    free_filter(&fx);
    free_filter(&fy);
    return 0;
}

void poa_normalize(const unsigned char *img, int w, int h, const float mean[3],
                   const float std[3], float *out) {
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 256; i++) lut[c][i] = ((float)i / 255.0f - mean[c]) / std[c];
    size_t plane = (size_t)w * h;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++) out[c * plane + i] = lut[c][img[3 * i + c]];
}

int poa_eval_transform(const unsigned char *rgb, int width, int height, int size,
                       unsigned char *out, unsigned char **scratch,
                       size_t *scratch_size, poa_error *e) {
    /* torchvision Resize(int): the shorter side becomes `resize`, the longer
       int(resize * long / short); then CenterCrop with int(round(...)) offsets. */
    int resize = (int)lround(size * 256.0 / 224.0);
    int new_w, new_h;
    if (width <= height) {
        new_w = resize;
        new_h = (int)((long long)resize * height / width);
    } else {
        new_h = resize;
        new_w = (int)((long long)resize * width / height);
    }
    if (new_w < size || new_h < size)
        return poa_fail(e, "eval transform: %dx%d resized to %dx%d is smaller than the %d crop",
                        width, height, new_w, new_h, size);
    unsigned char *resized = malloc((size_t)new_w * new_h * 3);
    if (!resized) return poa_fail(e, "eval transform: out of memory");
    int rc = poa_resize_bicubic(rgb, width, height, 0, 0, width, height, resized, new_w, new_h,
                                scratch, scratch_size, e);
    if (rc == 0) {
        int top = (int)nearbyint((new_h - size) / 2.0), left = (int)nearbyint((new_w - size) / 2.0);
        for (int y = 0; y < size; y++)
            memcpy(out + (size_t)y * size * 3, resized + ((size_t)(top + y) * new_w + left) * 3,
                   (size_t)size * 3);
    }
    free(resized);
    return rc;
}
