/* cuda_vit.h: one elastic ViT member's training pass on the GPU: its two programs (the GPU
   schedule of gen/schedule.lua over models/vit.lua's graph, fused residual + LayerNorm, bf16
   GEMM operands when asked) bound to device memory and run by the executor's GPU backend
   (runtime/program_cuda.c). This file holds no layer order: it allocates, binds and uploads.

   Memory: the caller's (or its own) parameter and gradient buffers (the intact network's
   full-size buffers, laid out as poa_vit's tensor table), one activation arena (the training
   forward's values at their offsets, the backward's own after them: gen/program.lua's joint
   arena), and small extras: the LayerScale ones, the bicubic position matrix (NULL at the native
   size), the images, the mask, the stochastic-depth factors and d(loss)/d(output).

   Kernels: the generated set of the member's width (gen/emit.lua's cu_text), the fused set
   (vit_fused.cu) and templates/vit_glue.cu.tmpl, through poa_nvrtc_compile_cached for the
   device's sm_XX; each launch's grid is the program's extent of the batch.

   An emulated pass (an exec with an emulator) runs the same code with host memory and
   hands every launch and GEMM to callbacks (tests/c/test_cuda_vit.c); a pass on an exec that
   is nowhere (cuda and emulator NULL) allocates fake addresses and runs nothing (planning). */
#ifndef POA_CUDA_VIT_H
#define POA_CUDA_VIT_H

#include "cublaslt.h"
#include "cuda_driver.h"
#include "cuda_exec.h"
#include "error.h"
#include "program_cuda.h"
#include "vit.h"

/* ---- the sources ---- */

/* Every CUDA module a run of the recipe loads, by the name the NVRTC cache and the emulator know
   it by (gen/emit.lua's cuda_modules): the ViT kernel set of each width of the family
   ("vit_w64_h32_f256.cu"), vit_fused.cu, vit_glue.cu, heads_kernels.cu and train_kernels.cu
   (recipe NULL: the last three only), exactly what `poa cuda warm` compiles. overrides: the run's
   "section.field=value" lines (poa_recipe's), or NULL. */
typedef struct poa_cuda_sources {
    int count;
    char **names, **texts;
} poa_cuda_sources;

int poa_cuda_sources_load(poa_cuda_sources *s, const char *recipe, const char *overrides, poa_error *e);
/* The text of module `name`, or NULL. */
const char *poa_cuda_sources_find(const poa_cuda_sources *s, const char *name);
void poa_cuda_sources_free(poa_cuda_sources *s);

/* n values to device memory at `to`, as floats or (bf16) as bf16 (poa_bf16_from_float): floats,
   else reals (the host pass's, double in the fp64 build), else (both NULL) ones; waits for the
   copy (a no-op where nothing runs). */
int poa_cuda_upload_values(const poa_cuda_exec *x, CUdeviceptr to, const float *floats, const real *reals, long n,
                           int bf16, poa_error *e);

/* ---- the pass ---- */

/* Device memory a pass can use instead of its own: the training step's parameter and gradient
   buffers (the intact network's layout, poa_vit's tensor table) and the parameters' bf16
   shadow (0: none). */
typedef struct poa_cuda_vit_shared {
    CUdeviceptr params, grads, params_bf16;
    /* another pass's activation arena (arena_capacity floats), used when it is large enough and
       that pass is done with it (the elastic branch runs after the intact one); and bf16 cast
       slots (2 x cast_capacity bf16) any pass of the same stream can use; 0: the pass allocates
       its own */
    CUdeviceptr arena, cast_bf16;
    long arena_capacity, cast_capacity;
    /* another pass's device images of the same batch and size (0: its own): a forward given
       images NULL then reads them as that pass uploaded them */
    CUdeviceptr images;
    /* 1: the pass will be made bf16 (poa_cuda_vit_pass_use_bf16): its programs are built so at
       once, not first in fp32 */
    int bf16;
} poa_cuda_vit_shared;

typedef struct poa_cuda_vit_pass {
    poa_vit_pass host;  /* the shape: block ids, resampling matrix (no arena) */
    const poa_vit *model;
    poa_cuda_exec exec; /* a GPU, an emulator or nowhere */
    int width, depth;
    long batch, rows, tokens, patches;
    long forward_count, arena_count; /* elements: the forward's arena, and with the backward's */
    poa_vit_run fwd, bwd;            /* the GPU programs (gen/schedule.lua) and their value offsets */
    CUfunction *functions[2];        /* each launch's function, forward and backward (GPU) */
    /* device memory (nowhere: distinct fake addresses, nothing allocated) */
    CUdeviceptr params, grads, arena, ones, resample, images, mask, drop_scale, dout;
    /* bf16 (poa_cuda_vit_pass_use_bf16): the parameters' bf16 shadow, two cast slots of
       cast_capacity bf16 each (cast_a, cast_b of the program), and the resampling matrix in bf16 */
    int bf16, cast_shared, programs_bf16;
    CUdeviceptr params_bf16, cast_bf16, resample_bf16;
    long cast_capacity;
    poa_cuda_vit_shared shared; /* memory owned by the caller (poa_cuda_vit_pass_init's shared) */
    int arena_shared;           /* arena is shared.arena */
    long arena_capacity;        /* floats at arena: arena_count, or the shared arena's capacity */
    int has_mask, has_drop_scale;
    char set_name[80];          /* the set's module, "vit_w64_h32_f256.cu" */
    CUmodule modules[3];        /* the set, vit_fused.cu, vit_glue.cu */
} poa_cuda_vit_pass;

