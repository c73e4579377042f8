/* safetensors.h: read and write the safetensors tensor file format.

   Layout (reference/formats-and-platform.md §2.1):
     [0, 8)        N, a little-endian u64: the byte length of the JSON header (N <= 100,000,000)
     [8, 8+N)      a JSON object starting with '{', optionally padded with spaces; each key is a
                   tensor name mapped to {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
                   plus an optional "__metadata__" map of string to string
     [8+N, EOF)    the data buffer; offsets are relative to its start, tensors are C-order,
                   little-endian, and cover the buffer with no hole and no overlap.
   The reader validates all of this; the writer lays tensors out by dtype size descending, then
   name, and pads the header to a multiple of 8 bytes so every tensor is naturally aligned. */
#ifndef POA_SAFETENSORS_H
#define POA_SAFETENSORS_H

#include <stddef.h>

#include "error.h"
#include "real.h"

#define POA_SAFETENSORS_MAX_DIMS 8
#define POA_SAFETENSORS_MAX_HEADER 100000000ULL

typedef struct poa_tensor_info {
    char *name;
    char dtype[16];
    int ndim;
    long long shape[POA_SAFETENSORS_MAX_DIMS];
    size_t offset, nbytes; /* offset into data */
} poa_tensor_info;

typedef struct poa_safetensors {
    char *path;
    int count;
    poa_tensor_info *tensors; /* in data order (increasing offset) */
    unsigned char *data;      /* the data buffer (inside the mapping) */
    size_t data_size;
    int metadata_count;
    char **metadata_keys, **metadata_values;
    int *by_name;     /* indices into tensors, sorted by name, for poa_safetensors_find */
    void *map;        /* the whole file, mmapped read-only */
    size_t map_size;
    size_t header_size; /* N */
} poa_safetensors;

/* Bits per element of a safetensors dtype string ("F32" -> 32, "F4" -> 4), 0 if unknown. */
int poa_safetensors_dtype_bits(const char *dtype);

/* Maps the file and validates it entirely; on failure f is left closed (safe to close again). */
int poa_safetensors_open(poa_safetensors *f, const char *path, poa_error *e);
void poa_safetensors_close(poa_safetensors *f);
const poa_tensor_info *poa_safetensors_find(const poa_safetensors *f, const char *name); /* NULL if absent */
const char *poa_safetensors_metadata(const poa_safetensors *f, const char *key);          /* NULL if absent */
/* Number of elements of a tensor (product of its shape; 1 for a scalar). */
long long poa_tensor_numel(const poa_tensor_info *t);

/* Reads tensor `name` converted to `real` (from F32, F64, BF16, F16); fails naming the file and
   tensor if absent or if its element count is not `count`. */
int poa_safetensors_read_real(const poa_safetensors *f, const char *name, real *dst, long long count,
                              poa_error *e);

/* The same, checking that the tensor has exactly `shape` (ndim dimensions); the error names
   the file, the tensor and both shapes. */
int poa_safetensors_read_shaped(const poa_safetensors *f, const char *name, int ndim, const long long *shape,
                                real *dst, poa_error *e);

/* Writer: tensors are referenced (not copied) until save. */
typedef struct poa_safetensors_writer poa_safetensors_writer;
poa_safetensors_writer *poa_safetensors_writer_new(void); /* NULL if out of memory */
int poa_safetensors_writer_add(poa_safetensors_writer *w, const char *name, const char *dtype, int ndim,
                               const long long *shape, const void *data, poa_error *e);
/* Stored as F32 (converted from double at save time in the fp64 build). */
int poa_safetensors_writer_add_real(poa_safetensors_writer *w, const char *name, int ndim,
                                    const long long *shape, const real *data, poa_error *e);
int poa_safetensors_writer_metadata(poa_safetensors_writer *w, const char *key, const char *value,
                                    poa_error *e);
/* Atomic: writes path.tmp, fsyncs it, renames it to path. */
int poa_safetensors_writer_save(poa_safetensors_writer *w, const char *path, poa_error *e);
void poa_safetensors_writer_free(poa_safetensors_writer *w);

#endif
