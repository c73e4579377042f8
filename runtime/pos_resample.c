/* pos_resample.c: the position embedding's bicubic resampling matrix (pos_resample.h).
   Moved here from vit_model.c unchanged, so the exported program (gen/export_c.lua) carries
   the same code. */
#include "pos_resample.h"

#include <stdlib.h>
#include <string.h>

/* PyTorch's cubic convolution weights (A = -0.75) for fractional offset t. */
static void cubic_weights(double t, double w[4]) {
    const double A = -0.75;
    double x;
    x = t + 1; w[0] = ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
    x = t;     w[1] = ((A + 2) * x - (A + 3)) * x * x + 1;
    x = 1 - t; w[2] = ((A + 2) * x - (A + 3)) * x * x + 1;
    x = 2 - t; w[3] = ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
}

/* One axis: out x in weights. The source coordinate of output o is
   (o + 0.5) / s - 0.5 with s = (out + 0.1) / in, taps clamped to the edges. */
static void resample_axis(double *weights, int in, int out) {
    double s = (out + 0.1) / in;
    memset(weights, 0, sizeof(double) * (size_t)in * (size_t)out);
    for (int o = 0; o < out; o++) {
        double src = (o + 0.5) / s - 0.5;
        double f = floor(src), w[4];
        cubic_weights(src - f, w);
        for (int k = 0; k < 4; k++) {
            int i = (int)f - 1 + k;
            i = i < 0 ? 0 : i >= in ? in - 1 : i;
            weights[o * in + i] += w[k];
        }
    }
}

void poa_vit_resample_matrix(real *matrix, int in_grid, int out_grid) {
    double *axis = malloc(sizeof(double) * (size_t)in_grid * (size_t)out_grid);
    resample_axis(axis, in_grid, out_grid);
    for (int oy = 0; oy < out_grid; oy++)
        for (int ox = 0; ox < out_grid; ox++)
            for (int iy = 0; iy < in_grid; iy++)
                for (int ix = 0; ix < in_grid; ix++) {
                    matrix[(long)(oy * out_grid + ox) * in_grid * in_grid + iy * in_grid + ix] =
                        (real)(axis[oy * in_grid + iy] * axis[ox * in_grid + ix]);
                }
    free(axis);
}
