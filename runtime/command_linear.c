/* command_linear.c: `poa linear`: the linear probe (linear.h, reference §8.2) of members of a
   teacher's backbone on a labelled train/val ImageFolder tree. Features are computed once
   per member (once per epoch with --augment yes, DINOv2's random resized crop and flip);
   writes linear.csv (the best classifier of each member), linear_grid.csv (all 52),
   linear.md and the figures of plot.h (linear_heatmap, linear_params, linear_gflops). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "commands.h"
#include "eval_family.h"
#include "eval_features.h"
#include "progress.h"
#include "files.h"
#include "knn.h"
#include "linear.h"

typedef struct linear_options {
    const char *checkpoint, *recipe, *data, *nets, *out;
    long train_limit, val_limit, batch, epochs, threads, seed;
    int augment;
    const char *overrides[64];
    int override_count;
} linear_options;

static const char *usage_text =
    "usage: poa linear <checkpoint.safetensors> [--recipe R.lua] --data DIR (with train/ and val/)\n"
    "               [--nets all|S,B,L|WxD,...] [--train-limit N] [--val-limit N] [--out DIR]\n"
    "               [--epochs N] [--batch N] [--augment yes|no] [--seed N] [--threads N]\n"
    "               [section.field=value ...]\n"
    "  52 linear classifiers per member (n_last 1/4 x avgpool no/yes x 13 learning rates) on\n"
    "  frozen features; --augment no computes the train features once (small data).";

static int parse_options(int argc, char **argv, linear_options *o, poa_error *e) {
    memset(o, 0, sizeof *o);
    o->nets = "all";
    o->out = "linear";
    o->epochs = 10;
    o->batch = 256;
    o->augment = 1;
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
                     : strcmp(a, "--epochs") == 0      ? &o->epochs
                     : strcmp(a, "--threads") == 0     ? &o->threads
                     : strcmp(a, "--seed") == 0        ? &o->seed
                                                       : NULL;
        if (text || number || strcmp(a, "--augment") == 0) {
            if (i + 1 >= argc) return poa_fail(e, "%s needs a value", a);
            const char *v = argv[++i];
            char *end;
            if (text) *text = v;
            else if (number) {
                *number = strtol(v, &end, 10);
                if (*end || !*v || *number < 0) return poa_fail(e, "%s: '%s' is not a count", a, v);
            } else if (strcmp(v, "yes") == 0 || strcmp(v, "no") == 0)
                o->augment = v[0] == 'y';
            else
                return poa_fail(e, "--augment: '%s' (expected yes or no)", v);
        } else if (a[0] == '-') {
            return poa_fail(e, "unknown option %s\n%s", a, usage_text);
        } else if (poa_eval_argument(a, &o->checkpoint, o->overrides, &o->override_count, usage_text, e)) {
            return -1;
        }
    }
    if (!o->checkpoint || !o->data) return poa_fail(e, "%s", usage_text);
    if (o->epochs < 1 || o->batch < 1) return poa_fail(e, "--epochs and --batch must be at least 1");
    return 0;
}

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* What one member's probe needs: the model, the data, and the train features' source. */
typedef struct probe {
    const linear_options *o;
    const poa_eval_family *f;
    const poa_dataset *train_set;
    const poa_knn_images *train_images; /* eval transform; NULL with --augment yes */
    int width, depth, size;
    poa_feature_spec spec;
} probe;

/* The train features of an epoch: the cached eval-transform images, or a new augmentation. */
static int train_features(void *context, int epoch, real *features, poa_error *e) {
    const probe *p = context;
    if (p->train_images)
        return poa_features_compute(&p->f->model, p->f->params, p->width, p->depth, &p->spec,
                                    p->train_images, 0, features, NULL, e);
    poa_knn_images images;
    int rc = poa_knn_load_augmented(&images, p->train_set, p->o->train_limit, p->size,
                                    (int)p->o->threads, (unsigned long long)p->o->seed, epoch, e);
    if (rc == 0)
        rc = poa_features_compute(&p->f->model, p->f->params, p->width, p->depth, &p->spec, &images,
                                  0, features, NULL, e);
    poa_knn_images_free(&images);
    return rc;
}

