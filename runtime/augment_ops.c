/* augment_ops.c: the single image ops of the multi-crop augmentation, on 8-bit RGB with
   PIL's rounding at each step (see augment.h for the semantics each one follows). */
#include "augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void poa_flip_horizontal(unsigned char *img, int w, int h) {
    for (int y = 0; y < h; y++) {
        unsigned char *row = img + (size_t)y * w * 3;
        for (int a = 0, b = w - 1; a < b; a++, b--)
            for (int c = 0; c < 3; c++) {
                unsigned char t = row[3 * a + c];
                row[3 * a + c] = row[3 * b + c];
                row[3 * b + c] = t;
            }
    }
}

/* ---- colour ---- */

/* PIL's luma: L = (19595 R + 38470 G + 7471 B + 2^15) >> 16. */
static unsigned char luma(const unsigned char *p) {
    return (unsigned char)((p[0] * 19595u + p[1] * 38470u + p[2] * 7471u + 0x8000u) >> 16);
}

/* PIL Image.blend(degenerate, image, f) for one value: computed in float, truncated, and
   clipped when f is outside [0, 1]. */
static unsigned char blend(int degenerate, int value, float factor) {
    float v = (float)degenerate + factor * (float)(value - degenerate);
    if (v <= 0.0f) return 0;
    if (v >= 255.0f) return 255;
    return (unsigned char)v;
}

void poa_adjust_brightness(unsigned char *img, int w, int h, float factor) {
    unsigned char lut[256];
    for (int i = 0; i < 256; i++) lut[i] = blend(0, i, factor);
    for (size_t i = 0, n = (size_t)w * h * 3; i < n; i++) img[i] = lut[img[i]];
}

void poa_adjust_contrast(unsigned char *img, int w, int h, float factor) {
    size_t n = (size_t)w * h;
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += luma(img + 3 * i);
    int mean = (int)(sum / (double)n + 0.5);
    unsigned char lut[256];
    for (int i = 0; i < 256; i++) lut[i] = blend(mean, i, factor);
    for (size_t i = 0; i < n * 3; i++) img[i] = lut[img[i]];
}

void poa_adjust_saturation(unsigned char *img, int w, int h, float factor) {
    for (size_t i = 0, n = (size_t)w * h; i < n; i++) {
        unsigned char *p = img + 3 * i;
        int l = luma(p);
        for (int c = 0; c < 3; c++) p[c] = blend(l, p[c], factor);
    }
}

/* RGB -> HSV with 8-bit channels as PIL converts: H and S truncated from [0, 1) x 255. */
static void rgb_to_hsv(const unsigned char *p, unsigned char *hsv) {
    int r = p[0], g = p[1], b = p[2];
    int max = r > g ? (r > b ? r : b) : (g > b ? g : b);
    int min = r < g ? (r < b ? r : b) : (g < b ? g : b);
    hsv[2] = (unsigned char)max;
    if (max == min) {
        hsv[0] = hsv[1] = 0;
        return;
    }
    float range = (float)(max - min), s = range / (float)max;
    float rc = (float)(max - r) / range, gc = (float)(max - g) / range, bc = (float)(max - b) / range;
    float hue;
    if (r == max) hue = bc - gc;
    else if (g == max) hue = 2.0f + rc - bc;
    else hue = 4.0f + gc - rc;
    hue = (float)fmod(hue / 6.0 + 1.0, 1.0);
    hsv[0] = poa_clip8((int)(hue * 255.0f));
    hsv[1] = poa_clip8((int)(s * 255.0f));
}

