/* test_dist.c: runtime/dist.c and dist_nccl.c. Who a process is from torchrun and Slurm
   variables (hostlists expanded, every bad value an error naming its variable); three forked
   processes on localhost meeting at a free port: broadcast, barrier and the float / double
   all-reduces with exact expected results (the rank-order sum checked by a sum that another
   order would change); a peer that never arrives, that dies, or that runs another collective
   is a prompt error, not a hang. NCCL: loading and ncclGetVersion, ncclGetUniqueId when the
   library gives one without a GPU; without a GPU a communicator is NCCL's error, passed on;
   on a GPU a one-rank communicator's in-place all-reduce (skipped without one). */
#include <math.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "free_port.h"
#include "cuda_driver.h"
#include "dist.h"

static const char *variables[] = { "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                                   "SLURM_PROCID", "SLURM_NTASKS", "SLURM_NPROCS", "SLURM_LOCALID",
                                   "SLURM_JOB_NODELIST", "SLURM_NODELIST", "POA_DIST_TIMEOUT" };

/* Clears every variable, then sets "NAME=value" pairs; returns poa_dist_from_env's rc. */
static int from_env(poa_dist *d, poa_error *e, const char *const *set) {
    for (size_t i = 0; i < sizeof variables / sizeof variables[0]; i++) unsetenv(variables[i]);
    for (; set && *set; set++) {
        char name[64];
        const char *eq = strchr(*set, '=');
        snprintf(name, sizeof name, "%.*s", (int)(eq - *set), *set);
        setenv(name, eq + 1, 1);
    }
    memset(e, 0, sizeof *e);
    return poa_dist_from_env(d, e);
}

