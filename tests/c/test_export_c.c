/* test_export_c.c: `poa export --what c`, the member's standalone C program, built with the
   system compiler (make, cc) and run on the same images as `poa forward` of the checkpoint:
   CLS and patch tokens agree within 1e-5 relative (fp32) for the intact, the smallest and two
   mid members of recipes/small_vit.lua and recipes/quickstart.lua (random teacher weights,
   so every block, slice and alpha matters), at the recipe's global and local crop sizes (the
   second resamples the position embedding). The program refuses, naming them, weights of
   another member, a truncated weights file, an image size it was not generated for, and an
   unknown option; the built-in GEMM (make BLAS=no) agrees too. Given a folder of JPEGs
   (quickstart's 128x3), the program decodes them and applies poa's evaluation transform
   (image_eval.c, copied in): its CLS and patch tokens equal poa forward's on the same images put
   through poa's own decoder and transform (within 1e-5), and a corrupt JPEG is refused, naming it. --what all's CUDA program
   (cuBLASLt and the kernels of gen/lower_cuda.lua) compiles with nvcc where nvcc is, and is
   compared the same way where a GPU is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "commands.h"
#include "export_test_util.h"
#include "image_eval.h"
#include "jpeg_decode.h"
#include "recipe.h"

#define DIR "build/tests/export_c"

static const struct {
    const char *recipe, *members[4]; /* intact, smallest, two mid members */
} families[] = {
    { "recipes/small_vit.lua", { "256x6", "128x3", "192x4", "192x5" } },
    { "recipes/quickstart.lua", { "192x4", "64x2", "128x3", "64x4" } },
};

/* The first line of a file (for messages). */
static void first_line(const char *path, char *out, size_t size) {
    FILE *f = fopen(path, "r");
    out[0] = 0;
    if (f) {
        if (!fgets(out, (int)size, f)) out[0] = 0;
        fclose(f);
    }
    out[strcspn(out, "\n")] = 0;
}

/* The program in dir on program_input (NULL: input), against `poa forward` of the checkpoint's member on input. */
static void compare_on(const char *recipe, const char *checkpoint, const char *dir, const char *net, const char *input,
                       const char *program_input, const char *label, const char *program) {
    char reference[512], output[512], command[2048], log[512], name[512], why[512];
    snprintf(reference, sizeof reference, "%s/reference_%s", dir, strrchr(input, '/') + 1);
    snprintf(output, sizeof output, "%s/output_%s", dir, strrchr(input, '/') + 1);
    snprintf(log, sizeof log, "%s/run.log", dir);
    snprintf(command, sizeof command, "%s/%s %s/model.safetensors %s %s", dir, program, dir,
             program_input ? program_input : input, output);
    int rc = poa_run_logged(command, log);
    first_line(log, why, sizeof why);
    if (rc && strstr(program, "cuda") && (strstr(why, "CUDA driver") || strstr(why, "no CUDA-capable device"))) {
        printf("SKIP %s: the CUDA program runs only on a GPU (%s)\n", label, why);
        return;
    }
    const char *a[] = { "forward", recipe, "--params", checkpoint, "--input", input, "--net", net, "--out", reference, NULL };
    int forward = rc == 0 ? test_run(poa_command_forward, a) : -1;
    double cls = rc || forward ? -1 : test_relative_error(output, reference, "x_norm_clstoken");
    double patch = rc || forward ? -1 : test_relative_error(output, reference, "x_norm_patchtokens");
    snprintf(name, sizeof name, "%s: the exported %s program's CLS and patch tokens = poa forward's", label,
             strstr(program, "cuda") ? "CUDA" : "C");
    CHECK(name, cls >= 0 && cls <= 1e-5 && patch >= 0 && patch <= 1e-5,
          "program exit %d (%s), poa forward %d, relative error CLS %.3g, patches %.3g", rc, why, forward, cls, patch);
    printf("  %s: relative error CLS %.3g, patch tokens %.3g\n", label, cls, patch);
}

static void compare(const char *recipe, const char *checkpoint, const char *dir, const char *net, const char *input,
                    const char *label, const char *program) {
    compare_on(recipe, checkpoint, dir, net, input, NULL, label, program);
}

