/* f64_train_step.c: in fp64, the gradient the POA step accumulates (teacher SK targets,
   intact and elastic students, cross-view DINO, same-view distillation, KoLeo, iBOT; with
   masks and stochastic depth) equals central differences of the step's loss, for backbone
   and head parameters; and the elastic cycle gives every member exactly its replica count
   per cycle. */
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "data_synthetic.h"
#include "data_random.h"
#include "masking.h"
#include "random.h"
#include "trainer.h"

/* The step's loss with the trainer's current parameters (no update; grads accumulate). */
static double step_loss(poa_trainer *t, const poa_batch *b) {
    poa_error e = { { 0 } };
    t->draws = 0;
    poa_trainer_begin_step(t);
    if (poa_trainer_micro_batch(t, b, 0, &e)) printf("FAIL micro-batch: %s\n", e.message);
    const poa_step_stats *s = &t->current;
    return s->dino + s->distill + s->koleo + s->ibot;
}

static void check_gradients(poa_trainer *t, const poa_batch *b, int heads, const char *name) {
    const poa_vit_tensor *tensor = NULL;
    const poa_vit_tensor *list = heads ? t->heads.tensors : t->model.tensors;
    int count = heads ? t->heads.tensor_count : t->model.tensor_count;
    for (int i = 0; i < count; i++)
        if (strcmp(list[i].name, name) == 0) tensor = &list[i];
    real *params = heads ? t->student_heads : t->student, *grads = heads ? t->grads_heads : t->grads;
    long n = heads ? t->heads.parameter_count : t->model.parameter_count;
    memset(grads, 0, sizeof(real) * (size_t)n);
    step_loss(t, b);
    real *analytic = malloc(sizeof(real) * (size_t)n);
    memcpy(analytic, grads, sizeof(real) * (size_t)n);
    double worst = 0, size = 1e-12;
    const double h = 1e-6;
    for (int s = 0; s < 5; s++) {
        long at = tensor->offset + (long)(poa_uniform(9, (uint64_t)s, 0) * (double)(tensor->count < 64 ? tensor->count : 64));
        real saved = params[at];
        params[at] = saved + h;
        double up = step_loss(t, b);
        params[at] = saved - h;
        double down = step_loss(t, b);
        params[at] = saved;
        double numeric = (up - down) / (2 * h);
        worst = fmax(worst, fabs(numeric - analytic[at]));
        size = fmax(size, fabs(numeric));
    }
    memset(grads, 0, sizeof(real) * (size_t)n);
    char label[160];
    snprintf(label, sizeof label, "step gradient of %s%s equals central differences",
             heads ? "dino_head." : "", name);
    CHECK(label, worst <= 1e-6 * fmax(size, 1e-3), "max |analytic - numeric| %.3g of %.3g", worst, size);
    free(analytic);
}

int main(void) {
    poa_set_threads(1);
    poa_error e = { { 0 } };
    lua_State *L = poa_lua_open(&e);
    poa_train_config config;
    poa_trainer t;
    /* lambda = 1: the same-view term's targets come from the intact logits under a stop-
       gradient, which central differences cannot respect; with lambda = 1 its weight is 0,
       every other term is exact (the elastic branch still adds its KoLeo term). */
    const char *overrides[] = { "loss.lambda=1" };
    if (poa_train_config_load(L, "tests/recipes/tiny_train.lua", overrides, 1, &config, &e) ||
        poa_trainer_init(&t, &config, &e)) {
        printf("FAIL trainer: %s\n", e.message);
        return 1;
    }
    lua_close(L);
    /* Random weights that make every path matter (the init's tiny LayerScale would not). */
    for (long i = 0; i < t.model.parameter_count; i++)
        t.student[i] += (real)(0.05 * poa_normal(4, 1, (uint64_t)i));
    poa_batch b;
    poa_synthetic_batch(&b, &t.config, 1, &e);
    check_gradients(&t, &b, 0, "patch_embed.proj.weight");
    check_gradients(&t, &b, 0, "pos_embed");
    check_gradients(&t, &b, 0, "mask_token");
    check_gradients(&t, &b, 0, "blocks.3.attn.qkv.linear.weight");
    check_gradients(&t, &b, 0, "blocks.0.mlp.fc2.linear.bias");
    check_gradients(&t, &b, 0, "norm.norm.weight");
    check_gradients(&t, &b, 1, "mlp0.0.weight");
    check_gradients(&t, &b, 1, "mlp1.4.bias");
    check_gradients(&t, &b, 1, "last_layer0.weight_g");
    check_gradients(&t, &b, 1, "last_layer1.weight_v");
    CHECK("iBOT was active with masked tokens", t.current.ibot_active && b.masks.masked > 0 && t.current.ibot != 0,
          "active %d masked %d ibot %g", t.current.ibot_active, b.masks.masked, t.current.ibot);

    /* The elastic cycle: each cycle of slot_count draws yields every member exactly its
       replica count, and two cycles differ in order. */
    int n = t.config.slot_count, ok = 1, same_order = 1;
    int *first = malloc(sizeof(int) * (size_t)n * 2);
    t.draws = 0;
    for (int cycle = 0; cycle < 2; cycle++) {
        for (int i = 0; i < n; i++) {
            int w, d;
            poa_trainer_next_member(&t, &w, &d);
            first[cycle * n + i] = w * 1000 + d;
        }
        for (int i = 0; i < n; i++) { /* count each slot's member in this cycle */
            int want = 0, got = 0, key = t.config.slot_width[i] * 1000 + t.config.slot_depth[i];
            for (int j = 0; j < n; j++) want += t.config.slot_width[j] * 1000 + t.config.slot_depth[j] == key;
            for (int j = 0; j < n; j++) got += first[cycle * n + j] == key;
            ok &= want == got;
        }
    }
    for (int i = 0; i < n; i++) same_order &= first[i] == first[n + i];
    CHECK("each cycle draws every member exactly its replica count", ok, "counts differ");
    CHECK("the cycle is reshuffled", !same_order, "two cycles in the same order");
    /* Another rank draws its own order (reference §3.2: never synchronised). */
    t.config.rank = 1, t.draws = 0;
    int other_rank_same = 1;
    for (int i = 0; i < n; i++) {
        int w, d;
        poa_trainer_next_member(&t, &w, &d);
        other_rank_same &= first[i] == w * 1000 + d;
    }
    CHECK("another rank draws another order", !other_rank_same, "rank 1 repeats rank 0's cycle");
    free(first);
    poa_trainer_free(&t);
    CHECK_EXIT();
}