static void test_environment(void) {
    poa_dist d;
    poa_error e;
    int rc = from_env(&d, &e, NULL);
    CHECK("no variable: a single process", rc == 0 && d.rank == 0 && d.world_size == 1 &&
          strcmp(d.source, "single") == 0, "rc %d rank %d world %d (%s)", rc, d.rank, d.world_size, e.message);
    rc = from_env(&d, &e, (const char *[]){ "RANK=2", "WORLD_SIZE=4", "LOCAL_RANK=1", "LOCAL_WORLD_SIZE=2",
                                            "MASTER_ADDR=node7", "MASTER_PORT=1234", "SLURM_PROCID=9",
                                            "SLURM_NTASKS=16", NULL });
    CHECK("torchrun variables (and they win over Slurm's)",
          rc == 0 && d.rank == 2 && d.world_size == 4 && d.local_rank == 1 && d.local_world_size == 2 &&
          strcmp(d.master_addr, "node7") == 0 &&
          d.master_port == 1234 && strcmp(d.source, "torchrun") == 0,
          "rc %d rank %d/%d local %d at %s:%d (%s)", rc, d.rank, d.world_size, d.local_rank, d.master_addr,
          d.master_port, e.message);
    rc = from_env(&d, &e, (const char *[]){ "RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h", "POA_DIST_TIMEOUT=2.5", NULL });
    CHECK("MASTER_PORT defaults to 29500, POA_DIST_TIMEOUT is read",
          rc == 0 && d.master_port == 29500 && d.timeout_seconds == 2.5 && d.local_rank == 0,
          "rc %d port %d timeout %g (%s)", rc, d.master_port, d.timeout_seconds, e.message);
    rc = from_env(&d, &e, (const char *[]){ "SLURM_PROCID=5", "SLURM_NTASKS=8", "SLURM_LOCALID=1",
                                            "SLURM_JOB_NODELIST=gpu[01-04,07],login1", NULL });
    CHECK("Slurm variables, MASTER_ADDR from the first host of the node list",
          rc == 0 && d.rank == 5 && d.world_size == 8 && d.local_rank == 1 &&
          strcmp(d.master_addr, "gpu01") == 0 && strcmp(d.source, "slurm") == 0,
          "rc %d rank %d/%d local %d master %s (%s)", rc, d.rank, d.world_size, d.local_rank, d.master_addr, e.message);
    rc = from_env(&d, &e, (const char *[]){ "SLURM_PROCID=1", "SLURM_NPROCS=2", "SLURM_NODELIST=a[7-8]",
                                            "MASTER_ADDR=chosen", NULL });
    CHECK("Slurm: SLURM_NPROCS, and MASTER_ADDR wins over the node list",
          rc == 0 && d.world_size == 2 && strcmp(d.master_addr, "chosen") == 0, "rc %d world %d master %s (%s)",
          rc, d.world_size, d.master_addr, e.message);

    static const struct { const char *set[6]; const char *names[2]; } bad[] = {
        { { "RANK=4", "WORLD_SIZE=4", "MASTER_ADDR=h" }, { "RANK=4", "WORLD_SIZE=4" } },
        { { "RANK=abc", "WORLD_SIZE=2", "MASTER_ADDR=h" }, { "RANK=\"abc\"", "whole number" } },
        { { "RANK=1", "WORLD_SIZE=2x", "MASTER_ADDR=h" }, { "WORLD_SIZE", "whole number" } },
        { { "RANK=-1", "WORLD_SIZE=2", "MASTER_ADDR=h" }, { "RANK=-1", "range" } },
        { { "RANK=0", "WORLD_SIZE=0" }, { "WORLD_SIZE=0", "range" } },
        { { "RANK=1", "WORLD_SIZE=2" }, { "MASTER_ADDR", "not set" } },
        { { "RANK=1" }, { "WORLD_SIZE", "not set" } },
        { { "WORLD_SIZE=3", "MASTER_ADDR=h" }, { "RANK", "not set" } },
        { { "RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=70000" }, { "MASTER_PORT=70000", "range" } },
        { { "RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=" }, { "MASTER_PORT", "whole number" } },
        { { "RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=" }, { "MASTER_ADDR", "empty" } },
        { { "RANK=1", "WORLD_SIZE=2", "MASTER_ADDR=h", "LOCAL_RANK=x" }, { "LOCAL_RANK", "whole number" } },
        { { "RANK=0", "WORLD_SIZE=1", "POA_DIST_TIMEOUT=-3" }, { "POA_DIST_TIMEOUT", "positive" } },
        { { "RANK=3", "WORLD_SIZE=4", "MASTER_ADDR=h", "LOCAL_RANK=2", "LOCAL_WORLD_SIZE=2" },
          { "LOCAL_RANK=2", "LOCAL_WORLD_SIZE=2" } },
        { { "RANK=1", "WORLD_SIZE=4", "MASTER_ADDR=h", "LOCAL_RANK=2" }, { "LOCAL_RANK=2", "RANK=1" } },
        { { "SLURM_PROCID=0" }, { "SLURM_NTASKS", "not set" } },
        { { "SLURM_PROCID=3", "SLURM_NTASKS=2" }, { "SLURM_PROCID=3", "SLURM_NTASKS=2" } },
        { { "SLURM_PROCID=0", "SLURM_NTASKS=2", "SLURM_JOB_NODELIST=gpu[01-" }, { "SLURM_JOB_NODELIST", "'['" } },
        { { "SLURM_PROCID=0", "SLURM_NTASKS=2" }, { "MASTER_ADDR", "SLURM_JOB_NODELIST" } },
    };
    int bad_ok = 1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = from_env(&d, &e, bad[i].set);
        if (rc == 0 || !strstr(e.message, bad[i].names[0]) || !strstr(e.message, bad[i].names[1])) {
            printf("  case %zu (%s ...): rc %d, message \"%s\"\n", i, bad[i].set[0], rc, e.message);
            bad_ok = 0;
        }
    }
    CHECK("every malformed or inconsistent variable is an error naming it", bad_ok, "see above");
    from_env(&d, &e, NULL);
}

static int hosts_are(const char *list, const char *expected) {
    char **hosts;
    int count;
    poa_error e = { { 0 } };
    if (poa_hostlist_expand(list, &hosts, &count, &e)) {
        printf("  %s: %s\n", list, e.message);
        return 0;
    }
    char joined[1024] = "";
    for (int i = 0; i < count; i++)
        snprintf(joined + strlen(joined), sizeof joined - strlen(joined), "%s%s", i ? " " : "", hosts[i]);
    poa_hostlist_free(hosts, count);
    if (strcmp(joined, expected) == 0) return 1;
    printf("  %s: got \"%s\", expected \"%s\"\n", list, joined, expected);
    return 0;
}

