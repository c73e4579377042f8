/* test_linear.c: the linear probe (runtime/linear.c, reference §8.2): the chosen layers per
   depth (L = 12 and 24 as §8.2 gives, NumPy's half-to-even rounding, shallow members), the
   grid's bookkeeping (52 classifiers, n_last x avgpool x 13 learning rates scaled by
   batch / 256, the input columns), training on separable features, and `poa linear` end to
   end on frozen features of the tiny_vit backbone over a Fashion-MNIST subset: the best
   classifier beats chance (10%) by a clear margin. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "commands.h"
#include "fashion_mnist.h"
#include "linear.h"

#define RECIPE "tests/recipes/tiny_vit.lua"
#define PARAMS "tests/golden/fixtures/vit_tiny_params.safetensors"

static int layers_are(int depth, const int *want, int n) {
    int got[4], count = poa_linear_layers(depth, got);
    if (count != n) return 0;
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) return 0;
    return 1;
}

static void test_layers(void) {
    CHECK("linear layers of L = 12: after active blocks 3 6 9 11", layers_are(12, (int[]){ 3, 6, 9, 11 }, 4),
          "got other");
    CHECK("linear layers of L = 24: after active blocks 6 12 18 23", layers_are(24, (int[]){ 6, 12, 18, 23 }, 4),
          "got other");
    /* NumPy rounds half to even: 10/4 = 2.5 -> 2, 30/4 = 7.5 -> 8; 14/4 = 3.5 -> 4, 42/4 = 10.5 -> 10 */
    CHECK("linear layers round half to even (L = 10: 2 5 8 9, L = 14: 4 7 10 13)",
          layers_are(10, (int[]){ 2, 5, 8, 9 }, 4) && layers_are(14, (int[]){ 4, 7, 10, 13 }, 4), "got other");
    int distinct = 1;
    for (int L = 6; L <= 64; L++) {
        int l[4];
        distinct &= poa_linear_layers(L, l) == 4 && l[3] == L - 1;
    }
    CHECK("linear layers: 4 distinct positions ending at L - 1 for every L >= 6", distinct, "no");
    CHECK("linear layers of shallow members keep the distinct ones (L = 2: 0 1, L = 3: 1 2, L = 4: 1 2 3)",
          layers_are(2, (int[]){ 0, 1 }, 2) && layers_are(3, (int[]){ 1, 2 }, 2) &&
          layers_are(4, (int[]){ 1, 2, 3 }, 3) && layers_are(1, (int[]){ 0 }, 1), "got other");
}

static void test_grid(void) {
    static const double base[13] = { 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1 };
    int count[2][2] = { { 0 } }, lr_ok = 1, seen[52] = { 0 };
    for (int i = 0; i < POA_LINEAR_CLASSIFIERS; i++) {
        poa_linear_classifier c;
        poa_linear_grid_entry(i, 64, &c);
        count[c.n_last == 4][c.avgpool]++;
        lr_ok &= fabs(c.lr - base[i % 13] * 64 / 256) < 1e-15 * c.lr + 1e-20;
        lr_ok &= c.input == (c.n_last == 4) * 2 + c.avgpool;
        seen[i] = 1;
    }
    poa_linear_classifier at256;
    poa_linear_grid_entry(12, 256, &at256);
    CHECK("linear grid: 52 classifiers, each (n_last, avgpool) of {1, 4} x {no, yes} with 13 lrs",
          POA_LINEAR_CLASSIFIERS == 52 && count[0][0] == 13 && count[0][1] == 13 && count[1][0] == 13 &&
          count[1][1] == 13, "counts %d %d %d %d", count[0][0], count[0][1], count[1][0], count[1][1]);
    CHECK("linear grid: lr = base (1e-5 .. 0.1) x batch / 256 (batch 64: 2.5e-6 .. 0.025; 256: 0.1)",
          lr_ok && at256.lr == 0.1 && seen[51], "lr mismatch");
    long offset[4], dim[4], off2[4], dim2[4];
    for (int g = 0; g < 4; g++) {
        poa_linear_input_columns(g, 4, 64, &offset[g], &dim[g]);
        poa_linear_input_columns(g, 2, 64, &off2[g], &dim2[g]);
    }
    CHECK("linear inputs of width 64, 4 layers: dims w 2w 4w 5w at columns 192 192 0 0",
          dim[0] == 64 && dim[1] == 128 && dim[2] == 256 && dim[3] == 320 && offset[0] == 192 &&
          offset[1] == 192 && offset[2] == 0 && offset[3] == 0, "dims %ld %ld %ld %ld", dim[0], dim[1], dim[2], dim[3]);
    CHECK("linear inputs of a 2-layer member: n_last 4 takes both (dims w 2w 2w 3w)",
          dim2[0] == 64 && dim2[1] == 128 && dim2[2] == 128 && dim2[3] == 192 && off2[2] == 0 && off2[0] == 64,
          "dims %ld %ld %ld %ld", dim2[0], dim2[1], dim2[2], dim2[3]);
}

