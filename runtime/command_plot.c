/* command_plot.c: `poa plot`: redraws the figures of an evaluation table (knn.csv or
   linear.csv; a second table of the same kind is overlaid, e.g. POA against the same members
   trained alone), or draws a training run's curves from its metrics.jsonl. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "files.h"
#include "plot.h"

static const char *usage_text =
    "usage: poa plot <knn.csv|linear.csv> [<second.csv>] [--labels A,B] [--out DIR]\n"
    "       poa plot <run dir> [--out DIR]\n"
    "  the width x depth heatmap and accuracy against parameters and GFLOPs (SVG and PNG);\n"
    "  a second table of the same kind is overlaid on the scatters. --out: the first table's folder.\n"
    "  A training run's folder: its loss terms, lr and k-NN points against steps (curves.svg/png).";

typedef struct plot_options {
    const char *tables[2], *labels, *out;
    int table_count;
} plot_options;

static int parse_options(int argc, char **argv, plot_options *o, poa_error *e) {
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--labels") == 0 || strcmp(a, "--out") == 0) {
            if (i + 1 >= argc) return poa_fail(e, "%s needs a value", a);
            *(a[2] == 'l' ? &o->labels : &o->out) = argv[++i];
        } else if (a[0] == '-') {
            return poa_fail(e, "unknown option %s\n%s", a, usage_text);
        } else if (o->table_count < 2) {
            o->tables[o->table_count++] = a;
        } else {
            return poa_fail(e, "unexpected argument %s (at most two tables)\n%s", a, usage_text);
        }
    }
    if (o->table_count == 0) return poa_fail(e, "%s", usage_text);
    return 0;
}

/* The two legend labels: --labels A,B, or the tables' folder names. */
static void labels_of(const plot_options *o, char labels[2][128]) {
    for (int i = 0; i < o->table_count; i++) {
        char folder[1024];
        snprintf(folder, sizeof folder, "%s", o->tables[i]);
        char *slash = strrchr(folder, '/');
        if (slash) *slash = 0;
        else snprintf(folder, sizeof folder, ".");
        slash = strrchr(folder, '/');
        snprintf(labels[i], 128, "%.127s", slash ? slash + 1 : folder);
    }
    if (o->labels) {
        const char *comma = strchr(o->labels, ',');
        int first = comma ? (int)(comma - o->labels) : (int)strlen(o->labels);
        snprintf(labels[0], 128, "%.*s", first, o->labels);
        if (comma) snprintf(labels[1], 128, "%s", comma + 1);
    }
}

/* poa plot <run dir>: the training curves. */
static int plot_run(const plot_options *o, poa_error *e) {
    if (o->table_count != 1 || o->labels)
        return poa_fail(e, "%s is a run folder: plot one run's curves, without --labels", o->tables[0]);
    char prefix[2048], *written = NULL;
    snprintf(prefix, sizeof prefix, "%s/curves", o->out ? o->out : o->tables[0]);
    int rc = o->out ? poa_make_folders(o->out, e) : 0;
    long steps = 0, points = 0;
    if (rc == 0) rc = poa_plot_training(o->tables[0], prefix, &written, &steps, &points, e);
    if (rc == 0) printf("%scurves: %ld steps, %ld k-NN points\n", written ? written : "", steps, points);
    free(written);
    return rc;
}

static int run_plot(const plot_options *o, poa_error *e) {
    struct stat st;
    if (stat(o->tables[0], &st) == 0 && S_ISDIR(st.st_mode)) return plot_run(o, e);
    poa_plot_point *points[2] = { NULL, NULL };
    int counts[2] = { 0, 0 }, rc = 0;
    char kind[2][16], metric[2][64], labels[2][128];
    double pixels[2] = { 0, 0 };
    for (int i = 0; rc == 0 && i < o->table_count; i++)
        rc = poa_plot_read_table(o->tables[i], &points[i], &counts[i], kind[i], metric[i], &pixels[i], e);
    if (rc == 0 && o->table_count == 2 && strcmp(kind[0], kind[1]) != 0)
        rc = poa_fail(e, "%s is a %s table, %s a %s table: overlay tables of one kind", o->tables[0], kind[0],
                      o->tables[1], kind[1]);
    if (rc == 0 && o->labels && o->table_count == 1 && strchr(o->labels, ','))
        rc = poa_fail(e, "--labels '%s': two labels for one table", o->labels);
    labels_of(o, labels);
    char out[1024], prefix[1200];
    if (o->out) snprintf(out, sizeof out, "%s", o->out);
    else {
        snprintf(out, sizeof out, "%s", o->tables[0]);
        char *slash = strrchr(out, '/');
        if (slash) *slash = 0;
        else snprintf(out, sizeof out, ".");
    }
    if (rc == 0) rc = poa_make_folders(out, e);
    snprintf(prefix, sizeof prefix, "%s/%s%s", out, kind[0], o->table_count == 2 ? "_overlay" : "");
    poa_plot_series series[2] = { { labels[0], points[0], counts[0], pixels[0] },
                                  { labels[1], points[1], counts[1], pixels[1] } };
    char *written = NULL;
    if (rc == 0) rc = poa_plot_family(prefix, metric[0], series, o->table_count, &written, e);
    if (rc == 0) printf("%s", written ? written : "");
    free(written);
    free(points[0]);
    free(points[1]);
    return rc;
}

int poa_command_plot(int argc, char **argv) {
    plot_options o;
    poa_error e = { { 0 } };
    if (parse_options(argc, argv, &o, &e)) {
        fprintf(stderr, "poa plot: %s\n", e.message);
        return 2;
    }
    if (run_plot(&o, &e)) {
        fprintf(stderr, "poa plot: %s\n", e.message);
        return 1;
    }
    return 0;
}
