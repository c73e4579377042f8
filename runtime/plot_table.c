/* plot_table.c: reads the evaluation tables that poa knn and poa linear write (knn.csv,
   linear.csv) back into plot points, by their header's column names. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot.h"

enum { C_MEMBER, C_WIDTH, C_DEPTH, C_PARAMS, C_GFLOPS, C_TOP1, C_K, C_FEATURES, COLUMNS };
static const char *const column_names[COLUMNS] = { "member", "width", "depth", "params", "gflops", "top1", "k",
                                                   "features" };
/* The optional columns: gflops (older tables), k (linear.csv), features (poa knn's baselines:
   trained, init or pixels; older tables are all trained). */
static int optional(int c) { return c == C_GFLOPS || c == C_K || c == C_FEATURES; }

/* Splits a CSV line (no quoting: poa's tables have none) in place; returns the field count. */
static int split(char *line, char **fields, int max) {
    int n = 0;
    line[strcspn(line, "\r\n")] = 0;
    for (char *p = line; n < max;) {
        fields[n++] = p;
        char *comma = strchr(p, ',');
        if (!comma) break;
        *comma = 0;
        p = comma + 1;
    }
    return n;
}

static int parse_row(char **fields, int n, const int *at, poa_plot_point *p, long *k,
                     const char **features) {
    for (int c = 0; c < COLUMNS; c++)
        if (at[c] >= n) return -1;
    char *end;
    *features = at[C_FEATURES] >= 0 ? fields[at[C_FEATURES]] : "trained";
    snprintf(p->name, sizeof p->name, "%s", fields[at[C_MEMBER]]);
    p->width = (int)strtol(fields[at[C_WIDTH]], &end, 10);
    if (*end) return -1;
    p->depth = (int)strtol(fields[at[C_DEPTH]], &end, 10);
    if (*end) return -1;
    p->params = strtod(fields[at[C_PARAMS]], &end);
    if (*end) return -1;
    p->value = strtod(fields[at[C_TOP1]], &end);
    if (*end) return -1;
    p->gflops = at[C_GFLOPS] >= 0 ? strtod(fields[at[C_GFLOPS]], &end) : 0;
    if (at[C_GFLOPS] >= 0 && *end) return -1;
    *k = at[C_K] >= 0 ? strtol(fields[at[C_K]], &end, 10) : 0;
    return at[C_K] >= 0 && *end ? -1 : 0;
}

int poa_plot_read_table(const char *path, poa_plot_point **points, int *count, char kind[16],
                        char metric[64], double *pixels, poa_error *e) {
    if (pixels) *pixels = 0;
    FILE *f = fopen(path, "r");
    if (!f) return poa_fail(e, "%s: cannot open (%s)", path, strerror(errno));
    char line[4096], *fields[64];
    int at[COLUMNS], n = fgets(line, sizeof line, f) ? split(line, fields, 64) : 0;
    for (int c = 0; c < COLUMNS; c++) {
        at[c] = -1;
        for (int i = 0; i < n; i++)
            if (strcmp(fields[i], column_names[c]) == 0) at[c] = i;
        if (at[c] < 0 && !optional(c)) {
            fclose(f);
            return poa_fail(e, "%s: no '%s' column (not a poa knn or poa linear table)", path, column_names[c]);
        }
    }
    snprintf(kind, 16, "%s", at[C_K] >= 0 ? "knn" : "linear");
    snprintf(metric, 64, "%s", at[C_K] >= 0 ? "k-NN top-1 (%), k = 20" : "linear probe top-1 (%)");
    int capacity = 64, rc = 0, row = 1;
    poa_plot_point *p = malloc(sizeof *p * (size_t)capacity);
    *count = 0;
    while (p && rc == 0 && fgets(line, sizeof line, f)) {
        row++;
        if (line[0] == '\n' || line[0] == 0) continue;
        poa_plot_point point;
        long k;
        const char *features;
        int fields_n = split(line, fields, 64);
        if (parse_row(fields, fields_n, at, &point, &k, &features)) {
            rc = poa_fail(e, "%s: line %d is not a row of the table", path, row);
            break;
        }
        if (at[C_K] >= 0 && k != 20) continue; /* the k-NN headline number */
        if (strcmp(features, "pixels") == 0 && pixels) *pixels = point.value;
        if (strcmp(features, "trained") != 0) continue; /* a baseline, not a member */
        if (*count == capacity) {
            poa_plot_point *grown = realloc(p, sizeof *p * (size_t)(capacity *= 2));
            if (!grown) break;
            p = grown;
        }
        p[(*count)++] = point;
    }
    fclose(f);
    if (rc == 0 && (!p || *count == 0))
        rc = poa_fail(e, "%s: no rows%s", path, at[C_K] >= 0 ? " with k = 20" : "");
    if (rc) {
        free(p);
        return -1;
    }
    *points = p;
    return 0;
}
