/* check.h: the PASS/FAIL protocol of tests/run for C tests. */
#ifndef POA_CHECK_H
#define POA_CHECK_H
#include <stdio.h>

/* The repository root, where the tests find their fixtures (as they find recipes, by relative
   paths): tests/run and tools/device_check run every test program from it. */
#define POA_SOURCE_DIR "./"

static int check_failures;

#define CHECK(name, cond, ...)                                             \
    do {                                                                   \
        if (cond) {                                                        \
            printf("PASS %s\n", name);                                     \
        } else {                                                           \
            printf("FAIL %s: ", name);                                     \
            printf(__VA_ARGS__);                                           \
            printf("\n");                                                  \
            check_failures++;                                              \
        }                                                                  \
        fflush(stdout);                                                    \
    } while (0)

#define CHECK_SKIP(name, why) printf("SKIP %s: %s\n", name, why)
#define CHECK_EXIT() return check_failures ? 1 : 0

#endif
