/* test_cuda_host.c: the host CUDA runtime (tests/c/cuda_host.h, tests/cuda_host/) on kernels
   written for it: block reductions through shuffles, shared memory and barriers (the same bits
   in every thread order); shuffle lane, width and mask rules, votes; a barrier not every thread
   reaches, a thread that exits before a barrier, a shuffle whose participants disagree (site,
   mask, own bit, width, a source lane that does not take part) are launch errors; a read past a
   device allocation, past a static shared array and past the dynamic shared buffer fault loudly
   (in a child process); shared memory starts poisoned; race mode (reversed and shuffled thread
   order) exposes a missing barrier that natural order hides, and the other way round; bf16 and
   half conversions round to nearest even (bf16 bit for bit against runtime/bf16.h); atomics;
   __expf and erff within their documented ulp. SKIP when there is no host C++ compiler. */
#include <math.h>
#include <sys/wait.h>

#include "bf16.h"
#include "check.h"
#include "cuda_host.h"

static const char *const source =
    "extern \"C\" __global__ void __launch_bounds__(256) row_sum(float *out, const float *x, long n) {\n"
    "    __shared__ float partial[32];\n"
    "    float v = 0.0f;\n"
    "    for (long i = threadIdx.x; i < n; i += blockDim.x) v += x[blockIdx.x * n + i];\n"
    "    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);\n"
    "    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;\n"
    "    if (lane == 0) partial[warp] = v;\n"
    "    __syncthreads();\n"
    "    if (warp == 0) {\n"
    "        v = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.0f;\n"
    "        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);\n"
    "        if (lane == 0) out[blockIdx.x] = v;\n"
    "    }\n"
    "}\n"
    "// every lane: shfl from lane 7, up 3 within 8, down 5 within 16, xor 4 within 8, ballot, any, all\n"
    "extern \"C\" __global__ void lanes(int *out) {\n"
    "    const int l = threadIdx.x;\n"
    "    out[l * 7 + 0] = __shfl_sync(0xffffffffu, l * 10, 7);\n"
    "    out[l * 7 + 1] = __shfl_up_sync(0xffffffffu, l * 10, 3, 8);\n"
    "    out[l * 7 + 2] = __shfl_down_sync(0xffffffffu, l * 10, 5, 16);\n"
    "    out[l * 7 + 3] = __shfl_xor_sync(0xffffffffu, l * 10, 4, 8);\n"
    "    out[l * 7 + 4] = (int)__ballot_sync(0xffffffffu, l % 3 == 0);\n"
    "    out[l * 7 + 5] = __any_sync(0xffffffffu, l == 31);\n"
    "    out[l * 7 + 6] = __all_sync(0xffffffffu, l < 31);\n"
    "}\n"
    "extern \"C\" __global__ void divergent_barrier(float *out) {\n"
    "    if (threadIdx.x < 16) __syncthreads();\n"
    "    out[threadIdx.x] = 1.0f;\n"
    "}\n"
    "extern \"C\" __global__ void exit_before_barrier(float *out) {\n"
    "    if (threadIdx.x == 5) return;\n"
    "    __syncthreads();\n"
    "    out[threadIdx.x] = 1.0f;\n"
    "}\n"
    "extern \"C\" __global__ void shuffle_sites(float *out) {\n"
    "    float v = threadIdx.x;\n"
    "    if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);\n"
    "    else v = __shfl_xor_sync(0xffffffffu, v, 1);\n"
    "    out[threadIdx.x] = v;\n"
    "}\n"
    "extern \"C\" __global__ void shuffle_masks(float *out, unsigned mask_low, unsigned mask_high, int width, int src) {\n"
    "    float v = threadIdx.x;\n"
    "    v = __shfl_sync(threadIdx.x < 16 ? mask_low : mask_high, v, src, width);\n"
    "    out[threadIdx.x] = v;\n"
    "}\n"
    "extern \"C\" __global__ void half_warp(float *out) {\n"
    "    float v = threadIdx.x;\n"
    "    if (threadIdx.x < 16) v = __shfl_xor_sync(0x0000ffffu, v, 1);\n"
    "    else v = __shfl_xor_sync(0xffff0000u, v, 2);\n"
    "    out[threadIdx.x] = v;\n"
    "}\n"
    "extern \"C\" __global__ void early_warps(float *out) {\n"
    "    if (threadIdx.x >= 32) return;  // whole warps leave\n"
    "    float v = __shfl_down_sync(0xffffffffu, (float)threadIdx.x, 1);\n"
    "    __syncwarp();\n"
    "    out[threadIdx.x] = v;\n"
    "}\n"
    "extern \"C\" __global__ void past_the_end(float *out, long n) {\n"
    "    const long i = blockIdx.x * blockDim.x + threadIdx.x;\n"
    "    if (i <= n) out[i] = 1.0f;  // one too many\n"
    "}\n"
    "extern \"C\" __global__ void shared_past_the_end(float *out) {\n"
    "    __shared__ float s[64];\n"
    "    s[threadIdx.x + 1] = 1.0f;\n"
    "    __syncthreads();\n"
    "    out[threadIdx.x] = s[threadIdx.x];\n"
    "}\n"
    "extern \"C\" __global__ void dynamic(float *out, int past) {\n"
    "    extern __shared__ float dyn[];\n"
    "    const int t = threadIdx.x;\n"
    "    dyn[t + past] = (float)t;\n"
    "    __syncthreads();\n"
    "    out[t] = dyn[(t + 1) % blockDim.x];\n"
    "}\n"
    "extern \"C\" __global__ void poisoned(unsigned *out) {\n"
    "    __shared__ unsigned s[32];\n"
    "    if (blockIdx.x == 0) s[threadIdx.x] = 7u;\n"
    "    __syncthreads();\n"
    "    out[blockIdx.x * 32 + threadIdx.x] = s[threadIdx.x];\n"
    "}\n"
    "// reads the next thread's write with no barrier: natural order reads the poison\n"
    "extern \"C\" __global__ void race_next(float *out, int barrier) {\n"
    "    __shared__ float s[64];\n"
    "    s[threadIdx.x] = (float)threadIdx.x;\n"
    "    if (barrier) __syncthreads();\n"
    "    out[threadIdx.x] = s[threadIdx.x < 63 ? threadIdx.x + 1 : 63];\n"
    "}\n"
    "// reads the previous thread's write with no barrier: reversed order reads the poison\n"
    "extern \"C\" __global__ void race_previous(float *out) {\n"
    "    __shared__ float s[64];\n"
    "    s[threadIdx.x] = (float)threadIdx.x;\n"
    "    out[threadIdx.x] = s[threadIdx.x > 0 ? threadIdx.x - 1 : 0];\n"
    "}\n"
    "extern \"C\" __global__ void convert(unsigned short *bf, unsigned short *bf_rz, unsigned short *half,\n"
    "                                     float *back, const float *x, long n) {\n"
    "    const long i = blockIdx.x * blockDim.x + threadIdx.x;\n"
    "    if (i >= n) return;\n"
    "    bf[i] = __bfloat16_as_ushort(__float2bfloat16(x[i]));\n"
    "    bf_rz[i] = __bfloat16_as_ushort(__float2bfloat16_rz(x[i]));\n"
    "    half[i] = __half_as_ushort(__float2half(x[i]));\n"
    "    back[i] = __bfloat162float(__ushort_as_bfloat16(bf[i])) + __half2float(__ushort_as_half(half[i]));\n"
    "}\n"
    "extern \"C\" __global__ void atomics(int *count, float *sum, unsigned short *bsum, int *top) {\n"
    "    atomicAdd(count, 1);\n"
    "    atomicAdd(sum, 0.5f);\n"
    "    __nv_bfloat16 one = __float2bfloat16(1.0f);\n"
    "    atomicAdd((__nv_bfloat16 *)bsum, one);\n"
    "    atomicMax(top, (int)(blockIdx.x * blockDim.x + threadIdx.x));\n"
    "}\n"
    "extern \"C\" __global__ void math(float *out, const float *x, long n) {\n"
    "    const long i = blockIdx.x * blockDim.x + threadIdx.x;\n"
    "    if (i < n) out[2 * i] = __expf(x[i]), out[2 * i + 1] = erff(x[i]);\n"
    "}\n";

