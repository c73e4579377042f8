/* f64_kernels.c: test_kernels.c built with -DPOA_FP64 (real = double) against libpoa_f64:
   the generated sets must match the reference to 1e-12 there. */
#include "test_kernels.c"
