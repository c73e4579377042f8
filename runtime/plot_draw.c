/* plot_draw.c: the drawing pieces shared by poa's figures (plot_draw.h), on cairo. */
#include "plot_draw.h"

#if POA_HAVE_CAIRO
#include <cairo-svg.h>
#include <math.h>
#include <string.h>

#define FONT "DejaVu Sans"

int poa_plot_write(const char *path, double width, double height, poa_plot_draw_fn draw,
                   const void *context, FILE *list, poa_error *e) {
    char file[4200];
    snprintf(file, sizeof file, "%s.svg", path);
    cairo_surface_t *svg = cairo_svg_surface_create(file, width, height);
    cairo_t *cr = cairo_create(svg);
    draw(cr, context, width, height);
    cairo_destroy(cr);
    cairo_surface_finish(svg);
    cairo_status_t status = cairo_surface_status(svg);
    cairo_surface_destroy(svg);
    if (status != CAIRO_STATUS_SUCCESS)
        return poa_fail(e, "%s: %s", file, cairo_status_to_string(status));
    if (list) fprintf(list, "%s\n", file);
    const double scale = 2; /* print resolution */
    cairo_surface_t *png = cairo_image_surface_create(CAIRO_FORMAT_RGB24, (int)ceil(width * scale),
                                                      (int)ceil(height * scale));
    cr = cairo_create(png);
    cairo_scale(cr, scale, scale);
    draw(cr, context, width, height);
    cairo_destroy(cr);
    snprintf(file, sizeof file, "%s.png", path);
    status = cairo_surface_status(png);
    if (status == CAIRO_STATUS_SUCCESS) status = cairo_surface_write_to_png(png, file);
    cairo_surface_destroy(png);
    if (status != CAIRO_STATUS_SUCCESS)
        return poa_fail(e, "%s: %s", file, cairo_status_to_string(status));
    if (list) fprintf(list, "%s\n", file);
    return 0;
}

void poa_plot_background(cairo_t *cr, double width, double height) {
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_rectangle(cr, 0, 0, width, height);
    cairo_fill(cr);
}

