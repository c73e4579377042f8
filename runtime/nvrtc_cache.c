/* nvrtc_cache.c: NVRTC through dlopen, and the on-disk cache of its output (see nvrtc_cache.h
   for the format and the guarantees). */
#include "nvrtc_cache.h"
#include "files.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* NVRTC's C API, declared here so that poa builds and starts without nvrtc.h or libnvrtc
   (nvrtcResult is an enum, nvrtcProgram a pointer; NVRTC_SUCCESS is 0). */
typedef int nvrtc_result;
typedef struct nvrtc_program_opaque *nvrtc_program;

static struct {
    void *library;
    int major, minor;
    long long library_size; /* part of the key: patch releases keep major.minor */
    char error[512];
    const char *(*get_error_string)(nvrtc_result);
    nvrtc_result (*version)(int *, int *);
    nvrtc_result (*create_program)(nvrtc_program *, const char *, const char *, int,
                                   const char *const *, const char *const *);
    nvrtc_result (*compile_program)(nvrtc_program, int, const char *const *);
    nvrtc_result (*get_program_log_size)(nvrtc_program, size_t *);
    nvrtc_result (*get_program_log)(nvrtc_program, char *);
    nvrtc_result (*get_cubin_size)(nvrtc_program, size_t *);
    nvrtc_result (*get_cubin)(nvrtc_program, char *);
    nvrtc_result (*get_ptx_size)(nvrtc_program, size_t *);
    nvrtc_result (*get_ptx)(nvrtc_program, char *);
    nvrtc_result (*destroy_program)(nvrtc_program *);
} nvrtc;

const char *const poa_nvrtc_kernel_options[] = { "--std=c++17" };
const int poa_nvrtc_kernel_option_count = 1;

static pthread_once_t nvrtc_once = PTHREAD_ONCE_INIT;

void poa_blob_free(poa_blob *blob) {
    free(blob->data);
    blob->data = NULL;
    blob->size = 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void load_nvrtc(void) {
    char fallback[1024];
    const char *cuda_home = getenv("CUDA_HOME");
    snprintf(fallback, sizeof fallback, "%s/lib64/libnvrtc.so.13",
             cuda_home ? cuda_home : "/usr/local/cuda");
    const char *chosen = getenv("POA_LIBNVRTC");
    const char *names[] = { "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so", fallback };
    int count = chosen ? 1 : 4;
    for (int i = 0; i < count && !nvrtc.library; i++) {
        const char *name = chosen ? chosen : names[i];
        nvrtc.library = dlopen(name, RTLD_NOW | RTLD_LOCAL);
        if (!nvrtc.library && (chosen || i == 0))
            snprintf(nvrtc.error, sizeof nvrtc.error, "cannot load NVRTC: %s", dlerror());
    }
    if (!nvrtc.library) return;
    struct { void **slot; const char *symbol; } symbols[] = {
        { (void **)&nvrtc.get_error_string, "nvrtcGetErrorString" },
        { (void **)&nvrtc.version, "nvrtcVersion" },
        { (void **)&nvrtc.create_program, "nvrtcCreateProgram" },
        { (void **)&nvrtc.compile_program, "nvrtcCompileProgram" },
        { (void **)&nvrtc.get_program_log_size, "nvrtcGetProgramLogSize" },
        { (void **)&nvrtc.get_program_log, "nvrtcGetProgramLog" },
        { (void **)&nvrtc.get_cubin_size, "nvrtcGetCUBINSize" },
        { (void **)&nvrtc.get_cubin, "nvrtcGetCUBIN" },
        { (void **)&nvrtc.get_ptx_size, "nvrtcGetPTXSize" },
        { (void **)&nvrtc.get_ptx, "nvrtcGetPTX" },
        { (void **)&nvrtc.destroy_program, "nvrtcDestroyProgram" },
    };
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        *symbols[i].slot = dlsym(nvrtc.library, symbols[i].symbol);
        if (!*symbols[i].slot) {
            snprintf(nvrtc.error, sizeof nvrtc.error, "cannot load NVRTC: no symbol %s",
                     symbols[i].symbol);
            dlclose(nvrtc.library);
            nvrtc.library = NULL;
            return;
        }
    }
    nvrtc.version(&nvrtc.major, &nvrtc.minor);
    Dl_info info;
    struct stat st;
    if (dladdr((void *)nvrtc.version, &info) && info.dli_fname && stat(info.dli_fname, &st) == 0)
        nvrtc.library_size = (long long)st.st_size;
}

