/* test_optim.c: runtime/optim.c against PyTorch and the reference (poa-vit-and-training.md §5).
   - AdamW: one step and six steps of two param groups with different lr (changing every step,
     one group at lr 0 first), weight decay, betas and eps must equal torch.optim.AdamW
     (foreach=False) from tests/golden/make_optim_fixtures.py: bit for bit in the fp64 build
     (f64_optim), within 1e-6 relative per element in fp32.
   - Clipping equals torch.nn.utils.clip_grad_norm_ (clipped and unclipped case); EMA one step
     equals DINOv2's update_teacher.
   - Schedules: poa_cosine_value at chosen iterations equals the reference formulas written in
     NumPy (1e-12 relative), including the end-of-training numbers the reference states.
   - Parameter groups of the ViT-L recipe at named tensors (reference §5.2) and of a head set.
   - The element-wise loops give the same bits on 1 and 2 threads. */
#include <omp.h>
#include <string.h>

#include "check.h"
#include "optim.h"
#include "safetensors.h"
#include "vit_test_util.h"

#define FIXTURES "tests/golden/fixtures/"
#ifdef POA_FP64
#define ADAMW_TOLERANCE 0.0 /* bit for bit */
#define TORCH_TOLERANCE 1e-13
#else
#define ADAMW_TOLERANCE 1e-6
#define TORCH_TOLERANCE 1e-6
#endif

static poa_safetensors optim_file, schedule_file;

static const poa_tensor_info *find(const poa_safetensors *f, const char *name) {
    const poa_tensor_info *t = poa_safetensors_find(f, name);
    if (!t) {
        printf("FAIL %s: no tensor %s\n", f->path, name);
        exit(1);
    }
    return t;
}

/* A tensor of the fixture as real (count elements written to *count). */
static real *read_real(const poa_safetensors *f, const char *name, long *count) {
    const poa_tensor_info *t = find(f, name);
    long n = (long)poa_tensor_numel(t);
    real *x = malloc(sizeof(real) * (size_t)(n ? n : 1));
    poa_error e = { { 0 } };
    if (poa_safetensors_read_real(f, name, x, n, &e)) {
        printf("FAIL %s\n", e.message);
        exit(1);
    }
    if (count) *count = n;
    return x;
}

/* Element i of an F64 tensor, exactly. */
static double read_f64(const poa_safetensors *f, const char *name, long i) {
    const poa_tensor_info *t = find(f, name);
    double x;
    if (strcmp(t->dtype, "F64") != 0 || (size_t)(i + 1) * 8 > t->nbytes) {
        printf("FAIL %s: %s is not F64 with %ld elements\n", f->path, name, i + 1);
        exit(1);
    }
    memcpy(&x, f->data + t->offset + (size_t)i * 8, 8);
    return x;
}

/* max over i of |a_i - b_i| / |b_i| (0 / 0 = 0, x / 0 = inf). */
static double max_relative(const real *a, const real *b, long n) {
    double worst = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > 0) worst = fmax(worst, b[i] == 0 ? INFINITY : d / fabs((double)b[i]));
    }
    return worst;
}

/* ---- AdamW ---- */

static const char *adamw_names[3] = { "a.w", "a.b", "b.t" };
static const int adamw_group_of[3] = { 0, 0, 1 };

/* Concatenates the fixture tensors "<prefix><name>" group by group into one buffer. */
static void gather(const char *prefix, real *dst, long *offsets) {
    long at = 0;
    for (int i = 0; i < 3; i++) {
        char name[96];
        snprintf(name, sizeof name, "%s%s", prefix, adamw_names[i]);
        long n;
        real *x = read_real(&optim_file, name, &n);
        memcpy(dst + at, x, sizeof(real) * (size_t)n);
        offsets[i] = at;
        at += n;
        free(x);
    }
    offsets[3] = at;
}

