/* linear.c: the 52 linear classifiers of the linear probe, trained jointly on frozen
   features (linear.h). One GEMM per input computes the logits of its 13 classifiers. */
#include "linear.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "train_kernels.h"
#include "random.h"

const double poa_linear_base_lrs[POA_LINEAR_LR_COUNT] = {
    1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1,
};

/* NumPy's round of L * i / 4: half to even, in exact integer arithmetic. */
static int round_quarter(int quarters) {
    int q = quarters / 4, r = quarters % 4;
    return r < 2 ? q : r > 2 ? q + 1 : q + (q & 1);
}

int poa_linear_layers(int depth, int layers[4]) {
    int n = 0;
    for (int i = 1; i <= 4; i++) {
        int at = i < 4 ? round_quarter(depth * i) : depth - 1;
        if (at > depth - 1) at = depth - 1;
        if (n == 0 || at > layers[n - 1]) layers[n++] = at;
    }
    return n;
}

void poa_linear_grid_entry(int i, long batch, poa_linear_classifier *c) {
    c->input = i / POA_LINEAR_LR_COUNT;
    c->n_last = c->input < 2 ? 1 : 4;
    c->avgpool = c->input & 1;
    c->lr = poa_linear_base_lrs[i % POA_LINEAR_LR_COUNT] * (double)batch / 256.0;
}

void poa_linear_input_columns(int input, int layer_count, int width, long *offset, long *dim) {
    int n_last = input < 2 ? 1 : 4, avgpool = input & 1;
    if (n_last > layer_count) n_last = layer_count;
    *offset = (long)(layer_count - n_last) * width;
    *dim = (long)(n_last + avgpool) * width;
}

/* One input's 13 classifiers: weights (13 K x dim), biases (13 K), momentum of both. */
typedef struct input_block {
    long offset, dim, outputs;
    real *weight, *bias, *weight_momentum, *bias_momentum, *weight_grad, *bias_grad;
} input_block;

static int blocks_init(input_block *b, int width, int layer_count, int classes,
                       unsigned long long seed, poa_error *e) {
    for (int g = 0; g < POA_LINEAR_INPUTS; g++) {
        poa_linear_input_columns(g, layer_count, width, &b[g].offset, &b[g].dim);
        b[g].outputs = (long)POA_LINEAR_LR_COUNT * classes;
        size_t w = (size_t)(b[g].outputs * b[g].dim), o = (size_t)b[g].outputs;
        b[g].weight = malloc(sizeof(real) * w);
        b[g].weight_momentum = calloc(w, sizeof(real));
        b[g].weight_grad = malloc(sizeof(real) * w);
        b[g].bias = calloc(o, sizeof(real));
        b[g].bias_momentum = calloc(o, sizeof(real));
        b[g].bias_grad = malloc(sizeof(real) * o);
        if (!b[g].weight || !b[g].weight_momentum || !b[g].weight_grad || !b[g].bias ||
            !b[g].bias_momentum || !b[g].bias_grad)
            return poa_fail(e, "linear probe: out of memory for %ld x %ld weights", b[g].outputs, b[g].dim);
        for (size_t i = 0; i < w; i++) b[g].weight[i] = (real)(0.01 * poa_normal(seed, 7100 + g, i));
    }
    return 0;
}

static void blocks_free(input_block *b) {
    for (int g = 0; g < POA_LINEAR_INPUTS; g++) {
        free(b[g].weight);
        free(b[g].weight_momentum);
        free(b[g].weight_grad);
        free(b[g].bias);
        free(b[g].bias_momentum);
        free(b[g].bias_grad);
    }
}

/* logits (rows x outputs) of one input over rows feature rows x (ld columns). */
static void forward(const input_block *b, const real *x, long ld, long rows, real *logits) {
    poa_fill_rows(logits, b->outputs, b->bias, rows, b->outputs);
    poa_gemm(0, 1, rows, b->outputs, b->dim, 1, x + b->offset, ld, b->weight, b->dim, 1, logits,
             b->outputs);
}

