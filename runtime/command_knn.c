/* command_knn.c: `poa knn`: weighted k-NN (knn.h) of members of a teacher's
   backbone on a labelled train/val ImageFolder tree; writes knn.csv, knn.md and the
   figures of plot.h at k = 20 (knn_heatmap, knn_params, knn_gflops; SVG and PNG). */
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "backend.h"
#include "commands.h"
#include "eval_family.h"
#include "knn.h"
#include "files.h"
#include "recipe.h"
#include "safetensors.h"
#include "trainer.h"

typedef struct knn_options {
    const char *checkpoint, *recipe, *data, *nets, *out;
    long train_limit, val_limit, batch;
    int threads;
    const char *overrides[64]; /* section.field=value, applied over the recipe */
    int override_count;
} knn_options;

/* One member of the family and, once evaluated, its accuracies (fractions). */
typedef struct knn_member {
    int width, depth;
    long long params;
    double gflops;
    char name[32];
    int selected;
    double top1[POA_KNN_K_COUNT], top5[POA_KNN_K_COUNT];
} knn_member;

static const char *usage_text =
    "usage: poa knn <checkpoint.safetensors> [--recipe R.lua] --data DIR (with train/ and val/)\n"
    "               [--nets all|S,B,L|WxD,...] [--train-limit N] [--val-limit N] [--out DIR]\n"
    "               [--threads N] [--batch N] [section.field=value ...]\n"
    "  Without --recipe, the checkpoint's recipe and the overrides it was trained with are used.";

static int parse_options(int argc, char **argv, knn_options *o, poa_error *e) {
    memset(o, 0, sizeof *o);
    o->nets = "all";
    o->out = "knn";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **text = strcmp(a, "--recipe") == 0 ? &o->recipe
                          : strcmp(a, "--data") == 0   ? &o->data
                          : strcmp(a, "--nets") == 0   ? &o->nets
                          : strcmp(a, "--out") == 0    ? &o->out
                                                       : NULL;
        long *number = strcmp(a, "--train-limit") == 0 ? &o->train_limit
                     : strcmp(a, "--val-limit") == 0   ? &o->val_limit
                     : strcmp(a, "--batch") == 0       ? &o->batch
                                                       : NULL;
        if (text || number || strcmp(a, "--threads") == 0) {
            if (i + 1 >= argc) return poa_fail(e, "%s needs a value", a);
            const char *v = argv[++i];
            if (text) {
                *text = v;
                continue;
            }
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 0) return poa_fail(e, "%s: '%s' is not a count", a, v);
            if (number) *number = n;
            else o->threads = (int)n;
        } else if (a[0] == '-') {
            return poa_fail(e, "unknown option %s\n%s", a, usage_text);
        } else if (strchr(a, '=') && o->checkpoint) {
            if (o->override_count == 64) return poa_fail(e, "too many overrides");
            o->overrides[o->override_count++] = a;
        } else if (!o->checkpoint) {
            o->checkpoint = a;
        } else {
            return poa_fail(e, "unexpected argument %s\n%s", a, usage_text);
        }
    }
    if (!o->checkpoint || !o->data) return poa_fail(e, "%s", usage_text);
    return 0;
}

enum { K20 = 1 }; /* poa_knn_default_ks[1] = 20, the headline k */

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- outputs ---- */

