/* dist_env.c: who this process is, from torchrun's or Slurm's variables, and Slurm's
   hostlist syntax (see dist.h). The run's rank and world come from here alone (the CUDA
   driver, runtime/cuda_driver.c, also reads LOCAL_RANK to pick its device). */
#include "dist.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { DEFAULT_PORT = 29500, MAX_HOSTS = 1 << 20 };
static const double DEFAULT_TIMEOUT = 1800;

/* A whole number in [min, max] from variable `name`: 1 if set, 0 if unset, -1 on error. */
static int env_int(const char *name, long min, long max, int *out, poa_error *e) {
    const char *text = getenv(name);
    if (!text) return 0;
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (!*text || *end || errno || text[0] == '+' || text[0] == ' ' || text[0] == '\t')
        return poa_fail(e, "%s=\"%s\" is not a whole number", name, text);
    if (v < min || v > max)
        return poa_fail(e, "%s=%ld is out of range (%ld to %ld)", name, v, min, max);
    *out = (int)v;
    return 1;
}

void poa_dist_single(poa_dist *d) {
    memset(d, 0, sizeof *d);
    d->world_size = d->local_world_size = 1;
    d->master_port = DEFAULT_PORT;
    d->timeout_seconds = DEFAULT_TIMEOUT;
    snprintf(d->source, sizeof d->source, "single");
}

/* MASTER_ADDR from the first host of the Slurm job's node list. */
static int slurm_master(poa_dist *d, poa_error *e) {
    const char *name = getenv("SLURM_JOB_NODELIST") ? "SLURM_JOB_NODELIST" : "SLURM_NODELIST";
    const char *list = getenv(name);
    if (!list) return 0; /* then MASTER_ADDR is required below */
    char **hosts;
    int count;
    poa_error why = { { 0 } };
    if (poa_hostlist_expand(list, &hosts, &count, &why))
        return poa_fail(e, "%s=\"%s\": %s", name, list, why.message);
    if (count == 0) {
        poa_hostlist_free(hosts, count);
        return poa_fail(e, "%s=\"%s\" names no host", name, list);
    }
    snprintf(d->master_addr, sizeof d->master_addr, "%s", hosts[0]);
    poa_hostlist_free(hosts, count);
    return 0;
}

int poa_dist_from_env(poa_dist *d, poa_error *e) {
    poa_dist_single(d);
    int rank = 0, world = 1, local = 0, got_rank, got_world;
    const char *rank_name, *world_name, *local_name;
    if (getenv("RANK") || getenv("WORLD_SIZE")) {
        rank_name = "RANK", world_name = "WORLD_SIZE", local_name = "LOCAL_RANK";
        snprintf(d->source, sizeof d->source, "torchrun");
    } else if (getenv("SLURM_PROCID")) {
        rank_name = "SLURM_PROCID", local_name = "SLURM_LOCALID";
        world_name = getenv("SLURM_NTASKS") || !getenv("SLURM_NPROCS") ? "SLURM_NTASKS" : "SLURM_NPROCS";
        snprintf(d->source, sizeof d->source, "slurm");
    } else {
        rank_name = world_name = local_name = NULL;
    }
    if (rank_name) {
        if ((got_rank = env_int(rank_name, 0, 1 << 24, &rank, e)) < 0 ||
            (got_world = env_int(world_name, 1, 1 << 24, &world, e)) < 0 ||
            env_int(local_name, 0, 1 << 24, &local, e) < 0)
            return -1;
        if (!got_rank) return poa_fail(e, "%s is not set (%s is)", rank_name, world_name);
        if (!got_world) return poa_fail(e, "%s is not set (%s is)", world_name, rank_name);
        if (rank >= world)
            return poa_fail(e, "%s=%d is not below %s=%d", rank_name, rank, world_name, world);
        if (local > rank)
            return poa_fail(e, "%s=%d is above %s=%d", local_name, local, rank_name, rank);
        int local_world = 1, got = strcmp(d->source, "torchrun") == 0
                                       ? env_int("LOCAL_WORLD_SIZE", 1, world, &local_world, e) : 0;
        if (got < 0) return -1;
        if (got && local >= local_world)
            return poa_fail(e, "LOCAL_RANK=%d is not below LOCAL_WORLD_SIZE=%d", local, local_world);
        d->local_world_size = local_world;
    }
    d->rank = rank, d->world_size = world, d->local_rank = local;
    int port = DEFAULT_PORT;
    if (env_int("MASTER_PORT", 1, 65535, &port, e) < 0) return -1;
    d->master_port = port;
    const char *timeout = getenv("POA_DIST_TIMEOUT");
    if (timeout) {
        char *end = NULL;
        double t = strtod(timeout, &end);
        if (!*timeout || *end || !(t > 0))
            return poa_fail(e, "POA_DIST_TIMEOUT=\"%s\" is not a positive number of seconds", timeout);
        d->timeout_seconds = t;
    }
    const char *addr = getenv("MASTER_ADDR");
    if (addr && !*addr) return poa_fail(e, "MASTER_ADDR is empty");
    if (addr && strlen(addr) >= sizeof d->master_addr)
        return poa_fail(e, "MASTER_ADDR is longer than %zu characters", sizeof d->master_addr - 1);
    if (addr) snprintf(d->master_addr, sizeof d->master_addr, "%s", addr);
    else if (strcmp(d->source, "slurm") == 0 && slurm_master(d, e)) return -1;
    if (world > 1 && !d->master_addr[0])
        return poa_fail(e, "MASTER_ADDR is not set (%s=%d processes must find rank 0)%s", world_name,
                        world, strcmp(d->source, "slurm") == 0 ? "; nor is SLURM_JOB_NODELIST" : "");
    return 0;
}

