/* command_cuda.c: `poa cuda info`, `poa cuda warm` and `poa cuda report`.
   The kernel files of a recipe come from the generator itself (gen/emit.lua's collect and
   cu_text, run in the embedded Lua), so they are exactly build/gen/cuda/vit_*.cu for the
   recipe's widths, for any recipe, built or not. warm compiles them through the NVRTC cache
   (runtime/nvrtc_cache.c) in parallel; report runs ptxas -v on NVRTC's PTX of each and
   prints registers, spills, stack and shared memory per kernel. */
#include <errno.h>
#include <lauxlib.h>
#include <pthread.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "cuda_driver.h"
#include "cuda_train.h"
#include "data_synthetic.h"
#include "nvrtc_cache.h"
#include "progress.h"
#include "recipe.h"

extern char **environ;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct kernel_file {
    const char *name, *source; /* vit_w384_h64_f1536.cu (poa_cuda_sources') */
    /* results */
    int failed;
    poa_nvrtc_outcome outcome;
    size_t bytes;
    poa_error error;
    char *ptxas_output; /* report */
} kernel_file;

typedef struct cuda_options {
    const char *recipe, *arch;
    int jobs;
} cuda_options;

/* The recipe's kernel files (poa_cuda_sources_load: the ViT set of each width, and what every
   GPU run also loads), with the very names and text the runtime compiles, so that a warmed cache
   serves a whole run. */
static int kernel_sources(const char *recipe, poa_cuda_sources *sources, kernel_file **files, int *count,
                          poa_error *e) {
    *files = NULL;
    *count = 0;
    if (poa_cuda_sources_load(sources, recipe, NULL, e)) return -1;
    if (!(*files = calloc((size_t)sources->count, sizeof **files))) return poa_fail(e, "out of memory");
    for (int i = 0; i < sources->count; i++) (*files)[i].name = sources->names[i], (*files)[i].source = sources->texts[i];
    *count = sources->count;
    return 0;
}

static void free_files(kernel_file *files, int count, poa_cuda_sources *sources) {
    for (int i = 0; i < count; i++) free(files[i].ptxas_output);
    free(files);
    poa_cuda_sources_free(sources);
}

/* ---- a small pool of threads over the files ---- */

typedef struct pool {
    kernel_file *files;
    int count, next;
    const char *arch; /* warm: sm_XX; report: the sm_XX ptxas targets */
    const char *ptxas; /* report: the ptxas program; NULL for warm */
    poa_progress progress; /* files done, with an ETA */
    pthread_mutex_t lock;
} pool;

static int run_ptxas(const char *ptxas, const char *arch, const poa_blob *ptx, char **output, poa_error *e) {
    char path[] = "/tmp/poa_ptxas.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return poa_fail(e, "cannot create a temporary file: %s", strerror(errno));
    size_t size = ptx->size && ptx->data[ptx->size - 1] == 0 ? ptx->size - 1 : ptx->size;
    int written = write(fd, ptx->data, size) == (ssize_t)size;
    close(fd);
    if (!written) {
        unlink(path);
        return poa_fail(e, "cannot write %s", path);
    }
    char arch_option[64];
    snprintf(arch_option, sizeof arch_option, "-arch=%s", arch);
    char *argv[] = { (char *)ptxas, arch_option, "-O3", "-v", path, "-o", "/dev/null", NULL };
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0) {
        unlink(path);
        return poa_fail(e, "pipe: %s", strerror(errno));
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    pid_t pid;
    int spawned = posix_spawn(&pid, ptxas, &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(pipe_fds[1]);
    size_t used = 0, capacity = 4096;
    char *text = malloc(capacity);
    for (ssize_t n; text && (n = read(pipe_fds[0], text + used, capacity - used - 1)) > 0;) {
        used += (size_t)n;
        if (capacity - used < 1024) text = realloc(text, capacity *= 2);
    }
    close(pipe_fds[0]);
    int status = 0;
    if (spawned == 0) waitpid(pid, &status, 0);
    unlink(path);
    if (!text) return poa_fail(e, "out of memory");
    text[used] = 0;
    if (spawned != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        poa_fail(e, "%s %s failed: %s%s", ptxas, arch, spawned ? strerror(spawned) : "", text);
        free(text);
        return -1;
    }
    *output = text;
    return 0;
}

static void work_on(pool *p, kernel_file *f) {
    poa_blob blob = { 0 };
    char arch[32];
    /* report: PTX for the virtual architecture, then ptxas for the real one */
    snprintf(arch, sizeof arch, p->ptxas ? "compute_%s" : "%s", p->ptxas ? p->arch + 3 : p->arch);
    if (poa_nvrtc_compile_cached_in(NULL, f->source, f->name, arch, poa_nvrtc_kernel_options,
                                    poa_nvrtc_kernel_option_count, &blob, &f->outcome,
                                    &f->error)) {
        f->failed = 1;
        return;
    }
    f->bytes = blob.size;
    if (p->ptxas && run_ptxas(p->ptxas, p->arch, &blob, &f->ptxas_output, &f->error)) f->failed = 1;
    poa_blob_free(&blob);
}

static void *worker(void *argument) {
    pool *p = argument;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        int i = p->next < p->count ? p->next++ : -1;
        pthread_mutex_unlock(&p->lock);
        if (i < 0) return NULL;
        work_on(p, &p->files[i]);
        poa_progress_add(&p->progress, 1);
    }
}

