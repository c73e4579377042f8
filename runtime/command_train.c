/* command_train.c: `poa train <recipe.lua> [section.field=value ...] [--resume PATH|auto]
   [--init FILE] [--steps N]`: the training loop with a live progress line, JSON-lines metrics, atomic
   checkpoints (every train.checkpoint_every steps, at the end, and on SIGINT/SIGTERM),
   keeping the last train.keep_checkpoints. Launched as several processes (torchrun or Slurm
   variables, runtime/dist.h) it is data parallel: each rank loads its own shard of the data
   and draws its own elastic members, the teacher targets and the gradients are reduced over
   all of them, and only rank 0 prints progress and writes metrics and checkpoints.
   --device auto (the default) runs the step on the GPU (runtime/cuda_train.c, bf16 GEMM
   operands unless --precision fp32) when libcuda finds one, else on the CPU backend and says so
   once; --device cpu and --device gpu choose. --init FILE starts the student and the teacher
   from a state dict under the official POA names (backbone.*, dino_head.*; an official
   checkpoint's student converted to safetensors) instead of the recipe's initialisation. */
#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "commands.h"
#include "cuda_train.h"
#include "data_recipe.h"
#include "dist.h"
#include "files.h"
#include "progress.h"
#include "trainer.h"

static volatile sig_atomic_t stop_requested;
static void on_signal(int signal_number) { stop_requested = signal_number; }

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct train_options {
    const char *recipe, *resume, *init;
    const char *overrides[64];
    int override_count;
    long max_steps; /* 0: until the schedule ends */
    const char *device, *precision; /* auto|cpu|gpu, bf16|fp32 */
} train_options;

static int parse(int argc, char **argv, train_options *o, poa_error *e) {
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--resume") == 0 || strcmp(argv[i], "--steps") == 0 ||
            strcmp(argv[i], "--device") == 0 || strcmp(argv[i], "--precision") == 0 ||
            strcmp(argv[i], "--init") == 0) {
            if (i + 1 >= argc) return poa_fail(e, "%s needs a value", argv[i]);
            const char *option = argv[i], *value = argv[++i];
            if (option[2] == 'r') o->resume = value;
            else if (option[2] == 'i') o->init = value;
            else if (option[2] == 's') {
                char *end;
                o->max_steps = strtol(value, &end, 10);
                if (end == value || *end || o->max_steps < 1)
                    return poa_fail(e, "--steps %s: expected a positive whole number of steps", value);
            }
            else if (option[2] == 'd') o->device = value;
            else o->precision = value;
        } else if (argv[i][0] == '-') {
            return poa_fail(e, "unknown option %s", argv[i]);
        } else if (strchr(argv[i], '=')) {
            if (o->override_count == 64) return poa_fail(e, "too many overrides");
            o->overrides[o->override_count++] = argv[i];
        } else if (!o->recipe) {
            o->recipe = argv[i];
        } else {
            return poa_fail(e, "unexpected argument %s", argv[i]);
        }
    }
    if (!o->recipe)
        return poa_fail(e, "usage: poa train <recipe.lua> [section.field=value ...] "
                           "[--resume PATH|auto] [--init FILE] [--steps N] [--device auto|cpu|gpu] [--precision bf16|fp32]");
    if (!o->device) o->device = "auto";
    if (!o->precision) o->precision = "bf16";
    if (strcmp(o->device, "auto") && strcmp(o->device, "cpu") && strcmp(o->device, "gpu"))
        return poa_fail(e, "--device %s: auto, cpu or gpu", o->device);
    if (strcmp(o->precision, "bf16") && strcmp(o->precision, "fp32"))
        return poa_fail(e, "--precision %s: bf16 or fp32", o->precision);
    return 0;
}

/* The steps of the newest checkpoint_<step>.safetensors files of dir (at most max of them),
   newest first; returns how many. */
static int list_checkpoints(const char *dir, long *steps, int max) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *entry;
    while (d && (entry = readdir(d))) {
        long step;
        char tail[32];
        if (sscanf(entry->d_name, "checkpoint_%ld.%31s", &step, tail) != 2 || strcmp(tail, "safetensors")) continue;
        int at = n < max ? n++ : max; /* insert in order, dropping the oldest when full */
        while (at > 0 && steps[at - 1] < step) {
            if (at < max) steps[at] = steps[at - 1];
            at--;
        }
        if (at < max) steps[at] = step;
    }
    if (d) closedir(d);
    return n;
}

/* Where the steps run: the CPU trainer alone, or the GPU step over it. */
typedef struct device {
    int gpu, nccl_open;
    poa_cuda cuda;
    poa_cublaslt lt;
    poa_cuda_train g;
    poa_nccl nccl;
    poa_cuda_reduce reduce;
} device;

