/* bench/step_config.c: the shapes of a tri-branch step and the elastic members the trainer
   would draw, without building the networks, so that a PyTorch peer can set up the same
   step where poa's own step is not run (bench/step_gpu_torch.py, where no GPU step is built).
     build/bench/step_config [RECIPE] [--members N] [--ibot 0|1] [--batch B] [section.field=value ...]
   Prints what bench/step_cpu prints before it times anything: "config ..." and "masks ..."
   (bench/step_info.h, the same synthetic batch), then "members" with the first N draws of
   the trainer's elastic cycle (poa_trainer_next_member: the same seed and rank). */
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_synthetic.h"
#include "masking.h"
#include "trainer.h"

#include "step_info.h"

static void usage(void) {
    fprintf(stderr, "usage: step_config [RECIPE] [--members N] [--ibot 0|1] [--batch B] "
                    "[section.field=value ...]\n");
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(), 0;
    step_options o = { .recipe = "recipes/quickstart.lua", .members = 7, .ibot = 1, .steps = 1, .threads = 1 };
    if (parse_step_options(argc, argv, &o)) return usage(), 2;
    const char *recipe = o.recipe;
    const int members = o.members, ibot = o.ibot;

    poa_error e = { { 0 } };
    lua_State *L = poa_lua_open(&e);
    poa_trainer t;
    memset(&t, 0, sizeof t); /* only the config and the draw counter: no networks */
    if (!L || poa_train_config_load(L, recipe, o.overrides, o.override_count, &t.config, &e)) {
        fprintf(stderr, "step_config: %s\n", e.message);
        return 1;
    }
    lua_close(L);
    poa_batch b;
    if (poa_synthetic_batch(&b, &t.config, 11, &e)) {
        fprintf(stderr, "step_config: %s\n", e.message);
        return 1;
    }
    print_step_info(&t.config, &b, ibot, 1);
    printf("members");
    for (int i = 0; i < members; i++) {
        int width, depth;
        poa_trainer_next_member(&t, &width, &depth);
        printf(" %dx%d", width, depth);
    }
    printf("\n");
    free(o.overrides);
    poa_synthetic_batch_free(&b);
    poa_train_config_free(&t.config);
    return 0;
}