static void run_pool(kernel_file *files, int count, const char *arch, const char *ptxas, int jobs) {
    pool p = { .files = files, .count = count, .arch = arch, .ptxas = ptxas };
    pthread_mutex_init(&p.lock, NULL);
    poa_progress_start(&p.progress, stdout, ptxas ? "poa cuda report: compiling" : "poa cuda warm: compiling",
                       count, "files");
    if (jobs > count) jobs = count;
    if (jobs > 64) jobs = 64;
    pthread_t threads[64];
    int started = 0;
    for (int t = 1; t < jobs; t++)
        if (pthread_create(&threads[started], NULL, worker, &p) == 0) started++;
    worker(&p); /* this thread works too */
    for (int t = 0; t < started; t++) pthread_join(threads[t], NULL);
    poa_progress_finish(&p.progress);
    pthread_mutex_destroy(&p.lock);
}

/* ---- arguments ---- */

static int parse(int argc, char **argv, cuda_options *o, int needs_recipe, poa_error *e) {
    memset(o, 0, sizeof *o);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    o->jobs = cores < 1 ? 1 : (int)cores;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--arch") == 0 || strcmp(a, "--jobs") == 0) {
            if (i + 1 >= argc) return poa_fail(e, "%s needs a value", a);
            if (a[2] == 'a') o->arch = argv[++i];
            else if ((o->jobs = atoi(argv[++i])) < 1) return poa_fail(e, "--jobs %s: expected a count >= 1", argv[i]);
        } else if (a[0] == '-') {
            return poa_fail(e, "unknown option %s", a);
        } else if (!o->recipe && needs_recipe) {
            o->recipe = a;
        } else {
            return poa_fail(e, "unexpected argument %s", a);
        }
    }
    if (needs_recipe && !o->recipe) return poa_fail(e, "give a recipe, e.g. recipes/vit_l16_ee1200.lua");
    if (o->arch && (strncmp(o->arch, "sm_", 3) != 0 || !o->arch[3]))
        return poa_fail(e, "--arch %s: expected sm_XX, e.g. sm_90", o->arch);
    return 0;
}

/* The architecture: --arch, else the GPU's, else sm_90 (said on stdout). */
static void choose_arch(cuda_options *o, char *arch, size_t size, const char *command) {
    if (o->arch) {
        snprintf(arch, size, "%s", o->arch);
        return;
    }
    poa_cuda cuda;
    poa_error e = { { 0 } };
    if (poa_cuda_open(&cuda, &e) == 0) {
        poa_cuda_arch(&cuda, arch, size);
        printf("poa cuda %s: compiling for this machine's %s (%s)\n", command, cuda.device_name, arch);
        poa_cuda_close(&cuda);
    } else {
        snprintf(arch, size, "sm_90");
        printf("poa cuda %s: %s; compiling for sm_90 (choose with --arch)\n", command, e.message);
    }
}

static int prepare(const cuda_options *o, const char *arch, const char *command, poa_cuda_sources *sources,
                   kernel_file **files, int *count, double *generate_seconds, poa_error *e) {
    char dir[1024];
    if (poa_nvrtc_load(e) || poa_nvrtc_cache_dir(dir, sizeof dir, e)) return -1;
    double start = now();
    if (kernel_sources(o->recipe, sources, files, count, e)) return -1;
    *generate_seconds = now() - start;
    int major, minor;
    poa_nvrtc_version(&major, &minor);
    printf("poa cuda %s: %s: %d kernel files for %s, NVRTC %d.%d, %d threads, cache %s\n", command, o->recipe,
           *count, arch, major, minor, o->jobs < *count ? o->jobs : *count, dir);
    return 0;
}

