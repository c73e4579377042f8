/* test_data_decode.c: the ImageFolder scan and the decoder on real odd files
   (tests/data/make_odd_images.py): greyscale, CMYK, PNG-named-.JPEG, truncated, empty and
   non-image files; pixels compared with PIL's decode of the same files. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data_folder.h"
#include "jpeg_decode.h"

#define DATA POA_SOURCE_DIR "tests/data/"

static int load_expected(const char *name, unsigned char **pixels, int *w, int *h) {
    FILE *f = fopen(DATA "expected/sizes.txt", "r");
    char line[256], file[200];
    int found = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%199s %d %d", file, w, h) == 3 && strcmp(file, name) == 0) found = 1;
    if (f) fclose(f);
    if (!found) return -1;
    char path[512];
    snprintf(path, sizeof path, DATA "expected/%s", name);
    size_t size, capacity = 0;
    *pixels = NULL;
    poa_error e;
    if (poa_read_file(path, pixels, &size, &capacity, &e) != 0) return -1;
    return size == (size_t)*w * *h * 3 ? 0 : -1;
}

static void compare_with_pil(poa_jpeg_decoder *d, const char *file, const char *expected,
                             double max_mean, int max_abs) {
    char path[512], name[300];
    snprintf(path, sizeof path, DATA "folder/%s", file);
    snprintf(name, sizeof name, "decode %s matches PIL", file);
    unsigned char *data = NULL, *want = NULL;
    size_t size, capacity = 0;
    poa_image image = { 0 };
    poa_error e = { "" };
    int w, h, num, denom;
    if (poa_read_file(path, &data, &size, &capacity, &e) != 0 ||
        load_expected(expected, &want, &w, &h) != 0 ||
        poa_image_decode(d, data, size, 1.0, &image, &num, &denom, path, &e) != 0) {
        CHECK(name, 0, "cannot read or decode: %s", e.message);
    } else if (image.width != w || image.height != h) {
        CHECK(name, 0, "size %dx%d, PIL %dx%d", image.width, image.height, w, h);
    } else {
        double sum = 0;
        int worst = 0;
        for (int i = 0; i < w * h * 3; i++) {
            int diff = abs((int)image.pixels[i] - (int)want[i]);
            sum += diff;
            if (diff > worst) worst = diff;
        }
        double mean = sum / (w * h * 3);
        CHECK(name, mean <= max_mean && worst <= max_abs,
              "mean |diff| %.3f (limit %.3f), max %d (limit %d)", mean, max_mean, worst, max_abs);
    }
    free(data);
    free(want);
    poa_image_free(&image);
}

static void expect_failure(poa_jpeg_decoder *d, const char *file, const char *why) {
    char path[512], name[300];
    snprintf(path, sizeof path, DATA "folder/%s", file);
    snprintf(name, sizeof name, "decode %s fails naming the file", file);
    unsigned char *data = NULL;
    size_t size = 0, capacity = 0;
    poa_image image = { 0 };
    poa_error e = { "" };
    int num, denom, rc = poa_read_file(path, &data, &size, &capacity, &e);
    if (rc == 0) rc = poa_image_decode(d, data, size, 1.0, &image, &num, &denom, path, &e);
    CHECK(name, rc == -1 && strstr(e.message, file) && strstr(e.message, why),
          "rc %d, message '%s' (want the file and '%s')", rc, e.message, why);
    free(data);
    poa_image_free(&image);
}

int main(void) {
    poa_dataset d;
    poa_error e = { "" };
    int rc = poa_dataset_open_folder(&d, DATA "folder", &e);
    CHECK("folder opens", rc == 0, "%s", e.message);
    if (rc == 0) {
        CHECK("folder classes sorted", d.class_count == 2 && strcmp(d.class_names[0], "a_good") == 0
              && strcmp(d.class_names[1], "b_odd") == 0, "%d classes", d.class_count);
        /* ImageFolder: a_good 3 files, b_odd 4 image-extension files + nested/flipped.Jpg;
           readme.txt and the file at the top level are not part of it. */
        CHECK("folder image count", d.count == 8, "count %d, want 8", d.count);
        int per_class[2] = { 0, 0 };
        for (int i = 0; i < d.count; i++) per_class[d.labels[i]]++;
        CHECK("folder count per class", per_class[0] == 3 && per_class[1] == 5, "%d / %d",
              per_class[0], per_class[1]);
        CHECK("folder sorted order", d.count == 8 && strstr(d.paths[0], "a_good/cmyk.jpg")
              && strstr(d.paths[3], "b_odd/empty.jpg") && strstr(d.paths[7], "nested/flipped.Jpg"),
              "first %s", d.count ? d.paths[0] : "-");
        poa_dataset_free(&d);
    }
    rc = poa_dataset_open(&d, DATA "list.txt", &e);
    CHECK("list file", rc == 0 && d.count == 2 && d.labels[0] == 3 && d.labels[1] == 1 &&
          d.class_count == 4 && strstr(d.paths[1], "tests/data/folder/b_odd/png_named.JPEG"),
          "rc %d: %s", rc, e.message);
    if (rc == 0) poa_dataset_free(&d);
    rc = poa_dataset_open(&d, DATA "no_such_folder", &e);
    CHECK("missing dataset names the path", rc == -1 && strstr(e.message, "no_such_folder"), "%s",
          e.message);

    poa_jpeg_decoder *dec = poa_jpeg_decoder_create();
    /* Same libjpeg-turbo, same (islow, fancy-upsampling) settings as PIL: identical pixels. */
    compare_with_pil(dec, "a_good/colour.jpg", "a_good_colour.jpg.rgb", 0.0, 0);
    compare_with_pil(dec, "a_good/grey.JPEG", "a_good_grey.JPEG.rgb", 0.0, 0);
    compare_with_pil(dec, "b_odd/nested/flipped.Jpg", "b_odd_nested_flipped.Jpg.rgb", 0.0, 0);
    /* CMYK -> RGB: PIL rounds C*K/255 its own way: one level at most. */
    compare_with_pil(dec, "a_good/cmyk.jpg", "a_good_cmyk.jpg.rgb", 0.5, 1);
    compare_with_pil(dec, "b_odd/png_named.JPEG", "b_odd_png_named.JPEG.rgb", 0.0, 0);
    expect_failure(dec, "b_odd/truncated.jpg", "Premature end");
    expect_failure(dec, "b_odd/not_an_image.jpeg", "not a JPEG or PNG");
    expect_failure(dec, "b_odd/empty.jpg", "not a JPEG or PNG");

    /* DCT scaling: asking for half size gives the 1/2 factor and ceil(size/2). */
    unsigned char *data = NULL;
    size_t size, capacity = 0;
    poa_image image = { 0 };
    int num = 0, denom = 0;
    rc = poa_read_file(DATA "folder/a_good/colour.jpg", &data, &size, &capacity, &e);
    if (rc == 0) rc = poa_image_decode(dec, data, size, 0.5, &image, &num, &denom, "colour", &e);
    CHECK("DCT scaling 1/2", rc == 0 && num * 2 == denom && image.width == 32 && image.height == 38,
          "rc %d, %d/%d, %dx%d", rc, num, denom, image.width, image.height);
    if (rc == 0) rc = poa_image_decode(dec, data, size, 0.3, &image, &num, &denom, "colour", &e);
    CHECK("DCT scaling 3/8", rc == 0 && num * 8 == 3 * denom && image.width == 24 && image.height == 29,
          "rc %d, %d/%d, %dx%d", rc, num, denom, image.width, image.height);
    free(data);
    poa_image_free(&image);
    poa_jpeg_decoder_destroy(dec);
    CHECK_EXIT();
}
