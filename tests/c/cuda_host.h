/* cuda_host.h: the CUDA kernels themselves on a machine without a GPU. A module's .cu text
   (exactly what NVRTC compiles) is compiled by the host C++ compiler with
   tests/cuda_host/prelude.h force-included into a shared object under build/cuda_host/ (named
   by the SHA-256 of the prelude, the flags and the text, so a second run reuses it), loaded
   with dlopen, and its kernels run by name with cuLaunchKernel's argument array, every thread
   a fiber (tests/cuda_host/scheduler.h). The text gets two mechanical additions: after each
   kernel's closing brace, on the same line, POA_HOST_KERNEL(name) (its entry in the module's
   table), and `extern __shared__ T name[];` becomes a pointer to the launch's dynamic buffer.

   Faults are loud: device memory (cuda_host_alloc) starts as 0xff bytes and ends at a
   PROT_NONE page, so a read or write past an allocation's end faults; the .cu is built with -fsanitize=bounds trapping, so an
   index past a shared (or any fixed-size) array's end traps; a fault or trap during a launch
   prints "FAIL cuda_host: <kernel, block, thread>: ..." with the allocation it missed, and the
   process exits. Divergent barriers and disagreeing warp operations are launch errors.

   Thread order (race mode): POA_CUDA_HOST_ORDER=natural|reversed|shuffled forces one; by
   default launch i of a runner uses natural, reversed and shuffled (seed i) in turn. */
#ifndef POA_TEST_CUDA_HOST_H
#define POA_TEST_CUDA_HOST_H

#include <ctype.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "nvrtc_cache.h"

#ifndef POA_SOURCE_DIR
#define POA_SOURCE_DIR "./"
#endif

#define CUDA_HOST_FLAGS                                                                                           \
    "-std=c++17 -O1 -g -fPIC -shared -ffp-contract=off -fno-strict-aliasing -fsanitize=bounds "                   \
    "-fsanitize-undefined-trap-on-error -Wall -Werror -Wno-unused-function -Wno-sign-compare"

typedef int (*cuda_host_launch_fn)(const char *name, const unsigned grid[3], const unsigned block[3], void **args,
                                   int order, unsigned long long seed, unsigned char *dynamic_shared,
                                   size_t dynamic_bytes, char *error, size_t error_size);
typedef void (*cuda_host_where_fn)(char *text, size_t size);
typedef const char *(*cuda_host_signature_fn)(const char *name);

typedef struct cuda_host_module {
    char name[80];
    void *handle;
    cuda_host_launch_fn launch;
    cuda_host_where_fn where;
    cuda_host_signature_fn signature;
} cuda_host_module;

enum { CUDA_HOST_MODULES = 48, CUDA_HOST_ALLOCATIONS = 4096 };

/* The modules loaded in this process and the launch order mode. */
typedef struct cuda_host {
    int count;
    cuda_host_module modules[CUDA_HOST_MODULES];
    long launches;
    int force_order;   /* 1 + the order of every launch (0: POA_CUDA_HOST_ORDER, else in turn) */
    double compile_seconds;
    int compiled, reused;
} cuda_host;

/* ---- device memory ending at a guard page ---- */

typedef struct cuda_host_allocation {
    char *base;        /* what the caller got */
    size_t bytes;
    char *map;         /* the mapping: pages before, the data, one PROT_NONE page */
    size_t map_bytes;
} cuda_host_allocation;

static cuda_host_allocation cuda_host_allocations[CUDA_HOST_ALLOCATIONS];
static const cuda_host_module *cuda_host_running; /* the module of the launch in progress */

/* bytes of memory filled with 0xff (float and double NaN, integer -1, as cuMemAlloc's is not
   zeroed either) whose last byte is just before a PROT_NONE page (the start aligned to the
   largest power of two up to 16 dividing bytes); NULL when out of memory or slots. */
static inline void *cuda_host_alloc(size_t bytes) {
    int slot = 0;
    while (slot < CUDA_HOST_ALLOCATIONS && cuda_host_allocations[slot].base) slot++;
    if (slot == CUDA_HOST_ALLOCATIONS) return NULL;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE), size = bytes ? bytes : 4;
    const size_t data_pages = (size + 15 + page - 1) / page, map_bytes = (data_pages + 1) * page;
    char *map = mmap(NULL, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) return NULL;
    if (mprotect(map + data_pages * page, page, PROT_NONE)) {
        munmap(map, map_bytes);
        return NULL;
    }
    size_t align = 16;
    while (align > 1 && size % align) align /= 2;
    char *end = map + data_pages * page;
    char *base = (char *)((uintptr_t)(end - size) & ~(uintptr_t)(align - 1));
    cuda_host_allocations[slot] = (cuda_host_allocation){ base, size, map, map_bytes };
    memset(base, 0xff, size); /* poisoned (NaN, -1): cuMemAlloc's memory is uninitialised too */
    return base;
}

