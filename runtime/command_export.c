/* command_export.c: `poa export <checkpoint> --net WxD|name --out DIR`: one member of a
   training checkpoint's teacher (or --student) as a plain network, --what weights
   (runtime/export.h: model.safetensors under timm's or DINOv2's names, config.json for
   timm, heads.safetensors with --heads). Everything is read and sliced before the folder is
   made; a bad checkpoint or member writes nothing. The files (weights and programs) are
   written into a staging folder beside --out (files.h: poa_stage_open) and moved there at the
   end, so a failure half-way (a program that cannot be generated) leaves --out as it was. */
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "export.h"
#include "files.h"
#include "recipe.h"
#include "safetensors.h"
#include "train_config.h"
#include "trainer.h"

typedef struct export_options {
    const char *checkpoint, *net, *recipe, *what, *names, *out, *sizes;
    int heads, student, program; /* program: --what c|cuda|all (the weights and the programs) */
} export_options;

static const char *const usage_text =
    "usage: poa export <checkpoint.safetensors> --net WxD|name --out DIR [--recipe R.lua] [--what weights|c|cuda|all]\n"
    "       [--sizes S,S...] [--names timm|dinov2] [--heads] [--student]";

static int parse_options(int argc, char **argv, export_options *o, poa_error *e) {
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = strcmp(a, "--net") == 0      ? &o->net
                          : strcmp(a, "--recipe") == 0   ? &o->recipe
                          : strcmp(a, "--what") == 0     ? &o->what
                          : strcmp(a, "--names") == 0    ? &o->names
                          : strcmp(a, "--out") == 0      ? &o->out
                          : strcmp(a, "--sizes") == 0    ? &o->sizes
                                                         : NULL;
        if (slot) {
            if (i + 1 >= argc) return poa_fail(e, "%s needs a value\n%s", a, usage_text);
            *slot = argv[++i];
        } else if (strcmp(a, "--heads") == 0) {
            o->heads = 1;
        } else if (strcmp(a, "--student") == 0) {
            o->student = 1;
        } else if (a[0] == '-') {
            return poa_fail(e, "unknown option %s\n%s", a, usage_text);
        } else if (!o->checkpoint) {
            o->checkpoint = a;
        } else {
            return poa_fail(e, "unexpected argument %s\n%s", a, usage_text);
        }
    }
    if (!o->checkpoint || !o->net || !o->out) return poa_fail(e, "%s", usage_text);
    if (!o->what) o->what = "weights";
    if (!o->names) o->names = "timm";
    if (strcmp(o->what, "weights") && strcmp(o->what, "c") && strcmp(o->what, "cuda") && strcmp(o->what, "all"))
        return poa_fail(e, "--what %s: unknown (weights, c, cuda or all)", o->what);
    o->program = strcmp(o->what, "weights") != 0;
    if (o->sizes && !o->program)
        return poa_fail(e, "--sizes %s: only for --what c|cuda|all (the programs' image sizes)", o->sizes);
    poa_export_names names;
    return poa_export_names_parse(o->names, &names, e);
}

/* The recipe (--recipe, or the checkpoint's with the overrides it was trained with), its
   heads and the member, once the file is known to be a poa checkpoint. */
static int load_recipe(const export_options *o, poa_train_config *config, int *width, int *depth,
                       poa_error *e) {
    char recipe[1024], trained_with[2048] = "";
    const char *overrides[64];
    int count = 0;
    poa_safetensors f;
    if (poa_safetensors_open(&f, o->checkpoint, e)) return -1;
    int rc = poa_checkpoint_check(&f, -1, -1, e);
    poa_safetensors_close(&f);
    if (rc) return -1;
    if (o->recipe) {
        snprintf(recipe, sizeof recipe, "%s", o->recipe);
    } else {
        if (poa_checkpoint_recipe(o->checkpoint, recipe, sizeof recipe, trained_with, sizeof trained_with, e))
            return -1;
        count = poa_split_overrides(trained_with, overrides, 64);
    }
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    rc = poa_train_config_load(L, recipe, overrides, count, config, e);
    if (rc == 0) rc = poa_recipe_member(L, &config->recipe, o->net, width, depth, e);
    lua_close(L);
    return rc;
}