static void test_hostlists(void) {
    int ok = hosts_are("gpu[01-04,07],login1", "gpu01 gpu02 gpu03 gpu04 gpu07 login1") &&
             hosts_are("node7", "node7") && hosts_are("n[8-11]", "n8 n9 n10 n11") &&
             hosts_are("r[1-2]-n[08-10].ib", "r1-n08.ib r1-n09.ib r1-n10.ib r2-n08.ib r2-n09.ib r2-n10.ib") &&
             hosts_are("a,b[3],c", "a b3 c") && hosts_are("x[098-101]", "x098 x099 x100 x101");
    CHECK("Slurm hostlists expand in order (ranges, zero padding, several groups)", ok, "see above");
    const char *bad[] = { "gpu[01-", "gpu]", "a,,b", "a,", "x[3-1]", "x[a]", "x[1,]", "x[]", "x[1-]",
                          "x[[1]]", "" };
    int refused = 1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char **hosts;
        int count;
        poa_error e = { { 0 } };
        int rc = poa_hostlist_expand(bad[i], &hosts, &count, &e);
        if (rc == 0 && count > 0) {
            printf("  \"%s\" accepted (%d hosts)\n", bad[i], count);
            poa_hostlist_free(hosts, count);
            refused = 0;
        } else if (rc == 0) {
            poa_hostlist_free(hosts, count);
        }
    }
    CHECK("malformed hostlists are refused (or, empty, give no host)", refused, "see above");
}


static void member(poa_dist *d, int rank, int world, int port, double timeout) {
    poa_dist_single(d);
    d->rank = rank, d->world_size = world, d->master_port = port, d->timeout_seconds = timeout;
    snprintf(d->master_addr, sizeof d->master_addr, "localhost");
}

enum { FAIL_CONNECT = 1, FAIL_BROADCAST = 2, FAIL_FLOAT = 4, FAIL_DOUBLE = 8, FAIL_ORDER = 16,
       FAIL_MAX = 32, FAIL_BARRIER = 64 };

/* One rank of the three-process run; returns a mask of the failed checks. */
static int collectives(int rank, int port) {
    poa_dist d;
    poa_error e = { { 0 } };
    member(&d, rank, 3, port, 20);
    if (poa_dist_connect(&d, &e)) {
        fprintf(stderr, "rank %d: %s\n", rank, e.message);
        return FAIL_CONNECT;
    }
    int failed = 0;
    unsigned char blob[128];
    for (int i = 0; i < 128; i++) blob[i] = rank == 0 ? (unsigned char)(i * 7 + 3) : 0;
    if (poa_dist_broadcast(&d, blob, sizeof blob, &e)) failed |= FAIL_BROADCAST;
    for (int i = 0; i < 128 && !(failed & FAIL_BROADCAST); i++)
        if (blob[i] != (unsigned char)(i * 7 + 3)) failed |= FAIL_BROADCAST;
    /* 300,000 floats (1.2 MB: many partial sends) of exactly representable values. */
    const long n = 300000;
    float *f = malloc(sizeof(float) * (size_t)n);
    double *x = malloc(sizeof(double) * (size_t)n);
    for (long i = 0; i < n; i++) f[i] = (float)(rank + 1) * 0.5f + (float)(i % 1000);
    for (long i = 0; i < n; i++) x[i] = (rank + 1) * 0.25 + 2.0 * (double)i;
    if (poa_dist_all_reduce_float(&d, f, n, POA_DIST_SUM, &e)) failed |= FAIL_FLOAT;
    for (long i = 0; i < n && !(failed & FAIL_FLOAT); i++)
        if (f[i] != 3.0f + 3.0f * (float)(i % 1000)) failed |= FAIL_FLOAT;
    if (poa_dist_all_reduce_double(&d, x, n, POA_DIST_SUM, &e)) failed |= FAIL_DOUBLE;
    for (long i = 0; i < n && !(failed & FAIL_DOUBLE); i++)
        if (x[i] != 1.5 + 6.0 * (double)i) failed |= FAIL_DOUBLE;
    /* (1e16 + 1) - 1e16 = 0 in rank order; 1e16 - 1e16 + 1 = 1 in another order. */
    double order[1] = { rank == 0 ? 1e16 : rank == 1 ? 1.0 : -1e16 };
    float order_f[1] = { rank == 0 ? 1e8f : rank == 1 ? 1.0f : -1e8f };
    if (poa_dist_all_reduce_double(&d, order, 1, POA_DIST_SUM, &e) || order[0] != 0.0 ||
        poa_dist_all_reduce_float(&d, order_f, 1, POA_DIST_SUM, &e) || order_f[0] != 0.0f)
        failed |= FAIL_ORDER;
    double m[3] = { rank * 10.0, -rank, rank == 1 ? 5.0 : -5.0 };
    if (poa_dist_all_reduce_double(&d, m, 3, POA_DIST_MAX, &e) || m[0] != 20 || m[1] != 0 || m[2] != 5)
        failed |= FAIL_MAX;
    if (poa_dist_barrier(&d, &e)) failed |= FAIL_BARRIER;
    if (failed) fprintf(stderr, "rank %d: failed mask %d: %s\n", rank, failed, e.message);
    free(f), free(x);
    poa_dist_close(&d);
    return failed;
}