static inline void cuda_host_free(void *p) {
    for (int i = 0; p && i < CUDA_HOST_ALLOCATIONS; i++)
        if (cuda_host_allocations[i].base == p) {
            munmap(cuda_host_allocations[i].map, cuda_host_allocations[i].map_bytes);
            memset(&cuda_host_allocations[i], 0, sizeof cuda_host_allocations[i]);
            return;
        }
}

/* The allocation holding address p (or whose guard page p is in), or NULL. */
static inline const cuda_host_allocation *cuda_host_allocation_of(const void *p) {
    for (int i = 0; i < CUDA_HOST_ALLOCATIONS; i++) {
        const cuda_host_allocation *a = &cuda_host_allocations[i];
        if (a->map && (const char *)p >= a->map && (const char *)p < a->map + a->map_bytes) return a;
    }
    return NULL;
}

/* ---- faults during a launch ---- */

static inline void cuda_host_on_fault(int sig, siginfo_t *info, void *context) {
    (void)context;
    char where[256] = "", text[768];
    if (cuda_host_running && cuda_host_running->where) cuda_host_running->where(where, sizeof where);
    const cuda_host_allocation *a = sig == SIGSEGV || sig == SIGBUS ? cuda_host_allocation_of(info->si_addr) : NULL;
    const char *what = sig == SIGILL ? "an index past the end of a shared or fixed-size array (bounds trap)"
                       : sig == SIGFPE ? "an arithmetic fault" : "an invalid memory access";
    int n;
    if (a)
        n = snprintf(text, sizeof text, "FAIL cuda_host: %s: %s at %p, %ld bytes past the end of a %zu-byte device "
                     "allocation\n", where[0] ? where : "outside a launch", what, info->si_addr,
                     (long)((const char *)info->si_addr - (a->base + a->bytes)), a->bytes);
    else
        n = snprintf(text, sizeof text, "FAIL cuda_host: %s: %s at %p\n", where[0] ? where : "outside a launch", what,
                     info->si_addr);
    if (write(1, text, (size_t)n) < 0) _exit(4);
    _exit(3);
}

static inline void cuda_host_install_fault_handler(void) {
    static int installed;
    if (installed) return;
    installed = 1;
    static char stack[1 << 16];
    stack_t ss = { .ss_sp = stack, .ss_size = sizeof stack };
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = cuda_host_on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGILL, &sa, NULL);
    sigaction(SIGFPE, &sa, NULL);
}

/* ---- compiling a module ---- */

/* The tree's root with a trailing slash: $POA_HOME (as runtime/recipe.c reads it), else
   POA_SOURCE_DIR. */
static inline const char *cuda_host_home(void) {
    static char dir[512];
    const char *home = getenv("POA_HOME");
    snprintf(dir, sizeof dir, "%s%s", home ? home : POA_SOURCE_DIR,
             home && home[0] && home[strlen(home) - 1] != '/' ? "/" : "");
    return dir;
}

