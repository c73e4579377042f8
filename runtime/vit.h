/* vit.h: the elastic ViT on the CPU backend (reference poa-vit-and-training.md §1).

   One fp32 (or fp64) parameter buffer holds the intact network at full size,
   in the order of the state-dict table below; a member (width D, depth L)
   reads the prefix slices of it through leading dimensions, with
   alpha = Dmax / D folded into every linear layer's GEMM. Its gradients
   accumulate (+=) into a gradient buffer of the same layout, so the intact
   and the elastic student share one buffer and entries outside the member's
   slice are untouched. */
#ifndef POA_VIT_H
#define POA_VIT_H

#include "error.h"
#include "kernels.h"
#include "program.h"
#include "real.h"

#define POA_VIT_MAX_DEPTH 64
#define POA_VIT_NAME_SIZE 64

typedef struct poa_vit_config {
    int max_width, max_depth, head_dim, mlp_ratio;
    int patch_size, in_channels, image_size; /* image_size: the native (global crop) size */
    int qkv_bias, proj_bias, ffn_bias;
    double layerscale, norm_eps;
} poa_vit_config;

typedef struct poa_vit_tensor {
    char name[POA_VIT_NAME_SIZE]; /* state-dict name, e.g. blocks.3.attn.qkv.linear.weight */
    int ndim;
    long long shape[4];
    long offset, count; /* in elements of the parameter buffer */
} poa_vit_tensor;

typedef struct poa_vit {
    poa_vit_config config;
    int tensor_count;
    poa_vit_tensor *tensors;
    long parameter_count;
} poa_vit;

int poa_vit_init(poa_vit *model, const poa_vit_config *config, poa_error *e);
void poa_vit_free(poa_vit *model);
const poa_vit_tensor *poa_vit_find_tensor(const poa_vit *model, const char *name);

/* Initial values as the reference (§1.1): trunc-normal 0.02 linears, LayerNorm 1/0,
   LayerScale = config.layerscale, cls normal 1e-6, pos trunc-normal 0.02, mask 0,
   patch conv as PyTorch's Conv2d default. Deterministic in seed. */
void poa_vit_init_parameters(const poa_vit *model, real *params, unsigned long long seed);

/* Reads every tensor by its state-dict name, with no prefix, "backbone." or (a training
   checkpoint's teacher) "teacher.backbone.", checking its shape; names the file and the
   tensor on failure. *prefix_used (may be NULL) gets the prefix found. */
int poa_vit_load_parameters(const poa_vit *model, real *params, const char *path,
                            const char **prefix_used, poa_error *e);
/* The same from an open file under an explicit prefix ("student.backbone." of a checkpoint). */
struct poa_safetensors;
int poa_vit_read_parameters(const poa_vit *model, real *params, const struct poa_safetensors *f,
                            const char *prefix, poa_error *e);
int poa_vit_save_parameters(const poa_vit *model, const real *params, const char *path,
                            poa_error *e);

/* The programs of a member (gen/program.lua's builders): the forward of an inference pass
   (liveness arena), the training forward (every activation the backward reads kept to its end),
   the backward (gen/backward.lua), and the GPU schedule's training forward and backward
   (gen/schedule.lua; bf16: with bf16 GEMM operands). */
enum { POA_VIT_INFERENCE, POA_VIT_FORWARD, POA_VIT_BACKWARD, POA_VIT_GPU_FORWARD, POA_VIT_GPU_BACKWARD };

/* The per-call places of a pass's inputs and constants, and the GPU's two bf16 cast slots. */
enum { POA_VIT_SLOT_IMAGES, POA_VIT_SLOT_MASK, POA_VIT_SLOT_DROP_SCALE, POA_VIT_SLOT_DOUT, POA_VIT_SLOT_RESAMPLE,
       POA_VIT_SLOT_ONES, POA_VIT_SLOT_CAST_A, POA_VIT_SLOT_CAST_B, POA_VIT_SLOTS };

/* What determines a program of a member: its key in the process-wide cache (program.h). */
typedef struct poa_vit_program_key {
    poa_vit_config config;
    int width, depth, image_size, kind, bf16;
} poa_vit_program_key;

/* A program of a pass and where its values live: a value's element offset in the arena, the
   parameters or the gradients, or its slot (POA_VIT_SLOT_*). */
typedef struct poa_vit_run {
    const poa_program *program; /* cached process-wide (program.h), or `owned` when the cache is full */
    poa_program owned;
    poa_vit_program_key owned_key;
    long *value_offsets;
    void **bases;
} poa_vit_run;

