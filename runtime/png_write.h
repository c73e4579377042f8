/* png_write.h: a small PNG writer (8-bit RGB, no interlacing) over zlib's deflate:
   the signature, IHDR, one IDAT of the zlib-compressed scanlines (filter type 0 on
   every row) and IEND, each chunk with its CRC-32. */
#ifndef POA_PNG_WRITE_H
#define POA_PNG_WRITE_H

#include "error.h"

/* rgb: height rows of width * 3 bytes. Writes path.tmp and renames it to path. */
int poa_png_write_rgb(const char *path, const unsigned char *rgb, int width, int height,
                      poa_error *e);

#endif
