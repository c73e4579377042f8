// tests/cuda_host/scheduler.h: the thread scheduler of the host CUDA runtime (included by
// prelude.h, into every kernel module compiled by tests/c/cuda_host.h). A launch runs its blocks
// one after the other on the calling OS thread; the threads of a block are fibers (one stack
// each) that run until they park at a block barrier or a warp operation, or exit. When none can
// run, the warp operations whose participants have all arrived are carried out, then the block
// barrier is released if every thread that has not exited waits at the same one. Anything else
// (a barrier some threads never reach, a warp operation whose participants disagree on the
// call, the mask or the width, or reads a lane that does not take part) stops the launch with
// an error naming the kernel, block, threads and source lines.
//
// Thread order between parking points: natural (thread 0 first), reversed, or shuffled by a
// seed (race mode); the block order follows the same mode. Shared memory (the poa_smem section
// of the module, and the dynamic shared buffer) is filled with 0xff bytes (float/double NaN,
// integer -1) before every block.
#ifndef POA_CUDA_HOST_SCHEDULER_H
#define POA_CUDA_HOST_SCHEDULER_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int a = 1, unsigned int b = 1, unsigned int c = 1) : x(a), y(b), z(c) {}
};

extern "C" char __start_poa_smem[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_poa_smem[] __attribute__((weak, visibility("hidden")));

// The context switch: x86-64 saves the six callee-saved registers on the old stack and swaps
// stack pointers (about 10 ns; glibc's swapcontext makes a sigprocmask system call per switch,
// about 1.3 us, which would dominate a launch of thousands of shuffles); elsewhere ucontext.
#if defined(__x86_64__)
asm(R"(
    .text
    .p2align 4
    .globl poa_host_switch
    .hidden poa_host_switch
    .type poa_host_switch,@function
poa_host_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size poa_host_switch,.-poa_host_switch
)");
extern "C" __attribute__((visibility("hidden"))) void poa_host_switch(void **save, void *to);
#endif

namespace poa_host {

enum { STACK_BYTES = 128 * 1024, MAX_THREADS = 1024, WARP = 32 };
enum state { RUNNING, AT_BARRIER, AT_WARP, EXITED };
enum warp_op { OP_SYNCWARP, OP_SHFL, OP_SHFL_UP, OP_SHFL_DOWN, OP_SHFL_XOR, OP_ALL, OP_ANY, OP_BALLOT };
enum order { NATURAL, REVERSED, SHUFFLED };

static const char *const op_names[] = { "__syncwarp", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                        "__shfl_xor_sync", "__all_sync", "__any_sync", "__ballot_sync" };

struct fiber {
    void *sp;
    char *stack;
#if !defined(__x86_64__)
    ucontext_t context;
#endif
    uint3 index;
    unsigned linear;
    int state;
    int line;                 // where it is parked
    int op;                   // its warp operation
    unsigned mask;
    int width, arg;
    uint64_t value, result;
};

typedef void (*thunk_fn)(void (*kernel)(), void **args);

struct launch {
    const char *kernel;
    thunk_fn thunk;
    void (*function)();
    void **args;
    dim3 grid, block;
    uint3 block_index;
    unsigned threads;
    int order;
    uint64_t seed;
    fiber *current;
    void *scheduler_sp;
#if !defined(__x86_64__)
    ucontext_t scheduler_context;
#endif
    unsigned char *dynamic_shared;
    size_t dynamic_bytes;
    int failed;
    char error[1024];
};

static launch *active;  // the running launch (one at a time per process)
static fiber fibers[MAX_THREADS];
static unsigned order_buffer[MAX_THREADS];

static inline fiber *self() { return active->current; }

static void fail(const char *format, ...) {
    if (active->failed) return;
    active->failed = 1;
    int n = snprintf(active->error, sizeof active->error, "%s block (%u, %u, %u): ", active->kernel,
                     active->block_index.x, active->block_index.y, active->block_index.z);
    va_list list;
    va_start(list, format);
    vsnprintf(active->error + n, sizeof active->error - (size_t)n, format, list);
    va_end(list);
}

// Back to the scheduler; returns when this fiber is resumed.
static void park() {
    fiber *f = active->current;
#if defined(__x86_64__)
    poa_host_switch(&f->sp, active->scheduler_sp);
#else
    swapcontext(&f->context, &active->scheduler_context);
#endif
}

static void fiber_main() {
    launch *l = active;
    l->thunk(l->function, l->args);
    fiber *f = active->current;
    f->state = EXITED;
    park();
    abort();  // an exited fiber is never resumed
}

static int start_fiber(fiber *f) {
    if (!f->stack) {
        void *p = mmap(NULL, STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return -1;
        mprotect(p, 4096, PROT_NONE);  // guard page: a stack overflow faults
        f->stack = (char *)p;
    }
    f->state = RUNNING;
#if defined(__x86_64__)
    uintptr_t top = ((uintptr_t)f->stack + STACK_BYTES) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = nullptr;                  // fiber_main's return address (never used)
    *--sp = (void *)&fiber_main;      // poa_host_switch returns here
    for (int i = 0; i < 6; i++) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
    f->sp = sp;
#else
    getcontext(&f->context);
    f->context.uc_stack.ss_sp = f->stack + 4096;
    f->context.uc_stack.ss_size = STACK_BYTES - 4096;
    f->context.uc_link = nullptr;
    makecontext(&f->context, fiber_main, 0);
#endif
    return 0;
}

static void resume(fiber *f) {
    active->current = f;
#if defined(__x86_64__)
    poa_host_switch(&active->scheduler_sp, f->sp);
#else
    swapcontext(&active->scheduler_context, &f->context);
#endif
}

static uint64_t next_random(uint64_t *s) {  // splitmix64
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// order_buffer = 0 .. n-1 in the launch's order.
static void arrange(unsigned n, uint64_t *seed) {
    for (unsigned i = 0; i < n; i++) order_buffer[i] = active->order == REVERSED ? n - 1 - i : i;
    if (active->order == SHUFFLED)
        for (unsigned i = n; i > 1; i--) {
            unsigned j = (unsigned)(next_random(seed) % i), t = order_buffer[i - 1];
            order_buffer[i - 1] = order_buffer[j], order_buffer[j] = t;
        }
}

// ---- warp operations ----

static const char *state_name(const fiber *g) {
    return g->state == AT_BARRIER ? "waits at __syncthreads" : g->state == AT_WARP ? op_names[g->op] : "runs";
}

// Lane `lane`'s value for the shuffle of participant f, or fails when it does not take part.
static int source_lane(const fiber *f, unsigned lane, unsigned *source) {
    const unsigned width = (unsigned)f->width, start = lane & ~(width - 1);
    long s;
    switch (f->op) {
    case OP_SHFL: s = start + ((unsigned)f->arg & (width - 1)); break;
    case OP_SHFL_UP: s = (long)lane - f->arg; if (s < (long)start) s = lane; break;
    case OP_SHFL_DOWN: s = (long)lane + f->arg; if (s >= (long)(start + width)) s = lane; break;
    default: s = lane ^ (unsigned)f->arg; if (s >= (long)(start + width)) s = lane; break;
    }
    *source = (unsigned)s;
    return 0;
}

// Carries out the warp operation of every group whose participants have all arrived; 1 when
// one was, 0 when none, -1 after fail().
static int resolve_warps() {
    int progress = 0;
    const unsigned n = active->threads;
    for (unsigned base = 0; base < n; base += WARP) {
        fiber *w = &fibers[base];
        const unsigned lanes = n - base < WARP ? n - base : WARP;
        for (unsigned l = 0; l < lanes; l++) {
            fiber *f = &w[l];
            if (f->state != AT_WARP) continue;
            if (!(f->mask >> l & 1u)) {
                fail("thread %u calls %s (line %d) with mask 0x%08x, which leaves out its own lane %u", f->linear,
                     op_names[f->op], f->line, f->mask, l);
                return -1;
            }
            if (f->op >= OP_SHFL && f->op <= OP_SHFL_XOR && (f->width < 1 || f->width > 32 || (f->width & (f->width - 1)))) {
                fail("thread %u calls %s (line %d) with width %d (a power of two up to 32)", f->linear, op_names[f->op],
                     f->line, f->width);
                return -1;
            }
            unsigned present = 0;
            for (unsigned m = 0; m < lanes; m++) {
                if (!(f->mask >> m & 1u)) continue;
                fiber *g = &w[m];
                if (g->state == EXITED) continue;
                if (g->state != AT_WARP || g->op != f->op || g->line != f->line || g->mask != f->mask ||
                    g->width != f->width) {
                    fail("warp %u: thread %u calls %s (line %d, mask 0x%08x, width %d) but lane %u of its mask %s "
                         "(line %d, mask 0x%08x, width %d)", base / WARP, f->linear, op_names[f->op], f->line, f->mask,
                         f->width, m, state_name(g), g->line, g->mask, g->width);
                    return -1;
                }
                present |= 1u << m;
            }
            int all = 1, any = 0;
            unsigned ballot = 0;
            for (unsigned m = 0; m < lanes; m++)
                if (present >> m & 1u) {
                    all &= w[m].value != 0, any |= w[m].value != 0;
                    if (w[m].value) ballot |= 1u << m;
                }
            for (unsigned m = 0; m < lanes; m++) {
                if (!(present >> m & 1u)) continue;
                fiber *g = &w[m];
                if (g->op >= OP_SHFL && g->op <= OP_SHFL_XOR) {
                    unsigned s;
                    source_lane(g, m, &s);
                    if (s >= lanes || !(present >> s & 1u)) {
                        fail("warp %u: lane %u's %s (line %d) reads lane %u, which does not take part (mask 0x%08x)",
                             base / WARP, m, op_names[g->op], g->line, s, g->mask);
                        return -1;
                    }
                    g->result = w[s].value;
                } else {
                    g->result = g->op == OP_ALL ? (uint64_t)all : g->op == OP_ANY ? (uint64_t)any : ballot;
                }
                g->state = RUNNING;
            }
            progress = 1;
        }
    }
    return progress;
}

// Releases the block barrier when every thread waits at the same one. A thread that exited
// before it fails the launch: __syncthreads is allowed in conditional code only when the
// condition is the same in the whole block (CUDA C++ Programming Guide), and a return is one.
static int resolve_barrier() {
    const fiber *first = nullptr;
    for (unsigned t = 0; t < active->threads && !first; t++)
        if (fibers[t].state == AT_BARRIER) first = &fibers[t];
    for (unsigned t = 0; t < active->threads; t++) {
        const fiber *f = &fibers[t];
        if (f->state == EXITED) {
            fail("thread %u waits at __syncthreads (line %d) but thread %u has exited: a barrier not every thread "
                 "reaches", first->linear, first->line, f->linear);
            return -1;
        }
        if (f->state != AT_BARRIER || f->line != first->line) {
            fail("thread %u waits at __syncthreads (line %d) but thread %u %s (line %d): a barrier not every "
                 "thread reaches", first->linear, first->line, f->linear, state_name(f), f->line);
            return -1;
        }
    }
    for (unsigned t = 0; t < active->threads; t++)
        if (fibers[t].state == AT_BARRIER) fibers[t].state = RUNNING;
    return 0;
}

static void poison_shared() {
    char *start = __start_poa_smem, *stop = __stop_poa_smem;
    if (start && stop > start) memset(start, 0xff, (size_t)(stop - start));
    if (active->dynamic_shared) memset(active->dynamic_shared, 0xff, active->dynamic_bytes);
}

static int run_block(uint64_t *seed) {
    launch *l = active;
    poison_shared();
    for (unsigned t = 0; t < l->threads; t++) {
        fiber *f = &fibers[t];
        f->linear = t;
        f->index = { t % l->block.x, t / l->block.x % l->block.y, t / (l->block.x * l->block.y) };
        if (start_fiber(f)) {
            fail("no memory for the stack of thread %u", t);
            return -1;
        }
    }
    for (;;) {
        int ran = 1;
        while (ran) {
            ran = 0;
            arrange(l->threads, seed);
            for (unsigned i = 0; i < l->threads; i++) {
                fiber *f = &fibers[order_buffer[i]];
                if (f->state != RUNNING) continue;
                resume(f);
                if (l->failed) return -1;
                ran = 1;
            }
            int r = resolve_warps();
            if (r < 0) return -1;
            if (r) ran = 1;
        }
        unsigned exited = 0;
        for (unsigned t = 0; t < l->threads; t++) exited += fibers[t].state == EXITED;
        if (exited == l->threads) return 0;
        if (resolve_barrier()) return -1;
    }
}

// Runs every block of the launch.
static int run(launch *l) {
    active = l;
    l->threads = l->block.x * l->block.y * l->block.z;
    if (l->threads == 0 || l->threads > MAX_THREADS || l->grid.x == 0 || l->grid.y == 0 || l->grid.z == 0 ||
        l->grid.y > 65535 || l->grid.z > 65535 || l->block.z > 64) {
        snprintf(l->error, sizeof l->error, "%s: invalid launch: grid (%u, %u, %u), block (%u, %u, %u)", l->kernel,
                 l->grid.x, l->grid.y, l->grid.z, l->block.x, l->block.y, l->block.z);
        return -1;
    }
    const uint64_t blocks = (uint64_t)l->grid.x * l->grid.y * l->grid.z;
    uint64_t seed = l->seed;
    for (uint64_t i = 0; i < blocks; i++) {
        uint64_t b = l->order == REVERSED ? blocks - 1 - i : i;
        if (l->order == SHUFFLED) b = (i * 0x9e3779b1ull + l->seed) % blocks;  // a permutation when coprime
        if (l->order == SHUFFLED && blocks % 0x9e3779b1ull == 0) b = i;
        l->block_index = { (unsigned)(b % l->grid.x), (unsigned)(b / l->grid.x % l->grid.y),
                           (unsigned)(b / ((uint64_t)l->grid.x * l->grid.y)) };
        if (run_block(&seed)) return -1;
    }
    return 0;
}

// ---- what the built-ins call ----

static void syncthreads(int line) {
    fiber *f = self();
    f->state = AT_BARRIER, f->line = line;
    park();
}

static uint64_t warp_op(int op, unsigned mask, uint64_t value, int arg, int width, int line) {
    fiber *f = self();
    f->state = AT_WARP, f->op = op, f->mask = mask, f->value = value, f->arg = arg, f->width = width, f->line = line;
    park();
    return f->result;
}

}  // namespace poa_host

#endif
