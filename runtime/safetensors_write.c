/* safetensors_write.c: the safetensors writer. Tensors are laid out by dtype size descending,
   then by name (byte order), after a header padded with spaces to a multiple of 8 bytes, so each
   tensor of an 8/4/2-byte dtype starts at an offset that is a multiple of its element size. */
#include "safetensors.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct writer_entry {
    char *name;
    char dtype[16];
    int bits;
    int ndim;
    long long shape[POA_SAFETENSORS_MAX_DIMS];
    const void *data;
    int from_real; /* data is real *, stored as F32 */
    size_t nbytes, offset;
} writer_entry;

struct poa_safetensors_writer {
    writer_entry *entries;
    int count, capacity;
    char **metadata_keys, **metadata_values;
    int metadata_count, metadata_capacity;
};

poa_safetensors_writer *poa_safetensors_writer_new(void) { return calloc(1, sizeof(poa_safetensors_writer)); }

void poa_safetensors_writer_free(poa_safetensors_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->count; i++) free(w->entries[i].name);
    for (int i = 0; i < w->metadata_count; i++) {
        free(w->metadata_keys[i]);
        free(w->metadata_values[i]);
    }
    free(w->entries);
    free(w->metadata_keys);
    free(w->metadata_values);
    free(w);
}

static int add_entry(poa_safetensors_writer *w, const char *name, const char *dtype, int ndim,
                     const long long *shape, const void *data, int from_real, poa_error *e) {
    int bits = poa_safetensors_dtype_bits(dtype);
    if (!bits) return poa_fail(e, "safetensors writer: tensor '%s' has an unknown dtype '%s'", name, dtype);
    if (strcmp(name, "__metadata__") == 0 || name[0] == 0)
        return poa_fail(e, "safetensors writer: '%s' is not a valid tensor name", name);
    if (ndim < 0 || ndim > POA_SAFETENSORS_MAX_DIMS)
        return poa_fail(e, "safetensors writer: tensor '%s' has %d dimensions (0 to %d allowed)", name, ndim,
                        POA_SAFETENSORS_MAX_DIMS);
    unsigned long long numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || shape[i] >= (1LL << 48))
            return poa_fail(e, "safetensors writer: tensor '%s' dimension %d is %lld", name, i, shape[i]);
        numel = shape[i] == 0 ? 0 : numel;
        if (numel && (unsigned long long)shape[i] > (1ULL << 56) / numel)
            return poa_fail(e, "safetensors writer: tensor '%s' has too many elements", name);
        numel *= (unsigned long long)shape[i];
    }
    if (numel * (unsigned)bits % 8)
        return poa_fail(e, "safetensors writer: tensor '%s' of dtype %s does not end on a byte boundary", name,
                        dtype);
    if (numel && !data) return poa_fail(e, "safetensors writer: tensor '%s' has no data", name);
    for (int i = 0; i < w->count; i++)
        if (strcmp(w->entries[i].name, name) == 0)
            return poa_fail(e, "safetensors writer: tensor '%s' added twice", name);
    if (w->count == w->capacity) {
        int capacity = w->capacity ? 2 * w->capacity : 64;
        writer_entry *grown = realloc(w->entries, (size_t)capacity * sizeof *grown);
        if (!grown) return poa_fail(e, "safetensors writer: out of memory adding '%s'", name);
        w->entries = grown;
        w->capacity = capacity;
    }
    writer_entry *t = &w->entries[w->count];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return poa_fail(e, "safetensors writer: out of memory adding '%s'", name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->bits = bits;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->from_real = from_real;
    t->nbytes = (size_t)(numel * (unsigned)bits / 8);
    w->count++;
    return 0;
}

int poa_safetensors_writer_add(poa_safetensors_writer *w, const char *name, const char *dtype, int ndim,
                               const long long *shape, const void *data, poa_error *e) {
    return add_entry(w, name, dtype, ndim, shape, data, 0, e);
}

int poa_safetensors_writer_add_real(poa_safetensors_writer *w, const char *name, int ndim,
                                    const long long *shape, const real *data, poa_error *e) {
    return add_entry(w, name, "F32", ndim, shape, data, 1, e);
}

int poa_safetensors_writer_metadata(poa_safetensors_writer *w, const char *key, const char *value,
                                    poa_error *e) {
    for (int i = 0; i < w->metadata_count; i++)
        if (strcmp(w->metadata_keys[i], key) == 0)
            return poa_fail(e, "safetensors writer: metadata key '%s' set twice", key);
    if (w->metadata_count == w->metadata_capacity) {
        int capacity = w->metadata_capacity ? 2 * w->metadata_capacity : 8;
        char **k = realloc(w->metadata_keys, (size_t)capacity * sizeof *k);
        if (k) w->metadata_keys = k;
        char **v = k ? realloc(w->metadata_values, (size_t)capacity * sizeof *v) : NULL;
        if (v) w->metadata_values = v;
        if (!k || !v) return poa_fail(e, "safetensors writer: out of memory adding metadata '%s'", key);
        w->metadata_capacity = capacity;
    }
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return poa_fail(e, "safetensors writer: out of memory adding metadata '%s'", key);
    }
    w->metadata_keys[w->metadata_count] = k;
    w->metadata_values[w->metadata_count++] = v;
    return 0;
}

/* ---- the header text ---- */

typedef struct text {
    char *data;
    size_t length, capacity;
    int out_of_memory;
} text;