static int command_warm(int argc, char **argv) {
    double start = now();
    cuda_options o;
    poa_error e = { { 0 } };
    if (parse(argc, argv, &o, 1, &e)) {
        fprintf(stderr, "poa cuda warm: %s\nusage: poa cuda warm <recipe.lua> [--arch sm_XX] [--jobs N]\n", e.message);
        return POA_EXIT_USAGE;
    }
    char arch[32];
    choose_arch(&o, arch, sizeof arch, "warm");
    poa_cuda_sources sources = { 0 };
    kernel_file *files;
    int count;
    double generate_seconds;
    if (prepare(&o, arch, "warm", &sources, &files, &count, &generate_seconds, &e)) {
        fprintf(stderr, "poa cuda warm: %s\n", e.message);
        return POA_EXIT_FAILED;
    }
    double compile_start = now();
    run_pool(files, count, arch, NULL, o.jobs);
    double compile_seconds = now() - compile_start;
    int hits = 0, failures = 0;
    for (int i = 0; i < count; i++) {
        kernel_file *f = &files[i];
        if (f->failed) {
            failures++;
            printf("  %-26s FAILED  %s\n", f->name, f->error.message);
            continue;
        }
        hits += f->outcome.cache_hit;
        printf("  %-26s %-5s %7.3f s   cubin %zu bytes\n", f->name, f->outcome.cache_hit ? "hit" : "miss",
               f->outcome.seconds, f->bytes);
        if (f->outcome.note[0]) printf("    note: %s\n", f->outcome.note);
    }
    const char *kind = failures ? "with failures" : hits == count ? "cached" : hits == 0 ? "cold" : "partly cached";
    printf("%d files: %d compiled, %d from the cache, %d failed; %.2f s wall (%s), generator %.3f s, "
           "command %.2f s\n", count, count - hits - failures, hits, failures, compile_seconds, kind,
           generate_seconds, now() - start);
    free_files(files, count, &sources);
    return failures ? 1 : 0;
}

/* ---- report ---- */

typedef struct kernel_row {
    char name[128];
    int registers, stack, spill_stores, spill_loads, shared, barriers;
} kernel_row;

/* The per-kernel lines of ptxas -v. Returns the number of rows (at most capacity). */
static int parse_ptxas(const char *text, kernel_row *rows, int capacity) {
    int n = -1;
    char line[512];
    for (const char *at = text; *at; at += strcspn(at, "\n") + (at[strcspn(at, "\n")] != 0)) {
        snprintf(line, sizeof line, "%.*s", (int)strcspn(at, "\n"), at);
        const char *p;
        if ((p = strstr(line, "Compiling entry function '")) && n + 1 < capacity) {
            kernel_row *r = &rows[++n];
            memset(r, 0, sizeof *r);
            p += strlen("Compiling entry function '");
            size_t len = strcspn(p, "'");
            snprintf(r->name, sizeof r->name, "%.*s", (int)len, p);
        } else if (n >= 0 && strstr(line, "bytes stack frame")) {
            sscanf(line, " %d bytes stack frame, %d bytes spill stores, %d bytes spill loads", &rows[n].stack,
                   &rows[n].spill_stores, &rows[n].spill_loads);
        } else if (n >= 0 && (p = strstr(line, "Used ")) && strstr(line, "registers")) {
            sscanf(p, "Used %d registers", &rows[n].registers);
            const char *b = strstr(p, "used ");
            if (b) sscanf(b, "used %d barriers", &rows[n].barriers);
            const char *s = strstr(p, " bytes smem");
            if (s) {
                while (s > p && (s[-1] >= '0' && s[-1] <= '9')) s--;
                rows[n].shared = atoi(s);
            }
        }
    }
    return n + 1;
}

