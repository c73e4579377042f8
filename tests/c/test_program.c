/* test_program.c: the executor of runtime/program.c over the ViT's forward program.
   - An inference pass (the program's own arena, laid out by liveness) gives the same bits as a
     training pass (values bound to the backward's layout), with a mask, drop-path scales and
     a resampled position table, for members of several widths and depths; its arena is smaller.
   - A re-targeted pass (another member, batch or crop) rebuilds its program and still agrees.
   - The program reader refuses an unknown kernel, a wrong argument list and a value of an
     unknown kind, naming them. */
#include <lauxlib.h>
#include <string.h>

#include "check.h"
#include "vit_test_util.h"

static void same_bits(const poa_vit *m, const real *params, int width, int depth, long batch, int size,
                      uint64_t seed) {
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
    char label[160];
    snprintf(label, sizeof label, "member %dx%d batch %ld at %d px: inference pass = training pass, bit for bit",
             width, depth, batch, size);
    if (poa_vit_pass_init(&train, m, width, depth, batch, size, &e) ||
        poa_vit_pass_init_inference(&infer, m, width, depth, batch, size, &e)) {
        CHECK(label, 0, "%s", e.message);
        return;
    }
    poa_vit_forward(&train, params, images, mask, drop);
    poa_vit_forward(&infer, params, images, mask, drop);
    const size_t bytes = sizeof(real) * (size_t)(train.rows * width);
    CHECK(label, memcmp(poa_vit_output(&train), poa_vit_output(&infer), bytes) == 0, "outputs differ");
    snprintf(label, sizeof label, "member %dx%d at %d px: the liveness arena is smaller (%ld < %ld elements)",
             width, depth, size, infer.arena_count, train.arena_count);
    CHECK(label, infer.arena_count < train.arena_count, "it is not");
    /* re-targeted to another member and back: the programs are rebuilt */
    real *first = malloc(bytes);
    memcpy(first, poa_vit_output(&infer), bytes);
    int rc = poa_vit_pass_prepare(&infer, m, m->config.max_width, m->config.max_depth, 1, m->config.image_size, &e);
    if (rc == 0) poa_vit_forward(&infer, params, images, NULL, NULL);
    if (rc == 0) rc = poa_vit_pass_prepare(&infer, m, width, depth, batch, size, &e);
    if (rc == 0) poa_vit_forward(&infer, params, images, mask, drop);
    snprintf(label, sizeof label, "member %dx%d: after the intact net at batch 1, the same bits again", width, depth);
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
    int rc = L ? poa_vit_push_program(L, &m->config, 32, 2, 32, &e) : -1;
    if (rc == 0) {
        lua_setglobal(L, "p");
        rc = luaL_dostring(L, edit) != LUA_OK;
        lua_getglobal(L, "p");
    }
    int read = rc == 0 ? poa_program_from_lua(L, -1, &p, &e) : 0;
    CHECK(name, rc == 0 && read == -1 && strstr(e.message, want), "rc %d, read %d, message '%s'", rc, read, e.message);
    if (L) lua_close(L);
}

int main(void) {
    poa_recipe recipe;
    poa_vit m;
    test_load_model("tests/recipes/tiny_vit.lua", &recipe, &m);
    real *params = malloc(sizeof(real) * (size_t)m.parameter_count);
    test_random_parameters(&m, params, 5);
    same_bits(&m, params, 96, 4, 2, 32, 11);
    same_bits(&m, params, 32, 2, 3, 16, 12);
    same_bits(&m, params, 64, 3, 5, 16, 13);
    same_bits(&m, params, 64, 3, 1, 48, 14);
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
