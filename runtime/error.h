/* error.h: how runtime functions report failure. A function that can fail
   takes a poa_error *, returns 0 on success and -1 on failure after writing a
   message that names the file, field or member at fault. Only the CLI exits. */
#ifndef POA_ERROR_H
#define POA_ERROR_H

#include <stdarg.h>
#include <stdio.h>

typedef struct poa_error {
    char message[1024];
} poa_error;

/* Formats the message into e (if e is not NULL) and returns -1. */
static inline int poa_fail(poa_error *e, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
static inline int poa_fail(poa_error *e, const char *format, ...) {
    if (e) {
        va_list ap;
        va_start(ap, format);
        vsnprintf(e->message, sizeof e->message, format, ap);
        va_end(ap);
    }
    return -1;
}

#endif