static int write_tables(const char *out, const knn_member *m, int count, char **markdown,
                        poa_error *e) {
    char path[4096];
    snprintf(path, sizeof path, "%s/knn.csv", out);
    FILE *f = fopen(path, "w");
    if (!f) return poa_fail(e, "%s: cannot create (%s)", path, strerror(errno));
    fprintf(f, "member,width,depth,params,gflops,k,top1,top5\n");
    for (int i = 0; i < count; i++)
        for (int k = 0; m[i].selected && k < POA_KNN_K_COUNT; k++)
            fprintf(f, "%s,%d,%d,%lld,%.6g,%d,%.4f,%.4f\n", m[i].name, m[i].width, m[i].depth,
                    m[i].params, m[i].gflops, poa_knn_default_ks[k], 100 * m[i].top1[k], 100 * m[i].top5[k]);
    if (fclose(f) != 0) return poa_fail(e, "%s: write failed", path);

    size_t size = 0;
    FILE *md = open_memstream(markdown, &size);
    if (!md) return poa_fail(e, "out of memory");
    fprintf(md, "| member | width | depth | params (M) |");
    for (int k = 0; k < POA_KNN_K_COUNT; k++) fprintf(md, " k=%d top-1 |", poa_knn_default_ks[k]);
    fprintf(md, "\n|---|---:|---:|---:|");
    for (int k = 0; k < POA_KNN_K_COUNT; k++) fprintf(md, "---:|");
    fprintf(md, "\n");
    for (int i = 0; i < count; i++) {
        if (!m[i].selected) continue;
        fprintf(md, "| %s | %d | %d | %.2f |", m[i].name, m[i].width, m[i].depth, m[i].params / 1e6);
        for (int k = 0; k < POA_KNN_K_COUNT; k++) fprintf(md, " %.2f |", 100 * m[i].top1[k]);
        fprintf(md, "\n");
    }
    fclose(md);
    snprintf(path, sizeof path, "%s/knn.md", out);
    f = fopen(path, "w");
    if (!f) return poa_fail(e, "%s: cannot create (%s)", path, strerror(errno));
    fputs(*markdown, f);
    if (fclose(f) != 0) return poa_fail(e, "%s: write failed", path);
    return 0;
}

/* ---- the run ---- */

static int evaluate(const knn_options *o, const poa_recipe *r, const poa_vit *model,
                    const real *params, knn_member *m, int count, poa_error *e) {
    poa_dataset train = { 0 }, val = { 0 };
    poa_knn_images train_images = { 0 }, val_images = { 0 };
    int rc = poa_eval_open_data(o->data, &train, &val, e);
    double t0 = seconds_now();
    int size = r->global_crop_size;
    poa_progress progress;
    if (rc == 0) {
        poa_progress_start(&progress, stdout, "poa knn: decoding", poa_knn_subset(train.count, o->train_limit, NULL) +
                           poa_knn_subset(val.count, o->val_limit, NULL), "images");
        rc = poa_knn_load_images(&train_images, &train, o->train_limit, size, o->threads, &progress, e);
        if (rc == 0) rc = poa_knn_load_images(&val_images, &val, o->val_limit, size, o->threads, &progress, e);
        poa_progress_finish(&progress);
    }
    if (rc == 0)
        fprintf(stderr, "poa knn: %ld train and %ld val images, %d classes, %dx%d (decoded in %.1f s)\n",
                train_images.count, val_images.count, train.class_count, size, size,
                seconds_now() - t0);
    real *train_features = NULL, *val_features = NULL;
    if (rc == 0) {
        train_features = malloc(sizeof(real) * (size_t)train_images.count * r->width_max);
        val_features = malloc(sizeof(real) * (size_t)val_images.count * r->width_max);
        if (!train_features || !val_features) rc = poa_fail(e, "out of memory for the features");
    }
    for (int i = 0; rc == 0 && i < count; i++) {
        if (!m[i].selected) continue;
        t0 = seconds_now();
        char what[96];
        snprintf(what, sizeof what, "poa knn: %s features", m[i].name);
        poa_progress_start(&progress, stdout, what, train_images.count + val_images.count, "images");
        rc = poa_knn_features(model, params, m[i].width, m[i].depth, &train_images, o->batch,
                              train_features, &progress, e);
        if (rc == 0)
            rc = poa_knn_features(model, params, m[i].width, m[i].depth, &val_images, o->batch,
                                  val_features, &progress, e);
        poa_progress_finish(&progress);
        double t1 = seconds_now();
        if (rc == 0)
            rc = poa_knn_classify(train_features, train_images.labels, train_images.count,
                                  val_features, val_images.labels, val_images.count, m[i].width,
                                  train.class_count, poa_knn_default_ks, POA_KNN_K_COUNT,
                                  POA_KNN_TEMPERATURE, m[i].top1, m[i].top5, NULL, e);
        if (rc) {
            poa_error why = *e;
            poa_fail(e, "member %dx%d: %s", m[i].width, m[i].depth, why.message);
        } else
            fprintf(stderr, "poa knn: %-10s k=20 top-1 %6.2f%%  top-5 %6.2f%%  (features %.2f s, "
                    "k-NN %.2f s)\n", m[i].name, 100 * m[i].top1[K20], 100 * m[i].top5[K20],
                    t1 - t0, seconds_now() - t1);
    }
    free(train_features);
    free(val_features);
    poa_knn_images_free(&train_images);
    poa_knn_images_free(&val_images);
    poa_dataset_free(&train);
    poa_dataset_free(&val);
    return rc;
}