static void compare_state(const char *tag, int step, const real *p, const real *m, const real *v,
                          long total) {
    const char *kinds[3] = { "param", "exp_avg", "exp_avg_sq" };
    const real *ours[3] = { p, m, v };
    real *want = malloc(sizeof(real) * (size_t)total);
    long offsets[4];
    for (int k = 0; k < 3; k++) {
        char prefix[64], label[160];
        snprintf(prefix, sizeof prefix, "%s.%s.", tag, kinds[k]);
        gather(prefix, want, offsets);
        double err = max_relative(ours[k], want, total);
        snprintf(label, sizeof label, "adamw %s after %d step%s equals torch.optim.AdamW (" REAL_NAME ")",
                 kinds[k], step, step > 1 ? "s" : "");
        CHECK(label, err <= ADAMW_TOLERANCE, "max relative error %.3g > %.3g", err, ADAMW_TOLERANCE);
        printf("  %s after %d: max relative error %.3g\n", kinds[k], step, err);
    }
    free(want);
}

static void test_adamw(void) {
    long offsets[4];
    long steps = atol(poa_safetensors_metadata(&optim_file, "steps"));
    long total = 0;
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof name, "param.%s", adamw_names[i]);
        total += (long)poa_tensor_numel(find(&optim_file, name));
    }
    real *p = malloc(sizeof(real) * (size_t)total), *g = malloc(sizeof(real) * (size_t)total);
    real *m = calloc((size_t)total, sizeof(real)), *v = calloc((size_t)total, sizeof(real));
    gather("param.", p, offsets);
    /* groups are contiguous: group 0 = [offsets[0], offsets[2]), group 1 = [offsets[2], offsets[3]) */
    long group_start[2] = { offsets[0], offsets[2] }, group_end[2] = { offsets[2], offsets[3] };
    for (int i = 0; i < 3; i++)
        if ((offsets[i] >= group_end[0]) != (adamw_group_of[i] == 1)) {
            printf("FAIL adamw: tensor %s is not in group %d\n", adamw_names[i], adamw_group_of[i]);
            exit(1);
        }
    for (long step = 1; step <= steps; step++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "grad.%ld.", step);
        gather(prefix, g, offsets);
        for (int group = 0; group < 2; group++) {
            long a = group_start[group];
            poa_adamw_update(p + a, g + a, m + a, v + a, group_end[group] - a,
                             read_f64(&optim_file, "group.lr", (step - 1) * 2 + group),
                             read_f64(&optim_file, "group.weight_decay", group),
                             read_f64(&optim_file, "group.beta1", group),
                             read_f64(&optim_file, "group.beta2", group),
                             read_f64(&optim_file, "group.eps", group), step);
        }
        if (step == 1) compare_state("step1", 1, p, m, v, total);
    }
    compare_state("final", (int)steps, p, m, v, total);
    free(p), free(g), free(m), free(v);
}

/* ---- clipping and EMA ---- */

static void test_clip(const char *which) {
    real buffer[256], want[256];
    long n = 0;
    for (int i = 0; i < 3; i++) {
        char name[64];
        long k;
        snprintf(name, sizeof name, "clip.%s.in.%d", which, i);
        real *x = read_real(&optim_file, name, &k);
        memcpy(buffer + n, x, sizeof(real) * (size_t)k);
        free(x);
        snprintf(name, sizeof name, "clip.%s.out.%d", which, i);
        x = read_real(&optim_file, name, &k);
        memcpy(want + n, x, sizeof(real) * (size_t)k);
        free(x);
        n += k;
    }
    char key[64], label[160];
    snprintf(key, sizeof key, "clip.%s.max_norm", which);
    double max_norm = read_f64(&optim_file, key, 0);
    snprintf(key, sizeof key, "clip.%s.norm", which);
    double want_norm = read_f64(&optim_file, key, 0);
    double norm = poa_clip_grad_norm(buffer, n, max_norm);
    double norm_err = fabs(norm - want_norm) / want_norm, err = max_relative(buffer, want, n);
    snprintf(label, sizeof label, "clip %s (norm %.4g, max %.2g) equals torch clip_grad_norm_", which,
             want_norm, max_norm);
    CHECK(label, norm_err <= TORCH_TOLERANCE && err <= TORCH_TOLERANCE,
          "norm relative error %.3g, gradients %.3g", norm_err, err);
    printf("  clip %s: norm relative error %.3g, gradients %.3g\n", which, norm_err, err);
}

