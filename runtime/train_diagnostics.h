/* train_diagnostics.h: measurements of a CPU training step that say whether and how it
   learns, written to metrics.jsonl beside the loss terms: collapse (one prototype for
   every image) or uniformity (targets that say nothing) of the teacher's targets, the
   spread and rank of the teacher's CLS features, and which loss dominates the gradient
   reaching the backbone. Taken on the step's last micro-batch of this rank. */
#ifndef POA_TRAIN_DIAGNOSTICS_H
#define POA_TRAIN_DIAGNOSTICS_H

#include "real.h"

#define POA_DIAGNOSE_EVERY 10 /* steps between the CLS feature measurements (and the first) */
#define POA_DIAGNOSE_ROWS 64  /* rows they are taken on */

typedef struct poa_step_diagnostics {
    int present;                /* 0: not measured (the GPU step) */
    /* the first head's CLS targets of the teacher (nats; log K is uniform) */
    double target_entropy;      /* mean row entropy of the Sinkhorn-Knopp targets */
    double target_spread;       /* entropy of their batch mean: log K when every prototype is used */
    double teacher_entropy;     /* mean row entropy of softmax(logits / T) before Sinkhorn-Knopp */
    /* the teacher's global-crop CLS tokens (final LayerNorm), L2-normalised; measured every
       POA_DIAGNOSE_EVERY steps (an eigenvalue problem of POA_DIAGNOSE_ROWS rows) */
    int features_present;
    double cls_cosine;          /* mean cosine between different rows: 1 = all the same */
    double cls_std;             /* sqrt of their total variance: 0 = collapsed, ~1 = isotropic */
    double cls_rank;            /* effective rank exp(H(eigenvalues / sum)) of the centred rows */
    /* squared norms of d(loss)/d(backbone output) per branch (0 intact, 1 elastic), summed
       over micro-batches (command_train takes the root): from the heads (DINO, iBOT and
       same-view terms) and from KoLeo */
    double dout_heads_sq[2], dout_koleo_sq[2];
} poa_step_diagnostics;

/* The target_* and teacher_entropy fields from rows x K targets and the logits they came from. */
void poa_diagnose_targets(poa_step_diagnostics *d, const real *targets, const real *logits, long rows,
                          long K, double temperature);

/* The cls_* fields (and features_present) from rows x width features (at most the first
   POA_DIAGNOSE_ROWS rows). */
void poa_diagnose_features(poa_step_diagnostics *d, const real *features, long rows, int width);

/* sum x[i]^2 in double. */
double poa_sum_of_squares(const real *x, long n);

#endif