/* With several processes: an NCCL communicator over the ranks (device LOCAL_RANK each). */
static int device_nccl(device *d, poa_dist *dist, poa_error *e) {
    if (dist->world_size <= 1) return 0;
    if (poa_nccl_load(&d->nccl, e) || poa_nccl_init(&d->nccl, dist, e)) return -1;
    d->nccl_open = 1;
    d->reduce = (poa_cuda_reduce){ .dist = dist, .nccl = &d->nccl, .cuda = &d->cuda };
    d->g.reduce = &d->reduce;
    return 0;
}

static int device_open(device *d, const train_options *o, poa_trainer *t, poa_error *e) {
    memset(d, 0, sizeof *d);
    if (!strcmp(o->device, "cpu")) return 0;
    if (!strcmp(o->device, "gpu")) {
        if (poa_cuda_open(&d->cuda, e)) return -1;
    } else {
        int opened = poa_cuda_open_or_cpu(&d->cuda, e);
        if (opened <= 0) return opened;
    }
    poa_cuda_exec exec = { .cuda = &d->cuda, .lt = &d->lt };
    if (poa_cublaslt_init(&d->lt, &d->cuda, 0, e)) {
        poa_cuda_close(&d->cuda);
        return -1;
    }
    if (poa_cuda_train_init(&d->g, t, &exec, !strcmp(o->precision, "bf16"), e)) {
        poa_cublaslt_free(&d->lt);
        poa_cuda_close(&d->cuda);
        return -1;
    }
    d->gpu = 1;
    if (device_nccl(d, t->dist, e)) return -1;
    if (t->config.rank == 0)
        fprintf(stderr, "poa train: GPU %s (sm_%d%d), %s%s\n", d->cuda.device_name, d->cuda.major, d->cuda.minor,
                o->precision, d->nccl_open ? ", NCCL over the ranks" : "");
    return 0;
}

static void device_close(device *d) {
    if (d->nccl_open) poa_nccl_close(&d->nccl);
    if (!d->gpu) return;
    poa_cuda_train_free(&d->g);
    poa_cublaslt_free(&d->lt);
    poa_cuda_close(&d->cuda);
}

static int save_checkpoint(const poa_trainer *t, poa_error *e) {
    char path[1200];
    snprintf(path, sizeof path, "%s/checkpoint_%ld.safetensors", t->config.output, t->step);
    if (poa_trainer_save(t, path, e)) return -1;
    long steps[256];
    int n = list_checkpoints(t->config.output, steps, 256);
    for (int i = t->config.keep_checkpoints; i < n; i++) {
        snprintf(path, sizeof path, "%s/checkpoint_%ld.safetensors", t->config.output, steps[i]);
        unlink(path);
    }
    return 0;
}

/* The progress line (stdout: redrawn on a terminal, one line each otherwise) and a metrics line. */
static void log_step(const poa_trainer *t, poa_progress *progress, FILE *metrics, double images_per_second,
                     double eta) {
    const poa_step_stats *s = &t->last;
    char line[400], clock[32];
    poa_progress_clock(eta, clock, sizeof clock);
    snprintf(line, sizeof line,
             "step %ld/%ld | %.1f img/s | ETA %s | loss %.4f (dino %.4f sv %.4f koleo "
             "%.4f ibot %.4f) | %s %dx%d | lr %.2e%s",
             t->step, t->total_steps, images_per_second, clock, s->loss, s->dino, s->distill, s->koleo, s->ibot,
             t->config.elastic ? "elastic" : "baseline", s->width, s->depth, s->lr,
             s->skipped ? " SKIPPED (NaN)" : "");
    poa_progress_line(progress, line);
    fprintf(metrics,
            "{\"step\": %ld, \"loss\": %.6g, \"dino\": %.6g, \"distill\": %.6g, \"koleo\": %.6g, "
            "\"ibot\": %.6g, \"lr\": %.6g, \"wd\": %.6g, \"momentum\": %.8g, \"teacher_temp\": %.6g, "
            "\"grad_norm_backbone\": %.6g, \"grad_norm_heads\": %.6g, \"elastic\": \"%dx%d\", "
            "\"ibot_active\": %d, \"skipped\": %d, \"images_per_second\": %.4g",
            t->step, s->loss, s->dino, s->distill, s->koleo, s->ibot, s->lr, s->weight_decay,
            s->momentum, s->teacher_temp, s->grad_norm_backbone, s->grad_norm_heads, s->width,
            s->depth, s->ibot_active, s->skipped, images_per_second);
    const poa_step_diagnostics *d = &s->diag;
    if (d->present) /* the CPU step's diagnostics (train_diagnostics.h) */
        fprintf(metrics,
                ", \"target_entropy\": %.6g, \"target_spread\": %.6g, \"teacher_entropy\": %.6g, "
                "\"dout_heads\": [%.6g, %.6g], \"dout_koleo\": [%.6g, %.6g]",
                d->target_entropy, d->target_spread, d->teacher_entropy, sqrt(d->dout_heads_sq[0]),
                sqrt(d->dout_heads_sq[1]), sqrt(d->dout_koleo_sq[0]), sqrt(d->dout_koleo_sq[1]));
    if (d->features_present)
        fprintf(metrics, ", \"cls_cosine\": %.6g, \"cls_std\": %.6g, \"cls_rank\": %.6g", d->cls_cosine,
                d->cls_std, d->cls_rank);
    fprintf(metrics, "}\n");
    fflush(metrics);
}

