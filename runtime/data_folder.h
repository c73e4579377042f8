/* data_folder.h: image datasets with torchvision ImageFolder conventions.
   root/<class>/.../<file>: classes are the sub-folders of root in sorted (byte) order and
   a class's index is its position in that list; files are walked recursively, sorted,
   and kept when their extension (case-insensitive) is one of ImageFolder's:
   .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp. A dataset can also come from a list
   file, one "path label" per line (path relative to the list's folder unless absolute). */
#ifndef POA_DATA_FOLDER_H
#define POA_DATA_FOLDER_H

#include "error.h"

typedef struct poa_dataset {
    int count;          /* images */
    char **paths;       /* count full paths */
    int *labels;        /* count class indices */
    int class_count;
    char **class_names; /* class_count names (folder names; "" for list files) */
} poa_dataset;

int poa_dataset_open_folder(poa_dataset *d, const char *root, poa_error *e);
int poa_dataset_open_list(poa_dataset *d, const char *list_path, poa_error *e);
/* A folder or a list file, whichever path is. */
int poa_dataset_open(poa_dataset *d, const char *path, poa_error *e);
void poa_dataset_free(poa_dataset *d);

/* 1 if the file name has one of ImageFolder's extensions. */
int poa_dataset_has_image_extension(const char *name);

#endif
