/* safetensors.c: the safetensors reader (mmap + a JSON parser for exactly the header's shape).
   See safetensors.h for the layout; the writer is in safetensors_write.c. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define MAX_ELEMENTS (1ULL << 56)

static const struct { const char *name; int bits; } dtype_table[] = {
    {"BOOL", 8},         {"F4", 4},           {"F6_E2M3", 6},     {"F6_E3M2", 6}, {"U8", 8},
    {"I8", 8},           {"F8_E5M2", 8},      {"F8_E4M3", 8},     {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8},
    {"F8_E5M2FNUZ", 8},  {"I16", 16},         {"U16", 16},        {"F16", 16},    {"BF16", 16},
    {"I32", 32},         {"U32", 32},         {"F32", 32},        {"C64", 64},    {"F64", 64},
    {"I64", 64},         {"U64", 64},
};

int poa_safetensors_dtype_bits(const char *dtype) {
    for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++)
        if (strcmp(dtype, dtype_table[i].name) == 0) return dtype_table[i].bits;
    return 0;
}

/* numel of a shape, or -1 past MAX_ELEMENTS. */
static long long shape_numel(int ndim, const long long *shape) {
    unsigned long long n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] == 0) n = 0;
        else if (n && (unsigned long long)shape[i] > MAX_ELEMENTS / n) return -1;
        else n *= (unsigned long long)shape[i];
    }
    return (long long)n;
}

long long poa_tensor_numel(const poa_tensor_info *t) { return shape_numel(t->ndim, t->shape); }

static void format_shape(char *buf, size_t size, int ndim, const long long *shape) {
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, i ? ", %lld" : "%lld", shape[i]);
    if (n < size) snprintf(buf + n, size - n, "]");
}

/* ---- JSON: objects, strings with escapes, non-negative integers, arrays of integers ---- */

typedef struct json {
    const char *p, *end, *start;
    const char *path;
    poa_error *e;
} json;

static int json_fail(json *j, const char *what) {
    return poa_fail(j->e, "%s: malformed safetensors header at byte %ld: %s", j->path,
                    (long)(j->p - j->start), what);
}

