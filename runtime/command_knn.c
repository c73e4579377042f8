/* command_knn.c: `poa knn`: weighted k-NN (knn.h) of members of a teacher's
   backbone on a labelled train/val ImageFolder tree; writes knn.csv, knn.md and
   knn_heatmap.png (the whole family, width by depth, coloured by top-1 at k = 20).
   Beside the members, the same protocol on two baselines, so that the table says what
   training bought: the raw pixels as the network is fed them, and every member at
   initialisation (the recipe's, from its train.seed, or the backbone of --init FILE). */
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "backend.h"
#include "commands.h"
#include "knn.h"
#include "knn_heatmap.h"
#include "files.h"
#include "recipe.h"
#include "safetensors.h"

enum { HEAT_K = 1 /* the column of k = 20, the one the heatmap and the gains show */ };

typedef struct knn_options {
    const char *checkpoint, *recipe, *data, *nets, *out;
    const char *init;         /* --init FILE: the members at initialisation from this file */
    int pixels, at_init;      /* --baselines: which baselines are evaluated */
    long train_limit, val_limit, batch;
    int threads;
    const char *overrides[64]; /* section.field=value, applied over the recipe */
    int override_count;
} knn_options;

/* One member of the family and, once evaluated, its accuracies (fractions). */
typedef struct knn_member {
    int width, depth;
    long long params;
    char name[32];
    int selected;
    double top1[POA_KNN_K_COUNT], top5[POA_KNN_K_COUNT];
    double init_top1[POA_KNN_K_COUNT], init_top5[POA_KNN_K_COUNT]; /* at initialisation */
} knn_member;

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
    if (baselines && parse_baselines(baselines, o, e)) return -1;
    if (o->init && !o->at_init) return poa_fail(e, "--init %s: the init baseline is off (--baselines)", o->init);
    return 0;
}

/* Every member of the recipe's family (gen.space.members), in its order. */
static int family_members(lua_State *L, const poa_recipe *r, knn_member **out, int *count,
                          poa_error *e) {
    static const char *chunk =
        "local r = ...\n"
        "local rows = {}\n"
        "for _, m in ipairs(require('gen.space').members(r)) do\n"
        "  rows[#rows + 1] = string.format('%d %d %d %s', m.width, m.depth, m.params, m.name or '-')\n"
        "end\n"
        "return table.concat(rows, '\\n')\n";
    if (luaL_loadstring(L, chunk) != LUA_OK) return poa_fail(e, "%s", lua_tostring(L, -1));
    if (poa_recipe_push(L, r, e)) {
        lua_pop(L, 1);
        return -1;
    }
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        poa_fail(e, "%s: %s", r->path, lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    const char *text = lua_tostring(L, -1);
    int lines = 1;
    for (const char *p = text; *p; p++) lines += *p == '\n';
    knn_member *m = calloc((size_t)lines, sizeof *m);
    int n = 0;
    for (const char *p = text; m && p && *p; n++) {
        if (sscanf(p, "%d %d %lld %31s", &m[n].width, &m[n].depth, &m[n].params, m[n].name) != 4)
            break;
        if (strcmp(m[n].name, "-") == 0) snprintf(m[n].name, sizeof m[n].name, "%dx%d", m[n].width, m[n].depth);
        p = strchr(p, '\n');
        if (p) p++;
    }
    lua_pop(L, 1);
    if (!m || n == 0) {
        free(m);
        return poa_fail(e, "%s: the family has no members", r->path);
    }
    *out = m;
    *count = n;
    return 0;
}

/* The recipe's train.seed: poa train initialises the networks from it. */
static int recipe_seed(lua_State *L, const poa_recipe *r, unsigned long long *seed, poa_error *e) {
    if (luaL_loadstring(L, "local r = ...\nreturn string.format('%.0f', r.train.seed)") != LUA_OK)
        return poa_fail(e, "%s", lua_tostring(L, -1));
    if (poa_recipe_push(L, r, e)) {
        lua_pop(L, 1);
        return -1;
    }
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        poa_fail(e, "%s: train.seed: %s", r->path, lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    *seed = strtoull(lua_tostring(L, -1), NULL, 10);
    lua_pop(L, 1);
    return 0;
}

/* Marks the members named by --nets ("all" or a comma-separated list). */
static int select_members(lua_State *L, const poa_recipe *r, const char *nets, knn_member *m,
                          int count, poa_error *e) {
    if (strcmp(nets, "all") == 0) {
        for (int i = 0; i < count; i++) m[i].selected = 1;
        return 0;
    }
    char item[128];
    for (const char *p = nets; *p;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof item) return poa_fail(e, "--nets: bad list '%s'", nets);
        memcpy(item, p, len);
        item[len] = 0;
        int width, depth;
        if (poa_recipe_member(L, r, item, &width, &depth, e)) return -1;
        for (int i = 0; i < count; i++)
            if (m[i].width == width && m[i].depth == depth) m[i].selected = 1;
        p += len + (p[len] == ',');
    }
    return 0;
}

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int open_split(poa_dataset *d, const char *data, const char *split, poa_error *e) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", data, split);
    return poa_dataset_open_folder(d, path, e);
}

