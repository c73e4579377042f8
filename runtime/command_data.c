/* command_data.c: `poa data`, preparing datasets.
     poa data fashion-mnist [--out DIR] [--size N] [--limit N] [--source DIR]
   writes the Fashion-MNIST JPEG tree (default data/fashion-mnist, 32 x 32 RGB, the size
   of the small recipes' global crops) and prints the counts per class. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "fashion_mnist.h"

static int usage(void) {
    fprintf(stderr, "usage: poa data fashion-mnist [--out DIR] [--size N] [--limit N] "
                    "[--source DIR]\n");
    return POA_EXIT_USAGE;
}

int poa_command_data(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "fashion-mnist") != 0) return usage();
    const char *out = "data/fashion-mnist", *source = POA_FASHION_MNIST_SOURCE;
    int size = 32, limit = 0;
    for (int i = 2; i < argc; i++) {
        if (i + 1 >= argc) return usage();
        if (strcmp(argv[i], "--out") == 0) out = argv[++i];
        else if (strcmp(argv[i], "--source") == 0) source = argv[++i];
        else if (strcmp(argv[i], "--size") == 0) size = atoi(argv[++i]);
        else if (strcmp(argv[i], "--limit") == 0) limit = atoi(argv[++i]);
        else return usage();
    }
    poa_fashion_mnist_result r;
    poa_error e = { "" };
    if (poa_fashion_mnist_convert(source, out, size, limit, stdout, &r, &e) != 0) {
        fprintf(stderr, "poa data: %s\n", e.message);
        return POA_EXIT_FAILED;
    }
    if (r.already_done) {
        printf("%s: already complete (train %d, val %d, %dx%d)\n", out, r.train, r.val, size, size);
        return 0;
    }
    printf("%s: wrote train %d, val %d images (%dx%d RGB JPEG)\n", out, r.train, r.val, size, size);
    for (int c = 0; c < 10; c++)
        printf("  %-14s train %5d  val %5d\n", poa_fashion_mnist_classes[c],
               r.train_per_class[c], r.val_per_class[c]);
    return 0;
}
