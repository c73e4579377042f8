/* program_cuda.c: the GPU backend of the executor (program_cuda.h). */
#include "program_cuda.h"

#include <string.h>

int poa_cuda_functions(const poa_program_launch *launches, int count, poa_cuda *cuda, const char *const *names,
                       const CUmodule *modules, int module_count, CUfunction *functions, poa_error *e) {
    memset(functions, 0, sizeof *functions * (size_t)count);
    if (!cuda) return 0;
    for (int i = 0; i < count; i++) {
        const poa_program_launch *k = &launches[i];
        int m = 0;
        while (m < module_count && strcmp(names[m], k->module)) m++;
        if (m == module_count) return poa_fail(e, "program: launch %s: no module %s", k->name, k->module);
        if (poa_cuda_get_function(cuda, modules[m], k->name, &functions[i], e)) return -1;
    }
    return 0;
}

static int is_bf16(const poa_program *p, poa_operand o) {
    return o.bf16 || (o.value >= 0 && p->values[o.value].kind == POA_VALUE_CAST);
}

/* Where operand o points: its value's base (or bf16 copy) + offset elements of its type. */
static CUdeviceptr address(const poa_program *p, const CUdeviceptr *bases, const CUdeviceptr *bf16_bases,
                           poa_operand o, long batch) {
    if (o.value < 0) return 0;
    const CUdeviceptr base = o.bf16 ? bf16_bases[o.value] : bases[o.value];
    if (!base) return 0;
    const poa_program_value *v = &p->values[o.value];
    const size_t size = is_bf16(p, o) ? 2 : v->elem_size == 1 ? 1 : sizeof(float);
    return base + size * (size_t)poa_lin_at(o.offset, batch);
}

int poa_launch_geometry(const poa_program_launch *k, long x, unsigned grid[3], const char *label, poa_error *e) {
    int empty = 0;
    for (int d = 0; d < 3; d++) {
        const poa_extent g = k->grid[d];
        const long v = g.b * x + g.c < 0 ? -1 : (g.b * x + g.c) / g.d;
        if (v < 0 || v > (d == 0 ? 0x7fffffffL : 65535))
            return poa_fail(e, "%s: launch %s: grid %c = %ld is out of range", label, k->name, "xyz"[d], v);
        grid[d] = (unsigned)v;
        empty |= v == 0;
    }
    return empty;
}

int poa_launch(const poa_cuda_exec *exec, CUfunction f, const poa_program_launch *k, long x, void **args,
               const char *label, poa_error *e) {
    unsigned grid[3];
    const int rc = poa_launch_geometry(k, x, grid, label, e);
    return rc ? (rc < 0 ? -1 : 0) : poa_cuda_exec_launch(exec, f, k->module, k->name, grid, k->block, args, e);
}

int poa_program_run_cuda(const poa_program *p, const poa_cuda_exec *x, const CUfunction *functions,
                         const CUdeviceptr *bases, const CUdeviceptr *bf16_bases, long batch, const char *label,
                         poa_error *e) {
    if (!p->gpu) return poa_fail(e, "%s: not a GPU program", label);
    for (int i = 0; i < p->step_count; i++) {
        const poa_program_step *s = &p->steps[i];
        CUdeviceptr pointers[POA_PROGRAM_MAX_ARGS];
        long scalars[POA_PROGRAM_MAX_ARGS];
        void *args[POA_PROGRAM_MAX_ARGS];
        int rc = 0;
        if (s->kind == POA_STEP_GEMM) {
            const int a16 = is_bf16(p, s->a), b16 = is_bf16(p, s->b);
            if (a16 != b16) return poa_fail(e, "%s: step %d: a GEMM with one bf16 operand", label, i + 1);
            poa_cublaslt_call call = {
                .transpose_a = s->ta, .transpose_b = s->tb, .m = poa_lin_at(s->m, batch), .n = s->n,
                .k = poa_lin_at(s->k, batch), .alpha = (float)s->alpha, .beta = (float)s->beta,
                .a = address(p, bases, bf16_bases, s->a, batch), .b = address(p, bases, bf16_bases, s->b, batch),
                .c = address(p, bases, bf16_bases, s->c, batch), .lda = s->lda, .ldb = s->ldb, .ldc = s->ldc,
                .type_a = a16 ? POA_LT_BF16 : POA_LT_F32, .type_b = b16 ? POA_LT_BF16 : POA_LT_F32,
                .type_c = POA_LT_F32, .epilogue = s->bias.value >= 0 ? POA_LT_EPILOGUE_BIAS : POA_LT_EPILOGUE_NONE,
                .bias = address(p, bases, bf16_bases, s->bias, batch) };
            char what[128];
            snprintf(what, sizeof what, "step %d of %s", i + 1, label);
            rc = poa_cuda_exec_gemm(x, &call, what, e);
        } else if (s->kind == POA_STEP_COPY) {
            pointers[0] = address(p, bases, bf16_bases, s->c, batch);
            pointers[1] = address(p, bases, bf16_bases, s->a, batch);
            scalars[0] = poa_lin_at(s->m, batch);
            args[0] = &pointers[0], args[1] = &pointers[1], args[2] = &scalars[0];
        } else {
            for (int j = 0; j < s->arg_count; j++) {
                if (s->is_scalar[j]) scalars[j] = poa_lin_at(s->scalars[j], batch), args[j] = &scalars[j];
                else pointers[j] = address(p, bases, bf16_bases, s->args[j], batch), args[j] = &pointers[j];
            }
        }
        /* a copy's or kernel's launches, args in kernel order (one with no threads, of an empty buffer, is skipped) */
        for (int l = s->first_launch; s->kind != POA_STEP_GEMM && l < s->first_launch + s->launch_count && !rc; l++)
            rc = poa_launch(x, functions ? functions[l] : NULL, &p->launches[l], batch, args, label, e);
        if (rc) return -1;
    }
    return 0;
}