static void test_ema(void) {
    long n;
    real *teacher = read_real(&optim_file, "ema.teacher", &n);
    real *student = read_real(&optim_file, "ema.student", NULL);
    real *want = read_real(&optim_file, "ema.out", NULL);
    poa_ema_update(teacher, student, n, read_f64(&optim_file, "ema.momentum", 0));
    double err = max_relative(teacher, want, n);
    CHECK("ema one step equals DINOv2 update_teacher (" REAL_NAME ")", err <= ADAMW_TOLERANCE,
          "max relative error %.3g", err);
    printf("  ema: max relative error %.3g\n", err);
    free(teacher), free(student), free(want);
}

/* ---- schedules ---- */

static poa_cosine_schedule schedule_from_fixture(const char *name) {
    char key[64];
    snprintf(key, sizeof key, "%s.params", name);
    poa_cosine_schedule s = {
        .base = read_f64(&schedule_file, key, 0), .final = read_f64(&schedule_file, key, 1),
        .total = (long)read_f64(&schedule_file, key, 2), .warmup = (long)read_f64(&schedule_file, key, 3),
        .start_warmup = read_f64(&schedule_file, key, 4), .iter_num_scale = read_f64(&schedule_file, key, 5),
    };
    return s;
}

/* The last-layer lr: the lr schedule, 0 below `freeze` iterations (train.py zeroes the
   first freeze_last_layer_epochs x 800 entries). */
static double last_layer_lr(const poa_cosine_schedule *lr, long freeze, long it) {
    return it < freeze ? 0 : poa_cosine_value(lr, it);
}

