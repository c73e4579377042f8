/* command_knn.c: `poa knn`: weighted k-NN (knn.h) of members of a teacher's
   backbone on a labelled train/val ImageFolder tree; writes knn.csv, knn.md and the
   figures of plot.h at k = 20 (knn_heatmap, knn_params, knn_gflops; SVG and PNG).
   Beside the members, the same protocol on two baselines, so that the table says what
   training bought: the raw pixels as the network is fed them (a reference line in the
   figures), and every member at initialisation (the recipe's, from its train.seed, or the
   backbone of --init FILE). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "commands.h"
#include "eval_family.h"
#include "knn.h"
#include "files.h"
#include "recipe.h"
#include "trainer.h"

typedef struct knn_options {
    const char *checkpoint, *recipe, *data, *nets, *out;
    const char *init;         /* --init FILE: the members at initialisation from this file */
    int pixels, at_init;      /* --baselines: which baselines are evaluated */
    long train_limit, val_limit, batch;
    int threads;
    const char *overrides[64]; /* section.field=value, applied over the recipe */
    int override_count;
} knn_options;

/* One member's accuracies (fractions), trained and at initialisation; the family's
   poa_eval_member of the same index says which member. */
typedef struct knn_result {
    double top1[POA_KNN_K_COUNT], top5[POA_KNN_K_COUNT];
    double init_top1[POA_KNN_K_COUNT], init_top5[POA_KNN_K_COUNT];
} knn_result;

/* The raw-pixel baseline's accuracies (evaluated when options.pixels). */
typedef struct knn_pixels {
    double top1[POA_KNN_K_COUNT], top5[POA_KNN_K_COUNT];
} knn_pixels;

static const char *usage_text =
    "usage: poa knn <checkpoint.safetensors> [--recipe R.lua] --data DIR (with train/ and val/)\n"
    "               [--nets all|S,B,L|WxD,...] [--train-limit N] [--val-limit N] [--out DIR]\n"
    "               [--threads N] [--batch N] [--baselines pixels,init|pixels|init|none]\n"
    "               [--init FILE] [section.field=value ...]\n"
    "  Without --recipe, the checkpoint's recipe and the overrides it was trained with are used.\n"
    "  Baselines (default both): the raw pixels as fed to the network, and the members at\n"
    "  initialisation (the recipe's, seeded by train.seed, or the backbone in --init FILE).";

/* --baselines: a comma-separated subset of pixels,init, or none. */
static int parse_baselines(const char *text, knn_options *o, poa_error *e) {
    o->pixels = o->at_init = 0;
    if (strcmp(text, "none") == 0) return 0;
    for (const char *p = text;;) {
        size_t len = strcspn(p, ",");
        if (len == 6 && strncmp(p, "pixels", 6) == 0) o->pixels = 1;
        else if (len == 4 && strncmp(p, "init", 4) == 0) o->at_init = 1;
        else return poa_fail(e, "--baselines: '%.*s' is not pixels, init or none", (int)len, p);
        if (!p[len]) return 0;
        p += len + 1;
    }
}

static int parse_options(int argc, char **argv, knn_options *o, poa_error *e) {
    memset(o, 0, sizeof *o);
    o->nets = "all";
    o->out = "knn";
    o->pixels = o->at_init = 1;
    const char *baselines = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **text = strcmp(a, "--recipe") == 0 ? &o->recipe
                          : strcmp(a, "--data") == 0   ? &o->data
                          : strcmp(a, "--nets") == 0   ? &o->nets
                          : strcmp(a, "--out") == 0    ? &o->out
                          : strcmp(a, "--init") == 0   ? &o->init
                          : strcmp(a, "--baselines") == 0 ? &baselines
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
        } else if (poa_eval_argument(a, &o->checkpoint, o->overrides, &o->override_count, usage_text, e)) {
            return -1;
        }
    }
    if (!o->checkpoint || !o->data) return poa_fail(e, "%s", usage_text);
    if (baselines && parse_baselines(baselines, o, e)) return -1;
    if (o->init && !o->at_init) return poa_fail(e, "--init %s: the init baseline is off (--baselines)", o->init);
    return 0;
}

enum { K20 = 1 }; /* poa_knn_default_ks[1] = 20, the headline k (figures, gains) */

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- outputs ---- */

/* knn.csv: a row per (member or pixels, features, k); features = trained, init or pixels.
   poa plot reads it back (plot_table.c): the trained rows are the members. */
