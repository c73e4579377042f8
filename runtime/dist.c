/* dist.c: the TCP rendezvous at MASTER_ADDR:MASTER_PORT and the host collectives over it
   (see dist.h; who this process is comes from dist_env.c).

   The wire: every message starts with a header (magic, kind, byte count); a receiver checks
   that the kind and size are the ones it expects, so ranks that disagree on the order of
   collectives get an error naming both sides instead of garbage. Values travel in the host's
   byte order (every machine of one run is assumed to share it). Rank 0 is the hub: it
   gathers every contribution in rank order, combines and sends the result back. */
#include "dist.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MAGIC = 0x706f6164 /* "poad" */, HELLO = 1, WELCOME = 2, BROADCAST = 3, BARRIER = 4,
       REDUCE = 16 /* + 2 * is_double + op */ };

typedef struct header {
    uint32_t magic, kind;
    uint64_t bytes;
} header;

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Waits until fd is ready for events or the deadline passes: 1 ready, 0 timed out, -1 error. */
static int wait_ready(int fd, short events, double deadline) {
    for (;;) {
        double left = deadline - now_seconds();
        if (left <= 0) return 0;
        struct pollfd p = { fd, events, 0 };
        int ms = left > 1e6 ? 1000000000 : (int)(left * 1000) + 1;
        int rc = poll(&p, 1, ms);
        if (rc > 0) return 1;
        if (rc < 0 && errno != EINTR) return -1;
    }
}

static const char *kind_name(uint32_t kind) {
    static const char *reduce[] = { "an all-reduce (sum) of floats", "an all-reduce (max) of floats",
                                    "an all-reduce (sum) of doubles", "an all-reduce (max) of doubles" };
    switch (kind) {
    case HELLO: return "a hello";
    case WELCOME: return "a welcome";
    case BROADCAST: return "a broadcast";
    case BARRIER: return "a barrier";
    default: return kind >= REDUCE && kind < REDUCE + 4 ? reduce[kind - REDUCE] : "an unknown message";
    }
}

static int peer_gone(const poa_dist *d, int peer, poa_error *e) {
    return poa_fail(e, "rank %d: rank %d closed the connection (did it exit or fail?)", d->rank, peer);
}

static int send_all(const poa_dist *d, int peer, const void *data, size_t size, poa_error *e) {
    const char *p = data;
    int fd = d->peers[peer];
    double deadline = now_seconds() + d->timeout_seconds;
    while (size > 0) {
        ssize_t n = send(fd, p, size, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p += n, size -= (size_t)n;
            deadline = now_seconds() + d->timeout_seconds;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int ready = wait_ready(fd, POLLOUT, deadline);
            if (ready > 0) continue;
            if (ready == 0)
                return poa_fail(e, "rank %d: rank %d took no data for %.0f s (POA_DIST_TIMEOUT)",
                                d->rank, peer, d->timeout_seconds);
        }
        if (errno == EPIPE || errno == ECONNRESET) return peer_gone(d, peer, e);
        return poa_fail(e, "rank %d: sending to rank %d: %s", d->rank, peer, strerror(errno));
    }
    return 0;
}

static int recv_all(const poa_dist *d, int peer, void *data, size_t size, poa_error *e) {
    char *p = data;
    int fd = d->peers[peer];
    double deadline = now_seconds() + d->timeout_seconds;
    while (size > 0) {
        ssize_t n = recv(fd, p, size, MSG_DONTWAIT);
        if (n > 0) {
            p += n, size -= (size_t)n;
            deadline = now_seconds() + d->timeout_seconds;
            continue;
        }
        if (n == 0 || errno == ECONNRESET) return peer_gone(d, peer, e);
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int ready = wait_ready(fd, POLLIN, deadline);
            if (ready > 0) continue;
            if (ready == 0)
                return poa_fail(e, "rank %d: waited %.0f s for rank %d (POA_DIST_TIMEOUT)", d->rank,
                                d->timeout_seconds, peer);
        }
        return poa_fail(e, "rank %d: receiving from rank %d: %s", d->rank, peer, strerror(errno));
    }
    return 0;
}

