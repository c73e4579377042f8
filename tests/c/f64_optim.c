/* f64_optim.c: test_optim.c built with -DPOA_FP64 (real = double) against libpoa_f64: AdamW and
   the EMA must equal PyTorch's float64 results bit for bit there. */
#include "test_optim.c"
