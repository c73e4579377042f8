/* test_knn.c: the weighted k-NN classifier (clustered features, a hand-worked
   example where weighting changes the vote, k larger than the bank, DINOv2's
   KnnModule on random features from tests/golden/make_knn_fixtures.py), the
   subset, the eval transform against torchvision, the PNG writer (chunk CRCs,
   inflated IDAT), features (unit norm, batch-independent), the raw-pixel baseline's
   features against plain loops, the backbone prefix loader, and `poa knn` end to end on a
   tiny JPEG tree with tests/recipes/tiny_vit.lua, its baselines included (the members at
   initialisation are poa train's: a file of that initialisation evaluates the same as
   trained and as at initialisation, and --init swaps the two). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "commands.h"
#include "jpeg_decode.h"
#include "image_eval.h"
#include "knn.h"
#include "plot.h"
#include "random.h"
#include "recipe.h"
#include "safetensors.h"

#define FIXTURES "tests/golden/fixtures/"
#define RECIPE "tests/recipes/tiny_vit.lua"
#define PARAMS FIXTURES "vit_tiny_params.safetensors"

static uint64_t lcg = 12345;
static double uniform(void) {
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(lcg >> 11) / 9007199254740992.0;
}
static double gaussian(void) {
    double u = uniform() + 1e-12, v = uniform();
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}
static void normalize_rows(real *x, long n, int dim) {
    for (long i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < dim; j++) s += (double)x[i * dim + j] * x[i * dim + j];
        for (int j = 0; j < dim; j++) x[i * dim + j] = (real)(x[i * dim + j] / sqrt(s));
    }
}

static void test_clusters(void) {
    enum { C = 4, DIM = 16, PER_TRAIN = 50, PER_VAL = 10 };
    real centers[C * DIM], train[C * PER_TRAIN * DIM], val[C * PER_VAL * DIM];
    int train_labels[C * PER_TRAIN], val_labels[C * PER_VAL];
    for (int i = 0; i < C * DIM; i++) centers[i] = (real)gaussian();
    normalize_rows(centers, C, DIM);
    for (int i = 0; i < C * PER_TRAIN; i++) {
        train_labels[i] = i % C;
        for (int j = 0; j < DIM; j++) train[i * DIM + j] = centers[(i % C) * DIM + j] + (real)(0.05 * gaussian());
    }
    for (int i = 0; i < C * PER_VAL; i++) {
        val_labels[i] = (i * 7) % C;
        for (int j = 0; j < DIM; j++) val[i * DIM + j] = centers[val_labels[i] * DIM + j] + (real)(0.05 * gaussian());
    }
    normalize_rows(train, C * PER_TRAIN, DIM);
    normalize_rows(val, C * PER_VAL, DIM);
    double top1[4], top5[4];
    poa_error e = { "" };
    int rc = poa_knn_classify(train, train_labels, C * PER_TRAIN, val, val_labels, C * PER_VAL, DIM, C,
                              poa_knn_default_ks, 4, POA_KNN_TEMPERATURE, top1, top5, NULL, &e);
    int all = rc == 0;
    for (int k = 0; k < 4; k++) all &= top1[k] == 1.0 && top5[k] == 1.0;
    CHECK("knn clustered features: 100% at k = 10, 20, 100, 200", all, "rc %d %s top-1 %g %g %g %g", rc,
          e.message, top1[0], top1[1], top1[2], top1[3]);
}

/* Query (1, 0); neighbours at cosine 0.9 (class 0), 0.5 and 0.45 (class 1). With
   k = 3, T = 0.07: class 0 weighs e^(0.9/T) against e^(0.5/T) + e^(0.45/T), 300x
   more, so it wins; an unweighted vote (T huge) picks class 1, 2 votes to 1. */
