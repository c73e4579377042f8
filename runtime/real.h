/* real.h: the scalar type of the CPU backend.
   The normal build computes in float (fp32); the gradient-check build defines
   POA_FP64 and computes everything, GEMMs included, in double. */
#ifndef POA_REAL_H
#define POA_REAL_H

#include <math.h>

#ifdef POA_FP64
typedef double real;
#define REAL_NAME "f64"
#define REAL_SAFETENSORS_DTYPE "F64"
#define real_exp exp
#define real_sqrt sqrt
#define real_erf erf
#define real_log log
#define real_fabs fabs
#else
typedef float real;
#define REAL_NAME "f32"
#define REAL_SAFETENSORS_DTYPE "F32"
#define real_exp expf
#define real_sqrt sqrtf
#define real_erf erff
#define real_log logf
#define real_fabs fabsf
#endif

#endif