/* Runs fn(rank, port) in `world` forked processes; returns the OR of their results. */
static int run_ranks(int world, int port, int (*fn)(int rank, int port)) {
    pid_t pids[8];
    fflush(stdout);
    for (int r = 0; r < world; r++) {
        pids[r] = fork();
        if (pids[r] == 0) _exit(fn(r, port));
    }
    int mask = 0;
    for (int r = 0; r < world; r++) {
        int status = 0;
        waitpid(pids[r], &status, 0);
        mask |= WIFEXITED(status) ? WEXITSTATUS(status) : 255;
    }
    return mask;
}

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Rank 1 connects, then dies before the first collective. */
static int dies(int rank, int port) {
    poa_dist d;
    poa_error e = { { 0 } };
    member(&d, rank, 2, port, 20);
    if (poa_dist_connect(&d, &e)) return 1;
    if (rank == 1) _exit(0);
    float x[4] = { 1, 2, 3, 4 };
    int rc = poa_dist_all_reduce_float(&d, x, 4, POA_DIST_SUM, &e);
    poa_dist_close(&d);
    return rc != 0 && strstr(e.message, "rank 1 closed the connection") ? 0 : (fprintf(stderr, "%s\n", e.message), 1);
}

/* Rank 0 broadcasts then waits at a barrier while rank 1 all-reduces: rank 0 gets an error
   naming both collectives, rank 1 an error. */
static int disagree(int rank, int port) {
    poa_dist d;
    poa_error e = { { 0 } };
    member(&d, rank, 2, port, 20);
    if (poa_dist_connect(&d, &e)) return 1;
    double x[2] = { 1, 2 };
    int rc = rank == 0 ? poa_dist_broadcast(&d, x, sizeof x, &e) || poa_dist_barrier(&d, &e)
                       : poa_dist_all_reduce_double(&d, x, 2, POA_DIST_SUM, &e);
    poa_dist_close(&d);
    if (rc && (rank == 1 || strstr(e.message, "rank 1 is in an all-reduce (sum) of doubles of 16 bytes "
                                              "while rank 0 is in a barrier")))
        return 0;
    fprintf(stderr, "rank %d: rc %d: %s\n", rank, rc, e.message);
    return 1;
}

static void test_processes(void) {
    int mask = run_ranks(3, free_port(), collectives);
    CHECK("3 processes meet at MASTER_ADDR=localhost:<free port>", !(mask & FAIL_CONNECT), "mask %d", mask);
    CHECK("broadcast of 128 bytes from rank 0", !(mask & (FAIL_CONNECT | FAIL_BROADCAST)), "mask %d", mask);
    CHECK("all-reduce (sum) of 300000 floats, exact", !(mask & (FAIL_CONNECT | FAIL_FLOAT)), "mask %d", mask);
    CHECK("all-reduce (sum) of 300000 doubles, exact", !(mask & (FAIL_CONNECT | FAIL_DOUBLE)), "mask %d", mask);
    CHECK("all-reduce sums in rank order: (1e16 + 1) - 1e16 = 0 on every rank",
          !(mask & (FAIL_CONNECT | FAIL_ORDER)), "mask %d", mask);
    CHECK("all-reduce (max) of doubles, and a barrier", !(mask & (FAIL_CONNECT | FAIL_MAX | FAIL_BARRIER)),
          "mask %d", mask);

    /* Rank 0 alone: the others never arrive. */
    poa_dist d;
    poa_error e = { { 0 } };
    member(&d, 0, 3, free_port(), 0.5);
    double t0 = seconds_now();
    int rc = poa_dist_connect(&d, &e);
    double waited = seconds_now() - t0;
    CHECK("rank 0: peers that never arrive are an error after the timeout, naming them",
          rc != 0 && strstr(e.message, "missing rank(s) 1, 2") && strstr(e.message, "POA_DIST_TIMEOUT") &&
          waited < 5, "rc %d after %.1f s: %s", rc, waited, e.message);
    member(&d, 2, 3, free_port(), 0.5);
    t0 = seconds_now();
    rc = poa_dist_connect(&d, &e);
    waited = seconds_now() - t0;
    CHECK("rank 2: no rank 0 to reach is an error after the timeout, naming MASTER_ADDR and MASTER_PORT",
          rc != 0 && strstr(e.message, "cannot reach rank 0 at MASTER_ADDR=localhost MASTER_PORT=") && waited < 5,
          "rc %d after %.1f s: %s", rc, waited, e.message);
    CHECK("a peer that dies: the survivor gets an error, not a hang", run_ranks(2, free_port(), dies) == 0,
          "see stderr");
    CHECK("ranks in different collectives: an error naming both", run_ranks(2, free_port(), disagree) == 0,
          "see stderr");
    poa_dist_single(&d);
    float one[2] = { 1.5f, 2.5f };
    rc = poa_dist_all_reduce_float(&d, one, 2, POA_DIST_SUM, &e) || poa_dist_all_reduce_float(NULL, one, 2, POA_DIST_SUM, &e) ||
         poa_dist_barrier(&d, &e) || poa_dist_connect(&d, &e);
    CHECK("a world of one: collectives leave the data as it is", rc == 0 && one[0] == 1.5f && one[1] == 2.5f,
          "rc %d %g %g", rc, one[0], one[1]);
}

