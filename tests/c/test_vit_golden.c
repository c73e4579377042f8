/* test_vit_golden.c: the CPU backend against PyTorch. For the intact net and
   four elastic members of tests/recipes/tiny_vit.lua, the outputs of a global
   batch (masked, with stochastic depth) and a local batch (bicubic position
   resampling) and the gradient of every parameter must match the fixtures of
   tests/golden/make_vit_fixtures.py within a relative error of 1e-4
   (max |ours - torch| / max |torch| over each tensor). Also runs `poa forward`
   on one case and compares the file it writes. */
#include <string.h>

#include "check.h"
#include "fixture_util.h"
#include "commands.h"
#include "safetensors.h"
#include "vit_test_util.h"



static void check_case(const poa_vit *m, const real *params, const char *name) {
    char path[256], label[256];
    snprintf(path, sizeof path, FIXTURES "vit_%s.safetensors", name);
    poa_safetensors f;
    poa_error e = { { 0 } };
    if (poa_safetensors_open(&f, path, &e)) {
        printf("FAIL %s\n", e.message);
        return;
    }
    int width = atoi(poa_safetensors_metadata(&f, "width"));
    int depth = atoi(poa_safetensors_metadata(&f, "depth"));
    long long n;
    real *images_global = read_tensor(&f, "input.global", &n);
    real *images_local = read_tensor(&f, "input.local", &n);
    real *drop_global = read_tensor(&f, "droppath.global", &n);
    real *drop_local = read_tensor(&f, "droppath.local", &n);
    real *dout_global = read_tensor(&f, "dout.global", &n);
    real *dout_local = read_tensor(&f, "dout.local", &n);
    const poa_tensor_info *mask_info = poa_safetensors_find(&f, "input.mask");
    const unsigned char *mask = f.data + mask_info->offset;

    poa_vit_pass global, local;
    if (poa_vit_pass_init(&global, m, width, depth, 2, 32, POA_VIT_PASS_TRAINING, &e) ||
        poa_vit_pass_init(&local, m, width, depth, 3, 16, POA_VIT_PASS_TRAINING, &e)) {
        printf("FAIL %s: %s\n", name, e.message);
        exit(1);
    }
    real *grads = calloc((size_t)m->parameter_count, sizeof(real));
    const char *batches[2] = { "global", "local" };
    poa_vit_pass *passes[2] = { &global, &local };
    real *images[2] = { images_global, images_local }, *drops[2] = { drop_global, drop_local };
    real *douts[2] = { dout_global, dout_local };
    for (int i = 0; i < 2; i++) {
        poa_vit_forward(passes[i], params, images[i], i == 0 ? mask : NULL, drops[i]);
        char out_name[32];
        snprintf(out_name, sizeof out_name, "out.%s", batches[i]);
        real *want = read_tensor(&f, out_name, &n);
        double err = relative_error(poa_vit_output(passes[i]), want, n);
        snprintf(label, sizeof label, "golden %s %dx%d %s output", name, width, depth, batches[i]);
        CHECK(label, n == passes[i]->rows * width && err <= TOLERANCE, "relative error %.3g", err);
        /* The same program over an inference pass: its own arena, laid out by liveness. */
        poa_vit_pass inference;
        double err_inference = INFINITY;
        if (poa_vit_pass_init(&inference, m, width, depth, passes[i]->batch, (int)passes[i]->image_size,
                              POA_VIT_PASS_INFERENCE, &e) == 0) {
            poa_vit_forward(&inference, params, images[i], i == 0 ? mask : NULL, drops[i]);
            err_inference = relative_error(poa_vit_output(&inference), want, n);
            printf("  %s %s: forward relative error %.3g (training pass, arena %ld), %.3g (inference pass, "
                   "arena %ld)\n", name, batches[i], err, passes[i]->arena_count, err_inference,
                   inference.arena_count);
            poa_vit_pass_free(&inference);
        }
        snprintf(label, sizeof label, "golden %s %dx%d %s output of an inference pass", name, width, depth,
                 batches[i]);
        CHECK(label, err_inference <= TOLERANCE, "relative error %.3g (%s)", err_inference, e.message);
        free(want);
        poa_vit_backward(passes[i], params, grads, douts[i]);
    }
    int bad = 0;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m->tensor_count; i++) {
        char grad_name[96];
        snprintf(grad_name, sizeof grad_name, "grad.%s", m->tensors[i].name);
        real *want = read_tensor(&f, grad_name, &n);
        double err = n == m->tensors[i].count ? relative_error(grads + m->tensors[i].offset, want, n)
                                              : INFINITY;
        if (err > TOLERANCE) {
            bad++;
            printf("  %s %s: relative error %.3g\n", name, grad_name, err);
        }
        if (err > worst) worst = err, worst_name = m->tensors[i].name;
        free(want);
    }
    snprintf(label, sizeof label, "golden %s %dx%d gradients of all %d parameters", name, width,
             depth, m->tensor_count);
    CHECK(label, bad == 0, "%d tensors off; worst %s %.3g", bad, worst_name, worst);
    printf("  %s: worst gradient relative error %.3g (%s)\n", name, worst, worst_name);
    poa_vit_pass_free(&global);
    poa_vit_pass_free(&local);
    free(grads), free(images_global), free(images_local), free(drop_global), free(drop_local);
    free(dout_global), free(dout_local);
    poa_safetensors_close(&f);
}

