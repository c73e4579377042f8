/* plot.c: the family figures of an evaluation (plot.h) with cairo: each figure is one
   drawing function run on an SVG surface and on an image surface written as PNG. Text goes
   through cairo's font selection (fontconfig: DejaVu Sans on Debian). */
#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot_draw.h"

#if POA_HAVE_CAIRO

/* ---- the heatmap: widths as rows (largest on top), depths as columns ---- */

enum { CELL_W = 58, CELL_H = 30 };

typedef struct family_grid {
    int widths[256], depths[256], nw, nd;
    double lo, hi;
} family_grid;

static int int_compare(const void *a, const void *b) {
    return *(const int *)a - *(const int *)b;
}

static void grid_of(const poa_plot_series *s, family_grid *g) {
    memset(g, 0, sizeof *g);
    g->lo = 1e300;
    g->hi = -1e300;
    for (int i = 0; i < s->count; i++) {
        const poa_plot_point *p = &s->points[i];
        int fw = 0, fd = 0;
        for (int j = 0; j < g->nw; j++) fw |= g->widths[j] == p->width;
        for (int j = 0; j < g->nd; j++) fd |= g->depths[j] == p->depth;
        if (!fw && g->nw < 256) g->widths[g->nw++] = p->width;
        if (!fd && g->nd < 256) g->depths[g->nd++] = p->depth;
        g->lo = fmin(g->lo, p->value);
        g->hi = fmax(g->hi, p->value);
    }
    qsort(g->widths, (size_t)g->nw, sizeof(int), int_compare);
    qsort(g->depths, (size_t)g->nd, sizeof(int), int_compare);
    if (g->hi - g->lo < 1e-9) { /* one value: a 1-point scale */
        g->lo -= 0.5;
        g->hi += 0.5;
    }
}

static void draw_heatmap(cairo_t *cr, const void *context, double width, double height) {
    const poa_plot_figure *f = context;
    const poa_plot_series *s = &f->series[0];
    family_grid g;
    grid_of(s, &g);
    const double left = 78, top = 52, grid_w = g.nd * CELL_W, grid_h = g.nw * CELL_H;
    poa_plot_background(cr, width, height);
    poa_plot_text(cr, left, 26, 15, POA_PLOT_LEFT, 1, f->title);
    char text[64];
    for (int r = 0; r < g.nw; r++) {
        int w = g.widths[g.nw - 1 - r];
        double y = top + r * CELL_H;
        snprintf(text, sizeof text, "%d", w);
        poa_plot_text(cr, left - 8, y + CELL_H / 2 + 4, 11, POA_PLOT_RIGHT, 0, text);
        for (int c = 0; c < g.nd; c++) {
            const poa_plot_point *cell = NULL;
            for (int i = 0; i < s->count; i++)
                if (s->points[i].width == w && s->points[i].depth == g.depths[c]) cell = &s->points[i];
            double rgb[3] = { 0.85, 0.85, 0.85 };
            if (cell) poa_plot_viridis((cell->value - g.lo) / (g.hi - g.lo), rgb);
            cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
            cairo_rectangle(cr, left + c * CELL_W, y, CELL_W - 1, CELL_H - 1);
            cairo_fill(cr);
            if (!cell) continue;
            double luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
            double ink = luma > 0.55 ? 0 : 1;
            cairo_set_source_rgb(cr, ink, ink, ink);
            snprintf(text, sizeof text, "%.1f", cell->value);
            poa_plot_text_ink(cr, left + c * CELL_W + CELL_W / 2.0, y + CELL_H / 2 + 4, 11,
                              POA_PLOT_CENTER, 0, text);
        }
    }
    for (int c = 0; c < g.nd; c++) {
        snprintf(text, sizeof text, "%d", g.depths[c]);
        poa_plot_text(cr, left + c * CELL_W + CELL_W / 2.0, top + grid_h + 16, 11, POA_PLOT_CENTER, 0, text);
    }
    poa_plot_text(cr, left + grid_w / 2, top + grid_h + 36, 12, POA_PLOT_CENTER, 0, "depth");
    poa_plot_text_rotated(cr, 18, top + grid_h / 2, 12, "width");
    /* the colour scale */
    const double bar_x = left + grid_w + 24, bar_h = grid_h > 120 ? grid_h : 120;
    for (int i = 0; i < 100; i++) {
        double rgb[3];
        poa_plot_viridis(1 - i / 99.0, rgb);
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        cairo_rectangle(cr, bar_x, top + bar_h * i / 100.0, 14, bar_h / 100.0 + 0.5);
        cairo_fill(cr);
    }
    snprintf(text, sizeof text, "%.1f", g.hi);
    poa_plot_text(cr, bar_x + 20, top + 9, 11, POA_PLOT_LEFT, 0, text);
    snprintf(text, sizeof text, "%.1f", g.lo);
    poa_plot_text(cr, bar_x + 20, top + bar_h, 11, POA_PLOT_LEFT, 0, text);
    if (s->pixels > 0) { /* the raw-pixel baseline, under the scale */
        snprintf(text, sizeof text, "pixels %.1f", s->pixels);
        poa_plot_text(cr, bar_x, top + bar_h + 18, 10, POA_PLOT_LEFT, 0, text);
    }
}