/* The intact network's backbone (and heads) of the checkpoint's teacher or student. */
static int read_checkpoint(const export_options *o, const poa_vit *model, real *params, const poa_heads *heads,
                           real *head_params, poa_error *e) {
    poa_safetensors f;
    if (poa_safetensors_open(&f, o->checkpoint, e)) return -1;
    const char *source = o->student ? "student" : "teacher";
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s.backbone.", source);
    int rc = poa_checkpoint_check(&f, model->parameter_count, heads->parameter_count, e);
    if (rc == 0) rc = poa_vit_read_parameters(model, params, &f, prefix, e);
    poa_safetensors_close(&f);
    snprintf(prefix, sizeof prefix, "%s.dino_head.", source);
    if (rc == 0 && head_params) rc = poa_heads_load_parameters(heads, head_params, o->checkpoint, prefix, e);
    return rc;
}

typedef struct export_networks {
    poa_vit intact, member;
    poa_heads intact_heads, member_heads;
    real *params, *member_params, *head_params, *member_head_params;
} export_networks;

static void networks_free(export_networks *n) {
    poa_vit_free(&n->intact);
    poa_vit_free(&n->member);
    poa_heads_free(&n->intact_heads);
    poa_heads_free(&n->member_heads);
    free(n->params);
    free(n->member_params);
    free(n->head_params);
    free(n->member_head_params);
}

static real *allocate(long count, int *rc, poa_error *e) {
    real *p = *rc == 0 ? malloc(sizeof(real) * (size_t)(count > 0 ? count : 1)) : NULL;
    if (*rc == 0 && !p) *rc = poa_fail(e, "out of memory for %ld parameters", count);
    return p;
}

/* Builds the intact and member networks, reads the checkpoint and slices the member. */
static int slice_member(const export_options *o, const poa_train_config *config, int width, int depth,
                        export_networks *n, poa_error *e) {
    poa_vit_config member_config;
    poa_head_config member_heads = config->heads;
    poa_export_member_config(&config->recipe.vit, width, depth, &member_config);
    member_heads.in_dim = width;
    int rc = poa_vit_init(&n->intact, &config->recipe.vit, e);
    if (rc == 0) rc = poa_vit_init(&n->member, &member_config, e);
    if (rc == 0) rc = poa_heads_init(&n->intact_heads, &config->heads, e);
    if (rc == 0) rc = poa_heads_init(&n->member_heads, &member_heads, e);
    if (rc == 0) rc = poa_export_check(&member_config, e);
    n->params = allocate(n->intact.parameter_count, &rc, e);
    n->member_params = allocate(n->member.parameter_count, &rc, e);
    if (o->heads) {
        n->head_params = allocate(n->intact_heads.parameter_count, &rc, e);
        n->member_head_params = allocate(n->member_heads.parameter_count, &rc, e);
    }
    if (rc == 0) rc = read_checkpoint(o, &n->intact, n->params, &n->intact_heads, n->head_params, e);
    if (rc == 0) rc = poa_export_slice_backbone(&n->intact, n->params, &n->member, n->member_params, e);
    if (rc == 0 && o->heads)
        rc = poa_export_slice_heads(&n->intact_heads, n->head_params, &n->member_heads, n->member_head_params, e);
    return rc;
}

static long checkpoint_step(const char *path) {
    poa_safetensors f;
    poa_error ignored;
    if (poa_safetensors_open(&f, path, &ignored)) return -1;
    const char *step = poa_safetensors_metadata(&f, "step");
    long value = step ? atol(step) : -1;
    poa_safetensors_close(&f);
    return value;
}

/* The image sizes of the programs: --sizes (distinct multiples of the patch size), or the
   recipe's global and local crop sizes. */
