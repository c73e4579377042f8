/* files.h: small file-system helpers shared by the commands. */
#ifndef POA_FILES_H
#define POA_FILES_H

#include <stddef.h>

#include "error.h"

/* mkdir -p: creates the folder and any missing parents (existing ones are fine). */
int poa_make_folders(const char *path, poa_error *e);

/* A staging folder beside `path` (its parent made if missing): `path` without trailing
   slashes + ".partial-XXXXXX" (mkdtemp), written into *stage (size bytes). Whatever a command
   writes goes there first; poa_stage_commit moves it to `path`, poa_stage_discard removes it,
   so a failure half-way leaves `path` as it was. */
int poa_stage_open(const char *path, char *stage, size_t size, poa_error *e);
/* Moves the files of `stage` (a flat folder) to `path`: one rename of the folder when `path`
   does not exist; otherwise one rename per file into it (an existing file of the same name is
   replaced, other files of `path` are kept). Then removes `stage`. */
int poa_stage_commit(const char *stage, const char *path, poa_error *e);
/* Removes `stage` and the files in it. */
void poa_stage_discard(const char *stage);

/* The whole file as a NUL-terminated string (malloc'd), or NULL if it cannot be read. */
char *poa_read_text(const char *path);

/* Runs a shell command with its stdout and stderr into the file `log`; its exit status (-1 when
   the shell could not run it or the command line is too long). */
int poa_run_logged(const char *command, const char *log);

/* poa's cache folder for `sub` ("nvrtc", "kernels"): $POA_CACHE/sub, else
   $XDG_CACHE_HOME/poa/sub, else ~/.cache/poa/sub (not created here). */
int poa_cache_dir(const char *sub, char *dir, size_t size, poa_error *e);

#endif