static void heatmap_size(const poa_plot_series *s, double *width, double *height) {
    family_grid g;
    grid_of(s, &g);
    double grid_h = g.nw * CELL_H;
    *width = 78 + g.nd * CELL_W + 24 + 70;
    if (*width < 420) *width = 420;
    *height = 52 + (grid_h > 120 ? grid_h : 120) + 52;
}

/* ---- accuracy against size ---- */

static double x_of(const poa_plot_figure *f, const poa_plot_point *p) {
    return f->x_gflops ? p->gflops : p->params / 1e6;
}

/* The Pareto front of a series: indices ascending in x whose value beats every smaller x. */
static int pareto_front(const poa_plot_figure *f, const poa_plot_series *s, int *out) {
    int n = 0;
    int *order = malloc(sizeof(int) * (size_t)(s->count > 0 ? s->count : 1));
    if (!order) return 0;
    for (int i = 0; i < s->count; i++) order[i] = i;
    for (int i = 1; i < s->count; i++) /* insertion sort by x, then by value descending */
        for (int j = i; j > 0; j--) {
            const poa_plot_point *a = &s->points[order[j - 1]], *b = &s->points[order[j]];
            double xa = x_of(f, a), xb = x_of(f, b);
            if (xa < xb || (xa == xb && a->value >= b->value)) break;
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    double best = -1e300;
    for (int i = 0; i < s->count; i++)
        if (s->points[order[i]].value > best) {
            best = s->points[order[i]].value;
            out[n++] = order[i];
        }
    free(order);
    return n;
}

static int is_named(const poa_plot_point *p) {
    char plain[32];
    snprintf(plain, sizeof plain, "%dx%d", p->width, p->depth);
    return strcmp(plain, p->name) != 0;
}

static const double colours[2][3] = { { 0.12, 0.47, 0.71 }, { 0.84, 0.15, 0.16 } };

/* Each series' raw-pixel baseline (if any): a dashed line across the plot in the series'
   colour, and its legend row after the series' rows. */
static void draw_pixel_lines(cairo_t *cr, const poa_plot_figure *f, const poa_plot_axes *a) {
    int row = f->series_count;
    for (int s = 0; s < f->series_count; s++) {
        const poa_plot_series *series = &f->series[s];
        if (series->pixels <= 0) continue;
        const double *c = colours[s % 2], dash[2] = { 6, 4 }, y = poa_plot_y(a, series->pixels);
        cairo_set_source_rgba(cr, c[0], c[1], c[2], 0.9);
        cairo_set_line_width(cr, 1.4);
        cairo_set_dash(cr, dash, 2, 0);
        cairo_move_to(cr, a->left, y);
        cairo_line_to(cr, a->right, y);
        double lx = a->left + 6, ly = 48 + 18 * row++;
        cairo_move_to(cr, lx - 5, ly - 4);
        cairo_line_to(cr, lx + 5, ly - 4);
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        char text[96];
        snprintf(text, sizeof text, "%s%sraw pixels as fed: %.1f (dashed)", series->label ? series->label : "",
                 series->label ? ", " : "", series->pixels);
        poa_plot_text(cr, lx + 10, ly, 11, POA_PLOT_LEFT, 0, text);
    }
}

static void draw_scatter(cairo_t *cr, const void *context, double width, double height) {
    const poa_plot_figure *f = context;
    int rows = f->series_count;
    for (int s = 0; s < f->series_count; s++) rows += f->series[s].pixels > 0;
    poa_plot_axes a = { 72, 40 + 18 * rows, width - 24, height - 58, 1, 0, 0, 0, 0, 0 };
    for (int s = 0; s < f->series_count; s++) {
        const poa_plot_series *series = &f->series[s];
        for (int i = 0; i < series->count; i++) {
            const poa_plot_point *p = &series->points[i];
            poa_plot_axes_include(&a, x_of(f, p), p->value, s == 0 && i == 0);
        }
        if (series->pixels > 0 && series->count > 0)
            poa_plot_axes_include(&a, x_of(f, &series->points[0]), series->pixels, 0);
    }
    poa_plot_background(cr, width, height);
    poa_plot_text(cr, a.left, 26, 15, POA_PLOT_LEFT, 1, f->title);
    poa_plot_axes_draw(cr, &a, f->x_gflops ? "GFLOPs per image (log scale)" : "parameters (M, log scale)",
                       f->metric);
    draw_pixel_lines(cr, f, &a);
    for (int s = 0; s < f->series_count; s++) {
        const poa_plot_series *series = &f->series[s];
        const double *c = colours[s % 2];
        int *front = malloc(sizeof(int) * (size_t)(series->count > 0 ? series->count : 1));
        int n = front ? pareto_front(f, series, front) : 0;
        cairo_set_source_rgba(cr, c[0], c[1], c[2], 0.9);
        cairo_set_line_width(cr, 1.6);
        for (int i = 0; i < n; i++) {
            const poa_plot_point *p = &series->points[front[i]];
            double x = poa_plot_x(&a, x_of(f, p)), y = poa_plot_y(&a, p->value);
            if (i == 0) cairo_move_to(cr, x, y);
            else cairo_line_to(cr, x, y);
        }
        cairo_stroke(cr);
        for (int i = 0; i < series->count; i++) {
            const poa_plot_point *p = &series->points[i];
            cairo_set_source_rgba(cr, c[0], c[1], c[2], 0.75);
            poa_plot_marker(cr, poa_plot_x(&a, x_of(f, p)), poa_plot_y(&a, p->value), s);
        }
        /* labels: the named members, and the front's members */
        for (int i = 0; i < series->count; i++) {
            const poa_plot_point *p = &series->points[i];
            int on_front = 0;
            for (int j = 0; j < n; j++) on_front |= front[j] == i;
            if (!is_named(p) && !on_front) continue;
            cairo_set_source_rgb(cr, is_named(p) ? 0 : 0.35, is_named(p) ? 0 : 0.35, is_named(p) ? 0 : 0.35);
            poa_plot_text_ink(cr, poa_plot_x(&a, x_of(f, p)) + 6, poa_plot_y(&a, p->value) - 6 - 12 * s,
                              is_named(p) ? 11 : 9, POA_PLOT_LEFT, is_named(p), p->name);
        }
        free(front);
        /* legend */
        char text[96];
        snprintf(text, sizeof text, "%s (line: Pareto front)", series->label ? series->label : "members");
        double lx = a.left + 6, ly = 48 + 18 * s; /* between the title and the axes */
        cairo_set_source_rgba(cr, c[0], c[1], c[2], 0.9);
        poa_plot_marker(cr, lx, ly - 4, s);
        poa_plot_text(cr, lx + 10, ly, 11, POA_PLOT_LEFT, 0, text);
    }
}

/* ---- the files ---- */

int poa_plot_available(void) { return 1; }

int poa_plot_family(const char *prefix, const char *metric, const poa_plot_series *series,
                    int series_count, char **written, poa_error *e) {
    if (series_count < 1 || series_count > 2 || series[0].count < 1)
        return poa_fail(e, "plot: %d series (1 or 2, the first not empty)", series_count);
    int gflops = 1;
    for (int s = 0; s < series_count; s++)
        for (int i = 0; i < series[s].count; i++) gflops &= series[s].points[i].gflops > 0;
    char title[160], path[4096];
    poa_plot_figure f = { title, metric, series, series_count, 0 };
    size_t size = 0;
    FILE *list = written ? open_memstream(written, &size) : NULL;
    snprintf(title, sizeof title, "%s, width x depth", metric);
    double w, h;
    heatmap_size(&series[0], &w, &h);
    snprintf(path, sizeof path, "%s_heatmap", prefix);
    int rc = poa_plot_write(path, w, h, draw_heatmap, &f, list, e);
    snprintf(title, sizeof title, "%s against parameters", metric);
    snprintf(path, sizeof path, "%s_params", prefix);
    if (rc == 0) rc = poa_plot_write(path, 680, 460, draw_scatter, &f, list, e);
    f.x_gflops = 1;
    snprintf(title, sizeof title, "%s against GFLOPs", metric);
    snprintf(path, sizeof path, "%s_gflops", prefix);
    if (rc == 0 && gflops) rc = poa_plot_write(path, 680, 460, draw_scatter, &f, list, e);
    if (list) fclose(list);
    return rc;
}

#else /* built without cairo (the --static-deps device build) */

int poa_plot_available(void) { return 0; }

int poa_plot_family(const char *prefix, const char *metric, const poa_plot_series *series,
                    int series_count, char **written, poa_error *e) {
    (void)metric, (void)series, (void)series_count;
    if (written) *written = NULL;
    return poa_fail(e, "%s: this poa was built without cairo (--static-deps): no plots", prefix);
}

#endif
