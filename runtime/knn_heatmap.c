/* knn_heatmap.c: the k-NN heatmap of a family as a PNG (knn_heatmap.h): a cell per
   member, width by depth like the paper's Figure 1, coloured and labelled by top-1; a
   3x5 pixel font draws the labels. */
#include "knn_heatmap.h"

#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#include "png_write.h"

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
    { 'W', { 5, 5, 5, 7, 5 } }, { 'S', { 7, 4, 7, 1, 7 } },
    { 'X', { 5, 5, 2, 5, 5 } },
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

enum { CELL_W = 48, CELL_H = 28, LABEL = 2 };

int poa_knn_heatmap_write(const char *path, const poa_knn_cell *m, int count, double pixels,
                          poa_error *e) {
    /* the family's distinct widths (rows, largest on top) and depths (columns) */
    int widths[256], depths[256], nw = 0, nd = 0;
    double lo = 1e300, hi = -1e300;
    for (int i = 0; i < count; i++) {
        int fw = 0, fd = 0;
        for (int j = 0; j < nw; j++) fw |= widths[j] == m[i].width;
        for (int j = 0; j < nd; j++) fd |= depths[j] == m[i].depth;
        if (!fw && nw < 256) widths[nw++] = m[i].width;
        if (!fd && nd < 256) depths[nd++] = m[i].depth;
        if (m[i].evaluated) {
            double v = m[i].top1;
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
            const poa_knn_cell *cell = NULL;
            for (int i = 0; i < count; i++)
                if (m[i].width == w && m[i].depth == depths[col]) cell = &m[i];
            unsigned char colour[3];
            if (cell && cell->evaluated) colour_of((cell->top1 - lo) / (hi - lo), colour);
            else memcpy(colour, grey, 3);
            fill_rect(&c, x, y, CELL_W - 1, CELL_H - 1, colour);
            if (cell && cell->evaluated) {
                double luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2];
                snprintf(text, sizeof text, "%.1f", cell->top1);
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
    if (pixels >= 0) { /* the raw-pixel baseline, under the legend */
        snprintf(text, sizeof text, "PIXELS %.1f", pixels);
        draw_text(&c, legend_x, top + strip_h + 6 + char_h + 6, 1, text, black);
    }
    int rc = poa_png_write_rgb(path, c.rgb, c.width, c.height, e);
    free(c.rgb);
    return rc;
}