static int write_csv(const char *path, const knn_options *o, const poa_eval_member *m,
                     const knn_result *r, int count, const knn_pixels *pixels, poa_error *e) {
    FILE *f = fopen(path, "w");
    if (!f) return poa_fail(e, "%s: cannot create (%s)", path, strerror(errno));
    fprintf(f, "member,width,depth,params,gflops,k,top1,top5,features\n");
    for (int k = 0; o->pixels && k < POA_KNN_K_COUNT; k++)
        fprintf(f, "pixels,0,0,0,0,%d,%.4f,%.4f,pixels\n", poa_knn_default_ks[k], 100 * pixels->top1[k],
                100 * pixels->top5[k]);
    for (int i = 0; i < count; i++)
        for (int k = 0; m[i].selected && k < POA_KNN_K_COUNT; k++) {
            fprintf(f, "%s,%d,%d,%lld,%.6g,%d,%.4f,%.4f,trained\n", m[i].name, m[i].width, m[i].depth,
                    m[i].params, m[i].gflops, poa_knn_default_ks[k], 100 * r[i].top1[k], 100 * r[i].top5[k]);
            if (o->at_init)
                fprintf(f, "%s,%d,%d,%lld,%.6g,%d,%.4f,%.4f,init\n", m[i].name, m[i].width, m[i].depth,
                        m[i].params, m[i].gflops, poa_knn_default_ks[k], 100 * r[i].init_top1[k],
                        100 * r[i].init_top5[k]);
        }
    if (fclose(f) != 0) return poa_fail(e, "%s: write failed", path);
    return 0;
}

/* knn.md (and stdout): a row per member, its top-1 at every k, then (baselines) its top-1
   at k = 20 at initialisation and what training gained over it and over the pixels; the
   pixels' own row first. */
static int write_tables(const knn_options *o, const poa_eval_member *m, const knn_result *r,
                        int count, const knn_pixels *pixels, char **markdown, poa_error *e) {
    char path[4096];
    snprintf(path, sizeof path, "%s/knn.csv", o->out);
    if (write_csv(path, o, m, r, count, pixels, e)) return -1;
    size_t size = 0;
    FILE *md = open_memstream(markdown, &size);
    if (!md) return poa_fail(e, "out of memory");
    fprintf(md, "| member | width | depth | params (M) |");
    for (int k = 0; k < POA_KNN_K_COUNT; k++) fprintf(md, " k=%d top-1 |", poa_knn_default_ks[k]);
    if (o->at_init) fprintf(md, " init k=20 | gain over init |");
    if (o->pixels) fprintf(md, " gain over pixels |");
    fprintf(md, "\n|---|---:|---:|---:|");
    for (int k = 0; k < POA_KNN_K_COUNT + 2 * o->at_init + o->pixels; k++) fprintf(md, "---:|");
    fprintf(md, "\n");
    if (o->pixels) {
        fprintf(md, "| pixels (as fed) | | | |");
        for (int k = 0; k < POA_KNN_K_COUNT; k++) fprintf(md, " %.2f |", 100 * pixels->top1[k]);
        fprintf(md, "%s%s\n", o->at_init ? " | |" : "", " |");
    }
    for (int i = 0; i < count; i++) {
        if (!m[i].selected) continue;
        fprintf(md, "| %s | %d | %d | %.2f |", m[i].name, m[i].width, m[i].depth, m[i].params / 1e6);
        for (int k = 0; k < POA_KNN_K_COUNT; k++) fprintf(md, " %.2f |", 100 * r[i].top1[k]);
        if (o->at_init)
            fprintf(md, " %.2f | %+.2f |", 100 * r[i].init_top1[K20], 100 * (r[i].top1[K20] - r[i].init_top1[K20]));
        if (o->pixels) fprintf(md, " %+.2f |", 100 * (r[i].top1[K20] - pixels->top1[K20]));
        fprintf(md, "\n");
    }
    fclose(md);
    snprintf(path, sizeof path, "%s/knn.md", o->out);
    FILE *f = fopen(path, "w");
    if (!f) return poa_fail(e, "%s: cannot create (%s)", path, strerror(errno));
    fputs(*markdown, f);
    if (fclose(f) != 0) return poa_fail(e, "%s: write failed", path);
    return 0;
}

/* ---- the run ---- */

/* The decoded subsets of train/ and val/, and what the classifier needs of them. */
typedef struct knn_data {
    poa_dataset train, val;
    poa_knn_images train_images, val_images;
} knn_data;

static void data_free(knn_data *d) {
    poa_knn_images_free(&d->train_images);
    poa_knn_images_free(&d->val_images);
    poa_dataset_free(&d->train);
    poa_dataset_free(&d->val);
}

