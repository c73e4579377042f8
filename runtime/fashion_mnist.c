/* fashion_mnist.c: IDX reading and the Fashion-MNIST JPEG tree (see fashion_mnist.h). */
#include "fashion_mnist.h"
#include "files.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "augment.h"
#include "jpeg_decode.h"
#include "progress.h"

const char *const poa_fashion_mnist_classes[10] = {
    "0_tshirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat",
    "5_sandal", "6_shirt", "7_sneaker", "8_bag", "9_ankle_boot",
};

static unsigned be32(const unsigned char *p) {
    return (unsigned)p[0] << 24 | (unsigned)p[1] << 16 | (unsigned)p[2] << 8 | p[3];
}

int poa_idx_read(const char *path, int expect_dims, unsigned char **data, int *n, int *rows,
                 int *cols, poa_error *e) {
    *data = NULL;
    gzFile f = gzopen(path, "rb");
    if (!f) return poa_fail(e, "%s: cannot open (install dataset-fashion-mnist)", path);
    unsigned char header[16];
    int header_size = 4 + 4 * expect_dims;
    if (gzread(f, header, (unsigned)header_size) != header_size || header[0] || header[1] ||
        header[2] != 0x08 || header[3] != expect_dims) {
        gzclose(f);
        return poa_fail(e, "%s: not an IDX file of u8 with %d dimensions", path, expect_dims);
    }
    *n = (int)be32(header + 4);
    *rows = expect_dims == 3 ? (int)be32(header + 8) : 1;
    *cols = expect_dims == 3 ? (int)be32(header + 12) : 1;
    size_t size = (size_t)*n * *rows * *cols;
    if (*n <= 0 || *rows <= 0 || *cols <= 0 || *rows > 4096 || *cols > 4096 || !(*data = malloc(size))) {
        gzclose(f);
        return poa_fail(e, "%s: bad IDX sizes %d x %d x %d", path, *n, *rows, *cols);
    }
    int got = gzread(f, *data, (unsigned)size);
    gzclose(f);
    if (got != (int)size) {
        free(*data);
        *data = NULL;
        return poa_fail(e, "%s: truncated (%d of %zu bytes)", path, got, size);
    }
    return 0;
}


static void describe(char *buf, size_t n, int size, int limit) {
    snprintf(buf, n, "fashion-mnist size %d limit %d\n", size, limit);
}

/* Writes one split; counts per class into per_class. */
static int convert_split(const char *source, const char *out, const char *split,
                         const char *prefix, int size, int limit, int *written, int *per_class,
                         FILE *progress_to, poa_error *e) {
    char path[4096], labels_path[4096];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", source, prefix);
    snprintf(labels_path, sizeof labels_path, "%s/%s-labels-idx1-ubyte.gz", source, prefix);
    unsigned char *images = NULL, *labels = NULL, *rgb = NULL, *resized = NULL, *scratch = NULL;
    size_t scratch_size = 0;
    int n, rows, cols, nl, one, rc = -1;
    poa_progress progress = { 0 };
    poa_jpeg_decoder *coder = poa_jpeg_decoder_create();
    if (!coder) return poa_fail(e, "cannot start the JPEG encoder");
    if (poa_idx_read(path, 3, &images, &n, &rows, &cols, e) != 0 ||
        poa_idx_read(labels_path, 1, &labels, &nl, &one, &one, e) != 0)
        goto done;
    if (nl != n) {
        poa_fail(e, "%s: %d labels for %d images in %s", labels_path, nl, n, path);
        goto done;
    }
    if (limit > 0 && limit < n) n = limit;
    snprintf(path, sizeof path, "%s/%s", out, split);
    if (poa_make_folders(path, e) != 0) goto done;
    for (int c = 0; c < 10; c++) {
        snprintf(path, sizeof path, "%s/%s/%s", out, split, poa_fashion_mnist_classes[c]);
        if (poa_make_folders(path, e) != 0) goto done;
    }
    rgb = malloc((size_t)rows * cols * 3);
    resized = malloc((size_t)size * size * 3);
    if (!rgb || !resized) {
        poa_fail(e, "out of memory");
        goto done;
    }
    char what[64];
    snprintf(what, sizeof what, "poa data: %s", split);
    if (progress_to) poa_progress_start(&progress, progress_to, what, n, "images");
    for (int i = 0; i < n; i++) {
        const unsigned char *src = images + (size_t)i * rows * cols;
        if (labels[i] > 9) {
            poa_fail(e, "%s: label %d of image %d is not 0..9", labels_path, labels[i], i);
            goto done;
        }
        for (int p = 0; p < rows * cols; p++) rgb[3 * p] = rgb[3 * p + 1] = rgb[3 * p + 2] = src[p];
        const unsigned char *pixels = rgb;
        if (size != cols || size != rows) {
            if (poa_resize_bicubic(rgb, cols, rows, 0, 0, cols, rows, resized, size, size,
                                   &scratch, &scratch_size, e) != 0)
                goto done;
            pixels = resized;
        }
        unsigned char *jpeg;
        unsigned long jpeg_size;
        snprintf(path, sizeof path, "%s/%s/%s/%05d.jpg", out, split,
                 poa_fashion_mnist_classes[labels[i]], i);
        if (poa_jpeg_encode(coder, pixels, size, size, 95, &jpeg, &jpeg_size, path, e) != 0)
            goto done;
        FILE *f = fopen(path, "wb");
        int ok = f && fwrite(jpeg, 1, jpeg_size, f) == jpeg_size;
        if (f && fclose(f) != 0) ok = 0;
        poa_jpeg_free(jpeg);
        if (!ok) {
            poa_fail(e, "%s: cannot write: %s", path, strerror(errno));
            goto done;
        }
        per_class[labels[i]]++;
        if (progress_to) poa_progress_add(&progress, 1);
    }
    *written = n;
    rc = 0;
    if (progress_to) poa_progress_finish(&progress);
done:
    poa_progress_break(&progress); /* a failure in the middle: end the terminal's line */
    free(images);
    free(labels);
    free(rgb);
    free(resized);
    free(scratch);
    poa_jpeg_decoder_destroy(coder);
    return rc;
}

int poa_fashion_mnist_convert(const char *source, const char *out, int size, int limit,
                              FILE *progress, poa_fashion_mnist_result *result, poa_error *e) {
    memset(result, 0, sizeof *result);
    if (size < 8 || size > 1024) return poa_fail(e, "fashion-mnist: size %d not in 8..1024", size);
    char marker[4096], want[128], have[128] = "";
    snprintf(marker, sizeof marker, "%s/.complete", out);
    describe(want, sizeof want, size, limit);
    FILE *f = fopen(marker, "r");
    if (f) {
        size_t got = fread(have, 1, sizeof have - 1, f);
        have[got] = 0;
        fclose(f);
        if (strncmp(have, want, strlen(want)) == 0 &&
            sscanf(have + strlen(want), "train %d val %d", &result->train, &result->val) == 2) {
            result->already_done = 1;
            return 0;
        }
    }
    remove(marker); /* a different or unfinished tree is rewritten */
    if (poa_make_folders(out, e) != 0) return -1;
    if (convert_split(source, out, "train", "train", size, limit, &result->train,
                      result->train_per_class, progress, e) != 0 ||
        convert_split(source, out, "val", "t10k", size, limit, &result->val,
                      result->val_per_class, progress, e) != 0)
        return -1;
    f = fopen(marker, "w");
    if (!f || fprintf(f, "%strain %d val %d\n", want, result->train, result->val) < 0 || fclose(f) != 0)
        return poa_fail(e, "%s: cannot write", marker);
    return 0;
}
