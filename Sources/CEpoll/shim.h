#ifndef CEPOLL_SHIM_H
#define CEPOLL_SHIM_H
#ifdef __linux__
// Swift's Glibc module does not export epoll or eventfd, and builds <sys/socket.h> without
// _GNU_SOURCE, so accept4(2) is declared here with its glibc prototype.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
extern int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags);
#endif
#endif
