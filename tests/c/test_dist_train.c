/* test_dist_train.c: data parallelism is the same training as one process on the global
   batch. Two forked ranks on localhost, each with B images, run two optimizer steps; one
   process runs the same two steps on the 2B images. The parameters (student, teacher,
   backbone and heads) and the logged losses must agree to float tolerance, which needs the
   teacher's Sinkhorn-Knopp over the global batch (its max, total and prototype sums
   all-reduced) and the gradients averaged before clipping; the two ranks must hold the same
   bits. What makes the two runs the same computation in exact arithmetic: train.elastic=false
   (the elastic draws differ per rank by design), drop path 0 (its keep count is per batch),
   KoLeo weight 0 (its neighbours are searched within each rank's batch, as the reference's
   are), and the same iBOT masks per image (cut from the global batch).
   The same again with the GPU step (runtime/cuda_train.c) in each rank, emulated on the host
   (tests/c/cuda_emulator.h) with its reductions over the TCP rendezvous in place of NCCL
   (poa_cuda_reduce with no communicator): the GPU step's data parallelism against the same
   one-process CPU run. */
#include <lua.h>
#include <math.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "free_port.h"
#include "cuda_emulator.h"
#include "cuda_train.h"
#include "data_synthetic.h"
#include "dist.h"
#include "trainer.h"

enum { STEPS = 2, WORLD = 2, B = 4 };
static const char *output = "build/tests/dist_train";

static int load_config(poa_train_config *config, int batch, poa_error *e) {
    lua_State *L = poa_lua_open(e);
    char batch_override[64];
    snprintf(batch_override, sizeof batch_override, "train.batch_size=%d", batch);
    const char *overrides[] = { "optim.warmup_epochs=0", "train.elastic=false", "model.drop_path_rate=0",
                                "loss.koleo_weight=0", "optim.base_lr=0.02", "optim.eps=1e-3", batch_override };
    int rc = !L || poa_train_config_load(L, "tests/recipes/tiny_train.lua", overrides, 7, config, e);
    if (L) lua_close(L);
    return rc ? -1 : 0;
}

static int open_trainer(poa_trainer *t, int batch, int rank, int world) {
    poa_error e = { { 0 } };
    poa_train_config config;
    int rc = load_config(&config, batch, &e);
    if (rc == 0) {
        config.rank = rank, config.world_size = world;
        rc = poa_trainer_init(t, &config, &e);
    }
    if (rc) printf("FAIL trainer (rank %d): %s\n", rank, e.message);
    return rc;
}

/* The global batches of the steps (2B images each), the same in every process. */
static int make_global(poa_batch global[STEPS]) {
    poa_error e = { { 0 } };
    poa_train_config config;
    int rc = load_config(&config, WORLD * B, &e);
    for (int s = 0; s < STEPS && rc == 0; s++) rc = poa_synthetic_batch(&global[s], &config, 11 + (uint64_t)s, &e);
    if (rc == 0) poa_train_config_free(&config);
    if (rc) printf("FAIL global batches: %s\n", e.message);
    return rc;
}

/* Rank `rank`'s B images of the global batch g (2B images), crops and iBOT masks alike. */
static void cut_shard(const poa_batch *g, int rank, poa_batch *s) {
    const int G = g->global_count, L = g->local_count, T = g->masks.tokens;
    const long global_image = 3L * g->global_size * g->global_size, local_image = 3L * g->local_size * g->local_size;
    for (int c = 0; c < G; c++)
        memcpy(s->global_crops + (long)c * B * global_image,
               g->global_crops + ((long)c * WORLD * B + rank * B) * global_image,
               sizeof(float) * (size_t)(B * global_image));
    for (int c = 0; c < L; c++)
        memcpy(s->local_crops + (long)c * B * local_image,
               g->local_crops + ((long)c * WORLD * B + rank * B) * local_image,
               sizeof(float) * (size_t)(B * local_image));
    s->masks.masked = 0;
    for (int c = 0; c < G; c++)
        for (int b = 0; b < B; b++) {
            const int slot = c * B + b;
            unsigned char *m = s->masks.masks + (long)slot * T;
            memcpy(m, g->masks.masks + (long)(c * WORLD * B + rank * B + b) * T, (size_t)T);
            int count = 0;
            for (int i = 0; i < T; i++) count += m[i];
            for (int i = 0; i < T; i++)
                if (m[i]) {
                    s->masks.indices[s->masks.masked] = slot * T + i;
                    s->masks.weights[s->masks.masked++] = 1.0f / (float)count;
                }
        }
}