/* Finds (in the process-wide cache) or builds a member's forward program of this kind (POA_VIT_INFERENCE,
   POA_VIT_FORWARD or POA_VIT_GPU_FORWARD) into fwd and, but for INFERENCE, its backward (the next kind) into bwd,
   and binds their values at this batch: the forward's activations at their arena offsets, the backward's own
   after the forward's arena (*forward_count elements; *arena_count with the backward's) and its saved ones where
   the forward placed them; parameters and gradients at their tensor's offset; the rest at their slot. */
int poa_vit_runs_find(poa_vit_run *fwd, poa_vit_run *bwd, const poa_vit *model, int width, int depth, int image_size,
                      long batch, int kind, int bf16, long *forward_count, long *arena_count, poa_error *e);

/* One member's pass over one crop batch: its block ids, kernels and the
   activation arena that the backward reads. */
typedef struct poa_vit_pass {
    const poa_vit *model;
    int width, depth, hidden, heads;
    int block_ids[POA_VIT_MAX_DEPTH];
    const poa_vit_kernels *kernels;
    long batch, image_size, patches, tokens, rows;
    real alpha;
    real *arena;
    long arena_count, arena_capacity;
    real *resample;   /* patches x max_patches bicubic matrix, NULL at the native size */
    real *ones;       /* LayerScale of 1 when the model has none */
    const unsigned char *mask; /* of the last forward */
    const real *drop_scale;    /* of the last forward: depth x 2 x batch, or NULL */
    /* The forward and the backward as programs (models/vit.lua's graph lowered by
       gen/program.lua, its reverse by gen/backward.lua), run by runtime/program.c, over one
       arena: the training forward's values at their offsets, the backward's own after them. */
    int mode; /* POA_VIT_PASS_* */
    poa_vit_run fwd, bwd;
} poa_vit_pass;

/* What a pass holds: TRAINING, the forward and the backward and the arena they share; INFERENCE
   (`poa forward`, `poa knn`), the forward only and its liveness arena; LAYOUT, the shape (block ids,
   resampling matrix) without programs, arena or kernels (NULL: a width not in the build is not compiled). */
enum { POA_VIT_PASS_TRAINING, POA_VIT_PASS_INFERENCE, POA_VIT_PASS_LAYOUT };

int poa_vit_pass_init(poa_vit_pass *pass, const poa_vit *model, int width, int depth, long batch, int image_size,
                      int mode, poa_error *e);
/* Re-targets an initialised pass to another member or batch (its mode kept), keeping its
   buffers when they are large enough. */
int poa_vit_pass_prepare(poa_vit_pass *pass, const poa_vit *model, int width, int depth,
                         long batch, int image_size, poa_error *e);
void poa_vit_pass_free(poa_vit_pass *pass);

/* Pushes on L the program of this kind (POA_VIT_*; a table, gen/program.lua's format) of member
   width x depth at image_size; of a GPU kind, both the GPU's programs (one build makes them), this
   kind's on top. */
int poa_vit_push_program(lua_State *L, const poa_vit_config *config, int width, int depth, int image_size, int kind,
                         int bf16, poa_error *e);
/* Pushes on L the config as gen/program.lua's cfg table (the fields vit_member reads). */
void poa_vit_push_config(lua_State *L, const poa_vit_config *config);

/* images: batch x C x S x S. mask: batch x patches (non-zero = replace by the
   mask token) or NULL. drop_scale: per active block j, branch (0 attention,
   1 MLP) and sample, the stochastic-depth factor (0 or batch/keep), or NULL.
   The final-LayerNorm tokens (batch x tokens x width) are at poa_vit_output. */
void poa_vit_forward(poa_vit_pass *pass, const real *params, const real *images,
                     const unsigned char *mask, const real *drop_scale);
real *poa_vit_output(const poa_vit_pass *pass);
/* The residual stream after the pass's active block j (0-based, < depth), before any
   LayerNorm: batch x tokens x width, valid after a forward of a training pass (NULL for an
   inference pass, which reuses its arena and keeps only the output). */
const real *poa_vit_block_output(const poa_vit_pass *pass, int j);

/* Accumulates d(loss)/d(params) into grads, from dout = d(loss)/d(output); not for an
   inference pass. */
void poa_vit_backward(poa_vit_pass *pass, const real *params, real *grads, const real *dout);

#endif
