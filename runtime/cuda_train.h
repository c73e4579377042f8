/* cuda_train.h: the POA training step on the GPU: runtime/train_step.h's step (teacher
   targets, intact and elastic student, every loss term, backward; NaN check, clipping per
   module, AdamW, EMA), the same sequence as the CPU's, on device memory.

   The CPU trainer (poa_trainer) stays the owner of everything that is not a tensor: the
   configuration, the networks' tensor tables and parameter groups, the schedules, the elastic
   cycle, the step and draw counters, the stochastic-depth draws (poa_draw_drop_path, the same
   values as the CPU step), and the host copies of the state that checkpoints write
   (poa_cuda_train_download fills them).

   Device memory, one allocation each, every one laid out [backbone | heads] as the trainer's
   host buffers: the student, the teacher, the gradients, AdamW's m and v, and (bf16) the bf16
   shadows of the student and the teacher that AdamW and the EMA write; one work allocation
   for the micro-batch's buffers (head inputs, logits' gradients, targets, loss rows, Sinkhorn
   and KoLeo scratch, the clipping sums), sized at init for the recipe's batch. The backbone
   passes (runtime/cuda_vit.c) and heads passes (runtime/cuda_heads.c) work on these buffers;
   each pass has its own activation arena.

   Kernels: the ViT sets of the family's widths, the heads' kernels, the training kernels
   (gen/ops_train.lua: AdamW with the shadow, EMA, clipping sums, softmax, cross-entropy,
   Sinkhorn-Knopp, KoLeo), and the glue (gathers, scatters, sums), all through runtime/cuda_exec.h:
   on the GPU, or emulated on the host (tests/c/test_cuda_train.c runs the whole step with the
   CPU kernels and compares it with the CPU trainer).

   Host synchronisation: one per step, before the update, to read the loss terms (the NaN check
   decides whether the update runs) and the gradient norms. */
#ifndef POA_CUDA_TRAIN_H
#define POA_CUDA_TRAIN_H

#include "cuda_exec.h"
#include "dist.h"
#include "cuda_heads.h"
#include "cuda_vit.h"
#include "train_step.h"

/* Data parallelism of the GPU step (reference §3.3, as runtime/trainer.c's reduce step and
   loss.c's poa_sinkhorn_knopp_global): the Sinkhorn-Knopp max, total, sample count and
   prototype sums, the gradients (then divided by the world size) and the loss terms are summed
   (or maxed) over the ranks of dist. Device buffers go through NCCL on cuda's stream, or, with
   nccl NULL (an emulated step, whose device buffers are host memory), through dist's TCP
   all-reduce, as host values always do. */
typedef struct poa_cuda_reduce {
    poa_dist *dist;
    poa_nccl *nccl;
    poa_cuda *cuda;
} poa_cuda_reduce;

/* One student branch's device state. */
typedef struct poa_cuda_branch {
    poa_cuda_vit_pass global, local; /* the member's (zeroed: not made yet) */
    poa_cuda_heads_pass heads;
    CUdeviceptr features, dfeatures;          /* head rows x width */
    CUdeviceptr dlogits[POA_MAX_HEADS];       /* head rows x K_h */
} poa_cuda_branch;

typedef struct poa_cuda_train {
    poa_trainer *t;
    poa_cuda_exec exec;
    int bf16;
    long n, nh;                 /* backbone and head parameter counts */
    CUdeviceptr student, teacher, grads, adam_m, adam_v, student_bf16, teacher_bf16;
    poa_cuda_sources sources;    /* every CUDA module of the run (the recipe's) */
    poa_cuda_modules modules;    /* every module of the run, loaded once */
    /* the functions of the kernels it launches by name (poa_runtime_launches) */
    CUfunction functions[64];
    const poa_cuda_reduce *reduce;       /* NULL: one rank */
    /* passes */
    poa_cuda_vit_pass teacher_pass;  /* zeroed: not made yet */
    poa_cuda_heads_pass teacher_heads;
    poa_cuda_branch branch[2];
    /* AdamW's chunk table over [backbone | heads] and its per-tensor scalars */
    long chunks;
    int tensor_count;
    long *tensor_offset, *tensor_count_of;
    CUdeviceptr chunk_start, chunk_count, chunk_tensor, decay, neg_step;
    /* the micro-batch's buffers, in the work allocation */
    CUdeviceptr work;
    size_t work_bytes;
    long max_rows, max_masked;  /* head rows of a student branch, masked tokens */
    CUdeviceptr teacher_input, targets_cls[POA_MAX_HEADS], targets_patch[POA_MAX_HEADS];
    CUdeviceptr distill_targets, ibot_weights, mask_indices, row_loss, terms, sum_scratch;
    CUdeviceptr sk_max_partial, sk_max, sk_row_sum, sk_row_scale, sk_total, sk_colsum, sk_column_scale;
    CUdeviceptr koleo_zhat, koleo_g, koleo_norm, koleo_row_loss, koleo_nn, koleo_grads;
    CUdeviceptr norm_partial, norms;
    double slot_unit[sizeof(poa_loss_calls) / sizeof(double)]; /* per raw-call slot: factor / slot_scale */
    /* the micro-batch being run, and the step's squared gradient norms (backbone, heads) */
    const poa_batch *batch;
    poa_step_shapes shape;
    double norm_values[2];
} poa_cuda_train;

/* Device state for trainer t (initialised; its parameters, moments and step are uploaded):
   sources compiled (or, emulated, only parsed), buffers allocated. bf16: GEMM operands in
   bf16 from the shadows (the passes' poa_*_use_bf16). */
int poa_cuda_train_init(poa_cuda_train *g, poa_trainer *t, const poa_cuda_exec *exec, int bf16, poa_error *e);
void poa_cuda_train_free(poa_cuda_train *g);

/* As poa_trainer_begin_step / _micro_batch / _reduce_step / _end_step, on the device; t->last
   holds the step's statistics afterwards, as on the CPU. reduce_step (over the ranks of
   g->reduce: the gradients' mean and the loss terms' sum) comes between the last micro-batch
   and end_step. */
void poa_cuda_train_begin_step(poa_cuda_train *g);
int poa_cuda_train_micro_batch(poa_cuda_train *g, const poa_batch *batch, int micro, poa_error *e);
int poa_cuda_train_reduce_step(poa_cuda_train *g, poa_error *e);
int poa_cuda_train_end_step(poa_cuda_train *g, poa_error *e);

/* What one step of t would allocate on a GPU, found by running the set-up and one micro-batch
   of batch nowhere (nothing runs; every allocation is counted): the peak, the state
   (parameters, gradients, moments, shadows), the work buffers, and the teacher's, the intact
   global and local passes' arenas (fp32; the bf16 cast slots are in the peak). cuBLASLt's
   workspace (32 MiB) and the CUDA context are not included. t's elastic cycle advances by one
   draw: give it a trainer of its own. */
typedef struct poa_cuda_train_plan {
    size_t peak, state, work, teacher_arena, global_arena, local_arena;
} poa_cuda_train_plan;

int poa_cuda_train_plan_memory(poa_trainer *t, int bf16, const poa_batch *batch, poa_cuda_train_plan *plan,
                               poa_error *e);

/* The device state into the trainer's host buffers (student, teacher, AdamW moments), e.g.
   before poa_trainer_save (poa_cuda_train_init uploads them, from a loaded checkpoint too). */
int poa_cuda_train_download(poa_cuda_train *g, poa_error *e);

#endif
