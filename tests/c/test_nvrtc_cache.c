/* test_nvrtc_cache.c: the on-disk NVRTC cache (runtime/nvrtc_cache.c).
   Without NVRTC: SHA-256 test vectors, the entry format (round trip, a flipped payload byte,
   truncations, another key's entry) and atomic stores under concurrent writers and a reader.
   With NVRTC (loaded by dlopen; SKIP when it cannot be): a miss then a hit with identical
   bytes, another option or architecture is a miss, PTX for compute_XX, a corrupted and a
   truncated entry are detected, reported, deleted and rebuilt, two threads compiling the
   same key leave one whole entry and no temporary file, a compile error carries NVRTC's log;
   `poa cuda warm` on tests/recipes/tiny_vit.lua misses 7 files then hits 7, and `poa cuda
   report` gives a register count for each of their kernels. */
#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "nvrtc_cache.h"

static const char *saxpy =
    "extern \"C\" __global__ void axpy(float *y, const float *x, float a, int n) {\n"
    "    int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
    "    if (i < n) y[i] += a * x[i];\n"
    "}\n";

static void hex(const uint8_t *d, int n, char *out) {
    for (int i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

/* Files in dir: all of them, and those whose name starts with '.' (temporaries). */
static void count_files(const char *dir, int *all, int *hidden) {
    *all = *hidden = 0;
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *f; (f = readdir(d));) {
        if (strcmp(f->d_name, ".") == 0 || strcmp(f->d_name, "..") == 0) continue;
        (*all)++;
        if (f->d_name[0] == '.') (*hidden)++;
    }
    closedir(d);
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *f; (f = readdir(d));) {
        if (strcmp(f->d_name, ".") == 0 || strcmp(f->d_name, "..") == 0) continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, f->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(path);
        else unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void flip_byte(const char *path, long offset) {
    FILE *f = fopen(path, "r+b");
    if (!f) return;
    fseek(f, offset, SEEK_SET);
    int c = fgetc(f);
    fseek(f, offset, SEEK_SET);
    fputc(c ^ 0x5a, f);
    fclose(f);
}

static void test_sha256(void) {
    uint8_t d[32];
    char text[65];
    poa_sha256("abc", 3, d);
    hex(d, 32, text);
    CHECK("sha256 'abc'", strcmp(text, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0,
          "got %s", text);
    poa_sha256("", 0, d);
    hex(d, 32, text);
    CHECK("sha256 ''", strcmp(text, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0,
          "got %s", text);
    const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    poa_sha256(two_blocks, strlen(two_blocks), d);
    hex(d, 32, text);
    CHECK("sha256 448-bit message", strcmp(text, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0,
          "got %s", text);
}

static void test_entry_format(const char *dir) {
    poa_nvrtc_key key, other;
    poa_sha256("key", 3, key.bytes);
    poa_sha256("other", 5, other.bytes);
    char path[1024];
    poa_nvrtc_cache_entry_path(dir, &key, "sm_90", path, sizeof path);
    unsigned char payload[5000];
    for (int i = 0; i < 5000; i++) payload[i] = (unsigned char)(i * 7 + 3);
    poa_error e = { { 0 } };
    poa_blob blob;
    CHECK("entry: none yet", poa_nvrtc_cache_load(path, &key, &blob, &e) == 0, "%s", e.message);
    int stored = poa_nvrtc_cache_store(path, &key, payload, sizeof payload, &e);
    CHECK("entry: store", stored == 0, "%s", e.message);
    int got = poa_nvrtc_cache_load(path, &key, &blob, &e);
    CHECK("entry: load returns the stored bytes",
          got == 1 && blob.size == sizeof payload && memcmp(blob.data, payload, sizeof payload) == 0,
          "load %d, %zu bytes: %s", got, blob.size, e.message);
    poa_blob_free(&blob);
    CHECK("entry: size is header + payload", file_size(path) == 64 + 5000, "%ld bytes", file_size(path));
    got = poa_nvrtc_cache_load(path, &other, &blob, &e);
    CHECK("entry: another key is refused", got == -1 && strstr(e.message, "another key"), "load %d: %s", got,
          e.message);
    flip_byte(path, 64 + 1234);
    got = poa_nvrtc_cache_load(path, &key, &blob, &e);
    CHECK("entry: a flipped payload byte is detected", got == -1 && strstr(e.message, "checksum"),
          "load %d: %s", got, e.message);
    flip_byte(path, 64 + 1234);
    CHECK("entry: flipped back, it loads", poa_nvrtc_cache_load(path, &key, &blob, &e) == 1, "%s", e.message);
    poa_blob_free(&blob);
    flip_byte(path, 2);
    got = poa_nvrtc_cache_load(path, &key, &blob, &e);
    CHECK("entry: a bad magic is detected", got == -1 && strstr(e.message, "magic"), "load %d: %s", got, e.message);
    flip_byte(path, 2);
    CHECK("entry: truncate", truncate(path, 64 + 4000) == 0, "truncate failed");
    got = poa_nvrtc_cache_load(path, &key, &blob, &e);
    CHECK("entry: a truncated payload is detected", got == -1 && strstr(e.message, "truncated"), "load %d: %s",
          got, e.message);
    CHECK("entry: truncate into the header", truncate(path, 40) == 0, "truncate failed");
    got = poa_nvrtc_cache_load(path, &key, &blob, &e);
    CHECK("entry: a truncated header is detected", got == -1 && strstr(e.message, "truncated"), "load %d: %s",
          got, e.message);
    unlink(path);
}

/* Four processes store the same entry 25 times each (different payloads of different sizes,
   all valid) while this one loads it 400 times: a load must never see a partial entry. */
static void test_concurrent_stores(const char *dir) {
    poa_nvrtc_key key;
    poa_sha256("concurrent", 10, key.bytes);
    char path[1024];
    poa_nvrtc_cache_entry_path(dir, &key, "sm_90", path, sizeof path);
    enum { WRITERS = 4 };
    pid_t pids[WRITERS];
    for (int w = 0; w < WRITERS; w++) {
        pids[w] = fork();
        if (pids[w] == 0) {
            size_t size = 300000 + 1000 * (size_t)w;
            unsigned char *payload = malloc(size);
            for (size_t i = 0; i < size; i++) payload[i] = (unsigned char)(i * (w + 3));
            int failures = 0;
            for (int r = 0; r < 25; r++) {
                poa_error e;
                if (poa_nvrtc_cache_store(path, &key, payload, size, &e)) failures++;
            }
            _exit(failures ? 1 : 0);
        }
    }
    int bad_loads = 0, whole_loads = 0;
    char first_bad[1024] = "";
    for (int r = 0; r < 400; r++) {
        poa_error e = { { 0 } };
        poa_blob blob;
        int got = poa_nvrtc_cache_load(path, &key, &blob, &e);
        if (got < 0 && !bad_loads++) snprintf(first_bad, sizeof first_bad, "%s", e.message);
        if (got == 1) whole_loads++;
        poa_blob_free(&blob);
    }
    int writer_failures = 0;
    for (int w = 0; w < WRITERS; w++) {
        int status = 0;
        waitpid(pids[w], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) writer_failures++;
    }
    CHECK("concurrent stores: every writer succeeded", writer_failures == 0, "%d writers failed", writer_failures);
    CHECK("concurrent stores: a reader never sees a partial entry", bad_loads == 0,
          "%d of 400 loads saw a bad entry (%d whole), first: %s", bad_loads, whole_loads, first_bad);
    poa_error e;
    poa_blob blob;
    CHECK("concurrent stores: the final entry is whole", poa_nvrtc_cache_load(path, &key, &blob, &e) == 1,
          "%s", e.message);
    poa_blob_free(&blob);
    int all, hidden;
    count_files(dir, &all, &hidden);
    CHECK("concurrent stores: one entry, no temporary left", all == 1 && hidden == 0, "%d files, %d temporaries",
          all, hidden);
    unlink(path);
}

typedef struct compile_job {
    const char *dir;
    int rc, hit;
    poa_blob blob;
    poa_error e;
} compile_job;

static void *compile_thread(void *arg) {
    compile_job *j = arg;
    const char *options[] = { "--std=c++17", "-DTHREADED=1" };
    poa_nvrtc_outcome outcome;
    j->rc = poa_nvrtc_compile_cached_in(j->dir, saxpy, "axpy.cu", "sm_90", options, 2, &j->blob, &outcome, &j->e);
    j->hit = outcome.cache_hit;
    return NULL;
}

static int same(const poa_blob *a, const poa_blob *b) {
    return a->size == b->size && a->size > 0 && memcmp(a->data, b->data, a->size) == 0;
}

static void test_compile_cache(const char *dir) {
    const char *options[] = { "--std=c++17" };
    const char *other_options[] = { "--std=c++17", "-DUNUSED=1" };
    poa_error e = { { 0 } };
    poa_nvrtc_outcome first, second, o;
    poa_blob miss, hit, blob;
    int rc = poa_nvrtc_compile_cached_in(dir, saxpy, "axpy.cu", "sm_90", options, 1, &miss, &first, &e);
    CHECK("cache: first compile is a stored miss", rc == 0 && !first.cache_hit && first.stored && miss.size > 0,
          "rc %d hit %d stored %d: %s %s", rc, first.cache_hit, first.stored, e.message, first.note);
    CHECK("cache: the CUBIN is an ELF file", miss.size > 4 && memcmp(miss.data, "\177ELF", 4) == 0, "not ELF");
    rc = poa_nvrtc_compile_cached_in(dir, saxpy, "axpy.cu", "sm_90", options, 1, &hit, &second, &e);
    CHECK("cache: second compile is a hit", rc == 0 && second.cache_hit && strcmp(first.entry, second.entry) == 0,
          "rc %d hit %d: %s", rc, second.cache_hit, e.message);
    CHECK("cache: the hit returns identical bytes", rc == 0 && same(&miss, &hit), "%zu vs %zu bytes", miss.size,
          hit.size);
    printf("cache: miss %.3f s, hit %.4f s\n", first.seconds, second.seconds);
    poa_blob_free(&hit);

    rc = poa_nvrtc_compile_cached_in(dir, saxpy, "axpy.cu", "sm_90", other_options, 2, &blob, &o, &e);
    CHECK("cache: another option is a miss", rc == 0 && !o.cache_hit && strcmp(o.entry, first.entry) != 0,
          "rc %d hit %d: %s", rc, o.cache_hit, e.message);
    poa_blob_free(&blob);
    rc = poa_nvrtc_compile_cached_in(dir, saxpy, "axpy.cu", "sm_80", options, 1, &blob, &o, &e);
    CHECK("cache: another architecture is a miss", rc == 0 && !o.cache_hit && !same(&blob, &miss),
          "rc %d hit %d: %s", rc, o.cache_hit, e.message);
    poa_blob_free(&blob);
    rc = poa_nvrtc_compile_cached_in(dir, saxpy, "axpy.cu", "compute_90", options, 1, &blob, &o, &e);
    CHECK("cache: compute_90 gives NUL-terminated PTX for sm_90",
          rc == 0 && !o.cache_hit && blob.size > 1 && blob.data[blob.size - 1] == 0 &&
              strstr((char *)blob.data, ".target sm_90") && strstr((char *)blob.data, ".entry axpy"),
          "rc %d: %s", rc, e.message);
    poa_blob_free(&blob);
    rc = poa_nvrtc_compile_cached_in(dir, saxpy, "axpy.cu", "compute_90", options, 1, &blob, &o, &e);
    CHECK("cache: the PTX entry hits and stays NUL-terminated",
          rc == 0 && o.cache_hit && blob.size > 1 && blob.data[blob.size - 1] == 0, "rc %d hit %d", rc, o.cache_hit);
    poa_blob_free(&blob);

    flip_byte(first.entry, 64 + (long)miss.size / 2);
    rc = poa_nvrtc_compile_cached_in(dir, saxpy, "axpy.cu", "sm_90", options, 1, &blob, &o, &e);
    CHECK("cache: a corrupted entry is detected and rebuilt",
          rc == 0 && !o.cache_hit && o.rebuilt && o.stored && strstr(o.note, "corrupt") && strstr(o.note, "deleted") &&
              same(&blob, &miss),
          "rc %d hit %d rebuilt %d note '%s': %s", rc, o.cache_hit, o.rebuilt, o.note, e.message);
    printf("cache: note on the corrupted entry: %s\n", o.note);
    poa_blob_free(&blob);
    rc = poa_nvrtc_compile_cached_in(dir, saxpy, "axpy.cu", "sm_90", options, 1, &blob, &o, &e);
    CHECK("cache: the rebuilt entry hits", rc == 0 && o.cache_hit && same(&blob, &miss), "rc %d hit %d", rc,
          o.cache_hit);
    poa_blob_free(&blob);

    CHECK("cache: truncate the entry", truncate(first.entry, 64 + (long)miss.size - 100) == 0, "truncate failed");
    rc = poa_nvrtc_compile_cached_in(dir, saxpy, "axpy.cu", "sm_90", options, 1, &blob, &o, &e);
    CHECK("cache: a truncated entry is detected and rebuilt",
          rc == 0 && !o.cache_hit && o.rebuilt && strstr(o.note, "truncated") && same(&blob, &miss),
          "rc %d hit %d rebuilt %d note '%s': %s", rc, o.cache_hit, o.rebuilt, o.note, e.message);
    printf("cache: note on the truncated entry: %s\n", o.note);
    poa_blob_free(&blob);
    CHECK("cache: after the rebuild the entry is whole", file_size(first.entry) == 64 + (long)miss.size,
          "%ld bytes", file_size(first.entry));

    /* Two threads, one fresh key: both succeed, one whole entry, no temporary left. */
    char fresh[1200];
    snprintf(fresh, sizeof fresh, "%s/threads", dir);
    compile_job jobs[2] = { { .dir = fresh }, { .dir = fresh } };
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, compile_thread, &jobs[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    int all, hidden;
    count_files(fresh, &all, &hidden);
    CHECK("cache: two threads compiling one key", jobs[0].rc == 0 && jobs[1].rc == 0 && same(&jobs[0].blob, &jobs[1].blob),
          "rc %d %d: %s %s", jobs[0].rc, jobs[1].rc, jobs[0].e.message, jobs[1].e.message);
    CHECK("cache: ... leave one entry and no temporary", all == 1 && hidden == 0, "%d files, %d temporaries", all,
          hidden);
    for (int i = 0; i < 2; i++) poa_blob_free(&jobs[i].blob);

    /* A cache directory that cannot be made (its parent is a file): the compile still
       succeeds and says it stored nothing. */
    char blocker[1200], unusable[1300];
    snprintf(blocker, sizeof blocker, "%s/a_file", dir);
    snprintf(unusable, sizeof unusable, "%s/cache", blocker);
    FILE *f = fopen(blocker, "w");
    if (f) fclose(f);
    rc = poa_nvrtc_compile_cached_in(unusable, saxpy, "axpy.cu", "sm_90", options, 1, &blob, &o, &e);
    CHECK("cache: an unusable directory still compiles and says why nothing was stored",
          rc == 0 && !o.stored && strstr(o.note, "not cached") && same(&blob, &miss), "rc %d stored %d note '%s': %s",
          rc, o.stored, o.note, e.message);
    printf("cache: note on the unusable directory: %s\n", o.note);
    poa_blob_free(&blob);

    const char *broken = "extern \"C\" __global__ void broken(float *y) { y[0] = undefined_name; }\n";
    rc = poa_nvrtc_compile_cached_in(dir, broken, "broken.cu", "sm_90", options, 1, &blob, &o, &e);
    CHECK("cache: a compile error fails with NVRTC's log", rc == -1 && strstr(e.message, "undefined_name") &&
          strstr(e.message, "broken.cu"), "rc %d: %s", rc, e.message);
    rc = poa_nvrtc_compile_cached_in(dir, saxpy, "axpy.cu", "sm_9x", options, 1, &blob, &o, &e);
    CHECK("cache: a malformed architecture is refused", rc == -1 && strstr(e.message, "sm_9x"), "rc %d: %s", rc,
          e.message);

    /* The default directory comes from POA_CACHE. */
    setenv("POA_CACHE", dir, 1);
    char where[1024];
    poa_nvrtc_cache_dir(where, sizeof where, &e);
    char expected[1200];
    snprintf(expected, sizeof expected, "%s/nvrtc", dir);
    CHECK("cache: POA_CACHE sets the directory", strcmp(where, expected) == 0, "%s", where);
    int cache_hit = -1;
    rc = poa_nvrtc_compile_cached(saxpy, "axpy.cu", "sm_90", options, 1, &blob, &cache_hit, &e);
    int rc2 = rc == 0 ? poa_nvrtc_compile_cached(saxpy, "axpy.cu", "sm_90", options, 1, &hit, &cache_hit, &e) : -1;
    CHECK("cache: poa_nvrtc_compile_cached misses then hits in $POA_CACHE/nvrtc",
          rc == 0 && rc2 == 0 && cache_hit == 1 && same(&blob, &hit), "rc %d %d hit %d: %s", rc, rc2, cache_hit,
          e.message);
    poa_blob_free(&blob);
    poa_blob_free(&hit);
    poa_blob_free(&miss);

    /* A run's start-up: several sources at once in threads, then each a hit; a failure named. */
    char sources[4][256];
    const char *texts[4], *names[4] = { "a.cu", "b.cu", "c.cu", "d.cu" };
    for (int i = 0; i < 4; i++) {
        snprintf(sources[i], sizeof sources[i],
                 "extern \"C\" __global__ void k%d(float *y) { y[threadIdx.x] *= %d.0f; }\n", i, i + 2);
        texts[i] = sources[i];
    }
    rc = poa_nvrtc_compile_all(texts, names, 4, "sm_80", &e);
    int hits = 0;
    for (int i = 0; i < 4 && rc == 0; i++) {
        int one = 0;
        poa_blob b = { 0 };
        if (poa_nvrtc_compile_cached(texts[i], names[i], "sm_80", poa_nvrtc_kernel_options,
                                     poa_nvrtc_kernel_option_count, &b, &one, &e) == 0)
            hits += one;
        poa_blob_free(&b);
    }
    const char *with_broken[2] = { saxpy, broken }, *broken_names[2] = { "axpy.cu", "broken.cu" };
    int failed = poa_nvrtc_compile_all(with_broken, broken_names, 2, "sm_80", &e);
    CHECK("cache: poa_nvrtc_compile_all fills the cache in parallel (4 then 4 hits); a broken source is named",
          rc == 0 && hits == 4 && failed == -1 && strstr(e.message, "broken.cu"), "rc %d hits %d failed %d: %s", rc,
          hits, failed, e.message);
}


/* Runs command, returns its output (malloc'd) and exit status. */
static char *run(const char *command, int *status) {
    FILE *p = popen(command, "r");
    if (!p) return NULL;
    size_t used = 0, capacity = 1 << 16;
    char *text = malloc(capacity);
    for (size_t n; (n = fread(text + used, 1, capacity - used - 1, p)) > 0;) {
        used += n;
        if (capacity - used < 4096) text = realloc(text, capacity *= 2);
    }
    text[used] = 0;
    *status = pclose(p);
    return text;
}

static int count_lines_with(const char *text, const char *needle) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* `poa cuda warm` on a 3-width recipe (3 ViT sets, the glue, the heads' and the training
   kernels: 7 files): all misses, then all hits; `poa cuda report` tables every kernel with a
   register count. */
static void test_command(const char *dir) {
    const char *poa = POA_SOURCE_DIR "build/poa";
    if (access(poa, X_OK) != 0) {
        CHECK("poa cuda warm", 0, "%s is missing (run ninja)", poa);
        return;
    }
    char command[4096];
    snprintf(command, sizeof command, "POA_CACHE='%s' %s cuda warm %stests/recipes/tiny_vit.lua --arch sm_80 2>&1",
             dir, poa, POA_SOURCE_DIR);
    int status;
    char *cold = run(command, &status);
    CHECK("poa cuda warm: cold run compiles 7 files (3 ViT sets, fused, glue, heads, training)",
          cold && status == 0 && count_lines_with(cold, " miss ") == 7 &&
          strstr(cold, "7 files: 7 compiled, 0 from the cache, 0 failed") && strstr(cold, "(cold)") &&
          strstr(cold, "vit_glue.cu") && strstr(cold, "heads_kernels.cu") && strstr(cold, "train_kernels.cu"),
          "status %d:\n%s", status, cold ? cold : "");
    if (cold) printf("%s", strstr(cold, "7 files:") ? strstr(cold, "7 files:") : cold);
    char *cached = run(command, &status);
    CHECK("poa cuda warm: second run is all hits", cached && status == 0 && count_lines_with(cached, " hit ") == 7 &&
          strstr(cached, "7 files: 0 compiled, 7 from the cache, 0 failed") && strstr(cached, "(cached)"),
          "status %d:\n%s", status, cached ? cached : "");
    if (cached) printf("%s", strstr(cached, "7 files:") ? strstr(cached, "7 files:") : cached);
    snprintf(command, sizeof command, "POA_CACHE='%s' %s cuda report %stests/recipes/tiny_vit.lua --arch sm_80 2>&1",
             dir, poa, POA_SOURCE_DIR);
    char *report = run(command, &status);
    int rows = 0, set_rows = 0, zero_registers = 0;
    const char *starts[] = { "\nvit_", "\nheads_kernels.cu", "\ntrain_kernels.cu" }; /* vit_: sets, fused, glue */
    for (int s = 0; s < 3; s++)
        for (const char *line = report; line && (line = strstr(line, starts[s])); line++) {
            char file[128], kernel[128];
            int registers = 0;
            if (sscanf(line + 1, "%127s %127s %d", file, kernel, &registers) == 3) {
                rows++;
                set_rows += !strncmp(file, "vit_w", 5);
                zero_registers += registers <= 0;
            }
        }
    char summary[64];
    snprintf(summary, sizeof summary, "%d kernels in 7 files", rows);
    CHECK("poa cuda report: a row with registers per kernel (16 per ViT set x 3, and every other kernel)",
          report && status == 0 && set_rows == 48 && rows > 48 && zero_registers == 0 && strstr(report, summary),
          "status %d, %d rows (%d of the sets), %d without registers:\n%s", status, rows, set_rows, zero_registers,
          report ? report : "");
    free(cold);
    free(cached);
    free(report);
}

int main(void) {
    char dir[] = "/tmp/poa_test_nvrtc_cache.XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK("temporary directory", 0, "mkdtemp failed");
        CHECK_EXIT();
    }
    test_sha256();
    char entries[1100];
    snprintf(entries, sizeof entries, "%s/entries", dir);
    mkdir(entries, 0755);
    test_entry_format(entries);
    test_concurrent_stores(entries);
    poa_error e = { { 0 } };
    if (poa_nvrtc_load(&e) != 0) {
        CHECK_SKIP("nvrtc cache compiles", e.message);
    } else {
        int major, minor;
        poa_nvrtc_version(&major, &minor);
        printf("nvrtc %d.%d loaded with dlopen\n", major, minor);
        char compiles[512];
        snprintf(compiles, sizeof compiles, "%s/compiles", dir);
        test_compile_cache(compiles);
        char commands[600];
        snprintf(commands, sizeof commands, "%s/command", dir);
        test_command(commands);
    }
    remove_tree(dir);
    CHECK_EXIT();
}