/* ---- outputs ---- */

/* knn.csv: a row per (member or pixels, features, k); features = trained, init or pixels. */
static int write_csv(const char *path, const knn_options *o, const knn_member *m, int count,
                     const knn_pixels *pixels, poa_error *e) {
    FILE *f = fopen(path, "w");
    if (!f) return poa_fail(e, "%s: cannot create (%s)", path, strerror(errno));
    fprintf(f, "member,width,depth,params,k,top1,top5,features\n");
    for (int k = 0; o->pixels && k < POA_KNN_K_COUNT; k++)
        fprintf(f, "pixels,0,0,0,%d,%.4f,%.4f,pixels\n", poa_knn_default_ks[k], 100 * pixels->top1[k],
                100 * pixels->top5[k]);
    for (int i = 0; i < count; i++)
        for (int k = 0; m[i].selected && k < POA_KNN_K_COUNT; k++) {
            fprintf(f, "%s,%d,%d,%lld,%d,%.4f,%.4f,trained\n", m[i].name, m[i].width, m[i].depth,
                    m[i].params, poa_knn_default_ks[k], 100 * m[i].top1[k], 100 * m[i].top5[k]);
            if (o->at_init)
                fprintf(f, "%s,%d,%d,%lld,%d,%.4f,%.4f,init\n", m[i].name, m[i].width, m[i].depth,
                        m[i].params, poa_knn_default_ks[k], 100 * m[i].init_top1[k],
                        100 * m[i].init_top5[k]);
        }
    if (fclose(f) != 0) return poa_fail(e, "%s: write failed", path);
    return 0;
}

/* knn.md (and stdout): a row per member, its top-1 at every k, then (baselines) its top-1
   at k = 20 at initialisation and what training gained over it and over the pixels; the
   pixels' own row first. */
static int write_tables(const knn_options *o, const knn_member *m, int count,
                        const knn_pixels *pixels, char **markdown, poa_error *e) {
    char path[4096];
    snprintf(path, sizeof path, "%s/knn.csv", o->out);
    if (write_csv(path, o, m, count, pixels, e)) return -1;
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
        for (int k = 0; k < POA_KNN_K_COUNT; k++) fprintf(md, " %.2f |", 100 * m[i].top1[k]);
        if (o->at_init)
            fprintf(md, " %.2f | %+.2f |", 100 * m[i].init_top1[HEAT_K],
                    100 * (m[i].top1[HEAT_K] - m[i].init_top1[HEAT_K]));
        if (o->pixels) fprintf(md, " %+.2f |", 100 * (m[i].top1[HEAT_K] - pixels->top1[HEAT_K]));
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
    int rc = open_split(&d->train, o->data, "train", e);
    if (rc == 0) rc = open_split(&d->val, o->data, "val", e);
    if (rc == 0 && d->train.class_count != d->val.class_count)
        rc = poa_fail(e, "%s: train/ has %d classes, val/ has %d", o->data, d->train.class_count,
                      d->val.class_count);
    for (int c = 0; rc == 0 && c < d->train.class_count; c++)
        if (strcmp(d->train.class_names[c], d->val.class_names[c]) != 0)
            rc = poa_fail(e, "%s: class %d is '%s' in train/ but '%s' in val/", o->data, c,
                          d->train.class_names[c], d->val.class_names[c]);
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
                "values, %.2f s)\n", "pixels", 100 * pixels->top1[HEAT_K], 100 * pixels->top5[HEAT_K],
                dim, seconds_now() - t0);
    free(train);
    free(val);
    return rc;
}

/* One member's top1/top5 with the backbone params; `what` names them in messages. */
static int evaluate_member(const knn_options *o, const knn_data *d, const poa_vit *model,
                           const real *params, const knn_member *m, const char *what,
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
            m->name, 100 * top1[HEAT_K], 100 * top5[HEAT_K], t1 - t0, seconds_now() - t1, what);
    return 0;
}

/* Every selected member with the trained params and (init != NULL) at initialisation,
   and the pixels (o->pixels). */
static int evaluate(const knn_options *o, const poa_recipe *r, const poa_vit *model,
                    const real *params, const real *init, knn_member *m, int count,
                    knn_pixels *pixels, poa_error *e) {
    knn_data d;
    int rc = load_data(o, r, &d, e);
    if (rc == 0 && o->pixels) rc = evaluate_pixels(&d, pixels, e);
    real *train = NULL, *val = NULL;
    if (rc == 0) {
        train = malloc(sizeof(real) * (size_t)d.train_images.count * r->width_max);
        val = malloc(sizeof(real) * (size_t)d.val_images.count * r->width_max);
        if (!train || !val) rc = poa_fail(e, "out of memory for the features");
    }
    for (int i = 0; rc == 0 && i < count; i++) {
        if (!m[i].selected) continue;
        rc = evaluate_member(o, &d, model, params, &m[i], "", train, val, m[i].top1, m[i].top5, e);
        if (rc == 0 && init)
            rc = evaluate_member(o, &d, model, init, &m[i], " at initialisation", train, val,
                                 m[i].init_top1, m[i].init_top5, e);
    }
    free(train);
    free(val);
    data_free(&d);
    return rc;
}

