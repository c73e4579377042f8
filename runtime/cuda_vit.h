/* cuda_vit.h: forward and backward of one elastic ViT member on the GPU, fp32, mirroring
   runtime/vit.h's CPU pass step for step.

   Memory: one device allocation each for the parameters and the gradients (the intact
   network's full-size buffers, laid out as poa_vit's tensor table), and one for the
   activation arena with exactly the offsets of the CPU pass (poa_vit_pass_buffers, i.e.
   gen/plan.lua's vit_pass). Small extras: the LayerScale ones, the bicubic position matrix
   (poa_vit_resample_matrix, uploaded once; NULL at the native size), the images, the mask
   and the stochastic-depth factors of the last forward.

   Kernels: the generated set of the member's width (gen/emit.lua's cu_text, the text
   `poa cuda warm` compiles) and templates/vit_glue.cu.tmpl (patchify = im2col on the device,
   bias rows, column sums, add, copy, fill), both through poa_nvrtc_compile_cached for the
   device's sm_XX. Every generated kernel's grid and block are read from the table at the top
   of its .cu (gen/lower_cuda.lua writes them as expressions of rows, batch, tokens, T,
   patches, WIDTH, HEADS, HEAD_DIM, HIDDEN) and evaluated for the pass's shape.

   GEMMs: cuBLASLt (runtime/cublaslt.h) on the full parameter buffers with leading dimensions,
   alpha = Dmax / D folded in, as runtime/vit.c. Bias: a bias-rows kernel then the GEMM with
   beta = 1, as the CPU's poa_fill_rows + poa_gemm.

   Order: the steps of gen/plan.lua's vit_pass (which is runtime/vit.c's order, except that in
   a linear layer's backward the plan and this file issue dgrad, wgrad, then the bias
   gradient, where vit.c sums the bias first; the three are independent).

   Tracing: a pass made with cuda == NULL allocates nothing and launches nothing; forward and
   backward then only record what they would issue (kernel names with their evaluated
   geometry, GEMMs with operands as offsets into the buffers, copies, adds, bias gradients),
   so the order and the operands can be checked against the plan on a machine without a GPU.
   A pass on a GPU records the same trace when trace is set. An emulated pass
   (poa_cuda_vit_pass_init_emulated) runs the same code with host memory and hands every launch
   and GEMM to callbacks: tests/c/test_cuda_vit.c runs them with the CPU kernels. */
#ifndef POA_CUDA_VIT_H
#define POA_CUDA_VIT_H

#include "cublaslt.h"
#include "cuda_driver.h"
#include "cuda_exec.h"
#include "error.h"
#include "vit.h"

/* ---- the kernel table of a generated .cu ---- */

typedef struct poa_cuda_kernel_entry {
    char name[64];
    char grid[3][96]; /* expressions; "1" where the table gives fewer */
    char block[3][32];
} poa_cuda_kernel_entry;

/* Parses the "Kernels, in launch order" table of a generated .cu. *entries is malloc'd. */
int poa_cuda_kernel_table(const char *source, poa_cuda_kernel_entry **entries, int *count,
                          poa_error *e);

/* Names bound in a table expression. */
typedef struct poa_cuda_dims {
    long rows, batch, tokens, patches, width, heads, head_dim, hidden;
    long n, k, chunks, train_chunk; /* the training kernels' tables */
} poa_cuda_dims;

/* Evaluates an integer expression of + - * / ( ) over numbers and the names rows, batch,
   tokens, T (= tokens), patches, WIDTH, HEADS, HEAD_DIM, HIDDEN, n, k, chunks, TRAIN_CHUNK. */
int poa_cuda_eval(const char *expression, const poa_cuda_dims *dims, long *value, poa_error *e);

/* Whether the source defines `extern "C" __global__ ... name(`. */
int poa_cuda_source_defines(const char *source, const char *name);

/* The generated .cu text of the kernel set of `width` in the recipe's family (exactly what
   `poa cuda warm` compiles) and the glue kernels' text; *name gets "vit_w64_h32_f256.cu".
   malloc'd; either out pointer may be NULL. */
int poa_cuda_vit_sources(const char *recipe_path, int width, char **kernel_set, char **glue,
                         char *name, size_t name_size, poa_error *e);

/* ---- the trace ---- */

typedef enum poa_cuda_step_kind {
    POA_CUDA_STEP_KERNEL,    /* a generated kernel */
    POA_CUDA_STEP_GLUE,      /* a glue kernel (fill_rows, fill) not named by the plan */
    POA_CUDA_STEP_GEMM,
    POA_CUDA_STEP_COPY,
    POA_CUDA_STEP_AXPY,
    POA_CUDA_STEP_BIAS_GRAD,
    POA_CUDA_STEP_MARK,      /* the start of a plan step made of other steps (pos_resample) */
} poa_cuda_step_kind;