static void test_schedules(void) {
    const char *names[] = { "lr", "last_layer_lr", "weight_decay", "momentum", "teacher_temp",
                            "warmup1", "warmup2", "flat_warmup", "scale_0.7" };
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        poa_cosine_schedule s = schedule_from_fixture(names[k]);
        char key[64], label[160];
        snprintf(key, sizeof key, "%s.iterations", names[k]);
        long n = (long)poa_tensor_numel(find(&schedule_file, key));
        long freeze = strcmp(names[k], "last_layer_lr") == 0
                          ? (long)read_f64(&schedule_file, "last_layer_lr.freeze", 0) : 0;
        double worst = 0;
        long worst_it = -1;
        for (long i = 0; i < n; i++) {
            snprintf(key, sizeof key, "%s.iterations", names[k]);
            long it = (long)read_f64(&schedule_file, key, i);
            snprintf(key, sizeof key, "%s.values", names[k]);
            double want = read_f64(&schedule_file, key, i);
            double got = freeze ? last_layer_lr(&s, freeze, it) : poa_cosine_value(&s, it);
            double err = got == want ? 0 : want == 0 ? INFINITY : fabs(got - want) / fabs(want);
            if (err >= worst) worst = err, worst_it = it;
        }
        snprintf(label, sizeof label, "schedule %s at %ld iterations equals the reference formula", names[k], n);
        CHECK(label, worst <= 1e-12, "relative error %.3g at iteration %ld", worst, worst_it);
        printf("  %s: worst relative error %.3g (iteration %ld)\n", names[k], worst, worst_it);
    }

    /* The ViT-L recipe (reference §0) and the numbers the reference states (§5.3). */
    poa_cosine_schedule lr = { .base = 0.004 * sqrt(1600.0 / 1024), .final = 2e-5, .total = 276800,
                               .warmup = 8000, .start_warmup = 0, .iter_num_scale = 0.78 };
    poa_cosine_schedule wd = { .base = 0.04, .final = 0.4, .total = 276800, .iter_num_scale = 0.78 };
    poa_cosine_schedule momentum = { .base = 0.992, .final = 0.9999, .total = 276800, .iter_num_scale = 0.78 };
    /* Linear warmup then constant: base = final, the cosine part is flat; total = warmup as DINOv2. */
    poa_cosine_schedule temp = { .base = 0.07, .final = 0.07, .total = 24000, .warmup = 24000,
                                 .start_warmup = 0.04, .iter_num_scale = 1 };
    double lr_end = poa_cosine_value(&lr, 276799), wd_end = poa_cosine_value(&wd, 276799);
    double m_end = poa_cosine_value(&momentum, 276799);
    CHECK("ViT-L lr at 276,799 = 6.17e-4 (reference)", fabs(lr_end - 6.17e-4) < 5e-7, "%.6g", lr_end);
    CHECK("ViT-L lr warms up 0 -> 0.005 over 8,000", poa_cosine_value(&lr, 0) == 0 &&
          fabs(poa_cosine_value(&lr, 7999) - 0.005) < 1e-15 && poa_cosine_value(&lr, 8000) == lr.base,
          "%.17g %.17g", poa_cosine_value(&lr, 7999), poa_cosine_value(&lr, 8000));
    CHECK("ViT-L weight decay at 276,799 = 0.3587 (reference)", fabs(wd_end - 0.3587) < 5e-5, "%.6g", wd_end);
    CHECK("ViT-L momentum at 276,799 = 0.99899 (reference)", fabs(m_end - 0.99899) < 5e-6, "%.8g", m_end);
    CHECK("ViT-L schedules return final from 276,800", poa_cosine_value(&lr, 276800) == 2e-5 &&
          poa_cosine_value(&wd, 276800) == 0.4 && poa_cosine_value(&momentum, 300000) == 0.9999,
          "%.17g %.17g %.17g", poa_cosine_value(&lr, 276800), poa_cosine_value(&wd, 276800),
          poa_cosine_value(&momentum, 300000));
    int temp_ok = poa_cosine_value(&temp, 0) == 0.04 && poa_cosine_value(&temp, 23999) == 0.07 &&
                  poa_cosine_value(&temp, 24000) == 0.07 && poa_cosine_value(&temp, 276799) == 0.07;
    double temp_mid = poa_cosine_value(&temp, 12000), temp_linear = 0.04 + 0.03 * 12000 / 23999.0;
    CHECK("teacher temp 0.04 -> 0.07 linear over 24,000 its, then 0.07", temp_ok &&
          fabs(temp_mid - temp_linear) < 1e-15, "mid %.17g", temp_mid);
    CHECK("last-layer lr 0 below 800 iterations, the lr from 800",
          last_layer_lr(&lr, 800, 799) == 0 && last_layer_lr(&lr, 800, 800) == poa_cosine_value(&lr, 800) &&
          last_layer_lr(&lr, 800, 800) > 0, "%.17g at 799, %.17g at 800", last_layer_lr(&lr, 800, 799),
          last_layer_lr(&lr, 800, 800));
    printf("  lr(276799) = %.6g, wd = %.6g, momentum = %.8g\n", lr_end, wd_end, m_end);
}

/* ---- parameter groups ---- */

static const poa_param_group *group_of(const poa_vit *m, const poa_param_group *g, const char *name) {
    const poa_vit_tensor *t = poa_vit_find_tensor(m, name);
    if (!t) {
        printf("FAIL ViT-L has no tensor %s\n", name);
        exit(1);
    }
    return &g[t - m->tensors];
}