/* HSV -> RGB as PIL converts: six sectors, p/q/t rounded. */
static void hsv_to_rgb(const unsigned char *hsv, unsigned char *p) {
    int h = hsv[0], s = hsv[1], v = hsv[2];
    if (s == 0) {
        p[0] = p[1] = p[2] = (unsigned char)v;
        return;
    }
    int sector = (int)floorf((float)h * 6.0f / 255.0f);
    float f = (float)h * 6.0f / 255.0f - (float)sector, fs = (float)s / 255.0f;
    unsigned char pp = poa_clip8((int)roundf((float)v * (1.0f - fs)));
    unsigned char q = poa_clip8((int)roundf((float)v * (1.0f - fs * f)));
    unsigned char t = poa_clip8((int)roundf((float)v * (1.0f - fs * (1.0f - f))));
    unsigned char vv = (unsigned char)v;
    switch (sector % 6) {
    case 0: p[0] = vv; p[1] = t; p[2] = pp; break;
    case 1: p[0] = q; p[1] = vv; p[2] = pp; break;
    case 2: p[0] = pp; p[1] = vv; p[2] = t; break;
    case 3: p[0] = pp; p[1] = q; p[2] = vv; break;
    case 4: p[0] = t; p[1] = pp; p[2] = vv; break;
    default: p[0] = vv; p[1] = pp; p[2] = q; break;
    }
}

void poa_adjust_hue(unsigned char *img, int w, int h, float factor) {
    /* np.uint8(factor * 255): the float truncated toward zero, then wrapped mod 256. */
    unsigned char shift = (unsigned char)(int)(factor * 255.0f);
    for (size_t i = 0, n = (size_t)w * h; i < n; i++) {
        unsigned char hsv[3];
        rgb_to_hsv(img + 3 * i, hsv);
        hsv[0] = (unsigned char)(hsv[0] + shift);
        hsv_to_rgb(hsv, img + 3 * i);
    }
}

void poa_grayscale(unsigned char *img, int w, int h) {
    for (size_t i = 0, n = (size_t)w * h; i < n; i++) {
        unsigned char *p = img + 3 * i;
        p[0] = p[1] = p[2] = luma(p);
    }
}

/* ---- blur, solarize, normalize ---- */

static int reflect(int i, int n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
    return i;
}

int poa_gaussian_blur(unsigned char *img, int w, int h, int kernel_size, float sigma,
                      float **scratch, size_t *scratch_size, poa_error *e) {
    if (kernel_size < 1 || kernel_size % 2 == 0 || kernel_size > 63 || sigma <= 0)
        return poa_fail(e, "gaussian blur: bad kernel size %d or sigma %g", kernel_size, sigma);
    float k[63], total = 0;
    int half = kernel_size / 2;
    for (int i = 0; i < kernel_size; i++) {
        float x = (float)(i - half) / sigma;
        k[i] = expf(-0.5f * x * x);
        total += k[i];
    }
    for (int i = 0; i < kernel_size; i++) k[i] /= total;
    size_t need = (size_t)w * h * 3;
    if (need > *scratch_size) {
        float *p = realloc(*scratch, need * sizeof(float));
        if (!p) return poa_fail(e, "gaussian blur: out of memory");
        *scratch = p;
        *scratch_size = need;
    }
    float *mid = *scratch;
    for (int y = 0; y < h; y++) /* vertical pass (reflect rows) into float */
        for (int x = 0; x < w * 3; x++) {
            float s = 0;
            for (int j = 0; j < kernel_size; j++)
                s += k[j] * img[(size_t)reflect(y + j - half, h) * w * 3 + x];
            mid[(size_t)y * w * 3 + x] = s;
        }
    for (int y = 0; y < h; y++) /* horizontal pass (reflect columns), round half to even */
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                float s = 0;
                for (int j = 0; j < kernel_size; j++)
                    s += k[j] * mid[((size_t)y * w + reflect(x + j - half, w)) * 3 + c];
                img[((size_t)y * w + x) * 3 + c] = poa_clip8((int)rintf(s));
            }
    return 0;
}

void poa_solarize(unsigned char *img, int w, int h, int threshold) {
    for (size_t i = 0, n = (size_t)w * h * 3; i < n; i++)
        if (img[i] >= threshold) img[i] = (unsigned char)(255 - img[i]);
}