/* All ranks stop together: a signal seen by any of them stops every one at the same step. */
static int stop_everywhere(poa_dist *dist, int *stop, poa_error *e) {
    double flag = stop_requested;
    if (poa_dist_all_reduce_double(dist, &flag, 1, POA_DIST_MAX, e)) return -1;
    *stop = flag != 0;
    if (*stop && !stop_requested) stop_requested = (sig_atomic_t)flag;
    return 0;
}

/* The trainer's starting point: a checkpoint to resume from (--resume), else --init's
   state dict, else the recipe's initialisation (already in t). */
static int start_from(const train_options *o, poa_trainer *t, int leader, poa_error *e) {
    char path[1200] = "";
    long steps[1];
    if (o->resume && strcmp(o->resume, "auto") == 0 && list_checkpoints(t->config.output, steps, 1))
        snprintf(path, sizeof path, "%s/checkpoint_%ld.safetensors", t->config.output, steps[0]);
    else if (o->resume && strcmp(o->resume, "auto"))
        snprintf(path, sizeof path, "%s", o->resume);
    if (path[0]) {
        if (poa_trainer_load(t, path, e)) return -1;
        if (leader)
            fprintf(stderr, "poa train: resumed %s at step %ld%s%s%s\n", path, t->step,
                    o->init ? " (--init " : "", o->init ? o->init : "", o->init ? " is for a fresh start: not used)" : "");
        return 0;
    }
    if (!o->init) return 0;
    if (poa_trainer_init_from(t, o->init, e)) return -1;
    if (leader) fprintf(stderr, "poa train: student and teacher initialised from %s\n", o->init);
    return 0;
}