typedef struct poa_cuda_step {
    poa_cuda_step_kind kind;
    char name[64];    /* kernel name, GEMM/bias "what" as the plan's, or the MARK's name */
    int inside_mark;  /* 1: part of the preceding MARK's step */
    int arg_count;    /* KERNEL, GLUE and the glue kernels of COPY, AXPY, BIAS_GRAD: arguments passed */
    unsigned grid[3], block[3];
    /* GEMM: row-major C = alpha op(A) op(B) + beta C; bias (the bias-rows step before it) */
    int trans_a, trans_b;
    long m, n, k, lda, ldb, ldc;
    float alpha, beta;
    CUdeviceptr a, b, c, bias;
    /* COPY, AXPY: dst (+)= src; BIAS_GRAD: dst += column sums of src (m x n, ld lda) */
    CUdeviceptr src, dst;
    long count;
} poa_cuda_step;

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
} poa_cuda_vit_shared;

enum { POA_CUDA_VIT_MAX_KERNELS = 64 };


typedef struct poa_cuda_vit_pass {
    poa_vit_pass host;  /* the CPU pass of the same shape: block ids, layout, resample matrix */
    const poa_vit *model;
    poa_cuda_exec exec; /* exec.cuda NULL: trace only, or emulated when exec.emulator is set */
    int width, depth;
    long batch, rows, tokens, patches, arena_count;
    float alpha;
    /* device memory (in trace mode: distinct fake addresses, nothing allocated) */
    CUdeviceptr params, grads, arena, ones, resample, images, mask, drop_scale;
    /* bf16 (poa_cuda_vit_pass_use_bf16): the parameters' bf16 shadow, two cast slots of
       cast_capacity bf16 each (a GEMM's activation operands are cast into them just before it,
       A into the first, B into the second, same ld), and the resampling matrix in bf16 */
    int bf16, cast_shared;
    CUdeviceptr params_bf16, cast_bf16, resample_bf16;
    long cast_capacity;
    poa_cuda_vit_shared shared; /* memory owned by the caller (poa_cuda_vit_pass_init_shared) */
    int arena_shared;           /* arena is shared.arena */
    long arena_capacity;        /* floats at arena: arena_count, or the shared arena's capacity */
    /* fused (poa_cuda_vit_pass_use_fused): the residual add fused with the next LayerNorm;
       kernels residual_layernorm_forward_<set>, _backward_<set>, _backward_<set>_dw_db and
       _backward_<set>_dgamma */
    int fused;
    char fused_name[4][64];
    unsigned fused_geometry[4][2][3];
    CUmodule fused_module;
    CUfunction fused_function[4];
    int has_mask, has_drop_scale;
    /* kernels */
    char set_name[80];  /* the set's file, "vit_w64_h32_f256.cu" (the emulator's module name) */
    CUmodule set_module, glue_module;
    int kernel_count;
    poa_cuda_kernel_entry kernels[POA_CUDA_VIT_MAX_KERNELS];
    CUfunction functions[POA_CUDA_VIT_MAX_KERNELS];
    unsigned geometry[POA_CUDA_VIT_MAX_KERNELS][2][3]; /* grid, block */
    CUfunction glue[9];
    /* buffers of the arena (element offsets) */
    poa_vit_buffer *buffers;
    int buffer_count;
    /* trace */
    int trace;          /* record steps (always on without a GPU) */
    int in_mark;
    poa_cuda_step *steps;
    int step_count, step_capacity;
} poa_cuda_vit_pass;

/* A pass of member width x depth over batch images of image_size pixels. cuda NULL: trace
   mode (lt ignored). Otherwise lt is an initialised poa_cublaslt on cuda. kernel_set and glue
   are the sources of poa_cuda_vit_sources; they are compiled through the NVRTC cache for the
   device's architecture (unused in trace mode except for the table). */
int poa_cuda_vit_pass_init(poa_cuda_vit_pass *pass, poa_cuda *cuda, poa_cublaslt *lt,
                           const poa_vit *model, int width, int depth, long batch, int image_size,
                           const char *kernel_set, const char *glue, poa_error *e);
/* The same pass emulated on the host through emulator (see cuda_exec.h); it records
   the trace too. */
int poa_cuda_vit_pass_init_emulated(poa_cuda_vit_pass *pass, const poa_cuda_emulator *emulator,
                                    const poa_vit *model, int width, int depth, long batch,
                                    int image_size, const char *kernel_set, poa_error *e);
/* A pass on exec (a GPU, an emulator or nowhere) over the caller's parameters and gradients
   (shared; the pass neither uploads, zeroes nor frees them); grads 0 for a pass that only
   runs forward (the teacher). */
int poa_cuda_vit_pass_init_shared(poa_cuda_vit_pass *pass, const poa_cuda_exec *exec, const poa_vit *model,
                                  int width, int depth, long batch, int image_size, const char *kernel_set,
                                  const char *glue, const poa_cuda_vit_shared *shared, poa_error *e);
void poa_cuda_vit_pass_free(poa_cuda_vit_pass *pass);