static cuda_host host;
static const char *const MODULE = "test_kernels.cu";

static int launch(const char *kernel, unsigned grid, unsigned block, void **args, int order, poa_error *e) {
    const unsigned g[3] = { grid, 1, 1 }, b[3] = { block, 1, 1 };
    host.force_order = order + 1;
    return cuda_host_launch(&host, MODULE, kernel, g, b, args, e);
}

static float *device_floats(long n) { return cuda_host_alloc(sizeof(float) * (size_t)n); }

static void check_reduction(void) {
    enum { ROWS = 3, N = 1000 };
    float *x = device_floats(ROWS * N), *out = device_floats(ROWS), first[ROWS];
    for (long i = 0; i < ROWS * N; i++) x[i] = (float)sin(0.37 * (double)i) + 0.25f;
    long n = N;
    void *args[] = { &out, &x, &n };
    poa_error e = { { 0 } };
    int rc = 0, same = 1;
    double worst = 0;
    for (int order = 0; order < 3 && !rc; order++) {
        rc = launch("row_sum", ROWS, 224, args, order, &e);  /* 7 warps */
        for (int r = 0; r < ROWS && !rc; r++) {
            double want = 0;
            for (long i = 0; i < N; i++) want += x[r * N + i];
            worst = fmax(worst, fabs(out[r] - want) / fabs(want));
            if (order == 0) first[r] = out[r];
            else same &= memcmp(&first[r], &out[r], sizeof(float)) == 0;
        }
    }
    CHECK("a block sum through shuffles, shared memory and a barrier: within 1e-6 of the double sum, the same bits in "
          "natural, reversed and shuffled thread order", !rc && worst < 1e-6 && same, "%s worst %.3g same %d",
          rc ? e.message : "", worst, same);
    cuda_host_free(x), cuda_host_free(out);
}

