/* eval_family.c: the set-up every evaluation command shares (eval_family.h). */
#include "eval_family.h"

#include "trainer.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot.h"
#include "safetensors.h"

/* Every member of the recipe's family (gen.space.members), in its order. */
static int family_members(lua_State *L, const poa_recipe *r, poa_eval_member **out, int *count,
                          poa_error *e) {
    static const char *chunk =
        "local r = ...\n"
        "local rows = {}\n"
        "for _, m in ipairs(require('gen.space').members(r)) do\n"
        "  rows[#rows + 1] = string.format('%d %d %d %.17g %s', m.width, m.depth, m.params,\n"
        "                                  m.gflops, m.name or '-')\n"
        "end\n"
        "return table.concat(rows, '\\n')\n";
    if (luaL_loadstring(L, chunk) != LUA_OK) return poa_fail(e, "%s", lua_tostring(L, -1));
    if (poa_recipe_push(L, r, e)) {
        lua_pop(L, 1);
        return -1;
    }
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        poa_fail(e, "%s: %s", r->path, lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    const char *text = lua_tostring(L, -1);
    int lines = 1;
    for (const char *p = text; *p; p++) lines += *p == '\n';
    poa_eval_member *m = calloc((size_t)lines, sizeof *m);
    int n = 0;
    for (const char *p = text; m && p && *p; n++) {
        if (sscanf(p, "%d %d %lld %lf %31s", &m[n].width, &m[n].depth, &m[n].params, &m[n].gflops,
                   m[n].name) != 5)
            break;
        if (strcmp(m[n].name, "-") == 0) snprintf(m[n].name, sizeof m[n].name, "%dx%d", m[n].width, m[n].depth);
        p = strchr(p, '\n');
        if (p) p++;
    }
    lua_pop(L, 1);
    if (!m || n == 0) {
        free(m);
        return poa_fail(e, "%s: the family has no members", r->path);
    }
    *out = m;
    *count = n;
    return 0;
}

/* Marks the members named by --nets ("all" or a comma-separated list). */
static int select_members(lua_State *L, const poa_recipe *r, const char *nets, poa_eval_member *m,
                          int count, poa_error *e) {
    if (strcmp(nets, "all") == 0) {
        for (int i = 0; i < count; i++) m[i].selected = 1;
        return 0;
    }
    char item[128];
    for (const char *p = nets; *p;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof item) return poa_fail(e, "--nets: bad list '%s'", nets);
        memcpy(item, p, len);
        item[len] = 0;
        int width, depth;
        if (poa_recipe_member(L, r, item, &width, &depth, e)) return -1;
        for (int i = 0; i < count; i++)
            if (m[i].width == width && m[i].depth == depth) m[i].selected = 1;
        p += len + (p[len] == ',');
    }
    return 0;
}

/* The recipe: o->recipe, or the one the checkpoint names with the overrides it was trained
   with; o->overrides go over either. */
static int load_recipe(lua_State *L, const poa_eval_options *o, poa_recipe *recipe, poa_error *e) {
    const char *recipe_path = o->recipe;
    char from_checkpoint[1024] = "", trained_with[2048] = "";
    const char *overrides[128];
    int override_count = 0;
    if (!recipe_path) {
        if (poa_checkpoint_recipe(o->checkpoint, from_checkpoint, sizeof from_checkpoint, trained_with,
                                  sizeof trained_with, e))
            return -1;
        recipe_path = from_checkpoint;
        override_count = poa_split_overrides(trained_with, overrides, 64);
    }
    for (int i = 0; i < o->override_count && override_count < 128; i++)
        overrides[override_count++] = o->overrides[i];
    return poa_recipe_load_overrides(L, recipe_path, overrides, override_count, recipe, e);
}