/* A folder of JPEGs of several sizes and shapes (and a file the program must skip), and
   `reference` = the same images through poa's decoder and evaluation transform at size px,
   ImageNet-normalised (the recipe's mean / std): the input `poa forward` gets. */
static int write_jpeg_folder(const char *folder, const char *reference, int size) {
    static const int shapes[][2] = { { 40, 30 }, { 50, 64 }, { 32, 32 }, { 97, 45 } };
    enum { COUNT = sizeof shapes / sizeof shapes[0] };
    char path[512];
    poa_error e = { { 0 } };
    poa_jpeg_decoder *codec = poa_jpeg_decoder_create();
    const size_t plane = (size_t)size * size;
    float *images = malloc(sizeof(float) * 3 * plane * COUNT);
    unsigned char *crop = malloc(3 * plane), *file = NULL, *scratch = NULL;
    size_t file_size = 0, file_capacity = 0, scratch_size = 0;
    poa_image image = { 0 };
    int rc = codec && images && crop && !poa_make_folders(folder, &e) ? 0 : poa_fail(&e, "%s: cannot start", folder);
    snprintf(path, sizeof path, "%s/notes.txt", folder);
    FILE *f = rc ? NULL : fopen(path, "w");
    if (f) fputs("not an image: the program skips it\n", f), fclose(f);
    for (int i = 0; rc == 0 && i < COUNT; i++) { /* names out of order: img_3 is written first */
        const int k = COUNT - 1 - i, w = shapes[k][0], h = shapes[k][1];
        unsigned char *rgb = malloc((size_t)w * h * 3), *jpeg = NULL;
        unsigned long jpeg_size = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int c = 0; c < 3; c++)
                    rgb[(y * w + x) * 3 + c] = (unsigned char)((x * (3 + c) + y * (5 - c) + 37 * k + (x * y) % 17) & 255);
        snprintf(path, sizeof path, "%s/img_%d.%s", folder, k, k % 2 ? "JPEG" : "jpg");
        rc = poa_jpeg_encode(codec, rgb, w, h, 90, &jpeg, &jpeg_size, path, &e);
        f = rc ? NULL : fopen(path, "wb");
        if (rc == 0 && (!f || fwrite(jpeg, 1, jpeg_size, f) != jpeg_size)) rc = poa_fail(&e, "%s: cannot write", path);
        if (f) fclose(f);
        if (jpeg) poa_jpeg_free(jpeg);
        free(rgb);
    }
    for (int k = 0; rc == 0 && k < COUNT; k++) { /* poa's own reading, in name order */
        int num, denom;
        snprintf(path, sizeof path, "%s/img_%d.%s", folder, k, k % 2 ? "JPEG" : "jpg");
        rc = poa_read_file(path, &file, &file_size, &file_capacity, &e);
        if (rc == 0) rc = poa_image_decode(codec, file, file_size, 1.0, &image, &num, &denom, path, &e);
        if (rc == 0) rc = poa_eval_transform(image.pixels, image.width, image.height, size, crop, &scratch, &scratch_size, &e);
        if (rc == 0) poa_normalize(crop, size, size, poa_imagenet_mean, poa_imagenet_std, images + 3 * plane * (size_t)k);
    }
    if (rc == 0) {
        long long shape[4] = { COUNT, 3, size, size };
        poa_safetensors_writer *w = poa_safetensors_writer_new();
        rc = w ? 0 : poa_fail(&e, "out of memory");
        if (rc == 0) rc = poa_safetensors_writer_add(w, "images", "F32", 4, shape, images, &e);
        if (rc == 0) rc = poa_safetensors_writer_save(w, reference, &e);
        if (w) poa_safetensors_writer_free(w);
    }
    if (rc) printf("FAIL a folder of JPEGs: %s\n", e.message);
    if (codec) poa_jpeg_decoder_destroy(codec);
    poa_image_free(&image);
    free(images), free(crop), free(file), free(scratch);
    return rc;
}