static int load_data(const knn_options *o, const poa_recipe *r, knn_data *d, poa_error *e) {
    memset(d, 0, sizeof *d);
    int rc = poa_eval_open_data(o->data, &d->train, &d->val, e);
    double t0 = seconds_now();
    int size = r->global_crop_size;
    if (rc == 0) {
        poa_progress progress;
        poa_progress_start(&progress, stdout, "poa knn: decoding",
                           poa_knn_subset(d->train.count, o->train_limit, NULL) +
                               poa_knn_subset(d->val.count, o->val_limit, NULL), "images");
        rc = poa_knn_load_images(&d->train_images, &d->train, o->train_limit, size, o->threads,
                                 &progress, e);
        if (rc == 0)
            rc = poa_knn_load_images(&d->val_images, &d->val, o->val_limit, size, o->threads,
                                     &progress, e);
        poa_progress_finish(&progress);
    }
    if (rc == 0)
        fprintf(stderr, "poa knn: %ld train and %ld val images, %d classes, %dx%d (decoded in %.1f s)\n",
                d->train_images.count, d->val_images.count, d->train.class_count, size, size,
                seconds_now() - t0);
    return rc;
}

/* top1/top5 at every k of one kind of features (train and val rows of dim values). */
static int classify(const knn_data *d, const real *train, const real *val, int dim, double *top1,
                    double *top5, poa_error *e) {
    return poa_knn_classify(train, d->train_images.labels, d->train_images.count, val,
                            d->val_images.labels, d->val_images.count, dim,
                            d->train.class_count, poa_knn_default_ks, POA_KNN_K_COUNT,
                            POA_KNN_TEMPERATURE, top1, top5, NULL, e);
}

/* The raw-pixel baseline: the images as fed to the network, L2-normalised. */
static int evaluate_pixels(const knn_data *d, knn_pixels *pixels, poa_error *e) {
    double t0 = seconds_now();
    int dim = poa_knn_pixel_dim(&d->train_images);
    real *train = malloc(sizeof(real) * (size_t)d->train_images.count * dim);
    real *val = malloc(sizeof(real) * (size_t)d->val_images.count * dim);
    int rc = train && val ? 0 : poa_fail(e, "out of memory for the pixel baseline (%d values an image)", dim);
    if (rc == 0) rc = poa_knn_pixel_features(&d->train_images, train, e);
    if (rc == 0) rc = poa_knn_pixel_features(&d->val_images, val, e);
    if (rc == 0) rc = classify(d, train, val, dim, pixels->top1, pixels->top5, e);
    if (rc == 0)
        fprintf(stderr, "poa knn: %-10s k=20 top-1 %6.2f%%  top-5 %6.2f%%  (raw pixels as fed, %d "
                "values, %.2f s)\n", "pixels", 100 * pixels->top1[K20], 100 * pixels->top5[K20],
                dim, seconds_now() - t0);
    free(train);
    free(val);
    return rc;
}

/* One member's top1/top5 with the backbone params; `what` names them in messages. */
static int evaluate_member(const knn_options *o, const knn_data *d, const poa_vit *model,
                           const real *params, const poa_eval_member *m, const char *what,
                           real *train, real *val, double *top1, double *top5, poa_error *e) {
    double t0 = seconds_now();
    char label[96];
    snprintf(label, sizeof label, "poa knn: %s features%s", m->name, what);
    poa_progress progress;
    poa_progress_start(&progress, stdout, label, d->train_images.count + d->val_images.count, "images");
    int rc = poa_knn_features(model, params, m->width, m->depth, &d->train_images, o->batch, train,
                              &progress, e);
    if (rc == 0)
        rc = poa_knn_features(model, params, m->width, m->depth, &d->val_images, o->batch, val,
                              &progress, e);
    poa_progress_finish(&progress);
    double t1 = seconds_now();
    if (rc == 0) rc = classify(d, train, val, m->width, top1, top5, e);
    if (rc) {
        poa_error why = *e;
        return poa_fail(e, "member %dx%d%s: %s", m->width, m->depth, what, why.message);
    }
    fprintf(stderr, "poa knn: %-10s k=20 top-1 %6.2f%%  top-5 %6.2f%%  (features %.2f s, k-NN %.2f s)%s\n",
            m->name, 100 * top1[K20], 100 * top5[K20], t1 - t0, seconds_now() - t1, what);
    return 0;
}

/* Every selected member with the trained params and (init != NULL) at initialisation,
   and the pixels (o->pixels). */