static int send_header(const poa_dist *d, int peer, uint32_t kind, uint64_t bytes, poa_error *e) {
    header h = { MAGIC, kind, bytes };
    return send_all(d, peer, &h, sizeof h, e);
}

/* Receives a header and checks that it is `kind` with `bytes`. */
static int expect_header(const poa_dist *d, int peer, uint32_t kind, uint64_t bytes, poa_error *e) {
    header h;
    if (recv_all(d, peer, &h, sizeof h, e)) return -1;
    if (h.magic != MAGIC)
        return poa_fail(e, "rank %d: rank %d sent something that is not poa's protocol", d->rank, peer);
    if (h.kind != kind || h.bytes != bytes)
        return poa_fail(e, "rank %d is in %s of %llu bytes while rank %d is in %s of %llu bytes "
                           "(the ranks run different steps or configurations)",
                        peer, kind_name(h.kind), (unsigned long long)h.bytes, d->rank,
                        kind_name(kind), (unsigned long long)bytes);
    return 0;
}

static void set_socket_options(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Rank 0: listens on every interface (IPv6 with IPv4 mapped, else IPv4). */
static int listen_socket(const poa_dist *d, poa_error *e) {
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, zero = 0;
    if (fd >= 0) {
        struct sockaddr_in6 a;
        memset(&a, 0, sizeof a);
        a.sin6_family = AF_INET6, a.sin6_addr = in6addr_any, a.sin6_port = htons((uint16_t)d->master_port);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 128) == 0) return fd;
        if (errno == EADDRINUSE) goto in_use;
        close(fd);
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET, a.sin_addr.s_addr = htonl(INADDR_ANY), a.sin_port = htons((uint16_t)d->master_port);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 128) == 0) return fd;
    }
in_use:;
    int why = errno;
    if (fd >= 0) close(fd);
    poa_fail(e, "rank 0: cannot listen on MASTER_PORT=%d: %s", d->master_port, strerror(why));
    return -1;
}

/* Rank 0: accepts world - 1 peers, each saying hello with its rank, then welcomes them. */
static int accept_peers(poa_dist *d, poa_error *e) {
    int listener = listen_socket(d, e);
    if (listener < 0) return -1;
    fcntl(listener, F_SETFL, fcntl(listener, F_GETFL) | O_NONBLOCK);
    double deadline = now_seconds() + d->timeout_seconds;
    int arrived = 1, rc = 0;
    while (arrived < d->world_size && rc == 0) {
        int ready = wait_ready(listener, POLLIN, deadline);
        if (ready <= 0) {
            char missing[256] = "";
            size_t at = 0;
            for (int r = 1; r < d->world_size && at + 16 < sizeof missing; r++)
                if (d->peers[r] < 0) at += (size_t)snprintf(missing + at, sizeof missing - at, "%s%d", at ? ", " : "", r);
            rc = poa_fail(e, "rank 0: only %d of WORLD_SIZE=%d processes arrived at port %d within "
                             "%.0f s (POA_DIST_TIMEOUT); missing rank(s) %s",
                          arrived, d->world_size, d->master_port, d->timeout_seconds, missing);
            break;
        }
        int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) continue;
            rc = poa_fail(e, "rank 0: accept on port %d: %s", d->master_port, strerror(errno));
            break;
        }
        set_socket_options(fd);
        /* Read the hello on a temporary slot: the peer's rank is not known yet. */
        uint32_t hello[2];
        d->peers[0] = fd;
        rc = expect_header(d, 0, HELLO, sizeof hello, e);
        if (rc == 0) rc = recv_all(d, 0, hello, sizeof hello, e);
        d->peers[0] = -1;
        if (rc) {
            close(fd);
            break;
        }
        if (hello[1] != (uint32_t)d->world_size || hello[0] == 0 || hello[0] >= (uint32_t)d->world_size ||
            d->peers[hello[0]] >= 0) {
            close(fd);
            rc = poa_fail(e, "rank 0: a process says it is rank %u of %u, but this world has %d "
                             "processes%s (check RANK and WORLD_SIZE on every node)",
                          hello[0], hello[1], d->world_size,
                          hello[0] && hello[0] < (uint32_t)d->world_size && d->peers[hello[0]] >= 0
                              ? " and that rank is already here" : "");
            break;
        }
        d->peers[hello[0]] = fd;
        arrived++;
    }
    close(listener);
    for (int r = 1; r < d->world_size && rc == 0; r++) rc = send_header(d, r, WELCOME, 0, e);
    return rc;
}

