/* files.c: small file-system helpers shared by the commands. */
#include "files.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

int poa_make_folders(const char *path, poa_error *e) {
    char partial[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof partial) return poa_fail(e, "'%s': not a usable folder path", path);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != 0) continue;
        memcpy(partial, path, i);
        partial[i] = 0;
        if (mkdir(partial, 0755) != 0 && errno != EEXIST)
            return poa_fail(e, "%s: cannot create folder: %s", partial, strerror(errno));
    }
    return 0;
}

char *poa_read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = n >= 0 ? malloc((size_t)n + 1) : NULL;
    size_t got = text ? fread(text, 1, (size_t)n, f) : 0;
    fclose(f);
    if (text) text[got] = 0;
    return text;
}

int poa_run_logged(const char *command, const char *log) {
    char line[8192];
    if (snprintf(line, sizeof line, "%s > '%s' 2>&1", command, log) >= (int)sizeof line) return -1;
    int rc = system(line);
    return rc == -1 || !WIFEXITED(rc) ? -1 : WEXITSTATUS(rc);
}

int poa_cache_dir(const char *sub, char *dir, size_t size, poa_error *e) {
    const char *root = getenv("POA_CACHE"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (root && root[0]) n = snprintf(dir, size, "%s/%s", root, sub);
    else if (xdg && xdg[0]) n = snprintf(dir, size, "%s/poa/%s", xdg, sub);
    else if (home && home[0]) n = snprintf(dir, size, "%s/.cache/poa/%s", home, sub);
    else return poa_fail(e, "no cache directory: set POA_CACHE (or HOME)");
    if (n < 0 || (size_t)n >= size) return poa_fail(e, "cache directory path too long");
    return 0;
}
