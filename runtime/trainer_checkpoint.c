/* trainer_checkpoint.c: a training checkpoint is one safetensors file:
     student.backbone.<name>, student.dino_head.<name>, teacher.backbone.<name>,
     teacher.dino_head.<name>       parameters under their state-dict names (F32);
     optimizer.exp_avg.backbone, optimizer.exp_avg_sq.backbone, optimizer.exp_avg.heads,
     optimizer.exp_avg_sq.heads     the AdamW moments, flat (F32, or F64 in the fp64 build);
   metadata: format = poa-checkpoint-1, recipe (path), recipe_name, overrides (the
   command line's section.field=value, one a line), step, draws, seed and
   the parameter counts. The step and draw counters are the whole sampler and RNG state:
   every random choice is a function of (seed, rank, step, ...). Written atomically
   (poa_safetensors_writer_save: temporary file, fsync, rename). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "trainer.h"

#define CHECKPOINT_FORMAT "poa-checkpoint-1"

typedef struct section {
    const char *prefix;
    const poa_vit_tensor *tensors;
    int count;
    long total;
} section;

static void sections_of(const poa_trainer *t, section s[4]) {
    section backbone = { "", t->model.tensors, t->model.tensor_count, t->model.parameter_count };
    section heads = { "", t->heads.tensors, t->heads.tensor_count, t->heads.parameter_count };
    s[0] = backbone, s[0].prefix = "student.backbone.";
    s[1] = heads, s[1].prefix = "student.dino_head.";
    s[2] = backbone, s[2].prefix = "teacher.backbone.";
    s[3] = heads, s[3].prefix = "teacher.dino_head.";
}

static real *const *buffers_of(const poa_trainer *t, real *out[8]) {
    real *b[8] = { t->student, t->student_heads, t->teacher, t->teacher_heads,
                   t->adam_m, t->adam_v, t->adam_m_heads, t->adam_v_heads };
    memcpy(out, b, sizeof b);
    return out;
}

static const char *const moment_names[4] = { "optimizer.exp_avg.backbone", "optimizer.exp_avg_sq.backbone",
                                             "optimizer.exp_avg.heads", "optimizer.exp_avg_sq.heads" };

int poa_trainer_save(const poa_trainer *t, const char *path, poa_error *e) {
    section s[4];
    real *buffers[8];
    sections_of(t, s);
    buffers_of(t, buffers);
    poa_safetensors_writer *w = poa_safetensors_writer_new();
    if (!w) return poa_fail(e, "%s: out of memory", path);
    char (*names)[POA_VIT_NAME_SIZE + 32] =
        malloc(sizeof *names * (size_t)(2 * (t->model.tensor_count + t->heads.tensor_count)));
    int rc = names ? 0 : poa_fail(e, "%s: out of memory", path), n = 0;
    for (int i = 0; i < 4 && rc == 0; i++)
        for (int j = 0; j < s[i].count && rc == 0; j++, n++) {
            snprintf(names[n], sizeof names[n], "%s%s", s[i].prefix, s[i].tensors[j].name);
            rc = poa_safetensors_writer_add_real(w, names[n], s[i].tensors[j].ndim,
                                                 s[i].tensors[j].shape,
                                                 buffers[i] + s[i].tensors[j].offset, e);
        }
    long long sizes[4] = { t->model.parameter_count, t->model.parameter_count,
                           t->heads.parameter_count, t->heads.parameter_count };
    for (int i = 0; i < 4 && rc == 0; i++)
        rc = poa_safetensors_writer_add(w, moment_names[i], REAL_SAFETENSORS_DTYPE, 1, &sizes[i],
                                        buffers[4 + i], e);
    char number[4][32];
    snprintf(number[0], 32, "%ld", t->step);
    snprintf(number[1], 32, "%ld", t->draws);
    snprintf(number[2], 32, "%llu", t->config.seed);
    snprintf(number[3], 32, "%ld+%ld", t->model.parameter_count, t->heads.parameter_count);
    const char *keys[] = { "format", "recipe", "recipe_name", "overrides", "step", "draws", "seed",
                           "parameters" };
    const char *values[] = { CHECKPOINT_FORMAT, t->config.recipe.path, t->config.recipe.name,
                             t->config.recipe.overrides, number[0], number[1], number[2], number[3] };
    for (int i = 0; i < 8 && rc == 0; i++) rc = poa_safetensors_writer_metadata(w, keys[i], values[i], e);
    if (rc == 0) rc = poa_safetensors_writer_save(w, path, e);
    poa_safetensors_writer_free(w);
    free(names);
    return rc;
}

static int read_section(const poa_safetensors *f, const section *s, real *dst, poa_error *e) {
    for (int j = 0; j < s->count; j++) {
        char name[POA_VIT_NAME_SIZE + 32];
        snprintf(name, sizeof name, "%s%s", s->prefix, s->tensors[j].name);
        const poa_tensor_info *info = poa_safetensors_find(f, name);
        if (!info) return poa_fail(e, "%s: not a checkpoint of this recipe: no tensor '%s'", f->path, name);
        if (poa_safetensors_read_real(f, name, dst + s->tensors[j].offset, s->tensors[j].count, e))
            return -1;
    }
    return 0;
}

int poa_checkpoint_check(const poa_safetensors *f, long backbone_count, long heads_count, poa_error *e) {
    const char *format = poa_safetensors_metadata(f, "format");
    const char *parameters = poa_safetensors_metadata(f, "parameters");
    char expected[64];
    snprintf(expected, sizeof expected, "%ld+%ld", backbone_count, heads_count);
    if (!format || strcmp(format, CHECKPOINT_FORMAT))
        return poa_fail(e, "%s: not a poa checkpoint (metadata format is '%s', expected '%s')", f->path,
                        format ? format : "absent", CHECKPOINT_FORMAT);
    if (backbone_count >= 0 && (!parameters || strcmp(parameters, expected)))
        return poa_fail(e, "%s: written for another network (%s parameters, this recipe has %s)", f->path,
                        parameters ? parameters : "?", expected);
    return 0;
}

int poa_checkpoint_recipe(const char *path, char *recipe, size_t recipe_size, char *overrides,
                          size_t overrides_size, poa_error *e) {
    poa_safetensors f;
    if (poa_safetensors_open(&f, path, e)) return -1;
    const char *meta = poa_safetensors_metadata(&f, "recipe");
    const char *meta_overrides = poa_safetensors_metadata(&f, "overrides");
    if (meta) snprintf(recipe, recipe_size, "%s", meta);
    snprintf(overrides, overrides_size, "%s", meta_overrides ? meta_overrides : "");
    poa_safetensors_close(&f);
    if (!meta) return poa_fail(e, "%s: no \"recipe\" in its metadata; pass --recipe", path);
    return 0;
}

int poa_trainer_load(poa_trainer *t, const char *path, poa_error *e) {
    poa_safetensors f;
    if (poa_safetensors_open(&f, path, e)) return -1;
    int rc = poa_checkpoint_check(&f, t->model.parameter_count, t->heads.parameter_count, e);
    section s[4];
    real *buffers[8];
    sections_of(t, s);
    buffers_of(t, buffers);
    for (int i = 0; i < 4 && rc == 0; i++) rc = read_section(&f, &s[i], buffers[i], e);
    long long sizes[4] = { t->model.parameter_count, t->model.parameter_count,
                           t->heads.parameter_count, t->heads.parameter_count };
    for (int i = 0; i < 4 && rc == 0; i++)
        rc = poa_safetensors_read_real(&f, moment_names[i], buffers[4 + i], sizes[i], e);
    if (rc == 0) {
        t->step = atol(poa_safetensors_metadata(&f, "step") ? poa_safetensors_metadata(&f, "step") : "0");
        t->draws = atol(poa_safetensors_metadata(&f, "draws") ? poa_safetensors_metadata(&f, "draws") : "0");
    }
    poa_safetensors_close(&f);
    return rc;
}
