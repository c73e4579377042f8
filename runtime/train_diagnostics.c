/* train_diagnostics.c: what a training step's numbers say about learning (train_diagnostics.h):
   the teacher's targets (sharpness, spread over the prototypes), the spread and rank of the
   teacher's CLS features, and the size of the gradients that reach the backbone's output
   from the heads and from KoLeo. */
#include "train_diagnostics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Mean row entropy of rows x K probabilities, and the entropy of their mean row (nats). */
static void row_entropies(const real *p, long rows, long K, double *mean_entropy, double *entropy_of_mean,
                          double *column_mean) {
    double total = 0;
    memset(column_mean, 0, sizeof(double) * (size_t)K);
    for (long r = 0; r < rows; r++) {
        double h = 0;
        for (long k = 0; k < K; k++) {
            double v = p[r * K + k];
            if (v > 0) h -= v * log(v);
            column_mean[k] += v / rows;
        }
        total += h;
    }
    double h = 0;
    for (long k = 0; k < K; k++)
        if (column_mean[k] > 0) h -= column_mean[k] * log(column_mean[k]);
    *mean_entropy = total / rows;
    *entropy_of_mean = h;
}

void poa_diagnose_targets(poa_step_diagnostics *d, const real *targets, const real *logits, long rows,
                          long K, double temperature) {
    double *column = malloc(sizeof(double) * (size_t)K);
    if (!column || rows <= 0) {
        free(column);
        return;
    }
    row_entropies(targets, rows, K, &d->target_entropy, &d->target_spread, column);
    /* the teacher's own softmax(logits / T), before Sinkhorn-Knopp */
    double total = 0;
    for (long r = 0; r < rows; r++) {
        const real *z = logits + r * K;
        double top = z[0], sum = 0, h = 0;
        for (long k = 1; k < K; k++) top = z[k] > top ? z[k] : top;
        for (long k = 0; k < K; k++) sum += exp((z[k] - top) / temperature);
        for (long k = 0; k < K; k++) {
            double q = exp((z[k] - top) / temperature) / sum;
            if (q > 0) h -= q * log(q);
        }
        total += h;
    }
    d->teacher_entropy = total / rows;
    d->present = 1;
    free(column);
}

/* Eigenvalues of the symmetric n x n matrix a (destroyed) by cyclic Jacobi rotations. */
static void symmetric_eigenvalues(double *a, int n, double *values) {
    for (int sweep = 0; sweep < 30; sweep++) {
        double off = 0, diag = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) *(i == j ? &diag : &off) += a[i * n + j] * a[i * n + j];
        if (off <= 1e-22 * (diag > 0 ? diag : 1)) break;
        for (int p = 0; p < n - 1; p++)
            for (int q = p + 1; q < n; q++) {
                double apq = a[p * n + q];
                if (fabs(apq) < 1e-300) continue;
                double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
                double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < n; k++) { /* columns p, q */
                    double kp = a[k * n + p], kq = a[k * n + q];
                    a[k * n + p] = c * kp - s * kq;
                    a[k * n + q] = s * kp + c * kq;
                }
                for (int k = 0; k < n; k++) { /* rows p, q */
                    double pk = a[p * n + k], qk = a[q * n + k];
                    a[p * n + k] = c * pk - s * qk;
                    a[q * n + k] = s * pk + c * qk;
                }
            }
    }
    for (int i = 0; i < n; i++) values[i] = a[i * n + i];
}

void poa_diagnose_features(poa_step_diagnostics *d, const real *features, long rows, int width) {
    if (rows < 2 || width <= 0) return;
    const long n = rows > POA_DIAGNOSE_ROWS ? POA_DIAGNOSE_ROWS : rows;
    double *x = malloc(sizeof(double) * (size_t)(n * width));
    double *gram = malloc(sizeof(double) * (size_t)(n * n));
    double *values = malloc(sizeof(double) * (size_t)n);
    double *mean = calloc((size_t)width, sizeof(double));
    if (!x || !gram || !values || !mean) goto done;
    for (long r = 0; r < n; r++) { /* L2-normalised rows */
        double s = 0;
        for (int j = 0; j < width; j++) s += (double)features[r * width + j] * features[r * width + j];
        s = sqrt(s) > 1e-12 ? sqrt(s) : 1e-12;
        for (int j = 0; j < width; j++) x[r * width + j] = features[r * width + j] / s;
    }
    /* the mean cosine between different rows: (|sum x|^2 - n) / (n (n - 1)) */
    double sum_sq = 0;
    for (int j = 0; j < width; j++) {
        for (long r = 0; r < n; r++) mean[j] += x[r * width + j];
        sum_sq += mean[j] * mean[j];
        mean[j] /= n;
    }
    d->cls_cosine = (sum_sq - n) / ((double)n * (n - 1));
    /* the spread: sqrt(width x mean variance over the dims), 1 when the unit rows are isotropic */
    double variance = 0;
    for (long r = 0; r < n; r++)
        for (int j = 0; j < width; j++) {
            x[r * width + j] -= mean[j];
            variance += x[r * width + j] * x[r * width + j];
        }
    d->cls_std = sqrt(variance / (n - 1));
    /* the effective rank exp(H(lambda / sum lambda)) of the centred rows' Gram matrix */
    for (long a = 0; a < n; a++)
        for (long b = 0; b <= a; b++) {
            double s = 0;
            for (int j = 0; j < width; j++) s += x[a * width + j] * x[b * width + j];
            gram[a * n + b] = gram[b * n + a] = s;
        }
    symmetric_eigenvalues(gram, (int)n, values);
    double total = 0, h = 0;
    for (long i = 0; i < n; i++) total += values[i] > 0 ? values[i] : 0;
    const int collapsed = total < 1e-9 * n; /* unit rows: a total variance of rounding only */
    for (long i = 0; i < n && !collapsed; i++)
        if (values[i] > 0) h -= values[i] / total * log(values[i] / total);
    d->cls_rank = collapsed ? 0 : exp(h);
    d->features_present = 1;
done:
    free(x);
    free(gram);
    free(values);
    free(mean);
}

double poa_sum_of_squares(const real *x, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}
