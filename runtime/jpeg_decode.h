/* jpeg_decode.h: read image files and decode JPEGs to 8-bit RGB through TurboJPEG,
   with DCT-domain scaling (1/8 .. 1) so that a large photo is decoded only as large
   as its crops need. Greyscale JPEGs decode to RGB directly; CMYK and YCCK JPEGs are
   decoded as CMYK and converted (Adobe files store the inks inverted, so
   R = C*K/255, G = M*K/255, B = Y*K/255 on the stored values). A PNG with any
   extension is recognised by its signature and decoded by data_png.c. */
#ifndef POA_JPEG_DECODE_H
#define POA_JPEG_DECODE_H

#include <stddef.h>
#include "error.h"

/* An interleaved 8-bit RGB image; pixels has room for capacity bytes. */
typedef struct poa_image {
    unsigned char *pixels;
    int width, height;
    size_t capacity;
} poa_image;

/* Makes room for width x height RGB pixels (keeps the buffer when it is big enough). */
int poa_image_reserve(poa_image *image, int width, int height, poa_error *e);
void poa_image_free(poa_image *image);

/* Reads a whole file into *data (grown with realloc; *capacity tracks its size). */
int poa_read_file(const char *path, unsigned char **data, size_t *size, size_t *capacity,
                  poa_error *e);

/* One decoder per thread (a TurboJPEG handle is not thread-safe). */
typedef struct poa_jpeg_decoder poa_jpeg_decoder;
poa_jpeg_decoder *poa_jpeg_decoder_create(void);
void poa_jpeg_decoder_destroy(poa_jpeg_decoder *decoder);

/* Full-resolution size of an encoded image (JPEG or PNG). name is for messages. */
int poa_image_header(poa_jpeg_decoder *decoder, const unsigned char *data, size_t size,
                     int *width, int *height, const char *name, poa_error *e);

/* Decodes to RGB at the smallest DCT scale num/denom (one of TurboJPEG's factors <= 1)
   with num/denom >= min_scale; min_scale >= 1 decodes at full size. PNGs always decode
   at full size. On return *scale_num / *scale_denom hold the factor used. A truncated
   or corrupt file fails with a message naming it. */
int poa_image_decode(poa_jpeg_decoder *decoder, const unsigned char *data, size_t size,
                     double min_scale, poa_image *out, int *scale_num, int *scale_denom,
                     const char *name, poa_error *e);

/* Encodes RGB pixels as a baseline 4:4:4 JPEG (used by `poa data`); *jpeg is
   allocated by TurboJPEG and released with poa_jpeg_free. */
int poa_jpeg_encode(poa_jpeg_decoder *decoder, const unsigned char *rgb, int width, int height,
                    int quality, unsigned char **jpeg, unsigned long *jpeg_size,
                    const char *name, poa_error *e);
void poa_jpeg_free(unsigned char *jpeg);

/* PNG decoding (data_png.c; zlib inflate, 8-bit, every colour type, no Adam7 interlacing;
   alpha is dropped as PIL's convert("RGB") does). */
int poa_png_is_png(const unsigned char *data, size_t size);
int poa_png_header(const unsigned char *data, size_t size, int *width, int *height,
                   const char *name, poa_error *e);
int poa_png_decode(const unsigned char *data, size_t size, poa_image *out, const char *name,
                   poa_error *e);

#endif
