// tests/cuda_host/prelude.h: what CUDA C++ gives a kernel, for the host compiler. A kernel
// module's .cu text (generated or from templates/, exactly what NVRTC compiles) is compiled by
// g++ as C++ with this header force-included (tests/c/cuda_host.h does it), and its kernels run
// thread by thread on the CPU through the scheduler of scheduler.h: built-in indices, static and
// dynamic __shared__ memory, __syncthreads, warp shuffles and votes with their lane, width and
// mask rules, __syncwarp, atomics, bf16 and half with round-to-nearest-even conversions, the
// math functions and intrinsics (host libm: within CUDA's documented error), __launch_bounds__,
// __restrict__. tests/c/cuda_host.h appends POA_HOST_KERNEL(name) after each kernel; the module
// then exports poa_host_launch, which runs a kernel by name with cuLaunchKernel's argument array.
#ifndef POA_CUDA_HOST_PRELUDE_H
#define POA_CUDA_HOST_PRELUDE_H

#include <math.h>

#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "scheduler.h"

#define __global__ __attribute__((used))
#define __device__ static inline
#define __host__
#define __forceinline__ __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __constant__ static
// Static shared variables live in the module's poa_smem section, poisoned before every block;
// `extern __shared__ T name[];` (dynamic) is rewritten by tests/c/cuda_host.h to
// `T *name = (T *)poa_host_dynamic_shared();`, the launch's buffer of exactly its size.
#define __shared__ static __attribute__((section("poa_smem"), aligned(16)))

#define threadIdx (poa_host::self()->index)
#define blockIdx (poa_host::active->block_index)
#define blockDim (poa_host::active->block)
#define gridDim (poa_host::active->grid)
static const int warpSize = 32;

static inline void *poa_host_dynamic_shared() { return poa_host::active->dynamic_shared; }

// ---- barriers, shuffles, votes ----

static inline void __syncthreads(int line = __builtin_LINE()) { poa_host::syncthreads(line); }
static inline void __syncwarp(unsigned mask = 0xffffffffu, int line = __builtin_LINE()) {
    poa_host::warp_op(poa_host::OP_SYNCWARP, mask, 0, 0, 32, line);
}

template <class T> static inline uint64_t poa_host_bits(T v) {
    static_assert(sizeof(T) <= 8, "a shuffled value is at most 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    return b;
}
template <class T> static inline T poa_host_from_bits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof v);
    return v;
}

#define POA_HOST_SHUFFLE(name, op, Arg)                                                                     \
    template <class T>                                                                                      \
    static inline T name(unsigned mask, T var, Arg arg, int width = 32, int line = __builtin_LINE()) {     \
        return poa_host_from_bits<T>(poa_host::warp_op(poa_host::op, mask, poa_host_bits(var), (int)arg, width, line)); \
    }
POA_HOST_SHUFFLE(__shfl_sync, OP_SHFL, int)
POA_HOST_SHUFFLE(__shfl_up_sync, OP_SHFL_UP, unsigned)
POA_HOST_SHUFFLE(__shfl_down_sync, OP_SHFL_DOWN, unsigned)
POA_HOST_SHUFFLE(__shfl_xor_sync, OP_SHFL_XOR, int)
#undef POA_HOST_SHUFFLE

static inline int __all_sync(unsigned mask, int predicate, int line = __builtin_LINE()) {
    return (int)poa_host::warp_op(poa_host::OP_ALL, mask, predicate != 0, 0, 32, line);
}
static inline int __any_sync(unsigned mask, int predicate, int line = __builtin_LINE()) {
    return (int)poa_host::warp_op(poa_host::OP_ANY, mask, predicate != 0, 0, 32, line);
}
static inline unsigned __ballot_sync(unsigned mask, int predicate, int line = __builtin_LINE()) {
    return (unsigned)poa_host::warp_op(poa_host::OP_BALLOT, mask, predicate != 0, 0, 32, line);
}
// The lanes of the caller's warp that have not exited (fibers do not know which are converged).
static inline unsigned __activemask() {
    const unsigned base = poa_host::self()->linear & ~31u;
    unsigned m = 0;
    for (unsigned l = 0; l < 32 && base + l < poa_host::active->threads; l++)
        if (poa_host::fibers[base + l].state != poa_host::EXITED) m |= 1u << l;
    return m;
}