static void check_lanes(void) {
    int *out = cuda_host_alloc(sizeof(int) * 32 * 7);
    void *args[] = { &out };
    poa_error e = { { 0 } };
    int rc = launch("lanes", 1, 32, args, 2, &e), bad = 0;
    unsigned ballot = 0;
    for (int l = 0; l < 32; l += 3) ballot |= 1u << l;
    for (int l = 0; l < 32 && !rc; l++) {
        int up = l % 8 >= 3 ? (l - 3) * 10 : l * 10, down = l % 16 + 5 < 16 ? (l + 5) * 10 : l * 10;
        int want[7] = { 70, up, down, (l ^ 4) * 10, (int)ballot, 1, 0 };
        for (int k = 0; k < 7; k++) bad += out[l * 7 + k] != want[k];
    }
    CHECK("shuffles: idx, up and down without wrapping inside their width, xor; ballot, any, all", !rc && bad == 0,
          "%s %d wrong", rc ? e.message : "", bad);
    cuda_host_free(out);
}

/* The launch fails and its message has `want`. */
static void expect_error(const char *label, const char *kernel, unsigned block, void **args, const char *want) {
    poa_error e = { { 0 } };
    int rc = launch(kernel, 1, block, args, 0, &e);
    CHECK(label, rc && strstr(e.message, want), "rc %d: %s", rc, e.message);
    if (rc) printf("  %s\n", e.message);
}

