/* plot_curves.c: a training run's curves from its metrics.jsonl (the lines poa train writes
   per step, and the k-NN points poa knn appends for a checkpoint of the run): the loss terms,
   the learning rate, and k-NN top-1 against steps, one figure in three panels. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot.h"
#include "plot_draw.h"

enum { LOSS, DINO, DISTILL, KOLEO, IBOT, LR, SERIES };
static const char *const keys[SERIES] = { "loss", "dino", "distill", "koleo", "ibot", "lr" };
static const char *const names[SERIES] = { "total", "DINO", "same-view distill", "KoLeo", "iBOT", "lr" };

typedef struct knn_point {
    double step, top1;
    char member[32];
} knn_point;

typedef struct curves {
    double *step, *value[SERIES];
    long count, capacity;
    knn_point *knn;
    long knn_count, knn_capacity;
} curves;

/* The number after "key": in a JSON line, or NAN. */
static double field(const char *line, const char *key) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\": ", key);
    const char *at = strstr(line, pattern);
    if (!at) return NAN;
    char *end;
    double v = strtod(at + strlen(pattern), &end);
    return end == at + strlen(pattern) ? NAN : v;
}

/* A step record; a resumed run logs again the steps after its checkpoint, and the latest
   records of a step replace the earlier ones. */
static int add_step(curves *c, const char *line) {
    double step = field(line, "step");
    while (c->count > 0 && c->step[c->count - 1] >= step) c->count--;
    if (c->count == c->capacity) {
        c->capacity = c->capacity ? 2 * c->capacity : 256;
        double *s = realloc(c->step, sizeof(double) * (size_t)c->capacity);
        if (!s) return -1;
        c->step = s;
        for (int k = 0; k < SERIES; k++) {
            double *v = realloc(c->value[k], sizeof(double) * (size_t)c->capacity);
            if (!v) return -1;
            c->value[k] = v;
        }
    }
    c->step[c->count] = step;
    for (int k = 0; k < SERIES; k++) c->value[k][c->count] = field(line, keys[k]);
    c->count++;
    return 0;
}

static int add_knn(curves *c, const char *line) {
    if (c->knn_count == c->knn_capacity) {
        c->knn_capacity = c->knn_capacity ? 2 * c->knn_capacity : 64;
        knn_point *p = realloc(c->knn, sizeof *p * (size_t)c->knn_capacity);
        if (!p) return -1;
        c->knn = p;
    }
    knn_point *p = &c->knn[c->knn_count++];
    p->step = field(line, "step");
    p->top1 = field(line, "top1");
    const char *at = strstr(line, "\"knn\": \"");
    snprintf(p->member, sizeof p->member, "%.*s", at ? (int)strcspn(at + 8, "\"") : 1, at ? at + 8 : "?");
    return 0;
}

static int read_metrics(const char *path, curves *c, poa_error *e) {
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "r");
    if (!f) return poa_fail(e, "%s: cannot open (%s)", path, strerror(errno));
    char line[8192];
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        if (isnan(field(line, "step"))) continue; /* not a step or k-NN record */
        if (strstr(line, "\"knn\": ")) rc = add_knn(c, line);
        else if (!isnan(field(line, "loss"))) rc = add_step(c, line);
    }
    fclose(f);
    if (rc) return poa_fail(e, "%s: out of memory", path);
    if (c->count == 0) return poa_fail(e, "%s: no training steps", path);
    return 0;
}

static void curves_free(curves *c) {
    free(c->step);
    for (int k = 0; k < SERIES; k++) free(c->value[k]);
    free(c->knn);
}

#if POA_HAVE_CAIRO

enum { COLOURS = 10 }; /* matplotlib's tab10; k-NN members past the tenth are drawn grey */
static const double palette[COLOURS][3] = {
    { 0.12, 0.47, 0.71 }, { 1.0, 0.5, 0.05 }, { 0.17, 0.63, 0.17 }, { 0.84, 0.15, 0.16 },
    { 0.58, 0.4, 0.74 }, { 0.55, 0.34, 0.29 }, { 0.89, 0.47, 0.76 }, { 0.5, 0.5, 0.5 },
    { 0.74, 0.74, 0.13 }, { 0.09, 0.75, 0.81 },
};

typedef struct panel_context {
    const curves *c;
    const char *title;
} panel_context;

static void polyline(cairo_t *cr, const poa_plot_axes *a, const curves *c, int k) {
    int open = 0;
    for (long i = 0; i < c->count; i++) {
        double v = c->value[k][i];
        if (isnan(v) || isnan(c->step[i])) continue;
        double x = poa_plot_x(a, c->step[i]), y = poa_plot_y(a, v);
        if (open) cairo_line_to(cr, x, y);
        else cairo_move_to(cr, x, y);
        open = 1;
    }
    cairo_stroke(cr);
}

