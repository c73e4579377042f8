/* jpeg_decode.c: file reading, TurboJPEG decoding with DCT scaling, CMYK conversion. */
#include "jpeg_decode.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

struct poa_jpeg_decoder {
    tjhandle decompress;
    tjhandle compress;
    unsigned char *cmyk; /* scratch for CMYK/YCCK files */
    size_t cmyk_capacity;
};

int poa_image_reserve(poa_image *image, int width, int height, poa_error *e) {
    size_t need = (size_t)width * (size_t)height * 3;
    if (need > image->capacity) {
        unsigned char *p = realloc(image->pixels, need);
        if (!p) return poa_fail(e, "out of memory for a %dx%d image", width, height);
        image->pixels = p;
        image->capacity = need;
    }
    image->width = width;
    image->height = height;
    return 0;
}

void poa_image_free(poa_image *image) {
    free(image->pixels);
    memset(image, 0, sizeof *image);
}

int poa_read_file(const char *path, unsigned char **data, size_t *size, size_t *capacity,
                  poa_error *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return poa_fail(e, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return poa_fail(e, "%s: cannot seek", path);
    }
    long n = ftell(f);
    rewind(f);
    if (n < 0) {
        fclose(f);
        return poa_fail(e, "%s: cannot tell its size", path);
    }
    if ((size_t)n + 1 > *capacity) {
        unsigned char *p = realloc(*data, (size_t)n + 1);
        if (!p) {
            fclose(f);
            return poa_fail(e, "%s: out of memory (%ld bytes)", path, n);
        }
        *data = p;
        *capacity = (size_t)n + 1;
    }
    size_t got = fread(*data, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) return poa_fail(e, "%s: short read (%zu of %ld bytes)", path, got, n);
    *size = got;
    return 0;
}

poa_jpeg_decoder *poa_jpeg_decoder_create(void) {
    poa_jpeg_decoder *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->decompress = tjInitDecompress();
    if (!d->decompress) {
        free(d);
        return NULL;
    }
    return d;
}

void poa_jpeg_decoder_destroy(poa_jpeg_decoder *d) {
    if (!d) return;
    if (d->decompress) tjDestroy(d->decompress);
    if (d->compress) tjDestroy(d->compress);
    free(d->cmyk);
    free(d);
}

int poa_image_header(poa_jpeg_decoder *d, const unsigned char *data, size_t size, int *width,
                     int *height, const char *name, poa_error *e) {
    if (poa_png_is_png(data, size)) return poa_png_header(data, size, width, height, name, e);
    int subsamp, colorspace;
    if (size < 4 || data[0] != 0xFF || data[1] != 0xD8)
        return poa_fail(e, "%s: not a JPEG or PNG file (no JPEG start-of-image marker)", name);
    if (tjDecompressHeader3(d->decompress, data, (unsigned long)size, width, height, &subsamp,
                            &colorspace) != 0)
        return poa_fail(e, "%s: bad JPEG header: %s", name, tjGetErrorStr2(d->decompress));
    if (*width <= 0 || *height <= 0) return poa_fail(e, "%s: empty image", name);
    return 0;
}

/* The smallest TurboJPEG factor num/denom <= 1 with num/denom >= min_scale. */
static void choose_scale(double min_scale, int *num, int *denom) {
    int count;
    tjscalingfactor *f = tjGetScalingFactors(&count);
    *num = 1;
    *denom = 1;
    if (!f) return;
    for (int i = 0; i < count; i++) {
        double s = (double)f[i].num / f[i].denom;
        if (s > 1.0 || s < min_scale) continue;
        if (s < (double)*num / *denom) {
            *num = f[i].num;
            *denom = f[i].denom;
        }
    }
}

/* A warning that means pixels are missing (truncated file) is an error for us; other
   libjpeg warnings (e.g. extraneous bytes before a marker) leave a complete image. */