static void json_space(json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int json_expect(json *j, char c, const char *what) {
    json_space(j);
    if (j->p >= j->end || *j->p != c) return json_fail(j, what);
    j->p++;
    return 0;
}

static int hex4(const char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Reads a JSON string into a new NUL-terminated UTF-8 buffer (*out, owned by the caller). */
static int json_string(json *j, char **out) {
    *out = NULL;
    if (json_expect(j, '"', "expected a string") < 0) return -1;
    const char *q = j->p;
    while (q < j->end && *q != '"') q += (*q == '\\' && q + 1 < j->end) ? 2 : 1;
    if (q >= j->end) return json_fail(j, "unterminated string");
    char *s = malloc((size_t)(q - j->p) + 1), *o = s;
    if (!s) return poa_fail(j->e, "%s: out of memory reading the header", j->path);
    while (*j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20) { free(s); return json_fail(j, "control character inside a string"); }
        if (c != '\\') { *o++ = (char)c; j->p++; continue; }
        char x = j->p[1];
        j->p += 2;
        const char *simple = strchr("\"\\/bfnrt", x);
        if (x && simple) { *o++ = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"]; continue; }
        unsigned cp, lo;
        if (x != 'u' || j->end - j->p < 4 || hex4(j->p, &cp) < 0) {
            free(s);
            return json_fail(j, "bad escape sequence in a string");
        }
        j->p += 4;
        if (cp >= 0xD800 && cp < 0xDC00) { /* high surrogate: a low one must follow */
            if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || hex4(j->p + 2, &lo) < 0 ||
                lo < 0xDC00 || lo > 0xDFFF) {
                free(s);
                return json_fail(j, "unpaired UTF-16 surrogate in a string");
            }
            j->p += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if ((cp >= 0xDC00 && cp <= 0xDFFF) || cp == 0) {
            free(s);
            return json_fail(j, cp ? "unpaired UTF-16 surrogate in a string" : "\\u0000 inside a string");
        }
        o += put_utf8(o, cp);
    }
    j->p++;
    *o = 0;
    *out = s;
    return 0;
}

static int json_uint(json *j, unsigned long long *out) {
    json_space(j);
    if (j->p >= j->end || *j->p < '0' || *j->p > '9') return json_fail(j, "expected a non-negative integer");
    if (*j->p == '0' && j->p + 1 < j->end && j->p[1] >= '0' && j->p[1] <= '9')
        return json_fail(j, "integer with a leading zero");
    unsigned long long v = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        unsigned d = (unsigned)(*j->p++ - '0');
        if (v > (UINT64_MAX - d) / 10) return json_fail(j, "integer too large");
        v = v * 10 + d;
    }
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return json_fail(j, "expected an integer, found a fraction or exponent");
    *out = v;
    return 0;
}

/* An array of at most `max` non-negative integers; *n receives the count. */
static int json_uint_array(json *j, unsigned long long *values, int max, int *n) {
    *n = 0;
    if (json_expect(j, '[', "expected an array") < 0) return -1;
    json_space(j);
    if (j->p < j->end && *j->p == ']') { j->p++; return 0; }
    for (;;) {
        if (*n == max) return json_fail(j, "array too long");
        if (json_uint(j, &values[(*n)++]) < 0) return -1;
        json_space(j);
        if (j->p < j->end && *j->p == ',') { j->p++; continue; }
        return json_expect(j, ']', "expected ',' or ']' in an array");
    }
}

/* After a member: ',' (returns 1, more follow) or '}' (returns 0). */
static int json_next_member(json *j) {
    json_space(j);
    if (j->p < j->end && *j->p == ',') { j->p++; return 1; }
    if (json_expect(j, '}', "expected ',' or '}' in an object") < 0) return -1;
    return 0;
}

/* ---- reading ---- */

static int parse_metadata(poa_safetensors *f, json *j) {
    if (json_expect(j, '{', "\"__metadata__\" must be an object of strings") < 0) return -1;
    json_space(j);
    if (j->p < j->end && *j->p == '}') { j->p++; return 0; }
    for (int capacity = 0;;) {
        if (f->metadata_count == capacity) {
            capacity = capacity ? 2 * capacity : 8;
            char **k = realloc(f->metadata_keys, (size_t)capacity * sizeof *k);
            if (k) f->metadata_keys = k;
            char **v = k ? realloc(f->metadata_values, (size_t)capacity * sizeof *v) : NULL;
            if (v) f->metadata_values = v;
            if (!k || !v) return poa_fail(j->e, "%s: out of memory reading the header", f->path);
        }
        char *key = NULL, *value = NULL;
        if (json_string(j, &key) < 0) return -1;
        int bad = json_expect(j, ':', "expected ':' after a metadata key");
        if (!bad) {
            json_space(j);
            if (j->p >= j->end || *j->p != '"')
                bad = poa_fail(j->e, "%s: \"__metadata__\" value of '%s' is not a string", f->path, key);
        }
        if (bad || json_string(j, &value) < 0) { free(key); return -1; }
        for (int i = 0; i < f->metadata_count; i++)
            if (strcmp(f->metadata_keys[i], key) == 0) {
                poa_fail(j->e, "%s: metadata key '%s' appears twice", f->path, key);
                free(key);
                free(value);
                return -1;
            }
        f->metadata_keys[f->metadata_count] = key;
        f->metadata_values[f->metadata_count++] = value;
        int more = json_next_member(j);
        if (more <= 0) return more;
    }
}

/* One field of a tensor entry: "dtype", "shape" or "data_offsets". */
static int parse_tensor_field(poa_safetensors *f, json *j, poa_tensor_info *t, const char *key,
                              unsigned long long offsets[2], int seen[3]) {
    int which = strcmp(key, "dtype") == 0 ? 0 : strcmp(key, "shape") == 0 ? 1
              : strcmp(key, "data_offsets") == 0 ? 2 : -1;
    if (which < 0) return poa_fail(j->e, "%s: tensor '%s' has an unknown field '%s'", f->path, t->name, key);
    if (seen[which]++) return poa_fail(j->e, "%s: tensor '%s' has field '%s' twice", f->path, t->name, key);
    unsigned long long values[POA_SAFETENSORS_MAX_DIMS + 1];
    int n;
    if (which == 0) {
        char *dtype;
        if (json_string(j, &dtype) < 0) return -1;
        int ok = poa_safetensors_dtype_bits(dtype) > 0;
        if (ok) snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
        else poa_fail(j->e, "%s: tensor '%s' has an unknown dtype '%s'", f->path, t->name, dtype);
        free(dtype);
        return ok ? 0 : -1;
    }
    if (json_uint_array(j, values, which == 1 ? POA_SAFETENSORS_MAX_DIMS + 1 : 3, &n) < 0) return -1;
    if (which == 2) {
        if (n != 2) return poa_fail(j->e, "%s: tensor '%s' data_offsets must have 2 entries, not %d",
                                    f->path, t->name, n);
        offsets[0] = values[0];
        offsets[1] = values[1];
        return 0;
    }
    if (n > POA_SAFETENSORS_MAX_DIMS)
        return poa_fail(j->e, "%s: tensor '%s' has more than %d dimensions", f->path, t->name,
                        POA_SAFETENSORS_MAX_DIMS);
    t->ndim = n;
    for (int i = 0; i < n; i++) {
        if (values[i] >= (1ULL << 48))
            return poa_fail(j->e, "%s: tensor '%s' dimension %d is too large (%llu)", f->path, t->name, i,
                            values[i]);
        t->shape[i] = (long long)values[i];
    }
    return 0;
}

/* A tensor entry {"dtype":..., "shape":..., "data_offsets":...}; takes ownership of name. */
static int parse_tensor(poa_safetensors *f, json *j, char *name, int *capacity) {
    if (f->count == *capacity) {
        *capacity = *capacity ? 2 * *capacity : 64;
        poa_tensor_info *grown = realloc(f->tensors, (size_t)*capacity * sizeof *grown);
        if (!grown) { free(name); return poa_fail(j->e, "%s: out of memory reading the header", f->path); }
        f->tensors = grown;
    }
    poa_tensor_info *t = &f->tensors[f->count++];
    memset(t, 0, sizeof *t);
    t->name = name;
    unsigned long long offsets[2] = {0, 0};
    int seen[3] = {0, 0, 0};
    if (json_expect(j, '{', "a tensor entry must be an object") < 0) return -1;
    json_space(j);
    if (j->p < j->end && *j->p == '}') j->p++;
    else
        for (;;) {
            char *key;
            if (json_string(j, &key) < 0) return -1;
            int bad = json_expect(j, ':', "expected ':' after a field name") < 0 ||
                      parse_tensor_field(f, j, t, key, offsets, seen) < 0;
            free(key);
            if (bad) return -1;
            int more = json_next_member(j);
            if (more < 0) return -1;
            if (!more) break;
        }
    for (int i = 0; i < 3; i++)
        if (!seen[i])
            return poa_fail(j->e, "%s: tensor '%s' has no '%s'", f->path, t->name,
                            i == 0 ? "dtype" : i == 1 ? "shape" : "data_offsets");
    long long numel = poa_tensor_numel(t);
    int bits = poa_safetensors_dtype_bits(t->dtype);
    if (numel < 0) return poa_fail(j->e, "%s: tensor '%s' has too many elements", f->path, t->name);
    if ((unsigned long long)numel * (unsigned)bits % 8)
        return poa_fail(j->e, "%s: tensor '%s' of dtype %s does not end on a byte boundary", f->path,
                        t->name, t->dtype);
    unsigned long long need = (unsigned long long)numel * (unsigned)bits / 8;
    if (offsets[1] < offsets[0])
        return poa_fail(j->e, "%s: tensor '%s' data_offsets [%llu, %llu] end before they begin", f->path,
                        t->name, offsets[0], offsets[1]);
    if (offsets[1] - offsets[0] != need) {
        char shape[256];
        format_shape(shape, sizeof shape, t->ndim, t->shape);
        return poa_fail(j->e,
                        "%s: tensor '%s' has %llu bytes in data_offsets [%llu, %llu] but shape %s of %s "
                        "needs %llu bytes",
                        f->path, t->name, offsets[1] - offsets[0], offsets[0], offsets[1], shape, t->dtype,
                        need);
    }
    t->offset = (size_t)offsets[0];
    t->nbytes = (size_t)need;
    return 0;
}

static int parse_header(poa_safetensors *f, const char *text, size_t size, poa_error *e) {
    json j = {text, text + size, text, f->path, e};
    int capacity = 0, have_metadata = 0;
    if (size == 0 || text[0] != '{')
        return poa_fail(e, "%s: the JSON header does not start with '{'", f->path);
    j.p++;
    json_space(&j);
    if (j.p < j.end && *j.p == '}') j.p++;
    else
        for (;;) {
            char *key;
            if (json_string(&j, &key) < 0 || json_expect(&j, ':', "expected ':' after a key") < 0) {
                free(key);
                return -1;
            }
            if (strcmp(key, "__metadata__") == 0) {
                free(key);
                if (have_metadata++) return json_fail(&j, "\"__metadata__\" appears twice");
                if (parse_metadata(f, &j) < 0) return -1;
            } else if (parse_tensor(f, &j, key, &capacity) < 0) {
                return -1;
            }
            int more = json_next_member(&j);
            if (more < 0) return -1;
            if (!more) break;
        }
    json_space(&j);
    if (j.p != j.end) return json_fail(&j, "unexpected text after the header object");
    return 0;
}

static const poa_safetensors *sort_file; /* qsort has no context argument */

static int by_offset(const void *a, const void *b) {
    const poa_tensor_info *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int by_name(const void *a, const void *b) {
    return strcmp(sort_file->tensors[*(const int *)a].name, sort_file->tensors[*(const int *)b].name);
}

/* Names unique; offsets from 0 with no hole or overlap up to exactly data_size. */
static int check_layout(poa_safetensors *f, poa_error *e) {
    if (f->count) qsort(f->tensors, (size_t)f->count, sizeof *f->tensors, by_offset);
    f->by_name = malloc((size_t)(f->count ? f->count : 1) * sizeof *f->by_name);
    if (!f->by_name) return poa_fail(e, "%s: out of memory", f->path);
    for (int i = 0; i < f->count; i++) f->by_name[i] = i;
    sort_file = f;
    qsort(f->by_name, (size_t)f->count, sizeof *f->by_name, by_name);
    for (int i = 1; i < f->count; i++)
        if (strcmp(f->tensors[f->by_name[i - 1]].name, f->tensors[f->by_name[i]].name) == 0)
            return poa_fail(e, "%s: duplicate tensor name '%s'", f->path, f->tensors[f->by_name[i]].name);
    size_t expected = 0;
    for (int i = 0; i < f->count; i++) {
        const poa_tensor_info *t = &f->tensors[i];
        if (t->offset < expected)
            return poa_fail(e, "%s: tensor '%s' at data offset %zu overlaps the previous tensor (which ends at %zu)",
                            f->path, t->name, t->offset, expected);
        if (t->offset > expected)
            return poa_fail(e, "%s: hole of %zu bytes in the data before tensor '%s' (offset %zu)", f->path,
                            t->offset - expected, t->name, t->offset);
        expected = t->offset + t->nbytes;
    }
    if (expected > f->data_size)
        return poa_fail(e, "%s: truncated: the tensors need %zu bytes of data but the file has %zu", f->path,
                        expected, f->data_size);
    if (expected < f->data_size)
        return poa_fail(e, "%s: %zu bytes of data past the end of the last tensor", f->path,
                        f->data_size - expected);
    return 0;
}

static int map_file(poa_safetensors *f, poa_error *e) {
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return poa_fail(e, "%s: cannot open: %s", f->path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int err = errno;
        close(fd);
        return poa_fail(e, "%s: cannot stat: %s", f->path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return poa_fail(e, "%s: not a regular file", f->path);
    }
    if (st.st_size < 8) {
        close(fd);
        return poa_fail(e, "%s: truncated: %lld bytes, shorter than the 8-byte header size", f->path,
                        (long long)st.st_size);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (map == MAP_FAILED) return poa_fail(e, "%s: cannot mmap: %s", f->path, strerror(err));
    f->map = map;
    f->map_size = (size_t)st.st_size;
    return 0;
}

int poa_safetensors_open(poa_safetensors *f, const char *path, poa_error *e) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return poa_fail(e, "%s: out of memory", path);
    if (map_file(f, e) < 0) goto fail;
    const unsigned char *bytes = f->map;
    unsigned long long n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | bytes[i];
    if (n > POA_SAFETENSORS_MAX_HEADER) {
        poa_fail(e, "%s: header too large: %llu bytes (the limit is %llu)", path, n, POA_SAFETENSORS_MAX_HEADER);
        goto fail;
    }
    if (n > f->map_size - 8) {
        poa_fail(e, "%s: truncated: the header size %llu runs past the end of the file (%zu bytes)", path, n,
                 f->map_size);
        goto fail;
    }
    f->header_size = (size_t)n;
    f->data = (unsigned char *)f->map + 8 + n;
    f->data_size = f->map_size - 8 - (size_t)n;
    if (parse_header(f, (const char *)bytes + 8, (size_t)n, e) < 0 || check_layout(f, e) < 0) goto fail;
    return 0;
fail:
    poa_safetensors_close(f);
    return -1;
}

void poa_safetensors_close(poa_safetensors *f) {
    if (f->map) munmap(f->map, f->map_size);
    for (int i = 0; i < f->count; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->metadata_count; i++) {
        free(f->metadata_keys[i]);
        free(f->metadata_values[i]);
    }
    free(f->tensors);
    free(f->metadata_keys);
    free(f->metadata_values);
    free(f->by_name);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const poa_tensor_info *poa_safetensors_find(const poa_safetensors *f, const char *name) {
    int lo = 0, hi = f->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const poa_tensor_info *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

const char *poa_safetensors_metadata(const poa_safetensors *f, const char *key) {
    for (int i = 0; i < f->metadata_count; i++)
        if (strcmp(f->metadata_keys[i], key) == 0) return f->metadata_values[i];
    return NULL;
}

static float half_to_float(uint16_t h) {
    unsigned exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
    float v;
    if (exponent == 0) v = ldexpf((float)mantissa, -24);
    else if (exponent == 31) v = mantissa ? NAN : INFINITY;
    else v = ldexpf((float)(mantissa | 0x400), (int)exponent - 25);
    return (h & 0x8000) ? -v : v;
}

int poa_safetensors_read_real(const poa_safetensors *f, const char *name, real *dst, long long count,
                              poa_error *e) {
    const poa_tensor_info *t = poa_safetensors_find(f, name);
    if (!t) return poa_fail(e, "%s: no tensor '%s'", f->path, name);
    long long numel = poa_tensor_numel(t);
    if (numel != count) {
        char shape[256];
        format_shape(shape, sizeof shape, t->ndim, t->shape);
        return poa_fail(e, "%s: tensor '%s' has %lld elements (shape %s), expected %lld", f->path, name, numel,
                        shape, count);
    }
    const unsigned char *src = f->data + t->offset;
    if (strcmp(t->dtype, "F32") == 0) {
        for (long long i = 0; i < count; i++) { float v; memcpy(&v, src + 4 * i, 4); dst[i] = (real)v; }
    } else if (strcmp(t->dtype, "F64") == 0) {
        for (long long i = 0; i < count; i++) { double v; memcpy(&v, src + 8 * i, 8); dst[i] = (real)v; }
    } else if (strcmp(t->dtype, "BF16") == 0 || strcmp(t->dtype, "F16") == 0) {
        int bf16 = t->dtype[0] == 'B';
        for (long long i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            float v;
            memcpy(&v, &bits, 4);
            dst[i] = (real)(bf16 ? v : half_to_float(h));
        }
    } else {
        return poa_fail(e, "%s: tensor '%s' has dtype %s; only F32, F64, BF16 and F16 convert to real", f->path,
                        name, t->dtype);
    }
    return 0;
}

int poa_safetensors_read_shaped(const poa_safetensors *f, const char *name, int ndim, const long long *shape,
                                real *dst, poa_error *e) {
    const poa_tensor_info *t = poa_safetensors_find(f, name);
    if (!t) return poa_fail(e, "%s: no tensor '%s'", f->path, name);
    int same = t->ndim == ndim;
    long long count = 1;
    for (int d = 0; d < ndim; d++) same = same && t->shape[d] == shape[d], count *= shape[d];
    if (!same) {
        char want[256], got[256];
        format_shape(want, sizeof want, ndim, shape);
        format_shape(got, sizeof got, t->ndim, t->shape);
        return poa_fail(e, "%s: tensor '%s' has shape %s, the model needs %s", f->path, name, got, want);
    }
    return poa_safetensors_read_real(f, name, dst, count, e);
}
