/* test_cuda_vit.c: the GPU forward and backward of one ViT member (runtime/cuda_vit.c: the GPU
   programs of gen/schedule.lua run by runtime/program_cuda.c; cuBLASLt itself: test_cublaslt.c).

   Everywhere (no GPU needed):
   - Every kernel the runtime launches by name (gen/emit.lua's runtime_launches) is defined in
     its module (test_nvrtc_compile.c compiles them all; that every kernel of a set's table is
     defined and the GPU programs of every width of every shipped family launch only kernels
     their module defines, and the launch geometry of the w96 programs: tests/lua/test_program.lua).
   - The pass emulated on the host (an exec with an emulator): device pointers are host
     pointers, each launch runs its kernel's own .cu text through tests/c/cuda_host_run.h,
     thread by thread, after the CPU kernel of its op on the same inputs (each kernel's worst
     difference printed, within 1e-5; without g++ the CPU kernels alone), with the very argument
     array the pass gives cuLaunchKernel, each GEMM the column-major call cuBLASLt would get. It
     must pass the golden cases and match the CPU backend as the GPU must (below). This checks
     the GPU code's buffers, argument order, GEMM operands through the transposition trick and
     order, and the CUDA kernels themselves; not cuBLASLt or the driver. Every forward activation
     the backward reads is compared with the CPU pass's of the same name too. The same in bf16 (poa_cuda_vit_pass_use_bf16:
     bf16 GEMM operands from the shadow and the cast arena mirror, fp32 accumulation, bias
     epilogue) against the fp32 CPU backend: output within 1e-2, gradients within 2e-2
     (norm-relative; PyTorch's bf16 autocast is off by up to 2.2% on the same model).

   With a GPU (else SKIP lines say what did not run):
   - The golden cases of tests/golden/fixtures/vit_*.safetensors (as test_vit_golden.c): the
     output of a global batch (mask, stochastic depth) and a local batch (resampling) and the
     gradient of every parameter within 1e-4 relative error.
   - The GPU against the CPU backend on the same random parameters and inputs (64x3 and 96x4,
     both crop sizes): outputs and all gradients within 1e-4. */
#include <lauxlib.h>
#include <string.h>

#include "check.h"
#include "cuda_emulator.h"
#include "cuda_train.h"
#include "cuda_vit.h"
#include "fixture_util.h"
#include "vit_test_util.h"

#define TINY "tests/recipes/tiny_vit.lua"
/* bf16 pass against the fp32 CPU pass, norm-relative: the output within the 1e-2; the
   gradients, three or four bf16 GEMM layers further, within 2e-2: PyTorch's own bf16 autocast
   on the same model and members is off by 1.3-2.2% on its worst gradient tensor
   (bench/bf16_error_torch.py), poa's bf16 pass by 1.1-1.4%. */
#define BF16_TOLERANCE 1e-2
#define BF16_GRADIENT_TOLERANCE 2e-2

/* ---- the kernel files ---- */

/* gen/emit.lua's launches of the kernel set (width, head_dim, hidden), the list its .cu's table
   prints, with the texts of the set's module and vit_fused.cu: a function of a kernel's name, the
   module it was launched from, arg (arg(i): its argument i, 0-based, as a long) and the grid and
   block it was launched with, that raises an error unless they are the list's, with rows, batch,
   tokens and patches bound to the values of its own `long` arguments of those names in its
   definition there (T = tokens, or patches + 1 where it has no tokens). */
