/* loss.c: the loss math of the POA step (loss.h; reference §3.3-3.5). Every sum is taken in
   double; every parallel loop gives each output element one owner and sums in a fixed order,
   so results do not depend on the thread count. */
#include "loss.h"

#include <float.h>
#include <stdlib.h>

/* Sinkhorn-Knopp, kept in factored form: Q_ij = E_ij r_i c_j with
   E_ij = exp((l_ij - m) / tau), m = max over the block. The reference's rounds
   (prototype j: Q_.j /= sum_i Q_ij, /= K; sample i: Q_i. /= sum_j Q_ij, /= n) only rescale
   c and r:  c_j = 1 / (K sum_i E_ij r_i),  r_i = 1 / (n sum_j E_ij c_j).  The initial division
   by the total sum is r_i = 1 / sum E; the output is n Q. Global factors (m, the total, K, n)
   cancel exactly, so this equals the reference's exp(l / tau) version. E is stored in
   `targets` (real), computed by real_fast_exp (fp32: fast_math.h, within 1.4 ulp of expf);
   r, c and all sums are double. In fp32, E underflows to 0 where
   l < m - 87 tau (gap 3.5 at tau 0.04); a prototype with all of its E at 0 gives NaN targets,
   as the reference's division by a zero row sum does, and the step's NaN check sees it.
   Over several ranks (reference §3.3: the global batch) the samples are split between them:
   m, the total, n and every prototype sum sum_i E_ij r_i are all-reduced (max or sum), the
   sample sums are local, so each rank gets its rows of the global batch's targets. */
int poa_sinkhorn_knopp_global(real *targets, const real *logits, long n, long k, double tau,
                              int iterations, poa_dist *dist, poa_error *e) {
    const int many = dist && dist->world_size > 1;
    if (k <= 0 || (n <= 0 && !many)) return 0;
    if (n < 0) n = 0;
    double m = -DBL_MAX; /* the max is exact in any order: thread-independent */
#pragma omp parallel for schedule(static) reduction(max : m)
    for (long i = 0; i < n * k; i++) m = logits[i] > m ? logits[i] : m;
    double *r = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    double *c = malloc(sizeof(double) * (size_t)k);
    double *row_total = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!r || !c || !row_total) { /* no memory: NaN targets, which the step's NaN check sees */
        for (long i = 0; i < n * k; i++) targets[i] = (real)NAN;
        free(r), free(c), free(row_total);
        return many ? poa_fail(e, "Sinkhorn-Knopp: out of memory for %ld x %ld", n, k) : 0;
    }
    if (poa_dist_all_reduce_double(dist, &m, 1, POA_DIST_MAX, e)) goto failed;
    const double inv_tau = 1.0 / tau;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (long j = 0; j < k; j++) {
            const real x = real_fast_exp((real)(((double)logits[i * k + j] - m) * inv_tau));
            targets[i * k + j] = x;
            s += x;
        }
        row_total[i] = s;
    }
    double sums[2] = { 0, (double)n }; /* the total of E and the number of samples */
    for (long i = 0; i < n; i++) sums[0] += row_total[i];
    if (poa_dist_all_reduce_double(dist, sums, 2, POA_DIST_SUM, e)) goto failed;
    const double total = sums[0], samples = sums[1];
    for (long i = 0; i < n; i++) r[i] = 1.0 / total;
    enum { COLUMN_BLOCK = 64 };
    const long blocks = (k + COLUMN_BLOCK - 1) / COLUMN_BLOCK;
    for (int it = 0; it < iterations; it++) {
#pragma omp parallel for schedule(static)
        for (long blk = 0; blk < blocks; blk++) { /* prototypes: c_j = sum_i E_ij r_i, then */
            long begin = blk * COLUMN_BLOCK, end = begin + COLUMN_BLOCK < k ? begin + COLUMN_BLOCK : k;
            double acc[COLUMN_BLOCK] = { 0 };
            for (long i = 0; i < n; i++)
                for (long j = begin; j < end; j++) acc[j - begin] += (double)targets[i * k + j] * r[i];
            for (long j = begin; j < end; j++) c[j] = acc[j - begin];
        }
        if (poa_dist_all_reduce_double(dist, c, k, POA_DIST_SUM, e)) goto failed;
        for (long j = 0; j < k; j++) c[j] = 1.0 / ((double)k * c[j]); /* 1 / (K sum_i E_ij r_i) */
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) { /* samples: r_i = 1 / (n sum_j E_ij c_j) */
            double s = 0;
            for (long j = 0; j < k; j++) s += (double)targets[i * k + j] * c[j];
            r[i] = 1.0 / (samples * s);
        }
    }
    if (iterations == 0)
        for (long j = 0; j < k; j++) c[j] = 1;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++)
        for (long j = 0; j < k; j++)
            targets[i * k + j] = (real)((double)targets[i * k + j] * r[i] * c[j] * samples);
    free(r), free(c), free(row_total);
    return 0;