static void test_hand_worked(void) {
    const double cosines[3] = { 0.9, 0.5, 0.45 };
    real train[6], val[2] = { 1, 0 };
    for (int i = 0; i < 3; i++) {
        train[2 * i] = (real)cosines[i];
        train[2 * i + 1] = (real)sqrt(1 - cosines[i] * cosines[i]);
    }
    int train_labels[3] = { 0, 1, 1 }, val_label0 = 0, val_label1 = 1;
    int ks[2] = { 1, 3 }, predicted[2] = { -1, -1 }, unweighted[2] = { -1, -1 };
    double top1[2], top5[2];
    poa_error e = { "" };
    int rc = poa_knn_classify(train, train_labels, 3, val, &val_label0, 1, 2, 2, ks, 2, 0.07, top1, top5,
                              predicted, &e);
    CHECK("knn hand-worked: softmax weighting keeps the nearest class at k = 3",
          rc == 0 && predicted[0] == 0 && predicted[1] == 0 && top1[1] == 1.0, "rc %d predicted %d %d",
          rc, predicted[0], predicted[1]);
    rc = poa_knn_classify(train, train_labels, 3, val, &val_label1, 1, 2, 2, ks, 2, 1e6, top1, top5,
                          unweighted, &e);
    CHECK("knn hand-worked: a flat weighting (T = 1e6) votes 2 to 1 for the other class",
          rc == 0 && unweighted[0] == 0 && unweighted[1] == 1 && top1[1] == 1.0 && top1[0] == 0.0,
          "rc %d predicted %d %d", rc, unweighted[0], unweighted[1]);
    /* k larger than the bank: every k >= 3 uses the 3 neighbours. */
    int big[3] = { 3, 20, 200 }, p[3] = { -1, -1, -1 };
    double t1[3], t5[3];
    rc = poa_knn_classify(train, train_labels, 3, val, &val_label0, 1, 2, 2, big, 3, 0.07, t1, t5, p, &e);
    CHECK("knn k larger than the bank uses the whole bank", rc == 0 && p[0] == 0 && p[1] == 0 && p[2] == 0,
          "rc %d %s predicted %d %d %d", rc, e.message, p[0], p[1], p[2]);
    /* top-5 with 6 classes: a label ranked 6th misses top-5. Neighbours of classes
       0..5 at decreasing similarity; the label is 5. */
    real bank[12], q[2] = { 1, 0 };
    int labels6[6];
    for (int i = 0; i < 6; i++) {
        double c = 0.95 - 0.1 * i;
        bank[2 * i] = (real)c;
        bank[2 * i + 1] = (real)sqrt(1 - c * c);
        labels6[i] = i;
    }
    int label = 5, k6 = 6, label4 = 4;
    rc = poa_knn_classify(bank, labels6, 6, q, &label, 1, 2, 6, &k6, 1, 0.07, t1, t5, NULL, &e);
    int rc2 = poa_knn_classify(bank, labels6, 6, q, &label4, 1, 2, 6, &k6, 1, 0.07, t1 + 1, t5 + 1, NULL, &e);
    CHECK("knn top-5: the 6th class misses, the 5th hits", rc == 0 && rc2 == 0 && t5[0] == 0.0 &&
          t5[1] == 1.0 && t1[0] == 0.0, "top-5 %g %g", t5[0], t5[1]);
    int bad = 7;
    rc = poa_knn_classify(train, train_labels, 3, val, &bad, 1, 2, 2, ks, 2, 0.07, top1, top5, NULL, &e);
    CHECK("knn rejects a label outside the classes", rc == -1 && strstr(e.message, "label 7"), "%s", e.message);
}

static void *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *data = malloc((size_t)n + 1);
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    fclose(f);
    if (data) ((char *)data)[n] = 0; /* text files read as strings */
    if (size) *size = (size_t)n;
    return data;
}