static int warning_is_fatal(const char *message) {
    return strstr(message, "extraneous bytes") == NULL;
}

static int decode_cmyk(poa_jpeg_decoder *d, const unsigned char *data, size_t size,
                       poa_image *out, const char *name, poa_error *e) {
    size_t need = (size_t)out->width * out->height * 4;
    if (need > d->cmyk_capacity) {
        unsigned char *p = realloc(d->cmyk, need);
        if (!p) return poa_fail(e, "%s: out of memory", name);
        d->cmyk = p;
        d->cmyk_capacity = need;
    }
    if (tjDecompress2(d->decompress, data, (unsigned long)size, d->cmyk, out->width, 0,
                      out->height, TJPF_CMYK, 0) != 0) {
        const char *m = tjGetErrorStr2(d->decompress);
        if (tjGetErrorCode(d->decompress) == TJERR_FATAL || warning_is_fatal(m))
            return poa_fail(e, "%s: cannot decode CMYK JPEG: %s", name, m);
    }
    size_t n = (size_t)out->width * out->height;
    for (size_t i = 0; i < n; i++) {
        unsigned k = d->cmyk[4 * i + 3];
        for (int c = 0; c < 3; c++) {
            unsigned v = d->cmyk[4 * i + c] * k;
            out->pixels[3 * i + c] = (unsigned char)((v + 127) / 255);
        }
    }
    return 0;
}

int poa_image_decode(poa_jpeg_decoder *d, const unsigned char *data, size_t size,
                     double min_scale, poa_image *out, int *scale_num, int *scale_denom,
                     const char *name, poa_error *e) {
    if (poa_png_is_png(data, size)) {
        *scale_num = *scale_denom = 1;
        return poa_png_decode(data, size, out, name, e);
    }
    int width, height, subsamp, colorspace;
    if (size < 4 || data[0] != 0xFF || data[1] != 0xD8)
        return poa_fail(e, "%s: not a JPEG or PNG file (no JPEG start-of-image marker)", name);
    if (tjDecompressHeader3(d->decompress, data, (unsigned long)size, &width, &height, &subsamp,
                            &colorspace) != 0)
        return poa_fail(e, "%s: bad JPEG header: %s", name, tjGetErrorStr2(d->decompress));
    choose_scale(min_scale, scale_num, scale_denom);
    tjscalingfactor f = { *scale_num, *scale_denom };
    int w = TJSCALED(width, f), h = TJSCALED(height, f);
    if (poa_image_reserve(out, w, h, e) != 0) return poa_fail(e, "%s: %s", name, e->message);
    if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK)
        return decode_cmyk(d, data, size, out, name, e);
    if (tjDecompress2(d->decompress, data, (unsigned long)size, out->pixels, w, 0, h, TJPF_RGB,
                      0) != 0) {
        const char *m = tjGetErrorStr2(d->decompress);
        if (tjGetErrorCode(d->decompress) == TJERR_FATAL || warning_is_fatal(m))
            return poa_fail(e, "%s: cannot decode JPEG: %s", name, m);
    }
    return 0;
}

int poa_jpeg_encode(poa_jpeg_decoder *d, const unsigned char *rgb, int width, int height,
                    int quality, unsigned char **jpeg, unsigned long *jpeg_size,
                    const char *name, poa_error *e) {
    if (!d->compress) d->compress = tjInitCompress();
    if (!d->compress) return poa_fail(e, "%s: cannot start the JPEG encoder", name);
    *jpeg = NULL;
    *jpeg_size = 0;
    if (tjCompress2(d->compress, rgb, width, 0, height, TJPF_RGB, jpeg, jpeg_size, TJSAMP_444,
                    quality, 0) != 0)
        return poa_fail(e, "%s: cannot encode JPEG: %s", name, tjGetErrorStr2(d->compress));
    return 0;
}

void poa_jpeg_free(unsigned char *jpeg) { tjFree(jpeg); }