void poa_plot_text_ink(cairo_t *cr, double x, double y, double size, int align, int bold,
                       const char *text) {
    cairo_select_font_face(cr, FONT, CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
    cairo_text_extents_t ext;
    cairo_text_extents(cr, text, &ext);
    double dx = align == POA_PLOT_LEFT ? 0 : align == POA_PLOT_CENTER ? ext.x_advance / 2 : ext.x_advance;
    cairo_move_to(cr, x - dx, y);
    cairo_show_text(cr, text);
}

void poa_plot_text(cairo_t *cr, double x, double y, double size, int align, int bold, const char *text) {
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    poa_plot_text_ink(cr, x, y, size, align, bold, text);
}

void poa_plot_text_rotated(cairo_t *cr, double x, double y, double size, const char *text) {
    cairo_save(cr);
    cairo_translate(cr, x, y);
    cairo_rotate(cr, -M_PI / 2);
    poa_plot_text(cr, 0, 0, size, POA_PLOT_CENTER, 0, text);
    cairo_restore(cr);
}

void poa_plot_viridis(double t, double rgb[3]) {
    static const double stops[5][3] = {
        { 68, 1, 84 }, { 59, 82, 139 }, { 33, 145, 140 }, { 94, 201, 98 }, { 253, 231, 37 },
    };
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    double s = t * 4;
    int i = s >= 4 ? 3 : (int)s;
    double f = s - i;
    for (int c = 0; c < 3; c++) rgb[c] = (stops[i][c] + f * (stops[i + 1][c] - stops[i][c])) / 255;
}

void poa_plot_marker(cairo_t *cr, double x, double y, int style) {
    if (style == 0) cairo_arc(cr, x, y, 4, 0, 2 * M_PI);
    else cairo_rectangle(cr, x - 3.5, y - 3.5, 7, 7);
    cairo_fill(cr);
}

void poa_plot_axes_include(poa_plot_axes *a, double x, double y, int first) {
    if (a->log_x) {
        if (!(x > 0)) return;
        x = log10(x);
    }
    if (first || !a->has_data) {
        a->x_min = a->x_max = x;
        a->y_min = a->y_max = y;
        a->has_data = 1;
        return;
    }
    a->x_min = fmin(a->x_min, x);
    a->x_max = fmax(a->x_max, x);
    a->y_min = fmin(a->y_min, y);
    a->y_max = fmax(a->y_max, y);
}

double poa_plot_x(const poa_plot_axes *a, double x) {
    if (a->log_x) x = x > 0 ? log10(x) : a->x_min;
    return a->left + (x - a->x_min) / (a->x_max - a->x_min) * (a->right - a->left);
}

double poa_plot_y(const poa_plot_axes *a, double y) {
    return a->bottom - (y - a->y_min) / (a->y_max - a->y_min) * (a->bottom - a->top);
}

/* A 1-2-5 step giving about `count` intervals over span. */
static double nice_step(double span, int count) {
    double raw = span / count, p = pow(10, floor(log10(raw)));
    double m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

static void tick_label(double v, char *text, size_t size) {
    double a = fabs(v);
    if (a != 0 && (a < 1e-3 || a >= 1e5)) snprintf(text, size, "%.0e", v);
    else snprintf(text, size, "%g", fabs(v) < 1e-12 ? 0 : v);
}

static void vertical_tick(cairo_t *cr, const poa_plot_axes *a, double x, const char *label) {
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, x, a->top);
    cairo_line_to(cr, x, a->bottom);
    cairo_stroke(cr);
    poa_plot_text(cr, x, a->bottom + 15, 10, POA_PLOT_CENTER, 0, label);
}

void poa_plot_axes_draw(cairo_t *cr, poa_plot_axes *a, const char *x_label, const char *y_label) {
    if (!a->has_data) a->x_min = 0, a->x_max = 1, a->y_min = 0, a->y_max = 1;
    double xs = a->x_max - a->x_min, ys = a->y_max - a->y_min;
    if (xs < 1e-9) xs = a->log_x ? 0.5 : fabs(a->x_max) * 0.2 + 1;
    if (ys < 1e-9) ys = fabs(a->y_max) * 0.2 + 1;
    a->x_min -= 0.06 * xs, a->x_max += 0.06 * xs;
    a->y_min -= 0.08 * ys, a->y_max += 0.12 * ys;
    cairo_set_line_width(cr, 1);
    char text[32];
    double ystep = nice_step(a->y_max - a->y_min, 6);
    for (double v = ceil(a->y_min / ystep) * ystep; v <= a->y_max + 1e-9 * ystep; v += ystep) {
        double y = poa_plot_y(a, v);
        cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
        cairo_move_to(cr, a->left, y);
        cairo_line_to(cr, a->right, y);
        cairo_stroke(cr);
        tick_label(v, text, sizeof text);
        poa_plot_text(cr, a->left - 6, y + 4, 10, POA_PLOT_RIGHT, 0, text);
    }
    if (a->log_x) { /* 1, 2, 5 of every decade in range */
        for (int d = (int)floor(a->x_min) - 1; d <= (int)ceil(a->x_max); d++)
            for (int m = 0; m < 3; m++) {
                double v = (m == 0 ? 1 : m == 1 ? 2 : 5) * pow(10, d), lv = log10(v);
                if (lv < a->x_min || lv > a->x_max) continue;
                tick_label(v, text, sizeof text);
                vertical_tick(cr, a, poa_plot_x(a, v), text);
            }
    } else {
        double xstep = nice_step(a->x_max - a->x_min, 7);
        for (double v = ceil(a->x_min / xstep) * xstep; v <= a->x_max + 1e-9 * xstep; v += xstep) {
            tick_label(v, text, sizeof text);
            vertical_tick(cr, a, poa_plot_x(a, v), text);
        }
    }
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_rectangle(cr, a->left, a->top, a->right - a->left, a->bottom - a->top);
    cairo_stroke(cr);
    poa_plot_text(cr, (a->left + a->right) / 2, a->bottom + 36, 12, POA_PLOT_CENTER, 0, x_label);
    poa_plot_text_rotated(cr, a->left - 48, (a->top + a->bottom) / 2, 12, y_label);
}
#endif