static const char *const launches_lua =
    "local emit, lower_cuda = require('gen.emit'), require('gen.lower_cuda')\n"
    "local width, head_dim, hidden, set_text, fused_text = ...\n"
    "local set = emit.kernel_set(width, head_dim, hidden)\n"
    "local by_name, texts = {}, { ['vit_' .. set.name .. '.cu'] = set_text, ['vit_fused.cu'] = fused_text }\n"
    "for _, list in pairs(emit.launches(set)) do\n"
    "  for _, k in ipairs(list) do by_name[k.name] = k end\n"
    "end\n"
    "return function(name, module, arg, ...)\n"
    "  local k = by_name[name] or error(name .. ' is not among the launches of ' .. set.name, 0)\n"
    "  local text = texts[module] or error(module .. ' is neither the set nor vit_fused.cu', 0)\n"
    "  local params = text:match(' ' .. name .. '%((.-)%)') or error('no definition of ' .. name, 0)\n"
    "  local bound, i = { WIDTH = set.width, HEADS = set.heads, HEAD_DIM = set.head_dim, HIDDEN = set.hidden }, 0\n"
    "  for p in params:gmatch('[^,]+') do\n"
    "    local n = p:match('^%s*long%s+([%w_]+)%s*$')\n"
    "    if n == 'rows' or n == 'batch' or n == 'tokens' or n == 'patches' then bound[n] = arg(i) end\n"
    "    i = i + 1\n"
    "  end\n"
    "  bound.tokens = bound.tokens or bound.patches and bound.patches + 1\n"
    "  bound.T = bound.tokens\n"
    "  for d, launched in ipairs({ ... }) do\n"
    "    local want = lower_cuda.constant((d <= 3 and k.grid[d] or k.block[d - 3]) or 1, bound)\n"
    "    if launched ~= want then\n"
    "      error(string.format('%s launched with %s %s = %d, its arguments give %d', name, d <= 3 and 'grid' or 'block',\n"
    "        ('xyzxyz'):sub(d, d), launched, want), 0)\n"
    "    end\n"
    "  end\n"
    "end\n";

/* Pushes launches_lua's function for the set of width x head_dim x hidden, its module's text
   set and vit_fused.cu's text fused. */