/* One panel: the series from..to (inclusive) against steps, with a legend. */
static void panel(cairo_t *cr, const curves *c, double top, double bottom, double width, int from,
                  int to, const char *y_label) {
    poa_plot_axes a = { 84, top, width - 170, bottom, 0, 0, 0, 0, 0, 0 };
    for (long i = 0; i < c->count; i++)
        for (int k = from; k <= to; k++)
            if (!isnan(c->value[k][i]) && !isnan(c->step[i])) poa_plot_axes_include(&a, c->step[i], c->value[k][i], 0);
    poa_plot_axes_draw(cr, &a, "step", y_label);
    cairo_set_line_width(cr, 1.4);
    for (int k = from; k <= to; k++) {
        const double *rgb = palette[k % COLOURS];
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        polyline(cr, &a, c, k);
        cairo_rectangle(cr, a.right + 12, top + 6 + 16 * (k - from), 14, 3);
        cairo_fill(cr);
        poa_plot_text(cr, a.right + 32, top + 11 + 16 * (k - from), 10, POA_PLOT_LEFT, 0, names[k]);
    }
}

static void knn_panel(cairo_t *cr, const curves *c, double top, double bottom, double width) {
    poa_plot_axes a = { 84, top, width - 170, bottom, 0, 0, 0, 0, 0, 0 };
    for (long i = 0; i < c->count; i++) poa_plot_axes_include(&a, c->step[i], NAN, 0);
    a.y_min = a.y_max = NAN;
    for (long i = 0; i < c->knn_count; i++) {
        a.y_min = isnan(a.y_min) ? c->knn[i].top1 : fmin(a.y_min, c->knn[i].top1);
        a.y_max = isnan(a.y_max) ? c->knn[i].top1 : fmax(a.y_max, c->knn[i].top1);
    }
    if (c->knn_count == 0) a.y_min = 0, a.y_max = 100;
    poa_plot_axes_draw(cr, &a, "step", "k-NN top-1 (%), k = 20");
    if (c->knn_count == 0)
        poa_plot_text(cr, (a.left + a.right) / 2, (a.top + a.bottom) / 2, 11, POA_PLOT_CENTER, 0,
                      "no k-NN points yet: poa knn on a checkpoint of this run adds them");
    char members[COLOURS][32];
    int nm = 0;
    for (long i = 0; i < c->knn_count; i++) {
        int m = 0;
        while (m < nm && strcmp(members[m], c->knn[i].member) != 0) m++;
        if (m == nm && nm < COLOURS) {
            snprintf(members[nm], sizeof members[nm], "%s", c->knn[i].member);
            const double *rgb = palette[nm];
            cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
            poa_plot_marker(cr, a.right + 18, top + 7 + 16 * nm, 0);
            poa_plot_text(cr, a.right + 32, top + 11 + 16 * nm, 10, POA_PLOT_LEFT, 0, members[nm]);
            nm++;
        }
        static const double grey[3] = { 0.6, 0.6, 0.6 };
        const double *rgb = m < COLOURS ? palette[m] : grey;
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        poa_plot_marker(cr, poa_plot_x(&a, c->knn[i].step), poa_plot_y(&a, c->knn[i].top1), 0);
    }
}

static void draw_curves(cairo_t *cr, const void *context, double width, double height) {
    const panel_context *p = context;
    poa_plot_background(cr, width, height);
    poa_plot_text(cr, 84, 26, 15, POA_PLOT_LEFT, 1, p->title);
    const double h = (height - 60) / 3;
    panel(cr, p->c, 44, 44 + h - 52, width, LOSS, IBOT, "loss");
    panel(cr, p->c, 44 + h, 44 + 2 * h - 52, width, LR, LR, "learning rate");
    knn_panel(cr, p->c, 44 + 2 * h, 44 + 3 * h - 52, width);
}

int poa_plot_training(const char *dir, const char *out_prefix, char **written, long *steps,
                      long *points, poa_error *e) {
    char path[4096], title[256];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    curves c;
    if (read_metrics(path, &c, e)) {
        curves_free(&c);
        return -1;
    }
    snprintf(title, sizeof title, "training run %s: %ld steps, %ld k-NN points", dir, c.count, c.knn_count);
    panel_context p = { &c, title };
    size_t size = 0;
    FILE *list = written ? open_memstream(written, &size) : NULL;
    int rc = poa_plot_write(out_prefix, 760, 820, draw_curves, &p, list, e);
    if (list) fclose(list);
    if (steps) *steps = c.count;
    if (points) *points = c.knn_count;
    curves_free(&c);
    return rc;
}

#else

int poa_plot_training(const char *dir, const char *out_prefix, char **written, long *steps,
                      long *points, poa_error *e) {
    (void)out_prefix, (void)steps, (void)points, (void)read_metrics, (void)curves_free;
    if (written) *written = NULL;
    return poa_fail(e, "%s: this poa was built without cairo (--static-deps): no plots", dir);
}

#endif
