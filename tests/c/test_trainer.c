/* test_trainer.c: the first step has every member's training programs built (not only the
   members it drew); a step updates the student and the teacher; a step whose loss is NaN
   changes neither (no update, no EMA) and says it skipped; loss.distill_weight scales the
   same-view term alone (0: off); the baseline switch trains the intact network alone (no
   same-view term, no elastic draw). */
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data_synthetic.h"
#include "data_random.h"
#include "masking.h"
#include "random.h"
#include "trainer.h"

static int open_trainer(poa_trainer *t, const char *override) {
    poa_error e = { { 0 } };
    lua_State *L = poa_lua_open(&e);
    poa_train_config config;
    const char *overrides[] = { "optim.warmup_epochs=0", override };
    int rc = poa_train_config_load(L, "tests/recipes/tiny_train.lua", overrides, override ? 2 : 1,
                                   &config, &e) || poa_trainer_init(t, &config, &e);
    if (rc) printf("FAIL trainer: %s\n", e.message);
    lua_close(L);
    return rc;
}

static int step(poa_trainer *t, const poa_batch *b) {
    poa_error e = { { 0 } };
    poa_trainer_begin_step(t);
    int rc = poa_trainer_micro_batch(t, b, 0, &e);
    if (rc) printf("FAIL step: %s\n", e.message);
    else poa_trainer_end_step(t);
    return rc;
}

static long differing(const real *a, const real *b, long n) {
    long d = 0;
    for (long i = 0; i < n; i++) d += memcmp(&a[i], &b[i], sizeof(real)) != 0;
    return d;
}

static int same(double a, double b) { return fabs(a - b) <= 1e-9 * fmax(fabs(b), 1e-30); }

int main(void) {
    poa_trainer t;
    if (open_trainer(&t, NULL)) return 1;
    poa_batch b;
    poa_synthetic_batch(&b, &t.config, 1, NULL);
    const long n = t.model.parameter_count;
    real *student = malloc(sizeof(real) * (size_t)n), *teacher = malloc(sizeof(real) * (size_t)n);
    memcpy(student, t.student, sizeof(real) * (size_t)n);
    memcpy(teacher, t.teacher, sizeof(real) * (size_t)n);
    step(&t, &b);
    /* train_cpu.c's build_programs: by the end of the first step, the training programs (forward and
       backward, both crop sizes) of every member of the elastic cycle are in the process-wide cache,
       not only the members this step drew */
    int cached = 0, wanted = 0;
    for (int i = 0; i < t.config.slot_count; i++)
        for (int crops = 0; crops < 2; crops++)
            for (int kind = POA_VIT_FORWARD; kind <= POA_VIT_BACKWARD; kind++, wanted++) {
                poa_vit_program_key key;
                memset(&key, 0, sizeof key); /* as runtime/vit.c's: compared with its padding */
                key.config = t.model.config, key.kind = kind;
                key.width = t.config.slot_width[i], key.depth = t.config.slot_depth[i];
                key.image_size = crops ? t.config.recipe.local_crop_size : t.config.recipe.global_crop_size;
                cached += poa_program_cache_find(&key, sizeof key) != NULL;
            }
    CHECK("after the first step every member's training programs are built (both crops, forward and backward)",
          cached == wanted && wanted > 8, "%d of %d", cached, wanted);
    long moved = differing(student, t.student, n), followed = differing(teacher, t.teacher, n);
    CHECK("a step updates the student", moved > n / 2 && !t.last.skipped, "%ld of %ld changed", moved, n);
    CHECK("a step moves the teacher by EMA", followed > n / 2, "%ld of %ld changed", followed, n);
    CHECK("every loss term is finite and the elastic terms are there",
          isfinite(t.last.loss) && t.last.distill > 0 && t.last.koleo != 0 && t.last.ibot > 0,
          "loss %g distill %g koleo %g ibot %g", t.last.loss, t.last.distill, t.last.koleo, t.last.ibot);

    const poa_step_stats first = t.last;

    /* loss.distill_weight scales the same-view term (paper L_ES2) alone: from the same
       initialisation and batch, 0.5 halves it, 0 leaves it out; the other terms are unchanged. */
    static const char *const weights[] = { "loss.distill_weight=0.5", "loss.distill_weight=0" };
    for (int i = 0; i < 2; i++) {
        poa_trainer u;
        if (open_trainer(&u, weights[i])) return 1;
        step(&u, &b);
        const double want = i == 0 ? 0.5 * first.distill : 0.0;
        char label[128];
        snprintf(label, sizeof label, "%s scales only the same-view term", weights[i]);
        CHECK(label, fabs(u.last.distill - want) <= 1e-6 * first.distill && same(u.last.dino, first.dino) &&
                         same(u.last.koleo, first.koleo) && same(u.last.ibot, first.ibot) && u.draws == t.draws,
              "distill %g (want %g) dino %g/%g koleo %g/%g ibot %g/%g draws %ld/%ld", u.last.distill, want,
              u.last.dino, first.dino, u.last.koleo, first.koleo, u.last.ibot, first.ibot, u.draws, t.draws);
        poa_trainer_free(&u);
    }

    /* A NaN in the input makes the loss NaN: no update, no EMA. */
    memcpy(student, t.student, sizeof(real) * (size_t)n);
    memcpy(teacher, t.teacher, sizeof(real) * (size_t)n);
    float saved = b.local_crops[5];
    b.local_crops[5] = NAN;
    long step_before = t.step;
    step(&t, &b);
    CHECK("a NaN loss is reported as skipped", t.last.skipped && isnan(t.last.loss), "skipped %d loss %g",
          t.last.skipped, t.last.loss);
    CHECK("a NaN loss changes neither student nor teacher",
          differing(student, t.student, n) == 0 && differing(teacher, t.teacher, n) == 0,
          "student %ld, teacher %ld entries changed", differing(student, t.student, n),
          differing(teacher, t.teacher, n));
    CHECK("a skipped step still counts", t.step == step_before + 1, "step %ld", t.step);
    b.local_crops[5] = saved;
    poa_trainer_free(&t);

    /* The baseline: one network, no elastic branch. */
    if (open_trainer(&t, "train.elastic=false")) return 1;
    step(&t, &b);
    CHECK("the baseline trains the intact network alone",
          !t.last.skipped && t.last.distill == 0 && t.draws == 0 && t.last.width == 96 && t.last.depth == 4,
          "distill %g draws %ld member %dx%d", t.last.distill, t.draws, t.last.width, t.last.depth);
    poa_trainer_free(&t);
    free(student), free(teacher);
    CHECK_EXIT();
}