/* The program on a folder of JPEGs (dir: quickstart's member net, size px) against poa forward
   on poa's own eval transform of them; a corrupt JPEG is refused, naming it. */
static void check_folder(const char *recipe, const char *checkpoint, const char *dir, const char *net, int size) {
    char folder[400], reference[400], label[400], command[2048], log[512], text[512];
    snprintf(folder, sizeof folder, "%s/jpegs", dir);
    snprintf(reference, sizeof reference, "%s/jpegs.safetensors", dir);
    if (write_jpeg_folder(folder, reference, size)) return;
    snprintf(label, sizeof label, "quickstart %s on a folder of 4 JPEGs at %d px (eval transform)", net, size);
    compare_on(recipe, checkpoint, dir, net, reference, folder, label, "poa_member");
    snprintf(command, sizeof command, "mkdir -p %s/bad && head -c 300 %s/img_0.jpg > %s/bad/broken.jpg", dir, folder, dir);
    int rc = system(command);
    snprintf(log, sizeof log, "%s/bad.log", dir);
    snprintf(command, sizeof command, "%s/poa_member %s/model.safetensors %s/bad %s/x.safetensors", dir, dir, dir, dir);
    rc = poa_run_logged(command, log);
    first_line(log, text, sizeof text);
    CHECK("the program refuses a corrupt JPEG of a folder, naming it", rc == 2 && strstr(text, "broken.jpg"),
          "exit %d: %s", rc, text);
}

/* Exports (--what c, or all) and builds member net of the checkpoint into dir; 0 when both worked. */
static int export_build(const char *checkpoint, const char *net, const char *dir, const char *what, const char *make_args) {
    char command[1024], log[512], why[512], name[512];
    const char *args[] = { "export", checkpoint, "--net", net, "--what", what, "--out", dir, NULL };
    int rc = test_run(poa_command_export, args);
    if (rc) {
        snprintf(name, sizeof name, "%s: poa export --what %s", dir, what);
        CHECK(name, 0, "exit %d", rc);
        return -1;
    }
    snprintf(command, sizeof command, "make -C %s %s", dir, make_args);
    snprintf(log, sizeof log, "%s/make.log", dir);
    rc = poa_run_logged(command, log);
    first_line(log, why, sizeof why);
    snprintf(name, sizeof name, "%s: the exported program builds with make (%s)", dir, make_args[0] ? make_args : "cc, defaults");
    CHECK(name, rc == 0, "make exited %d: %s", rc, why);
    return rc;
}

/* The program's own refusals, each naming what is wrong. */
static void check_refusals(const char *dir, const char *other_dir, const char *other_net, const char *input,
                           const char *bad_input) {
    char command[2048], log[512], text[512], want[256];
    snprintf(log, sizeof log, "%s/refused.log", dir);
    snprintf(command, sizeof command, "%s/poa_member %s/model.safetensors %s %s/x.safetensors", dir, other_dir, input, dir);
    int rc = poa_run_logged(command, log);
    first_line(log, text, sizeof text);
    snprintf(want, sizeof want, "the weights of member %s", other_net);
    CHECK("the program refuses the weights of another member, naming it", rc == 2 && strstr(text, want),
          "exit %d: %s", rc, text);
    snprintf(command, sizeof command, "head -c 5000 %s/model.safetensors > %s/truncated.safetensors", dir, dir);
    rc = system(command);
    snprintf(command, sizeof command, "%s/poa_member %s/truncated.safetensors %s %s/x.safetensors", dir, dir, input, dir);
    rc = poa_run_logged(command, log);
    first_line(log, text, sizeof text);
    CHECK("the program refuses a truncated weights file, naming it", rc == 2 && strstr(text, "truncated.safetensors"),
          "exit %d: %s", rc, text);
    snprintf(command, sizeof command, "%s/poa_member %s/model.safetensors %s %s/x.safetensors", dir, dir, bad_input, dir);
    rc = poa_run_logged(command, log);
    first_line(log, text, sizeof text);
    CHECK("the program refuses an image size it was not generated for, naming it", rc == 2 && strstr(text, "48 px"),
          "exit %d: %s", rc, text);
    snprintf(command, sizeof command, "%s/poa_member %s/model.safetensors %s %s/x.safetensors --fast", dir, dir, input, dir);
    rc = poa_run_logged(command, log);
    first_line(log, text, sizeof text);
    CHECK("the program refuses an unknown option, naming it", rc == 1 && strstr(text, "--fast"), "exit %d: %s", rc, text);
}

