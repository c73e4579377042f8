/* program.h: the flat programs gen/program.lua lowers a member's forward graph to (and
   gen/schedule.lua's GPU programs), and the executor that runs them on the CPU backend (OpenBLAS
   GEMMs + the generated C kernels); runtime/program_cuda.h is its GPU backend.

   A program is data: values (activations in one arena laid out by liveness, parameters by
   state-dict name, per-call inputs, constants of the pass) and steps (a GEMM with its shapes,
   leading dimensions, alpha and beta; a kernel launch with its buffers and scalars; a copy).
   Sizes, offsets and row counts are lins b * batch + c: the batch is bound at run time. The
   executor only walks the steps; it knows no model. */
#ifndef POA_PROGRAM_H
#define POA_PROGRAM_H

#include <lua.h>

#include "error.h"
#include "kernels.h"

#define POA_PROGRAM_NAME_SIZE 64
#define POA_PROGRAM_MAX_ARGS 16

typedef struct poa_lin {
    long b, c;
} poa_lin;

static inline long poa_lin_at(poa_lin l, long batch) { return l.b * batch + l.c; }

/* SAVED (a backward program's view of a forward activation) and GRAD (a parameter's gradient)
   appear in backward programs (gen/backward.lua); CAST (a bf16 slot a GEMM operand is cast
   into) in the GPU's (gen/schedule.lua). */
enum { POA_VALUE_ACT, POA_VALUE_PARAM, POA_VALUE_INPUT, POA_VALUE_CONST, POA_VALUE_SAVED, POA_VALUE_GRAD,
       POA_VALUE_CAST };
enum { POA_STEP_GEMM, POA_STEP_KERNEL, POA_STEP_COPY };

typedef struct poa_program_value {
    char name[POA_PROGRAM_NAME_SIZE];
    int kind, elem_size;  /* elem_size: sizeof(real), 1 for a u8 mask, 2 for bf16 */
    poa_lin size, offset; /* activations: elements and arena offset */
} poa_program_value;

/* A view into a value (value -1: a NULL pointer); bf16: of a parameter or constant, its bf16
   copy (GPU programs). */
typedef struct poa_operand {
    int value;
    poa_lin offset;
    int bf16;
} poa_operand;

/* A launch dimension as gen/lower_cuda.lua's extents: (b * x + c) / d (d >= 1) of one integer
   x: the batch in a GPU program, n, rows, k or chunks for a training kernel. */
typedef struct poa_extent {
    long b, c, d;
} poa_extent;

/* A CUDA kernel launch: over is the symbol the grid is an extent of ("" for a constant grid). */
typedef struct poa_program_launch {
    char name[POA_PROGRAM_NAME_SIZE], module[POA_PROGRAM_NAME_SIZE], over[16];
    poa_extent grid[3];
    unsigned block[3];
} poa_program_launch;

typedef struct poa_program_step {
    int kind;
    /* GEMM, row-major: c (m x n, ldc) = alpha op(a) op(b) + beta c (+ bias[j] by the GEMM's
       epilogue when bias.value >= 0). Copy: a -> c, m elements. */
    int ta, tb;
    poa_lin m, k;
    long n, lda, ldb, ldc;
    double alpha, beta;
    poa_operand a, b, c, bias;
    /* kernel: index into the CPU executor's table (-1 in a GPU program for a kernel the CPU has
       no runner of); args in the kernel's C order, each a buffer (operand) or a scalar (lin).
       GPU programs: the step's CUDA launches are launches[first_launch ..] (launch_count). */
    int kernel, arg_count, first_launch, launch_count;
    unsigned char is_scalar[POA_PROGRAM_MAX_ARGS];
    poa_operand args[POA_PROGRAM_MAX_ARGS];
    poa_lin scalars[POA_PROGRAM_MAX_ARGS];
} poa_program_step;

typedef struct poa_program {
    int value_count, step_count, output; /* output: the value id of the result, or -1 */
    int gpu, launch_count;               /* a GPU program (gen/schedule.lua) and its launches */
    poa_program_value *values;
    poa_program_step *steps;
    poa_program_launch *launches;
    poa_lin arena; /* elements of the arena */
} poa_program;

/* Reads the program table at stack index `index` (gen/program.lua's format), checking every
   kernel name and its arguments against the executor's table. */
int poa_program_from_lua(lua_State *L, int index, poa_program *p, poa_error *e);

/* The kernels the runtime launches by name, outside any program (gen/emit.lua's
   runtime_launches: the training kernels and the glue kernels around the programs), read once
   into a program of launches only (NULL: e says why); poa_runtime_launch: the one named `name`,
   *index its place. */
const poa_program *poa_runtime_launches(poa_error *e);
const poa_program_launch *poa_runtime_launch(const char *name, int *index, poa_error *e);

void poa_program_free(poa_program *p);
/* The id of the value of this name, or -1. */
int poa_program_find(const poa_program *p, const char *name);

/* A process-wide cache of programs by key (the bytes of whatever determines the program): a
   program is built once per process, and cached ones are never freed (at most 1024 of them,
   64 MiB). find: the cached program or NULL. add: takes *p over and returns the cached copy,
   or NULL when the cache is full (p is then left to the caller). Thread-safe. */
const poa_program *poa_program_cache_find(const void *key, size_t size);
const poa_program *poa_program_cache_add(const void *key, size_t size, poa_program *p);

/* Runs the steps of a CPU program: bases[v] is where value v starts (NULL: absent, its
   operands are NULL pointers); k is the kernel set of the member's width. */
void poa_program_run(const poa_program *p, void *const *bases, long batch, const poa_vit_kernels *k);

#endif
