/* linear.h: the linear probe of a member's frozen features (reference
   poa-vit-and-training.md §8.2: DINOv2's eval/linear.py with POA's choice of layers).

   Layers: the outputs after the active blocks round(L/4 * i), i = 1, 2, 3 (NumPy rounding,
   half to even) and L - 1, each through the final LayerNorm; L = 12 gives {3, 6, 9, 11},
   L = 24 {6, 12, 18, 23}. The official code asserts four distinct positions, which depths
   below 6 do not have (L = 4 gives 1, 2, 3, 3); poa keeps the distinct ones (a position past
   the last block is the last block), so a shallow member's "last 4" is all it has.

   The grid: n_last in {1, 4} x avgpool in {no, yes} x 13 learning rates = 52 linear
   classifiers trained jointly (each its own cross-entropy, summed): input = the CLS tokens of
   the last n_last chosen layers, then (avgpool) the mean patch token of the last one; weight
   N(0, 0.01), bias 0; SGD, momentum 0.9, no weight decay; lr = base * batch / 256, annealed by
   a cosine to 0 over every iteration; the best classifier's val top-1 is reported (DINOv2
   selects on the same val set). */
#ifndef POA_LINEAR_H
#define POA_LINEAR_H

#include "error.h"
#include "real.h"

#define POA_LINEAR_LR_COUNT 13
#define POA_LINEAR_INPUTS 4 /* (n_last, avgpool) = (1, no), (1, yes), (4, no), (4, yes) */
#define POA_LINEAR_CLASSIFIERS (POA_LINEAR_INPUTS * POA_LINEAR_LR_COUNT) /* 52 */
extern const double poa_linear_base_lrs[POA_LINEAR_LR_COUNT]; /* 1e-5 .. 0.1 */

/* The chosen active-block positions of a depth-L member, ascending and distinct; returns
   how many (1 to 4). */
int poa_linear_layers(int depth, int layers[4]);

/* Classifier i of the grid (i < 52): its input (i / 13), n_last, avgpool and learning rate
   poa_linear_base_lrs[i % 13] * batch / 256. */
typedef struct poa_linear_classifier {
    int input, n_last, avgpool;
    double lr;
} poa_linear_classifier;
void poa_linear_grid_entry(int i, long batch, poa_linear_classifier *c);

/* Feature rows are (layer_count + 1) * width: the final-LN CLS token of each chosen layer,
   then the mean final-LN patch token of the last (eval_features.h with avgpool). Input i
   reads the contiguous columns [offset, offset + dim). */
void poa_linear_input_columns(int input, int layer_count, int width, long *offset, long *dim);

typedef struct poa_linear_config {
    int epochs;            /* passes over the train features */
    long batch;            /* rows per iteration (DINOv2: 256 per GPU) */
    double momentum;       /* 0.9 */
    unsigned long long seed;
} poa_linear_config;

/* Called before every epoch after the first when given: rewrite the train features (a new
   augmentation); the labels stay. */
typedef int (*poa_linear_refresh)(void *context, int epoch, real *train, poa_error *e);

typedef struct poa_linear_result {
    double top1[POA_LINEAR_CLASSIFIERS]; /* val top-1 of each classifier (fraction) */
    double loss[POA_LINEAR_CLASSIFIERS]; /* mean train cross-entropy over the last epoch */
    int best;                            /* the highest top-1 (the first of equals) */
    long iterations;
    long batch;                          /* the batch used (the lrs' scale): at most n_train */
} poa_linear_result;

/* Trains the 52 classifiers on train (n_train rows) and evaluates them on val. */
int poa_linear_train(const poa_linear_config *c, int width, int layer_count, int class_count,
                     real *train, const int *train_labels, long n_train, const real *val,
                     const int *val_labels, long n_val, poa_linear_refresh refresh,
                     void *context, poa_linear_result *r, poa_error *e);

#endif