static void test_nccl(void) {
    poa_nccl n;
    poa_error e = { { 0 } };
    if (poa_nccl_load(&n, &e)) {
        CHECK_SKIP("NCCL loads through dlopen", e.message);
        CHECK_SKIP("NCCL communicator and all-reduce", "no NCCL library");
        return;
    }
    CHECK("NCCL loads through dlopen and reports its version", n.version >= 20000, "version %d", n.version);
    printf("  NCCL version %d\n", n.version);
    poa_nccl_id id;
    if (poa_nccl_unique_id(&n, &id, &e)) {
        printf("SKIP ncclGetUniqueId: %s (this NCCL needs more than this machine has)\n", e.message);
    } else {
        int nonzero = 0;
        for (int i = 0; i < POA_NCCL_UNIQUE_ID_BYTES; i++) nonzero |= id.internal[i];
        CHECK("ncclGetUniqueId gives an id", nonzero, "all zero");
    }
    poa_cuda cuda;
    poa_error why = { { 0 } };
    poa_dist d;
    poa_dist_single(&d);
    if (poa_cuda_open(&cuda, &why)) {
        if (cuda.no_gpu) {
            /* No GPU: making a communicator must fail, and say so. */
            int rc = poa_nccl_init(&n, &d, &e);
            CHECK("without a GPU, making an NCCL communicator is an error naming ncclCommInitRank",
                  rc != 0 && n.comm == NULL && strstr(e.message, "ncclCommInitRank failed"), "rc %d: %s", rc,
                  e.message);
            CHECK_SKIP("NCCL communicator and device all-reduce", why.message);
        } else {
            CHECK("the GPU opens", 0, "%s", why.message);
        }
        poa_nccl_close(&n);
        return;
    }
    const long count = 1000;
    float host[1000], back[1000];
    for (long i = 0; i < count; i++) host[i] = (float)i * 0.5f;
    CUdeviceptr x = 0;
    int rc = poa_nccl_init(&n, &d, &e) || poa_cuda_alloc(&cuda, &x, sizeof host, &e) ||
             poa_cuda_copy_to_device_async(&cuda, x, host, sizeof host, &e) ||
             poa_nccl_all_reduce(&n, x, x, (size_t)count, POA_NCCL_FLOAT32, POA_DIST_SUM, cuda.stream, &e) ||
             poa_cuda_copy_to_host_async(&cuda, back, x, sizeof back, &e) || poa_cuda_synchronize(&cuda, &e);
    CHECK("NCCL one-rank communicator: in-place fp32 all-reduce on the GPU",
          rc == 0 && memcmp(host, back, sizeof host) == 0, "rc %d: %s", rc, e.message);
    if (x) poa_cuda_free(&cuda, x, &e);
    poa_nccl_close(&n);
    poa_cuda_close(&cuda);
}

int main(void) {
    test_environment();
    test_hostlists();
    test_processes();
    test_nccl();
    CHECK_EXIT();
}