static void check_errors(void) {
    float *out = device_floats(64);
    void *args1[] = { &out };
    expect_error("a barrier half the block never reaches is a launch error", "divergent_barrier", 64, args1,
                 "a barrier not every thread reaches");
    expect_error("a thread that exits before a barrier its block-mates wait at is a launch error", "exit_before_barrier",
                 64, args1, "has exited");
    expect_error("a shuffle called from two different places by one warp is a launch error", "shuffle_sites", 32, args1,
                 "but lane");
    unsigned low = 0x0000ffffu, high = 0xffff0000u, full = 0xffffffffu;
    int width = 32, src = 3, bad_width = 12, far = 20;
    void *own[] = { &out, &high, &low, &width, &src };
    expect_error("a shuffle whose mask leaves out the caller's lane is a launch error", "shuffle_masks", 32, own,
                 "leaves out its own lane");
    void *mixed[] = { &out, &full, &low, &width, &src };
    expect_error("a shuffle whose lanes pass different masks is a launch error", "shuffle_masks", 32, mixed, "mask 0x");
    void *width12[] = { &out, &full, &full, &bad_width, &src };
    expect_error("a shuffle width that is not a power of two is a launch error", "shuffle_masks", 32, width12,
                 "width 12");
    void *outside[] = { &out, &low, &high, &width, &far };
    expect_error("a shuffle reading a lane outside its mask is a launch error", "shuffle_masks", 32, outside,
                 "does not take part");
    poa_error e = { { 0 } };
    int rc = launch("half_warp", 1, 32, args1, 0, &e), bad = 0;
    for (int l = 0; l < 32 && !rc; l++) bad += out[l] != (float)(l < 16 ? l ^ 1 : l ^ 2);
    rc = rc || launch("early_warps", 1, 128, args1, 1, &e);
    for (int l = 0; l < 32 && !rc; l++) bad += out[l] != (float)(l < 31 ? l + 1 : 31);
    CHECK("disjoint masks run side by side; warps that exit early leave the others' shuffles and __syncwarp alone",
          !rc && bad == 0, "%s %d wrong", rc ? e.message : "", bad);
    cuda_host_free(out);
}

