/* heads_kernels.h: the projection heads' GPU kernels (templates/heads_kernels.cu.tmpl): their
   names, their launch geometry, and their C twins (runtime/heads_kernels.c), which do each
   thread's arithmetic as the CUDA kernel does it, in the same reduction order, on host memory.
   The GPU pass (runtime/cuda_heads.c) launches the kernels; a host emulator of that pass runs
   the twins with the very argument array cuLaunchKernel would get. */
#ifndef POA_HEADS_KERNELS_H
#define POA_HEADS_KERNELS_H

#include "error.h"

enum poa_heads_kernel {
    POA_HEADS_GELU_FORWARD,          /* (float *y, const float *x, long n) */
    POA_HEADS_GELU_BACKWARD,         /* (float *dx, const float *dy, const float *x, long n) */
    POA_HEADS_L2_NORMALIZE_FORWARD,  /* (float *u, float *norm, const float *z, long rows, long d) */
    POA_HEADS_L2_NORMALIZE_BACKWARD, /* (float *dz, const float *du, const float *u,
                                        const float *norm, long rows, long d) */
    POA_HEADS_WEIGHT_NORM_FORWARD,   /* (float *wn, float *vnorm, const float *g, const float *v,
                                        long k, long d) */
    POA_HEADS_WEIGHT_NORM_BACKWARD,  /* (float *dg, float *dv, const float *dw, const float *g,
                                        const float *v, const float *vnorm, long k, long d) */
    POA_HEADS_COLUMN_SUM,            /* (float *dst, const float *src, long rows, long cols) */
    POA_HEADS_COPY,                  /* (float *dst, const float *src, long n) */
    POA_HEADS_TO_BF16,               /* (unsigned short *dst, const float *src, long n) */
    POA_HEADS_KERNEL_COUNT
};

/* The kernels' names in the .cu, by enum poa_heads_kernel. */
extern const char *const poa_heads_kernel_names[POA_HEADS_KERNEL_COUNT];

/* The launch geometry of a kernel over count elements (GELU, copy, to_bf16), rows (the
   L2-normalise and weight-norm kernels: one block per row) or columns (the column sum), as
   the .cu's header states. Fails when the grid would be too large. */
int poa_heads_kernel_geometry(int kernel, long count, unsigned grid[3], unsigned block[3], poa_error *e);

/* Runs the C twin of the kernel called name over the launch's grid, thread by thread as
   the device would (so a grid that covers too little leaves output unwritten), with args the
   argument array of cuLaunchKernel (each a pointer to a CUdeviceptr holding a host address, or
   to a long). Fails for an unknown name or a block shape other than the kernel's. */
int poa_heads_kernel_emulate(const char *name, const unsigned grid[3], const unsigned block[3], void **args,
                             poa_error *e);

#endif