static int push_launches(lua_State *L, long width, long head_dim, long hidden, const char *set, const char *fused,
                         poa_error *e) {
    if (luaL_loadstring(L, launches_lua) == LUA_OK) {
        lua_pushinteger(L, width), lua_pushinteger(L, head_dim), lua_pushinteger(L, hidden);
        lua_pushstring(L, set), lua_pushstring(L, fused);
        if (lua_pcall(L, 5, 1, 0) == LUA_OK) return 0;
    }
    poa_fail(e, "the launches of width %ld: %s", width, lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
}

/* Every kernel the runtime launches by name (gen/emit.lua's runtime_launches: the glue and the
   training kernels) is defined in its module's source (NVRTC compiles both:
   test_nvrtc_compile.c); the programs' glue launches: tests/lua/test_program.lua. */
static void check_glue(void) {
    poa_cuda_sources sources = { 0 };
    const char *texts[2] = { NULL, NULL }; /* vit_glue.cu, train_kernels.cu */
    poa_error e = { { 0 } };
    const poa_program *r = NULL;
    if (poa_cuda_sources_load(&sources, TINY, NULL, &e) ||
        !(texts[0] = poa_cuda_sources_find(&sources, "vit_glue.cu")) ||
        !(texts[1] = poa_cuda_sources_find(&sources, "train_kernels.cu")) || !(r = poa_runtime_launches(&e))) {
        CHECK("runtime launches and their sources", 0, "%s", e.message);
    } else {
        int missing = 0;
        for (int i = 0; i < r->launch_count; i++)
            if (!poa_cuda_source_defines(texts[strcmp(r->launches[i].module, "vit_glue.cu") != 0], r->launches[i].name))
                missing++, printf("  %s is not defined in %s\n", r->launches[i].name, r->launches[i].module);
        int defines_other = poa_cuda_source_defines(texts[0], "layernorm_forward");
        CHECK("every kernel the runtime launches by name is defined in its module (and the name search is not fooled)",
              missing == 0 && r->launch_count > 5 && !defines_other, "%d of %d missing, other %d", missing,
              r->launch_count, defines_other);
    }
    poa_cuda_sources_free(&sources);
}

/* The forward activations a pass's backward reads (kept to the end of its forward, so after
   the pass they still hold the forward's values): name, arena offset and element count. */
typedef struct kept_value {
    char name[POA_PROGRAM_NAME_SIZE];
    long offset, count;
} kept_value;
enum { MAX_KEPT = 512 };

static int kept_of(const poa_vit_run *fwd, const poa_vit_run *bwd, long batch, kept_value *out) {
    int n = 0;
    for (int i = 0; i < bwd->program->value_count && n < MAX_KEPT; i++) {
        const poa_program_value *v = &bwd->program->values[i];
        int f = v->kind == POA_VALUE_SAVED ? poa_program_find(fwd->program, v->name) : -1;
        if (f < 0) continue;
        snprintf(out[n].name, sizeof out[n].name, "%s", v->name);
        out[n].offset = fwd->value_offsets[f];
        out[n].count = poa_lin_at(fwd->program->values[f].size, batch);
        n++;
    }
    return n;
}

/* ---- the pass emulated on the host ---- */

/* The emulator: tests/c/cuda_emulator.h's, launches by the CPU backend's kernel of the same op
   (emulate_vit_kernel, the generated C set of the width) and the glue loops, or with a host C++
   compiler from their .cu text (tests/c/cuda_host_run.h) checked against that C twin; GEMMs by
   the column-major call cuBLASLt would get. Before it runs, each launch's module and geometry
   are checked here. */
typedef struct emulator_state {
    step_emulator em; /* first: the context emulate_step_gemm gets */
    lua_State *L;                    /* launches_lua's function of the set at the top */
    long geometry_checked;
} emulator_state;

static host_runner from_cu_runner = { .recipe = TINY, .twin = emulate_step_twin };
static int from_cu;

/* arg of launches_lua's function: argument i of the launch (its upvalue: the argument array). */
static int launch_arg(lua_State *L) {
    lua_pushinteger(L, num(lua_touserdata(L, lua_upvalueindex(1)), (int)luaL_checkinteger(L, 1)));
    return 1;
}

/* The launch geometry of a generated or fused kernel, evaluated again from gen/emit.lua's launches with
   rows, batch, tokens and patches bound to the values of its own arguments of those names, must be
   what the pass launched with (which bound them to the pass's shape). */
static int check_launch_geometry(emulator_state *st, const char *module, const char *name, const unsigned grid[3],
                                 const unsigned block[3], void **args, poa_error *e) {
    lua_State *L = st->L;
    lua_pushvalue(L, -1);
    lua_pushstring(L, name), lua_pushstring(L, module);
    lua_pushlightuserdata(L, args);
    lua_pushcclosure(L, launch_arg, 1);
    for (int d = 0; d < 6; d++) lua_pushinteger(L, d < 3 ? grid[d] : block[d - 3]);
    if (lua_pcall(L, 9, 0, 0) != LUA_OK) {
        poa_fail(e, "emulator: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    st->geometry_checked++;
    return 0;
}

static int emulate_launch(void *context, const char *module, const char *name, const unsigned grid[3],
                          const unsigned block[3], void **args, poa_error *e) {
    emulator_state *st = context;
    /* each kernel launched from the module that defines it: tests/lua/test_program.lua's launches_sound */
    const int is_glue = !strcmp(module, "vit_glue.cu");
    if (!is_glue && check_launch_geometry(st, module, name, grid, block, args, e)) return -1;
    st->geometry_checked += is_glue; /* by emulate_step_launch: check_glue_geometry */
    return emulate_step_launch(&st->em, module, name, grid, block, args, e);
}

/* ---- on a GPU ---- */

/* Where a pass runs: on the GPU (cuda non-NULL) or emulated on the host. */
typedef struct runner {
    const char *prefix; /* "gpu", "emulated", "gpu bf16", "emulated bf16" */
    poa_cuda *cuda;
    poa_cublaslt *lt;
    int bf16;           /* the pass in bf16 (poa_cuda_vit_pass_use_bf16) */
    const char *skip;   /* why the checks do not run (no GPU; they print SKIP lines) or NULL */
    long launches;
} runner;

/* One pass where r runs it: forward and backward of a batch, output into out, gradients
   accumulated; the arena after both into *arena (malloc'd) and the values the backward keeps
   into kept when arena is not NULL. */
static int run_pass(runner *r, const poa_vit *m, const char *recipe, int width, int depth, long batch, int image,
                    const float *params, const float *images, const unsigned char *mask, const float *drop,
                    const float *dout, float *out, float *grads, float **arena, kept_value *kept, int *kept_count,
                    poa_error *e) {
    poa_cuda_sources sources = { 0 };
    const int hidden = width * m->config.mlp_ratio;
    emulator_state st = { .L = NULL };
    poa_cuda_emulator em = { .context = &st, .launch = emulate_launch, .gemm = emulate_step_gemm,
                             .alloc = from_cu ? host_runner_alloc : NULL, .release = from_cu ? host_runner_release : NULL };
    const long tokens = (long)(image / m->config.patch_size) * (image / m->config.patch_size) + 1;
    st.em.scratch_count = 4 * (batch * tokens * 3 * (long)hidden + tokens * m->config.max_width + 64);
    st.em.scratch = r->cuda ? NULL : calloc((size_t)st.em.scratch_count, sizeof(float));
    st.em.host = from_cu ? &from_cu_runner : NULL;
    from_cu_runner.twin_context = &st.em;
    st.L = r->cuda ? NULL : poa_lua_open(e);
    poa_cuda_vit_pass p;
    int rc = r->cuda || (st.em.scratch && st.L) ? 0 : poa_fail(e, "emulator: out of memory");
    if (!rc) rc = poa_cuda_sources_load(&sources, recipe, NULL, e);
    char set_name[64];
    snprintf(set_name, sizeof set_name, "vit_w%d_h%d_f%d.cu", width, m->config.head_dim, hidden);
    if (!rc && st.L)
        rc = push_launches(st.L, width, m->config.head_dim, hidden, poa_cuda_sources_find(&sources, set_name),
                           poa_cuda_sources_find(&sources, "vit_fused.cu"), e);
    if (!rc)
        rc = poa_cuda_vit_pass_init(&p, &(poa_cuda_exec){ .cuda = r->cuda, .lt = r->lt, .emulator = r->cuda ? NULL : &em },
                                    m, width, depth, batch, image, &sources, NULL, e);
    if (!rc && ((r->bf16 && poa_cuda_vit_pass_use_bf16(&p, e)) || poa_cuda_vit_pass_plan_gemms(&p, e))) {
        poa_cuda_vit_pass_free(&p);
        rc = -1;
    }
    const long planned = r->lt ? r->lt->heuristic_calls : 0;
    if (!rc) {
        rc = poa_cuda_vit_upload_parameters(&p, params, e) || poa_cuda_vit_upload_gradients(&p, grads, e) ||
             poa_cuda_vit_forward(&p, images, mask, drop, e) || poa_cuda_vit_download_output(&p, out, e) ||
             poa_cuda_vit_backward(&p, dout, e) || poa_cuda_vit_download_gradients(&p, grads, e)
                 ? -1 : 0;
        if (!rc && arena) {
            *arena = malloc(sizeof(float) * (size_t)p.arena_count);
            rc = !*arena || poa_cuda_vit_download_arena(&p, *arena, e) ? -1 : 0;
            *kept_count = kept_of(&p.fwd, &p.bwd, batch, kept);
        }
        if (!rc && r->lt && r->lt->heuristic_calls != planned)
            rc = poa_fail(e, "%ld GEMM shapes were planned during the pass, none were expected after "
                             "poa_cuda_vit_pass_plan_gemms", r->lt->heuristic_calls - planned);
        poa_cuda_vit_pass_free(&p);
    }
    if (st.L) lua_close(st.L);
    free(st.em.scratch);
    poa_cuda_sources_free(&sources);
    r->launches += st.geometry_checked;
    return rc;
}

static void check_golden(runner *r, const poa_vit *m, const float *params, const char *name) {
    char path[256], label[256];
    if (r->skip) {
        snprintf(label, sizeof label, "%s: golden %s global and local outputs and all gradients within 1e-4", r->prefix, name);
        CHECK_SKIP(label, r->skip);
        return;
    }
    snprintf(path, sizeof path, FIXTURES "vit_%s.safetensors", name);
    poa_safetensors f;
    open_fixture(&f, path);
    int width = atoi(poa_safetensors_metadata(&f, "width"));
    int depth = atoi(poa_safetensors_metadata(&f, "depth"));
    long long n;
    const char *batches[2] = { "global", "local" };
    const long sizes[2][2] = { { 2, 32 }, { 3, 16 } };
    const poa_tensor_info *mask_info = poa_safetensors_find(&f, "input.mask");
    const unsigned char *mask = f.data + mask_info->offset;
    float *grads = calloc((size_t)m->parameter_count, sizeof(float));
    poa_error e = { { 0 } };
    int failed = 0;
    for (int i = 0; i < 2 && !failed; i++) {
        static const char *const keys[4] = { "input", "droppath", "dout", "out" };
        real *t[4]; /* images, drop, dout, want */
        for (int k = 0; k < 4; k++) {
            char key[64];
            snprintf(key, sizeof key, "%s.%s", keys[k], batches[i]);
            t[k] = read_tensor(&f, key, &n);
        }
        real *images = t[0], *drop = t[1], *dout = t[2], *want = t[3];
        float *out = malloc(sizeof(float) * (size_t)n);
        snprintf(label, sizeof label, "%s: golden %s %dx%d %s output within 1e-4", r->prefix, name, width, depth,
                 batches[i]);
        if (run_pass(r, m, TINY, width, depth, sizes[i][0], (int)sizes[i][1], params, images,
                     i == 0 ? mask : NULL, drop, dout, out, grads, NULL, NULL, NULL, &e)) {
            CHECK(label, 0, "%s", e.message);
            failed = 1;
        } else {
            double err = relative_error(out, want, n);
            CHECK(label, n == sizes[i][0] * (sizes[i][1] / 8 * sizes[i][1] / 8 + 1) * width && err <= TOLERANCE,
                  "relative error %.3g", err);
        }
        free(images), free(drop), free(dout), free(want), free(out);
    }
    if (!failed) {
        int bad = 0;
        double worst = 0;
        for (int i = 0; i < m->tensor_count; i++) {
            char grad_name[96];
            snprintf(grad_name, sizeof grad_name, "grad.%s", m->tensors[i].name);
            real *want = read_tensor(&f, grad_name, &n);
            double err = n == m->tensors[i].count ? relative_error(grads + m->tensors[i].offset, want, n) : INFINITY;
            if (err > TOLERANCE) {
                bad++;
                printf("  %s %s: relative error %.3g\n", name, grad_name, err);
            }
            worst = fmax(worst, err);
            free(want);
        }
        snprintf(label, sizeof label, "%s: golden %s %dx%d gradients of all %d parameters within 1e-4", r->prefix,
                 name, width, depth, m->tensor_count);
        CHECK(label, bad == 0, "%d tensors off, worst %.3g", bad, worst);
    }
    free(grads);
    poa_safetensors_close(&f);
}

/* The GPU against the CPU backend on the same random parameters and inputs. */
typedef struct cpu_case {
    int width, depth;
    long batch;
    int image, masked; /* masked: with a mask and stochastic depth */
} cpu_case;
static const cpu_case cpu_cases[] = { { 64, 3, 3, 32, 1 }, { 64, 3, 3, 16, 0 }, { 96, 4, 2, 32, 1 }, { 32, 2, 4, 16, 0 } };
static const cpu_case bf16_cases[] = { { 64, 3, 3, 32, 1 }, { 96, 4, 2, 16, 0 } };
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void check_against_cpu(runner *r, const poa_vit *m, cpu_case c) {
    const int width = c.width, depth = c.depth, image = c.image, masked = c.masked;
    const long batch = c.batch;
    char label[256];
    const double tolerance = r->bf16 ? BF16_TOLERANCE : TOLERANCE;
    const double gradient_tolerance = r->bf16 ? BF16_GRADIENT_TOLERANCE : TOLERANCE;
    double (*error_of)(const float *, const float *, long long) = r->bf16 ? norm_error : relative_error;
    snprintf(label, sizeof label, "%s: %dx%d batch %ld at %d px%s: output within %g and gradients within %g of the CPU backend's",
             r->prefix, width, depth, batch, image, masked ? " (mask, stochastic depth)" : "", tolerance,
             gradient_tolerance);
    if (r->skip) {
        CHECK_SKIP(label, r->skip);
        return;
    }
    poa_error e = { { 0 } };
    poa_vit_pass cpu;
    if (poa_vit_pass_init(&cpu, m, width, depth, batch, image, POA_VIT_PASS_TRAINING, &e)) {
        CHECK(label, 0, "%s", e.message);
        return;
    }
    const long count = m->parameter_count, pixels = batch * m->config.in_channels * image * image;
    const long out_count = cpu.rows * width;
    float *params = malloc(sizeof(float) * (size_t)count), *images = malloc(sizeof(float) * (size_t)pixels);
    float *dout = malloc(sizeof(float) * (size_t)out_count), *out = malloc(sizeof(float) * (size_t)out_count);
    float *drop = malloc(sizeof(float) * (size_t)(2 * depth * batch));
    float *cpu_grads = calloc((size_t)count, sizeof(float)), *gpu_grads = calloc((size_t)count, sizeof(float));
    unsigned char *mask = malloc((size_t)(batch * cpu.patches));
    test_random_parameters(m, params, 11);
    test_fill_normal(images, pixels, 0, 1, 12, 1);
    test_fill_normal(dout, out_count, 0, 1, 12, 2);
    for (long i = 0; i < 2 * depth * batch; i++) drop[i] = (i % 3 == 1) ? 0.0f : 1.25f;
    for (long i = 0; i < batch * cpu.patches; i++) mask[i] = (unsigned char)(i % 5 == 2);
    poa_vit_forward(&cpu, params, images, masked ? mask : NULL, masked ? drop : NULL);
    poa_vit_backward(&cpu, params, cpu_grads, dout);
    float *arena = NULL;
    kept_value gpu_kept[MAX_KEPT], cpu_kept[MAX_KEPT];
    int gpu_count = 0;
    if (run_pass(r, m, TINY, width, depth, batch, image, params, images, masked ? mask : NULL,
                 masked ? drop : NULL, dout, out, gpu_grads, &arena, gpu_kept, &gpu_count, &e)) {
        CHECK(label, 0, "%s", e.message);
    } else {
        /* every forward activation the backwards read, against the CPU pass's of the same name
           (both kept to the end of their forward): on a GPU a diagnostic that says where a
           mismatch starts, emulated a check. (The backwards' own values are laid out by liveness,
           in different schedules; the parameter gradients are compared below.) */
        const int cpu_count = kept_of(&cpu.fwd, &cpu.bwd, batch, cpu_kept);
        int off = 0, compared = 0;
        char first[128] = "";
        for (int i = 0; i < gpu_count; i++) {
            int j = 0;
            while (j < cpu_count && strcmp(cpu_kept[j].name, gpu_kept[i].name)) j++;
            if (j == cpu_count || cpu_kept[j].count != gpu_kept[i].count) continue;
            compared++;
            double err = error_of(arena + gpu_kept[i].offset, cpu.arena + cpu_kept[j].offset, gpu_kept[i].count);
            if (err > gradient_tolerance) {
                if (off++ < 8) printf("  %s activation %s: relative error %.3g\n", r->prefix, gpu_kept[i].name, err);
                if (!first[0]) snprintf(first, sizeof first, "%.64s", gpu_kept[i].name);
            }
        }
        if (!r->cuda) {
            char arena_label[300];
            snprintf(arena_label, sizeof arena_label, "%s: %dx%d batch %ld at %d px: every kept activation (%d) within %g of the CPU pass's",
                     r->prefix, width, depth, batch, image, compared, gradient_tolerance);
            CHECK(arena_label, off == 0 && compared >= 10 * depth, "%d of %d differ, first %s", off, compared, first);
        } else {
            printf("  %s: %d of %d kept activations differ from the CPU pass's%s%s\n", r->prefix, off, compared,
                   off ? ", first " : "", first);
        }
        free(arena);
        double out_err = error_of(out, poa_vit_output(&cpu), out_count);
        double max_out = relative_error(out, poa_vit_output(&cpu), out_count), max_grad = 0;
        int bad = 0;
        double worst = 0;
        const char *worst_name = "";
        for (int i = 0; i < m->tensor_count; i++) {
            const poa_vit_tensor *t = &m->tensors[i];
            double err = error_of(gpu_grads + t->offset, cpu_grads + t->offset, t->count);
            max_grad = fmax(max_grad, relative_error(gpu_grads + t->offset, cpu_grads + t->offset, t->count));
            if (err > gradient_tolerance) bad++;
            if (err > worst) worst = err, worst_name = t->name;
        }
        if (r->bf16)
            printf("  %s %dx%d at %d px: norm-relative error: output %.3g, worst gradient %s %.3g; "
                   "max|diff|/max|ref|: output %.3g, worst gradient %.3g\n",
                   r->prefix, width, depth, image, out_err, worst_name, worst, max_out, max_grad);
        /* bf16 operands must show: an fp32-exact result would mean the bf16 path did not run */
        CHECK(label, out_err <= tolerance && bad == 0 && (!r->bf16 || out_err > 1e-5),
              "output %.3g, %d gradients off, worst %s %.3g", out_err, bad, worst_name, worst);
    }
    free(params), free(images), free(dout), free(out), free(drop), free(cpu_grads), free(gpu_grads), free(mask);
    poa_vit_pass_free(&cpu);
}

static const char *const golden_cases[] = { "intact_96x4", "elastic_32x2", "elastic_64x3", "elastic_96x2",
                                             "elastic_32x4" };

/* The golden cases and the comparisons with the CPU backend where cuda runs the pass (NULL:
   emulated), then the bf16 pass (bf16 GEMM operands, fp32 accumulation and kernels) against
   the fp32 CPU backend within the 1e-2; with skip, SKIP lines that say why not. */
static void check_all(const char *prefix, poa_cuda *cuda, poa_cublaslt *lt, const char *skip) {
    char bf16_prefix[32];
    snprintf(bf16_prefix, sizeof bf16_prefix, "%s bf16", prefix);
    runner r = { .prefix = prefix, .cuda = cuda, .lt = lt, .skip = skip },
           r16 = { .prefix = bf16_prefix, .cuda = cuda, .lt = lt, .bf16 = 1, .skip = skip };
    poa_recipe recipe;
    poa_vit m;
    poa_error e = { { 0 } };
    test_load_model(TINY, &recipe, &m);
    float *params = malloc(sizeof(float) * (size_t)m.parameter_count);
    if (poa_vit_load_parameters(&m, params, FIXTURES "vit_tiny_params.safetensors", NULL, &e)) {
        CHECK("golden parameters", 0, "%s: %s", prefix, e.message);
    } else {
        for (int i = 0; i < COUNT(golden_cases); i++) check_golden(&r, &m, params, golden_cases[i]);
        for (int i = 0; i < COUNT(cpu_cases); i++) check_against_cpu(&r, &m, cpu_cases[i]);
        if (!cuda) printf("  emulated: %ld launches had their geometry checked against their own arguments\n", r.launches);
        for (int i = 0; i < COUNT(bf16_cases); i++) check_against_cpu(&r16, &m, bf16_cases[i]);
    }
    free(params);
    poa_vit_free(&m);
}

/* The same checks with the pass emulated on the host: the GPU code's buffers, arguments,
   GEMM operands (through the transposition trick) and order against PyTorch and the CPU. */
static void check_emulated(void) {
    from_cu = host_runner_available();
    if (!from_cu) CHECK_SKIP("emulated: the pass's kernels run from their .cu text", "no host C++ compiler (g++)");
    check_all("emulated", NULL, NULL, NULL);
    if (from_cu) {
        double worst = host_runner_report(&from_cu_runner, "emulated pass");
        CHECK("emulated: every kernel the pass launched ran from its .cu text within 1e-5 of its C twin on the same "
              "inputs (max |cu - twin| / max(1, max |twin|) per output)", from_cu_runner.error_count > 0 && worst <= 1e-5,
              "worst %.3g over %d kernels", worst, from_cu_runner.error_count);
        cuda_host_close(&from_cu_runner.host);
    }
}

static void check_gpu(void) {
    poa_cuda cuda;
    poa_cublaslt lt;
    poa_error e = { { 0 } };
    int rc = open_gpu_for_tests(&cuda, &lt, &e);
    if (rc >= 0) check_all("gpu", &cuda, &lt, rc ? NULL : e.message);
    if (rc > 0) {
        printf("  cuBLASLt: %ld shapes planned\n", lt.heuristic_calls);
        poa_cublaslt_free(&lt);
        poa_cuda_close(&cuda);
    }
}

int main(void) {
    check_glue();
    check_emulated();
    check_gpu();
    CHECK_EXIT();
}
