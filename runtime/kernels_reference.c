/* kernels_reference.c: the plain-loop reference of every ViT kernel in
   kernels.h, for any shape (read from the set). The generated, specialized
   sets are tested against these; they also serve a width no recipe compiled. */
#include "kernels.h"

#include <string.h>

#define LAYERNORM_EPS 1e-6

static void layernorm_forward(const poa_vit_kernels *k, real *y, real *mean, real *rstd,
                              const real *x, const real *w, const real *b, long rows) {
    const int D = k->width;
    for (long r = 0; r < rows; r++) {
        const real *xr = x + r * D;
        double sum = 0, sq = 0;
        for (int i = 0; i < D; i++) sum += xr[i];
        double m = sum / D;
        for (int i = 0; i < D; i++) sq += (xr[i] - m) * (xr[i] - m);
        double s = 1.0 / sqrt(sq / D + LAYERNORM_EPS);
        mean[r] = (real)m;
        rstd[r] = (real)s;
        for (int i = 0; i < D; i++) y[r * D + i] = (real)((xr[i] - m) * s) * w[i] + b[i];
    }
}

/* With xhat = (x - mean) * rstd and g = dy * w:
   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)). */
static void layernorm_backward(const poa_vit_kernels *k, real *dx, real *dw, real *db,
                               const real *dy, const real *x, const real *mean,
                               const real *rstd, const real *w, long rows) {
    const int D = k->width;
    for (long r = 0; r < rows; r++) {
        const real *xr = x + r * D, *dyr = dy + r * D;
        double g_mean = 0, gx_mean = 0;
        for (int i = 0; i < D; i++) {
            double xhat = (xr[i] - mean[r]) * rstd[r];
            double g = dyr[i] * w[i];
            g_mean += g;
            gx_mean += g * xhat;
        }
        g_mean /= D;
        gx_mean /= D;
        for (int i = 0; i < D; i++) {
            double xhat = (xr[i] - mean[r]) * rstd[r];
            double g = dyr[i] * w[i];
            dx[r * D + i] = (real)(rstd[r] * (g - g_mean - xhat * gx_mean));
        }
    }
    for (int i = 0; i < D; i++) {
        double sw = 0, sb = 0;
        for (long r = 0; r < rows; r++) {
            double xhat = (x[r * D + i] - mean[r]) * rstd[r];
            sw += dy[r * D + i] * xhat;
            sb += dy[r * D + i];
        }
        dw[i] += (real)sw;
        db[i] += (real)sb;
    }
}

/* gelu(u) = u * Phi(u) = 0.5 u (1 + erf(u / sqrt 2)); gelu'(u) = Phi(u) + u phi(u). */
static void gelu_forward(const poa_vit_kernels *k, real *g, const real *u, long rows) {
    long n = rows * k->hidden;
    for (long i = 0; i < n; i++) g[i] = (real)(0.5 * u[i] * (1.0 + erf(u[i] * M_SQRT1_2)));
}

static void gelu_backward(const poa_vit_kernels *k, real *du, const real *dg, const real *u,
                          long rows) {
    long n = rows * k->hidden;
    for (long i = 0; i < n; i++) {
        double cdf = 0.5 * (1.0 + erf(u[i] * M_SQRT1_2));
        double pdf = exp(-0.5 * (double)u[i] * u[i]) * 0.5 * M_2_SQRTPI * M_SQRT1_2;
        du[i] = (real)(dg[i] * (cdf + u[i] * pdf));
    }
}

static void attention_forward(const poa_vit_kernels *k, real *out, real *probs,
                              const real *qkv, long batch, long tokens) {
    const int D = k->width, H = k->heads, Dh = k->head_dim;
    const double scale = 1.0 / sqrt((double)Dh);
    for (long b = 0; b < batch; b++) {
        for (int h = 0; h < H; h++) {
            real *p = probs + ((b * H + h) * tokens) * tokens;
            for (long i = 0; i < tokens; i++) {
                const real *q = qkv + (b * tokens + i) * 3 * D + h * Dh;
                double max = -INFINITY;
                for (long j = 0; j < tokens; j++) {
                    const real *kk = qkv + (b * tokens + j) * 3 * D + D + h * Dh;
                    double s = 0;
                    for (int c = 0; c < Dh; c++) s += q[c] * kk[c];
                    p[i * tokens + j] = (real)(s * scale);
                    if (s * scale > max) max = s * scale;
                }
                double sum = 0;
                for (long j = 0; j < tokens; j++) {
                    double e = exp(p[i * tokens + j] - max);
                    p[i * tokens + j] = (real)e;
                    sum += e;
                }
                for (long j = 0; j < tokens; j++) p[i * tokens + j] = (real)(p[i * tokens + j] / sum);
                real *o = out + (b * tokens + i) * D + h * Dh;
                for (int c = 0; c < Dh; c++) {
                    double acc = 0;
                    for (long j = 0; j < tokens; j++)
                        acc += p[i * tokens + j] * qkv[(b * tokens + j) * 3 * D + 2 * D + h * Dh + c];
                    o[c] = (real)acc;
                }
            }
        }
    }
}

