/* test_train_diagnostics.c: the learning diagnostics of runtime/train_diagnostics.h on
   cases whose answer is known: identical CLS rows (collapse: cosine 1, spread 0, rank 0),
   orthonormal rows (cosine 0, effective rank of the centred rows n - 1), rows in a k-dim
   subspace (rank at most k); uniform targets (entropy log K, spread log K), one-hot targets
   all on one prototype (entropy 0, spread 0), one-hot on distinct prototypes (spread log n);
   the teacher's entropy of equal logits (log K) and of sharp ones (near 0). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "train_diagnostics.h"

static void test_features(void) {
    enum { N = 16, D = 24 };
    real x[N * D];
    poa_step_diagnostics d;
    for (int i = 0; i < N * D; i++) x[i] = (real)(0.3 + 0.01 * (i % D));
    memset(&d, 0, sizeof d);
    poa_diagnose_features(&d, x, N, D);
    CHECK("identical rows: cosine 1, spread 0, rank 0",
          d.features_present && fabs(d.cls_cosine - 1) < 1e-6 && d.cls_std < 1e-6 && d.cls_rank < 1e-6,
          "cosine %g std %g rank %g", d.cls_cosine, d.cls_std, d.cls_rank);

    memset(x, 0, sizeof x);
    for (int i = 0; i < N; i++) x[i * D + i] = (real)(1 + i); /* orthogonal, any length */
    memset(&d, 0, sizeof d);
    poa_diagnose_features(&d, x, N, D);
    CHECK("orthogonal rows: cosine 0, centred rank n - 1",
          fabs(d.cls_cosine) < 1e-9 && fabs(d.cls_rank - (N - 1)) < 1e-6,
          "cosine %g rank %g", d.cls_cosine, d.cls_rank);

    unsigned long long s = 7;
    for (int i = 0; i < N; i++) /* random mixtures of 3 directions */
        for (int j = 0; j < D; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            x[i * D + j] = j < 3 ? (real)((double)(s >> 11) / 9007199254740992.0 - 0.5) : 0;
        }
    memset(&d, 0, sizeof d);
    poa_diagnose_features(&d, x, N, D);
    CHECK("rows in a 3-dim subspace: effective rank in (1, 3]", d.cls_rank > 1 && d.cls_rank <= 3 + 1e-6,
          "rank %g", d.cls_rank);
}

static void test_targets(void) {
    enum { R = 8, K = 32 };
    real p[R * K], z[R * K];
    poa_step_diagnostics d;
    for (int i = 0; i < R * K; i++) p[i] = (real)(1.0 / K), z[i] = 0;
    memset(&d, 0, sizeof d);
    poa_diagnose_targets(&d, p, z, R, K, 0.07);
    CHECK("uniform targets: entropy and spread log K; equal logits: teacher entropy log K",
          fabs(d.target_entropy - log(K)) < 1e-5 && fabs(d.target_spread - log(K)) < 1e-5 &&
              fabs(d.teacher_entropy - log(K)) < 1e-5,
          "entropy %g spread %g teacher %g", d.target_entropy, d.target_spread, d.teacher_entropy);
    memset(p, 0, sizeof p);
    for (int r = 0; r < R; r++) p[r * K + 3] = 1, z[r * K + 3] = 1;
    memset(&d, 0, sizeof d);
    poa_diagnose_targets(&d, p, z, R, K, 0.01);
    CHECK("one prototype for every row: entropy 0, spread 0; sharp logits: teacher entropy ~0",
          d.target_entropy < 1e-9 && d.target_spread < 1e-9 && d.teacher_entropy < 1e-6,
          "entropy %g spread %g teacher %g", d.target_entropy, d.target_spread, d.teacher_entropy);
    memset(p, 0, sizeof p);
    for (int r = 0; r < R; r++) p[r * K + r] = 1;
    poa_diagnose_targets(&d, p, z, R, K, 0.01);
    CHECK("a distinct prototype per row: entropy 0, spread log R",
          d.target_entropy < 1e-9 && fabs(d.target_spread - log(R)) < 1e-9, "entropy %g spread %g",
          d.target_entropy, d.target_spread);
}

int main(void) {
    test_features();
    test_targets();
    double sq = poa_sum_of_squares((const real[]){ 3, 4 }, 2);
    CHECK("sum of squares", sq == 25, "%g", sq);
    CHECK_EXIT();
}
