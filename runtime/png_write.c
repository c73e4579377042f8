/* png_write.c: PNG encoding of an RGB image (see png_write.h). */
#include "png_write.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* length, type, data, CRC-32 over type and data */
static int write_chunk(FILE *f, const char type[4], const unsigned char *data, size_t size) {
    unsigned char head[8], tail[4];
    put_u32(head, (uint32_t)size);
    memcpy(head + 4, type, 4);
    uLong crc = crc32(0L, (const Bytef *)type, 4);
    if (size) crc = crc32(crc, data, (uInt)size);
    put_u32(tail, (uint32_t)crc);
    return fwrite(head, 1, 8, f) == 8 && (size == 0 || fwrite(data, 1, size, f) == size) &&
                   fwrite(tail, 1, 4, f) == 4
               ? 0
               : -1;
}

int poa_png_write_rgb(const char *path, const unsigned char *rgb, int width, int height,
                      poa_error *e) {
    if (width <= 0 || height <= 0) return poa_fail(e, "%s: empty image", path);
    size_t row = (size_t)width * 3, raw_size = (row + 1) * (size_t)height;
    unsigned char *raw = malloc(raw_size);
    uLongf packed_size = compressBound((uLong)raw_size);
    unsigned char *packed = malloc(packed_size);
    if (!raw || !packed) {
        free(raw);
        free(packed);
        return poa_fail(e, "%s: out of memory", path);
    }
    for (int y = 0; y < height; y++) {
        raw[(row + 1) * (size_t)y] = 0; /* filter type None */
        memcpy(raw + (row + 1) * (size_t)y + 1, rgb + row * (size_t)y, row);
    }
    int rc = compress2(packed, &packed_size, raw, (uLong)raw_size, 6) == Z_OK
                 ? 0
                 : poa_fail(e, "%s: deflate failed", path);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = rc == 0 ? fopen(tmp, "wb") : NULL;
    if (rc == 0 && !f) rc = poa_fail(e, "%s: cannot create", tmp);
    if (rc == 0) {
        static const unsigned char signature[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
        unsigned char ihdr[13];
        put_u32(ihdr, (uint32_t)width);
        put_u32(ihdr + 4, (uint32_t)height);
        ihdr[8] = 8;  /* bit depth */
        ihdr[9] = 2;  /* colour type: truecolour */
        ihdr[10] = 0; /* deflate */
        ihdr[11] = 0; /* adaptive filtering */
        ihdr[12] = 0; /* no interlace */
        int ok = fwrite(signature, 1, 8, f) == 8 && write_chunk(f, "IHDR", ihdr, 13) == 0 &&
                 write_chunk(f, "IDAT", packed, packed_size) == 0 &&
                 write_chunk(f, "IEND", NULL, 0) == 0;
        if (fclose(f) != 0) ok = 0;
        if (!ok) rc = poa_fail(e, "%s: write failed", tmp);
        else if (rename(tmp, path) != 0) rc = poa_fail(e, "%s: cannot rename to %s", tmp, path);
        if (rc) remove(tmp);
    }
    free(raw);
    free(packed);
    return rc;
}
