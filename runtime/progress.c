/* progress.c: progress lines that suit a terminal and a log file alike (progress.h). */
#include "progress.h"

#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

void poa_progress_clock(double seconds, char *out, size_t size) {
    if (!isfinite(seconds) || seconds < 0) {
        snprintf(out, size, "--:--:--");
        return;
    }
    long s = (long)(seconds + 0.5);
    snprintf(out, size, "%02ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
}

void poa_progress_start(poa_progress *p, FILE *to, const char *what, long total, const char *unit) {
    memset(p, 0, sizeof *p);
    p->to = to;
    p->tty = isatty(fileno(to));
    p->interval = p->tty ? 0.25 : 10.0;
    snprintf(p->what, sizeof p->what, "%s", what);
    snprintf(p->unit, sizeof p->unit, "%s", unit);
    p->total = total;
    p->started = p->printed_at = seconds_now();
    pthread_mutex_init(&p->lock, NULL);
}

static void print_line(poa_progress *p, const char *line) {
    if (p->tty) {
        fprintf(p->to, "\r%s\033[K", line); /* ESC[K: clear what a longer line left */
        p->line_open = 1;
    } else {
        fprintf(p->to, "%s\n", line);
    }
    fflush(p->to);
}

void poa_progress_line(poa_progress *p, const char *line) { print_line(p, line); }

void poa_progress_break(poa_progress *p) {
    if (!p->line_open) return;
    fputc('\n', p->to);
    fflush(p->to);
    p->line_open = 0;
}

/* The counted line; finished: the elapsed time in place of the ETA. */
static void print_count(poa_progress *p, double now, int finished) {
    double elapsed = now - p->started, rate = elapsed > 0 ? p->done / elapsed : 0;
    char tail[64], line[320];
    if (finished) {
        snprintf(tail, sizeof tail, "in %.1f s", elapsed);
    } else {
        char clock[32];
        poa_progress_clock(rate > 0 ? (p->total - p->done) / rate : -1, clock, sizeof clock);
        snprintf(tail, sizeof tail, "ETA %s", clock);
    }
    snprintf(line, sizeof line, "%s %ld/%ld %s (%.0f%%) | %.1f %s/s | %s", p->what, p->done, p->total, p->unit,
             p->total > 0 ? 100.0 * p->done / p->total : 100.0, rate, p->unit, tail);
    print_line(p, line);
    p->printed_at = now;
}

void poa_progress_add(poa_progress *p, long count) {
    pthread_mutex_lock(&p->lock);
    p->done += count;
    double now = seconds_now();
    if (p->done < p->total && now - p->printed_at >= p->interval) print_count(p, now, 0);
    pthread_mutex_unlock(&p->lock);
}

void poa_progress_finish(poa_progress *p) {
    pthread_mutex_lock(&p->lock);
    print_count(p, seconds_now(), 1);
    pthread_mutex_unlock(&p->lock);
    poa_progress_break(p);
    pthread_mutex_destroy(&p->lock);
}
