/* command_vit.c: `poa list` and `poa forward`. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "commands.h"
#include "export.h"
#include "recipe.h"
#include "safetensors.h"
#include "vit.h"

int poa_command_list(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: poa list <recipe.lua>\n");
        return POA_EXIT_USAGE;
    }
    poa_error e = { { 0 } };
    lua_State *L = poa_lua_open(&e);
    char *text = L ? poa_lua_call_string(L, "gen.space", "list_text", argv[1], &e) : NULL;
    if (!text) {
        fprintf(stderr, "poa list: %s\n", e.message);
        if (L) lua_close(L);
        return POA_EXIT_FAILED;
    }
    fputs(text, stdout);
    free(text);
    lua_close(L);
    return 0;
}

typedef struct forward_options {
    const char *recipe, *params, *input, *net, *out;
    const char *images_name, *masks_name; /* tensors of the input file */
    int threads;
} forward_options;

static int parse_forward(int argc, char **argv, forward_options *o, poa_error *e) {
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = strcmp(a, "--params") == 0 ? &o->params
                          : strcmp(a, "--input") == 0  ? &o->input
                          : strcmp(a, "--net") == 0    ? &o->net
                          : strcmp(a, "--out") == 0    ? &o->out
                          : strcmp(a, "--images") == 0 ? &o->images_name
                          : strcmp(a, "--masks") == 0  ? &o->masks_name
                                                       : NULL;
        if (slot || strcmp(a, "--threads") == 0) {
            if (i + 1 >= argc) return poa_fail(e, "%s needs a value", a);
            if (slot) *slot = argv[++i];
            else o->threads = atoi(argv[++i]);
        } else if (a[0] == '-') {
            return poa_fail(e, "unknown option %s", a);
        } else if (!o->recipe) {
            o->recipe = a;
        } else {
            return poa_fail(e, "unexpected argument %s", a);
        }
    }
    if (!o->recipe || !o->params || !o->input || !o->net || !o->out)
        return poa_fail(e, "usage: poa forward <recipe.lua> --params P.safetensors --input "
                           "X.safetensors --net WxD --out Y.safetensors [--images NAME] "
                           "[--masks NAME] [--threads N]");
    if (!o->images_name) o->images_name = "images";
    if (!o->masks_name) o->masks_name = "masks";
    return 0;
}

/* The images (B x C x S x S) and the optional mask (B x patches) of an input file. */
static int read_input(const forward_options *o, const poa_vit_config *c, real **images,
                      long *batch, int *size, unsigned char **mask, poa_error *e) {
    const char *path = o->input;
    poa_safetensors f;
    if (poa_safetensors_open(&f, path, e)) return -1;
    const poa_tensor_info *t = poa_safetensors_find(&f, o->images_name);
    if (!t && f.count == 1) t = &f.tensors[0];
    int rc = 0;
    if (!t) {
        rc = poa_fail(e, "%s: no tensor '%s'", path, o->images_name);
    } else if (t->ndim != 4 || t->shape[1] != c->in_channels || t->shape[2] != t->shape[3] ||
               t->shape[2] % c->patch_size) {
        rc = poa_fail(e, "%s: tensor '%s' must be (batch, %d, S, S) with S a multiple of %d",
                      path, t->name, c->in_channels, c->patch_size);
    } else {
        *batch = (long)t->shape[0];
        *size = (int)t->shape[2];
        long long n = poa_tensor_numel(t);
        *images = malloc(sizeof(real) * (size_t)n);
        rc = *images ? poa_safetensors_read_real(&f, t->name, *images, n, e)
                     : poa_fail(e, "%s: out of memory", path);
    }
    const poa_tensor_info *m = rc == 0 ? poa_safetensors_find(&f, o->masks_name) : NULL;
    *mask = NULL;
    if (m) {
        long patches = (long)(*size / c->patch_size) * (*size / c->patch_size);
        if (poa_tensor_numel(m) != *batch * patches ||
            poa_safetensors_dtype_bits(m->dtype) != 8)
            rc = poa_fail(e, "%s: tensor '%s' must be U8/BOOL (batch, %ld)", path, m->name, patches);
        else if ((*mask = malloc((size_t)(*batch * patches))))
            memcpy(*mask, f.data + m->offset, (size_t)(*batch * patches));
    }
    poa_safetensors_close(&f);
    return rc;
}

