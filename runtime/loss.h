/* loss.h: the loss math of the POA step (reference poa-vit-and-training.md §3.3-3.5).
   All of it is computed in at least fp32 with double accumulators; every function that
   returns a loss value can also accumulate (+=) its gradient with respect to its inputs. */
#ifndef POA_LOSS_H
#define POA_LOSS_H

#include "dist.h"
#include "real.h"

/* Sinkhorn-Knopp targets (reference §3.3 step 4, DESIGN decision 3): Q = exp((logits - max) / tau)
   with the max over the whole n x K block, then `iterations` rounds of: normalise each
   prototype (column of logits, i.e. over the n samples) to sum 1/K, then each sample (row)
   to sum 1/n; finally everything is multiplied by n, so each row sums to 1 (iterations >= 1;
   with 0 iterations the output is n Q / sum(Q), as the reference). targets: n x K. The
   exponentials are stored in targets (real); the scaling vectors and all sums are double. */
void poa_sinkhorn_knopp(real *targets, const real *logits, long n, long k, double tau,
                        int iterations);

/* The same over the global batch of a data-parallel run (reference §3.3): this rank's n
   rows; the max, the total, the sample count and the prototype sums are all-reduced over
   dist (NULL or a world of 1: exactly poa_sinkhorn_knopp). Every rank must call it, also
   with n = 0. Fails only when a collective fails (or, over several ranks, out of memory). */
int poa_sinkhorn_knopp_global(real *targets, const real *logits, long n, long k, double tau,
                              int iterations, poa_dist *dist, poa_error *e);

/* targets = softmax(logits / temperature) per row (the intact->elastic target at T = 0.1). */
void poa_softmax_rows(real *targets, const real *logits, long n, long k, double temperature);

/* sum over rows r of weight[r] * CE(targets_r, logits_r / temperature), with
   CE(p, s) = -sum_j p_j log_softmax(s)_j; weight NULL means every row weight is `scale`,
   otherwise row r has weight scale * weight[r]. If dlogits is not NULL it accumulates the
   exact gradient: dlogits_r += w_r * (P_r softmax(logits_r / T) - targets_r) / T with
   P_r = sum_j targets_rj (= (softmax - targets) / T when the target row sums to 1; an all-zero
   padding row gets 0). Returns the sum. */
double poa_soft_cross_entropy(const real *targets, const real *logits, long n, long k,
                              double temperature, const real *weight, double scale,
                              real *dlogits);

/* KoLeo (reference §3.5 (c)) of n feature rows of width d:
   -mean_i log(||zhat_i - zhat_nn(i) + 1e-8||_2 + 1e-8), zhat = z / max(||z||, 1e-8),
   nn(i) = argmax_{j != i} <zhat_i, zhat_j> (the first j on exact ties). Returns scale * loss
   (0 when n < 2; NaN if its scratch cannot be allocated); if dx is not NULL,
   dx += scale * d(loss)/dx (nn(i) treated as fixed, as autograd does). */
double poa_koleo(const real *x, long n, long d, double scale, real *dx);

#endif
