/* test_export.c: `poa export` of members of a checkpoint of the tiny_train family (random
   teacher, student and heads, so that every slice and every scale matters), run back through
   `poa forward` on the exported model.safetensors: its CLS and patch tokens equal `poa forward
   --net WxD` of the checkpoint within 1e-5 relative, for the intact (96x4), the smallest
   (32x2) and mid members (64x3, 96x3, 32x4), at the global (32 px) and local (16 px) crop
   size; --student exports the student; --names dinov2 adds the mask token (a masked forward
   agrees too; under timm's names poa forward refuses masks, and an export of another member
   than --net); --heads gives heads whose logits on the member's features equal the elastic
   heads pass; the key list and shapes equal timm's own for 64x3
   (tests/golden/fixtures/export_timm_64x3.txt, from tests/golden/make_export_fixture.py). */
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "commands.h"
#include "export.h"
#include "files.h"
#include "safetensors.h"
#include "trainer.h"
#include "export_test_util.h"
#include "vit_test_util.h"

#define DIR "build/tests/export"
#define CHECKPOINT DIR "/checkpoint.safetensors"
#define RECIPE "tests/recipes/tiny_train.lua"

/* `poa forward` of `params` and of the export in `dir` agree on the member's tokens. */
static void compare_forward(const char *label, const char *params, const char *dir, const char *net,
                            const char *input) {
    char exported[256], reference[256], output[256], name[256];
    snprintf(exported, sizeof exported, "%s/model.safetensors", dir);
    snprintf(reference, sizeof reference, "%s/reference.safetensors", dir);
    snprintf(output, sizeof output, "%s/output.safetensors", dir);
    const char *a[] = { "forward", RECIPE, "--params", params, "--input", input, "--net", net, "--out", reference, NULL };
    const char *b[] = { "forward", RECIPE, "--params", exported, "--input", input, "--net", net, "--out", output, NULL };
    int rc = test_run(poa_command_forward, a) || test_run(poa_command_forward, b);
    double cls = rc ? -1 : test_relative_error(output, reference, "x_norm_clstoken");
    double patch = rc ? -1 : test_relative_error(output, reference, "x_norm_patchtokens");
    snprintf(name, sizeof name, "%s: poa forward of the export = of the checkpoint (CLS, patch tokens)", label);
    CHECK(name, cls >= 0 && cls <= 1e-5 && patch >= 0 && patch <= 1e-5, "relative error CLS %.3g, patches %.3g", cls,
          patch);
    printf("  %s: relative error CLS %.3g, patch tokens %.3g\n", label, cls, patch);
}

static int export_member(const char *net, const char *dir, const char *extra1, const char *extra2) {
    const char *args[] = { "export", CHECKPOINT, "--net", net, "--out", dir, extra1, extra2, NULL };
    return test_run(poa_command_export, args);
}

static void check_members(void) {
    const char *members[] = { "96x4", "32x2", "64x3", "96x3", "32x4" };
    for (int i = 0; i < 5; i++) {
        char dir[128], label[128];
        snprintf(dir, sizeof dir, DIR "/%s", members[i]);
        int rc = export_member(members[i], dir, NULL, NULL);
        CHECK(members[i], rc == 0, "poa export exited %d", rc);
        if (rc) continue;
        snprintf(label, sizeof label, "%s at 32 px", members[i]);
        compare_forward(label, CHECKPOINT, dir, members[i], DIR "/global.safetensors");
        snprintf(label, sizeof label, "%s at 16 px", members[i]);
        compare_forward(label, CHECKPOINT, dir, members[i], DIR "/local.safetensors");
    }
    int rc = export_member("64x3", DIR "/student", "--student", NULL);
    if (rc == 0) compare_forward("--student 64x3", DIR "/student.safetensors", DIR "/student", "64x3", DIR "/global.safetensors");
    else CHECK("--student", 0, "poa export exited %d", rc);
    const char *masked[] = { "forward", RECIPE, "--params", DIR "/64x3/model.safetensors", "--input",
                             DIR "/masked.safetensors", "--net", "64x3", "--out", DIR "/masked_out.safetensors", NULL };
    CHECK("poa forward refuses masks for an export under timm's names (no mask_token)",
          test_run(poa_command_forward, masked) == POA_EXIT_FAILED, "it ran");
    const char *other[] = { "forward", RECIPE, "--params", DIR "/64x3/model.safetensors", "--input",
                            DIR "/global.safetensors", "--net", "96x4", "--out", DIR "/other_out.safetensors", NULL };
    CHECK("poa forward refuses an export of another member than --net", test_run(poa_command_forward, other) == POA_EXIT_FAILED,
          "it ran");
    rc = export_member("64x3", DIR "/dinov2", "--names", "dinov2");
    if (rc == 0) compare_forward("--names dinov2 64x3, masked", CHECKPOINT, DIR "/dinov2", "64x3", DIR "/masked.safetensors");
    else CHECK("--names dinov2", 0, "poa export exited %d", rc);
}