/* Slurm hostlists. */

typedef struct host_list {
    char **hosts;
    int count, capacity;
} host_list;

static int add_host(host_list *l, const char *name, size_t length, poa_error *e) {
    if (l->count == MAX_HOSTS) return poa_fail(e, "more than %d hosts", MAX_HOSTS);
    if (l->count == l->capacity) {
        int capacity = l->capacity ? 2 * l->capacity : 16;
        char **grown = realloc(l->hosts, sizeof(char *) * (size_t)capacity);
        if (!grown) return poa_fail(e, "out of memory");
        l->hosts = grown, l->capacity = capacity;
    }
    char *copy = malloc(length + 1);
    if (!copy) return poa_fail(e, "out of memory");
    memcpy(copy, name, length);
    copy[length] = 0;
    l->hosts[l->count++] = copy;
    return 0;
}

/* Expands one host pattern: prefix (already expanded, in `done`), then `rest`, which may hold
   bracket groups "[a-b,c]"; each group multiplies the names (leftmost group outermost). */
static int expand_pattern(host_list *l, char *done, size_t done_length, size_t done_size,
                          const char *rest, poa_error *e) {
    const char *open = strchr(rest, '[');
    if (!open) {
        size_t n = strlen(rest);
        if (done_length + n >= done_size) return poa_fail(e, "a host name is too long");
        memcpy(done + done_length, rest, n);
        if (done_length + n == 0) return poa_fail(e, "empty host name");
        return add_host(l, done, done_length + n, e);
    }
    const char *close = strchr(open, ']');
    if (!close) return poa_fail(e, "'[' without ']'");
    size_t prefix = (size_t)(open - rest);
    if (done_length + prefix >= done_size) return poa_fail(e, "a host name is too long");
    memcpy(done + done_length, rest, prefix);
    size_t at = done_length + prefix;
    const char *p = open + 1;
    if (p == close) return poa_fail(e, "empty '[]'");
    while (p < close) {
        const char *q = p;
        while (q < close && *q >= '0' && *q <= '9') q++;
        if (q == p) return poa_fail(e, "'%c' where a number was expected in '[...]'", *p);
        int width = (int)(q - p);
        long lo = strtol(p, NULL, 10), hi = lo;
        if (*q == '-') {
            const char *r = ++q;
            while (q < close && *q >= '0' && *q <= '9') q++;
            if (q == r) return poa_fail(e, "a range without an upper end in '[...]'");
            hi = strtol(r, NULL, 10);
        }
        if (q < close && *q != ',') return poa_fail(e, "'%c' in '[...]'", *q);
        if (hi < lo) return poa_fail(e, "range %ld-%ld goes down", lo, hi);
        if (hi - lo >= MAX_HOSTS) return poa_fail(e, "range %ld-%ld is too large", lo, hi);
        for (long v = lo; v <= hi; v++) {
            int n = snprintf(done + at, done_size - at, "%0*ld", width, v);
            if (n < 0 || (size_t)n >= done_size - at) return poa_fail(e, "a host name is too long");
            if (expand_pattern(l, done, at + (size_t)n, done_size, close + 1, e)) return -1;
        }
        p = q < close ? q + 1 : q;
        if (q < close && p == close) return poa_fail(e, "a trailing ',' in '[...]'");
    }
    return 0;
}

int poa_hostlist_expand(const char *list, char ***hosts, int *count, poa_error *e) {
    host_list l = { NULL, 0, 0 };
    char item[512], name[512];
    int rc = 0;
    for (const char *p = list; *p && rc == 0;) {
        /* one item: up to a ',' outside brackets */
        const char *q = p;
        int depth = 0;
        while (*q && (depth > 0 || *q != ',')) {
            if (*q == '[' && ++depth > 1) break;
            if (*q == ']' && --depth < 0) break;
            q++;
        }
        if (depth > 1) rc = poa_fail(e, "'[' inside '[...]'");
        else if (depth == 1) rc = poa_fail(e, "'[' without ']'");
        else if (depth < 0) rc = poa_fail(e, "']' without '['");
        else if ((size_t)(q - p) >= sizeof item) rc = poa_fail(e, "a host pattern is too long");
        else if (q == p) rc = poa_fail(e, "an empty entry");
        if (rc) break;
        memcpy(item, p, (size_t)(q - p));
        item[q - p] = 0;
        rc = expand_pattern(&l, name, 0, sizeof name, item, e);
        p = *q ? q + 1 : q;
        if (*q && !*p && rc == 0) rc = poa_fail(e, "a trailing ','");
    }
    if (rc) {
        poa_hostlist_free(l.hosts, l.count);
        return -1;
    }
    *hosts = l.hosts, *count = l.count;
    return 0;
}

void poa_hostlist_free(char **hosts, int count) {
    for (int i = 0; i < count; i++) free(hosts[i]);
    free(hosts);
}