// ---- bit casts ----

static inline unsigned __float_as_uint(float x) { return poa_host_from_bits<unsigned>(poa_host_bits(x)); }
static inline int __float_as_int(float x) { return poa_host_from_bits<int>(poa_host_bits(x)); }
static inline float __uint_as_float(unsigned x) { return poa_host_from_bits<float>(poa_host_bits(x)); }
static inline float __int_as_float(int x) { return poa_host_from_bits<float>(poa_host_bits(x)); }
static inline long long __double_as_longlong(double x) { return poa_host_from_bits<long long>(poa_host_bits(x)); }
static inline double __longlong_as_double(long long x) { return poa_host_from_bits<double>(poa_host_bits(x)); }

// ---- math (host libm, compiled with -ffp-contract=off: no fused multiply-adds but fmaf's) ----

static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
// glibc declares __expf and __logf itself (its internal names of expf and logf)
static inline float poa_host_expf(float x) { return expf(x); }
static inline float poa_host_logf(float x) { return logf(x); }
#define __expf poa_host_expf
#define __logf poa_host_logf
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
using std::max;
using std::min;

// ---- bf16 and half: storage bits, conversions round to nearest even ----

struct __nv_bfloat16 {
    unsigned short x;
};
struct __half {
    unsigned short x;
};

static inline unsigned short poa_host_bf16_rn(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;  // NaN, as cuda_bf16.hpp's software path
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
static inline __nv_bfloat16 __float2bfloat16(float f) { return { poa_host_bf16_rn(f) }; }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return { poa_host_bf16_rn(f) }; }
static inline __nv_bfloat16 __float2bfloat16_rz(float f) { return { (unsigned short)(__float_as_uint(f) >> 16) }; }
static inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((unsigned)h.x << 16); }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short x) { return { x }; }
static inline __nv_bfloat16 operator+(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16(__bfloat162float(a) + __bfloat162float(b));
}
static inline __nv_bfloat16 operator*(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16(__bfloat162float(a) * __bfloat162float(b));
}

static inline __half __float2half(float f) {  // round to nearest even, subnormals, overflow to infinity
    _Float16 h = (_Float16)f;
    return { poa_host_from_bits<unsigned short>(poa_host_bits(h)) };
}
static inline __half __float2half_rn(float f) { return __float2half(f); }
static inline float __half2float(__half h) { return (float)poa_host_from_bits<_Float16>(h.x); }
static inline unsigned short __half_as_ushort(__half h) { return h.x; }
static inline __half __ushort_as_half(unsigned short x) { return { x }; }

// ---- atomics: the fibers of a launch share one OS thread, so a read-modify-write is atomic ----

template <class T> static inline T atomicAdd(T *p, T v) { T old = *p; *p = old + v; return old; }
static inline __nv_bfloat16 atomicAdd(__nv_bfloat16 *p, __nv_bfloat16 v) {
    __nv_bfloat16 old = *p;
    *p = __float2bfloat16(__bfloat162float(old) + __bfloat162float(v));
    return old;
}
static inline __half atomicAdd(__half *p, __half v) {
    __half old = *p;
    *p = __float2half(__half2float(old) + __half2float(v));
    return old;
}
template <class T> static inline T atomicSub(T *p, T v) { T old = *p; *p = old - v; return old; }
template <class T> static inline T atomicExch(T *p, T v) { T old = *p; *p = v; return old; }
template <class T> static inline T atomicMax(T *p, T v) { T old = *p; if (v > old) *p = v; return old; }
template <class T> static inline T atomicMin(T *p, T v) { T old = *p; if (v < old) *p = v; return old; }
template <class T> static inline T atomicCAS(T *p, T compare, T v) { T old = *p; if (old == compare) *p = v; return old; }
template <class T> static inline T atomicAnd(T *p, T v) { T old = *p; *p = old & v; return old; }
template <class T> static inline T atomicOr(T *p, T v) { T old = *p; *p = old | v; return old; }
template <class T> static inline T atomicXor(T *p, T v) { T old = *p; *p = old ^ v; return old; }
static inline unsigned atomicInc(unsigned *p, unsigned limit) {
    unsigned old = *p;
    *p = old >= limit ? 0 : old + 1;
    return old;
}
static inline void __threadfence() {}
static inline void __threadfence_block() {}