static inline int cuda_host_read(const char *path, char **text, poa_error *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return poa_fail(e, "%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *text = malloc((size_t)n + 1);
    int rc = *text && fread(*text, 1, (size_t)n, f) == (size_t)n ? 0 : poa_fail(e, "%s: cannot read", path);
    if (!rc) (*text)[n] = 0;
    fclose(f);
    return rc;
}

/* Past a comment, string or character literal starting at s (else s). */
static inline const char *cuda_host_skip_literal(const char *s) {
    if (s[0] == '/' && s[1] == '/') return strchr(s, '\n') ? strchr(s, '\n') : s + strlen(s);
    if (s[0] == '/' && s[1] == '*') return strstr(s + 2, "*/") ? strstr(s + 2, "*/") + 2 : s + strlen(s);
    if (*s == '"' || *s == '\'') {
        const char q = *s++;
        while (*s && *s != q) s += s[0] == '\\' && s[1] ? 2 : 1;
        return *s ? s + 1 : s;
    }
    return s;
}

/* Appends text[0..n) to the growing buffer *out (length *len). */
static inline int cuda_host_append(char **out, size_t *len, const char *text, size_t n) {
    char *grown = realloc(*out, *len + n + 1);
    if (!grown) return -1;
    memcpy(grown + *len, text, n);
    *len += n;
    grown[*len] = 0;
    *out = grown;
    return 0;
}

/* The text the host compiler gets: source with POA_HOST_KERNEL(name) after each __global__
   function's body and dynamic shared arrays as pointers (see the top of this file). */
static inline int cuda_host_prepare(const char *source, const char *name, char **out, poa_error *e) {
    size_t len = 0;
    *out = NULL;
    const char *s = source, *copied = source;
    int rc = 0, depth = 0;
    char kernel[128] = "";
    while (*s && !rc) {
        const char *t = cuda_host_skip_literal(s);
        if (t != s) { s = t; continue; }
        if (!strncmp(s, "extern __shared__", 17)) {
            const char *end = strchr(s, ';'), *bracket = strchr(s, '[');
            if (!end || !bracket || bracket > end) return poa_fail(e, "%s: cannot read an extern __shared__ declaration", name);
            const char *id_end = bracket, *id = bracket;
            while (id > s && (isalnum((unsigned char)id[-1]) || id[-1] == '_')) id--;
            char line[512];
            int n = snprintf(line, sizeof line, "%.*s*%.*s = (%.*s *)poa_host_dynamic_shared();", (int)(id - s - 17),
                             s + 17, (int)(id_end - id), id, (int)(id - s - 17), s + 17);
            rc = cuda_host_append(out, &len, copied, (size_t)(s - copied)) || cuda_host_append(out, &len, line, (size_t)n);
            s = copied = end + 1;
            continue;
        }
        if (!strncmp(s, "__global__", 10) && !kernel[0]) {
            const char *paren = strchr(s, '(');
            while (paren && paren - 17 >= source && !strncmp(paren - 17, "__launch_bounds__", 17)) paren = strchr(strchr(paren, ')'), '(');
            if (!paren) return poa_fail(e, "%s: cannot find a kernel's parameters", name);
            const char *id = paren;
            while (id > s && (isalnum((unsigned char)id[-1]) || id[-1] == '_')) id--;
            snprintf(kernel, sizeof kernel, "%.*s", (int)(paren - id), id);
            s = paren;
            depth = 0;
            continue;
        }
        if (*s == '{') depth++;
        if (*s == '}' && kernel[0] && --depth == 0) {
            char line[192];
            int n = snprintf(line, sizeof line, "} POA_HOST_KERNEL(%s)", kernel);
            rc = cuda_host_append(out, &len, copied, (size_t)(s - copied)) || cuda_host_append(out, &len, line, (size_t)n);
            copied = s + 1;
            kernel[0] = 0;
        }
        s++;
    }
    if (!rc) rc = cuda_host_append(out, &len, copied, strlen(copied));
    if (rc) return poa_fail(e, "%s: out of memory", name);
    return 0;
}

/* The shared object of module `name` (source: its .cu text), compiled unless build/cuda_host/
   holds it already; *path gets its path. */
static inline int cuda_host_compile(cuda_host *h, const char *source, const char *name, char *path, size_t size,
                                    poa_error *e) {
    char *prepared = NULL, *prelude = NULL, *scheduler = NULL, file[1200];
    const char *home = cuda_host_home();
    snprintf(file, sizeof file, "%stests/cuda_host/prelude.h", home);
    int rc = cuda_host_read(file, &prelude, e);
    snprintf(file, sizeof file, "%stests/cuda_host/scheduler.h", home);
    if (!rc) rc = cuda_host_read(file, &scheduler, e);
    if (!rc) rc = cuda_host_prepare(source, name, &prepared, e);
    char *keyed = NULL;
    size_t len = 0;
    if (!rc && (cuda_host_append(&keyed, &len, CUDA_HOST_FLAGS, strlen(CUDA_HOST_FLAGS)) ||
                cuda_host_append(&keyed, &len, prelude, strlen(prelude)) ||
                cuda_host_append(&keyed, &len, scheduler, strlen(scheduler)) ||
                cuda_host_append(&keyed, &len, prepared, strlen(prepared))))
        rc = poa_fail(e, "%s: out of memory", name);
    uint8_t digest[32];
    char hex[65];
    if (!rc) {
        poa_sha256(keyed, len, digest);
        for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
        snprintf(file, sizeof file, "%sbuild/cuda_host", home);
        mkdir(file, 0755);
        snprintf(path, size, "%sbuild/cuda_host/%.16s_%s.so", home, hex, name);
    }
    if (!rc && access(path, R_OK) == 0) {
        h->reused++;
        free(prepared), free(prelude), free(scheduler), free(keyed);
        return 0;
    }
    char cu[1100], tmp[1200], log[1200], command[8192];
    if (!rc) {
        /* per process: two test programs may build the same module at once */
        snprintf(cu, sizeof cu, "%sbuild/cuda_host/%.16s_%ld_%s", home, hex, (long)getpid(), name);
        snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
        snprintf(log, sizeof log, "%s.%ld.log", path, (long)getpid());
        FILE *f = fopen(cu, "wb");
        if (!f || fwrite(prepared, 1, strlen(prepared), f) != strlen(prepared)) rc = poa_fail(e, "%s: cannot write", cu);
        if (f && fclose(f)) rc = poa_fail(e, "%s: cannot write", cu);
    }
    if (!rc) {
        const char *cxx = getenv("CXX") ? getenv("CXX") : "g++";
        snprintf(command, sizeof command, "%s %s -I%stests/cuda_host -include prelude.h -x c++ %s -o %s >%s 2>&1", cxx,
                 CUDA_HOST_FLAGS, home, cu, tmp, log);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        int status = system(command);
        clock_gettime(CLOCK_MONOTONIC, &b);
        h->compile_seconds += (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
        h->compiled++;
        if (status != 0) {
            char *text = NULL;
            poa_error ignored;
            cuda_host_read(log, &text, &ignored);
            rc = poa_fail(e, "%s: the host C++ compiler failed on %s: %.600s", name, cu, text ? text : "(no log)");
            free(text);
        } else if (rename(tmp, path)) {
            rc = poa_fail(e, "%s: cannot rename %s", name, tmp);
        }
        remove(log);
        remove(tmp);
        if (!rc) remove(cu); /* kept when it did not compile, for the message */
    }
    free(prepared), free(prelude), free(scheduler), free(keyed);
    return rc;
}

/* Module `name` loaded (compiled from source the first time; source may be NULL once loaded). */
static inline const cuda_host_module *cuda_host_load(cuda_host *h, const char *name, const char *source, poa_error *e) {
    for (int i = 0; i < h->count; i++)
        if (!strcmp(h->modules[i].name, name)) return &h->modules[i];
    if (!source) {
        poa_fail(e, "cuda_host: module %s was never loaded", name);
        return NULL;
    }
    if (h->count == CUDA_HOST_MODULES) {
        poa_fail(e, "cuda_host: more than %d modules", CUDA_HOST_MODULES);
        return NULL;
    }
    char path[1024];
    if (cuda_host_compile(h, source, name, path, sizeof path, e)) return NULL;
    cuda_host_module *m = &h->modules[h->count];
    m->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!m->handle) {
        poa_fail(e, "cuda_host: dlopen %s: %s", path, dlerror());
        return NULL;
    }
    *(void **)&m->launch = dlsym(m->handle, "poa_host_launch");
    *(void **)&m->where = dlsym(m->handle, "poa_host_where");
    *(void **)&m->signature = dlsym(m->handle, "poa_host_signature");
    if (!m->launch || !m->where || !m->signature) {
        poa_fail(e, "cuda_host: %s exports no poa_host_launch", path);
        return NULL;
    }
    snprintf(m->name, sizeof m->name, "%s", name);
    h->count++;
    cuda_host_install_fault_handler();
    return m;
}

/* The thread order of launch number i: h->force_order, POA_CUDA_HOST_ORDER, else natural,
   reversed, shuffled in turn. */
static inline int cuda_host_order(const cuda_host *h, long i) {
    if (h->force_order) return h->force_order - 1;
    const char *forced = getenv("POA_CUDA_HOST_ORDER");
    if (forced && !strcmp(forced, "natural")) return 0;
    if (forced && !strcmp(forced, "reversed")) return 1;
    if (forced && !strcmp(forced, "shuffled")) return 2;
    return (int)(i % 3);
}

/* Runs kernel `kernel` of a loaded module over grid x block with shared_bytes of dynamic shared
   memory (a guarded buffer of exactly that size, poisoned per block). */
static inline int cuda_host_launch_shared(cuda_host *h, const char *module, const char *kernel, const unsigned grid[3],
                                          const unsigned block[3], size_t shared_bytes, void **args, poa_error *e) {
    const cuda_host_module *m = cuda_host_load(h, module, NULL, e);
    if (!m) return -1;
    unsigned char *shared = shared_bytes ? cuda_host_alloc(shared_bytes) : NULL;
    if (shared_bytes && !shared) return poa_fail(e, "%s: no memory for %zu bytes of shared memory", kernel, shared_bytes);
    char error[1024];
    long i = h->launches++;
    cuda_host_running = m;
    int rc = m->launch(kernel, grid, block, args, cuda_host_order(h, i), (unsigned long long)i, shared, shared_bytes,
                       error, sizeof error);
    cuda_host_running = NULL;
    cuda_host_free(shared);
    if (rc) return poa_fail(e, "%s: %s", module, error);
    return 0;
}

static inline int cuda_host_launch(cuda_host *h, const char *module, const char *kernel, const unsigned grid[3],
                                   const unsigned block[3], void **args, poa_error *e) {
    return cuda_host_launch_shared(h, module, kernel, grid, block, 0, args, e);
}

static inline void cuda_host_close(cuda_host *h) {
    for (int i = 0; i < h->count; i++) dlclose(h->modules[i].handle);
    h->count = 0;
}

#endif
