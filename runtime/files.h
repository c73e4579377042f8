/* files.h: small file-system helpers shared by the commands. */
#ifndef POA_FILES_H
#define POA_FILES_H

#include "error.h"

/* mkdir -p: creates the folder and any missing parents (existing ones are fine). */
int poa_make_folders(const char *path, poa_error *e);

/* The whole file as a NUL-terminated string (malloc'd), or NULL if it cannot be read. */
char *poa_read_text(const char *path);

#endif