static int command_report(int argc, char **argv) {
    cuda_options o;
    poa_error e = { { 0 } };
    if (parse(argc, argv, &o, 1, &e)) {
        fprintf(stderr, "poa cuda report: %s\nusage: poa cuda report <recipe.lua> [--arch sm_XX] [--jobs N]\n",
                e.message);
        return POA_EXIT_USAGE;
    }
    char arch[32], ptxas[1024];
    choose_arch(&o, arch, sizeof arch, "report");
    const char *cuda_home = getenv("CUDA_HOME");
    snprintf(ptxas, sizeof ptxas, "%s/bin/ptxas", cuda_home ? cuda_home : "/usr/local/cuda");
    if (access(ptxas, X_OK) != 0) {
        fprintf(stderr, "poa cuda report: no ptxas at %s (set CUDA_HOME to the CUDA toolkit)\n", ptxas);
        return POA_EXIT_FAILED;
    }
    poa_cuda_sources sources = { 0 };
    kernel_file *files;
    int count;
    double generate_seconds;
    if (prepare(&o, arch, "report", &sources, &files, &count, &generate_seconds, &e)) {
        fprintf(stderr, "poa cuda report: %s\n", e.message);
        return POA_EXIT_FAILED;
    }
    printf("registers and spills from %s -arch=%s -O3 -v on NVRTC's PTX (compute_%s)\n\n", ptxas, arch, arch + 3);
    printf("%-24s %-28s %5s %7s %7s %6s %7s %4s\n", "file", "kernel", "regs", "spill-st", "spill-ld", "stack",
           "smem", "bar");
    run_pool(files, count, arch, ptxas, o.jobs);
    int failures = 0, kernels = 0, spilling = 0, max_registers = -1, max_shared = 0;
    char max_registers_at[300] = "", max_shared_at[300] = "";
    for (int i = 0; i < count; i++) {
        kernel_file *f = &files[i];
        if (f->failed) {
            failures++;
            printf("%-24s FAILED: %s\n", f->name, f->error.message);
            continue;
        }
        kernel_row rows[128];
        int n = parse_ptxas(f->ptxas_output, rows, 128);
        if (n == 0) {
            failures++;
            printf("%-24s FAILED: no kernels in ptxas's output:\n%s\n", f->name, f->ptxas_output);
        }
        for (int k = 0; k < n; k++) {
            kernel_row *r = &rows[k];
            kernels++;
            spilling += r->spill_stores > 0 || r->spill_loads > 0;
            if (r->registers > max_registers) {
                max_registers = r->registers;
                snprintf(max_registers_at, sizeof max_registers_at, "%.127s in %.127s", r->name, f->name);
            }
            if (r->shared > max_shared) {
                max_shared = r->shared;
                snprintf(max_shared_at, sizeof max_shared_at, "%.127s in %.127s", r->name, f->name);
            }
            printf("%-24s %-28s %5d %7d %7d %6d %7d %4d\n", f->name, r->name, r->registers, r->spill_stores,
                   r->spill_loads, r->stack, r->shared, r->barriers);
        }
    }
    printf("\n%d kernels in %d files: %d spill; most registers %d (%s); most shared memory %d bytes (%s)%s\n",
           kernels, count, spilling, max_registers, max_registers_at, max_shared, max_shared_at,
           failures ? "; SOME FILES FAILED" : "");
    free_files(files, count, &sources);
    return failures ? 1 : 0;
}

/* `poa cuda plan <recipe.lua> [--batch B] [--precision bf16|fp32] [section.field=value ...]`:
   the device memory one training step would take (runtime/cuda_train.c's planning run). */
