/* test_program.c: the executor of runtime/program.c over the ViT's forward program.
   - An inference pass (the program's own arena, laid out by liveness) gives the same bits as a
     training pass (values bound to the backward's layout), with a mask, drop-path scales and
     a resampled position table, for members of several widths and depths; its arena is smaller.
   - A re-targeted pass (another member, batch or crop) rebuilds its program and still agrees.
   - A model without LayerScale and biases (the ones vector, NULL biases) gives the bits of the
     same model with LayerScale 1 and biases 0 (its inference pass against the other's training
     pass: the checks above).
   - The program reader refuses an unknown kernel, a wrong argument list and a value of an
     unknown kind, naming them. */
#include <lauxlib.h>
#include <string.h>

#include "check.h"
#include "vit_test_util.h"

/* The training pass of (m, params) against the inference pass of (mi, params_i), member width x depth,
   batch images of size px with a mask and drop-path scales; what: how the two differ. */
static void same_bits(const char *what, const poa_vit *m, const real *params, const poa_vit *mi, const real *params_i,
                      int width, int depth, long batch, int size, uint64_t seed) {
    poa_error e = { { 0 } };
    const long grid = size / m->config.patch_size, patches = grid * grid;
    const long n_images = batch * m->config.in_channels * size * size;
    real *images = malloc(sizeof(real) * (size_t)n_images);
    real *drop = malloc(sizeof(real) * (size_t)(2 * depth * batch));
    unsigned char *mask = calloc((size_t)(batch * patches), 1);
    test_fill_normal(images, n_images, 0, 1, seed, 1);
    for (long i = 0; i < 2 * depth * batch; i++) drop[i] = i % 3 == 0 ? 0 : (real)1.25;
    for (long i = 0; i < batch * patches; i += 3) mask[i] = 1;
    poa_vit_pass train, infer;
    char label[240];
    snprintf(label, sizeof label, "%smember %dx%d batch %ld at %d px: inference pass = training pass, bit for bit",
             what, width, depth, batch, size);
    if (poa_vit_pass_init(&train, m, width, depth, batch, size, POA_VIT_PASS_TRAINING, &e) ||
        poa_vit_pass_init(&infer, mi, width, depth, batch, size, POA_VIT_PASS_INFERENCE, &e)) {
        CHECK(label, 0, "%s", e.message);
        return;
    }
    poa_vit_forward(&train, params, images, mask, drop);
    poa_vit_forward(&infer, params_i, images, mask, drop);
    const size_t bytes = sizeof(real) * (size_t)(train.rows * width);
    CHECK(label, memcmp(poa_vit_output(&train), poa_vit_output(&infer), bytes) == 0, "outputs differ");
    snprintf(label, sizeof label, "%smember %dx%d at %d px: the liveness arena is smaller (%ld < %ld elements)", what,
             width, depth, size, infer.arena_count, train.arena_count);
    CHECK(label, infer.arena_count < train.arena_count, "it is not");
    /* re-targeted to another member and back: the programs are rebuilt */
    real *first = malloc(bytes);
    memcpy(first, poa_vit_output(&infer), bytes);
    int rc = poa_vit_pass_prepare(&infer, mi, mi->config.max_width, mi->config.max_depth, 1, mi->config.image_size, &e);
    if (rc == 0) poa_vit_forward(&infer, params_i, images, NULL, NULL);
    if (rc == 0) rc = poa_vit_pass_prepare(&infer, mi, width, depth, batch, size, &e);
    if (rc == 0) poa_vit_forward(&infer, params_i, images, mask, drop);
    snprintf(label, sizeof label, "%smember %dx%d: after the intact net at batch 1, the same bits again", what, width,
             depth);
    CHECK(label, rc == 0 && memcmp(first, poa_vit_output(&infer), bytes) == 0, "%s", rc ? e.message : "differ");
    free(first), free(images), free(drop), free(mask);
    poa_vit_pass_free(&train);
    poa_vit_pass_free(&infer);
}