static void test_dinov2_fixture(void) {
    int classes, dim, n_train, n_val;
    FILE *f = fopen(FIXTURES "knn_classify.txt", "r");
    if (!f || fscanf(f, "%d %d %d %d", &classes, &dim, &n_train, &n_val) != 4) {
        CHECK("knn matches DINOv2's KnnModule (fixture)", 0, "cannot read " FIXTURES "knn_classify.txt");
        if (f) fclose(f);
        return;
    }
    int ks[4];
    double want1[4], want5[4];
    for (int i = 0; i < 4; i++)
        if (fscanf(f, "%d %lf %lf", &ks[i], &want1[i], &want5[i]) != 3) ks[i] = 0;
    fclose(f);
    float *train32 = read_all(FIXTURES "knn_classify_train.f32", NULL);
    float *val32 = read_all(FIXTURES "knn_classify_val.f32", NULL);
    int *train_labels = read_all(FIXTURES "knn_classify_train_labels.i32", NULL);
    int *val_labels = read_all(FIXTURES "knn_classify_val_labels.i32", NULL);
    real *train = malloc(sizeof(real) * (size_t)n_train * dim), *val = malloc(sizeof(real) * (size_t)n_val * dim);
    double top1[4], top5[4];
    poa_error e = { "" };
    int rc = -1;
    if (train32 && val32 && train_labels && val_labels && train && val) {
        for (long i = 0; i < (long)n_train * dim; i++) train[i] = train32[i];
        for (long i = 0; i < (long)n_val * dim; i++) val[i] = val32[i];
        rc = poa_knn_classify(train, train_labels, n_train, val, val_labels, n_val, dim, classes, ks, 4,
                              POA_KNN_TEMPERATURE, top1, top5, NULL, &e);
    }
    int same = rc == 0;
    for (int i = 0; i < 4 && same; i++)
        same = fabs(top1[i] - want1[i]) < 1e-9 && fabs(top5[i] - want5[i]) < 1e-9;
    CHECK("knn matches DINOv2's KnnModule (torch fixture, 4 k's, top-1 and top-5)", same,
          "rc %d %s; k=%d top-1 %.4f want %.4f, k=%d top-1 %.4f want %.4f", rc, e.message, ks[0], top1[0],
          want1[0], ks[3], top1[3], want1[3]);
    free(train32);
    free(val32);
    free(train_labels);
    free(val_labels);
    free(train);
    free(val);
}

static void test_subset(void) {
    long idx[300];
    long n = poa_knn_subset(10, 4, idx);
    CHECK("knn subset: evenly spaced", n == 4 && idx[0] == 0 && idx[1] == 2 && idx[2] == 5 && idx[3] == 7,
          "n %ld: %ld %ld %ld %ld", n, idx[0], idx[1], idx[2], idx[3]);
    long all = poa_knn_subset(10, 0, idx), over = poa_knn_subset(10, 50, idx);
    CHECK("knn subset: 0 or more than the count keeps all", all == 10 && over == 10 && idx[9] == 9,
          "%ld %ld", all, over);
    /* 3 class-sorted classes of 100, 30 kept: 10 of each */
    n = poa_knn_subset(300, 30, idx);
    int per[3] = { 0 };
    for (long i = 0; i < n; i++) per[idx[i] / 100]++;
    CHECK("knn subset: every class of a sorted dataset appears", per[0] == 10 && per[1] == 10 && per[2] == 10,
          "%d %d %d", per[0], per[1], per[2]);
}

static void test_eval_transform(void) {
    static const int cases[2][3] = { { 45, 30, 32 }, { 29, 52, 24 } };
    for (int c = 0; c < 2; c++) {
        int w = cases[c][0], h = cases[c][1], size = cases[c][2];
        char path[256], name[128];
        snprintf(path, sizeof path, FIXTURES "knn_transform_%dx%d_%d.in.u8", w, h, size);
        unsigned char *in = read_all(path, NULL);
        snprintf(path, sizeof path, FIXTURES "knn_transform_%dx%d_%d.out.u8", w, h, size);
        unsigned char *want = read_all(path, NULL);
        unsigned char *got = malloc((size_t)size * size * 3), *scratch = NULL;
        size_t scratch_size = 0;
        poa_error e = { "" };
        int rc = in && want && got ? poa_eval_transform(in, w, h, size, got, &scratch, &scratch_size, &e) : -1;
        int diff = 0;
        for (int i = 0; rc == 0 && i < size * size * 3; i++) diff += got[i] != want[i];
        snprintf(name, sizeof name, "knn eval transform %dx%d -> %d equals torchvision's", w, h, size);
        CHECK(name, rc == 0 && diff == 0, "rc %d %s, %d bytes differ", rc, e.message, diff);
        free(in);
        free(want);
        free(got);
        free(scratch);
    }
}