static int train(const train_options *o, poa_dist *dist, poa_error *e) {
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    poa_train_config config;
    int rc = poa_train_config_load(L, o->recipe, o->overrides, o->override_count, &config, e);
    lua_close(L);
    if (rc) return -1;
    config.rank = dist->rank, config.world_size = dist->world_size;
    const int leader = dist->rank == 0;
    if (!config.train_data[0])
        return poa_fail(e, "%s: field 'data.train' is empty: give an ImageFolder tree "
                           "(data.train=PATH on the command line)", o->recipe);
    /* The default thread counts share the machine between its processes (torchrun's
       LOCAL_WORLD_SIZE; Slurm binds its tasks to their own cores). */
    long cores = sysconf(_SC_NPROCESSORS_ONLN) / dist->local_world_size;
    if (cores < 1) cores = 1;
    poa_set_threads(config.threads > 0 ? config.threads : (int)cores);
    poa_dataset dataset;
    if (poa_dataset_open(&dataset, config.train_data, e)) return -1;
    poa_trainer t;
    if (poa_trainer_init(&t, &config, e)) return -1;
    t.dist = dist;
    if (leader && poa_make_folders(t.config.output, e)) return -1;
    if (start_from(o, &t, leader, e)) return -1;
    if (poa_dist_connect(dist, e) || poa_trainer_sync(&t, e)) return -1;
    device dev;
    if (device_open(&dev, o, &t, e)) return -1;
    poa_loader_config lc;
    poa_loader_config_from_recipe(&lc, &t.config.recipe, &dataset, t.config.batch_size);
    lc.threads = t.config.loader_threads > 0 ? t.config.loader_threads : (int)cores;
    lc.seed = t.config.seed;
    lc.rank = dist->rank, lc.world_size = dist->world_size;
    lc.first_step = t.step * t.config.accumulate;
    lc.mask_probability = t.config.mask_probability;
    lc.mask_ratio_min = t.config.mask_ratio_min, lc.mask_ratio_max = t.config.mask_ratio_max;
    poa_loader *loader;
    if (poa_loader_create(&loader, &lc, e)) return -1;
    char metrics_path[1200];
    snprintf(metrics_path, sizeof metrics_path, "%s/metrics.jsonl", t.config.output);
    FILE *metrics = leader ? fopen(metrics_path, "a") : NULL;
    if (leader && !metrics) return poa_fail(e, "cannot write %s: %s", metrics_path, strerror(errno));
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    char ranks[64] = "";
    if (dist->world_size > 1) snprintf(ranks, sizeof ranks, "%d ranks (%s) x ", dist->world_size, dist->source);
    const poa_recipe *family = &t.config.recipe;
    int members = ((family->width_max - family->width_min) / family->width_step + 1) *
                  ((family->depth_max - family->depth_min) / family->depth_step + 1);
    char pool[96];
    if (t.config.elastic) snprintf(pool, sizeof pool, "elastic draws from a pool of %d slots", t.config.slot_count);
    else snprintf(pool, sizeof pool, "elastic branch off: the intact network alone");
    if (leader)
        fprintf(stderr, "poa train: %s, %d members (%s), %ld steps of %s%d x %d images, output %s\n",
                family->name, members, pool, t.total_steps, ranks, t.config.accumulate,
                t.config.batch_size, t.config.output);
    long end = o->max_steps ? t.step + o->max_steps : t.total_steps;
    if (end > t.total_steps) end = t.total_steps;
    double started = seconds_now(), last = started;
    const double images_per_step = (double)t.config.batch_size * t.config.accumulate * dist->world_size;
    long first = t.step;
    int stop = stop_requested != 0;
    poa_progress progress;
    poa_progress_start(&progress, stdout, "poa train", end - first, "steps");
    while (rc == 0 && t.step < end && !stop) {
        if (dev.gpu) poa_cuda_train_begin_step(&dev.g);
        else poa_trainer_begin_step(&t);
        for (int m = 0; m < t.config.accumulate && rc == 0; m++) {
            const poa_batch *batch;
            rc = poa_loader_next(loader, &batch, e);
            if (rc == 0) rc = dev.gpu ? poa_cuda_train_micro_batch(&dev.g, batch, m, e)
                                      : poa_trainer_micro_batch(&t, batch, m, e);
        }
        if (rc == 0) rc = dev.gpu ? poa_cuda_train_reduce_step(&dev.g, e) : poa_trainer_reduce_step(&t, e);
        if (rc) break;
        if (dev.gpu) rc = poa_cuda_train_end_step(&dev.g, e);
        else poa_trainer_end_step(&t);
        if (rc) break;
        double now = seconds_now(), per_step = (now - started) / (double)(t.step - first);
        if (leader && (t.step % t.config.log_every == 0 || t.step == end))
            log_step(&t, &progress, metrics, images_per_step / (now - last), per_step * (double)(end - t.step));
        last = now;
        if (leader && t.step % t.config.checkpoint_every == 0 && t.step < end)
            rc = (dev.gpu && poa_cuda_train_download(&dev.g, e)) || save_checkpoint(&t, e) ? -1 : 0;
        if (rc == 0) rc = dist->world_size > 1 ? stop_everywhere(dist, &stop, e) : (stop = stop_requested != 0, 0);
    }
    poa_progress_break(&progress);
    if (stop_requested && leader) fprintf(stderr, "poa train: signal %d, saving a checkpoint\n", (int)stop_requested);
    if (rc == 0 && leader) rc = (dev.gpu && poa_cuda_train_download(&dev.g, e)) || save_checkpoint(&t, e) ? -1 : 0;
    if (rc == 0 && leader)
        fprintf(stderr, "poa train: step %ld, checkpoint %s/checkpoint_%ld.safetensors\n", t.step,
                t.config.output, t.step);
    if (metrics) fclose(metrics);
    poa_loader_destroy(loader);
    device_close(&dev);
    poa_trainer_free(&t);
    poa_dataset_free(&dataset);
    return rc;
}

int poa_command_train(int argc, char **argv) {
    train_options o;
    poa_error e = { { 0 } };
    if (parse(argc, argv, &o, &e)) {
        fprintf(stderr, "poa train: %s\n", e.message);
        return POA_EXIT_USAGE;
    }
    poa_dist dist;
    if (poa_dist_from_env(&dist, &e)) {
        fprintf(stderr, "poa train: %s\n", e.message);
        return POA_EXIT_FAILED;
    }
    int rc = train(&o, &dist, &e);
    poa_dist_close(&dist);
    if (rc) {
        fprintf(stderr, "poa train: %s\n", e.message);
        return POA_EXIT_FAILED;
    }
    return 0;
}
