/* kernels.h: the width-specialized ViT kernels of the CPU backend.

   gen/ emits one poa_vit_kernels per distinct (width, heads, head_dim, hidden)
   of every recipe's family (build/gen/vit_*.c, from templates/); the same op
   descriptions are lowered to CUDA, and once more to the generic set
   (build/gen/vit_generic.c), which reads the shape from the struct instead of
   compile-time constants. A width no recipe of the build has gets its generated
   set compiled at run time (poa_vit_kernels_for), else the generic set.

   Conventions (all row-major, rows contiguous):
     D = width (active channels), H = heads = D / head_dim, F = hidden (MLP),
     B = samples, T = tokens per sample (1 + patches), rows = B * T.
   Vectors taken from parameters (LayerNorm weight, LayerScale gamma, tokens)
   are the first D entries of the full-size parameter: a prefix slice is just
   the same pointer. Outputs named d<param> are parameter gradients and are
   ACCUMULATED (+=): the intact and the elastic student add into one buffer.
   Activation outputs are written (=) unless stated. */
#ifndef POA_KERNELS_H
#define POA_KERNELS_H

#include "real.h"

typedef struct poa_vit_kernels poa_vit_kernels;

struct poa_vit_kernels {
    int width, heads, head_dim, hidden;
    const char *origin; /* "generated", "compiled at run time" or "generic" */

    /* y = (x - mean) * rstd * w + b over the D channels of each row, eps 1e-6
       (variance biased, as torch.nn.LayerNorm); saves mean and rstd per row. */
    void (*layernorm_forward)(const poa_vit_kernels *k, real *y, real *mean, real *rstd,
                              const real *x, const real *w, const real *b, long rows);
    /* dx = LayerNorm input gradient (written), dw += sum dy * xhat, db += sum dy. */
    void (*layernorm_backward)(const poa_vit_kernels *k, real *dx, real *dw, real *db,
                               const real *dy, const real *x, const real *mean,
                               const real *rstd, const real *w, long rows);

    /* g = gelu(u) = u * Phi(u) (exact erf form), u and g are rows x F. */
    void (*gelu_forward)(const poa_vit_kernels *k, real *g, const real *u, long rows);
    /* du = dg * gelu'(u) (written). */
    void (*gelu_backward)(const poa_vit_kernels *k, real *du, const real *dg, const real *u,
                          long rows);

    /* Multi-head softmax attention. qkv is rows x 3D laid out per token as
       [q (D) | k (D) | v (D)], head h owning columns h*Dh .. h*Dh+Dh-1 of each.
       out (rows x D): out_h = softmax(q_h k_h^T / sqrt(Dh)) v_h per sample.
       probs (B x H x T x T) saves the softmax for the backward. */
    void (*attention_forward)(const poa_vit_kernels *k, real *out, real *probs,
                              const real *qkv, long batch, long tokens);
    /* dqkv (rows x 3D, written) from dout; work holds B x H x T x T scratch. */
    void (*attention_backward)(const poa_vit_kernels *k, real *dqkv, real *work,
                               const real *dout, const real *qkv, const real *probs,
                               long batch, long tokens);

    /* Residual with LayerScale and per-sample stochastic depth:
       x[b,t,:] += s[b] * gamma * h[b,t,:], s = sample_scale or 1 when NULL. */
    void (*residual_forward)(const poa_vit_kernels *k, real *x, const real *h,
                             const real *gamma, const real *sample_scale, long batch,
                             long tokens);
    /* dh = s[b] * gamma * dx (written); dgamma += sum_{b,t} s[b] * h * dx. */
    void (*residual_backward)(const poa_vit_kernels *k, real *dh, real *dgamma,
                              const real *dx, const real *h, const real *gamma,
                              const real *sample_scale, long batch, long tokens);

    /* Token assembly: x (B x T x D), T = 1 + N.
         x[b,0,:]   = cls + pos[0]
         x[b,1+n,:] = (mask && mask[b*N+n] ? mask_token : patch[b*N+n]) + pos[1+n]
       pos rows are pos_ld apart (the full table's width, or D for a
       resampled table); mask may be NULL. */
    void (*tokens_forward)(const poa_vit_kernels *k, real *x, const real *patch,
                           const real *cls, const real *mask_token, const real *pos,
                           long pos_ld, const unsigned char *mask, long batch, long patches);
    /* The transpose: dpatch written (zero where masked); dcls, dmask_token and
       dpos (rows pos_ld apart) accumulated. */
    void (*tokens_backward)(const poa_vit_kernels *k, real *dpatch, real *dcls,
                            real *dmask_token, real *dpos, long pos_ld, const real *dx,
                            const unsigned char *mask, long batch, long patches);
};

/* The generic set for this shape (build/gen/vit_generic.c, whose poa_vit_kernels_generic has
   the shape fields 0): slower than a specialized set (no compile-time shape; attention always
   on its plain path, templates/attention_*.c.tmpl). */
void poa_vit_kernels_generic_for(poa_vit_kernels *k, int width, int head_dim, int hidden);

/* The generated sets compiled into this binary (build/gen/registry.c). */
extern const poa_vit_kernels *const poa_vit_kernel_sets[];
extern const int poa_vit_kernel_set_count;

/* The generated set for this shape, or NULL. */
const poa_vit_kernels *poa_vit_kernels_find(int width, int head_dim, int hidden);

/* The set a pass of this shape runs (runtime/kernels_compiled.c): the build's generated set;
   else, once per process, the set gen/emit.lua generates for the shape, compiled with the C
   compiler ($CC, else the build's) and the build's flags into a shared object in the kernel
   cache ($POA_CACHE/kernels, $XDG_CACHE_HOME/poa/kernels or ~/.cache/poa/kernels; keyed by a
   hash of the generated text, the headers, the compiler, its version and the flags; written
   under a temporary name and renamed) and loaded with dlopen, with one line on stderr saying
   what was compiled or taken from the cache; else the generic set, with one line on stderr
   naming the width and why. Thread-safe; the result lives as long as the process. */
const poa_vit_kernels *poa_vit_kernels_for(int width, int head_dim, int hidden);

#endif