/* A file that starts as a PNG of at least 200 x 100 pixels (IHDR) or as an SVG. */
static int figure_ok(const char *path, int png) {
    size_t size = 0;
    unsigned char *data = read_all(path, &size);
    int ok = 0;
    if (data && png && size > 33 && memcmp(data + 1, "PNG", 3) == 0 && memcmp(data + 12, "IHDR", 4) == 0) {
        unsigned w = (unsigned)data[16] << 24 | data[17] << 16 | data[18] << 8 | data[19];
        unsigned h = (unsigned)data[20] << 24 | data[21] << 16 | data[22] << 8 | data[23];
        ok = w >= 200 && h >= 100;
    }
    if (data && !png && size > 100) ok = strstr((const char *)data, "<svg") != NULL;
    free(data);
    return ok;
}

static int figures_ok(const char *out, const char *prefix) {
    static const char *const kinds[3] = { "heatmap", "params", "gflops" };
    char path[1200];
    int ok = 1;
    for (int k = 0; k < 3; k++)
        for (int png = 0; png < 2; png++) {
            snprintf(path, sizeof path, "%s/%s_%s.%s", out, prefix, kinds[k], png ? "png" : "svg");
            ok &= figure_ok(path, png);
        }
    return ok;
}

static int write_tree(const char *root, int classes, const int per_split[2], poa_error *e) {
    static const char *splits[2] = { "train", "val" };
    poa_jpeg_decoder *coder = poa_jpeg_decoder_create();
    int rc = coder ? 0 : -1;
    char path[1024];
    mkdir(root, 0755);
    for (int s = 0; s < 2 && rc == 0; s++) {
        snprintf(path, sizeof path, "%s/%s", root, splits[s]);
        mkdir(path, 0755);
        for (int c = 0; c < classes && rc == 0; c++) {
            snprintf(path, sizeof path, "%s/%s/class_%c", root, splits[s], 'a' + c);
            mkdir(path, 0755);
            for (int i = 0; i < per_split[s] && rc == 0; i++) {
                int w = 36 + 4 * (i % 3), h = 40 - 2 * (i % 2);
                unsigned char *rgb = malloc((size_t)w * h * 3), *jpeg = NULL;
                unsigned long jpeg_size = 0;
                for (int p = 0; p < w * h; p++)
                    for (int ch = 0; ch < 3; ch++)
                        rgb[3 * p + ch] = (unsigned char)((ch == c % 3 ? 150 : 40) + 60 * uniform());
                snprintf(path, sizeof path, "%s/%s/class_%c/%d.jpg", root, splits[s], 'a' + c, i);
                rc = poa_jpeg_encode(coder, rgb, w, h, 90, &jpeg, &jpeg_size, path, e);
                FILE *f = rc == 0 ? fopen(path, "wb") : NULL;
                if (rc == 0 && (!f || fwrite(jpeg, 1, jpeg_size, f) != jpeg_size)) rc = -1;
                if (f) fclose(f);
                if (jpeg) poa_jpeg_free(jpeg);
                free(rgb);
            }
        }
    }
    if (coder) poa_jpeg_decoder_destroy(coder);
    return rc;
}

static int count_lines(const char *path, const char *prefix) {
    char *text = read_all(path, NULL);
    int n = 0;
    if (!text) return -1;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) n += strncmp(line, prefix, strlen(prefix)) == 0;
    free(text);
    return n;
}

