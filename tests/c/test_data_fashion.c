/* test_data_fashion.c: `poa data fashion-mnist` on the first 600 images of each split
   (the full 70,000 is the quickstart's job): the tree opens as an ImageFolder with 10
   classes, the counts per class equal those of the IDX labels, images decode to 32 x 32
   grey RGB, and a second run does nothing. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "data_folder.h"
#include "fashion_mnist.h"
#include "jpeg_decode.h"

int poa_command_data(int argc, char **argv);

static void check_split(const char *out, const char *split, const char *labels_file, int limit) {
    char path[512], name[64];
    snprintf(path, sizeof path, "%s/%s", out, split);
    poa_dataset d;
    poa_error e = { "" };
    snprintf(name, sizeof name, "fashion-mnist %s opens", split);
    if (poa_dataset_open_folder(&d, path, &e) != 0) {
        CHECK(name, 0, "%s", e.message);
        return;
    }
    CHECK(name, d.class_count == 10 && d.count == limit, "%d classes, %d images", d.class_count,
          d.count);
    unsigned char *labels;
    int n, one;
    snprintf(path, sizeof path, POA_FASHION_MNIST_SOURCE "/%s", labels_file);
    int want[10] = { 0 }, got[10] = { 0 }, same = 1;
    if (poa_idx_read(path, 1, &labels, &n, &one, &one, &e) == 0) {
        for (int i = 0; i < limit && i < n; i++) want[labels[i]]++;
        free(labels);
    }
    for (int i = 0; i < d.count; i++) got[d.labels[i]]++;
    for (int c = 0; c < 10; c++) same &= want[c] == got[c] && want[c] > 0;
    snprintf(name, sizeof name, "fashion-mnist %s counts per class", split);
    CHECK(name, same, "class 0: %d vs %d, class 9: %d vs %d", got[0], want[0], got[9], want[9]);
    /* One image: 32 x 32, grey replicated in RGB. */
    unsigned char *data = NULL;
    size_t size, capacity = 0;
    poa_image image = { 0 };
    int num, denom, grey = 1;
    poa_jpeg_decoder *dec = poa_jpeg_decoder_create();
    int rc = poa_read_file(d.paths[0], &data, &size, &capacity, &e);
    if (rc == 0) rc = poa_image_decode(dec, data, size, 1, &image, &num, &denom, d.paths[0], &e);
    for (int p = 0; rc == 0 && p < image.width * image.height; p++)
        grey &= abs(image.pixels[3 * p] - image.pixels[3 * p + 1]) <= 2 &&
                abs(image.pixels[3 * p] - image.pixels[3 * p + 2]) <= 2;
    snprintf(name, sizeof name, "fashion-mnist %s image is 32x32 grey RGB", split);
    CHECK(name, rc == 0 && image.width == 32 && image.height == 32 && grey, "rc %d %dx%d grey %d",
          rc, image.width, image.height, grey);
    free(data);
    poa_image_free(&image);
    poa_jpeg_decoder_destroy(dec);
    poa_dataset_free(&d);
}

int main(void) {
    if (access(POA_FASHION_MNIST_SOURCE "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        CHECK_SKIP("fashion-mnist", "dataset-fashion-mnist is not installed (./setup installs it)");
        return 0;
    }
    char dir[] = "/tmp/poa-test-fashion-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK("fashion-mnist temp folder", 0, "mkdtemp failed");
        CHECK_EXIT();
    }
    char out[256];
    snprintf(out, sizeof out, "%s/fm", dir);
    char *argv[] = { "data", "fashion-mnist", "--out", out, "--limit", "600", NULL };
    CHECK("poa data fashion-mnist --limit 600", poa_command_data(6, argv) == 0, "non-zero exit");
    check_split(out, "train", "train-labels-idx1-ubyte.gz", 600);
    check_split(out, "val", "t10k-labels-idx1-ubyte.gz", 600);
    poa_fashion_mnist_result r;
    poa_error e = { "" };
    int rc = poa_fashion_mnist_convert(POA_FASHION_MNIST_SOURCE, out, 32, 600, NULL, &r, &e);
    CHECK("poa data is idempotent", rc == 0 && r.already_done && r.train == 600 && r.val == 600,
          "rc %d already_done %d (%s)", rc, r.already_done, e.message);
    rc = poa_fashion_mnist_convert("/nonexistent", dir, 32, 10, NULL, &r, &e);
    CHECK("missing source names the file", rc == -1 && strstr(e.message, "/nonexistent/train-images"),
          "%s", e.message);
    char command[512];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    if (system(command) != 0) printf("info: could not remove %s\n", dir);
    CHECK_EXIT();
}
