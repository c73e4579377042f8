/* data_png.c: a small PNG decoder (8-bit samples, colour types 0/2/3/4/6, no
   interlacing) so that a PNG saved under a .JPEG name (ImageNet has one) is used
   rather than lost. Chunks: IHDR, PLTE, IDAT (concatenated, zlib), IEND; filters
   0-4 of the PNG spec, with Paeth as the spec defines it. Alpha is dropped. */
#include "jpeg_decode.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const unsigned char signature[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n' };

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int poa_png_is_png(const unsigned char *data, size_t size) {
    return size >= 8 && memcmp(data, signature, 8) == 0;
}

typedef struct png_info {
    int width, height, depth, color, interlace;
} png_info;

static int read_ihdr(const unsigned char *data, size_t size, png_info *info, const char *name,
                     poa_error *e) {
    if (size < 33 || memcmp(data + 12, "IHDR", 4) != 0 || be32(data + 8) != 13)
        return poa_fail(e, "%s: PNG without an IHDR chunk", name);
    info->width = (int)be32(data + 16);
    info->height = (int)be32(data + 20);
    info->depth = data[24];
    info->color = data[25];
    info->interlace = data[28];
    if (info->width <= 0 || info->height <= 0 || info->width > 1 << 15 || info->height > 1 << 15)
        return poa_fail(e, "%s: PNG size %dx%d out of range", name, info->width, info->height);
    return 0;
}

int poa_png_header(const unsigned char *data, size_t size, int *width, int *height,
                   const char *name, poa_error *e) {
    png_info info;
    if (read_ihdr(data, size, &info, name, e) != 0) return -1;
    *width = info.width;
    *height = info.height;
    return 0;
}

static int paeth(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    if (pa <= pb && pa <= pc) return a;
    return pb <= pc ? b : c;
}

/* Undoes the per-row filters in place; rows are (1 + stride) bytes, bpp bytes per pixel. */
static int unfilter(unsigned char *raw, int height, size_t stride, int bpp) {
    unsigned char *prev = NULL;
    for (int y = 0; y < height; y++) {
        unsigned char *row = raw + y * (stride + 1), *px = row + 1;
        int type = row[0];
        for (size_t i = 0; i < stride; i++) {
            int a = i >= (size_t)bpp ? px[i - bpp] : 0, b = prev ? prev[i] : 0;
            int c = prev && i >= (size_t)bpp ? prev[i - bpp] : 0, add;
            switch (type) {
            case 0: add = 0; break;
            case 1: add = a; break;
            case 2: add = b; break;
            case 3: add = (a + b) / 2; break;
            case 4: add = paeth(a, b, c); break;
            default: return -1;
            }
            px[i] = (unsigned char)(px[i] + add);
        }
        prev = px;
    }
    return 0;
}

int poa_png_decode(const unsigned char *data, size_t size, poa_image *out, const char *name,
                   poa_error *e) {
    png_info info;
    if (read_ihdr(data, size, &info, name, e) != 0) return -1;
    static const int channels_of[7] = { 1, 0, 3, 1, 2, 0, 4 };
    if (info.depth != 8 || info.color > 6 || channels_of[info.color] == 0 || info.interlace)
        return poa_fail(e, "%s: PNG with bit depth %d, colour type %d, interlace %d is not "
                        "supported (8-bit, not interlaced only)", name, info.depth, info.color,
                        info.interlace);
    int channels = channels_of[info.color];
    unsigned char palette[256 * 3] = { 0 };
    size_t stride = (size_t)info.width * channels;
    size_t raw_size = (stride + 1) * info.height, idat_size = 0, pos = 8;
    unsigned char *idat = NULL, *raw = malloc(raw_size);
    int ended = 0, rc = -1;
    while (pos + 12 <= size && !ended) {
        size_t length = be32(data + pos);
        const unsigned char *type = data + pos + 4, *body = data + pos + 8;
        if (length > size - pos - 12) break;
        if (memcmp(type, "PLTE", 4) == 0 && length <= sizeof palette) {
            memcpy(palette, body, length);
        } else if (memcmp(type, "IDAT", 4) == 0) {
            unsigned char *p = realloc(idat, idat_size + length);
            if (!p) goto done;
            idat = p;
            memcpy(idat + idat_size, body, length);
            idat_size += length;
        } else if (memcmp(type, "IEND", 4) == 0) {
            ended = 1;
        }
        pos += length + 12;
    }
    if (!ended || !raw) {
        poa_fail(e, "%s: truncated PNG (no IEND chunk)", name);
        goto done;
    }
    uLongf got = raw_size;
    if (uncompress(raw, &got, idat, idat_size) != Z_OK || got != raw_size) {
        poa_fail(e, "%s: corrupt PNG image data", name);
        goto done;
    }
    if (unfilter(raw, info.height, stride, channels) != 0) {
        poa_fail(e, "%s: PNG with an unknown row filter", name);
        goto done;
    }
    if (poa_image_reserve(out, info.width, info.height, e) != 0) goto done;
    for (int y = 0; y < info.height; y++) {
        const unsigned char *src = raw + y * (stride + 1) + 1;
        unsigned char *dst = out->pixels + (size_t)y * info.width * 3;
        for (int x = 0; x < info.width; x++, dst += 3, src += channels) {
            if (info.color == 3) {
                memcpy(dst, palette + 3 * src[0], 3);
            } else if (channels <= 2) {
                dst[0] = dst[1] = dst[2] = src[0];
            } else {
                memcpy(dst, src, 3);
            }
        }
    }
    rc = 0;
done:
    free(idat);
    free(raw);
    return rc;
}