static void test_features(const char *root) {
    poa_error e = { "" };
    lua_State *L = poa_lua_open(&e);
    poa_recipe r;
    poa_vit model = { 0 };
    int rc = L ? poa_recipe_load(L, RECIPE, &r, &e) : -1;
    if (L) lua_close(L);
    if (rc == 0) rc = poa_vit_init(&model, &r.vit, &e);
    real *params = rc == 0 ? malloc(sizeof(real) * (size_t)model.parameter_count) : NULL;
    const char *prefix = NULL;
    if (rc == 0) rc = poa_vit_load_parameters(&model, params, PARAMS, &prefix, &e);
    CHECK("knn loads a plain backbone file (no prefix)", rc == 0 && prefix && prefix[0] == 0, "%s", e.message);
    /* the same parameters as "teacher.backbone.<name>" among other tensors */
    char path[512];
    snprintf(path, sizeof path, "%s/teacher.safetensors", root);
    poa_safetensors_writer *w = rc == 0 ? poa_safetensors_writer_new() : NULL;
    real other[3] = { 1, 2, 3 };
    long long other_shape[1] = { 3 };
    for (int i = 0; w && rc == 0 && i < model.tensor_count; i++) {
        char name[128];
        snprintf(name, sizeof name, "teacher.backbone.%s", model.tensors[i].name);
        rc = poa_safetensors_writer_add_real(w, name, model.tensors[i].ndim, model.tensors[i].shape,
                                             params + model.tensors[i].offset, &e);
    }
    if (w && rc == 0) rc = poa_safetensors_writer_add_real(w, "student.backbone.cls_token", 1, other_shape, other, &e);
    if (w && rc == 0) rc = poa_safetensors_writer_metadata(w, "recipe", RECIPE, &e);
    if (w && rc == 0) rc = poa_safetensors_writer_save(w, path, &e);
    if (w) poa_safetensors_writer_free(w);
    real *again = params ? malloc(sizeof(real) * (size_t)model.parameter_count) : NULL;
    int rc2 = again ? poa_vit_load_parameters(&model, again, path, &prefix, &e) : -1;
    CHECK("knn loads 'teacher.backbone.' tensors of a checkpoint", rc == 0 && rc2 == 0 &&
          strcmp(prefix, "teacher.backbone.") == 0 &&
          memcmp(params, again, sizeof(real) * (size_t)model.parameter_count) == 0, "%s", e.message);
    free(again);

    /* features of 64x3: unit norm, the same in batches of 3 (a short last batch) as one by one */
    poa_dataset d = { 0 };
    poa_knn_images images = { 0 };
    snprintf(path, sizeof path, "%s/tree/train", root);
    if (rc == 0) rc = poa_dataset_open_folder(&d, path, &e);
    if (rc == 0) rc = poa_knn_load_images(&images, &d, 7, r.global_crop_size, 2, NULL, &e);
    real *a = malloc(sizeof(real) * 7 * 64), *b = malloc(sizeof(real) * 7 * 64);
    if (rc == 0) rc = poa_knn_features(&model, params, 64, 3, &images, 3, a, NULL, &e);
    if (rc == 0) rc = poa_knn_features(&model, params, 64, 3, &images, 1, b, NULL, &e);
    double worst_norm = 0, worst_diff = 0;
    for (int i = 0; rc == 0 && i < images.count; i++) {
        double s = 0;
        for (int j = 0; j < 64; j++) {
            s += (double)a[i * 64 + j] * a[i * 64 + j];
            worst_diff = fmax(worst_diff, fabs((double)a[i * 64 + j] - b[i * 64 + j]));
        }
        worst_norm = fmax(worst_norm, fabs(sqrt(s) - 1));
    }
    CHECK("knn features: 7 images, unit norm, batch 3 equals batch 1",
          rc == 0 && images.count == 7 && worst_norm < 1e-5 && worst_diff < 1e-5,
          "rc %d %s count %ld norm err %g diff %g", rc, e.message, images.count, worst_norm, worst_diff);
    free(a);
    free(b);

    /* the pixel baseline: ((byte / 255 - mean) / std), channels first, L2-normalised */
    static const double mean[3] = { 0.485, 0.456, 0.406 }, stdev[3] = { 0.229, 0.224, 0.225 };
    int dim = rc == 0 ? poa_knn_pixel_dim(&images) : 0, size = images.size;
    real *p = rc == 0 ? malloc(sizeof(real) * (size_t)images.count * dim) : NULL;
    double *want = malloc(sizeof(double) * (size_t)(dim > 0 ? dim : 1));
    if (rc == 0) rc = poa_knn_pixel_features(&images, p, &e);
    worst_diff = rc == 0 ? 0 : 1;
    for (long i = 0; rc == 0 && i < images.count; i++) {
        double s = 0;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < size; y++)
                for (int x = 0; x < size; x++) {
                    double v = images.pixels[((i * size + y) * size + x) * 3 + c] / 255.0;
                    want[(c * size + y) * size + x] = (v - mean[c]) / stdev[c];
                    s += want[(c * size + y) * size + x] * want[(c * size + y) * size + x];
                }
        for (int j = 0; j < dim; j++) worst_diff = fmax(worst_diff, fabs(p[i * dim + j] - want[j] / sqrt(s)));
    }
    CHECK("knn pixel baseline: 3 x size x size values an image, normalised as fed, unit norm",
          rc == 0 && dim == 3 * r.global_crop_size * r.global_crop_size && worst_diff < 1e-5,
          "rc %d %s dim %d diff %g", rc, e.message, dim, worst_diff);
    free(p);
    free(want);
    poa_knn_images_free(&images);
    poa_dataset_free(&d);
    free(params);
    poa_vit_free(&model);
}