static int program_sizes(const export_options *o, const poa_train_config *config, int *sizes, int *count,
                         poa_error *e) {
    const int patch = config->recipe.vit.patch_size;
    *count = 0;
    if (!o->sizes) {
        sizes[(*count)++] = config->recipe.global_crop_size;
        if (config->recipe.local_crop_size != config->recipe.global_crop_size)
            sizes[(*count)++] = config->recipe.local_crop_size;
        return 0;
    }
    const char *p = o->sizes;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || v <= 0 || v % patch || v > 8192 || *count >= 16)
            return poa_fail(e, "--sizes %s: up to 16 image sizes, positive multiples of the patch size %d, "
                               "separated by commas", o->sizes, patch);
        for (int i = 0; i < *count; i++)
            if (sizes[i] == v) return poa_fail(e, "--sizes %s: %ld is given twice", o->sizes, v);
        sizes[(*count)++] = (int)v;
        p = *end ? end + 1 : end;
        if (*end && !*p) return poa_fail(e, "--sizes %s: a size is missing after the last comma", o->sizes);
    }
    return 0;
}

static int run_export(const export_options *o, poa_error *e) {
    poa_train_config config;
    memset(&config, 0, sizeof config);
    int width = 0, depth = 0;
    export_networks n;
    memset(&n, 0, sizeof n);
    int rc = load_recipe(o, &config, &width, &depth, e);
    if (rc == 0) rc = slice_member(o, &config, width, depth, &n, e);
    int sizes[16], size_count = 0;
    char written[1024] = "";
    if (rc == 0 && o->program) rc = program_sizes(o, &config, sizes, &size_count, e);
    poa_export_info info = { .recipe_name = config.recipe.name, .recipe_path = config.recipe.path,
                             .overrides = config.recipe.overrides, .checkpoint = o->checkpoint,
                             .source = o->student ? "student" : "teacher", .width = width, .depth = depth,
                             .alpha = (double)config.recipe.vit.max_width / (width ? width : 1) };
    if (rc == 0) {
        poa_vit_pass layout;
        rc = poa_vit_pass_init(&layout, &n.intact, width, depth, 1, config.recipe.vit.image_size, POA_VIT_PASS_LAYOUT,
                               e);
        poa_vit_pass_free(&layout);
        memcpy(info.block_ids, layout.block_ids, sizeof info.block_ids);
        info.step = checkpoint_step(o->checkpoint);
        poa_export_names_parse(o->names, &info.names, e);
    }
    char stage[4200] = "";
    if (rc == 0) rc = poa_stage_open(o->out, stage, sizeof stage, e);
    if (rc == 0)
        rc = poa_export_write(stage, &info, &n.member, n.member_params, o->heads ? &n.member_heads : NULL,
                              n.member_head_params, e);
    if (rc == 0 && o->program)
        rc = poa_export_program(stage, o->what, &info, &n.member, sizes, size_count, written, sizeof written, e);
    if (stage[0]) {
        if (rc == 0) rc = poa_stage_commit(stage, o->out, e);
        else poa_stage_discard(stage);
    }
    if (rc == 0) {
        printf("member %dx%d of the %s of %s (step %ld): blocks", width, depth, info.source, o->checkpoint, info.step);
        for (int j = 0; j < depth; j++) printf("%s%d", j ? "," : " ", info.block_ids[j]);
        printf(" of %d, alpha %.6g baked in, %ld parameters, %s names\n-> %s/model.safetensors, %s/config.json%s\n",
               config.recipe.vit.max_depth, info.alpha, n.member.parameter_count, o->names, o->out, o->out,
               o->heads ? ", heads.safetensors" : "");
        if (o->program) {
            printf("-> the %s program%s for", !strcmp(o->what, "c") ? "C" : !strcmp(o->what, "cuda") ? "CUDA" : "C and CUDA",
                   !strcmp(o->what, "all") ? "s" : "");
            for (int i = 0; i < size_count; i++) printf("%s%d", i ? ", " : " ", sizes[i]);
            printf(" px in %s: %s (build: make -C %s)\n", o->out, written, o->out);
        }
    }
    networks_free(&n);
    poa_train_config_free(&config);
    return rc;
}

int poa_command_export(int argc, char **argv) {
    export_options o;
    poa_error e = { { 0 } };
    if (parse_options(argc, argv, &o, &e)) {
        fprintf(stderr, "poa export: %s\n", e.message);
        return POA_EXIT_USAGE;
    }
    if (run_export(&o, &e)) {
        fprintf(stderr, "poa export: %s\n", e.message);
        return POA_EXIT_FAILED;
    }
    return 0;
}