/* The probe of member m: features, the 52 classifiers, the best. */
static int probe_member(probe *p, const poa_eval_member *m, const poa_knn_images *val,
                        const int *train_labels, long n_train, int classes,
                        poa_linear_result *result, poa_error *e) {
    p->width = m->width;
    p->depth = m->depth;
    p->spec.layer_count = poa_linear_layers(m->depth, p->spec.layers);
    p->spec.avgpool = 1;
    const long columns = poa_feature_columns(&p->spec, m->width);
    real *train = malloc(sizeof(real) * (size_t)(n_train * columns));
    real *valf = malloc(sizeof(real) * (size_t)(val->count * columns));
    double t0 = seconds_now();
    int rc = train && valf ? 0 : poa_fail(e, "out of memory for the features");
    if (rc == 0) rc = train_features(p, 0, train, e);
    if (rc == 0)
        rc = poa_features_compute(&p->f->model, p->f->params, m->width, m->depth, &p->spec, val, 0,
                                  valf, NULL, e);
    double t1 = seconds_now();
    poa_linear_config c = { (int)p->o->epochs, p->o->batch, 0.9, (unsigned long long)p->o->seed };
    if (rc == 0)
        rc = poa_linear_train(&c, m->width, p->spec.layer_count, classes, train, train_labels,
                              n_train, valf, val->labels, val->count,
                              p->train_images ? NULL : train_features, p, result, e);
    if (rc == 0) {
        poa_linear_classifier best;
        poa_linear_grid_entry(result->best, result->batch, &best);
        fprintf(stderr, "poa linear: %-10s top-1 %6.2f%%  (n_last %d, avgpool %s, lr %g; features "
                "%.2f s, %ld iterations %.2f s)\n", m->name, 100 * result->top1[result->best],
                best.n_last, best.avgpool ? "yes" : "no", best.lr, t1 - t0, result->iterations,
                seconds_now() - t1);
    } else {
        poa_error why = *e;
        poa_fail(e, "member %dx%d: %s", m->width, m->depth, why.message);
    }
    free(train);
    free(valf);
    return rc;
}

/* ---- outputs ---- */

