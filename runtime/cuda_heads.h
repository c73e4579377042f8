/* cuda_heads.h: the projection heads (runtime/head.h) forward and backward on the GPU, fp32
   (optionally bf16 GEMM operands), mirroring runtime/head.c step for step as
   runtime/cuda_vit.c mirrors runtime/vit.c.

   Memory: the parameters and the gradients are the step's device buffers (heads->parameter_count
   floats each, laid out as poa_heads' tensor table), handed in as device addresses. The pass
   owns one activation arena with exactly the offsets of the CPU pass (poa_heads_layout_of), so
   a test can compare the two buffer by buffer. The arena is not zeroed at allocation; forward
   and backward write every buffer they later read.

   Kernels: templates/heads_kernels.cu.tmpl (GELU, L2-normalise, weight norm, column sums,
   copy, to-bf16; shape-generic, dimensions as arguments), compiled through the NVRTC cache for
   the device; runtime/heads_kernels.c holds their C twins and geometry.

   GEMMs: cuBLASLt on the full parameter buffers with leading dimensions; the elastic branch's
   first layer reads W0's first `width` columns (ld in_dim) with alpha = in_dim / width folded
   into the GEMM's alpha, as head.c. Forward biases by cuBLASLt's BIAS epilogue (beta = 0);
   bias gradients by the column-sum kernel (+=); weight gradients by GEMMs with beta = 1.

   Everything goes through runtime/cuda_exec.h: on the device, on the host through an emulator
   (tests/c/test_cuda_heads.c runs the C twins and a plain column-major GEMM), or nowhere (an
   exec with neither cuda nor emulator: nothing is allocated or issued). */
#ifndef POA_CUDA_HEADS_H
#define POA_CUDA_HEADS_H

#include "cuda_exec.h"
#include "error.h"
#include "head.h"
#include "heads_kernels.h"

typedef struct poa_cuda_heads_pass {
    const poa_heads *heads;
    poa_cuda_exec exec;
    int width;
    long rows;
    float alpha;                     /* in_dim / width */
    poa_heads_layout layout;         /* the CPU pass's arena layout for (rows, width) */
    CUdeviceptr params, grads;       /* the step's buffers; grads may be 0 for a forward-only pass */
    CUdeviceptr arena;               /* layout.count floats */
    long arena_capacity;             /* floats allocated */
    CUdeviceptr logits[POA_MAX_HEADS]; /* rows x K_h in the arena, valid after a forward */
    /* bf16 (poa_cuda_heads_pass_use_bf16): the parameters' bf16 shadow (the step's), a bf16
       mirror of the arena (an activation operand is cast into it at its own offset) and a
       rows x K_max bf16 buffer for the incoming dlogits */
    int bf16;
    CUdeviceptr params_bf16, arena_bf16, dlogits_bf16;
    long bf16_capacity, dlogits_capacity;
    /* kernels (on a GPU) */
    CUmodule module;
    CUfunction functions[POA_HEADS_KERNEL_COUNT];
    long launches, gemms;            /* issued so far (counted in every mode) */
} poa_cuda_heads_pass;

/* The kernels' CUDA text (templates/heads_kernels.cu.tmpl, found as gen/template.lua finds
   templates: POA_HOME or the source directory). malloc'd. */
int poa_cuda_heads_source(char **source, poa_error *e);

/* A pass of all heads over rows x width inputs. exec says where it runs (copied; on a GPU its
   cuda and lt must outlive the pass); source is poa_cuda_heads_source's text, compiled for the
   device's architecture (used only when exec->cuda is set; may be NULL otherwise). params and
   grads: see above. */
int poa_cuda_heads_pass_init(poa_cuda_heads_pass *pass, const poa_cuda_exec *exec, const poa_heads *heads,
                             int width, long rows, CUdeviceptr params, CUdeviceptr grads, const char *source,
                             poa_error *e);
/* Re-targets an initialised pass to another width and row count, keeping its buffers when they
   are large enough (the contents are not kept). */
int poa_cuda_heads_pass_prepare(poa_cuda_heads_pass *pass, int width, long rows, poa_error *e);
void poa_cuda_heads_pass_free(poa_cuda_heads_pass *pass);

/* Mixed precision (DESIGN.md decision 7): from now on every GEMM reads bf16 operands (weights
   from params_bf16, the step's bf16 shadow of the parameters with their layout; activations
   and dlogits cast to bf16 just before) and accumulates in fp32 into fp32 outputs. Kernels stay
   fp32. Expected error against the fp32 CPU pass: about 1e-2 relative. */
int poa_cuda_heads_pass_use_bf16(poa_cuda_heads_pass *pass, CUdeviceptr params_bf16, poa_error *e);

/* Walks forward and backward without running anything and has cuBLASLt build the plan of every
   GEMM they will issue, so that a step builds none; dlogits and dx as backward will get them
   (their alignment is part of a plan). A no-op without a GPU. */
int poa_cuda_heads_pass_plan_gemms(poa_cuda_heads_pass *pass, const CUdeviceptr *dlogits, CUdeviceptr dx,
                                   poa_error *e);

/* As poa_heads_forward: x (device, rows x width) -> pass->logits[h] (device, rows x K_h); x is
   copied into the arena, so the caller may reuse its buffer. Asynchronous. */
int poa_cuda_heads_forward(poa_cuda_heads_pass *pass, CUdeviceptr x, poa_error *e);
/* As poa_heads_backward: dlogits[h] (device, rows x K_h) -> grads += d/dparams, dx (device,
   rows x width, may be 0 for none) = the sum over heads of d/dx (written). Requires the last
   forward of this pass. Asynchronous. */
int poa_cuda_heads_backward(poa_cuda_heads_pass *pass, const CUdeviceptr *dlogits, CUdeviceptr dx, poa_error *e);

/* The whole arena (layout.count floats), for comparing with the CPU pass's. Synchronous. */
int poa_cuda_heads_download_arena(poa_cuda_heads_pass *pass, float *arena, poa_error *e);

#endif