/* The top-1 cell of knn.csv's row (member, k, features), or "" when none. */
static void csv_top1(const char *text, const char *member, int k, const char *features, char *out) {
    char head[96], tail[64];
    snprintf(head, sizeof head, "%s,", member);
    snprintf(tail, sizeof tail, ",%s", features);
    out[0] = 0;
    for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char row[256], top1[32];
        if (len >= sizeof row) continue;
        memcpy(row, line, len);
        row[len] = 0;
        int width, depth, row_k;
        long long params;
        double gflops;
        if (strncmp(row, head, strlen(head)) != 0 || len < strlen(tail) ||
            strcmp(row + len - strlen(tail), tail) != 0)
            continue;
        /* member,width,depth,params,gflops,k,top1,top5,features */
        if (sscanf(row + strlen(head), "%d,%d,%lld,%lf,%d,%31[^,]", &width, &depth, &params, &gflops, &row_k,
                   top1) == 6 &&
            row_k == k)
            snprintf(out, 32, "%s", top1);
    }
}

/* Every member's (trained or init) top-1 in a equals (trained or init) in b, for every k. */
static int same_columns(const char *a, const char *a_features, const char *b, const char *b_features) {
    static const char *members[] = { "32x2", "64x3", "96x4" };
    static const int ks[] = { 10, 20, 100, 200 };
    int same = a && b;
    for (int i = 0; same && i < 3; i++)
        for (int k = 0; same && k < 4; k++) {
            char x[32], y[32];
            csv_top1(a, members[i], ks[k], a_features, x);
            csv_top1(b, members[i], ks[k], b_features, y);
            same = x[0] && strcmp(x, y) == 0;
        }
    return same;
}

