/* knn_heatmap.h: the k-NN heatmap of a family (poa knn's knn_heatmap.png). */
#ifndef POA_KNN_HEATMAP_H
#define POA_KNN_HEATMAP_H

#include "error.h"

/* One member: its shape and, if evaluated, its top-1 in percent. */
typedef struct poa_knn_cell {
    int width, depth, evaluated;
    double top1;
} poa_knn_cell;

/* Writes path (PNG): the distinct widths of cells (in their order, the last on top) as rows,
   the depths as columns, each evaluated cell coloured (viridis over the evaluated range)
   and labelled with its top-1, the others grey; a colour scale; "PIXELS x" under it when
   pixels >= 0 (the raw-pixel baseline's top-1 in percent). */
int poa_knn_heatmap_write(const char *path, const poa_knn_cell *cells, int count, double pixels,
                          poa_error *e);

#endif