static int evaluate(const knn_options *o, const poa_eval_family *f, const real *init,
                    knn_result *r, knn_pixels *pixels, poa_error *e) {
    knn_data d;
    int rc = load_data(o, &f->recipe, &d, e);
    if (rc == 0 && o->pixels) rc = evaluate_pixels(&d, pixels, e);
    real *train = NULL, *val = NULL;
    if (rc == 0) {
        train = malloc(sizeof(real) * (size_t)d.train_images.count * f->recipe.width_max);
        val = malloc(sizeof(real) * (size_t)d.val_images.count * f->recipe.width_max);
        if (!train || !val) rc = poa_fail(e, "out of memory for the features");
    }
    for (int i = 0; rc == 0 && i < f->count; i++) {
        const poa_eval_member *m = &f->members[i];
        if (!m->selected) continue;
        rc = evaluate_member(o, &d, &f->model, f->params, m, "", train, val, r[i].top1, r[i].top5, e);
        if (rc == 0 && init)
            rc = evaluate_member(o, &d, &f->model, init, m, " at initialisation", train, val,
                                 r[i].init_top1, r[i].init_top5, e);
    }
    free(train);
    free(val);
    data_free(&d);
    return rc;
}

/* The backbone at initialisation: the backbone in o->init, or poa train's initialisation
   of the recipe (its train.seed); *out malloc'd. */
static int initial_parameters(const knn_options *o, const poa_eval_family *f, real **out, poa_error *e) {
    real *init = malloc(sizeof(real) * (size_t)f->model.parameter_count);
    if (!init) return poa_fail(e, "out of memory for %ld parameters", f->model.parameter_count);
    *out = init;
    if (!o->init) {
        poa_vit_init_parameters(&f->model, init, f->seed);
        fprintf(stderr, "poa knn: at initialisation: the recipe's, train.seed = %llu\n", f->seed);
        return 0;
    }
    const char *prefix = "";
    if (poa_vit_load_parameters(&f->model, init, o->init, &prefix, e)) return -1;
    fprintf(stderr, "poa knn: at initialisation: backbone '%s*' of %s\n", prefix, o->init);
    return 0;
}

/* A training checkpoint's k-NN results (k = 20) appended to its run's metrics.jsonl, where
   poa plot <run dir> draws them against steps; nothing for other files. */
static void append_points(const char *checkpoint, long step, const poa_eval_member *m,
                          const knn_result *r, int count) {
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
                    step, m[i].name, 100 * r[i].top1[K20], 100 * r[i].top5[K20]);
    fclose(f);
    printf("k-NN points of step %ld: appended to %s\n", step, path);
}

/* The tables, the figures (the pixels as their reference line) and the run log's points. */
static int report(const knn_options *o, const poa_eval_family *f, const knn_result *r,
                  const knn_pixels *pixels, poa_error *e) {
    char *markdown = NULL;
    int rc = write_tables(o, f->members, r, f->count, pixels, &markdown, e);
    if (rc == 0) {
        fputs(markdown, stdout);
        printf("\ntable: %s/knn.csv, %s/knn.md\n", o->out, o->out);
        double *at20 = malloc(sizeof(double) * (size_t)f->count);
        for (int i = 0; at20 && i < f->count; i++) at20[i] = 100 * r[i].top1[K20];
        rc = at20 ? poa_eval_plot(o->out, "knn", "k-NN top-1 (%), k = 20", f->members, at20, f->count,
                                  o->pixels ? 100 * pixels->top1[K20] : 0, e)
                  : poa_fail(e, "out of memory");
        free(at20);
        if (rc == 0) append_points(o->checkpoint, f->step, f->members, r, f->count);
    }
    free(markdown);
    return rc;
}

static int run_knn(const knn_options *o, poa_error *e) {
    poa_eval_options eo = { o->checkpoint, o->recipe, o->overrides, o->override_count, o->nets };
    poa_eval_family f;
    if (poa_eval_family_open(&f, &eo, e)) return -1;
    knn_result *results = calloc((size_t)f.count, sizeof *results);
    int rc = results ? 0 : poa_fail(e, "out of memory");
    if (rc == 0)
        fprintf(stderr, "poa knn: backbone %s'%s*' of %s, recipe %s\n", f.prefix[0] ? "" : "(no prefix) ",
                f.prefix, o->checkpoint, f.recipe.path);
    real *init = NULL;
    if (rc == 0 && o->at_init) rc = initial_parameters(o, &f, &init, e);
    if (rc == 0) rc = poa_make_folders(o->out, e);
    knn_pixels pixels = { { 0 }, { 0 } };
    if (rc == 0) rc = evaluate(o, &f, init, results, &pixels, e);
    if (rc == 0) rc = report(o, &f, results, &pixels, e);
    free(init);
    free(results);
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
