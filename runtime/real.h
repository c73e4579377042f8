/* real.h: the scalar type of the CPU backend.
   The normal build computes in float (fp32); the gradient-check build defines
   POA_FP64 and computes everything, GEMMs included, in double.
   real_exp, real_erf, ... are libm's. real_fast_exp and real_fast_erf are the vectorisable
   float versions of fast_math.h (errors stated there) in fp32, and libm's exp and erf in
   fp64, so the gradient checks keep libm's accuracy. */
#ifndef POA_REAL_H
#define POA_REAL_H

#include <math.h>

#include "fast_math.h"

#ifdef POA_FP64
typedef double real;
#define REAL_NAME "f64"
#define REAL_SAFETENSORS_DTYPE "F64"
#define real_exp exp
#define real_sqrt sqrt
#define real_erf erf
#define real_log log
#define real_fabs fabs
#define real_fast_exp exp
#define real_fast_erf erf
#else
typedef float real;
#define REAL_NAME "f32"
#define REAL_SAFETENSORS_DTYPE "F32"
#define real_exp expf
#define real_sqrt sqrtf
#define real_erf erff
#define real_log logf
#define real_fabs fabsf
#define real_fast_exp poa_fast_expf
#define real_fast_erf poa_fast_erff
#endif

#endif