/* --what all: the CUDA program of quickstart's 128x3 compiles with nvcc (skipped without
   nvcc); it runs and agrees with poa forward where a GPU is (skipped otherwise). */
static void check_cuda(void) {
    const char *dir = DIR "/quickstart/128x3_cuda", *checkpoint = DIR "/quickstart/checkpoint.safetensors";
    if (system("command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]") != 0) {
        printf("SKIP --what cuda: no nvcc (on PATH or /usr/local/cuda/bin)\n");
        return;
    }
    if (export_build(checkpoint, "128x3", dir, "all", "poa_member_cuda")) return;
    compare("recipes/quickstart.lua", checkpoint, dir, "128x3", DIR "/quickstart/global.safetensors",
            "quickstart 128x3 (CUDA) at 32 px", "poa_member_cuda");
    compare("recipes/quickstart.lua", checkpoint, dir, "128x3", DIR "/quickstart/local.safetensors",
            "quickstart 128x3 (CUDA) at 16 px", "poa_member_cuda");
}

int main(void) {
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
        const char *recipe_path = families[f].recipe;
        poa_recipe recipe;
        poa_vit model;
        test_load_model(recipe_path, &recipe, &model);
        poa_vit_free(&model);
        char dir[256], checkpoint[300], global[300], local[300], odd[300];
        snprintf(dir, sizeof dir, DIR "/%s", recipe.name);
        snprintf(checkpoint, sizeof checkpoint, "%s/checkpoint.safetensors", dir);
        snprintf(global, sizeof global, "%s/global.safetensors", dir);
        snprintf(local, sizeof local, "%s/local.safetensors", dir);
        snprintf(odd, sizeof odd, "%s/odd.safetensors", dir);
        const int patch = recipe.vit.patch_size;
        if (test_write_checkpoint(recipe_path, dir, checkpoint, NULL) ||
            test_write_images(global, recipe.global_crop_size, patch, 0) ||
            test_write_images(local, recipe.local_crop_size, patch, 0) || test_write_images(odd, 48, patch, 0))
            return 1;
        for (int i = 0; i < 4; i++) {
            const char *net = families[f].members[i];
            char member_dir[300], label[300];
            snprintf(member_dir, sizeof member_dir, "%s/%s", dir, net);
            if (export_build(checkpoint, net, member_dir, "c", "")) continue;
            snprintf(label, sizeof label, "%s %s at %d px", recipe.name, net, recipe.global_crop_size);
            compare(recipe_path, checkpoint, member_dir, net, global, label, "poa_member");
            snprintf(label, sizeof label, "%s %s at %d px", recipe.name, net, recipe.local_crop_size);
            compare(recipe_path, checkpoint, member_dir, net, local, label, "poa_member");
        }
        char first[300], second[300];
        snprintf(first, sizeof first, "%s/%s", dir, families[f].members[2]);
        snprintf(second, sizeof second, "%s/%s", dir, families[f].members[1]);
        if (f == 0) check_refusals(first, second, families[f].members[1], global, odd);
        if (f == 1) check_folder(recipe_path, checkpoint, first, families[f].members[2], recipe.global_crop_size);
        if (f == 1) { /* the built-in blocked GEMM instead of OpenBLAS */
            char plain[300], label[300];
            snprintf(plain, sizeof plain, "%s/%s_plain", dir, families[f].members[2]);
            if (export_build(checkpoint, families[f].members[2], plain, "c", "BLAS=no") == 0) {
                snprintf(label, sizeof label, "%s %s (BLAS=no) at %d px", recipe.name, families[f].members[2],
                         recipe.local_crop_size);
                compare(recipe_path, checkpoint, plain, families[f].members[2], local, label, "poa_member");
            }
        }
    }
    check_cuda();
    CHECK_EXIT();
}
