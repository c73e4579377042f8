/* command_pick.c: `poa pick <recipe> [--knn knn.csv] --max-params N | --max-gflops F |
   --max-latency MS`: the members that fit a budget, with their k-NN top-1 and the Pareto front
   (gen/pick.lua). --max-latency measures each member's exported C program (`poa export --what
   c` of --checkpoint, built with make and cc, run by its main with --repeat) on this machine. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "files.h"
#include "recipe.h"
#include "safetensors.h"

typedef struct pick_options {
    const char *recipe, *knn, *checkpoint, *work, *budget;
    double limit;
    long k, batch, threads, runs;
} pick_options;

static const char *const usage_text =
    "usage: poa pick <recipe.lua> --max-params N | --max-gflops F | --max-latency MS [--knn knn.csv] [--k K]\n"
    "       (--max-latency: --checkpoint C [--batch B] [--threads T] [--runs N] [--work DIR])";

/* A positive number; with suffixes (params) k, M, G. */
static int positive_number(const char *option, const char *text, int suffixes, double *out, poa_error *e) {
    char *end;
    double v = strtod(text, &end);
    if (suffixes && end != text && *end && !end[1]) {
        if (*end == 'k' || *end == 'K') v *= 1e3, end++;
        else if (*end == 'M') v *= 1e6, end++;
        else if (*end == 'G') v *= 1e9, end++;
    }
    if (end == text || *end || !(v > 0) || v > 1e18)
        return poa_fail(e, "%s %s: a positive number%s", option, text, suffixes ? " (e.g. 5000000 or 5M)" : "");
    *out = v;
    return 0;
}

static int positive_whole(const char *option, const char *text, long *out, poa_error *e) {
    char *end;
    long v = strtol(text, &end, 10);
    if (end == text || *end || v < 1 || v > 1000000) return poa_fail(e, "%s %s: a positive whole number", option, text);
    *out = v;
    return 0;
}

static int parse(int argc, char **argv, pick_options *o, poa_error *e) {
    memset(o, 0, sizeof *o);
    o->k = 20, o->batch = 1, o->threads = 1, o->runs = 20;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int budget = !strcmp(a, "--max-params") || !strcmp(a, "--max-gflops") || !strcmp(a, "--max-latency");
        int value = budget || !strcmp(a, "--knn") || !strcmp(a, "--k") || !strcmp(a, "--checkpoint") ||
                    !strcmp(a, "--batch") || !strcmp(a, "--threads") || !strcmp(a, "--runs") || !strcmp(a, "--work");
        if (value && i + 1 >= argc) return poa_fail(e, "%s needs a value\n%s", a, usage_text);
        const char *v = value ? argv[++i] : NULL;
        if (budget) {
            if (o->budget) return poa_fail(e, "%s: one budget at a time (--max-%s is given too)", a, o->budget);
            o->budget = a + 6;
            if (positive_number(a, v, !strcmp(a, "--max-params"), &o->limit, e)) return -1;
        } else if (!strcmp(a, "--knn")) {
            o->knn = v;
        } else if (!strcmp(a, "--checkpoint")) {
            o->checkpoint = v;
        } else if (!strcmp(a, "--work")) {
            o->work = v;
        } else if (value) {
            long *slot = !strcmp(a, "--k") ? &o->k : !strcmp(a, "--batch") ? &o->batch
                       : !strcmp(a, "--threads") ? &o->threads : &o->runs;
            if (positive_whole(a, v, slot, e)) return -1;
        } else if (a[0] == '-') {
            return poa_fail(e, "unknown option %s\n%s", a, usage_text);
        } else if (!o->recipe) {
            o->recipe = a;
        } else {
            return poa_fail(e, "unexpected argument %s\n%s", a, usage_text);
        }
    }
    if (!o->recipe || !o->budget) return poa_fail(e, "%s", usage_text);
    int latency = !strcmp(o->budget, "latency");
    if (latency && !o->checkpoint)
        return poa_fail(e, "--max-latency needs --checkpoint C: the weights the members' programs are exported from");
    if (!latency) {
        const char *only = o->checkpoint ? "--checkpoint" : o->work ? "--work" : NULL;
        for (int i = 1; !only && i < argc; i++)
            if (!strcmp(argv[i], "--batch") || !strcmp(argv[i], "--threads") || !strcmp(argv[i], "--runs")) only = argv[i];
        if (only) return poa_fail(e, "%s: only with --max-latency (the measured programs)", only);
    }
    return 0;
}

/* The last line of log, for an error. */
static void last_line(const char *log, char *out, size_t size) {
    FILE *f = fopen(log, "r");
    char line[512];
    out[0] = 0;
    while (f && fgets(line, sizeof line, f)) snprintf(out, size, "%s", line);
    if (f) fclose(f);
    out[strcspn(out, "\n")] = 0;
}

/* Images (batch, 3, size, size) of a fixed pattern for the timing. */
static int write_images(const char *path, long batch, int channels, int size, poa_error *e) {
    long long shape[4] = { batch, channels, size, size };
    const long n = batch * channels * size * size;
    real *x = malloc(sizeof(real) * (size_t)n);
    if (!x) return poa_fail(e, "out of memory for the timing images");
    for (long i = 0; i < n; i++) x[i] = (real)(0.5 * ((i * 7919) % 1000 - 500) / 500.0);
    poa_safetensors_writer *w = poa_safetensors_writer_new();
    int rc = w ? poa_safetensors_writer_add_real(w, "images", 4, shape, x, e) : poa_fail(e, "out of memory");
    if (rc == 0) rc = poa_safetensors_writer_save(w, path, e);
    if (w) poa_safetensors_writer_free(w);
    free(x);
    return rc;
}