// ---- kernels by name ----

namespace poa_host {

struct entry {
    const char *name;
    void (*function)();
    thunk_fn thunk;
    char signature[64];  // a letter per parameter: f d h(16-bit) l i b(yte) pointers, v a value
};

template <class T> static char type_code() {
    if constexpr (std::is_pointer<T>::value) {
        using P = typename std::remove_cv<typename std::remove_pointer<T>::type>::type;
        if (std::is_same<P, float>::value) return 'f';
        if (std::is_same<P, double>::value) return 'd';
        if (sizeof(P) == 2) return 'h';
        if (sizeof(P) == 8) return 'l';
        if (sizeof(P) == 4) return 'i';
        return 'b';
    }
    return 'v';
}
static entry kernels[256];
static int kernel_count;

template <class... A, std::size_t... I> static void call(void (*f)(A...), void **args, std::index_sequence<I...>) {
    f(*static_cast<A *>(args[I])...);
}
template <class... A> static void thunk(void (*kernel)(), void **args) {
    call(reinterpret_cast<void (*)(A...)>(kernel), args, std::index_sequence_for<A...>{});
}
struct registrar {
    template <class... A> registrar(const char *name, void (*f)(A...)) {
        if (kernel_count == 256 || sizeof...(A) >= sizeof kernels[0].signature) return;
        entry *k = &kernels[kernel_count++];
        *k = { name, reinterpret_cast<void (*)()>(f), &thunk<A...>, { type_code<A>()..., 0 } };
    }
};

}  // namespace poa_host

#define POA_HOST_KERNEL(name) static poa_host::registrar poa_host_registrar_##name(#name, &name);

// Runs kernel `name` over grid x block with cuLaunchKernel's argument array; order 0 natural,
// 1 reversed, 2 shuffled by seed; dynamic_shared: the launch's dynamic shared buffer (or NULL).
// Returns 0, or -1 with the reason in error.
extern "C" __attribute__((visibility("default"))) int poa_host_launch(
    const char *name, const unsigned grid[3], const unsigned block[3], void **args, int order, unsigned long long seed,
    unsigned char *dynamic_shared, size_t dynamic_bytes, char *error, size_t error_size) {
    int k = 0;
    while (k < poa_host::kernel_count && strcmp(poa_host::kernels[k].name, name)) k++;
    if (k == poa_host::kernel_count) {
        snprintf(error, error_size, "no kernel %s in the module", name);
        return -1;
    }
    static poa_host::launch l;
    memset((void *)&l, 0, sizeof l);
    l.kernel = poa_host::kernels[k].name, l.function = poa_host::kernels[k].function, l.thunk = poa_host::kernels[k].thunk;
    l.args = args, l.order = order, l.seed = seed;
    l.grid = dim3(grid[0], grid[1], grid[2]), l.block = dim3(block[0], block[1], block[2]);
    l.dynamic_shared = dynamic_shared, l.dynamic_bytes = dynamic_bytes;
    int rc = poa_host::run(&l);
    if (rc) snprintf(error, error_size, "%s", l.error);
    poa_host::active = nullptr;
    return rc;
}

// The parameter letters of kernel `name` (see entry), NULL when the module has no such kernel.
extern "C" __attribute__((visibility("default"))) const char *poa_host_signature(const char *name) {
    for (int k = 0; k < poa_host::kernel_count; k++)
        if (!strcmp(poa_host::kernels[k].name, name)) return poa_host::kernels[k].signature;
    return nullptr;
}

// Where the running launch is (for a fault handler): "" when none.
extern "C" __attribute__((visibility("default"))) void poa_host_where(char *text, size_t size) {
    const poa_host::launch *l = poa_host::active;
    if (!l || !l->current) {
        snprintf(text, size, "%s", "");
        return;
    }
    const uint3 t = l->current->index;
    snprintf(text, size, "kernel %s, block (%u, %u, %u), thread (%u, %u, %u)", l->kernel, l->block_index.x,
             l->block_index.y, l->block_index.z, t.x, t.y, t.z);
}

#endif