int poa_nvrtc_load(poa_error *e) {
    pthread_once(&nvrtc_once, load_nvrtc);
    if (!nvrtc.library) return poa_fail(e, "%s", nvrtc.error[0] ? nvrtc.error : "cannot load NVRTC");
    return 0;
}

void poa_nvrtc_version(int *major, int *minor) {
    *major = nvrtc.major;
    *minor = nvrtc.minor;
}

static int wants_ptx(const char *arch) { return strncmp(arch, "compute_", 8) == 0; }

static int check_arch(const char *arch, poa_error *e) {
    const char *digits = strncmp(arch, "sm_", 3) == 0 ? arch + 3 : wants_ptx(arch) ? arch + 8 : NULL;
    if (!digits || digits[0] < '1' || digits[0] > '9' || strspn(digits, "0123456789af") != strlen(digits))
        return poa_fail(e, "architecture '%s': expected sm_XX (CUBIN) or compute_XX (PTX), e.g. sm_90", arch);
    return 0;
}

int poa_nvrtc_compile(const char *source, const char *name, const char *arch,
                      const char *const *options, int option_count, poa_blob *out, char **log,
                      poa_error *e) {
    out->data = NULL;
    out->size = 0;
    if (log) *log = NULL;
    if (check_arch(arch, e) || poa_nvrtc_load(e)) return -1;
    if (option_count < 0 || option_count > 62) return poa_fail(e, "%s: too many NVRTC options", name);
    char arch_option[64];
    snprintf(arch_option, sizeof arch_option, "--gpu-architecture=%s", arch);
    const char *all[64] = { arch_option };
    for (int i = 0; i < option_count; i++) all[i + 1] = options[i];
    nvrtc_program program;
    nvrtc_result rc = nvrtc.create_program(&program, source, name, 0, NULL, NULL);
    if (rc != 0) return poa_fail(e, "%s: nvrtcCreateProgram: %s", name, nvrtc.get_error_string(rc));
    rc = nvrtc.compile_program(program, option_count + 1, all);
    size_t log_size = 0;
    char *text = NULL;
    if (nvrtc.get_program_log_size(program, &log_size) == 0 && log_size > 1) {
        text = malloc(log_size);
        if (text && nvrtc.get_program_log(program, text) != 0) text[0] = 0;
    }
    int result = 0;
    if (rc != 0) {
        result = poa_fail(e, "%s (%s): %s\n%s", name, arch, nvrtc.get_error_string(rc), text ? text : "");
    } else {
        int ptx = wants_ptx(arch);
        size_t size = 0;
        rc = ptx ? nvrtc.get_ptx_size(program, &size) : nvrtc.get_cubin_size(program, &size);
        out->data = rc == 0 && size > 0 ? malloc(size) : NULL;
        if (out->data)
            rc = ptx ? nvrtc.get_ptx(program, (char *)out->data) : nvrtc.get_cubin(program, (char *)out->data);
        if (!out->data || rc != 0) {
            poa_blob_free(out);
            result = poa_fail(e, "%s (%s): NVRTC gave no %s (%s)", name, arch, ptx ? "PTX" : "CUBIN",
                              rc != 0 ? nvrtc.get_error_string(rc) : "empty or out of memory");
        } else {
            out->size = size; /* for PTX this counts its NUL, as cuModuleLoadData wants */
        }
    }
    nvrtc.destroy_program(&program);
    if (log && result == 0) *log = text;
    else free(text);
    return result;
}

/* ---- SHA-256 (FIPS 180-4) ---- */