static void expect_group(const poa_vit *m, const poa_param_group *groups, const char *name,
                         double lr_mult, float wd_mult) {
    const poa_param_group *g = group_of(m, groups, name);
    char label[160];
    snprintf(label, sizeof label, "ViT-L %s: lr x %.6g, wd x %g", name, lr_mult, wd_mult);
    CHECK(label, fabs(g->lr_mult - lr_mult) <= 1e-6 * lr_mult && g->wd_mult == wd_mult && !g->last_layer,
          "lr x %.8g, wd x %g, last_layer %d", g->lr_mult, g->wd_mult, g->last_layer);
}

static void test_vit_groups(void) {
    poa_recipe recipe;
    poa_vit model;
    test_load_model("recipes/vit_l16_ee1200.lua", &recipe, &model);
    poa_param_group *groups = malloc(sizeof *groups * (size_t)model.tensor_count);
    poa_vit_param_groups(&model, 0.9, 0.2, groups);
    double patch = pow(0.9, 25) * 0.2;
    CHECK("patch_embed lr multiplier 0.9^25 x 0.2 = 0.014358 (reference)", fabs(patch - 0.014358) < 5e-7,
          "%.8g", patch);
    expect_group(&model, groups, "patch_embed.proj.weight", patch, 1);
    expect_group(&model, groups, "patch_embed.proj.bias", patch, 0);
    expect_group(&model, groups, "pos_embed", pow(0.9, 25), 1);
    expect_group(&model, groups, "cls_token", pow(0.9, 25), 1);
    expect_group(&model, groups, "mask_token", pow(0.9, 25), 1);
    expect_group(&model, groups, "blocks.0.attn.qkv.linear.weight", pow(0.9, 24), 1);
    expect_group(&model, groups, "blocks.0.attn.qkv.linear.bias", pow(0.9, 24), 0);
    expect_group(&model, groups, "blocks.0.norm1.norm.weight", pow(0.9, 24), 0);
    expect_group(&model, groups, "blocks.0.ls1.gamma", pow(0.9, 24), 0);
    expect_group(&model, groups, "blocks.10.mlp.fc1.linear.weight", pow(0.9, 14), 1);
    expect_group(&model, groups, "blocks.23.mlp.fc2.linear.weight", 0.9, 1);
    expect_group(&model, groups, "blocks.23.ls2.gamma", 0.9, 0);
    expect_group(&model, groups, "norm.norm.weight", 1.0, 0);
    expect_group(&model, groups, "norm.norm.bias", 1.0, 0);
    /* Every tensor: wd 0 exactly for biases, norms and gammas; lr_mult in (0, 1]. */
    int bad = 0;
    for (int i = 0; i < model.tensor_count; i++) {
        const char *name = model.tensors[i].name;
        size_t n = strlen(name);
        int no_decay = (n > 5 && strcmp(name + n - 5, ".bias") == 0) || strstr(name, "norm") || strstr(name, "gamma");
        if (groups[i].wd_mult != (no_decay ? 0.0f : 1.0f) || !(groups[i].lr_mult > 0 && groups[i].lr_mult <= 1) ||
            groups[i].last_layer)
            bad++, printf("  %s: lr x %g wd x %g\n", name, groups[i].lr_mult, groups[i].wd_mult);
    }
    CHECK("ViT-L every tensor: wd 0 iff bias/norm/gamma, lr in (0, 1]", bad == 0, "%d tensors off", bad);
    free(groups);
    poa_vit_free(&model);
}