static int write_tables(const char *out, const poa_eval_family *f, const poa_linear_result *r,
                        char **markdown, poa_error *e) {
    char path[4096];
    snprintf(path, sizeof path, "%s/linear.csv", out);
    FILE *csv = fopen(path, "w");
    snprintf(path, sizeof path, "%s/linear_grid.csv", out);
    FILE *grid = fopen(path, "w");
    size_t size = 0;
    FILE *md = open_memstream(markdown, &size);
    if (!csv || !grid || !md) {
        if (csv) fclose(csv);
        if (grid) fclose(grid);
        if (md) fclose(md);
        return poa_fail(e, "%s: cannot create the tables in %s (%s)", out, out, strerror(errno));
    }
    fprintf(csv, "member,width,depth,params,gflops,top1,n_last,avgpool,lr,layers\n");
    fprintf(grid, "member,width,depth,classifier,n_last,avgpool,lr,top1,train_loss\n");
    fprintf(md, "| member | width | depth | params (M) | linear top-1 | n_last | avgpool | lr |\n"
                "|---|---:|---:|---:|---:|---:|---|---:|\n");
    for (int i = 0; i < f->count; i++) {
        const poa_eval_member *m = &f->members[i];
        if (!m->selected) continue;
        int layers[4], n = poa_linear_layers(m->depth, layers);
        char list[64] = "";
        for (int j = 0; j < n; j++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", j ? " " : "", layers[j]);
        poa_linear_classifier c;
        poa_linear_grid_entry(r[i].best, r[i].batch, &c);
        fprintf(csv, "%s,%d,%d,%lld,%.6g,%.4f,%d,%s,%g,%s\n", m->name, m->width, m->depth, m->params,
                m->gflops, 100 * r[i].top1[r[i].best], c.n_last, c.avgpool ? "yes" : "no", c.lr, list);
        fprintf(md, "| %s | %d | %d | %.2f | %.2f | %d | %s | %g |\n", m->name, m->width, m->depth,
                m->params / 1e6, 100 * r[i].top1[r[i].best], c.n_last, c.avgpool ? "yes" : "no", c.lr);
        for (int k = 0; k < POA_LINEAR_CLASSIFIERS; k++) {
            poa_linear_grid_entry(k, r[i].batch, &c);
            fprintf(grid, "%s,%d,%d,%d,%d,%s,%g,%.4f,%.6g\n", m->name, m->width, m->depth, k, c.n_last,
                    c.avgpool ? "yes" : "no", c.lr, 100 * r[i].top1[k], r[i].loss[k]);
        }
    }
    fclose(md);
    int bad = fclose(csv) != 0;
    bad |= fclose(grid) != 0;
    if (bad) return poa_fail(e, "%s: writing the tables failed", out);
    snprintf(path, sizeof path, "%s/linear.md", out);
    FILE *file = fopen(path, "w");
    if (!file) return poa_fail(e, "%s: cannot create (%s)", path, strerror(errno));
    fputs(*markdown, file);
    if (fclose(file) != 0) return poa_fail(e, "%s: write failed", path);
    return 0;
}

/* ---- the run ---- */

static int evaluate(const linear_options *o, const poa_eval_family *f, poa_linear_result *results,
                    poa_error *e) {
    poa_dataset train = { 0 }, val = { 0 };
    poa_knn_images train_images = { 0 }, val_images = { 0 };
    const int size = f->recipe.global_crop_size;
    double t0 = seconds_now();
    int rc = poa_eval_open_data(o->data, &train, &val, e);
    /* the eval-transform train images: the features themselves without --augment, and the
       labels (the same subset) either way */
    poa_progress progress;
    if (rc == 0) {
        poa_progress_start(&progress, stdout, "poa linear: decoding", poa_knn_subset(train.count, o->train_limit, NULL) +
                           poa_knn_subset(val.count, o->val_limit, NULL), "images");
        rc = poa_knn_load_images(&train_images, &train, o->train_limit, size, (int)o->threads, &progress, e);
        if (rc == 0) rc = poa_knn_load_images(&val_images, &val, o->val_limit, size, (int)o->threads, &progress, e);
        poa_progress_finish(&progress);
    }
    if (rc == 0)
        fprintf(stderr, "poa linear: %ld train and %ld val images, %d classes, %dx%d (decoded in %.1f s), "
                "%ld epochs of batch %ld, augmentation %s\n", train_images.count, val_images.count,
                train.class_count, size, size, seconds_now() - t0, o->epochs, o->batch,
                o->augment ? "on (features again every epoch)" : "off (features once)");
    probe p = { o, f, &train, o->augment ? NULL : &train_images, 0, 0, size, { 0, { 0 }, 0 } };
    for (int i = 0; rc == 0 && i < f->count; i++)
        if (f->members[i].selected)
            rc = probe_member(&p, &f->members[i], &val_images, train_images.labels, train_images.count,
                              train.class_count, &results[i], e);
    poa_knn_images_free(&train_images);
    poa_knn_images_free(&val_images);
    poa_dataset_free(&train);
    poa_dataset_free(&val);
    return rc;
}

static int run_linear(const linear_options *o, poa_error *e) {
    poa_eval_options eo = { o->checkpoint, o->recipe, o->overrides, o->override_count, o->nets };
    poa_eval_family f;
    if (poa_eval_family_open(&f, &eo, e)) return -1;
    poa_linear_result *results = calloc((size_t)f.count, sizeof *results);
    int rc = results ? 0 : poa_fail(e, "out of memory");
    if (rc == 0)
        fprintf(stderr, "poa linear: backbone %s'%s*' of %s, recipe %s\n", f.prefix[0] ? "" : "(no prefix) ",
                f.prefix, o->checkpoint, f.recipe.path);
    if (rc == 0) rc = poa_make_folders(o->out, e);
    if (rc == 0) rc = evaluate(o, &f, results, e);
    char *markdown = NULL;
    if (rc == 0) rc = write_tables(o->out, &f, results, &markdown, e);
    if (rc == 0) {
        fputs(markdown, stdout);
        printf("\ntable: %s/linear.csv, %s/linear.md; every classifier: %s/linear_grid.csv\n", o->out,
               o->out, o->out);
        double *best = malloc(sizeof(double) * (size_t)f.count);
        for (int i = 0; best && i < f.count; i++) best[i] = 100 * results[i].top1[results[i].best];
        rc = best ? poa_eval_plot(o->out, "linear", "linear probe top-1 (%)", f.members, best, f.count, 0, e)
                  : poa_fail(e, "out of memory");
        free(best);
    }
    free(markdown);
    free(results);
    poa_eval_family_free(&f);
    return rc;
}

int poa_command_linear(int argc, char **argv) {
    linear_options o;
    poa_error e = { { 0 } };
    if (parse_options(argc, argv, &o, &e)) {
        fprintf(stderr, "poa linear: %s\n", e.message);
        return 2;
    }
    if (o.threads) poa_set_threads((int)o.threads);
    if (run_linear(&o, &e)) {
        fprintf(stderr, "poa linear: %s\n", e.message);
        return 1;
    }
    return 0;
}