/* What a run leaves: every parameter set, then the losses of its steps. */
typedef struct result {
    long n, nh;
    real *student, *teacher, *student_heads, *teacher_heads;
    double loss[STEPS], ibot[STEPS], grad_norm[STEPS][2];
    real *grads, *grads_heads; /* the first step's, as AdamW gets them (before clipping) */
} result;

/* The step's gradients, averaged over the ranks, before poa_trainer_end_step clips them. */
static void keep_grads(const poa_trainer *t, result *r, int step) {
    if (step) return;
    const long n = t->model.parameter_count, nh = t->heads.parameter_count;
    r->grads = malloc(sizeof(real) * (size_t)n), r->grads_heads = malloc(sizeof(real) * (size_t)nh);
    memcpy(r->grads, t->grads, sizeof(real) * (size_t)n);
    memcpy(r->grads_heads, t->grads_heads, sizeof(real) * (size_t)nh);
}

static void keep(const poa_trainer *t, result *r, int step) {
    r->loss[step] = t->last.loss, r->ibot[step] = t->last.ibot;
    r->grad_norm[step][0] = t->last.grad_norm_backbone, r->grad_norm[step][1] = t->last.grad_norm_heads;
    if (step + 1 < STEPS) return;
    r->n = t->model.parameter_count, r->nh = t->heads.parameter_count;
    real **to[] = { &r->student, &r->teacher, &r->student_heads, &r->teacher_heads };
    const real *from[] = { t->student, t->teacher, t->student_heads, t->teacher_heads };
    for (int i = 0; i < 4; i++) {
        long count = i < 2 ? r->n : r->nh;
        *to[i] = malloc(sizeof(real) * (size_t)count);
        memcpy(*to[i], from[i], sizeof(real) * (size_t)count);
    }
}