/* Exports, builds and times member net: its median milliseconds. */
static int measure(const pick_options *o, const char *work, const char *net, int size, const char *input, double *ms,
                   poa_error *e) {
    char dir[1024], log[1100], command[8192], why[512], self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return poa_fail(e, "cannot find this poa binary (/proc/self/exe) to export with");
    self[n] = 0;
    snprintf(dir, sizeof dir, "%s/%s", work, net);
    snprintf(log, sizeof log, "%s.log", dir);
    snprintf(command, sizeof command, "'%s' export '%s' --recipe '%s' --net %s --what c --sizes %d --out '%s'",
             self, o->checkpoint, o->recipe, net, size, dir);
    if (poa_run_logged(command, log)) return last_line(log, why, sizeof why), poa_fail(e, "member %s: %s", net, why);
    snprintf(command, sizeof command, "make -s -C '%s'", dir);
    if (poa_run_logged(command, log)) return last_line(log, why, sizeof why), poa_fail(e, "member %s: make: %s", net, why);
    snprintf(command, sizeof command, "'%s/poa_member' '%s/model.safetensors' '%s' '%s/out.safetensors' --threads %ld --repeat %ld",
             dir, dir, input, dir, o->threads, o->runs);
    if (poa_run_logged(command, log)) return last_line(log, why, sizeof why), poa_fail(e, "member %s: %s", net, why);
    last_line(log, why, sizeof why);
    const char *median = strstr(why, "median ");
    if (!median || sscanf(median, "median %lf ms", ms) != 1)
        return poa_fail(e, "member %s: no timing in '%s'", net, why);
    fprintf(stderr, "poa pick: %s: median %.3f ms\n", net, *ms);
    return 0;
}

static int pick(const pick_options *o, poa_error *e) {
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    poa_recipe recipe;
    int rc = poa_recipe_load(L, o->recipe, &recipe, e);
    char work[1024] = "", latency_what[256] = "";
    int made_work = 0;
    char *members = NULL;
    if (rc == 0 && !strcmp(o->budget, "latency")) {
        if (o->work) snprintf(work, sizeof work, "%s", o->work);
        else if (snprintf(work, sizeof work, "%s/poa-pick-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp"), mkdtemp(work))
            made_work = 1;
        else rc = poa_fail(e, "cannot make a folder %s for the programs", work);
        char mk[1200], input[1100];
        snprintf(mk, sizeof mk, "mkdir -p '%s'", work);
        if (rc == 0 && system(mk) != 0) rc = poa_fail(e, "--work %s: cannot make the folder", work);
        snprintf(input, sizeof input, "%s/images.safetensors", work);
        if (rc == 0) rc = write_images(input, o->batch, recipe.vit.in_channels, recipe.global_crop_size, e);
        members = rc == 0 ? poa_lua_call_string(L, "gen.pick", "member_list", o->recipe, e) : NULL;
        if (rc == 0 && !members) rc = -1;
        lua_newtable(L); /* latency by member */
        for (char *net = members ? strtok(members, " ") : NULL; net && rc == 0; net = strtok(NULL, " ")) {
            double ms;
            rc = measure(o, work, net, recipe.global_crop_size, input, &ms, e);
            if (rc == 0) lua_pushnumber(L, ms), lua_setfield(L, -2, net);
        }
        snprintf(latency_what, sizeof latency_what, "the exported C programs, batch %ld, %d px, %ld thread%s, median of %ld runs",
                 o->batch, recipe.global_crop_size, o->threads, o->threads > 1 ? "s" : "", o->runs);
    } else {
        lua_newtable(L);
    }
    int latency = lua_gettop(L);
    if (rc == 0) {
        lua_getglobal(L, "require");
        lua_pushstring(L, "gen.pick");
        rc = lua_pcall(L, 1, 1, 0) == LUA_OK ? 0 : poa_fail(e, "%s", lua_tostring(L, -1));
    }
    if (rc == 0) {
        lua_getfield(L, -1, "text");
        rc = poa_recipe_push(L, &recipe, e);
    }
    if (rc == 0) {
        lua_createtable(L, 0, 6);
        lua_pushstring(L, o->budget), lua_setfield(L, -2, "budget");
        lua_pushnumber(L, o->limit), lua_setfield(L, -2, "limit");
        lua_pushinteger(L, o->k), lua_setfield(L, -2, "k");
        if (o->knn) lua_pushstring(L, o->knn), lua_setfield(L, -2, "knn");
        lua_pushvalue(L, latency), lua_setfield(L, -2, "latency");
        if (latency_what[0]) lua_pushstring(L, latency_what), lua_setfield(L, -2, "latency_what");
        if (lua_pcall(L, 2, 1, 0) != LUA_OK) rc = poa_fail(e, "%s", lua_tostring(L, -1));
        else fputs(lua_tostring(L, -1), stdout);
    }
    if (made_work) {
        char rm[1200];
        snprintf(rm, sizeof rm, "rm -rf '%s'", work);
        if (system(rm) != 0) fprintf(stderr, "poa pick: could not remove %s\n", work);
    }
    free(members);
    lua_close(L);
    return rc;
}

int poa_command_pick(int argc, char **argv) {
    pick_options o;
    poa_error e = { { 0 } };
    if (parse(argc, argv, &o, &e)) {
        fprintf(stderr, "poa pick: %s\n", e.message);
        return POA_EXIT_USAGE;
    }
    if (pick(&o, &e)) {
        fprintf(stderr, "poa pick: %s\n", e.message);
        return POA_EXIT_FAILED;
    }
    return POA_EXIT_OK;
}