/* A training checkpoint's k-NN results (k = 20) appended to its run's metrics.jsonl, where
   poa plot <run dir> draws them against steps; nothing for other files. */
static void append_points(const char *checkpoint, long step, const knn_member *m, int count) {
    char path[4096];
    snprintf(path, sizeof path, "%s", checkpoint);
    char *slash = strrchr(path, '/');
    snprintf(slash ? slash + 1 : path, sizeof path - (size_t)(slash ? slash + 1 - path : 0), "metrics.jsonl");
    FILE *f = step >= 0 ? fopen(path, "r+") : NULL; /* only into an existing run log */
    if (!f) return;
    fseek(f, 0, SEEK_END);
    for (int i = 0; i < count; i++)
        if (m[i].selected)
            fprintf(f, "{\"step\": %ld, \"knn\": \"%s\", \"k\": 20, \"top1\": %.4f, \"top5\": %.4f}\n",
                    step, m[i].name, 100 * m[i].top1[K20], 100 * m[i].top5[K20]);
    fclose(f);
    printf("k-NN points of step %ld: appended to %s\n", step, path);
}

static int run_knn(const knn_options *o, poa_error *e) {
    poa_eval_options eo = { o->checkpoint, o->recipe, o->overrides, o->override_count, o->nets };
    poa_eval_family f;
    if (poa_eval_family_open(&f, &eo, e)) return -1;
    knn_member *members = calloc((size_t)f.count, sizeof *members);
    int count = f.count, rc = members ? 0 : poa_fail(e, "out of memory");
    for (int i = 0; rc == 0 && i < count; i++) {
        const poa_eval_member *m = &f.members[i];
        members[i].width = m->width;
        members[i].depth = m->depth;
        members[i].params = m->params;
        members[i].gflops = m->gflops;
        members[i].selected = m->selected;
        snprintf(members[i].name, sizeof members[i].name, "%s", m->name);
    }
    if (rc == 0)
        fprintf(stderr, "poa knn: backbone %s'%s*' of %s, recipe %s\n", f.prefix[0] ? "" : "(no prefix) ",
                f.prefix, o->checkpoint, f.recipe.path);
    if (rc == 0) rc = poa_make_folders(o->out, e);
    if (rc == 0) rc = evaluate(o, &f.recipe, &f.model, f.params, members, count, e);
    char *markdown = NULL;
    if (rc == 0) rc = write_tables(o->out, members, count, &markdown, e);
    if (rc == 0) {
        fputs(markdown, stdout);
        printf("\ntable: %s/knn.csv, %s/knn.md\n", o->out, o->out);
        double *at20 = malloc(sizeof(double) * (size_t)count);
        for (int i = 0; at20 && i < count; i++) at20[i] = 100 * members[i].top1[K20];
        rc = at20 ? poa_eval_plot(o->out, "knn", "k-NN top-1 (%), k = 20", f.members, at20, count, e)
                  : poa_fail(e, "out of memory");
        free(at20);
        if (rc == 0) append_points(o->checkpoint, f.step, members, count);
    }
    free(markdown);
    free(members);
    poa_eval_family_free(&f);
    return rc;
}

int poa_command_knn(int argc, char **argv) {
    knn_options o;
    poa_error e = { { 0 } };
    if (parse_options(argc, argv, &o, &e)) {
        fprintf(stderr, "poa knn: %s\n", e.message);
        return POA_EXIT_USAGE;
    }
    if (o.threads) poa_set_threads(o.threads);
    if (run_knn(&o, &e)) {
        fprintf(stderr, "poa knn: %s\n", e.message);
        return POA_EXIT_FAILED;
    }
    return 0;
}
