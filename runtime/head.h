/* head.h: the projection heads (reference poa-vit-and-training.md §2, MDINOHead).
   H independent heads; head h: Linear(in -> hidden) GELU Linear(hidden -> hidden) GELU
   Linear(hidden -> bottleneck), L2-normalise (eps 1e-12), then a weight-normalised
   Linear(bottleneck -> K_h, no bias) whose row k is weight_g[k] * weight_v[k] / ||weight_v[k]||.
   The elastic branch feeds features of width D < in: the first layer uses the weight's
   first D columns with its input scaled by alpha = in / D (bias unscaled); everything
   after the first layer is shared verbatim. Parameters live in one buffer (layout below),
   gradients accumulate (+=) into a buffer of the same layout. */
#ifndef POA_HEAD_H
#define POA_HEAD_H

#include "error.h"
#include "real.h"
#include "vit.h"

#define POA_MAX_HEADS 8

typedef struct poa_head_config {
    int heads;       /* H */
    int in_dim;      /* the intact backbone width */
    int hidden;      /* 2048 in the paper's run */
    int bottleneck;  /* 256 */
    int prototypes[POA_MAX_HEADS]; /* K_h: 8192, 16384, 32768, 65536 */
} poa_head_config;

/* Offsets (in elements) of head h's tensors in the parameter buffer. */
typedef struct poa_head_offsets {
    long w0, b0, w1, b1, w2, b2, weight_g, weight_v;
} poa_head_offsets;

typedef struct poa_heads {
    poa_head_config config;
    int tensor_count;
    poa_vit_tensor *tensors; /* names mlp{h}.0.weight, mlp{h}.0.bias, mlp{h}.2.*, mlp{h}.4.*,
                                last_layer{h}.weight_g (K,1), last_layer{h}.weight_v (K,bottleneck) */
    poa_head_offsets head[POA_MAX_HEADS];
    long parameter_count;
} poa_heads;

int poa_heads_init(poa_heads *heads, const poa_head_config *config, poa_error *e);
void poa_heads_free(poa_heads *heads);
/* Reference init: MLP weights trunc-normal(0.02), biases 0, weight_g = 1,
   weight_v ~ U(-1/sqrt(bottleneck), 1/sqrt(bottleneck)) (PyTorch Linear default). */
void poa_heads_init_parameters(const poa_heads *heads, real *params, unsigned long long seed);

/* Reads every head tensor from a state dict under "dino_head." (the official POA and DINOv2
   names, where each head's first layer is the sliced mlp{h}.0.linear.*) or under poa's own
   names (mlp{h}.0.*, as a poa checkpoint's "student.dino_head."), checking shapes; names the
   file and the tensor on failure. */
/* prefix + the official name of head tensor `name`: its first layer (a sliced linear) is
   mlp{h}.0.linear.*, the others as poa names them. */
void poa_heads_official_name(char *out, size_t size, const char *prefix, const char *name);
int poa_heads_load_parameters(const poa_heads *heads, real *params, const char *path, const char *prefix,
                              poa_error *e);

/* Where a pass's arena keeps its buffers (element offsets): per head a0 h0 a1 h1 (rows x hidden),
   z u (rows x bottleneck), ||z|| (rows), Wn (K_h x bottleneck), ||v|| (K_h), logits (rows x
   K_h); then the input copy x (rows x width) and the backward's scratch, shared by the heads:
   two rows x hidden, two rows x bottleneck, one K_max x bottleneck. The GPU pass
   (runtime/cuda_heads.c) uses the same layout. */
typedef struct poa_head_buffers {
    long a0, h0, a1, h1, z, u, znorm, wn, vnorm, logits;
} poa_head_buffers;

typedef struct poa_heads_layout {
    poa_head_buffers head[POA_MAX_HEADS];
    long x, d_hidden_a, d_hidden_b, d_bottleneck_a, d_bottleneck_b, d_wn;
    long count; /* the arena's size */
} poa_heads_layout;

void poa_heads_layout_of(const poa_head_config *config, long rows, long width,
                         poa_heads_layout *layout);

/* One forward (and backward) of all heads over `rows` input rows of width `width`. */
typedef struct poa_heads_pass {
    const poa_heads *heads;
    int width;
    long rows;
    real alpha;          /* in_dim / width */
    real *arena;         /* saved activations */
    long arena_count, arena_capacity;
    real *logits[POA_MAX_HEADS]; /* rows x K_h, valid after poa_heads_forward */
} poa_heads_pass;

int poa_heads_pass_init(poa_heads_pass *pass, const poa_heads *heads, int width, long rows,
                        poa_error *e);
/* Re-targets an initialised pass, keeping its buffer when it is large enough. */
int poa_heads_pass_prepare(poa_heads_pass *pass, const poa_heads *heads, int width, long rows,
                           poa_error *e);
void poa_heads_pass_free(poa_heads_pass *pass);
/* x: rows x width features. Fills pass->logits[h]; keeps a copy of x in the arena for the
   backward, so the caller may reuse x's buffer. */
void poa_heads_forward(poa_heads_pass *pass, const real *params, const real *x);
/* dlogits[h]: rows x K_h. grads += d/dparams; dx (rows x width) = sum over heads of the
   input gradient (written). Requires the last forward of this pass. */
void poa_heads_backward(poa_heads_pass *pass, const real *params, real *grads,
                        real *const *dlogits, real *dx);

#endif
