/* progress.h: the progress lines of poa's long commands (train, knn, data, cuda warm). On a
   terminal one line is redrawn in place (a carriage return, then the line); otherwise (a batch
   job's log file, a pipe) each report is one complete line, flushed, so that the log reads line
   by line and is current while the job runs. */
#ifndef POA_PROGRESS_H
#define POA_PROGRESS_H

#include <pthread.h>
#include <stdio.h>

typedef struct poa_progress {
    FILE *to;
    int tty;        /* `to` is a terminal */
    int line_open;  /* a redrawn line that no newline has ended yet */
    char what[128], unit[24];
    long total, done;
    double started, printed_at;
    double interval; /* seconds between counted reports: 0.25 on a terminal, 10 otherwise */
    pthread_mutex_t lock;
} poa_progress;

/* Counted progress: `what` (e.g. "poa knn: 96x4 features") over `total` `unit`s (e.g. "images"). */
void poa_progress_start(poa_progress *p, FILE *to, const char *what, long total, const char *unit);

/* count more done (from any thread); prints "what done/total unit (pct%) | rate unit/s |
   ETA hh:mm:ss" when the interval has passed. */
void poa_progress_add(poa_progress *p, long count);

/* The last line of a counted progress: "what total/total unit (100%) | rate unit/s | in 12.3 s". */
void poa_progress_finish(poa_progress *p);

/* One report line formatted by the caller (poa train's step line): redrawn on a terminal, a
   complete flushed line otherwise. */
void poa_progress_line(poa_progress *p, const char *line);

/* Ends a redrawn line (before other output, or at the end of a run); nothing when none is open. */
void poa_progress_break(poa_progress *p);

/* "hh:mm:ss" of a duration in seconds (negative or not finite: "--:--:--"). */
void poa_progress_clock(double seconds, char *out, size_t size);

#endif