static void put(text *b, const char *s, size_t n) {
    if (b->out_of_memory) return;
    if (b->length + n + 1 > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 4096;
        while (b->length + n + 1 > capacity) capacity *= 2;
        char *grown = realloc(b->data, capacity);
        if (!grown) { b->out_of_memory = 1; return; }
        b->data = grown;
        b->capacity = capacity;
    }
    memcpy(b->data + b->length, s, n);
    b->length += n;
    b->data[b->length] = 0;
}

static void put_s(text *b, const char *s) { put(b, s, strlen(s)); }

/* A JSON string: quotes, backslashes and control characters escaped, other bytes as they are. */
static void put_json_string(text *b, const char *s) {
    put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char escaped[8];
        if (c == '"' || c == '\\') { escaped[0] = '\\'; escaped[1] = (char)c; put(b, escaped, 2); }
        else if (c < 0x20) { snprintf(escaped, sizeof escaped, "\\u%04x", c); put(b, escaped, 6); }
        else put(b, (const char *)&c, 1);
    }
    put(b, "\"", 1);
}

static int by_alignment_then_name(const void *a, const void *b) {
    const writer_entry *x = *(writer_entry *const *)a, *y = *(writer_entry *const *)b;
    int ax = x->bits >= 8 ? x->bits / 8 : 1, ay = y->bits >= 8 ? y->bits / 8 : 1;
    if (ax != ay) return ay - ax;
    return strcmp(x->name, y->name);
}

/* Sorts the entries into data order, assigns offsets, and builds the padded header. */
static int build_header(poa_safetensors_writer *w, writer_entry **order, text *h) {
    for (int i = 0; i < w->count; i++) order[i] = &w->entries[i];
    if (w->count) qsort(order, (size_t)w->count, sizeof *order, by_alignment_then_name);
    put_s(h, "{");
    if (w->metadata_count) {
        put_s(h, "\"__metadata__\":{");
        for (int i = 0; i < w->metadata_count; i++) {
            if (i) put_s(h, ",");
            put_json_string(h, w->metadata_keys[i]);
            put_s(h, ":");
            put_json_string(h, w->metadata_values[i]);
        }
        put_s(h, "}");
    }
    size_t offset = 0;
    char number[64];
    for (int i = 0; i < w->count; i++) {
        writer_entry *t = order[i];
        t->offset = offset;
        offset += t->nbytes;
        if (i || w->metadata_count) put_s(h, ",");
        put_json_string(h, t->name);
        put_s(h, ":{\"dtype\":");
        put_json_string(h, t->dtype);
        put_s(h, ",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(number, sizeof number, d ? ",%lld" : "%lld", t->shape[d]);
            put_s(h, number);
        }
        snprintf(number, sizeof number, "],\"data_offsets\":[%zu,%zu]}", t->offset, offset);
        put_s(h, number);
    }
    put_s(h, "}");
    while (h->length % 8) put_s(h, " ");
    return h->out_of_memory ? -1 : 0;
}

static int write_entry(FILE *out, const writer_entry *t) {
    if (!t->nbytes) return 0;
#ifdef POA_FP64
    if (t->from_real) {
        const real *src = t->data;
        float chunk[4096];
        size_t n = t->nbytes / 4;
        for (size_t i = 0; i < n; i += 4096) {
            size_t m = n - i < 4096 ? n - i : 4096;
            for (size_t k = 0; k < m; k++) chunk[k] = (float)src[i + k];
            if (fwrite(chunk, 4, m, out) != m) return -1;
        }
        return 0;
    }
#endif
    return fwrite(t->data, 1, t->nbytes, out) == t->nbytes ? 0 : -1;
}

int poa_safetensors_writer_save(poa_safetensors_writer *w, const char *path, poa_error *e) {
    writer_entry **order = malloc((size_t)(w->count ? w->count : 1) * sizeof *order);
    text h = {0};
    size_t path_length = strlen(path);
    char *tmp = malloc(path_length + 5);
    if (!order || !tmp || build_header(w, order, &h) < 0) {
        free(order);
        free(tmp);
        free(h.data);
        return poa_fail(e, "%s: out of memory building the safetensors header", path);
    }
    if (h.length > POA_SAFETENSORS_MAX_HEADER) {
        free(order);
        free(tmp);
        free(h.data);
        return poa_fail(e, "%s: header of %zu bytes is too large for safetensors", path, h.length);
    }
    memcpy(tmp, path, path_length);
    memcpy(tmp + path_length, ".tmp", 5);
    int rc = -1;
    FILE *out = fopen(tmp, "wb");
    if (!out) {
        poa_fail(e, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    unsigned char size[8];
    for (int i = 0; i < 8; i++) size[i] = (unsigned char)((unsigned long long)h.length >> (8 * i));
    int bad = fwrite(size, 1, 8, out) != 8 || fwrite(h.data, 1, h.length, out) != h.length;
    for (int i = 0; i < w->count && !bad; i++) bad = write_entry(out, order[i]) < 0;
    bad = bad || fflush(out) != 0 || fsync(fileno(out)) != 0;
    int err = errno;
    if (fclose(out) != 0 && !bad) { bad = 1; err = errno; }
    if (bad || rename(tmp, path) != 0) {
        if (!bad) err = errno;
        poa_fail(e, "%s: cannot write: %s", bad ? tmp : path, strerror(err));
        remove(tmp);
        goto done;
    }
    rc = 0;
done:
    free(order);
    free(tmp);
    free(h.data);
    return rc;
}