/* Runs kernel in a child process whose stdout comes back in text; the child's exit status. */
static int in_child(const char *kernel, unsigned block, size_t shared, void **args, char *text, size_t size) {
    int fds[2];
    if (pipe(fds)) return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        poa_error e = { { 0 } };
        const unsigned g[3] = { 1, 1, 1 }, b[3] = { block, 1, 1 };
        int rc = cuda_host_launch_shared(&host, MODULE, kernel, g, b, shared, args, &e);
        printf("no fault (rc %d %s)\n", rc, e.message);
        fflush(stdout);
        _exit(0);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t got;
    while (n + 1 < size && (got = read(fds[0], text + n, size - 1 - n)) > 0) n += (size_t)got;
    text[n] = 0;
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void check_faults(void) {
    char text[1024];
    float *out = device_floats(100);
    long n = 100;
    void *args[] = { &out, &n };
    int status = in_child("past_the_end", 128, 0, args, text, sizeof text);
    CHECK("a write one element past a device allocation faults loudly, naming the kernel, block and thread",
          status == 3 && strstr(text, "FAIL cuda_host: kernel past_the_end, block (0, 0, 0), thread (100, 0, 0)") &&
              strstr(text, "0 bytes past the end of a 400-byte device allocation"),
          "status %d: %s", status, text);
    printf("  child: %s", text + 5);
    void *args1[] = { &out };
    status = in_child("shared_past_the_end", 64, 0, args1, text, sizeof text);
    CHECK("a write past a static shared array traps loudly", status == 3 && strstr(text, "bounds trap") &&
          strstr(text, "thread (63, 0, 0)"), "status %d: %s", status, text);
    printf("  child: %s", text + 5);
    int past = 0;
    void *dyn[] = { &out, &past };
    status = in_child("dynamic", 64, 64 * sizeof(float), dyn, text, sizeof text);
    int fine = status == 0 && strstr(text, "no fault (rc 0") != NULL;
    past = 1;
    status = in_child("dynamic", 64, 64 * sizeof(float), dyn, text, sizeof text);
    CHECK("dynamic shared memory is exactly the launch's bytes: within them runs, one element past faults", fine &&
          status == 3 && strstr(text, "kernel dynamic") && strstr(text, "256-byte device allocation"),
          "status %d: %s", status, text);
    cuda_host_free(out);
}

static void check_poison_and_races(void) {
    unsigned *words = cuda_host_alloc(sizeof(unsigned) * 64);
    void *args[] = { &words };
    poa_error e = { { 0 } };
    int rc = launch("poisoned", 2, 32, args, 0, &e), bad = 0;
    for (int i = 0; i < 64 && !rc; i++) bad += words[i] != (i < 32 ? 7u : 0xffffffffu);
    CHECK("shared memory starts every block as 0xff bytes (NaN, -1), not zero and not the last block's", !rc && !bad,
          "%s %d wrong", rc ? e.message : "", bad);
    cuda_host_free(words);
    float *out = device_floats(64);
    int with = 1, without = 0;
    void *fixed[] = { &out, &with }, *racy[] = { &out, &without }, *prev[] = { &out };
    int nan_in[3][2] = { { 0 } }, order_ok[3] = { 0 };
    for (int order = 0; order < 3; order++) {
        rc = launch("race_next", 1, 64, fixed, order, &e);
        int ok = !rc;
        for (int t = 0; t < 64 && ok; t++) ok = out[t] == (float)(t < 63 ? t + 1 : 63);
        order_ok[order] = ok;
        rc = launch("race_next", 1, 64, racy, order, &e);
        for (int t = 0; t < 64 && !rc; t++) nan_in[order][0] |= isnan(out[t]);
        rc = launch("race_previous", 1, 64, prev, order, &e);
        for (int t = 0; t < 64 && !rc; t++) nan_in[order][1] |= isnan(out[t]);
    }
    CHECK("race mode: a missing barrier reads poison in natural order (next thread's write) or in reversed order "
          "(previous thread's), while the barrier-correct kernel is right in all three orders",
          order_ok[0] && order_ok[1] && order_ok[2] && nan_in[0][0] && !nan_in[1][0] && !nan_in[0][1] && nan_in[1][1] &&
              (nan_in[2][0] || nan_in[2][1]),
          "correct %d%d%d, next %d%d%d, previous %d%d%d", order_ok[0], order_ok[1], order_ok[2], nan_in[0][0],
          nan_in[1][0], nan_in[2][0], nan_in[0][1], nan_in[1][1], nan_in[2][1]);
    cuda_host_free(out);
}

static uint32_t bits_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float float_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static void check_conversions(void) {
    enum { N = 4096 };
    float *x = device_floats(N), *back = device_floats(N);
    unsigned short *bf = cuda_host_alloc(2 * N), *rz = cuda_host_alloc(2 * N), *half = cuda_host_alloc(2 * N);
    const uint32_t special[] = { 0x3f808000u, 0x3f818000u, 0x3f808001u, 0x7f7fffffu, 0x7fc00000u, 0xff800000u,
                                 0x00000001u, 0x3f800000u + (1u << 12), 0x3f800000u + (3u << 12), 0x477ff000u,
                                 0x477fe000u, 0x33800000u };
    const int specials = (int)(sizeof special / sizeof special[0]);
    uint64_t s = 1;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = i < specials ? float_of(special[i]) : float_of((uint32_t)(s >> 32));
    }
    long n = N;
    void *args[] = { &bf, &rz, &half, &back, &x, &n };
    poa_error e = { { 0 } };
    int rc = launch("convert", N / 256, 256, args, 0, &e), bad_bf = 0, bad_rz = 0;
    for (int i = 0; i < N && !rc; i++) {
        if (isnan(x[i])) bad_bf += bf[i] != 0x7fff;
        else bad_bf += bf[i] != poa_bf16_from_float(x[i]);
        bad_rz += rz[i] != bits_of(x[i]) >> 16;
    }
    /* half: 1 + 2^-11 is a tie to even (1.0), 1 + 3 * 2^-11 rounds up to 1 + 2^-9; 65520 overflows;
       65504 = 0x477fe000 is the largest; 2^-24 is the smallest subnormal */
    int half_ok = !rc && half[7] == 0x3c00 && half[8] == 0x3c02 && half[9] == 0x7c00 && half[10] == 0x7bff &&
                  half[11] == 0x0001 && half[0] == 0x3c04;
    CHECK("__float2bfloat16 rounds to nearest even bit for bit as runtime/bf16.h (ties both ways, overflow to "
          "infinity, NaN 0x7fff); _rz truncates; __float2half rounds to nearest even (ties, subnormal, overflow)",
          !rc && bad_bf == 0 && bad_rz == 0 && half_ok && bf[0] == 0x3f80 && bf[1] == 0x3f82 && bf[3] == 0x7f80,
          "%s bf16 %d wrong, rz %d wrong, half %04x %04x %04x %04x %04x %04x", rc ? e.message : "", bad_bf, bad_rz,
          half[0], half[7], half[8], half[9], half[10], half[11]);
    cuda_host_free(x), cuda_host_free(back), cuda_host_free(bf), cuda_host_free(rz), cuda_host_free(half);
}