/* The recipe's train.seed: poa train initialises the networks from it. */
static int recipe_seed(lua_State *L, const poa_recipe *r, unsigned long long *seed, poa_error *e) {
    if (luaL_loadstring(L, "local r = ...\nreturn string.format('%.0f', r.train.seed)") != LUA_OK)
        return poa_fail(e, "%s", lua_tostring(L, -1));
    if (poa_recipe_push(L, r, e)) {
        lua_pop(L, 1);
        return -1;
    }
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        poa_fail(e, "%s: train.seed: %s", r->path, lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    *seed = strtoull(lua_tostring(L, -1), NULL, 10);
    lua_pop(L, 1);
    return 0;
}

/* The "step" of a poa training checkpoint's metadata, or -1. */
static long checkpoint_step(const char *path) {
    poa_safetensors file;
    poa_error ignored;
    if (poa_safetensors_open(&file, path, &ignored)) return -1;
    const char *format = poa_safetensors_metadata(&file, "format");
    const char *step = poa_safetensors_metadata(&file, "step");
    long s = format && strncmp(format, "poa-checkpoint", 14) == 0 && step ? atol(step) : -1;
    poa_safetensors_close(&file);
    return s;
}

int poa_eval_family_open(poa_eval_family *f, const poa_eval_options *o, poa_error *e) {
    memset(f, 0, sizeof *f);
    f->step = checkpoint_step(o->checkpoint);
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    int rc = load_recipe(L, o, &f->recipe, e);
    if (rc == 0) rc = family_members(L, &f->recipe, &f->members, &f->count, e);
    if (rc == 0) rc = select_members(L, &f->recipe, o->nets ? o->nets : "all", f->members, f->count, e);
    if (rc == 0) rc = recipe_seed(L, &f->recipe, &f->seed, e);
    lua_close(L);
    if (rc == 0) rc = poa_vit_init(&f->model, &f->recipe.vit, e);
    if (rc) {
        free(f->members);
        f->members = NULL;
        return -1;
    }
    f->params = malloc(sizeof(real) * (size_t)f->model.parameter_count);
    if (!f->params) rc = poa_fail(e, "out of memory for %ld parameters", f->model.parameter_count);
    if (rc == 0) rc = poa_vit_load_parameters(&f->model, f->params, o->checkpoint, &f->prefix, e);
    if (rc) poa_eval_family_free(f);
    return rc;
}

void poa_eval_family_free(poa_eval_family *f) {
    free(f->params);
    free(f->members);
    if (f->model.tensors) poa_vit_free(&f->model);
    memset(f, 0, sizeof *f);
}

static int open_split(poa_dataset *d, const char *data, const char *split, poa_error *e) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", data, split);
    return poa_dataset_open_folder(d, path, e);
}

int poa_eval_open_data(const char *data, poa_dataset *train, poa_dataset *val, poa_error *e) {
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    int rc = open_split(train, data, "train", e);
    if (rc == 0) rc = open_split(val, data, "val", e);
    if (rc == 0 && train->class_count != val->class_count)
        rc = poa_fail(e, "%s: train/ has %d classes, val/ has %d", data, train->class_count,
                      val->class_count);
    for (int c = 0; rc == 0 && c < train->class_count; c++)
        if (strcmp(train->class_names[c], val->class_names[c]) != 0)
            rc = poa_fail(e, "%s: class %d is '%s' in train/ but '%s' in val/", data, c,
                          train->class_names[c], val->class_names[c]);
    if (rc) {
        poa_dataset_free(train);
        poa_dataset_free(val);
    }
    return rc;
}

int poa_eval_plot(const char *out, const char *kind, const char *metric, const poa_eval_member *m,
                  const double *values, int count, double pixels, poa_error *e) {
    if (!poa_plot_available()) {
        printf("plots: none (this poa was built without cairo)\n");
        return 0;
    }
    poa_plot_point *points = calloc((size_t)(count > 0 ? count : 1), sizeof *points);
    if (!points) return poa_fail(e, "out of memory");
    int n = 0;
    for (int i = 0; i < count; i++) {
        if (!m[i].selected) continue;
        snprintf(points[n].name, sizeof points[n].name, "%s", m[i].name);
        points[n].width = m[i].width;
        points[n].depth = m[i].depth;
        points[n].params = (double)m[i].params;
        points[n].gflops = m[i].gflops;
        points[n].value = values[i];
        n++;
    }
    char prefix[4096], *written = NULL;
    snprintf(prefix, sizeof prefix, "%s/%s", out, kind);
    poa_plot_series series = { "this run", points, n, pixels };
    int rc = poa_plot_family(prefix, metric, &series, 1, &written, e);
    if (rc == 0 && written) {
        printf("plots:");
        for (char *p = strtok(written, "\n"); p; p = strtok(NULL, "\n")) printf(" %s", p);
        printf("\n");
    }
    free(written);
    free(points);
    return rc;
}

int poa_eval_argument(const char *word, const char **checkpoint, const char **overrides, int *override_count,
                      const char *usage, poa_error *e) {
    if (strchr(word, '=') && *checkpoint) {
        if (*override_count == 64) return poa_fail(e, "too many overrides");
        overrides[(*override_count)++] = word;
    } else if (!*checkpoint) {
        *checkpoint = word;
    } else {
        return poa_fail(e, "unexpected argument %s\n%s", word, usage);
    }
    return 0;
}