/* Softmax cross-entropy of each classifier's K logits per row: logits become
   d(mean loss)/d(logits); loss[j] += the summed loss of classifier j. */
static void cross_entropy(real *logits, const int *labels, long rows, int classes, double *loss) {
    double sums[POA_LINEAR_LR_COUNT] = { 0 };
#pragma omp parallel for reduction(+ : sums[:POA_LINEAR_LR_COUNT]) schedule(static)
    for (long r = 0; r < rows; r++) {
        for (int j = 0; j < POA_LINEAR_LR_COUNT; j++) {
            real *z = logits + (r * POA_LINEAR_LR_COUNT + j) * classes;
            double max = z[0], total = 0;
            for (int k = 1; k < classes; k++) max = z[k] > max ? z[k] : max;
            for (int k = 0; k < classes; k++) total += exp((double)z[k] - max);
            sums[j] += log(total) + max - z[labels[r]];
            for (int k = 0; k < classes; k++)
                z[k] = (real)((exp((double)z[k] - max) / total - (k == labels[r])) / (double)rows);
        }
    }
    for (int j = 0; j < POA_LINEAR_LR_COUNT; j++) loss[j] += sums[j];
}

/* Gradients from dlogits, then SGD with momentum, lr of classifier j times schedule. */
static void update(input_block *b, const real *x, long ld, long rows, const real *dlogits,
                   int classes, const double *lr, double schedule, double momentum) {
    poa_gemm(1, 0, b->outputs, b->dim, rows, 1, dlogits, b->outputs, x + b->offset, ld, 0,
             b->weight_grad, b->dim);
    memset(b->bias_grad, 0, sizeof(real) * (size_t)b->outputs);
    poa_column_sum_accumulate(b->bias_grad, dlogits, b->outputs, rows, b->outputs);
#pragma omp parallel for schedule(static)
    for (long o = 0; o < b->outputs; o++) {
        const real step = (real)(lr[o / classes] * schedule);
        real *w = b->weight + o * b->dim, *m = b->weight_momentum + o * b->dim;
        const real *g = b->weight_grad + o * b->dim;
        for (long i = 0; i < b->dim; i++) {
            m[i] = (real)momentum * m[i] + g[i];
            w[i] -= step * m[i];
        }
        b->bias_momentum[o] = (real)momentum * b->bias_momentum[o] + b->bias_grad[o];
        b->bias[o] -= step * b->bias_momentum[o];
    }
}

