/* plot_draw.h: the drawing pieces every poa figure shares (plot.c, plot_curves.c): text in
   DejaVu Sans, the viridis scale, axes with ticks, markers, and writing one drawing as SVG
   and PNG. Only built with cairo (POA_HAVE_CAIRO). */
#ifndef POA_PLOT_DRAW_H
#define POA_PLOT_DRAW_H

#if POA_HAVE_CAIRO
#include <cairo.h>
#include <stdio.h>

#include "error.h"
#include "plot.h"

/* What a figure's drawing function reads. */
typedef struct poa_plot_figure {
    const char *title, *metric;
    const poa_plot_series *series;
    int series_count;
    int x_gflops; /* scatter: x is GFLOPs instead of parameters */
} poa_plot_figure;

typedef void (*poa_plot_draw_fn)(cairo_t *cr, const void *context, double width, double height);

/* Draws the figure on path.svg and path.png (width x height points; the PNG at 2x for
   print); appends both paths to list (may be NULL). Errors name the file. */
int poa_plot_write(const char *path, double width, double height, poa_plot_draw_fn draw,
                   const void *context, FILE *list, poa_error *e);

enum { POA_PLOT_LEFT, POA_PLOT_CENTER, POA_PLOT_RIGHT };
void poa_plot_background(cairo_t *cr, double width, double height);
/* Black text with its baseline at y, aligned at x. */
void poa_plot_text(cairo_t *cr, double x, double y, double size, int align, int bold, const char *text);
/* The same in the current source colour. */
void poa_plot_text_ink(cairo_t *cr, double x, double y, double size, int align, int bold,
                       const char *text);
/* Black text turned 90 degrees (reading upwards), centred on (x, y). */
void poa_plot_text_rotated(cairo_t *cr, double x, double y, double size, const char *text);
/* Viridis at t in [0, 1] (clamped), as cairo's 0..1 channels. */
void poa_plot_viridis(double t, double rgb[3]);
/* A marker of style 0 (disc) or 1 (square) in the current source. */
void poa_plot_marker(cairo_t *cr, double x, double y, int style);

/* A plot area in device units and its data range; log_x: x on a log10 scale. */
typedef struct poa_plot_axes {
    double left, top, right, bottom;
    int log_x;
    double x_min, x_max, y_min, y_max;
    int has_data;
} poa_plot_axes;
/* Widens the range to hold (x, y) (x > 0 on a log scale; others are ignored). */
void poa_plot_axes_include(poa_plot_axes *a, double x, double y, int first);
/* Pads the range to round ticks and draws the frame, grid, ticks and axis labels. */
void poa_plot_axes_draw(cairo_t *cr, poa_plot_axes *a, const char *x_label, const char *y_label);
double poa_plot_x(const poa_plot_axes *a, double x);
double poa_plot_y(const poa_plot_axes *a, double y);
#endif

#endif