/* The baselines: the pixels' row, and the members at initialisation as poa train makes them. */
static void test_baselines(const char *root) {
    char data[256], out[3][300], init[300], path[1024];
    snprintf(data, sizeof data, "%s/tree", root);
    for (int i = 0; i < 3; i++) snprintf(out[i], sizeof out[i], "%s/baselines%d", root, i);
    snprintf(init, sizeof init, "%s/init.safetensors", root);
    poa_error e = { "" };
    lua_State *L = poa_lua_open(&e);
    poa_recipe r;
    poa_vit model = { 0 };
    int rc = L ? poa_recipe_load(L, RECIPE, &r, &e) : -1;
    if (L) lua_close(L);
    if (rc == 0) rc = poa_vit_init(&model, &r.vit, &e);
    real *params = rc == 0 ? malloc(sizeof(real) * (size_t)model.parameter_count) : NULL;
    if (params) poa_vit_init_parameters(&model, params, 0); /* tiny_vit.lua's train.seed: 0 */
    if (params) rc = poa_vit_save_parameters(&model, params, init, &e);
    free(params);
    poa_vit_free(&model);
    char *runs[3] = { NULL, NULL, NULL };
    char *argv0[] = { "knn", init, "--recipe", RECIPE, "--data", data, "--nets", "32x2,64x3,96x4", "--out", out[0], NULL };
    char *argv1[] = { "knn", PARAMS, "--recipe", RECIPE, "--data", data, "--nets", "32x2,64x3,96x4", "--out", out[1], NULL };
    char *argv2[] = { "knn", init, "--recipe", RECIPE, "--data", data, "--nets", "32x2,64x3,96x4", "--out", out[2],
                      "--init", PARAMS, NULL };
    char **argvs[3] = { argv0, argv1, argv2 };
    for (int i = 0; i < 3 && rc == 0; i++) {
        rc = poa_command_knn(i == 2 ? 12 : 10, argvs[i]);
        fflush(stdout);
        snprintf(path, sizeof path, "%s/knn.csv", out[i]);
        runs[i] = read_all(path, NULL);
    }
    char pixels[32] = "";
    if (runs[0]) csv_top1(runs[0], "pixels", 20, "pixels", pixels);
    snprintf(path, sizeof path, "%s/knn.md", out[0]);
    char *md = read_all(path, NULL);
    CHECK("poa knn baselines: a pixels row and init columns in knn.md and knn.csv",
          rc == 0 && pixels[0] && md && strstr(md, "| pixels (as fed) |") && strstr(md, " init k=20 |") &&
          count_lines(path, "| ") == 5, "rc %d %s pixels '%s'", rc, e.message, pixels);
    CHECK("poa knn: a file of poa train's initialisation (train.seed) scores the same trained and at init",
          rc == 0 && same_columns(runs[0], "trained", runs[0], "init"), "rc %d", rc);
    CHECK("poa knn --init FILE: the members at initialisation from FILE (trained and init swap)",
          rc == 0 && same_columns(runs[2], "init", runs[1], "trained") &&
          same_columns(runs[2], "trained", runs[1], "init"), "rc %d", rc);
    free(md);
    for (int i = 0; i < 3; i++) free(runs[i]);

    char *bad[] = { "knn", init, "--recipe", RECIPE, "--data", data, "--baselines", "pixel", NULL };
    CHECK("poa knn: --baselines with an unknown name fails", poa_command_knn(8, bad) != 0, "it succeeded");
    snprintf(path, sizeof path, "%s/missing.safetensors", root);
    char *missing[] = { "knn", init, "--recipe", RECIPE, "--data", data, "--nets", "32x2", "--init", path,
                        "--out", out[0], NULL };
    CHECK("poa knn: a missing --init file fails", poa_command_knn(12, missing) != 0, "it succeeded");
    char *none[] = { "knn", init, "--recipe", RECIPE, "--data", data, "--nets", "32x2", "--baselines", "none",
                     "--out", out[0], NULL };
    rc = poa_command_knn(12, none);
    fflush(stdout);
    snprintf(path, sizeof path, "%s/knn.csv", out[0]);
    CHECK("poa knn --baselines none: only the members (4 k's of one)",
          rc == 0 && count_lines(path, "") == 5, "rc %d rows %d", rc, count_lines(path, ""));
}

