/* free_port.h: a loopback TCP port that was free a moment ago, for the tests that start ranks
   meeting at MASTER_ADDR=127.0.0.1 (test_dist.c, test_dist_train.c). */
#ifndef POA_TEST_FREE_PORT_H
#define POA_TEST_FREE_PORT_H

#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static inline int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET, a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len)) {
        if (fd >= 0) close(fd);
        return 29500 + (int)(getpid() % 1000);
    }
    close(fd);
    return ntohs(a.sin_port);
}

#endif
