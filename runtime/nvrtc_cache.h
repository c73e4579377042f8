/* nvrtc_cache.h: CUDA source -> CUBIN (sm_XX) or PTX (compute_XX) through NVRTC, loaded with
   dlopen (poa starts without the CUDA toolkit), behind an on-disk cache.

   Output: for an architecture "sm_XX" NVRTC's CUBIN (SASS for exactly that GPU: the driver
   loads it with no JIT, which is what a cached start-up under a second needs); for
   "compute_XX" its PTX (what ptxas -v reads for the register and spill report, and what a
   newer GPU could JIT).

   The cache: one file per entry in $POA_CACHE/nvrtc, or ~/.cache/poa/nvrtc without
   POA_CACHE ($XDG_CACHE_HOME/poa/nvrtc when that is set). The key is SHA-256 of (a format tag,
   source, program name, architecture, NVRTC version and the size of the loaded libnvrtc,
   every option in order); the entry is <64 hex digits of the key>.cubin or .ptx. An entry
   is a 64-byte header (magic "POANVRTC", format version, payload size, CRC-32 of the payload,
   the key) and the payload. It is written to a unique temporary name in the same
   directory (mkstemp), fsync'd and renamed over the entry, so a reader sees the whole old
   entry, the whole new one or none, however many processes write. A short, corrupt or
   foreign entry is reported, deleted and rebuilt. */
#ifndef POA_NVRTC_CACHE_H
#define POA_NVRTC_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct poa_blob {
    unsigned char *data; /* malloc'd; poa_blob_free releases it */
    size_t size;
} poa_blob;

void poa_blob_free(poa_blob *blob);

/* NVRTC, loaded once (thread-safe). POA_LIBNVRTC names the library to load; otherwise
   libnvrtc.so.13, libnvrtc.so.12, libnvrtc.so, then $CUDA_HOME/lib64/libnvrtc.so.13.
   Returns 0, or -1 with the reason ("cannot load NVRTC: ..."). */
int poa_nvrtc_load(poa_error *e);

/* The loaded NVRTC's version (after a successful poa_nvrtc_load). */
void poa_nvrtc_version(int *major, int *minor);

/* Compiles without the cache: CUBIN for "sm_XX", PTX for "compute_XX" (its size counts the
   terminating NUL, so the blob is what cuModuleLoadData takes). options are passed
   after --gpu-architecture=<arch>. On a compile error the message holds NVRTC's log. If log
   is not NULL it receives NVRTC's log (malloc'd, NULL when empty) on success too. */
int poa_nvrtc_compile(const char *source, const char *name, const char *arch,
                      const char *const *options, int option_count, poa_blob *out, char **log,
                      poa_error *e);

/* The NVRTC options (after --gpu-architecture) of the generated kernel files, the same as
   tests/c/test_nvrtc_compile.c's: start-up and `poa cuda warm` must pass the same ones for the
   cache to hit. */
extern const char *const poa_nvrtc_kernel_options[];
extern const int poa_nvrtc_kernel_option_count;

/* What one cached compile did. */
typedef struct poa_nvrtc_outcome {
    int cache_hit;     /* 1: read from the cache (no NVRTC call) */
    int rebuilt;       /* 1: an entry existed but was bad; it was deleted and rebuilt */
    int stored;        /* 1: the result was written to the cache */
    double seconds;    /* wall time of the whole call */
    char entry[1024];  /* the entry's path */
    char note[2304];   /* why an entry was rebuilt or could not be stored; "" otherwise */
} poa_nvrtc_outcome;

/* The cache directory ($POA_CACHE/nvrtc, $XDG_CACHE_HOME/poa/nvrtc or ~/.cache/poa/nvrtc). */
int poa_nvrtc_cache_dir(char *dir, size_t size, poa_error *e);

/* Compiles through the cache in dir (NULL: poa_nvrtc_cache_dir). A cache that cannot be
   written is not an error: the outcome's note says why nothing was stored. */
int poa_nvrtc_compile_cached_in(const char *dir, const char *source, const char *name,
                                const char *arch, const char *const *options, int option_count,
                                poa_blob *out, poa_nvrtc_outcome *outcome, poa_error *e);

/* The same in the default directory; a rebuilt entry or a failed store is reported on
   stderr (one line, prefixed "poa: nvrtc cache: "). */
int poa_nvrtc_compile_cached(const char *source, const char *name, const char *arch,
                             const char *const *options, int option_count, poa_blob *out,
                             int *cache_hit, poa_error *e);

/* Compiles every source (named names[i]) for arch through the cache, in parallel threads (one per
   core): a run's start-up fills the cache with all its kernels at once. The first failure is
   the error. */
int poa_nvrtc_compile_all(const char *const *sources, const char *const *names, int count, const char *arch,
                          poa_error *e);

/* The pieces, for tests and tools. */
typedef struct poa_nvrtc_key {
    uint8_t bytes[32];
} poa_nvrtc_key;

/* SHA-256 of data (FIPS 180-4). */
void poa_sha256(const void *data, size_t size, uint8_t digest[32]);

/* The key of a compile (loads NVRTC for its version). */
int poa_nvrtc_cache_key(const char *source, const char *name, const char *arch,
                        const char *const *options, int option_count, poa_nvrtc_key *key,
                        poa_error *e);

/* The entry path of a key in dir: <dir>/<hex>.cubin or .ptx (by arch). */
void poa_nvrtc_cache_entry_path(const char *dir, const poa_nvrtc_key *key, const char *arch,
                                char *path, size_t size);

/* Reads an entry. Returns 1 and the payload when it is whole and matches key; 0 when there
   is no entry; -1 when the entry is bad (the message says why: short, bad magic, other key,
   size or checksum mismatch); bad entries are left in place for the caller. */
int poa_nvrtc_cache_load(const char *path, const poa_nvrtc_key *key, poa_blob *out,
                         poa_error *e);

/* Writes an entry atomically (unique temporary, fsync, rename, fsync of the directory). */
int poa_nvrtc_cache_store(const char *path, const poa_nvrtc_key *key, const void *payload,
                          size_t size, poa_error *e);

#endif