failed:
    free(r), free(c), free(row_total);
    return -1;
}

void poa_sinkhorn_knopp(real *targets, const real *logits, long n, long k, double tau,
                        int iterations) {
    poa_sinkhorn_knopp_global(targets, logits, n, k, tau, iterations, NULL, NULL);
}

void poa_softmax_rows(real *targets, const real *logits, long n, long k, double temperature) {
    /* targets_ij = exp((l_ij - max_j l_ij) / T) / sum_j exp((l_ij - max_j l_ij) / T), the
       exponentials by real_fast_exp (fp32: within 1.4 ulp of expf), the sum in double. */
    const double inv_t = 1.0 / temperature;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        const real *l = logits + i * k;
        real *t = targets + i * k;
        double m = -DBL_MAX, s = 0;
#pragma omp simd reduction(max : m)
        for (long j = 0; j < k; j++) m = l[j] > m ? l[j] : m;
#pragma omp simd reduction(+ : s)
        for (long j = 0; j < k; j++) {
            t[j] = real_fast_exp((real)(((double)l[j] - m) * inv_t));
            s += t[j];
        }
        const double inv_s = 1.0 / s;
#pragma omp simd
        for (long j = 0; j < k; j++) t[j] = (real)(t[j] * inv_s);
    }
}

/* One row of the soft cross-entropy: with s = l / T, lse = log sum_j exp(s_j),
   P = sum_j p_j: CE = P lse - sum_j p_j s_j. If d is not NULL,
   d_j += w (P softmax(s)_j - p_j) / T (the exact gradient; = w (softmax - p) / T when P = 1).
   Returns CE (unweighted). The exponentials are real_fast_exp (fp32: within 1.4 ulp of expf)
   of arguments <= 0 rounded to real; every sum is double. */
static double cross_entropy_row(const real *p, const real *l, long k, double temperature,
                                double w, real *d) {
    const double inv_t = 1.0 / temperature;
    double m = -DBL_MAX, s = 0, mass = 0, dot = 0;
#pragma omp simd reduction(max : m)
    for (long j = 0; j < k; j++) m = l[j] > m ? l[j] : m;
    m *= inv_t;
#pragma omp simd reduction(+ : s, mass, dot)
    for (long j = 0; j < k; j++) {
        const double sj = (double)l[j] * inv_t;
        s += real_fast_exp((real)(sj - m));
        mass += p[j];
        dot += (double)p[j] * sj;
    }
    const double lse = m + log(s);
    if (d) {
        const double scale = w * inv_t;
#pragma omp simd
        for (long j = 0; j < k; j++) {
            const double soft = real_fast_exp((real)((double)l[j] * inv_t - lse));
            d[j] += (real)(scale * (mass * soft - (double)p[j]));
        }
    }
    return mass * lse - dot;
}

double poa_soft_cross_entropy(const real *targets, const real *logits, long n, long k,
                              double temperature, const real *weight, double scale,
                              real *dlogits) {
    if (n <= 0) return 0;
    double *row_loss = malloc(sizeof(double) * (size_t)n);
    double total = 0;
    if (row_loss) {
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) {
            double w = weight ? scale * weight[i] : scale;
            row_loss[i] = w * cross_entropy_row(targets + i * k, logits + i * k, k, temperature, w,
                                                dlogits ? dlogits + i * k : NULL);
        }
        for (long i = 0; i < n; i++) total += row_loss[i];
        free(row_loss);
    } else { /* the same rows and the same order of summation, one thread */
        for (long i = 0; i < n; i++) {
            double w = weight ? scale * weight[i] : scale;
            total += w * cross_entropy_row(targets + i * k, logits + i * k, k, temperature, w,
                                           dlogits ? dlogits + i * k : NULL);
        }
    }
    return total;
}