/* dP = dO V^T, dS = P * (dP - rowsum(dP * P)), dQ = dS K s, dK = dS^T Q s, dV = P^T dO. */
static void attention_backward(const poa_vit_kernels *k, real *dqkv, real *work,
                               const real *dout, const real *qkv, const real *probs,
                               long batch, long tokens) {
    const int D = k->width, H = k->heads, Dh = k->head_dim;
    const double scale = 1.0 / sqrt((double)Dh);
    for (long b = 0; b < batch; b++) {
        for (int h = 0; h < H; h++) {
            const real *p = probs + ((b * H + h) * tokens) * tokens;
            real *ds = work + ((b * H + h) * tokens) * tokens;
            for (long i = 0; i < tokens; i++) {
                const real *dor = dout + (b * tokens + i) * D + h * Dh;
                double dot = 0;
                for (long j = 0; j < tokens; j++) {
                    const real *v = qkv + (b * tokens + j) * 3 * D + 2 * D + h * Dh;
                    double s = 0;
                    for (int c = 0; c < Dh; c++) s += dor[c] * v[c];
                    ds[i * tokens + j] = (real)s;
                    dot += s * p[i * tokens + j];
                }
                for (long j = 0; j < tokens; j++)
                    ds[i * tokens + j] = (real)(p[i * tokens + j] * (ds[i * tokens + j] - dot));
            }
            for (long i = 0; i < tokens; i++) {
                real *dq = dqkv + (b * tokens + i) * 3 * D + h * Dh;
                real *dk = dq + D, *dv = dq + 2 * D;
                for (int c = 0; c < Dh; c++) {
                    double aq = 0, ak = 0, av = 0;
                    for (long j = 0; j < tokens; j++) {
                        const real *row = qkv + (b * tokens + j) * 3 * D + h * Dh;
                        aq += ds[i * tokens + j] * row[D + c];
                        ak += ds[j * tokens + i] * row[c];
                        av += p[j * tokens + i] * dout[(b * tokens + j) * D + h * Dh + c];
                    }
                    dq[c] = (real)(aq * scale);
                    dk[c] = (real)(ak * scale);
                    dv[c] = (real)av;
                }
            }
        }
    }
}

static void residual_forward(const poa_vit_kernels *k, real *x, const real *h,
                             const real *gamma, const real *sample_scale, long batch,
                             long tokens) {
    const int D = k->width;
    for (long b = 0; b < batch; b++) {
        real s = sample_scale ? sample_scale[b] : (real)1;
        for (long t = 0; t < tokens; t++)
            for (int i = 0; i < D; i++) {
                long at = (b * tokens + t) * D + i;
                x[at] += s * gamma[i] * h[at];
            }
    }
}

static void residual_backward(const poa_vit_kernels *k, real *dh, real *dgamma,
                              const real *dx, const real *h, const real *gamma,
                              const real *sample_scale, long batch, long tokens) {
    const int D = k->width;
    for (int i = 0; i < D; i++) {
        double acc = 0;
        for (long b = 0; b < batch; b++) {
            real s = sample_scale ? sample_scale[b] : (real)1;
            for (long t = 0; t < tokens; t++) {
                long at = (b * tokens + t) * D + i;
                dh[at] = s * gamma[i] * dx[at];
                acc += (double)s * h[at] * dx[at];
            }
        }
        dgamma[i] += (real)acc;
    }
}

static void tokens_forward(const poa_vit_kernels *k, real *x, const real *patch,
                           const real *cls, const real *mask_token, const real *pos,
                           long pos_ld, const unsigned char *mask, long batch, long patches) {
    const int D = k->width;
    const long T = patches + 1;
    for (long b = 0; b < batch; b++) {
        for (int i = 0; i < D; i++) x[(b * T) * D + i] = cls[i] + pos[i];
        for (long n = 0; n < patches; n++) {
            const real *src = (mask && mask[b * patches + n]) ? mask_token
                                                              : patch + (b * patches + n) * D;
            for (int i = 0; i < D; i++)
                x[(b * T + 1 + n) * D + i] = src[i] + pos[(1 + n) * pos_ld + i];
        }
    }
}

static void tokens_backward(const poa_vit_kernels *k, real *dpatch, real *dcls,
                            real *dmask_token, real *dpos, long pos_ld, const real *dx,
                            const unsigned char *mask, long batch, long patches) {
    const int D = k->width;
    const long T = patches + 1;
    for (long b = 0; b < batch; b++) {
        for (long n = 0; n < patches; n++) {
            int masked = mask && mask[b * patches + n];
            for (int i = 0; i < D; i++)
                dpatch[(b * patches + n) * D + i] = masked ? 0 : dx[(b * T + 1 + n) * D + i];
        }
    }
    for (int i = 0; i < D; i++) {
        double c = 0, m = 0;
        for (long b = 0; b < batch; b++) {
            c += dx[(b * T) * D + i];
            for (long n = 0; n < patches; n++)
                if (mask && mask[b * patches + n]) m += dx[(b * T + 1 + n) * D + i];
        }
        dcls[i] += (real)c;
        dpos[i] += (real)c;
        dmask_token[i] += (real)m;
        for (long n = 0; n < patches; n++) {
            double p = 0;
            for (long b = 0; b < batch; b++) p += dx[(b * T + 1 + n) * D + i];
            dpos[(1 + n) * pos_ld + i] += (real)p;
        }
    }
}

void poa_vit_kernels_reference(poa_vit_kernels *k, int width, int head_dim, int hidden) {
    memset(k, 0, sizeof *k);
    k->width = width;
    k->head_dim = head_dim;
    k->heads = width / head_dim;
    k->hidden = hidden;
    k->origin = "reference";
    k->layernorm_forward = layernorm_forward;
    k->layernorm_backward = layernorm_backward;
    k->gelu_forward = gelu_forward;
    k->gelu_backward = gelu_backward;
    k->attention_forward = attention_forward;
    k->attention_backward = attention_backward;
    k->residual_forward = residual_forward;
    k->residual_backward = residual_backward;
    k->tokens_forward = tokens_forward;
    k->tokens_backward = tokens_backward;
}