/* `poa forward` on the 64x3 case (masked, no stochastic depth) writes the CLS
   and patch tokens of out.global. */
static void check_command(void) {
    const char *out_path = "build/tests/golden_forward_64x3.safetensors";
    char *argv[] = { "forward", "tests/recipes/tiny_vit.lua", "--params",
                     FIXTURES "vit_tiny_params.safetensors", "--input",
                     FIXTURES "vit_elastic_64x3.safetensors", "--images", "input.global",
                     "--masks", "input.mask", "--net", "64x3", "--out", (char *)out_path };
    int rc = poa_command_forward(14, argv);
    poa_safetensors want, got;
    poa_error e = { { 0 } };
    if (rc || poa_safetensors_open(&got, out_path, &e) ||
        poa_safetensors_open(&want, FIXTURES "vit_elastic_64x3.safetensors", &e)) {
        CHECK("poa forward 64x3", 0, "exit %d %s", rc, e.message);
        return;
    }
    long long n, nc, np;
    real *out = read_tensor(&want, "out.global", &n);
    real *cls = read_tensor(&got, "x_norm_clstoken", &nc);
    real *patch = read_tensor(&got, "x_norm_patchtokens", &np);
    real *joined = malloc(sizeof(real) * (size_t)n);
    for (int b = 0; b < 2; b++) { /* back to (batch, 17, 64) */
        memcpy(joined + b * 17 * 64, cls + b * 64, sizeof(real) * 64);
        memcpy(joined + b * 17 * 64 + 64, patch + b * 16 * 64, sizeof(real) * 16 * 64);
    }
    double err = relative_error(joined, out, n);
    CHECK("poa forward 64x3 writes the final-LN CLS and patch tokens",
          nc == 2 * 64 && np == 2 * 16 * 64 && err <= TOLERANCE, "relative error %.3g", err);
    free(out), free(cls), free(patch), free(joined);
    poa_safetensors_close(&got);
    poa_safetensors_close(&want);
}

int main(void) {
    poa_recipe recipe;
    poa_vit m;
    poa_error e = { { 0 } };
    test_load_model("tests/recipes/tiny_vit.lua", &recipe, &m);
    real *params = malloc(sizeof(real) * (size_t)m.parameter_count);
    if (poa_vit_load_parameters(&m, params, FIXTURES "vit_tiny_params.safetensors", NULL, &e)) {
        printf("FAIL parameters: %s\n", e.message);
        return 1;
    }
    const char *cases[] = { "intact_96x4", "elastic_32x2", "elastic_64x3", "elastic_96x2",
                            "elastic_32x4" };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&m, params, cases[i]);
    check_command();
    free(params);
    poa_vit_free(&m);
    CHECK_EXIT();
}
