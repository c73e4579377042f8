/* dist.h: data parallelism across processes (DESIGN.md "Many machines").
   Who this process is comes from the environment, the way torchrun and Slurm users expect
   (poa_dist_from_env, runtime/dist_env.c). The processes then meet over TCP at
   MASTER_ADDR:MASTER_PORT (rank 0 listens, the others connect; runtime/dist.c), and that
   connection carries small host collectives: a broadcast from rank 0 (how the NCCL unique id
   is shared), a barrier, and all-reduces of host float and double arrays (what the CPU
   backend trains with). Device all-reduces go through NCCL, loaded with dlopen (never
   linked; runtime/dist_nccl.c).

   Every collective must be called by every rank in the same order with the same sizes; a
   mismatch is detected and reported, a peer that dies or stops answering for
   timeout_seconds is an error, never a hang. A NULL poa_dist, or a world of 1, makes every
   collective a no-op that leaves the data as it is. */
#ifndef POA_DIST_H
#define POA_DIST_H

#include <stddef.h>

#include "error.h"

typedef enum poa_dist_op { POA_DIST_SUM, POA_DIST_MAX } poa_dist_op;

typedef struct poa_dist {
    int rank, world_size, local_rank;
    int local_world_size;   /* processes on this machine: LOCAL_WORLD_SIZE (torchrun), else 1 */
    char master_addr[256];  /* empty when world_size is 1 and MASTER_ADDR is unset */
    int master_port;        /* MASTER_PORT, 29500 when unset */
    char source[16];        /* "torchrun", "slurm" or "single": where rank and world came from */
    double timeout_seconds; /* POA_DIST_TIMEOUT, 1800 when unset: connecting and waiting on peers */
    /* The connection (after poa_dist_connect): rank 0 holds a socket per peer (peers[r] for
       rank r >= 1), every other rank one socket to rank 0 (peers[0]). */
    int *peers;
    void *scratch; /* rank 0: one peer's contribution to an all-reduce */
    size_t scratch_size;
} poa_dist;

/* Reads, in this order of precedence:
   torchrun: RANK, WORLD_SIZE (both required once either is set), LOCAL_RANK (default 0),
             LOCAL_WORLD_SIZE (default 1; LOCAL_RANK must be below it);
   Slurm:    SLURM_PROCID, SLURM_NTASKS (or SLURM_NPROCS), SLURM_LOCALID (default 0), and,
             when MASTER_ADDR is unset, the first host of SLURM_JOB_NODELIST (or SLURM_NODELIST);
   otherwise a single process (rank 0 of 1).
   MASTER_ADDR (required when the world has more than one process), MASTER_PORT (default
   29500), POA_DIST_TIMEOUT (seconds, default 1800). A malformed or inconsistent value is an
   error naming the variable. Connects nothing. */
int poa_dist_from_env(poa_dist *d, poa_error *e);

/* A single process: rank 0 of 1 (what poa_dist_from_env gives with no variable set). */
void poa_dist_single(poa_dist *d);

/* Expands a Slurm hostlist ("gpu[01-04,07],login1", "r[1-2]-n[1,3]") into its hosts in
   order; *hosts is a malloc'd array of malloc'd names (free with poa_hostlist_free). */
int poa_hostlist_expand(const char *list, char ***hosts, int *count, poa_error *e);
void poa_hostlist_free(char **hosts, int count);

/* The TCP rendezvous: rank 0 listens on MASTER_PORT (every interface) and waits for the
   others, which retry connecting to MASTER_ADDR:MASTER_PORT; both give up after
   timeout_seconds with an error naming the address and the missing ranks. Nothing to do
   for a world of 1. */
int poa_dist_connect(poa_dist *d, poa_error *e);
void poa_dist_close(poa_dist *d);

/* Copies rank 0's `size` bytes of data into every rank's data. */
int poa_dist_broadcast(poa_dist *d, void *data, size_t size, poa_error *e);
/* Returns once every rank has entered it. */
int poa_dist_barrier(poa_dist *d, poa_error *e);
/* x[i] = op over ranks of x[i], combined on rank 0 in rank order ((x_0 + x_1) + x_2 ...) and
   sent back, so every rank gets the same bits and the result does not depend on timing. */
int poa_dist_all_reduce_float(poa_dist *d, float *x, long n, poa_dist_op op, poa_error *e);
int poa_dist_all_reduce_double(poa_dist *d, double *x, long n, poa_dist_op op, poa_error *e);

/* NCCL through dlopen("libnccl.so.2") (runtime/dist_nccl.c). Device memory is passed as
   CUdeviceptr values (unsigned long long) and the stream as a CUstream (void *), so that
   this header needs no CUDA header. */
typedef enum poa_nccl_type { POA_NCCL_FLOAT32, POA_NCCL_BFLOAT16, POA_NCCL_FLOAT64 } poa_nccl_type;

enum { POA_NCCL_UNIQUE_ID_BYTES = 128 };
/* ncclUniqueId's layout (nccl.h: struct { char internal[NCCL_UNIQUE_ID_BYTES]; }). */
typedef struct poa_nccl_id {
    char internal[POA_NCCL_UNIQUE_ID_BYTES];
} poa_nccl_id;

typedef struct poa_nccl {
    void *library;
    int version; /* ncclGetVersion: major * 10000 + minor * 100 + patch (NCCL >= 2.9) */
    void *comm;  /* ncclComm_t after poa_nccl_init */
    /* The entry points, as nccl.h declares them (enums as int, ncclComm_t as void *). */
    int (*get_version)(int *version);
    int (*get_unique_id)(poa_nccl_id *id);
    int (*comm_init_rank)(void **comm, int ranks, poa_nccl_id id, int rank);
    int (*all_reduce)(const void *send, void *recv, size_t count, int type, int op, void *comm,
                      void *stream);
    int (*comm_destroy)(void *comm);
    const char *(*error_string)(int result);
} poa_nccl;

/* Loads libnccl.so.2 (or $POA_NCCL_LIBRARY) and resolves what poa uses; fills version. */
int poa_nccl_load(poa_nccl *n, poa_error *e);
/* ncclGetUniqueId: the 128-byte id that names a new communicator. */
int poa_nccl_unique_id(poa_nccl *n, poa_nccl_id *id, poa_error *e);
/* A communicator over the dist's world: rank 0 gets a unique id and broadcasts it over the
   rendezvous (poa_dist_connect first), every rank calls ncclCommInitRank. The CUDA context
   of this rank's GPU (normally device LOCAL_RANK) must be current on the calling thread. */
int poa_nccl_init(poa_nccl *n, poa_dist *d, poa_error *e);
/* In-place when send == recv; count elements of type, summed or maxed; enqueued on stream. */
int poa_nccl_all_reduce(poa_nccl *n, unsigned long long send, unsigned long long recv, size_t count,
                        poa_nccl_type type, poa_dist_op op, void *stream, poa_error *e);
/* Destroys the communicator (if any); the library stays loaded (NCCL's threads may outlive it). */
void poa_nccl_close(poa_nccl *n);

#endif
