/* plot.h: the figures of an evaluation, drawn with cairo (real fonts through fontconfig,
   SVG and PNG from one drawing): the family as a width x depth heatmap, and the accuracy of
   every member against its parameters and against its GFLOPs (the paper's Figure 1), the
   named members labelled and the Pareto front drawn, one or two runs overlaid; and a
   training run's curves (loss terms, lr, k-NN points) over steps. */
#ifndef POA_PLOT_H
#define POA_PLOT_H

#include "error.h"

/* One evaluated member. */
typedef struct poa_plot_point {
    char name[32];      /* ViT-S, or WxD */
    int width, depth;
    double params;      /* count */
    double gflops;      /* <= 0: unknown */
    double value;       /* the accuracy, % */
} poa_plot_point;

typedef struct poa_plot_series {
    const char *label;  /* legend text ("POA", "alone") */
    const poa_plot_point *points;
    int count;
    double pixels;      /* the raw-pixel baseline (%, poa knn's), <= 0: none: a dashed
                           reference line in the scatters, a note under the heatmap's scale */
} poa_plot_series;

/* 1 when this build draws plots (0 in the --static-deps device build, which has no cairo). */
int poa_plot_available(void);

/* Writes prefix_heatmap, prefix_params and (when every point knows its GFLOPs)
   prefix_gflops, each .svg and .png; metric names the value ("k-NN top-1 (%), k = 20").
   The heatmap shows series[0]; the scatters overlay up to 2 series. written (may be NULL)
   gets the paths, newline-separated (malloc'd). */
int poa_plot_family(const char *prefix, const char *metric, const poa_plot_series *series,
                    int series_count, char **written, poa_error *e);

/* Reads an evaluation table (poa knn's knn.csv: the k = 20 rows; poa linear's linear.csv):
   *points malloc'd (the members as trained: a knn.csv's "init" and "pixels" rows of its
   features column are not members), *kind gets "knn" or "linear", metric a label for the
   value, *pixels (may be NULL) the pixels row's value at k = 20, or 0 when it has none. */
int poa_plot_read_table(const char *path, poa_plot_point **points, int *count, char kind[16],
                        char metric[64], double *pixels, poa_error *e);

/* A training run's curves from dir/metrics.jsonl (poa train's step records and the k-NN
   points poa knn appends): the loss terms, the lr and k-NN top-1 against steps, written as
   out_prefix.svg and .png; *steps and *points (may be NULL) get how many records it drew. */
int poa_plot_training(const char *dir, const char *out_prefix, char **written, long *steps,
                      long *points, poa_error *e);

#endif
