/* data_folder.c: ImageFolder-style and list-file datasets. */
#include "data_folder.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

typedef struct string_list {
    char **items;
    int count, capacity;
} string_list;

static int list_push(string_list *l, const char *s) {
    if (l->count == l->capacity) {
        int c = l->capacity ? 2 * l->capacity : 64;
        char **p = realloc(l->items, (size_t)c * sizeof *p);
        if (!p) return -1;
        l->items = p;
        l->capacity = c;
    }
    l->items[l->count] = strdup(s);
    return l->items[l->count++] ? 0 : -1;
}

static void list_free(string_list *l) {
    for (int i = 0; i < l->count; i++) free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int poa_dataset_has_image_extension(const char *name) {
    static const char *extensions[] = { ".jpg", ".jpeg", ".png", ".ppm", ".bmp",
                                        ".pgm", ".tif", ".tiff", ".webp" };
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    for (size_t i = 0; i < sizeof extensions / sizeof *extensions; i++)
        if (strcasecmp(dot, extensions[i]) == 0) return 1;
    return 0;
}

static int is_directory(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Entries of a folder (without . and ..), sorted; directories or files only. */
static int list_folder(const char *path, int want_directories, string_list *out, poa_error *e) {
    DIR *dir = opendir(path);
    if (!dir) return poa_fail(e, "%s: cannot open folder: %s", path, strerror(errno));
    struct dirent *entry;
    char full[4096];
    while ((entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        snprintf(full, sizeof full, "%s/%s", path, entry->d_name);
        if (is_directory(full) != want_directories) continue;
        if (list_push(out, entry->d_name) != 0) {
            closedir(dir);
            return poa_fail(e, "%s: out of memory", path);
        }
    }
    closedir(dir);
    qsort(out->items, (size_t)out->count, sizeof *out->items, compare_strings);
    return 0;
}

/* Files of folder `path` (sorted), then its sub-folders in sorted order, recursively
   (the order of sorted(os.walk(...)) for a tree without names that sort between a
   folder and its own children differently). */
static int walk(const char *path, string_list *files, poa_error *e) {
    string_list names = { 0 }, dirs = { 0 };
    char full[4096];
    int rc = list_folder(path, 0, &names, e);
    if (rc == 0) rc = list_folder(path, 1, &dirs, e);
    for (int i = 0; rc == 0 && i < names.count; i++) {
        if (!poa_dataset_has_image_extension(names.items[i])) continue;
        snprintf(full, sizeof full, "%s/%s", path, names.items[i]);
        if (list_push(files, full) != 0) rc = poa_fail(e, "%s: out of memory", path);
    }
    for (int i = 0; rc == 0 && i < dirs.count; i++) {
        snprintf(full, sizeof full, "%s/%s", path, dirs.items[i]);
        rc = walk(full, files, e);
    }
    list_free(&names);
    list_free(&dirs);
    return rc;
}

static int append(poa_dataset *d, const char *path, int label, int *capacity) {
    if (d->count == *capacity) {
        int c = *capacity ? 2 * *capacity : 1024;
        char **p = realloc(d->paths, (size_t)c * sizeof *p);
        if (!p) return -1;
        d->paths = p;
        int *l = realloc(d->labels, (size_t)c * sizeof *l);
        if (!l) return -1;
        d->labels = l;
        *capacity = c;
    }
    d->paths[d->count] = strdup(path);
    d->labels[d->count] = label;
    return d->paths[d->count++] ? 0 : -1;
}

int poa_dataset_open_folder(poa_dataset *d, const char *root, poa_error *e) {
    memset(d, 0, sizeof *d);
    string_list classes = { 0 };
    if (list_folder(root, 1, &classes, e) != 0) return -1;
    if (classes.count == 0) {
        list_free(&classes);
        return poa_fail(e, "%s: no class folders (expected root/<class>/<image>)", root);
    }
    int capacity = 0, rc = 0;
    char full[4096];
    for (int c = 0; rc == 0 && c < classes.count; c++) {
        string_list files = { 0 };
        snprintf(full, sizeof full, "%s/%s", root, classes.items[c]);
        rc = walk(full, &files, e);
        for (int i = 0; rc == 0 && i < files.count; i++)
            if (append(d, files.items[i], c, &capacity) != 0) rc = poa_fail(e, "%s: out of memory", root);
        list_free(&files);
    }
    d->class_count = classes.count;
    d->class_names = classes.items; /* owned by the dataset now */
    if (rc == 0 && d->count == 0)
        rc = poa_fail(e, "%s: no image files in its %d class folders", root, classes.count);
    if (rc != 0) poa_dataset_free(d);
    return rc;
}

int poa_dataset_open_list(poa_dataset *d, const char *list_path, poa_error *e) {
    memset(d, 0, sizeof *d);
    FILE *f = fopen(list_path, "r");
    if (!f) return poa_fail(e, "%s: cannot open: %s", list_path, strerror(errno));
    char base[4096], line[4096], full[8192];
    snprintf(base, sizeof base, "%s", list_path);
    char *slash = strrchr(base, '/');
    if (slash) slash[1] = 0; else base[0] = 0;
    int capacity = 0, rc = 0, line_number = 0, max_label = -1;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        line_number++;
        char *end = line + strlen(line);
        while (end > line && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ')) *--end = 0;
        if (line[0] == 0 || line[0] == '#') continue;
        char *space = strrchr(line, ' ');
        char *after = NULL;
        long label = space ? strtol(space + 1, &after, 10) : -1;
        if (!space || after == space + 1 || *after != 0 || label < 0 || label > 1000000) {
            rc = poa_fail(e, "%s:%d: expected \"path label\" with a label >= 0", list_path, line_number);
            break;
        }
        *space = 0;
        snprintf(full, sizeof full, "%s%s", line[0] == '/' ? "" : base, line);
        if (append(d, full, (int)label, &capacity) != 0) rc = poa_fail(e, "%s: out of memory", list_path);
        if (label > max_label) max_label = (int)label;
    }
    fclose(f);
    if (rc == 0 && d->count == 0) rc = poa_fail(e, "%s: no entries", list_path);
    if (rc == 0) {
        d->class_count = max_label + 1;
        d->class_names = calloc((size_t)d->class_count, sizeof *d->class_names);
        for (int c = 0; d->class_names && c < d->class_count; c++) d->class_names[c] = strdup("");
    }
    if (rc != 0) poa_dataset_free(d);
    return rc;
}

int poa_dataset_open(poa_dataset *d, const char *path, poa_error *e) {
    return is_directory(path) ? poa_dataset_open_folder(d, path, e)
                              : poa_dataset_open_list(d, path, e);
}

void poa_dataset_free(poa_dataset *d) {
    for (int i = 0; i < d->count; i++) free(d->paths[i]);
    for (int c = 0; d->class_names && c < d->class_count; c++) free(d->class_names[c]);
    free(d->paths);
    free(d->labels);
    free(d->class_names);
    memset(d, 0, sizeof *d);
}