/* Fisher-Yates over [0, n) keyed by (seed, epoch). */
static void shuffle(long *order, long n, unsigned long long seed, int epoch) {
    for (long i = 0; i < n; i++) order[i] = i;
    for (long i = n - 1; i > 0; i--) {
        long j = (long)(poa_uniform(seed, 7200 + (uint64_t)epoch, (uint64_t)i) * (double)(i + 1));
        long t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* Top-1 of every classifier on val. */
static void evaluate(const input_block *blocks, const real *val, const int *labels, long n_val,
                     long ld, int classes, long batch, real *logits, double *top1) {
    long correct[POA_LINEAR_CLASSIFIERS] = { 0 };
    for (long r0 = 0; r0 < n_val; r0 += batch) {
        long rows = n_val - r0 < batch ? n_val - r0 : batch;
        for (int g = 0; g < POA_LINEAR_INPUTS; g++) {
            forward(&blocks[g], val + r0 * ld, ld, rows, logits);
            for (long r = 0; r < rows; r++)
                for (int j = 0; j < POA_LINEAR_LR_COUNT; j++) {
                    const real *z = logits + (r * POA_LINEAR_LR_COUNT + j) * classes;
                    int best = 0;
                    for (int k = 1; k < classes; k++) best = z[k] > z[best] ? k : best;
                    correct[g * POA_LINEAR_LR_COUNT + j] += best == labels[r0 + r];
                }
        }
    }
    for (int i = 0; i < POA_LINEAR_CLASSIFIERS; i++) top1[i] = (double)correct[i] / (double)n_val;
}

int poa_linear_train(const poa_linear_config *c, int width, int layer_count, int class_count,
                     real *train, const int *train_labels, long n_train, const real *val,
                     const int *val_labels, long n_val, poa_linear_refresh refresh,
                     void *context, poa_linear_result *r, poa_error *e) {
    memset(r, 0, sizeof *r);
    if (n_train < 1 || n_val < 1 || class_count < 2 || c->epochs < 1 || c->batch < 1)
        return poa_fail(e, "linear probe: %ld train and %ld val rows, %d classes, %d epochs, batch %ld",
                        n_train, n_val, class_count, c->epochs, c->batch);
    for (long i = 0; i < n_train; i++)
        if (train_labels[i] < 0 || train_labels[i] >= class_count)
            return poa_fail(e, "linear probe: label %d outside the %d classes", train_labels[i], class_count);
    const long ld = (long)(layer_count + 1) * width, batch = c->batch < n_train ? c->batch : n_train;
    const long per_epoch = (n_train + batch - 1) / batch, total = per_epoch * c->epochs;
    input_block blocks[POA_LINEAR_INPUTS] = { 0 };
    long *order = malloc(sizeof(long) * (size_t)n_train);
    int *labels = malloc(sizeof(int) * (size_t)batch);
    real *x = malloc(sizeof(real) * (size_t)(batch * ld));
    real *logits = malloc(sizeof(real) * (size_t)(batch * POA_LINEAR_LR_COUNT * class_count));
    int rc = order && labels && x && logits ? 0 : poa_fail(e, "linear probe: out of memory");
    if (rc == 0) rc = blocks_init(blocks, width, layer_count, class_count, c->seed, e);
    double lr[POA_LINEAR_CLASSIFIERS];
    for (int i = 0; i < POA_LINEAR_CLASSIFIERS; i++) {
        poa_linear_classifier entry;
        poa_linear_grid_entry(i, batch, &entry);
        lr[i] = entry.lr;
    }
    long t = 0;
    for (int epoch = 0; rc == 0 && epoch < c->epochs; epoch++) {
        if (epoch > 0 && refresh) rc = refresh(context, epoch, train, e);
        shuffle(order, n_train, c->seed, epoch);
        memset(r->loss, 0, sizeof r->loss);
        for (long b0 = 0; rc == 0 && b0 < n_train; b0 += batch, t++) {
            long rows = n_train - b0 < batch ? n_train - b0 : batch;
            for (long i = 0; i < rows; i++) {
                memcpy(x + i * ld, train + order[b0 + i] * ld, sizeof(real) * (size_t)ld);
                labels[i] = train_labels[order[b0 + i]];
            }
            /* CosineAnnealingLR(T_max = every iteration, eta_min = 0), stepped per iteration */
            double schedule = 0.5 * (1 + cos(M_PI * (double)t / (double)total));
            for (int g = 0; g < POA_LINEAR_INPUTS; g++) {
                forward(&blocks[g], x, ld, rows, logits);
                cross_entropy(logits, labels, rows, class_count, r->loss + g * POA_LINEAR_LR_COUNT);
                update(&blocks[g], x, ld, rows, logits, class_count, lr + g * POA_LINEAR_LR_COUNT,
                       schedule, c->momentum);
            }
        }
    }
    if (rc == 0) {
        for (int i = 0; i < POA_LINEAR_CLASSIFIERS; i++) r->loss[i] /= (double)n_train;
        evaluate(blocks, val, val_labels, n_val, ld, class_count, batch, logits, r->top1);
        for (int i = 1; i < POA_LINEAR_CLASSIFIERS; i++)
            if (r->top1[i] > r->top1[r->best]) r->best = i;
        r->iterations = total;
        r->batch = batch;
    }
    blocks_free(blocks);
    free(order);
    free(labels);
    free(x);
    free(logits);
    return rc;
}
