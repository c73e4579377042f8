/* loss_plan.c: the loss calls of a student branch (see loss_plan.h). Weights (reference §3.5):
     cross-view DINO   dino_weight * weight / H / pairs per mean over B rows, pairs = G L + G (G - 1);
                       raw: local = the sum over (local crop, teacher crop) pairs of the row-mean
                       CE; global = the mean over the G (G - 1) cross-view pairs;
     same-view         distill_weight * (1 - lambda) / H per mean over the local rows and over the
                       global rows (distill_weight 0: no same-view term, the Table 3 ablation);
     iBOT              ibot_weight * weight / H per (sum over masked tokens of w_t CE) / (G B);
     KoLeo             koleo_weight (x 0.5 when the elastic branch is on) per global crop. */
#include "loss_plan.h"

#include <stddef.h>

#include "trainer.h"

#define SLOT(field) ((int)(offsetof(poa_loss_calls, field) / sizeof(double)))

typedef struct plan {
    poa_loss_call *calls;
    int capacity, count;
} plan;

static void add(plan *p, poa_loss_call c) {
    if (c.factor == 0) return;
    if (p->count < p->capacity) p->calls[p->count] = c;
    p->count++;
}

int poa_loss_plan_capacity(const poa_train_config *c, const poa_loss_shape *s) {
    return c->heads.heads * (s->G * (s->L + s->G) + 3) + s->G;
}

int poa_loss_plan(const poa_train_config *c, int index, double weight, const poa_loss_shape *s, double scale,
                  poa_loss_call *calls, int capacity) {
    plan p = { calls, capacity, 0 };
    const int H = c->heads.heads;
    const long B = s->B, local_rows = s->L * B, global_rows = s->G * B;
    const double pairs = (double)s->G * s->L + s->G * (s->G - 1);
    for (int h = 0; h < H; h++) {
        const double dino = scale * c->dino_weight * weight / H / pairs;
        for (int g = 0; g < s->G; g++) {
            for (int l = 0; l < s->L; l++)
                add(&p, (poa_loss_call){ POA_LOSS_DINO, h, POA_TARGETS_TEACHER_CLS, g * B, l * B, B, 0, (double)B, dino,
                                         SLOT(dino_local[index][h]), scale });
            for (int s2 = 0; s2 < s->G; s2++)
                if (s2 != g)
                    add(&p, (poa_loss_call){ POA_LOSS_DINO, h, POA_TARGETS_TEACHER_CLS, g * B, local_rows + s2 * B, B,
                                             0, (double)B, dino, SLOT(dino_global[index][h]),
                                             scale / (s->G * (s->G - 1)) });
        }
        if (index == 1) {
            const double distill = scale * c->distill_weight * (1 - c->lambda) / H;
            add(&p, (poa_loss_call){ POA_LOSS_DISTILL, h, POA_TARGETS_DISTILL, 0, 0, local_rows, 0, (double)local_rows,
                                     distill, SLOT(distill_local[h]), scale });
            add(&p, (poa_loss_call){ POA_LOSS_DISTILL, h, POA_TARGETS_DISTILL, local_rows, local_rows, global_rows, 0,
                                     (double)global_rows, distill, SLOT(distill_global[h]), scale });
        }
        if (s->masked)
            add(&p, (poa_loss_call){ POA_LOSS_IBOT, h, POA_TARGETS_TEACHER_PATCH, 0, local_rows + global_rows,
                                     s->masked, 1, (double)global_rows, scale * c->ibot_weight * weight / H,
                                     SLOT(ibot[index][h]), scale });
    }
    const double koleo = scale * c->koleo_weight * (c->elastic ? 0.5 : 1.0);
    for (int g = 0; g < s->G && B >= 2; g++) /* KoLeo needs two rows (loss.c) */
        add(&p, (poa_loss_call){ POA_LOSS_KOLEO, -1, POA_TARGETS_TEACHER_CLS, 0, local_rows + g * B, B, 0, 1.0, koleo,
                                 g < POA_LOSS_CALL_CROPS ? SLOT(koleo[index][g]) : -1, scale });
    return p.count;
}