static void check_atomics_and_math(void) {
    int *count = cuda_host_alloc(4), *top = cuda_host_alloc(4);
    float *sum = device_floats(1);
    unsigned short *bsum = cuda_host_alloc(2);
    *count = 0, *sum = 0, *bsum = 0, *top = -1;
    void *args[] = { &count, &sum, &bsum, &top };
    poa_error e = { { 0 } };
    int rc = launch("atomics", 3, 128, args, 2, &e);
    /* bf16 1 + 1 + ... stops at 256: 256 + 1 rounds back to 256 (nearest even) */
    CHECK("atomics: int and float adds of 384 threads, bf16 add rounding each step, max", !rc && *count == 384 &&
          *sum == 192.0f && *bsum == poa_bf16_from_float(256.0f) && *top == 383, "%s count %d sum %g bf16 %04x top %d",
          rc ? e.message : "", *count, *sum, *bsum, *top);
    enum { N = 512 };
    float *x = device_floats(N), *out = device_floats(2 * N);
    for (int i = 0; i < N; i++) x[i] = -20.0f + 40.0f * (float)i / N;
    long n = N;
    void *margs[] = { &out, &x, &n };
    rc = launch("math", 2, 256, margs, 0, &e);
    double worst_exp = 0, worst_erf = 0;
    for (int i = 0; i < N && !rc; i++) {
        double ulp_exp = ldexp(1.0, ilogb(exp(x[i])) - 23), ulp_erf = ldexp(1.0, ilogb(fmax(fabs(erf(x[i])), 1e-30)) - 23);
        worst_exp = fmax(worst_exp, fabs(out[2 * i] - exp(x[i])) / ulp_exp / (2 + floor(fabs(1.173 * x[i]))));
        worst_erf = fmax(worst_erf, fabs(out[2 * i + 1] - erf(x[i])) / ulp_erf / 2);
    }
    CHECK("__expf within 2 + floor(|1.173 x|) ulp and erff within 2 ulp (CUDA's documented bounds)",
          !rc && worst_exp <= 1 && worst_erf <= 1, "%s exp %.3g erf %.3g of the bound", rc ? e.message : "", worst_exp,
          worst_erf);
    cuda_host_free(count), cuda_host_free(top), cuda_host_free(sum), cuda_host_free(bsum);
    cuda_host_free(x), cuda_host_free(out);
}

int main(void) {
    if (system("${CXX:-g++} --version >/dev/null 2>&1") != 0) {
        CHECK_SKIP("host CUDA runtime", "no host C++ compiler (g++) to compile the .cu text with");
        return 0;
    }
    poa_error e = { { 0 } };
    if (!cuda_host_load(&host, MODULE, source, &e)) {
        CHECK("the test kernels compile as host C++ with the prelude", 0, "%s", e.message);
        CHECK_EXIT();
    }
    printf("  compiled in %.2f s (%d compiled, %d reused)\n", host.compile_seconds, host.compiled, host.reused);
    check_reduction();
    check_lanes();
    check_errors();
    check_faults();
    check_poison_and_races();
    check_conversions();
    check_atomics_and_math();
    cuda_host_close(&host);
    CHECK_EXIT();
}