static int run_forward(const forward_options *o, poa_error *e) {
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    poa_recipe recipe;
    int width, depth;
    int rc = poa_recipe_load(L, o->recipe, &recipe, e);
    if (rc == 0) rc = poa_recipe_member(L, &recipe, o->net, &width, &depth, e);
    lua_close(L);
    if (rc) return -1;
    /* The intact network's parameters, or a member exported by `poa export` */
    poa_vit model;
    real *params = NULL;
    int has_mask_token = 1;
    if (poa_export_open_parameters(&recipe.vit, width, depth, o->params, &model, &params, &has_mask_token, e))
        return -1;
    real *images = NULL;
    unsigned char *mask = NULL;
    long batch = 0;
    int size = 0;
    poa_vit_pass pass = { 0 };
    rc = read_input(o, &recipe.vit, &images, &batch, &size, &mask, e);
    if (rc == 0 && mask && !has_mask_token)
        rc = poa_fail(e, "%s has no mask_token (exported under timm's names): no masks in %s", o->params, o->input);
    if (rc == 0) rc = poa_vit_pass_init(&pass, &model, width, depth, batch, size, POA_VIT_PASS_INFERENCE, e);
    if (rc == 0) {
        poa_vit_forward(&pass, params, images, mask, NULL);
        const real *out = poa_vit_output(&pass);
        real *cls = malloc(sizeof(real) * (size_t)(batch * width));
        real *patch = malloc(sizeof(real) * (size_t)(batch * pass.patches * width));
        for (long b = 0; b < batch && cls && patch; b++) {
            memcpy(cls + b * width, out + b * pass.tokens * width, sizeof(real) * (size_t)width);
            memcpy(patch + b * pass.patches * width, out + (b * pass.tokens + 1) * width,
                   sizeof(real) * (size_t)(pass.patches * width));
        }
        poa_safetensors_writer *w = poa_safetensors_writer_new();
        long long cls_shape[2] = { batch, width }, patch_shape[3] = { batch, pass.patches, width };
        char member[64];
        snprintf(member, sizeof member, "%dx%d", width, depth);
        rc = (!cls || !patch || !w) ? poa_fail(e, "out of memory") : 0;
        if (rc == 0) rc = poa_safetensors_writer_add_real(w, "x_norm_clstoken", 2, cls_shape, cls, e);
        if (rc == 0)
            rc = poa_safetensors_writer_add_real(w, "x_norm_patchtokens", 3, patch_shape, patch, e);
        if (rc == 0) rc = poa_safetensors_writer_metadata(w, "member", member, e);
        if (rc == 0) rc = poa_safetensors_writer_metadata(w, "recipe", recipe.name, e);
        if (rc == 0) rc = poa_safetensors_writer_save(w, o->out, e);
        if (w) poa_safetensors_writer_free(w);
        free(cls);
        free(patch);
    }
    poa_vit_pass_free(&pass);
    free(params);
    free(images);
    free(mask);
    poa_vit_free(&model);
    return rc;
}

int poa_command_forward(int argc, char **argv) {
    forward_options o;
    poa_error e = { { 0 } };
    if (parse_forward(argc, argv, &o, &e)) {
        fprintf(stderr, "poa forward: %s\n", e.message);
        return POA_EXIT_USAGE;
    }
    if (o.threads) poa_set_threads(o.threads);
    if (run_forward(&o, &e)) {
        fprintf(stderr, "poa forward: %s\n", e.message);
        return POA_EXIT_FAILED;
    }
    return 0;
}