/* Builds the 32x2 program, applies `edit` (a Lua chunk over the table `p`), reads it back. */
static void refused(const poa_vit *m, const char *name, const char *edit, const char *want) {
    poa_error e = { { 0 } };
    lua_State *L = poa_lua_open(&e);
    poa_program p;
    int rc = L ? poa_vit_push_program(L, &m->config, 32, 2, 32, POA_VIT_INFERENCE, 0, &e) : -1;
    if (rc == 0) {
        lua_setglobal(L, "p");
        rc = luaL_dostring(L, edit) != LUA_OK;
        lua_getglobal(L, "p");
    }
    int read = rc == 0 ? poa_program_from_lua(L, -1, &p, &e) : 0;
    CHECK(name, rc == 0 && read == -1 && strstr(e.message, want), "rc %d, read %d, message '%s'", rc, read, e.message);
    if (L) lua_close(L);
}

static int set_and_copy(const poa_vit *with, real *with_params, const poa_vit *without, real *without_params) {
    for (int i = 0; i < with->tensor_count; i++) {
        const poa_vit_tensor *t = &with->tensors[i];
        size_t n = strlen(t->name);
        int gamma = n > 6 && strcmp(t->name + n - 6, ".gamma") == 0;
        int bias = n > 11 && strcmp(t->name + n - 11, "linear.bias") == 0;
        for (long j = 0; (gamma || bias) && j < t->count; j++) with_params[t->offset + j] = gamma ? 1 : 0;
    }
    for (int i = 0; i < without->tensor_count; i++) {
        const poa_vit_tensor *t = &without->tensors[i], *u = poa_vit_find_tensor(with, t->name);
        if (!u || u->count != t->count) return -1;
        memcpy(without_params + t->offset, with_params + u->offset, sizeof(real) * (size_t)t->count);
    }
    return 0;
}

static void without_layerscale_and_biases(const poa_vit_config *config) {
    poa_vit_config a = *config, b = *config;
    a.layerscale = 0, a.qkv_bias = a.proj_bias = a.ffn_bias = 0;
    b.layerscale = 1, b.qkv_bias = b.proj_bias = b.ffn_bias = 1;
    poa_vit ma, mb;
    poa_error e = { { 0 } };
    const char *what = "no LayerScale and no biases (inference) = LayerScale 1 and biases 0 (training): ";
    if (poa_vit_init(&ma, &a, &e) || poa_vit_init(&mb, &b, &e)) {
        CHECK(what, 0, "%s", e.message);
        return;
    }
    real *pa = malloc(sizeof(real) * (size_t)ma.parameter_count), *pb = malloc(sizeof(real) * (size_t)mb.parameter_count);
    test_random_parameters(&mb, pb, 21);
    if (set_and_copy(&mb, pb, &ma, pa) || ma.parameter_count >= mb.parameter_count)
        CHECK(what, 0, "the tensors differ, or there are no fewer (%ld, %ld)", ma.parameter_count, mb.parameter_count);
    else
        same_bits(what, &mb, pb, &ma, pa, 64, 3, 2, 32, 22);
    free(pa), free(pb);
    poa_vit_free(&ma);
    poa_vit_free(&mb);
}

int main(void) {
    poa_recipe recipe;
    poa_vit m;
    test_load_model("tests/recipes/tiny_vit.lua", &recipe, &m);
    real *params = malloc(sizeof(real) * (size_t)m.parameter_count);
    test_random_parameters(&m, params, 5);
    same_bits("", &m, params, &m, params, 96, 4, 2, 32, 11);
    same_bits("", &m, params, &m, params, 32, 2, 3, 16, 12);
    same_bits("", &m, params, &m, params, 64, 3, 5, 16, 13);
    same_bits("", &m, params, &m, params, 64, 3, 1, 48, 14);
    without_layerscale_and_biases(&m.config);
    refused(&m, "the reader refuses an unknown kernel", "p.steps[1].kernel = 'nope'", "unknown kernel nope (step 1)");
    refused(&m, "the reader refuses a kernel with an argument missing", "table.remove(p.steps[1].args)",
            "kernel patchify takes 6 arguments, the step gives 5");
    refused(&m, "the reader refuses a scalar given as a buffer",
            "p.steps[1].args[3] = { buffer = { value = 1, offset = { b = 0, c = 0 } } }",
            "kernel patchify argument 3 must be a scalar");
    refused(&m, "the reader refuses a value of an unknown kind", "p.values[1].kind = 'ghost'", "unknown kind ghost");
    free(params);
    poa_vit_free(&m);
    CHECK_EXIT();
}
