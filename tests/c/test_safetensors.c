/* test_safetensors.c: the safetensors reader and writer: round trips, layout, a file written by
   tests/golden/make_safetensors_fixture.py, and rejection of malformed files. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "safetensors.h"

static char dir[] = "/tmp/poa_test_safetensors_XXXXXX";

static const char *temp_path(const char *name) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

/* Writes a file: a u64 header size (header_size, or strlen(header) when negative), the header, data. */
static const char *write_raw(const char *name, long long header_size, const char *header, const void *data,
                             size_t data_size) {
    const char *path = temp_path(name);
    FILE *f = fopen(path, "wb");
    unsigned long long n = header_size < 0 ? strlen(header) : (unsigned long long)header_size;
    unsigned char size[8];
    for (int i = 0; i < 8; i++) size[i] = (unsigned char)(n >> (8 * i));
    fwrite(size, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    if (data_size) fwrite(data, 1, data_size, f);
    fclose(f);
    return path;
}

/* Opening `path` must fail with a message containing `expected` and the path. */
static void check_rejects(const char *name, const char *path, const char *expected) {
    poa_safetensors f;
    poa_error e = {{0}};
    int rc = poa_safetensors_open(&f, path, &e);
    CHECK(name, rc < 0 && strstr(e.message, expected) && strstr(e.message, path),
          "rc %d, message \"%s\", wanted \"%s\"", rc, e.message, expected);
    if (rc == 0) poa_safetensors_close(&f);
}

static int same_shape(const poa_tensor_info *t, int ndim, const long long *shape) {
    if (!t || t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return 0;
    return 1;
}

static void test_round_trip(void) {
    float w[2][3] = {{1.5f, -2, 3}, {4, 5.25f, -6}};
    double d[4] = {0.1, -1e300, 3.5, 1.0 / 3};
    int64_t scalar = -123456789012345LL;
    uint16_t bf16[3] = {0x3F80, 0xC020, 0x0000}; /* 1.0, -2.5, 0 */
    uint16_t f16[4] = {0x3C00, 0xC100, 0x0001, 0x7BFF}; /* 1.0, -2.5, 2^-24, 65504 */
    int32_t ints[2][2][2] = {{{1, 2}, {3, 4}}, {{5, 6}, {7, 8}}};
    real r[3] = {0.5f, -0.25f, 8};
    long long s_w[] = {2, 3}, s_d[] = {4}, s_bf[] = {3}, s_f16[] = {2, 2}, s_i[] = {2, 2, 2}, s_zero[] = {4, 0},
              s_r[] = {3};
    poa_error e = {{0}};
    poa_safetensors_writer *wr = poa_safetensors_writer_new();
    int rc = poa_safetensors_writer_add(wr, "w", "F32", 2, s_w, w, &e) |
             poa_safetensors_writer_add(wr, "b.double", "F64", 1, s_d, d, &e) |
             poa_safetensors_writer_add(wr, "scalar", "I64", 0, NULL, &scalar, &e) |
             poa_safetensors_writer_add(wr, "bf", "BF16", 1, s_bf, bf16, &e) |
             poa_safetensors_writer_add(wr, "h", "F16", 2, s_f16, f16, &e) |
             poa_safetensors_writer_add(wr, "ints", "I32", 3, s_i, ints, &e) |
             poa_safetensors_writer_add(wr, "zero", "U8", 2, s_zero, NULL, &e) |
             poa_safetensors_writer_add(wr, "odd", "U8", 1, (long long[]){3}, "abc", &e) |
             poa_safetensors_writer_add_real(wr, "real", 1, s_r, r, &e) |
             poa_safetensors_writer_metadata(wr, "format", "pt", &e) |
             poa_safetensors_writer_metadata(wr, "tricky \"key\"", "back\\slash\nnewline\tcaf\xc3\xa9", &e);
    char path[256];
    snprintf(path, sizeof path, "%s", temp_path("round.safetensors"));
    rc |= poa_safetensors_writer_save(wr, path, &e);
    poa_safetensors_writer_free(wr);
    CHECK("safetensors_write", rc == 0 && access(temp_path("round.safetensors.tmp"), F_OK) != 0, "%s",
          e.message);
    poa_safetensors f;
    if (poa_safetensors_open(&f, path, &e) < 0) {
        CHECK("safetensors_round_trip_open", 0, "%s", e.message);
        return;
    }
    const poa_tensor_info *t;
    int ok = f.count == 9;
    ok &= same_shape(t = poa_safetensors_find(&f, "w"), 2, s_w) && !strcmp(t->dtype, "F32") &&
          !memcmp(f.data + t->offset, w, sizeof w);
    ok &= same_shape(t = poa_safetensors_find(&f, "b.double"), 1, s_d) && !memcmp(f.data + t->offset, d, sizeof d);
    ok &= same_shape(t = poa_safetensors_find(&f, "scalar"), 0, NULL) && t->nbytes == 8 &&
          !memcmp(f.data + t->offset, &scalar, 8) && poa_tensor_numel(t) == 1;
    ok &= same_shape(t = poa_safetensors_find(&f, "ints"), 3, s_i) && !memcmp(f.data + t->offset, ints, sizeof ints);
    ok &= same_shape(t = poa_safetensors_find(&f, "zero"), 2, s_zero) && t->nbytes == 0 && poa_tensor_numel(t) == 0;
    ok &= (t = poa_safetensors_find(&f, "odd")) && t->nbytes == 3 && !memcmp(f.data + t->offset, "abc", 3);
    CHECK("safetensors_round_trip_bytes", ok, "a tensor's shape, dtype or bytes differ");
    const char *m1 = poa_safetensors_metadata(&f, "format"), *m2 = poa_safetensors_metadata(&f, "tricky \"key\"");
    CHECK("safetensors_round_trip_metadata",
          f.metadata_count == 2 && m1 && !strcmp(m1, "pt") && m2 &&
              !strcmp(m2, "back\\slash\nnewline\tcaf\xc3\xa9") && !poa_safetensors_metadata(&f, "absent"),
          "metadata differs");
    real got_bf[3], got_h[4], got_r[3], got_d[4];
    rc = poa_safetensors_read_real(&f, "bf", got_bf, 3, &e) | poa_safetensors_read_real(&f, "h", got_h, 4, &e) |
         poa_safetensors_read_real(&f, "real", got_r, 3, &e) | poa_safetensors_read_real(&f, "b.double", got_d, 4, &e);
    CHECK("safetensors_read_real",
          rc == 0 && got_bf[0] == 1 && got_bf[1] == -2.5f && got_bf[2] == 0 && got_h[0] == 1 && got_h[1] == -2.5f &&
              got_h[2] == ldexpf(1, -24) && got_h[3] == 65504 && !memcmp(got_r, r, sizeof r) &&
              got_d[0] == (real)0.1 && (isinf(got_d[1]) != 0) == (sizeof(real) == 4) && got_d[3] == (real)(1.0 / 3),
          "%s", e.message);
    real small[2];
    rc = poa_safetensors_read_real(&f, "w", small, 2, &e);
    CHECK("safetensors_read_real_count", rc < 0 && strstr(e.message, path) && strstr(e.message, "'w'") &&
          strstr(e.message, "6 elements"), "%s", e.message);
    rc = poa_safetensors_read_real(&f, "nope", small, 2, &e);
    CHECK("safetensors_read_real_absent", rc < 0 && strstr(e.message, "no tensor 'nope'"), "%s", e.message);
    rc = poa_safetensors_read_real(&f, "ints", small, 8, &e);
    CHECK("safetensors_read_real_dtype", rc < 0 && strstr(e.message, "dtype I32"), "%s", e.message);

    /* Layout: header a multiple of 8, tensors by dtype size descending then name, each aligned. */
    const char *order[] = {"b.double", "scalar", "ints", "real", "w", "bf", "h", "odd", "zero"};
    ok = f.header_size % 8 == 0;
    for (int i = 0; i < f.count; i++) {
        t = &f.tensors[i];
        size_t size = (size_t)poa_safetensors_dtype_bits(t->dtype) / 8;
        ok &= !strcmp(t->name, order[i]) && (8 + f.header_size + t->offset) % size == 0 &&
              ((uintptr_t)(f.data + t->offset)) % size == 0;
    }
    CHECK("safetensors_alignment", ok, "header %zu bytes; a tensor is out of order or misaligned", f.header_size);
    poa_safetensors_close(&f);
}

static void test_writer_errors(void) {
    poa_error e = {{0}};
    float x = 1;
    long long one[] = {1};
    poa_safetensors_writer *w = poa_safetensors_writer_new();
    poa_safetensors_writer_add(w, "x", "F32", 1, one, &x, &e);
    int rc = poa_safetensors_writer_add(w, "x", "F32", 1, one, &x, &e);
    CHECK("safetensors_writer_duplicate", rc < 0 && strstr(e.message, "'x' added twice"), "%s", e.message);
    rc = poa_safetensors_writer_add(w, "y", "F31", 1, one, &x, &e);
    CHECK("safetensors_writer_dtype", rc < 0 && strstr(e.message, "unknown dtype 'F31'"), "%s", e.message);
    rc = poa_safetensors_writer_save(w, "/nonexistent-dir/x.safetensors", &e);
    CHECK("safetensors_writer_unwritable", rc < 0 && strstr(e.message, "/nonexistent-dir/x.safetensors.tmp"), "%s",
          e.message);
    poa_safetensors_writer_free(w);
}

static void test_python_fixture(void) {
    const char *path = POA_SOURCE_DIR "tests/golden/fixtures/safetensors_small.safetensors";
    poa_safetensors f;
    poa_error e = {{0}};
    if (poa_safetensors_open(&f, path, &e) < 0) {
        CHECK("safetensors_python_fixture", 0, "%s", e.message);
        return;
    }
    real weight[6], dbl[4], brain[6], half[5];
    int rc = poa_safetensors_read_real(&f, "weight", weight, 6, &e) | poa_safetensors_read_real(&f, "double", dbl, 4, &e) |
             poa_safetensors_read_real(&f, "brain", brain, 6, &e) | poa_safetensors_read_real(&f, "half", half, 5, &e);
    int ok = rc == 0 && f.count == 7;
    for (int i = 0; ok && i < 6; i++) ok = weight[i] == (real)(i * 0.25 - 0.5) && brain[i] == (real)(i * 0.5 - 1.25);
    for (int i = 0; ok && i < 4; i++) ok = fabs((double)dbl[i] - (i + 1) / 3.0) < (sizeof(real) == 4 ? 1e-7 : 1e-16);
    ok = ok && half[0] == 1 && half[1] == -2.5f && half[2] == 65504 && half[3] == ldexpf(1, -24) && half[4] == 0;
    const poa_tensor_info *count = poa_safetensors_find(&f, "count"), *empty = poa_safetensors_find(&f, "empty"),
                          *cafe = poa_safetensors_find(&f, "caf\xc3\xa9");
    int64_t c = 0;
    int32_t ints[2] = {0, 0};
    if (count) memcpy(&c, f.data + count->offset, 8);
    if (cafe) memcpy(ints, f.data + cafe->offset, 8);
    ok = ok && count && count->ndim == 0 && c == -7 && same_shape(empty, 2, (long long[]){0, 3}) &&
         cafe && !strcmp(cafe->dtype, "I32") && ints[0] == 1 && ints[1] == -1;
    const char *note = poa_safetensors_metadata(&f, "note"), *format = poa_safetensors_metadata(&f, "format");
    ok = ok && note && !strcmp(note, "line\nbreak \"quoted\"") && format && !strcmp(format, "pt");
    CHECK("safetensors_python_fixture", ok, "%s", rc ? e.message : "a value differs from the script's formula");
    poa_safetensors_close(&f);
}

static void test_rejections(void) {
    const unsigned char data[16] = {0};
    const char *one = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    check_rejects("safetensors_reject_missing", temp_path("does-not-exist"), "cannot open");
    FILE *short_file = fopen(temp_path("short"), "wb");
    fwrite("\x10\0\0", 1, 3, short_file);
    fclose(short_file);
    check_rejects("safetensors_reject_short", temp_path("short"), "truncated");
    check_rejects("safetensors_reject_empty_header", write_raw("zeroheader", 0, "", NULL, 0), "does not start with '{'");
    check_rejects("safetensors_reject_header_past_eof", write_raw("past", 4096, one, data, 8), "truncated");
    check_rejects("safetensors_reject_data_short", write_raw("datashort", -1, one, data, 4), "truncated");
    check_rejects("safetensors_reject_data_long", write_raw("datalong", -1, one, data, 12), "past the end");
    check_rejects("safetensors_reject_no_brace", write_raw("nobrace", -1, " {}", NULL, 0), "does not start with '{'");
    check_rejects("safetensors_reject_hole",
                  write_raw("hole", -1,
                            "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                            "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                            data, 12),
                  "hole of 4 bytes");
    check_rejects("safetensors_reject_overlap",
                  write_raw("overlap", -1,
                            "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                            "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                            data, 8),
                  "overlaps");
    check_rejects("safetensors_reject_byte_count",
                  write_raw("bytecount", -1, "{\"a\":{\"dtype\":\"F64\",\"shape\":[2,1],\"data_offsets\":[0,8]}}",
                            data, 8),
                  "'a' has 8 bytes in data_offsets [0, 8] but shape [2, 1] of F64 needs 16");
    check_rejects("safetensors_reject_duplicate",
                  write_raw("duplicate", -1,
                            "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                            "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                            data, 8),
                  "duplicate tensor name 'a'");
    check_rejects("safetensors_reject_dtype",
                  write_raw("dtype", -1, "{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 4),
                  "unknown dtype 'F33'");
    check_rejects("safetensors_reject_header_too_large", write_raw("large", 100000001LL, one, data, 8),
                  "header too large");
    check_rejects("safetensors_reject_garbage", write_raw("garbage", -1, "{\"a\" 1}", NULL, 0), "malformed");
    check_rejects("safetensors_reject_unterminated",
                  write_raw("unterminated", -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", data, 8),
                  "malformed");
    check_rejects("safetensors_reject_trailing", write_raw("trailing", -1, "{} x", NULL, 0), "after the header");
    check_rejects("safetensors_reject_metadata_number",
                  write_raw("metanumber", -1, "{\"__metadata__\":{\"n\":1}}", NULL, 0), "not a string");
    check_rejects("safetensors_reject_missing_field",
                  write_raw("nofield", -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", data, 4), "no 'data_offsets'");
    check_rejects("safetensors_reject_negative",
                  write_raw("negative", -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", data, 4),
                  "non-negative integer");
    check_rejects("safetensors_reject_three_offsets",
                  write_raw("threeoffsets", -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,4]}}",
                            data, 4),
                  "data_offsets must have 2 entries");

    /* Accepted: trailing space padding, JSON whitespace, an empty header. */
    poa_safetensors f;
    poa_error e = {{0}};
    int rc = poa_safetensors_open(&f, write_raw("padded", -1, "{ \"a\" : {\"shape\":[2], \"dtype\":\"F32\",\n"
                                                              "\"data_offsets\":[0,8]} }      ", data, 8), &e);
    CHECK("safetensors_accept_padded", rc == 0 && f.count == 1 && poa_safetensors_find(&f, "a"), "%s", e.message);
    if (rc == 0) poa_safetensors_close(&f);
    rc = poa_safetensors_open(&f, write_raw("emptyheader", -1, "{}", NULL, 0), &e);
    CHECK("safetensors_accept_empty", rc == 0 && f.count == 0 && !poa_safetensors_find(&f, "a"), "%s", e.message);
    if (rc == 0) poa_safetensors_close(&f);
}

int main(void) {
    if (!mkdtemp(dir)) {
        CHECK("safetensors_tempdir", 0, "cannot create %s", dir);
        CHECK_EXIT();
    }
    test_round_trip();
    test_writer_errors();
    test_python_fixture();
    test_rejections();
    char command[300];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    if (system(command) != 0) fprintf(stderr, "could not remove %s\n", dir);
    CHECK_EXIT();
}