static void test_command(const char *root) {
    char data[256], out[256], teacher[256], path[1024];
    snprintf(data, sizeof data, "%s/tree", root);
    snprintf(out, sizeof out, "%s/out", root);
    snprintf(teacher, sizeof teacher, "%s/teacher.safetensors", root);
    char *argv[] = { "knn", PARAMS, "--recipe", RECIPE, "--data", data, "--nets", "32x2,64x3,96x4",
                     "--out", out, "--threads", "2", NULL };
    fflush(stdout);
    int rc = poa_command_knn(12, argv);
    fflush(stdout);
    snprintf(path, sizeof path, "%s/knn.md", out);
    int md_rows = count_lines(path, "| ") - 1; /* less the header */
    snprintf(path, sizeof path, "%s/knn.csv", out);
    int csv_rows = count_lines(path, "") - 1;
    int figures = !poa_plot_available() || figures_ok(out, "knn");
    CHECK("poa knn: knn.md (a row per member and the pixels), knn.csv (4 k's of each, trained, init and "
          "pixels), the heatmap and accuracy-against-params/GFLOPs figures as SVG and PNG",
          rc == 0 && md_rows == 4 && csv_rows == 28 && figures, "rc %d, md rows %d, csv rows %d, figures %d", rc,
          md_rows, csv_rows, figures);
    /* poa plot reads the trained rows back as the members, the pixels row as the baseline */
    poa_plot_point *points = NULL;
    int point_count = 0;
    char kind[16], metric[64], pixels_text[32] = "";
    double pixels = 0;
    poa_error pe = { "" };
    char *table = read_all(path, NULL);
    if (table) csv_top1(table, "pixels", 20, "pixels", pixels_text);
    int read = poa_plot_read_table(path, &points, &point_count, kind, metric, &pixels, &pe);
    int members_only = read == 0 && point_count == 3;
    for (int i = 0; members_only && i < point_count; i++)
        members_only = strcmp(points[i].name, "pixels") != 0 && points[i].gflops > 0;
    CHECK("poa plot's reading of knn.csv: the 3 trained members (k = 20, with GFLOPs), not the init or "
          "pixels rows; the pixels' top-1 as the baseline",
          members_only && pixels_text[0] && fabs(pixels - atof(pixels_text)) < 1e-9,
          "rc %d %s, %d points, pixels %g against '%s'", read, pe.message, point_count, pixels, pixels_text);
    free(points);
    free(table);

    /* the checkpoint form: recipe from its metadata, teacher.backbone. tensors; same numbers */
    snprintf(path, sizeof path, "%s/knn.csv", out);
    char *first = read_all(path, NULL);
    char out2[300];
    snprintf(out2, sizeof out2, "%s/out2", root);
    char *argv2[] = { "knn", teacher, "--data", data, "--nets", "96x4,32x2,64x3", "--out", out2, NULL };
    rc = poa_command_knn(8, argv2);
    fflush(stdout);
    snprintf(path, sizeof path, "%s/knn.csv", out2);
    char *second = read_all(path, NULL);
    CHECK("poa knn on a checkpoint (teacher.backbone., recipe from metadata) gives the same table",
          rc == 0 && first && second && strcmp(first, second) == 0, "rc %d", rc);
    free(first);
    free(second);

    /* poa plot redraws from the table, and overlays the two runs */
    char overlay[300];
    snprintf(overlay, sizeof overlay, "%s/overlay", root);
    snprintf(path, sizeof path, "%s/knn.csv", out2);
    char first_table[300];
    snprintf(first_table, sizeof first_table, "%s/knn.csv", out);
    char *argv_plot[] = { "plot", first_table, path, "--labels", "POA,alone", "--out", overlay, NULL };
    if (poa_plot_available()) {
        rc = poa_command_plot(7, argv_plot);
        fflush(stdout);
        CHECK("poa plot overlays two knn tables (heatmap, params, GFLOPs; SVG and PNG)",
              rc == 0 && figures_ok(overlay, "knn_overlay"), "rc %d", rc);
        char *argv_bad[] = { "plot", RECIPE, NULL };
        CHECK("poa plot of a file that is not a table is refused", poa_command_plot(2, argv_bad) == 1, "accepted");
    } else
        CHECK_SKIP("poa plot", "built without cairo");

    char *argv3[] = { "knn", PARAMS, "--recipe", RECIPE, "--data", data, "--nets", "48x3", "--out", out2, NULL };
    rc = poa_command_knn(10, argv3);
    CHECK("poa knn: an unknown sub-network fails", rc != 0, "rc %d", rc);
    snprintf(path, sizeof path, "%s/missing", root);
    char *argv4[] = { "knn", PARAMS, "--recipe", RECIPE, "--data", path, "--nets", "32x2", "--out", out2, NULL };
    rc = poa_command_knn(10, argv4);
    CHECK("poa knn: a missing data tree fails", rc != 0, "rc %d", rc);
}

int main(void) {
    test_clusters();
    test_hand_worked();
    test_dinov2_fixture();
    test_subset();
    test_eval_transform();
    char root[] = "/tmp/poa_test_knn_XXXXXX";
    if (!mkdtemp(root)) {
        CHECK("knn temporary directory", 0, "mkdtemp failed");
        CHECK_EXIT();
    }
    char tree[128];
    snprintf(tree, sizeof tree, "%s/tree", root);
    poa_error e = { "" };
    const int per_split[2] = { 8, 4 };
    int rc = write_tree(tree, 3, per_split, &e);
    CHECK("knn test tree of 3 classes written", rc == 0, "%s", e.message);
    if (rc == 0) {
        test_features(root);
        test_command(root);
        test_baselines(root);
    }
    if (getenv("POA_KEEP_TEST_FILES")) printf("kept %s\n", root);
    else {
        char command[700];
        snprintf(command, sizeof command, "rm -rf '%s'", root);
        if (system(command) != 0) printf("could not remove %s\n", root);
    }
    CHECK_EXIT();
}
