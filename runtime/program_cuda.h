/* program_cuda.h: the GPU backend of the executor (program.h): a GPU program of
   gen/schedule.lua, its GEMMs through cuBLASLt (bf16 operands and the bias epilogue where the
   program says), its kernel steps and copies as the CUDA launches the program names, each
   grid and block evaluated for the batch; all through poa_cuda_exec, so the same walk runs on
   a GPU, on the host emulator the tests use, or nowhere (planning). It knows no model. */
#ifndef POA_PROGRAM_CUDA_H
#define POA_PROGRAM_CUDA_H

#include "cuda_exec.h"
#include "program.h"

/* Resolves the function of each of count launches (a program's, or the runtime's) from the
   loaded modules named names[i] (a no-op, functions 0, without a GPU). */
int poa_cuda_functions(const poa_program_launch *launches, int count, poa_cuda *cuda, const char *const *names,
                       const CUmodule *modules, int module_count, CUfunction *functions, poa_error *e);

/* Launches k over x (the value of its grid's symbol): its grid evaluated (a grid with no
   blocks launches nothing: returns 1) and checked against the device's limits; label names
   the caller in errors. */
int poa_launch_geometry(const poa_program_launch *k, long x, unsigned grid[3], const char *label, poa_error *e);
int poa_launch(const poa_cuda_exec *exec, CUfunction f, const poa_program_launch *k, long x, void **args,
               const char *label, poa_error *e);

/* Runs p's steps at this batch: bases[v] is the device address of value v (0: absent, its
   operands are NULL), bf16_bases[v] that of its bf16 copy (a parameter's shadow, a constant's
   copy; read by operands marked bf16); functions: NULL without a GPU. label names the program
   in errors. */
int poa_program_run_cuda(const poa_program *p, const poa_cuda_exec *x, const CUfunction *functions,
                         const CUdeviceptr *bases, const CUdeviceptr *bf16_bases, long batch, const char *label,
                         poa_error *e);

#endif