/* One connection attempt to every address of MASTER_ADDR: the socket, or -1 (errno set). */
static int try_connect(const poa_dist *d, double deadline, int *resolve_error) {
    char port[16];
    snprintf(port, sizeof port, "%d", d->master_port);
    struct addrinfo hints, *list = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC, hints.ai_socktype = SOCK_STREAM;
    *resolve_error = getaddrinfo(d->master_addr, port, &hints, &list);
    if (*resolve_error) return -1;
    int fd = -1, why = ECONNREFUSED;
    for (struct addrinfo *a = list; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) { why = errno; continue; }
        int rc = connect(fd, a->ai_addr, a->ai_addrlen);
        if (rc < 0 && errno == EINPROGRESS) {
            double until = now_seconds() + 2 < deadline ? now_seconds() + 2 : deadline;
            int soerr = ETIMEDOUT;
            socklen_t len = sizeof soerr;
            if (wait_ready(fd, POLLOUT, until) > 0) getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
            rc = soerr ? -1 : 0;
            errno = soerr;
        }
        if (rc < 0) {
            why = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(list);
    errno = why;
    return fd;
}

/* Ranks 1..: connect to rank 0 with retries, say hello, wait for the welcome. */
static int join_master(poa_dist *d, poa_error *e) {
    double deadline = now_seconds() + d->timeout_seconds;
    int fd = -1, resolve_error = 0, why = 0;
    while ((fd = try_connect(d, deadline, &resolve_error)) < 0 && now_seconds() < deadline) {
        why = errno;
        struct timespec pause = { 0, 100 * 1000 * 1000 };
        nanosleep(&pause, NULL);
    }
    if (fd < 0) {
        if (resolve_error)
            return poa_fail(e, "rank %d: cannot resolve MASTER_ADDR=%s: %s", d->rank, d->master_addr,
                            gai_strerror(resolve_error));
        return poa_fail(e, "rank %d: cannot reach rank 0 at MASTER_ADDR=%s MASTER_PORT=%d within "
                           "%.0f s (POA_DIST_TIMEOUT): %s", d->rank, d->master_addr, d->master_port,
                        d->timeout_seconds, strerror(why ? why : errno));
    }
    set_socket_options(fd);
    d->peers[0] = fd;
    uint32_t hello[2] = { (uint32_t)d->rank, (uint32_t)d->world_size };
    if (send_header(d, 0, HELLO, sizeof hello, e) || send_all(d, 0, hello, sizeof hello, e)) return -1;
    poa_error why_not = { { 0 } };
    if (expect_header(d, 0, WELCOME, 0, &why_not))
        return poa_fail(e, "rank %d: connected to rank 0 at %s:%d, but the rendezvous did not "
                           "complete: %s", d->rank, d->master_addr, d->master_port, why_not.message);
    return 0;
}

int poa_dist_connect(poa_dist *d, poa_error *e) {
    if (d->world_size <= 1) return 0;
    if (d->peers) return poa_fail(e, "rank %d: already connected", d->rank);
    d->peers = malloc(sizeof(int) * (size_t)d->world_size);
    if (!d->peers) return poa_fail(e, "out of memory");
    for (int r = 0; r < d->world_size; r++) d->peers[r] = -1;
    int rc = d->rank == 0 ? accept_peers(d, e) : join_master(d, e);
    if (rc) poa_dist_close(d);
    return rc;
}

void poa_dist_close(poa_dist *d) {
    if (d->peers)
        for (int r = 0; r < d->world_size; r++)
            if (d->peers[r] >= 0) close(d->peers[r]);
    free(d->peers);
    free(d->scratch);
    d->peers = NULL, d->scratch = NULL, d->scratch_size = 0;
}

/* ---- collectives ---- */

static int single(const poa_dist *d, poa_error *e) {
    if (!d || d->world_size <= 1) return 1;
    if (!d->peers) {
        poa_fail(e, "rank %d: a collective before poa_dist_connect", d->rank);
        return -1;
    }
    return 0;
}

int poa_dist_broadcast(poa_dist *d, void *data, size_t size, poa_error *e) {
    int s = single(d, e);
    if (s) return s > 0 ? 0 : -1;
    if (d->rank != 0) return expect_header(d, 0, BROADCAST, size, e) || recv_all(d, 0, data, size, e) ? -1 : 0;
    for (int r = 1; r < d->world_size; r++)
        if (send_header(d, r, BROADCAST, size, e) || send_all(d, r, data, size, e)) return -1;
    return 0;
}

int poa_dist_barrier(poa_dist *d, poa_error *e) {
    int s = single(d, e);
    if (s) return s > 0 ? 0 : -1;
    if (d->rank != 0) return send_header(d, 0, BARRIER, 0, e) || expect_header(d, 0, BARRIER, 0, e) ? -1 : 0;
    for (int r = 1; r < d->world_size; r++)
        if (expect_header(d, r, BARRIER, 0, e)) return -1;
    for (int r = 1; r < d->world_size; r++)
        if (send_header(d, r, BARRIER, 0, e)) return -1;
    return 0;
}

/* The all-reduce of n values of `size` bytes: peers send theirs and receive the result;
   rank 0 combines each peer's values into x in rank order with `combine`. */
static int all_reduce(poa_dist *d, void *x, long n, size_t size, uint32_t kind,
                      void (*combine)(void *x, const void *y, long n, poa_dist_op op), poa_dist_op op,
                      poa_error *e) {
    int s = single(d, e);
    if (s) return s > 0 ? 0 : -1;
    if (n < 0) return poa_fail(e, "all-reduce of %ld values", n);
    const size_t bytes = (size_t)n * size;
    if (d->rank != 0)
        return send_header(d, 0, kind, bytes, e) || send_all(d, 0, x, bytes, e) ||
               expect_header(d, 0, kind, bytes, e) || recv_all(d, 0, x, bytes, e) ? -1 : 0;
    if (d->scratch_size < bytes) {
        free(d->scratch);
        d->scratch = malloc(bytes);
        d->scratch_size = d->scratch ? bytes : 0;
        if (!d->scratch) return poa_fail(e, "rank 0: out of memory for an all-reduce of %zu bytes", bytes);
    }
    for (int r = 1; r < d->world_size; r++) {
        if (expect_header(d, r, kind, bytes, e) || recv_all(d, r, d->scratch, bytes, e)) return -1;
        combine(x, d->scratch, n, op);
    }
    for (int r = 1; r < d->world_size; r++)
        if (send_header(d, r, kind, bytes, e) || send_all(d, r, x, bytes, e)) return -1;
    return 0;
}

static void combine_float(void *x, const void *y, long n, poa_dist_op op) {
    float *a = x;
    const float *b = y;
    if (op == POA_DIST_MAX)
        for (long i = 0; i < n; i++) a[i] = b[i] > a[i] ? b[i] : a[i];
    else
        for (long i = 0; i < n; i++) a[i] += b[i];
}

static void combine_double(void *x, const void *y, long n, poa_dist_op op) {
    double *a = x;
    const double *b = y;
    if (op == POA_DIST_MAX)
        for (long i = 0; i < n; i++) a[i] = b[i] > a[i] ? b[i] : a[i];
    else
        for (long i = 0; i < n; i++) a[i] += b[i];
}

int poa_dist_all_reduce_float(poa_dist *d, float *x, long n, poa_dist_op op, poa_error *e) {
    return all_reduce(d, x, n, sizeof(float), REDUCE + (op == POA_DIST_MAX), combine_float, op, e);
}

int poa_dist_all_reduce_double(poa_dist *d, double *x, long n, poa_dist_op op, poa_error *e) {
    return all_reduce(d, x, n, sizeof(double), REDUCE + 2 + (op == POA_DIST_MAX), combine_double, op, e);
}
