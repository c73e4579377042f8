/* files.c: small file-system helpers shared by the commands. */
#include "files.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

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