static int write_result(const result *r, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(r, sizeof *r, 1, f) == 1;
    const real *parts[] = { r->student, r->teacher, r->grads, r->student_heads, r->teacher_heads, r->grads_heads };
    for (int i = 0; i < 6; i++) {
        long count = i < 3 ? r->n : r->nh;
        ok = ok && fwrite(parts[i], sizeof(real), (size_t)count, f) == (size_t)count;
    }
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int read_result(result *r, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int ok = fread(r, sizeof *r, 1, f) == 1;
    real **parts[] = { &r->student, &r->teacher, &r->grads, &r->student_heads, &r->teacher_heads, &r->grads_heads };
    for (int i = 0; i < 6; i++) {
        long count = ok ? (i < 3 ? r->n : r->nh) : 0;
        *parts[i] = malloc(sizeof(real) * (size_t)(count > 0 ? count : 1));
        ok = ok && fread(*parts[i], sizeof(real), (size_t)count, f) == (size_t)count;
    }
    fclose(f);
    return ok ? 0 : -1;
}

static void free_result(result *r) {
    free(r->student), free(r->teacher), free(r->student_heads), free(r->teacher_heads);
    free(r->grads), free(r->grads_heads);
}

/* One rank of the data-parallel run; writes its result to <output>/rank<r>.bin
   (<output>/gpu_rank<r>.bin with gpu: the GPU step, emulated). */
static int rank_main(int rank, int port, int gpu) {
    poa_batch global[STEPS];
    poa_trainer t;
    if (make_global(global) || open_trainer(&t, B, rank, WORLD)) return 1;
    poa_dist d;
    poa_dist_single(&d);
    d.rank = rank, d.world_size = WORLD, d.master_port = port, d.timeout_seconds = 60;
    snprintf(d.master_addr, sizeof d.master_addr, "127.0.0.1");
    poa_error e = { { 0 } };
    t.dist = &d;
    poa_batch shard;
    int rc = poa_dist_connect(&d, &e) || poa_trainer_sync(&t, &e) || poa_synthetic_batch(&shard, &t.config, 0, &e);
    result r;
    memset(&r, 0, sizeof r);
    step_emulator em = { .scratch_count = 4L << 20 };
    poa_cuda_emulator callbacks = { .context = &em, .launch = emulate_step_launch, .gemm = emulate_step_gemm };
    poa_cuda_exec exec = { .emulator = &callbacks };
    poa_cuda_reduce reduce = { .dist = &d };
    poa_cuda_train g;
    if (gpu && rc == 0) {
        em.scratch = calloc((size_t)em.scratch_count, sizeof(float));
        rc = !em.scratch || poa_cuda_train_init(&g, &t, &exec, 0, &e);
        g.reduce = &reduce;
    }
    for (int s = 0; s < STEPS && rc == 0; s++) {
        cut_shard(&global[s], rank, &shard);
        if (!gpu) {
            poa_trainer_begin_step(&t);
            rc = poa_trainer_micro_batch(&t, &shard, 0, &e) || poa_trainer_reduce_step(&t, &e);
            if (rc == 0) keep_grads(&t, &r, s), poa_trainer_end_step(&t);
        } else {
            poa_cuda_train_begin_step(&g);
            rc = poa_cuda_train_micro_batch(&g, &shard, 0, &e) || poa_cuda_train_reduce_step(&g, &e) ||
                 poa_cuda_exec_download(&g.exec, t.grads, g.grads, sizeof(real) * (size_t)g.n, &e) ||
                 poa_cuda_exec_download(&g.exec, t.grads_heads, g.grads + sizeof(real) * (size_t)g.n,
                                        sizeof(real) * (size_t)g.nh, &e);
            if (rc == 0) keep_grads(&t, &r, s);
            if (rc == 0) rc = poa_cuda_train_end_step(&g, &e) || poa_cuda_train_download(&g, &e);
        }
        if (rc == 0) keep(&t, &r, s);
    }
    if (gpu && em.scratch) poa_cuda_train_free(&g);
    free(em.scratch);
    char path[256];
    snprintf(path, sizeof path, "%s/%srank%d.bin", output, gpu ? "gpu_" : "", rank);
    if (rc == 0) rc = write_result(&r, path);
    if (rc) fprintf(stderr, "rank %d: %s\n", rank, e.message);
    free_result(&r);
    poa_synthetic_batch_free(&shard);
    for (int s = 0; s < STEPS; s++) poa_synthetic_batch_free(&global[s]);
    poa_dist_close(&d);
    poa_trainer_free(&t);
    return rc ? 1 : 0;
}


/* max |a - b| / max |b - before| over n values: the difference against the size of the update. */
static double versus_update(const real *a, const real *b, const real *before, long n, double *largest_diff) {
    double diff = 0, update = 0;
    for (long i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - b[i]));
        update = fmax(update, fabs((double)b[i] - before[i]));
    }
    *largest_diff = diff;
    return update > 0 ? diff / update : INFINITY;
}

/* max over values of |a - b| / max(|b|, floor): elementwise relative, with a floor for values
   near 0 (a hundredth of the tensor's largest magnitude). */
