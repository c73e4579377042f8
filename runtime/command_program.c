/* command_program.c: `poa program`, the forward (or --backward) program of one member as the
   runtime runs it: the table runtime/vit.c builds (gen/program.lua over models/vit.lua, its
   reverse by gen/backward.lua; --device gpu: the GPU schedule of gen/schedule.lua), checked by the
   executor's reader (runtime/program.c), printed by gen/program.lua's text. */
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "program.h"
#include "recipe.h"
#include "vit.h"

typedef struct program_options {
    const char *recipe, *net, *crop, *device, *precision;
    long batch; /* 0: symbolic */
    int backward;
} program_options;

static int parse(int argc, char **argv, program_options *o, poa_error *e) {
    memset(o, 0, sizeof *o);
    o->crop = "global";
    o->device = "cpu";
    const char *batch = NULL;
    /* the options with a value: where it goes and the two it may be (NULL: any) */
    const struct { const char *name, **value, *one, *other; } options[] = {
        { "--net", &o->net, NULL, NULL }, { "--crop", &o->crop, "global", "local" },
        { "--device", &o->device, "cpu", "gpu" }, { "--precision", &o->precision, "bf16", "fp32" },
        { "--batch", &batch, NULL, NULL } };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        size_t n = 0;
        while (n < sizeof options / sizeof options[0] && strcmp(a, options[n].name)) n++;
        if (n < sizeof options / sizeof options[0]) {
            if (i + 1 >= argc) return poa_fail(e, "%s needs a value", a);
            const char *v = *options[n].value = argv[++i], *one = options[n].one, *other = options[n].other;
            if (one && strcmp(v, one) && strcmp(v, other)) return poa_fail(e, "%s %s: %s or %s", a, v, one, other);
            char *end;
            if (options[n].value == &batch && ((o->batch = strtol(v, &end, 10)) < 1 || *end))
                return poa_fail(e, "--batch %s: a positive integer", v);
        } else if (strcmp(a, "--backward") == 0) {
            o->backward = 1;
        } else if (a[0] == '-') {
            return poa_fail(e, "unknown option %s", a);
        } else if (!o->recipe) {
            o->recipe = a;
        } else {
            return poa_fail(e, "unexpected argument %s", a);
        }
    }
    if (!o->recipe || !o->net)
        return poa_fail(e, "usage: poa program <recipe.lua> --net WxD [--crop global|local] [--backward] "
                           "[--device cpu|gpu] [--precision bf16|fp32] [--batch B]");
    if (o->precision && strcmp(o->device, "gpu"))
        return poa_fail(e, "--precision %s: only the GPU program has one (add --device gpu)", o->precision);
    if (!o->precision) o->precision = "bf16";
    return 0;
}

static int print_program(const program_options *o, poa_error *e) {
    lua_State *L = poa_lua_open(e);
    if (!L) return -1;
    poa_recipe recipe;
    int width, depth, rc = poa_recipe_load(L, o->recipe, &recipe, e);
    if (rc == 0) rc = poa_recipe_member(L, &recipe, o->net, &width, &depth, e);
    int size = strcmp(o->crop, "local") == 0 ? recipe.local_crop_size : recipe.global_crop_size;
    const int gpu = strcmp(o->device, "gpu") == 0;
    const int kind = gpu ? (o->backward ? POA_VIT_GPU_BACKWARD : POA_VIT_GPU_FORWARD)
                         : (o->backward ? POA_VIT_BACKWARD : POA_VIT_INFERENCE);
    if (rc == 0)
        rc = poa_vit_push_program(L, &recipe.vit, width, depth, size, kind, gpu && !strcmp(o->precision, "bf16"), e);
    if (rc == 0) {
        poa_program check; /* what the executor reads of it */
        rc = poa_program_from_lua(L, -1, &check, e);
        poa_program_free(&check);
    }
    if (rc == 0) rc = poa_lua_push_function(L, "gen.program", "text", e);
    if (rc == 0) {
        lua_pushvalue(L, -2);
        if (o->batch) lua_pushinteger(L, o->batch);
        else lua_pushnil(L);
        if (lua_pcall(L, 2, 1, 0) != LUA_OK) rc = poa_fail(e, "%s", lua_tostring(L, -1));
        else fputs(lua_tostring(L, -1), stdout);
    }
    lua_close(L);
    return rc;
}

int poa_command_program(int argc, char **argv) {
    program_options o;
    poa_error e = { { 0 } };
    const int usage = parse(argc, argv, &o, &e) != 0;
    if (usage || print_program(&o, &e)) {
        fprintf(stderr, "poa program: %s\n", e.message);
        return usage ? POA_EXIT_USAGE : POA_EXIT_FAILED;
    }
    return POA_EXIT_OK;
}
