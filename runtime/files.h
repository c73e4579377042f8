/* files.h: small file-system helpers shared by the commands. */
#ifndef POA_FILES_H
#define POA_FILES_H

#include "error.h"

/* mkdir -p: creates the folder and any missing parents (existing ones are fine). */
int poa_make_folders(const char *path, poa_error *e);

/* The whole file as a NUL-terminated string (malloc'd), or NULL if it cannot be read. */
char *poa_read_text(const char *path);

/* Runs a shell command with its stdout and stderr into the file `log`; its exit status (-1 when
   the shell could not run it or the command line is too long). */
int poa_run_logged(const char *command, const char *log);

/* poa's cache folder for `sub` ("nvrtc", "kernels"): $POA_CACHE/sub, else
   $XDG_CACHE_HOME/poa/sub, else ~/.cache/poa/sub (not created here). */
int poa_cache_dir(const char *sub, char *dir, size_t size, poa_error *e);

#endif
