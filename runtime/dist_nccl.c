/* dist_nccl.c: NCCL through dlopen("libnccl.so.2"), never linked (see dist.h): loading, the
   unique id shared over the TCP rendezvous, the communicator and the device all-reduce. */
#include "dist.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Values from nccl.h, spelled here so this file builds without it; checked against it when
   the toolkit is there. */
enum { NCCL_SUCCESS = 0, NCCL_SUM = 0, NCCL_MAX = 2, NCCL_FLOAT32 = 7, NCCL_FLOAT64 = 8, NCCL_BFLOAT16 = 9 };

#ifdef POA_HAVE_NVRTC
#include <nccl.h>
#define SAME(ours, theirs) _Static_assert((int)(ours) == (int)(theirs), #theirs)
SAME(NCCL_SUCCESS, ncclSuccess);
SAME(NCCL_SUM, ncclSum);
SAME(NCCL_MAX, ncclMax);
SAME(NCCL_FLOAT64, ncclFloat64);
SAME(NCCL_FLOAT32, ncclFloat32);
SAME(NCCL_BFLOAT16, ncclBfloat16);
SAME(POA_NCCL_UNIQUE_ID_BYTES, NCCL_UNIQUE_ID_BYTES);
_Static_assert(sizeof(poa_nccl_id) == sizeof(ncclUniqueId), "ncclUniqueId");
#endif

/* "NCCL error N (text)" for a failed call. */
static int nccl_fail(const poa_nccl *n, poa_error *e, const char *call, int result) {
    const char *text = n->error_string ? n->error_string(result) : NULL;
    return poa_fail(e, "%s failed: NCCL error %d (%s)", call, result, text ? text : "no description");
}

int poa_nccl_load(poa_nccl *n, poa_error *e) {
    memset(n, 0, sizeof *n);
    const char *path = getenv("POA_NCCL_LIBRARY");
    if (path && !*path) return poa_fail(e, "POA_NCCL_LIBRARY is empty");
    if (!path) path = "libnccl.so.2";
    n->library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!n->library) {
        const char *why = dlerror();
        return poa_fail(e, "cannot load NCCL (%s%s): %s", path,
                        getenv("POA_NCCL_LIBRARY") ? ", from POA_NCCL_LIBRARY" : "",
                        why ? why : "unknown error");
    }
    struct { void **slot; const char *name; } symbols[] = {
        { (void **)&n->get_version, "ncclGetVersion" },
        { (void **)&n->get_unique_id, "ncclGetUniqueId" },
        { (void **)&n->comm_init_rank, "ncclCommInitRank" },
        { (void **)&n->all_reduce, "ncclAllReduce" },
        { (void **)&n->comm_destroy, "ncclCommDestroy" },
        { (void **)&n->error_string, "ncclGetErrorString" },
    };
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        *symbols[i].slot = dlsym(n->library, symbols[i].name);
        if (!*symbols[i].slot) {
            poa_fail(e, "%s has no %s (NCCL too old?)", path, symbols[i].name);
            poa_nccl_close(n);
            return -1;
        }
    }
    int rc = n->get_version(&n->version);
    if (rc != NCCL_SUCCESS) {
        nccl_fail(n, e, "ncclGetVersion", rc);
        poa_nccl_close(n);
        return -1;
    }
    return 0;
}

int poa_nccl_unique_id(poa_nccl *n, poa_nccl_id *id, poa_error *e) {
    if (!n->library) return poa_fail(e, "NCCL is not loaded");
    memset(id, 0, sizeof *id);
    int rc = n->get_unique_id(id);
    return rc == NCCL_SUCCESS ? 0 : nccl_fail(n, e, "ncclGetUniqueId", rc);
}

int poa_nccl_init(poa_nccl *n, poa_dist *d, poa_error *e) {
    if (!n->library) return poa_fail(e, "NCCL is not loaded");
    if (n->comm) return poa_fail(e, "rank %d: NCCL communicator already made", d->rank);
    poa_nccl_id id;
    memset(&id, 0, sizeof id);
    if (d->rank == 0 && poa_nccl_unique_id(n, &id, e)) {
        /* the others wait for the id: tell them there is none (an all-zero id) */
        poa_nccl_id none;
        memset(&none, 0, sizeof none);
        poa_error ignored;
        poa_dist_broadcast(d, &none, sizeof none, &ignored);
        return -1;
    }
    if (poa_dist_broadcast(d, &id, sizeof id, e)) return -1;
    static const poa_nccl_id zero;
    if (memcmp(&id, &zero, sizeof id) == 0)
        return poa_fail(e, "rank %d: rank 0 could not make an NCCL unique id (see its error)", d->rank);
    int rc = n->comm_init_rank(&n->comm, d->world_size, id, d->rank);
    if (rc != NCCL_SUCCESS) {
        n->comm = NULL;
        poa_error why = { { 0 } };
        nccl_fail(n, &why, "ncclCommInitRank", rc);
        return poa_fail(e, "rank %d of %d (local rank %d): %s", d->rank, d->world_size,
                        d->local_rank, why.message);
    }
    return 0;
}

int poa_nccl_all_reduce(poa_nccl *n, unsigned long long send, unsigned long long recv, size_t count,
                        poa_nccl_type type, poa_dist_op op, void *stream, poa_error *e) {
    if (!n->comm) return poa_fail(e, "NCCL all-reduce without a communicator (poa_nccl_init)");
    if (type != POA_NCCL_FLOAT32 && type != POA_NCCL_BFLOAT16 && type != POA_NCCL_FLOAT64)
        return poa_fail(e, "NCCL all-reduce: unknown type %d", (int)type);
    if (op != POA_DIST_SUM && op != POA_DIST_MAX) return poa_fail(e, "NCCL all-reduce: unknown op %d", (int)op);
    int nccl_type = type == POA_NCCL_FLOAT32 ? NCCL_FLOAT32 : type == POA_NCCL_FLOAT64 ? NCCL_FLOAT64 : NCCL_BFLOAT16;
    int rc = n->all_reduce((const void *)(uintptr_t)send, (void *)(uintptr_t)recv, count, nccl_type,
                           op == POA_DIST_SUM ? NCCL_SUM : NCCL_MAX, n->comm, stream);
    return rc == NCCL_SUCCESS ? 0 : nccl_fail(n, e, "ncclAllReduce", rc);
}

void poa_nccl_close(poa_nccl *n) {
    if (n->comm && n->comm_destroy) n->comm_destroy(n->comm);
    /* The library stays loaded: ncclGetUniqueId and a failed ncclCommInitRank leave NCCL's own
       threads running (its bootstrap), and unmapping their code under them crashed the process
       at exit (8 runs in 30 of test_dist). */
    memset(n, 0, sizeof *n);
}