static int command_plan(int argc, char **argv) {
    const char *recipe = NULL, *precision = "bf16";
    const char *overrides[70];
    int count = 0;
    char batch_override[64] = "";
    for (int i = 2; i < argc; i++) {
        if ((!strcmp(argv[i], "--batch") || !strcmp(argv[i], "--precision")) && i + 1 < argc) {
            if (argv[i][2] == 'b') snprintf(batch_override, sizeof batch_override, "train.batch_size=%s", argv[++i]);
            else precision = argv[++i];
        } else if (strchr(argv[i], '=') && count < 64) {
            overrides[count++] = argv[i];
        } else if (argv[i][0] != '-' && !recipe) {
            recipe = argv[i];
        } else {
            recipe = NULL;
            break;
        }
    }
    if (!recipe || (strcmp(precision, "bf16") && strcmp(precision, "fp32"))) {
        fprintf(stderr, "usage: poa cuda plan <recipe.lua> [--batch B] [--precision bf16|fp32] [section.field=value ...]\n");
        return POA_EXIT_USAGE;
    }
    if (batch_override[0]) overrides[count++] = batch_override;
    overrides[count++] = "ibot.activate_epochs=0"; /* iBOT on: its rows count */
    overrides[count++] = "train.accumulate=1";
    poa_error e = { { 0 } };
    lua_State *L = poa_lua_open(&e);
    poa_train_config config;
    poa_trainer t;
    poa_batch b;
    poa_cuda_train_plan plan;
    int rc = !L || poa_train_config_load(L, recipe, overrides, count, &config, &e) ? -1 : 0;
    if (L) lua_close(L);
    if (!rc) rc = poa_trainer_init(&t, &config, &e);
    if (!rc) {
        rc = poa_synthetic_batch(&b, &t.config, 11, &e) ||
             poa_cuda_train_plan_memory(&t, !strcmp(precision, "bf16"), &b, &plan, &e);
        if (!rc) {
            const double g = 1048576.0; /* MiB */
            printf("poa cuda plan: %s, batch %d (%d + %d crops of %d and %d px, %d masked tokens), %s\n", recipe,
                   t.config.batch_size, b.global_count, b.local_count, b.global_size, b.local_size, b.masks.masked,
                   precision);
            printf("  state (student, teacher, gradients, AdamW m and v, two bf16 shadows)  %10.1f MiB\n",
                   plan.state / g);
            printf("  work buffers (head rows, targets, losses, Sinkhorn-Knopp, KoLeo)        %10.1f MiB\n",
                   plan.work / g);
            printf("  teacher pass arena (fp32; the intact global pass shares it)            %10.1f MiB\n",
                   plan.teacher_arena / g);
            printf("  intact local-crop pass arena (fp32; the elastic one shares it)         %10.1f MiB\n",
                   plan.local_arena / g);
            printf("  peak of one step, every allocation counted (bf16 casts, heads)         %10.1f MiB\n",
                   plan.peak / g);
            printf("  (plus cuBLASLt's 32 MiB workspace and the CUDA context)\n");
            poa_synthetic_batch_free(&b);
        }
        poa_trainer_free(&t);
    }
    if (rc) {
        fprintf(stderr, "poa cuda plan: %s\n", e.message);
        return POA_EXIT_FAILED;
    }
    return 0;
}

static int command_info(int argc, char **argv) {
    (void)argv;
    if (argc != 2) {
        fprintf(stderr, "usage: poa cuda info\n");
        return POA_EXIT_USAGE;
    }
    poa_cuda cuda;
    poa_error e = { { 0 } };
    if (poa_cuda_open(&cuda, &e) == 0) {
        char arch[16];
        poa_cuda_arch(&cuda, arch, sizeof arch);
        printf("GPU: %s (%s, %d SMs, %.1f GiB), device %d of %d, driver %d.%d\n", cuda.device_name, arch,
               cuda.multiprocessors, (double)cuda.total_memory / (1 << 30), cuda.ordinal, cuda.device_count,
               cuda.driver_version / 1000, cuda.driver_version % 1000 / 10);
        poa_cuda_close(&cuda);
    } else {
        printf("%s%s\n", e.message, cuda.no_gpu ? " (poa runs on the CPU backend)" : "");
    }
    char dir[1024];
    poa_error ne = { { 0 } };
    if (poa_nvrtc_load(&ne) == 0) {
        int major, minor;
        poa_nvrtc_version(&major, &minor);
        printf("NVRTC %d.%d\n", major, minor);
    } else {
        printf("%s\n", ne.message);
    }
    if (poa_nvrtc_cache_dir(dir, sizeof dir, &ne) == 0) printf("kernel cache: %s\n", dir);
    return 0;
}

int poa_command_cuda(int argc, char **argv) {
    const char *what = argc >= 2 ? argv[1] : "";
    if (strcmp(what, "warm") == 0) return command_warm(argc, argv);
    if (strcmp(what, "report") == 0) return command_report(argc, argv);
    if (strcmp(what, "info") == 0) return command_info(argc, argv);
    if (strcmp(what, "plan") == 0) return command_plan(argc, argv);
    fprintf(stderr, "usage: poa cuda info\n"
                    "       poa cuda warm <recipe.lua> [--arch sm_XX] [--jobs N]\n"
                    "       poa cuda report <recipe.lua> [--arch sm_XX] [--jobs N]\n"
                    "       poa cuda plan <recipe.lua> [--batch B] [--precision bf16|fp32] [section.field=value ...]\n");
    return POA_EXIT_USAGE;
}