static double relative(const real *a, const real *b, long n) {
    double largest = 0, worst = 0;
    for (long i = 0; i < n; i++) largest = fmax(largest, fabs((double)b[i]));
    for (long i = 0; i < n; i++)
        worst = fmax(worst, fabs((double)a[i] - b[i]) / fmax(fabs((double)b[i]), 0.01 * largest));
    return worst;
}

/* The ranks' results against the one-process run: the checks, labelled with tag. */
static void compare_ranks(const char *tag, int ranks_ok, const result *single, const real *before,
                          const real *before_heads, long n, long nh, int masked, const char *prefix) {
    char label[256];
    snprintf(label, sizeof label, "%s2 ranks x 4 images: two steps with iBOT on", tag);
    CHECK(label, ranks_ok && masked > 0, "ranks ok %d, masked %d", ranks_ok, masked);
    result ranks[WORLD];
    memset(ranks, 0, sizeof ranks);
    char path[256];
    for (int r = 0; r < WORLD && ranks_ok; r++) {
        snprintf(path, sizeof path, "%s/%srank%d.bin", output, prefix, r);
        if (read_result(&ranks[r], path) || ranks[r].n != n || ranks[r].nh != nh) ranks_ok = 0;
    }
    if (!ranks_ok) {
        snprintf(label, sizeof label, "%sthe ranks' results", tag);
        CHECK(label, 0, "missing or wrong in %s", output);
        return;
    }
    const result *two = &ranks[0];
    int same = 1;
    for (int r = 1; r < WORLD; r++)
        same = same && !memcmp(ranks[r].student, two->student, sizeof(real) * (size_t)n) &&
               !memcmp(ranks[r].teacher, two->teacher, sizeof(real) * (size_t)n) &&
               !memcmp(ranks[r].student_heads, two->student_heads, sizeof(real) * (size_t)nh) &&
               !memcmp(ranks[r].teacher_heads, two->teacher_heads, sizeof(real) * (size_t)nh) &&
               !memcmp(ranks[r].loss, two->loss, sizeof two->loss);
    snprintf(label, sizeof label, "%severy rank holds the same parameters and logs the same losses, bit for bit", tag);
    CHECK(label, same, "they differ");

    double grad_rel[2] = { 0, 0 };
    for (int m = 0; m < 2; m++) {
        const real *a = m ? two->grads_heads : two->grads, *b = m ? single->grads_heads : single->grads;
        double largest = 0, diff = 0;
        for (long i = 0; i < (m ? nh : n); i++) {
            largest = fmax(largest, fabs((double)b[i]));
            diff = fmax(diff, fabs((double)a[i] - b[i]));
        }
        grad_rel[m] = diff / largest;
    }
    printf("  %sfirst step's gradients: max |difference| / max |gradient| %.2e backbone, %.2e heads; "
           "gradient norms %.9g %.9g (2 ranks), %.9g %.9g (1 process)\n", tag, grad_rel[0], grad_rel[1],
           two->grad_norm[0][0], two->grad_norm[0][1], single->grad_norm[0][0], single->grad_norm[0][1]);
    snprintf(label, sizeof label, "%sthe first step's gradients, averaged over the ranks, are the global batch's "
             "(within 1e-5 of the largest)", tag);
    CHECK(label, grad_rel[0] < 1e-5 && grad_rel[1] < 1e-5, "backbone %.3g, heads %.3g", grad_rel[0], grad_rel[1]);
    double diff_backbone, diff_heads;
    double update_backbone = versus_update(two->student, single->student, before, n, &diff_backbone);
    double update_heads = versus_update(two->student_heads, single->student_heads, before_heads, nh, &diff_heads);
    double rel[4] = { relative(two->student, single->student, n), relative(two->teacher, single->teacher, n),
                      relative(two->student_heads, single->student_heads, nh),
                      relative(two->teacher_heads, single->teacher_heads, nh) };
    double worst = fmax(fmax(rel[0], rel[1]), fmax(rel[2], rel[3]));
    printf("  %safter %d steps, 2 ranks x %d vs 1 process x %d images: max relative difference %.2e "
           "(student %.2e, teacher %.2e, student heads %.2e, teacher heads %.2e); max |difference| "
           "%.2e backbone, %.2e heads, = %.2e and %.2e of the largest change of a parameter\n",
           tag, STEPS, B, WORLD * B, worst, rel[0], rel[1], rel[2], rel[3], diff_backbone, diff_heads,
           update_backbone, update_heads);
    snprintf(label, sizeof label, "%s2 ranks x B images train the same parameters as 1 process x 2B images "
             "(1e-5 relative)", tag);
    CHECK(label, worst < 1e-5 && update_backbone < 1e-4 && update_heads < 1e-4, "max relative difference %.3g",
          worst);
    double loss_diff = 0;
    for (int s = 0; s < STEPS; s++) {
        loss_diff = fmax(loss_diff, fabs(two->loss[s] - single->loss[s]) / fabs(single->loss[s]));
        printf("  %sstep %d: loss %.9g (2 ranks) %.9g (1 process), iBOT %.9g %.9g\n", tag, s + 1, two->loss[s],
               single->loss[s], two->ibot[s], single->ibot[s]);
    }
    snprintf(label, sizeof label, "%sthe logged loss is the mean over the global batch (1e-6 relative)", tag);
    CHECK(label, loss_diff < 1e-6, "relative difference %.3g", loss_diff);
    for (int r = 0; r < WORLD; r++) free_result(&ranks[r]);
}