/* A pass of member width x depth over batch images of image_size pixels on exec: a GPU (with an
   initialised poa_cublaslt), the host emulator (see cuda_exec.h) or nowhere. Its kernels are the
   width's set, vit_fused.cu and vit_glue.cu of sources, compiled through the NVRTC cache for the
   device's architecture (GPU only). shared (or NULL): the caller's parameters and
   gradients (the pass neither uploads, zeroes nor frees them; grads 0 for a pass that only runs
   forward, the teacher) and the other memory it may use. */
int poa_cuda_vit_pass_init(poa_cuda_vit_pass *pass, const poa_cuda_exec *exec, const poa_vit *model, int width,
                           int depth, long batch, int image_size, const poa_cuda_sources *sources,
                           const poa_cuda_vit_shared *shared, poa_error *e);
void poa_cuda_vit_pass_free(poa_cuda_vit_pass *pass);

/* Mixed precision (DESIGN.md decision 7): from now on every GEMM reads bf16 operands (weights
   from the parameters' bf16 shadow, activations cast to bf16 by poa_glue_to_bf16 into two
   slots just before)
   and accumulates in fp32 into fp32 outputs; forward biases come by cuBLASLt's BIAS epilogue
   instead of a bias-rows step. Kernels stay fp32. Call before uploading the parameters (the
   upload writes the shadow too). Expected error against the fp32 CPU pass: about 1e-2
   relative (bf16's 8-bit mantissa). */
int poa_cuda_vit_pass_use_bf16(poa_cuda_vit_pass *pass, poa_error *e);

/* Walks the pass's programs without running anything and has cuBLASLt build the descriptors and
   choose the algorithm of every GEMM they will issue (poa_cublaslt_prepare), so that a step
   builds none. Call after poa_cuda_vit_pass_use_bf16 (it changes the operand types); a no-op
   without a GPU. */
int poa_cuda_vit_pass_plan_gemms(poa_cuda_vit_pass *pass, poa_error *e);

/* Host <-> device: parameters (model->parameter_count floats), gradients (the same); the
   output of the last forward (rows x width floats). */
int poa_cuda_vit_upload_parameters(poa_cuda_vit_pass *pass, const float *params, poa_error *e);
int poa_cuda_vit_upload_gradients(poa_cuda_vit_pass *pass, const float *grads, poa_error *e);
int poa_cuda_vit_download_gradients(poa_cuda_vit_pass *pass, float *grads, poa_error *e);
int poa_cuda_vit_download_output(poa_cuda_vit_pass *pass, float *out, poa_error *e);
/* The whole activation arena (arena_count floats; the forward program's values at their
   offsets): for comparing activations value by value against the CPU pass's. */
int poa_cuda_vit_download_arena(poa_cuda_vit_pass *pass, float *arena, poa_error *e);

/* As poa_vit_forward: images batch x C x S x S (host; NULL: the device images are already there,
   shared.images), mask batch x patches or NULL, drop_scale depth x 2 x batch or NULL.
   Asynchronous on cuda's stream. */
int poa_cuda_vit_forward(poa_cuda_vit_pass *pass, const float *images, const unsigned char *mask,
                         const float *drop_scale, poa_error *e);
/* As poa_vit_backward: gradients accumulate (+=) into the device gradient buffer; dout (host,
   rows x width) = d(loss)/d(output), or NULL when poa_cuda_vit_move_rows (back) put it on the
   device. */
int poa_cuda_vit_backward(poa_cuda_vit_pass *pass, const float *dout, poa_error *e);

/* Head-input rows (device, count x width) from the output of the last forward: the CLS token
   of each image (indices 0 and count = batch), or the patch tokens indices[i] (device ints,
   image * patches + patch: iBOT's masked tokens); back: such rows added back into dout (the
   transpose; zero dout first with poa_cuda_vit_zero_dout). */
int poa_cuda_vit_move_rows(poa_cuda_vit_pass *pass, int back, CUdeviceptr rows, CUdeviceptr indices, long count,
                           poa_error *e);
int poa_cuda_vit_zero_dout(poa_cuda_vit_pass *pass, poa_error *e);

#endif
