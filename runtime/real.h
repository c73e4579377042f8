/* real.h: the scalar type of the CPU backend.
   The normal build computes in float (fp32); the gradient-check build defines
   POA_FP64 and computes everything, GEMMs included, in double. */
#ifndef POA_REAL_H
#define POA_REAL_H

#ifdef POA_FP64
typedef double real;
#define REAL_NAME "f64"
#define REAL_SAFETENSORS_DTYPE "F64"
#else
typedef float real;
#define REAL_NAME "f32"
#define REAL_SAFETENSORS_DTYPE "F32"
#endif

#endif
