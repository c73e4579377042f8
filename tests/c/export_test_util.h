/* export_test_util.h: what the export tests share (test_export.c, test_export_c.c): running a
   poa command in-process, a checkpoint with random teacher, student and heads, random input
   images, and the relative error of a tensor of two files. */
#ifndef POA_EXPORT_TEST_UTIL_H
#define POA_EXPORT_TEST_UTIL_H

#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "files.h"
#include "safetensors.h"
#include "trainer.h"
#include "vit_test_util.h"

/* A poa command (poa_command_*) with the NULL-terminated arguments. */
static inline int test_run(int (*command)(int, char **), const char *const *args) {
    char *argv[32];
    int argc = 0;
    for (; args[argc]; argc++) argv[argc] = (char *)args[argc];
    argv[argc] = NULL;
    return command(argc, argv);
}

/* A checkpoint of `recipe` (step 7) whose teacher, student and heads are random and differ,
   written to `checkpoint` in `dir`; with `student`, the student alone as a plain state dict
   too. */
static inline int test_write_checkpoint(const char *recipe, const char *dir, const char *checkpoint,
                                        const char *student) {
    poa_error e = { { 0 } };
    lua_State *L = poa_lua_open(&e);
    poa_train_config config;
    poa_trainer t;
    char output[512];
    snprintf(output, sizeof output, "train.output=%s", dir);
    const char *overrides[] = { output };
    int rc = poa_train_config_load(L, recipe, overrides, 1, &config, &e) || poa_trainer_init(&t, &config, &e);
    lua_close(L);
    if (rc) {
        printf("FAIL checkpoint of %s: %s\n", recipe, e.message);
        return -1;
    }
    test_random_parameters(&t.model, t.teacher, 11);
    test_random_parameters(&t.model, t.student, 12);
    test_fill_normal(t.teacher_heads, t.heads.parameter_count, 0, 0.2, 13, 1);
    test_fill_normal(t.student_heads, t.heads.parameter_count, 0, 0.2, 14, 1);
    t.step = 7;
    rc = poa_make_folders(dir, &e) || poa_trainer_save(&t, checkpoint, &e);
    if (rc == 0 && student) rc = poa_vit_save_parameters(&t.model, t.student, student, &e);
    if (rc) printf("FAIL checkpoint of %s: %s\n", recipe, e.message);
    poa_trainer_free(&t);
    return rc;
}

/* images (2, 3, size, size) and, with masks, a mask (2, patches) of every third patch. */
static inline int test_write_images(const char *path, int size, int patch, int masks) {
    poa_error e = { { 0 } };
    const long patches = (long)(size / patch) * (size / patch);
    long long shape[4] = { 2, 3, size, size }, mask_shape[2] = { 2, patches };
    real *images = malloc(sizeof(real) * (size_t)(2 * 3 * size * size));
    unsigned char *mask = malloc((size_t)(2 * patches));
    test_fill_normal(images, 2L * 3 * size * size, 0, 1, 21, (uint64_t)size);
    for (long i = 0; i < 2 * patches; i++) mask[i] = i % 3 == 1;
    poa_safetensors_writer *w = poa_safetensors_writer_new();
    int rc = poa_safetensors_writer_add_real(w, "images", 4, shape, images, &e);
    if (rc == 0 && masks) rc = poa_safetensors_writer_add(w, "masks", "U8", 2, mask_shape, mask, &e);
    if (rc == 0) rc = poa_safetensors_writer_save(w, path, &e);
    if (rc) printf("FAIL input: %s\n", e.message);
    poa_safetensors_writer_free(w);
    free(images);
    free(mask);
    return rc;
}

/* max |a - b| / max |b| over tensor `name` of two files; -1 when they cannot be compared. */
static inline double test_relative_error(const char *path_a, const char *path_b, const char *name) {
    poa_safetensors a, b;
    poa_error e = { { 0 } };
    if (poa_safetensors_open(&a, path_a, &e)) return -1;
    if (poa_safetensors_open(&b, path_b, &e)) {
        poa_safetensors_close(&a);
        return -1;
    }
    const poa_tensor_info *ta = poa_safetensors_find(&a, name), *tb = poa_safetensors_find(&b, name);
    double error = -1;
    long long n = ta && tb ? poa_tensor_numel(ta) : 0;
    if (n > 0 && n == poa_tensor_numel(tb)) {
        real *x = malloc(sizeof(real) * (size_t)n), *y = malloc(sizeof(real) * (size_t)n);
        if (!poa_safetensors_read_real(&a, name, x, n, &e) && !poa_safetensors_read_real(&b, name, y, n, &e)) {
            double diff = 0, scale = 0;
            for (long long i = 0; i < n; i++) {
                diff = fmax(diff, fabs((double)x[i] - (double)y[i]));
                scale = fmax(scale, fabs((double)y[i]));
            }
            error = scale > 0 ? diff / scale : -1;
        }
        free(x);
        free(y);
    }
    poa_safetensors_close(&a);
    poa_safetensors_close(&b);
    return error;
}

#endif
