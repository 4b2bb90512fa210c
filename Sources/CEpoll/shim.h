#ifndef CEPOLL_SHIM_H
#define CEPOLL_SHIM_H
#ifdef __linux__
// Swift's Glibc module does not export epoll, eventfd or <malloc.h>, and builds <sys/socket.h> and <poll.h>
// without _GNU_SOURCE, so accept4(2), ppoll(2) and POLLRDHUP are declared here as glibc has them.
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
extern int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags);
extern int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo_p, const sigset_t *sigmask);
static const short CEPOLL_POLLRDHUP = 0x2000;
#endif
#endif