/* Mixed precision (DESIGN.md decision 7): from now on every GEMM reads bf16 operands (weights
   from the parameters' bf16 shadow, activations cast to bf16 by poa_glue_to_bf16 into two
   slots just before)
   and accumulates in fp32 into fp32 outputs; forward biases come by cuBLASLt's BIAS epilogue
   instead of a bias-rows step. Kernels stay fp32. Call before uploading the parameters (the
   upload writes the shadow too). Expected error against the fp32 CPU pass: about 1e-2
   relative (bf16's 8-bit mantissa). */
int poa_cuda_vit_pass_use_bf16(poa_cuda_vit_pass *pass, poa_error *e);

/* From now on each residual add (LayerScale, drop path) and the LayerNorm after it (the block's
   second, the next block's first, or the final one) run as one op, forward and backward:
   residual_layernorm_forward_<set> and residual_layernorm_backward_<set> (with its column-sum
   kernels) of fused_source (gen/emit.lua's fused_cu_text: vit_fused.cu). The generated fused
   ops are the unfused pairs' arithmetic (tested bit for bit in C), so the arena and the
   gradients hold the same values; the backward's grad.h is then d(h) of the residual, written
   by the fused op instead of the unfused LayerNorm's d(x). */
int poa_cuda_vit_pass_use_fused(poa_cuda_vit_pass *pass, const char *fused_source, poa_error *e);

/* The fused kernels' text of the recipe's family (vit_fused.cu). malloc'd. */
int poa_cuda_vit_fused_source(const char *recipe_path, char **source, poa_error *e);

/* Walks the pass's forward and backward without running anything and has cuBLASLt build the
   descriptors and choose the algorithm of every GEMM they will issue (poa_cublaslt_prepare),
   so that a step builds none. Call after poa_cuda_vit_pass_use_bf16 (it changes the operand
   types); a no-op without a GPU. */
int poa_cuda_vit_pass_plan_gemms(poa_cuda_vit_pass *pass, poa_error *e);

/* Host <-> device: parameters (model->parameter_count floats), gradients (the same), the
   gradients set to zero; the output of the last forward (rows x width floats). */
int poa_cuda_vit_upload_parameters(poa_cuda_vit_pass *pass, const float *params, poa_error *e);
int poa_cuda_vit_upload_gradients(poa_cuda_vit_pass *pass, const float *grads, poa_error *e);
int poa_cuda_vit_zero_gradients(poa_cuda_vit_pass *pass, poa_error *e);
int poa_cuda_vit_download_gradients(poa_cuda_vit_pass *pass, float *grads, poa_error *e);
int poa_cuda_vit_download_output(poa_cuda_vit_pass *pass, float *out, poa_error *e);
/* The whole activation arena (arena_count floats, the CPU pass's layout): for debugging a
   mismatch buffer by buffer against the CPU pass's arena. */
int poa_cuda_vit_download_arena(poa_cuda_vit_pass *pass, float *arena, poa_error *e);

/* As poa_vit_forward: images batch x C x S x S (host; NULL: the device images are already there,
   shared.images), mask batch x patches or NULL, drop_scale depth x 2 x batch or NULL.
   Asynchronous on cuda's stream. */
int poa_cuda_vit_forward(poa_cuda_vit_pass *pass, const float *images, const unsigned char *mask,
                         const float *drop_scale, poa_error *e);
/* As poa_vit_backward: gradients accumulate (+=) into the device gradient buffer; dout (host,
   rows x width) = d(loss)/d(output), or NULL when it is already on the device at
   poa_cuda_vit_dout(pass). */
int poa_cuda_vit_backward(poa_cuda_vit_pass *pass, const float *dout, poa_error *e);

/* Device addresses of the output of the last forward (rows x width, final LayerNorm) and of
   where backward reads d(loss)/d(output) (rows x width). */
CUdeviceptr poa_cuda_vit_output(const poa_cuda_vit_pass *pass);
CUdeviceptr poa_cuda_vit_dout(const poa_cuda_vit_pass *pass);

/* Head-input rows (device, count x width) from the output of the last forward: the CLS token
   of each image (indices 0 and count = batch), or the patch tokens indices[i] (device ints,
   image * patches + patch: iBOT's masked tokens). scatter_add adds such rows back into dout
   (the transpose; zero dout first with poa_cuda_vit_zero_dout). */
int poa_cuda_vit_gather_rows(poa_cuda_vit_pass *pass, CUdeviceptr rows, CUdeviceptr indices, long count,
                             poa_error *e);
int poa_cuda_vit_scatter_add_rows(poa_cuda_vit_pass *pass, CUdeviceptr rows, CUdeviceptr indices, long count,
                                  poa_error *e);
int poa_cuda_vit_zero_dout(poa_cuda_vit_pass *pass, poa_error *e);

/* The name of what a device address in a trace points at: "arena buffer+offset",
   "param:<tensor>+offset", "param_grad:<tensor>+offset", or a fixed name (ones, resample,
   images, mask, drop_scale); offset in elements. Returns 0, or -1 when it points nowhere. */
int poa_cuda_vit_address_name(const poa_cuda_vit_pass *pass, CUdeviceptr address, char *name,
                              size_t size, long *offset);

#endif