/* The backbone at initialisation: the backbone in o->init, or poa train's initialisation
   of the recipe (its train.seed). */
static int initial_parameters(const knn_options *o, const poa_vit *model, unsigned long long seed,
                              real *init, poa_error *e) {
    if (!o->init) {
        poa_vit_init_parameters(model, init, seed);
        fprintf(stderr, "poa knn: at initialisation: the recipe's, train.seed = %llu\n", seed);
        return 0;
    }
    const char *prefix = "";
    if (poa_vit_load_parameters(model, init, o->init, &prefix, e)) return -1;
    fprintf(stderr, "poa knn: at initialisation: backbone '%s*' of %s\n", prefix, o->init);
    return 0;
}

/* The recipe and overrides: --recipe, or those the checkpoint was trained with; then the
   command line's overrides. */
static int load_recipe(lua_State *L, const knn_options *o, poa_recipe *recipe, poa_error *e) {
    const char *recipe_path = o->recipe;
    char from_checkpoint[1024] = "", trained_with[2048] = "";
    const char *overrides[128];
    int override_count = 0;
    if (!recipe_path) {
        poa_safetensors f;
        if (poa_safetensors_open(&f, o->checkpoint, e)) return -1;
        const char *meta = poa_safetensors_metadata(&f, "recipe");
        const char *meta_overrides = poa_safetensors_metadata(&f, "overrides");
        if (meta) snprintf(from_checkpoint, sizeof from_checkpoint, "%s", meta);
        if (meta_overrides) snprintf(trained_with, sizeof trained_with, "%s", meta_overrides);
        poa_safetensors_close(&f);
        if (!meta)
            return poa_fail(e, "%s: no \"recipe\" in its metadata; pass --recipe", o->checkpoint);
        recipe_path = from_checkpoint;
        override_count = poa_split_overrides(trained_with, overrides, 64);
    }
    for (int i = 0; i < o->override_count; i++) overrides[override_count++] = o->overrides[i];
    return poa_recipe_load_overrides(L, recipe_path, overrides, override_count, recipe, e);
}

static int run_knn(const knn_options *o, poa_error *e) {
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    poa_recipe recipe;
    knn_member *members = NULL;
    int count = 0;
    unsigned long long seed = 0;
    int rc = load_recipe(L, o, &recipe, e);
    if (rc == 0) rc = family_members(L, &recipe, &members, &count, e);
    if (rc == 0) rc = select_members(L, &recipe, o->nets, members, count, e);
    if (rc == 0) rc = recipe_seed(L, &recipe, &seed, e);
    lua_close(L);
    if (rc) {
        free(members);
        return -1;
    }
    poa_vit model;
    if (poa_vit_init(&model, &recipe.vit, e)) {
        free(members);
        return -1;
    }
    real *params = malloc(sizeof(real) * (size_t)model.parameter_count);
    real *init = o->at_init ? malloc(sizeof(real) * (size_t)model.parameter_count) : NULL;
    const char *prefix = "";
    rc = params && (init || !o->at_init) ? 0 : poa_fail(e, "out of memory for %ld parameters", model.parameter_count);
    if (rc == 0) rc = poa_vit_load_parameters(&model, params, o->checkpoint, &prefix, e);
    if (rc == 0)
        fprintf(stderr, "poa knn: backbone %s'%s*' of %s, recipe %s\n", prefix[0] ? "" : "(no prefix) ",
                prefix, o->checkpoint, recipe.path);
    if (rc == 0 && init) rc = initial_parameters(o, &model, seed, init, e);
    if (rc == 0) rc = poa_make_folders(o->out, e);
    knn_pixels pixels = { { 0 }, { 0 } };
    if (rc == 0) rc = evaluate(o, &recipe, &model, params, init, members, count, &pixels, e);
    char *markdown = NULL, heatmap[4096];
    snprintf(heatmap, sizeof heatmap, "%s/knn_heatmap.png", o->out);
    if (rc == 0) rc = write_tables(o, members, count, &pixels, &markdown, e);
    poa_knn_cell *cells = rc == 0 ? calloc((size_t)count, sizeof *cells) : NULL;
    if (rc == 0 && !cells) rc = poa_fail(e, "out of memory");
    for (int i = 0; rc == 0 && i < count; i++)
        cells[i] = (poa_knn_cell){ members[i].width, members[i].depth, members[i].selected,
                                   100 * members[i].top1[HEAT_K] };
    if (rc == 0)
        rc = poa_knn_heatmap_write(heatmap, cells, count, o->pixels ? 100 * pixels.top1[HEAT_K] : -1, e);
    if (rc == 0) {
        fputs(markdown, stdout);
        printf("\ntable: %s/knn.csv, %s/knn.md\nheatmap: %s\n", o->out, o->out, heatmap);
    }
    free(cells);
    free(markdown);
    free(params);
    free(init);
    free(members);
    poa_vit_free(&model);
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