#define KOLEO_EPS 1e-8

/* KoLeo (loss.h). Forward: zhat_i = x_i / max(||x_i||, eps); nn(i) = the first argmax over
   j != i of <zhat_i, zhat_j>; diff_i = zhat_i - zhat_nn(i) + eps (every component);
   dist_i = ||diff_i||; loss = -(1/n) sum_i log(dist_i + eps).
   Backward (nn fixed): with a_i = -(1/n) / (dist_i + eps) and g_i = a_i diff_i / dist_i,
   dzhat_j = g_j - sum_{i: nn(i) = j} g_i; dx_j = (dzhat_j - zhat_j <dzhat_j, zhat_j>) / ||x_j||
   when ||x_j|| > eps, else dzhat_j / eps. Returns NaN if it cannot allocate its scratch. */
double poa_koleo(const real *x, long n, long d, double scale, real *dx) {
    if (n < 2) return 0; /* no neighbour to take: the reference needs n >= 2 */
    double *zhat = malloc(sizeof(double) * (size_t)(n * d));
    double *norm = malloc(sizeof(double) * (size_t)n), *dist = malloc(sizeof(double) * (size_t)n);
    double *g = malloc(sizeof(double) * (size_t)(n * d));
    double *dzhat = malloc(sizeof(double) * (size_t)(n * d));
    long *nn = malloc(sizeof(long) * (size_t)n);
    double loss = NAN;
    if (!zhat || !norm || !dist || !g || !dzhat || !nn) goto done;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        double s = 0;
        for (long t = 0; t < d; t++) s += (double)x[i * d + t] * x[i * d + t];
        norm[i] = sqrt(s);
        double denom = norm[i] > KOLEO_EPS ? norm[i] : KOLEO_EPS;
        for (long t = 0; t < d; t++) zhat[i * d + t] = x[i * d + t] / denom;
    }
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        double best = -DBL_MAX;
        long arg = 0;
        for (long j = 0; j < n; j++) {
            double dot = -1; /* the diagonal, as the reference fills it */
            if (j != i) {
                dot = 0;
                for (long t = 0; t < d; t++) dot += zhat[i * d + t] * zhat[j * d + t];
            }
            if (dot > best) best = dot, arg = j;
        }
        nn[i] = arg;
        double s = 0;
        for (long t = 0; t < d; t++) {
            double diff = zhat[i * d + t] - zhat[arg * d + t] + KOLEO_EPS;
            s += diff * diff;
        }
        dist[i] = sqrt(s);
        double a = -1.0 / ((double)n * (dist[i] + KOLEO_EPS));
        for (long t = 0; t < d; t++) {
            double diff = zhat[i * d + t] - zhat[arg * d + t] + KOLEO_EPS;
            g[i * d + t] = dist[i] > 0 ? a * diff / dist[i] : 0;
        }
    }
    loss = 0;
    for (long i = 0; i < n; i++) loss -= log(dist[i] + KOLEO_EPS);
    loss /= (double)n;
    if (dx) {
#pragma omp parallel for schedule(static)
        for (long j = 0; j < n; j++) {
            double *dz = dzhat + j * d, dot = 0;
            for (long t = 0; t < d; t++) dz[t] = g[j * d + t];
            for (long i = 0; i < n; i++)
                if (nn[i] == j)
                    for (long t = 0; t < d; t++) dz[t] -= g[i * d + t];
            if (norm[j] > KOLEO_EPS) {
                for (long t = 0; t < d; t++) dot += dz[t] * zhat[j * d + t];
                for (long t = 0; t < d; t++)
                    dx[j * d + t] += (real)(scale * (dz[t] - zhat[j * d + t] * dot) / norm[j]);
            } else {
                for (long t = 0; t < d; t++) dx[j * d + t] += (real)(scale * dz[t] / KOLEO_EPS);
            }
        }
    }
    loss *= scale;
done:
    free(zhat), free(norm), free(dist), free(g), free(dzhat), free(nn);
    return loss;
}