/* The key list and shapes of the 64x3 export, against timm's (one "name d0,d1,..." a line). */
static void check_timm_names(const char *export_path, const char *fixture, const char *extra_key) {
    char *text = poa_read_text(fixture);
    poa_safetensors f;
    poa_error e = { { 0 } };
    if (!text || poa_safetensors_open(&f, export_path, &e)) {
        CHECK("timm key list", 0, "cannot read %s or %s: %s", fixture, export_path, e.message);
        free(text);
        return;
    }
    int lines = 0, matched = 0, extra = 0;
    char first_bad[512] = "";
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        char name[200], dims[64], got[64] = "";
        if (sscanf(line, "%199s %63s", name, dims) != 2) continue;
        const poa_tensor_info *t = poa_safetensors_find(&f, name);
        for (int k = 0; t && k < t->ndim; k++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", k ? "," : "", t->shape[k]);
        if (t && strcmp(got, dims) == 0) matched++;
        else if (!first_bad[0]) snprintf(first_bad, sizeof first_bad, "%s: timm %s, export %s", name, dims, t ? got : "absent");
    }
    const poa_tensor_info *x = extra_key ? poa_safetensors_find(&f, extra_key) : NULL;
    int extra_ok = !extra_key || (x && x->ndim == 2 && x->shape[0] == 1 && x->shape[1] == 64);
    extra = f.count - matched - (x ? 1 : 0);
    char label[256];
    snprintf(label, sizeof label, "%s: the keys and shapes of timm's VisionTransformer%s%s", export_path,
             extra_key ? " plus " : "", extra_key ? extra_key : "");
    CHECK(label, lines > 0 && matched == lines && extra == 0 && extra_ok,
          "%d of %d matched, %d other tensors, %s (1, 64): %s; first: %s", matched, lines, extra,
          extra_key ? extra_key : "-", extra_ok ? "yes" : "no", first_bad);
    poa_safetensors_close(&f);
    free(text);
}

/* The exported heads on the member's features = the elastic heads pass of the checkpoint's. */
static void check_heads(void) {
    poa_error e = { { 0 } };
    lua_State *L = poa_lua_open(&e);
    poa_train_config config;
    int rc = poa_train_config_load(L, RECIPE, NULL, 0, &config, &e);
    lua_close(L);
    const int width = 64;
    const long rows = 5;
    poa_head_config member_config = config.heads;
    member_config.in_dim = width;
    poa_heads intact, member;
    poa_heads_pass a = { 0 }, b = { 0 };
    memset(&intact, 0, sizeof intact), memset(&member, 0, sizeof member);
    rc = rc || export_member("64x3", DIR "/heads", "--heads", NULL) || poa_heads_init(&intact, &config.heads, &e) ||
         poa_heads_init(&member, &member_config, &e);
    real *p = rc ? NULL : malloc(sizeof(real) * (size_t)intact.parameter_count);
    real *q = rc ? NULL : malloc(sizeof(real) * (size_t)member.parameter_count);
    real x[5 * 64];
    test_fill_normal(x, rows * width, 0, 1, 31, 1);
    rc = rc || poa_heads_load_parameters(&intact, p, CHECKPOINT, "teacher.dino_head.", &e) ||
         poa_heads_load_parameters(&member, q, DIR "/heads/heads.safetensors", "", &e) ||
         poa_heads_pass_init(&a, &intact, width, rows, &e) || poa_heads_pass_init(&b, &member, width, rows, &e);
    double diff = rc ? -1 : 0, scale = 0;
    if (rc == 0) {
        poa_heads_forward(&a, p, x);
        poa_heads_forward(&b, q, x);
    }
    for (int h = 0; rc == 0 && h < config.heads.heads; h++) {
        for (long i = 0; i < rows * config.heads.prototypes[h]; i++) {
            diff = fmax(diff, fabs((double)a.logits[h][i] - (double)b.logits[h][i]));
            scale = fmax(scale, fabs((double)a.logits[h][i]));
        }
    }
    CHECK("--heads: the exported heads' logits = the elastic heads pass at width 64",
          rc == 0 && scale > 0 && diff / scale <= 1e-5, "relative error %.3g (%s)", scale > 0 ? diff / scale : -1,
          rc ? e.message : "");
    if (rc == 0) printf("  heads: relative error %.3g\n", diff / scale);
    poa_heads_pass_free(&a), poa_heads_pass_free(&b);
    poa_heads_free(&intact), poa_heads_free(&member);
    free(p), free(q);
    poa_train_config_free(&config);
}

int main(void) {
    if (test_write_checkpoint(RECIPE, DIR, CHECKPOINT, DIR "/student.safetensors") ||
        test_write_images(DIR "/global.safetensors", 32, 8, 0) || test_write_images(DIR "/local.safetensors", 16, 8, 0) ||
        test_write_images(DIR "/masked.safetensors", 32, 8, 1))
        return 1;
    check_members();
    check_timm_names(DIR "/64x3/model.safetensors", "tests/golden/fixtures/export_timm_64x3.txt", NULL);
    check_timm_names(DIR "/dinov2/model.safetensors", "tests/golden/fixtures/export_timm_64x3.txt", "mask_token");
    check_heads();
    CHECK_EXIT();
}