/* Separable features: class c has a bump at column c of every block, plus noise. */
static void test_train_separable(void) {
    enum { WIDTH = 8, LAYERS = 2, CLASSES = 4, N_TRAIN = 200, N_VAL = 80 };
    const long ld = (LAYERS + 1) * WIDTH;
    real *train = malloc(sizeof(real) * N_TRAIN * ld), *val = malloc(sizeof(real) * N_VAL * ld);
    int train_labels[N_TRAIN], val_labels[N_VAL];
    uint64_t s = 99;
    for (int split = 0; split < 2; split++) {
        long n = split ? N_VAL : N_TRAIN;
        real *x = split ? val : train;
        int *labels = split ? val_labels : train_labels;
        for (long i = 0; i < n; i++) {
            labels[i] = (int)(i % CLASSES);
            for (long j = 0; j < ld; j++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                x[i * ld + j] = (real)(0.3 * ((double)(s >> 11) / 9007199254740992.0 - 0.5) +
                                       (j % WIDTH == labels[i]));
            }
        }
    }
    poa_linear_config c = { 10, 32, 0.9, 1 };
    poa_linear_result r;
    poa_error e = { "" };
    int rc = poa_linear_train(&c, WIDTH, LAYERS, CLASSES, train, train_labels, N_TRAIN, val,
                              val_labels, N_VAL, NULL, NULL, &r, &e);
    CHECK("linear probe on separable features: the best classifier is 100% and the smallest lr stays near chance",
          rc == 0 && r.top1[r.best] == 1.0 && r.top1[0] < 0.6 && r.iterations == 10 * 7,
          "rc %d %s best %g lr1e-5 %g iterations %ld", rc, e.message, r.top1[r.best], r.top1[0], r.iterations);
    free(train);
    free(val);
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (text && fread(text, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (text) text[n] = 0;
    fclose(f);
    return text;
}

static int lines_of(const char *text) {
    int n = 0;
    for (const char *p = text; p && *p; p++) n += *p == '\n';
    return n;
}

static void test_command(const char *root) {
    char data[300], out[300], path[400];
    snprintf(data, sizeof data, "%s/fm", root);
    snprintf(out, sizeof out, "%s/out", root);
    if (access(POA_FASHION_MNIST_SOURCE, R_OK) != 0) {
        CHECK_SKIP("poa linear on Fashion-MNIST", "dataset-fashion-mnist is not installed (./setup installs it)");
        return;
    }
    poa_fashion_mnist_result fm;
    poa_error e = { "" };
    int rc = poa_fashion_mnist_convert(POA_FASHION_MNIST_SOURCE, data, 32, 1000, NULL, &fm, &e);
    CHECK("Fashion-MNIST subset written (1000 train, 1000 val)", rc == 0, "%s", e.message);
    if (rc) return;
    char *argv[] = { "linear", PARAMS, "--recipe", RECIPE, "--data", data, "--nets", "64x3,96x4",
                     "--val-limit", "400", "--epochs", "10", "--batch", "64", "--augment", "no",
                     "--threads", "2", "--out", out, NULL };
    fflush(stdout);
    rc = poa_command_linear(20, argv);
    fflush(stdout);
    snprintf(path, sizeof path, "%s/linear.csv", out);
    char *csv = read_all(path);
    snprintf(path, sizeof path, "%s/linear_grid.csv", out);
    char *grid = read_all(path);
    double best[2] = { 0, 0 };
    const char *row = csv ? strchr(csv, '\n') : NULL;
    for (int i = 0; i < 2 && row; i++) {
        char name[32];
        int w, d;
        if (sscanf(row + 1, "%31[^,],%d,%d,%*d,%*g,%lf", name, &w, &d, &best[i]) != 4) best[i] = -1;
        row = strchr(row + 1, '\n');
    }
    CHECK("poa linear: linear.csv has a row per member, linear_grid.csv 52 per member",
          rc == 0 && lines_of(csv) == 3 && lines_of(grid) == 1 + 2 * 52, "rc %d, csv %d lines, grid %d lines",
          rc, lines_of(csv), lines_of(grid));
    CHECK("poa linear on frozen tiny_vit features of Fashion-MNIST: best top-1 > 50% (chance 10%)",
          rc == 0 && best[0] > 50 && best[1] > 50, "top-1 %.2f%% and %.2f%%", best[0], best[1]);
    free(csv);
    free(grid);

    char out2[320];
    snprintf(out2, sizeof out2, "%s/augmented", root);
    char *argv2[] = { "linear", PARAMS, "--recipe", RECIPE, "--data", data, "--nets", "32x2",
                      "--train-limit", "300", "--val-limit", "200", "--epochs", "2", "--batch", "64",
                      "--augment", "yes", "--threads", "2", "--out", out2, NULL };
    rc = poa_command_linear(22, argv2);
    fflush(stdout);
    snprintf(path, sizeof path, "%s/linear.csv", out2);
    csv = read_all(path);
    CHECK("poa linear --augment yes (features again each epoch) runs and writes its table",
          rc == 0 && lines_of(csv) == 2, "rc %d", rc);
    free(csv);
    char *argv3[] = { "linear", PARAMS, "--recipe", RECIPE, "--data", data, "--augment", "maybe", NULL };
    CHECK("poa linear: --augment maybe is refused", poa_command_linear(8, argv3) == 2, "accepted");
}

int main(void) {
    test_layers();
    test_grid();
    test_train_separable();
    char root[] = "/tmp/poa_test_linear_XXXXXX";
    if (!mkdtemp(root)) {
        CHECK("linear temporary directory", 0, "mkdtemp failed");
        CHECK_EXIT();
    }
    test_command(root);
    if (getenv("POA_KEEP_TEST_FILES")) printf("kept %s\n", root);
    else {
        char command[400];
        snprintf(command, sizeof command, "rm -rf '%s'", root);
        if (system(command) != 0) printf("could not remove %s\n", root);
    }
    CHECK_EXIT();
}
