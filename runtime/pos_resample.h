/* pos_resample.h: the bicubic resampling matrix of the position embedding (a grid of
   in_grid^2 patches read at out_grid^2), as PyTorch's F.interpolate(mode="bicubic",
   align_corners=False) with the scale (out + 0.1) / in of DINOv2's interpolate_pos_encoding.
   Self-contained (real.h only): `poa export --what c` ships this file and pos_resample.c into
   the exported program as they are. */
#ifndef POA_POS_RESAMPLE_H
#define POA_POS_RESAMPLE_H

#include "real.h"

/* matrix (out_grid^2 x in_grid^2, row-major): row o holds the weights of the input patches
   for output patch o. */
void poa_vit_resample_matrix(real *matrix, int in_grid, int out_grid);

#endif
