/* files.c: small file-system helpers shared by the commands. */
#include "files.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
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

int poa_stage_open(const char *path, char *stage, size_t size, poa_error *e) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    if (n == 0 || (size_t)snprintf(stage, size, "%.*s.partial-XXXXXX", (int)n, path) >= size)
        return poa_fail(e, "%s: the path is too long", path);
    char *slash = strrchr(stage, '/');
    if (slash && slash != stage) { /* the parent, made if missing */
        *slash = 0;
        int rc = poa_make_folders(stage, e);
        *slash = '/';
        if (rc) return -1;
    }
    if (!mkdtemp(stage)) return poa_fail(e, "%s: cannot make a folder: %s", stage, strerror(errno));
    const mode_t mask = umask(0); /* mkdtemp makes it 0700; --out gets a plain mkdir's mode */
    umask(mask);
    chmod(stage, 0777 & ~mask);
    return 0;
}

/* Calls f(stage/name, name, data) for every file of stage; stops at the first non-zero. */
static int each_staged(const char *stage, int (*f)(const char *file, const char *name, void *data), void *data) {
    DIR *d = opendir(stage);
    if (!d) return -1;
    int rc = 0;
    struct dirent *entry;
    char file[8192];
    while (rc == 0 && (entry = readdir(d))) {
        if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, "..")) continue;
        snprintf(file, sizeof file, "%s/%s", stage, entry->d_name);
        rc = f(file, entry->d_name, data);
    }
    closedir(d);
    return rc;
}

typedef struct stage_move {
    const char *path;
    poa_error *e;
} stage_move;

static int move_staged(const char *file, const char *name, void *data) {
    stage_move *m = data;
    char target[8192];
    snprintf(target, sizeof target, "%s/%s", m->path, name);
    if (rename(file, target) != 0) return poa_fail(m->e, "%s: cannot move %s there: %s", target, file, strerror(errno));
    return 0;
}

static int remove_staged(const char *file, const char *name, void *data) {
    (void)name, (void)data;
    remove(file);
    return 0;
}

int poa_stage_commit(const char *stage, const char *path, poa_error *e) {
    struct stat st;
    if (stat(path, &st) != 0) {
        if (rename(stage, path) == 0) return 0;
        poa_fail(e, "%s: cannot rename %s to it: %s", path, stage, strerror(errno));
        poa_stage_discard(stage);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        poa_stage_discard(stage);
        return poa_fail(e, "%s: not a folder", path);
    }
    stage_move m = { path, e };
    int rc = each_staged(stage, move_staged, &m);
    poa_stage_discard(stage);
    return rc;
}

void poa_stage_discard(const char *stage) {
    each_staged(stage, remove_staged, NULL);
    rmdir(stage);
}
