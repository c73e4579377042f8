/* command_knn.c: `poa knn`: weighted k-NN (knn.h) of members of a teacher's
   backbone on a labelled train/val ImageFolder tree; writes knn.csv, knn.md and
   knn_heatmap.png (the whole family, width by depth, coloured by top-1 at k = 20). */
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
#include "png_write.h"
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

static int write_tables(const char *out, const knn_member *m, int count, char **markdown,
                        poa_error *e) {
    char path[4096];
    snprintf(path, sizeof path, "%s/knn.csv", out);
    FILE *f = fopen(path, "w");
    if (!f) return poa_fail(e, "%s: cannot create (%s)", path, strerror(errno));
    fprintf(f, "member,width,depth,params,k,top1,top5\n");
    for (int i = 0; i < count; i++)
        for (int k = 0; m[i].selected && k < POA_KNN_K_COUNT; k++)
            fprintf(f, "%s,%d,%d,%lld,%d,%.4f,%.4f\n", m[i].name, m[i].width, m[i].depth,
                    m[i].params, poa_knn_default_ks[k], 100 * m[i].top1[k], 100 * m[i].top5[k]);
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

/* ---- the heatmap ---- */

/* A 3x5 pixel font: each glyph is 5 rows of 3 bits (bit 2 = left column). */
static const struct glyph {
    char c;
    unsigned char rows[5];
} font[] = {
    { '0', { 7, 5, 5, 5, 7 } }, { '1', { 2, 6, 2, 2, 7 } }, { '2', { 7, 1, 7, 4, 7 } },
    { '3', { 7, 1, 7, 1, 7 } }, { '4', { 5, 5, 7, 1, 1 } }, { '5', { 7, 4, 7, 1, 7 } },
    { '6', { 7, 4, 7, 5, 7 } }, { '7', { 7, 1, 1, 1, 1 } }, { '8', { 7, 5, 7, 5, 7 } },
    { '9', { 7, 5, 7, 1, 7 } }, { '.', { 0, 0, 0, 0, 2 } }, { '%', { 5, 1, 2, 4, 5 } },
    { '-', { 0, 0, 7, 0, 0 } }, { '=', { 0, 7, 0, 7, 0 } }, { 'A', { 2, 5, 7, 5, 5 } },
    { 'D', { 6, 5, 5, 5, 6 } }, { 'E', { 7, 4, 6, 4, 7 } }, { 'H', { 5, 5, 7, 5, 5 } },
    { 'I', { 7, 2, 2, 2, 7 } }, { 'K', { 5, 5, 6, 5, 5 } }, { 'L', { 4, 4, 4, 4, 7 } },
    { 'N', { 6, 5, 5, 5, 5 } }, { 'O', { 2, 5, 5, 5, 2 } }, { 'P', { 6, 5, 6, 4, 4 } },
    { 'T', { 7, 2, 2, 2, 2 } }, { 'U', { 5, 5, 5, 5, 7 } }, { 'V', { 5, 5, 5, 5, 2 } },
    { 'W', { 5, 5, 5, 7, 5 } },
};

typedef struct canvas {
    unsigned char *rgb;
    int width, height;
} canvas;

static void fill_rect(canvas *c, int x0, int y0, int w, int h, const unsigned char colour[3]) {
    for (int y = y0; y < y0 + h; y++)
        for (int x = x0; x < x0 + w; x++)
            if (x >= 0 && y >= 0 && x < c->width && y < c->height)
                memcpy(c->rgb + ((size_t)y * c->width + x) * 3, colour, 3);
}

/* Text at (x, y) (top left), each font pixel scale x scale; advance 4 * scale. */
static void draw_text(canvas *c, int x, int y, int scale, const char *text,
                      const unsigned char colour[3]) {
    for (; *text; text++, x += 4 * scale)
        for (size_t g = 0; g < sizeof font / sizeof font[0]; g++) {
            if (font[g].c != *text) continue;
            for (int row = 0; row < 5; row++)
                for (int col = 0; col < 3; col++)
                    if (font[g].rows[row] >> (2 - col) & 1)
                        fill_rect(c, x + col * scale, y + row * scale, scale, scale, colour);
        }
}

static int text_width(const char *text, int scale) { return (int)strlen(text) * 4 * scale - scale; }

/* Viridis, interpolated between five of its colours; t in [0, 1]. */
static void colour_of(double t, unsigned char out[3]) {
    static const double stops[5][3] = {
        { 68, 1, 84 }, { 59, 82, 139 }, { 33, 145, 140 }, { 94, 201, 98 }, { 253, 231, 37 },
    };
    if (t < 0) t = 0;
    if (t > 1) t = 1;
    double s = t * 4;
    int i = s >= 4 ? 3 : (int)s;
    double f = s - i;
    for (int ch = 0; ch < 3; ch++)
        out[ch] = (unsigned char)(stops[i][ch] + f * (stops[i + 1][ch] - stops[i][ch]) + 0.5);
}

enum { CELL_W = 48, CELL_H = 28, LABEL = 2, HEAT_K = 1 /* k = 20 */ };

static int write_heatmap(const char *path, const knn_member *m, int count, poa_error *e) {
    /* the family's distinct widths (rows, largest on top) and depths (columns) */
    int widths[256], depths[256], nw = 0, nd = 0;
    double lo = 1e300, hi = -1e300;
    for (int i = 0; i < count; i++) {
        int fw = 0, fd = 0;
        for (int j = 0; j < nw; j++) fw |= widths[j] == m[i].width;
        for (int j = 0; j < nd; j++) fd |= depths[j] == m[i].depth;
        if (!fw && nw < 256) widths[nw++] = m[i].width;
        if (!fd && nd < 256) depths[nd++] = m[i].depth;
        if (m[i].selected) {
            double v = 100 * m[i].top1[HEAT_K];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
    }
    if (hi < lo) lo = hi = 0;
    if (hi - lo < 1e-9) { /* one value: a 1-point scale that stays within [0, 100] */
        if (hi >= 1) lo = hi - 1;
        else hi = lo + 1;
    }
    const int char_h = 5 * LABEL, left = 8 + text_width("WIDTH", LABEL) + 8;
    const int top = 8 + char_h + 8 + char_h + 6, grid_w = nd * CELL_W, grid_h = nw * CELL_H;
    const int strip_h = grid_h > 120 ? grid_h : 120, legend_x = left + grid_w + 16;
    canvas c = { NULL, legend_x + 22 + text_width("NOT EVALUATED", 1) + 8,
                 top + strip_h + 6 + char_h + 6 + char_h + 8 };
    int min_w = left + text_width("KNN TOP-1 % AT K=20", LABEL) + 8;
    if (c.width < min_w) c.width = min_w;
    c.rgb = malloc((size_t)c.width * c.height * 3);
    if (!c.rgb) return poa_fail(e, "%s: out of memory", path);
    memset(c.rgb, 255, (size_t)c.width * c.height * 3);
    static const unsigned char black[3] = { 0, 0, 0 }, white[3] = { 255, 255, 255 },
                               grey[3] = { 200, 200, 200 };
    char text[32];
    draw_text(&c, left, 8, LABEL, "KNN TOP-1 % AT K=20", black);
    draw_text(&c, 8, 8 + char_h + 8, LABEL, "WIDTH", black);
    for (int r = 0; r < nw; r++) {
        int w = widths[nw - 1 - r], y = top + r * CELL_H;
        snprintf(text, sizeof text, "%d", w);
        draw_text(&c, left - 6 - text_width(text, LABEL), y + (CELL_H - char_h) / 2, LABEL, text, black);
        for (int col = 0; col < nd; col++) {
            int x = left + col * CELL_W;
            const knn_member *cell = NULL;
            for (int i = 0; i < count; i++)
                if (m[i].width == w && m[i].depth == depths[col]) cell = &m[i];
            unsigned char colour[3];
            if (cell && cell->selected) colour_of((100 * cell->top1[HEAT_K] - lo) / (hi - lo), colour);
            else memcpy(colour, grey, 3);
            fill_rect(&c, x, y, CELL_W - 1, CELL_H - 1, colour);
            if (cell && cell->selected) {
                double luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2];
                snprintf(text, sizeof text, "%.1f", 100 * cell->top1[HEAT_K]);
                draw_text(&c, x + (CELL_W - 1 - text_width(text, LABEL)) / 2,
                          y + (CELL_H - 1 - char_h) / 2, LABEL, text, luma > 140 ? black : white);
            }
        }
    }
    for (int col = 0; col < nd; col++) {
        snprintf(text, sizeof text, "%d", depths[col]);
        draw_text(&c, left + col * CELL_W + (CELL_W - 1 - text_width(text, LABEL)) / 2,
                  top + grid_h + 6, LABEL, text, black);
    }
    draw_text(&c, left + (grid_w - text_width("DEPTH", LABEL)) / 2, top + grid_h + 6 + char_h + 6,
              LABEL, "DEPTH", black);
    /* the colour scale: hi at the top, lo at the bottom */
    for (int y = 0; y < strip_h; y++) {
        unsigned char colour[3];
        colour_of(1.0 - (double)y / (strip_h - 1), colour);
        fill_rect(&c, legend_x, top + y, 16, 1, colour);
    }
    snprintf(text, sizeof text, "%.1f", hi);
    draw_text(&c, legend_x + 22, top, LABEL, text, black);
    snprintf(text, sizeof text, "%.1f", lo);
    draw_text(&c, legend_x + 22, top + strip_h - char_h, LABEL, text, black);
    fill_rect(&c, legend_x, top + strip_h + 6, 16, char_h, grey);
    draw_text(&c, legend_x + 22, top + strip_h + 6 + (char_h - 5) / 2, 1, "NOT EVALUATED", black);
    int rc = poa_png_write_rgb(path, c.rgb, c.width, c.height, e);
    free(c.rgb);
    return rc;
}

/* ---- the run ---- */

static int evaluate(const knn_options *o, const poa_recipe *r, const poa_vit *model,
                    const real *params, knn_member *m, int count, poa_error *e) {
    poa_dataset train = { 0 }, val = { 0 };
    poa_knn_images train_images = { 0 }, val_images = { 0 };
    int rc = open_split(&train, o->data, "train", e);
    if (rc == 0) rc = open_split(&val, o->data, "val", e);
    if (rc == 0 && train.class_count != val.class_count)
        rc = poa_fail(e, "%s: train/ has %d classes, val/ has %d", o->data, train.class_count,
                      val.class_count);
    for (int c = 0; rc == 0 && c < train.class_count; c++)
        if (strcmp(train.class_names[c], val.class_names[c]) != 0)
            rc = poa_fail(e, "%s: class %d is '%s' in train/ but '%s' in val/", o->data, c,
                          train.class_names[c], val.class_names[c]);
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
                    "k-NN %.2f s)\n", m[i].name, 100 * m[i].top1[HEAT_K], 100 * m[i].top5[HEAT_K],
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

static int run_knn(const knn_options *o, poa_error *e) {
    const char *recipe_path = o->recipe;
    char from_checkpoint[1024] = "", trained_with[2048] = "";
    const char *overrides[128];
    int override_count = 0;
    if (!recipe_path) {
        /* The recipe and the overrides the checkpoint was trained with. */
        if (poa_checkpoint_recipe(o->checkpoint, from_checkpoint, sizeof from_checkpoint, trained_with,
                                  sizeof trained_with, e))
            return -1;
        recipe_path = from_checkpoint;
        override_count = poa_split_overrides(trained_with, overrides, 64);
    }
    for (int i = 0; i < o->override_count; i++) overrides[override_count++] = o->overrides[i];
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    poa_recipe recipe;
    knn_member *members = NULL;
    int count = 0;
    int rc = poa_recipe_load_overrides(L, recipe_path, overrides, override_count, &recipe, e);
    if (rc == 0) rc = family_members(L, &recipe, &members, &count, e);
    if (rc == 0) rc = select_members(L, &recipe, o->nets, members, count, e);
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
    const char *prefix = "";
    rc = params ? 0 : poa_fail(e, "out of memory for %ld parameters", model.parameter_count);
    if (rc == 0) rc = poa_vit_load_parameters(&model, params, o->checkpoint, &prefix, e);
    if (rc == 0)
        fprintf(stderr, "poa knn: backbone %s'%s*' of %s, recipe %s\n", prefix[0] ? "" : "(no prefix) ",
                prefix, o->checkpoint, recipe.path);
    if (rc == 0) rc = poa_make_folders(o->out, e);
    if (rc == 0) rc = evaluate(o, &recipe, &model, params, members, count, e);
    char *markdown = NULL, heatmap[4096];
    snprintf(heatmap, sizeof heatmap, "%s/knn_heatmap.png", o->out);
    if (rc == 0) rc = write_tables(o->out, members, count, &markdown, e);
    if (rc == 0) rc = write_heatmap(heatmap, members, count, e);
    if (rc == 0) {
        fputs(markdown, stdout);
        printf("\ntable: %s/knn.csv, %s/knn.md\nheatmap: %s\n", o->out, o->out, heatmap);
    }
    free(markdown);
    free(params);
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