static int wait_ranks(const pid_t *pids) {
    int ok = 1;
    for (int r = 0; r < WORLD; r++) {
        int status = 0;
        waitpid(pids[r], &status, 0);
        ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    return ok;
}

int main(void) {
    mkdir("build/tests", 0777), mkdir(output, 0777);
    /* The ranks first (the CPU step's, then the emulated GPU step's): a process forked after
       OpenMP has run must not use it again. */
    pid_t pids[2][WORLD];
    fflush(stdout);
    for (int gpu = 0; gpu < 2; gpu++) {
        int port = free_port();
        for (int r = 0; r < WORLD; r++) {
            pids[gpu][r] = fork();
            if (pids[gpu][r] == 0) _exit(rank_main(r, port, gpu));
        }
    }
    /* The one-process run on the same global batches. */
    poa_trainer one;
    poa_batch global[STEPS];
    if (make_global(global) || open_trainer(&one, WORLD * B, 0, 1)) return 1;
    const long n = one.model.parameter_count, nh = one.heads.parameter_count;
    real *before = malloc(sizeof(real) * (size_t)n), *before_heads = malloc(sizeof(real) * (size_t)nh);
    memcpy(before, one.student, sizeof(real) * (size_t)n);
    memcpy(before_heads, one.student_heads, sizeof(real) * (size_t)nh);
    int masked = global[0].masks.masked;

    result single;
    memset(&single, 0, sizeof single);
    poa_error e = { { 0 } };
    for (int s = 0; s < STEPS; s++) {
        poa_trainer_begin_step(&one);
        if (poa_trainer_micro_batch(&one, &global[s], 0, &e)) printf("FAIL one-process step: %s\n", e.message);
        keep_grads(&one, &single, s);
        poa_trainer_end_step(&one);
        keep(&one, &single, s);
    }
    int cpu_ok = wait_ranks(pids[0]), gpu_ok = wait_ranks(pids[1]);
    compare_ranks("", cpu_ok, &single, before, before_heads, n, nh, masked, "");
    compare_ranks("GPU step (emulated): ", gpu_ok, &single, before, before_heads, n, nh, masked, "gpu_");

    free_result(&single);
    for (int s = 0; s < STEPS; s++) poa_synthetic_batch_free(&global[s]);
    free(before), free(before_heads);
    poa_trainer_free(&one);
    CHECK_EXIT();
}