static void test_head_groups(void) {
    /* Two small heads from poa_heads_init: per head mlp{h}.0/2/4 weight and bias, then
       last_layer{h}.weight_g and weight_v. */
    poa_head_config config = { .heads = 2, .in_dim = 16, .hidden = 8, .bottleneck = 4,
                               .prototypes = { 5, 7 } };
    poa_heads heads;
    poa_error e = { { 0 } };
    if (poa_heads_init(&heads, &config, &e)) {
        CHECK("heads parameter groups", 0, "%s", e.message);
        return;
    }
    poa_param_group *groups = malloc(sizeof *groups * (size_t)heads.tensor_count);
    poa_heads_param_groups(&heads, groups);
    int bad = 0, biases = 0, last = 0;
    for (int i = 0; i < heads.tensor_count; i++) {
        const char *name = heads.tensors[i].name;
        size_t n = strlen(name);
        int is_bias = n > 5 && strcmp(name + n - 5, ".bias") == 0;
        int is_last = strncmp(name, "last_layer", 10) == 0;
        biases += is_bias, last += is_last;
        if (groups[i].lr_mult != 1.0f || groups[i].wd_mult != (is_bias ? 0.0f : 1.0f) ||
            groups[i].last_layer != is_last)
            bad++, printf("  %s: lr x %g wd x %g last %d\n", name, groups[i].lr_mult, groups[i].wd_mult,
                          groups[i].last_layer);
    }
    CHECK("heads: lr x 1, biases wd 0, weights and last_layer weight_g/weight_v wd 1 and last_layer",
          bad == 0 && heads.tensor_count == 16 && biases == 6 && last == 4,
          "%d tensors off; %d tensors, %d biases, %d last-layer", bad, heads.tensor_count, biases, last);
    free(groups);
    poa_heads_free(&heads);
}

/* ---- thread-count independence ---- */

static void test_threads(void) {
    const long n = 200003;
    real *p[2], *g[2], *m[2], *v[2], *t[2];
    double norm[2];
    for (int r = 0; r < 2; r++) {
        p[r] = malloc(sizeof(real) * n), g[r] = malloc(sizeof(real) * n), t[r] = malloc(sizeof(real) * n);
        m[r] = calloc(n, sizeof(real)), v[r] = calloc(n, sizeof(real));
        test_fill_normal(p[r], n, 0, 1, 7, 1);
        test_fill_normal(g[r], n, 0, 0.1, 7, 2);
        test_fill_normal(t[r], n, 0, 1, 7, 3);
        omp_set_num_threads(r == 0 ? 1 : 2);
        poa_adamw_update(p[r], g[r], m[r], v[r], n, 1e-3, 0.05, 0.9, 0.999, 1e-8, 1);
        poa_adamw_update(p[r], g[r], m[r], v[r], n, 1e-3, 0.05, 0.9, 0.999, 1e-8, 2);
        poa_ema_update(t[r], p[r], n, 0.996);
        norm[r] = poa_clip_grad_norm(g[r], n, 1.5);
    }
    omp_set_num_threads(omp_get_num_procs());
    int same = norm[0] == norm[1] && !memcmp(p[0], p[1], sizeof(real) * n) &&
               !memcmp(m[0], m[1], sizeof(real) * n) && !memcmp(v[0], v[1], sizeof(real) * n) &&
               !memcmp(t[0], t[1], sizeof(real) * n) && !memcmp(g[0], g[1], sizeof(real) * n);
    CHECK("adamw, ema and clipping give the same bits on 1 and 2 threads", same && norm[0] > 1.5,
          "norms %.17g %.17g", norm[0], norm[1]);
    for (int r = 0; r < 2; r++) free(p[r]), free(g[r]), free(m[r]), free(v[r]), free(t[r]);
}

int main(void) {
    poa_error e = { { 0 } };
    if (poa_safetensors_open(&optim_file, FIXTURES "optim_" REAL_NAME ".safetensors", &e) ||
        poa_safetensors_open(&schedule_file, FIXTURES "optim_schedules.safetensors", &e)) {
        printf("FAIL %s\n", e.message);
        return 1;
    }
    test_adamw();
    test_clip("big");
    test_clip("small");
    test_ema();
    test_schedules();
    test_vit_groups();
    test_head_groups();
    test_threads();
    poa_safetensors_close(&optim_file);
    poa_safetensors_close(&schedule_file);
    CHECK_EXIT();
}