typedef struct sha256 {
    uint32_t state[8];
    uint64_t length;
    uint8_t block[64];
    size_t used;
} sha256;

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotate_right(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(sha256 *h, const uint8_t *p) {
    uint32_t w[64], s[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotate_right(w[i - 15], 7) ^ rotate_right(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotate_right(w[i - 2], 17) ^ rotate_right(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(s, h->state, sizeof s);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = s[7] + (rotate_right(s[4], 6) ^ rotate_right(s[4], 11) ^ rotate_right(s[4], 25)) +
                      ((s[4] & s[5]) ^ (~s[4] & s[6])) + sha256_k[i] + w[i];
        uint32_t t2 = (rotate_right(s[0], 2) ^ rotate_right(s[0], 13) ^ rotate_right(s[0], 22)) +
                      ((s[0] & s[1]) ^ (s[0] & s[2]) ^ (s[1] & s[2]));
        memmove(s + 1, s, 7 * sizeof s[0]);
        s[4] += t1;
        s[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++) h->state[i] += s[i];
}

static void sha256_init(sha256 *h) {
    static const uint32_t initial[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
    memcpy(h->state, initial, sizeof initial);
    h->length = 0;
    h->used = 0;
}

static void sha256_update(sha256 *h, const void *data, size_t size) {
    const uint8_t *p = data;
    h->length += size;
    while (size > 0) {
        size_t n = 64 - h->used < size ? 64 - h->used : size;
        memcpy(h->block + h->used, p, n);
        h->used += n;
        p += n;
        size -= n;
        if (h->used == 64) {
            sha256_block(h, h->block);
            h->used = 0;
        }
    }
}

static void sha256_final(sha256 *h, uint8_t digest[32]) {
    uint64_t bits = h->length * 8;
    uint8_t pad = 0x80, zero = 0, length[8];
    sha256_update(h, &pad, 1);
    while (h->used != 56) sha256_update(h, &zero, 1);
    for (int i = 0; i < 8; i++) length[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(h, length, 8);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) digest[4 * i + j] = (uint8_t)(h->state[i] >> (24 - 8 * j));
}

void poa_sha256(const void *data, size_t size, uint8_t digest[32]) {
    sha256 h;
    sha256_init(&h);
    sha256_update(&h, data, size);
    sha256_final(&h, digest);
}

/* One field of the key: its length, then its bytes, so that no two field lists collide. */
static void key_field(sha256 *h, const void *data, size_t size) {
    uint8_t length[8];
    for (int i = 0; i < 8; i++) length[i] = (uint8_t)((uint64_t)size >> (8 * i));
    sha256_update(h, length, 8);
    sha256_update(h, data, size);
}

static void key_string(sha256 *h, const char *s) { key_field(h, s, strlen(s)); }

int poa_nvrtc_cache_key(const char *source, const char *name, const char *arch,
                        const char *const *options, int option_count, poa_nvrtc_key *key,
                        poa_error *e) {
    if (poa_nvrtc_load(e)) return -1;
    char version[96];
    snprintf(version, sizeof version, "nvrtc %d.%d, library %lld bytes", nvrtc.major, nvrtc.minor,
             nvrtc.library_size);
    sha256 h;
    sha256_init(&h);
    key_string(&h, "poa nvrtc cache 1");
    key_string(&h, source);
    key_string(&h, name);
    key_string(&h, arch);
    key_string(&h, version);
    for (int i = 0; i < option_count; i++) key_string(&h, options[i]);
    sha256_final(&h, key->bytes);
    return 0;
}

void poa_nvrtc_cache_entry_path(const char *dir, const poa_nvrtc_key *key, const char *arch,
                                char *path, size_t size) {
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", key->bytes[i]);
    snprintf(path, size, "%s/%s.%s", dir, hex, wants_ptx(arch) ? "ptx" : "cubin");
}

int poa_nvrtc_cache_dir(char *dir, size_t size, poa_error *e) { return poa_cache_dir("nvrtc", dir, size, e); }


/* ---- entries ---- */

enum { HEADER_SIZE = 64, FORMAT_VERSION = 1 };
static const char magic[8] = { 'P', 'O', 'A', 'N', 'V', 'R', 'T', 'C' };

static void put_u32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put_u64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get_u32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

static uint32_t checksum(const void *data, size_t size) {
    uLong crc = crc32(0L, Z_NULL, 0);
    const Bytef *p = data;
    while (size > 0) { /* crc32 takes a uInt length */
        uInt n = size > (1u << 30) ? (1u << 30) : (uInt)size;
        crc = crc32(crc, p, n);
        p += n;
        size -= n;
    }
    return (uint32_t)crc;
}

/* Header layout (little-endian): magic[8] version u32, reserved u32, payload size u64,
   payload CRC-32 u32, reserved u32, key[32]. */
int poa_nvrtc_cache_load(const char *path, const poa_nvrtc_key *key, poa_blob *out,
                         poa_error *e) {
    out->data = NULL;
    out->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT || errno == ENOTDIR ? 0 : poa_fail(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    uint8_t header[HEADER_SIZE];
    int result = -1;
    if (fstat(fd, &st) != 0) {
        poa_fail(e, "%s: cannot stat: %s", path, strerror(errno));
    } else if (st.st_size < HEADER_SIZE || pread(fd, header, HEADER_SIZE, 0) != HEADER_SIZE) {
        poa_fail(e, "%s: truncated entry (%lld bytes, shorter than its %d-byte header)", path,
                 (long long)st.st_size, HEADER_SIZE);
    } else if (memcmp(header, magic, 8) != 0 || get_u32(header + 8) != FORMAT_VERSION) {
        poa_fail(e, "%s: not a poa nvrtc cache entry of format %d (bad magic or version)", path, FORMAT_VERSION);
    } else if (memcmp(header + 32, key->bytes, 32) != 0) {
        poa_fail(e, "%s: entry holds another key", path);
    } else if (get_u64(header + 16) != (uint64_t)st.st_size - HEADER_SIZE) {
        poa_fail(e, "%s: %s entry: header says %llu payload bytes, file has %lld", path,
                 get_u64(header + 16) > (uint64_t)st.st_size - HEADER_SIZE ? "truncated" : "oversized",
                 (unsigned long long)get_u64(header + 16), (long long)st.st_size - HEADER_SIZE);
    } else {
        size_t size = (size_t)st.st_size - HEADER_SIZE;
        unsigned char *data = malloc(size + 1); /* + a NUL after the payload, for text */
        ssize_t got = data ? pread(fd, data, size, HEADER_SIZE) : -1;
        if (got != (ssize_t)size) {
            poa_fail(e, "%s: cannot read %zu payload bytes", path, size);
            free(data);
        } else if (checksum(data, size) != get_u32(header + 24)) {
            poa_fail(e, "%s: corrupt entry (payload checksum mismatch)", path);
            free(data);
        } else {
            data[size] = 0;
            out->data = data;
            out->size = size;
            result = 1;
        }
    }
    close(fd);
    return result;
}

static int write_all(int fd, const void *data, size_t size) {
    const uint8_t *p = data;
    while (size > 0) {
        ssize_t n = write(fd, p, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        size -= (size_t)n;
    }
    return 0;
}

int poa_nvrtc_cache_store(const char *path, const poa_nvrtc_key *key, const void *payload,
                          size_t size, poa_error *e) {
    char temp[1100], dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    const char *base = slash ? path + (slash - dir) + 1 : path;
    /* A hidden name that no reader looks up; mkstemp makes it unique per writer. */
    if (snprintf(temp, sizeof temp, "%s/.%s.XXXXXX", dir, base) >= (int)sizeof temp)
        return poa_fail(e, "%s: path too long", path);
    int fd = mkstemp(temp);
    if (fd < 0) return poa_fail(e, "cannot create a temporary file in %s: %s", dir, strerror(errno));
    uint8_t header[HEADER_SIZE] = { 0 };
    memcpy(header, magic, 8);
    put_u32(header + 8, FORMAT_VERSION);
    put_u64(header + 16, size);
    put_u32(header + 24, checksum(payload, size));
    memcpy(header + 32, key->bytes, 32);
    if (fchmod(fd, 0644) != 0 || write_all(fd, header, HEADER_SIZE) || write_all(fd, payload, size) ||
        fsync(fd) != 0) {
        int saved = errno;
        close(fd);
        unlink(temp);
        return poa_fail(e, "cannot write %s: %s", temp, strerror(saved));
    }
    if (close(fd) != 0 || rename(temp, path) != 0) {
        int saved = errno;
        unlink(temp);
        return poa_fail(e, "cannot store %s: %s", path, strerror(saved));
    }
    int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) { /* make the rename itself durable; a failure here loses nothing */
        fsync(dir_fd);
        close(dir_fd);
    }
    return 0;
}

int poa_nvrtc_compile_cached_in(const char *dir, const char *source, const char *name,
                                const char *arch, const char *const *options, int option_count,
                                poa_blob *out, poa_nvrtc_outcome *outcome, poa_error *e) {
    double start = now();
    memset(outcome, 0, sizeof *outcome);
    out->data = NULL;
    out->size = 0;
    char default_dir[1024];
    if (!dir) {
        if (poa_nvrtc_cache_dir(default_dir, sizeof default_dir, e)) return -1;
        dir = default_dir;
    }
    poa_nvrtc_key key;
    if (check_arch(arch, e) || poa_nvrtc_cache_key(source, name, arch, options, option_count, &key, e))
        return -1;
    poa_nvrtc_cache_entry_path(dir, &key, arch, outcome->entry, sizeof outcome->entry);
    poa_error why = { { 0 } };
    int found = poa_nvrtc_cache_load(outcome->entry, &key, out, &why);
    if (found == 1) {
        outcome->cache_hit = 1;
        outcome->seconds = now() - start;
        return 0;
    }
    if (found < 0) {
        outcome->rebuilt = 1;
        int gone = unlink(outcome->entry) == 0 || errno == ENOENT;
        snprintf(outcome->note, sizeof outcome->note, "%s; %s, rebuilding", why.message,
                 gone ? "deleted" : "could not delete it");
    }
    if (poa_nvrtc_compile(source, name, arch, options, option_count, out, NULL, e)) return -1;
    poa_error store_error = { { 0 } };
    if (poa_make_folders(dir, &store_error) == 0 &&
        poa_nvrtc_cache_store(outcome->entry, &key, out->data, out->size, &store_error) == 0) {
        outcome->stored = 1;
    } else {
        size_t used = strlen(outcome->note);
        snprintf(outcome->note + used, sizeof outcome->note - used, "%snot cached: %s",
                 used ? "; " : "", store_error.message);
    }
    outcome->seconds = now() - start;
    return 0;
}

int poa_nvrtc_compile_cached(const char *source, const char *name, const char *arch,
                             const char *const *options, int option_count, poa_blob *out,
                             int *cache_hit, poa_error *e) {
    poa_nvrtc_outcome outcome;
    if (poa_nvrtc_compile_cached_in(NULL, source, name, arch, options, option_count, out, &outcome, e))
        return -1;
    if (outcome.note[0]) fprintf(stderr, "poa: nvrtc cache: %s\n", outcome.note);
    if (cache_hit) *cache_hit = outcome.cache_hit;
    return 0;
}

/* ---- many at once ---- */

typedef struct compile_jobs {
    const char *const *sources, *const *names;
    const char *arch;
    int count, next, failed;
    poa_error error;
    pthread_mutex_t lock;
} compile_jobs;

static void *compile_worker(void *argument) {
    compile_jobs *j = argument;
    for (;;) {
        pthread_mutex_lock(&j->lock);
        int i = j->next < j->count ? j->next++ : -1;
        pthread_mutex_unlock(&j->lock);
        if (i < 0) return NULL;
        poa_blob blob = { 0 };
        poa_error e = { { 0 } };
        int hit = 0;
        if (poa_nvrtc_compile_cached(j->sources[i], j->names[i], j->arch, poa_nvrtc_kernel_options,
                                     poa_nvrtc_kernel_option_count, &blob, &hit, &e)) {
            pthread_mutex_lock(&j->lock);
            if (!j->failed) j->failed = 1, j->error = e;
            pthread_mutex_unlock(&j->lock);
        }
        poa_blob_free(&blob);
    }
}

int poa_nvrtc_compile_all(const char *const *sources, const char *const *names, int count, const char *arch,
                          poa_error *e) {
    compile_jobs j = { .sources = sources, .names = names, .arch = arch, .count = count };
    pthread_mutex_init(&j.lock, NULL);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = (int)(cores < 1 ? 1 : cores > 64 ? 64 : cores);
    if (threads > count) threads = count;
    pthread_t workers[64];
    int started = 0;
    for (int t = 1; t < threads; t++)
        if (pthread_create(&workers[started], NULL, compile_worker, &j) == 0) started++;
    compile_worker(&j);
    for (int t = 0; t < started; t++) pthread_join(workers[t], NULL);
    pthread_mutex_destroy(&j.lock);
    return j.failed ? poa_fail(e, "%s", j.error.message) : 0;
}
