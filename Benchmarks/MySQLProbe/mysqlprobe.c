// An experiment, not part of the product: how fast can a minimal server answer GET /requests/request/<queue>/<n>
// from MySQL on this machine? The same prepared SELECT and the same JSON body as stovepipe, with no logging, no
// metrics and a bare-bones HTTP parser, in one of two designs:
//   event    each thread runs one epoll loop over its HTTP connections and its own MySQL connections, driven by
//            MariaDB Connector/C's non-blocking _start/_cont calls (SO_REUSEPORT spreads connections over threads)
//   blocking a thread per HTTP connection with its own blocking MySQL connection (stovepipe's model once a worker
//            holds a keep-alive connection)
// scripts/bench-mysql runs it next to the API when BENCH_PROBES=1 (see BENCHMARKS.md).
//   mysqlprobe event|blocking PORT MYSQL_HOST MYSQL_PORT USER PASSWORD DATABASE [THREADS CONNECTIONS_PER_THREAD]
#define _GNU_SOURCE
#include <mysql.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <errno.h>
#include <time.h>

static const char *g_host, *g_user, *g_pass, *g_db;
static int g_myport, g_port, g_conns;

#define MAXC 4096
#define TAG_MYSQL (1ULL << 63)

typedef struct {
    int fd;
    char in[4096];
    int inlen;
    int waiting; // a complete request is waiting for a mysql connection
    char queue[256];
    unsigned long long n;
} Http;

typedef struct {
    MYSQL *mysql;
    MYSQL_STMT *stmt;
    int fd;
    int phase; // 0 idle, 1 executing, 2 storing
    int http;  // http fd served
    MYSQL_BIND params[2];
    char pqueue[256];
    unsigned long pqueue_len;
    unsigned long long pn;
    MYSQL_BIND results[9];
    char buf[9][600];
    unsigned long len[9];
    my_bool isnull[9];
    unsigned long long n_out, version_out;
    int registered;
} My;

typedef struct {
    int ep;
    Http *http[MAXC];
    My *my;
    int nmy;
    int waitq[MAXC];
    int wq_head, wq_tail;
} Loop;

static void die(const char *m) { perror(m); exit(1); }

// A listening socket on 127.0.0.1:g_port; SO_REUSEPORT lets every event thread listen on the same port.
static int listener(int flags) {
    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM | flags, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(g_port), .sin_addr.s_addr = inet_addr("127.0.0.1")};
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(lfd, 1024) < 0) die("listen");
    return lfd;
}

static void setup_my(My *m, int nonblocking) {
    m->mysql = mysql_init(NULL);
    // Connector/C: MYSQL_OPT_NONBLOCK before connecting enables the _start/_cont calls on this handle.
    if (nonblocking) mysql_options(m->mysql, MYSQL_OPT_NONBLOCK, 0);
#ifdef PROBE_TIMEOUTS
    // Stovepipe's defaults: Connector/C then waits for each reply in poll() with a timeout.
    unsigned int seconds = 30;
    mysql_options(m->mysql, MYSQL_OPT_READ_TIMEOUT, &seconds);
    mysql_options(m->mysql, MYSQL_OPT_WRITE_TIMEOUT, &seconds);
#endif
    if (!mysql_real_connect(m->mysql, g_host, g_user, g_pass, g_db, g_myport, NULL, 0)) {
        fprintf(stderr, "connect: %s\n", mysql_error(m->mysql));
        exit(1);
    }
    m->fd = mysql_get_socket(m->mysql);
    m->stmt = mysql_stmt_init(m->mysql);
    const char *sql = "SELECT queue, n, uri, state, build_strategy, base_uri, version, created_at, updated_at "
                      "FROM requests WHERE queue = ? AND n = ?";
    if (mysql_stmt_prepare(m->stmt, sql, strlen(sql))) { fprintf(stderr, "prepare: %s\n", mysql_stmt_error(m->stmt)); exit(1); }
    memset(m->params, 0, sizeof m->params);
    m->params[0].buffer_type = MYSQL_TYPE_STRING;
    m->params[0].buffer = m->pqueue;
    m->params[0].length = &m->pqueue_len;
    m->params[1].buffer_type = MYSQL_TYPE_LONGLONG;
    m->params[1].buffer = &m->pn;
    m->params[1].is_unsigned = 1;
    mysql_stmt_bind_param(m->stmt, m->params);
    memset(m->results, 0, sizeof m->results);
    for (int c = 0; c < 9; c++) {
        m->results[c].buffer_type = MYSQL_TYPE_STRING;
        m->results[c].buffer = m->buf[c];
        m->results[c].buffer_length = sizeof m->buf[c];
        m->results[c].length = &m->len[c];
        m->results[c].is_null = &m->isnull[c];
    }
    m->results[1].buffer_type = MYSQL_TYPE_LONGLONG;
    m->results[1].buffer = &m->n_out;
    m->results[1].is_unsigned = 1;
    m->results[6].buffer_type = MYSQL_TYPE_LONGLONG;
    m->results[6].buffer = &m->version_out;
    m->results[6].is_unsigned = 1;
    mysql_stmt_bind_result(m->stmt, m->results);
}
// Calibration, to price what stovepipe does more than the probe (BENCHMARKS.md, session 11): one of these at
// compile time adds a fixed piece of work to every response.
//   -DPROBE_EXTRA_CODE           10,000 straight-line additions (60 KB of code: 940 cache lines, each run once)
//   -DPROBE_EXTRA_SHARED_ATOMICS 240 atomic increments on 8 cache lines every thread shares (like reference counts)
//   -DPROBE_EXTRA_COLD_LINES     a read-modify-write of 600 cache lines of a 4 MiB per-thread buffer, new ones each time
//   -DPROBE_EXTRA_WARM_LINES     the same on the same 600 lines every time
#define STEP v += (unsigned long)__COUNTER__ + 1048576ul; __asm__ volatile("" : "+r"(v));
#define STEP10 STEP STEP STEP STEP STEP STEP STEP STEP STEP STEP
#define STEP100 STEP10 STEP10 STEP10 STEP10 STEP10 STEP10 STEP10 STEP10 STEP10 STEP10
#define STEP1000 STEP100 STEP100 STEP100 STEP100 STEP100 STEP100 STEP100 STEP100 STEP100 STEP100
#if defined(PROBE_EXTRA_SHARED_ATOMICS)
static unsigned long g_shared[8] __attribute__((aligned(64)));
#elif defined(PROBE_EXTRA_COLD_LINES) || defined(PROBE_EXTRA_WARM_LINES)
static __thread unsigned char *t_lines;
static __thread unsigned long t_line;
#endif
static volatile unsigned long g_sink;
static __attribute__((noinline)) void extra_work(void) {
    unsigned long v = g_sink;
#if defined(PROBE_EXTRA_CODE)
    STEP1000 STEP1000 STEP1000 STEP1000 STEP1000 STEP1000 STEP1000 STEP1000 STEP1000 STEP1000
#elif defined(PROBE_EXTRA_SHARED_ATOMICS)
    for (int i = 0; i < 240; i++) __atomic_fetch_add(&g_shared[i & 7], 1, __ATOMIC_RELAXED);
#elif defined(PROBE_EXTRA_COLD_LINES) || defined(PROBE_EXTRA_WARM_LINES)
    if (t_lines == NULL && (t_lines = calloc(1, 4u << 20)) == NULL) die("calloc");
#if defined(PROBE_EXTRA_WARM_LINES)
    t_line = 0;
#endif
    for (int i = 0; i < 600; i++) {
        t_line = (t_line + 64 * 97) & ((4u << 20) - 1);
        v += t_lines[t_line];
        t_lines[t_line] = (unsigned char)v;
    }
#endif
    g_sink = v;
}
static void respond(int hfd, My *m, int ok) {
    char body[2048], out[4096];
    int blen;
    extra_work();
    if (!ok) {
        blen = snprintf(body, sizeof body, "{\"status\":404}");
    } else {
        // The same members, sorted, as stovepipe's GET /requests/{id}.
        char created[32], updated[32];
        snprintf(created, sizeof created, "%.10sT%.8sZ", m->buf[7], m->buf[7] + 11);
        snprintf(updated, sizeof updated, "%.10sT%.8sZ", m->buf[8], m->buf[8] + 11);
        blen = snprintf(body, sizeof body,
            "{\"base_uri\":\"%.*s\",\"build_strategy\":\"%.*s\",\"created_at\":\"%s\",\"id\":\"request/%.*s/%llu\","
            "\"queue\":\"%.*s\",\"state\":\"%.*s\",\"updated_at\":\"%s\",\"uri\":\"%.*s\",\"version\":%llu}",
            m->isnull[5] ? 0 : (int)m->len[5], m->buf[5], (int)m->len[4], m->buf[4], created, (int)m->len[0], m->buf[0],
            m->n_out, (int)m->len[0], m->buf[0], (int)m->len[3], m->buf[3], updated, (int)m->len[2], m->buf[2], m->version_out);
    }
    char date[64];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    int olen = snprintf(out, sizeof out,
        "HTTP/1.1 %s\r\nContent-Type: application/json\r\nServer: asyncget\r\nDate: %s\r\nContent-Length: %d\r\n\r\n%s",
        ok ? "200 OK" : "404 Not Found", date, blen, body);
    if (send(hfd, out, olen, MSG_NOSIGNAL) != olen) { /* the probe ignores short writes */ }
}

// Parses "GET /requests/request/<queue>/<n> HTTP/1.1\r\n...\r\n\r\n"; the queue is everything up to the last '/'.
static int parse(Http *h) {
    char *end = memmem(h->in, h->inlen, "\r\n\r\n", 4);
    if (!end) return 0;
    int consumed = (int)(end - h->in) + 4;
    const char *prefix = "GET /requests/request/";
    size_t plen = strlen(prefix);
    if (strncmp(h->in, prefix, plen) != 0) return -1;
    char *path = h->in + plen;
    char *sp = memchr(path, ' ', end - path);
    if (!sp) return -1;
    char *slash = NULL;
    for (char *p = path; p < sp; p++) if (*p == '/') slash = p;
    if (!slash || slash - path >= 255) return -1;
    memcpy(h->queue, path, slash - path);
    h->queue[slash - path] = 0;
    h->n = strtoull(slash + 1, NULL, 10);
    memmove(h->in, h->in + consumed, h->inlen - consumed);
    h->inlen -= consumed;
    return 1;
}

// The event design.

static int wait_events(int status) {
    int ev = 0;
    if (status & MYSQL_WAIT_READ) ev |= EPOLLIN;
    if (status & MYSQL_WAIT_WRITE) ev |= EPOLLOUT;
    return ev;
}

static void my_arm(Loop *l, int i, int status) {
    My *m = &l->my[i];
    struct epoll_event e = {.events = wait_events(status), .data.u64 = TAG_MYSQL | (unsigned)i};
    if (!m->registered) {
        if (epoll_ctl(l->ep, EPOLL_CTL_ADD, m->fd, &e) < 0) die("epoll add mysql");
        m->registered = 1;
    } else if (epoll_ctl(l->ep, EPOLL_CTL_MOD, m->fd, &e) < 0) die("epoll mod mysql");
}

static void start_query(Loop *l, int i, Http *h);

static void finish(Loop *l, int i) {
    My *m = &l->my[i];
    int ok = mysql_stmt_fetch(m->stmt) == 0;
    mysql_stmt_free_result(m->stmt);
    Http *h = l->http[m->http];
    if (h) respond(h->fd, m, ok);
    m->phase = 0;
    // Hand the connection to a waiting request, if any.
    while (l->wq_head != l->wq_tail) {
        int hfd = l->waitq[l->wq_head];
        l->wq_head = (l->wq_head + 1) % MAXC;
        Http *w = l->http[hfd];
        if (w && w->waiting) {
            w->waiting = 0;
            start_query(l, i, w);
            return;
        }
    }
}

static void step(Loop *l, int i, int ready) {
    My *m = &l->my[i];
    int status;
    for (;;) {
        if (m->phase == 1) {
            int err;
            status = ready < 0 ? mysql_stmt_execute_start(&err, m->stmt) : mysql_stmt_execute_cont(&err, m->stmt, ready);
            if (status) { my_arm(l, i, status); return; }
            if (err) { fprintf(stderr, "execute: %s\n", mysql_stmt_error(m->stmt)); exit(1); }
            m->phase = 2;
            ready = -1;
        } else if (m->phase == 2) {
            int err;
            status = ready < 0 ? mysql_stmt_store_result_start(&err, m->stmt) : mysql_stmt_store_result_cont(&err, m->stmt, ready);
            if (status) { my_arm(l, i, status); return; }
            if (err) { fprintf(stderr, "store: %s\n", mysql_stmt_error(m->stmt)); exit(1); }
            finish(l, i);
            return;
        } else {
            return;
        }
    }
}

static void start_query(Loop *l, int i, Http *h) {
    My *m = &l->my[i];
    m->http = h->fd;
    m->pqueue_len = strlen(h->queue);
    memcpy(m->pqueue, h->queue, m->pqueue_len);
    m->pn = h->n;
    m->phase = 1;
    step(l, i, -1);
}

static int idle_my(Loop *l) {
    for (int i = 0; i < l->nmy; i++) if (l->my[i].phase == 0) return i;
    return -1;
}

static void on_http(Loop *l, int fd) {
    Http *h = l->http[fd];
    for (;;) {
        ssize_t r = recv(fd, h->in + h->inlen, sizeof h->in - h->inlen, 0);
        if (r > 0) { h->inlen += r; continue; }
        if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            close(fd);
            free(h);
            l->http[fd] = NULL;
            return;
        }
        break;
    }
    int p = parse(h);
    if (p < 0) { close(fd); free(h); l->http[fd] = NULL; return; }
    if (p == 0) return;
    int i = idle_my(l);
    if (i < 0) {
        h->waiting = 1;
        l->waitq[l->wq_tail] = fd;
        l->wq_tail = (l->wq_tail + 1) % MAXC;
        return;
    }
    start_query(l, i, h);
}

static void *run_loop(void *arg) {
    (void)arg;
    Loop *l = calloc(1, sizeof *l);
    l->ep = epoll_create1(0);
    int one = 1;
    int lfd = listener(SOCK_NONBLOCK);
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = (unsigned)lfd};
    epoll_ctl(l->ep, EPOLL_CTL_ADD, lfd, &e);

    l->nmy = g_conns;
    l->my = calloc(g_conns, sizeof(My));
    for (int i = 0; i < g_conns; i++) setup_my(&l->my[i], 1);

    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(l->ep, evs, 64, -1);
        for (int k = 0; k < n; k++) {
            unsigned long long d = evs[k].data.u64;
            if (d & TAG_MYSQL) {
                int i = (int)(d & 0xffffffff);
                int ready = 0;
                if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ready |= MYSQL_WAIT_READ;
                if (evs[k].events & EPOLLOUT) ready |= MYSQL_WAIT_WRITE;
                step(l, i, ready);
            } else if ((int)d == lfd) {
                for (;;) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0) break;
                    if (c >= MAXC) { close(c); continue; }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    l->http[c] = calloc(1, sizeof(Http));
                    l->http[c]->fd = c;
                    struct epoll_event ce = {.events = EPOLLIN, .data.u64 = (unsigned)c};
                    epoll_ctl(l->ep, EPOLL_CTL_ADD, c, &ce);
                }
            } else {
                on_http(l, (int)d);
            }
        }
    }
    return NULL;
}


// The blocking design.

static void *serve_connection(void *arg) {
    int fd = (int)(long)arg;
    mysql_thread_init();
    My *m = calloc(1, sizeof *m);
    setup_my(m, 0);
    Http *h = calloc(1, sizeof *h);
    h->fd = fd;
    for (;;) {
        int p;
        while ((p = parse(h)) == 0) {
#ifdef PROBE_TIMEOUTS
            // Stovepipe's keep-alive wait: a poll with the idle timeout, then the read.
            struct pollfd waiting = {.fd = fd, .events = POLLIN};
            if (poll(&waiting, 1, 75000) <= 0) goto done;
#endif
            ssize_t r = recv(fd, h->in + h->inlen, sizeof h->in - h->inlen, 0);
            if (r <= 0) goto done;
            h->inlen += r;
        }
        if (p < 0) break;
        m->pqueue_len = strlen(h->queue);
        memcpy(m->pqueue, h->queue, m->pqueue_len);
        m->pn = h->n;
        if (mysql_stmt_execute(m->stmt) || mysql_stmt_store_result(m->stmt)) { fprintf(stderr, "execute: %s\n", mysql_stmt_error(m->stmt)); exit(1); }
        int ok = mysql_stmt_fetch(m->stmt) == 0;
        mysql_stmt_free_result(m->stmt);
        respond(fd, m, ok);
    }
done:
    close(fd);
    mysql_stmt_close(m->stmt);
    mysql_close(m->mysql);
    free(m);
    free(h);
    mysql_thread_end();
    return NULL;
}


int main(int argc, char **argv) {
    if (argc != 7 && argc != 9) {
        fprintf(stderr, "usage: MYSQLPROBE_PASSWORD=... mysqlprobe event|blocking PORT MYSQL_HOST MYSQL_PORT USER DATABASE [THREADS CONNECTIONS_PER_THREAD]\n");
        return 2;
    }
    int event = strcmp(argv[1], "event") == 0;
    if (!event && strcmp(argv[1], "blocking") != 0) { fprintf(stderr, "mode must be event or blocking\n"); return 2; }
    g_port = atoi(argv[2]);
    g_host = argv[3];
    g_myport = atoi(argv[4]);
    g_user = argv[5];
    // From the environment, not argv: a password on the command line is visible to every user through ps.
    g_pass = getenv("MYSQLPROBE_PASSWORD");
    if (g_pass == NULL) { fprintf(stderr, "MYSQLPROBE_PASSWORD is not set\n"); return 2; }
    g_db = argv[6];
    int threads = argc == 9 ? atoi(argv[7]) : 1;
    g_conns = argc == 9 ? atoi(argv[8]) : 8;
    if (threads < 1 || threads > 64 || g_conns < 1) { fprintf(stderr, "bad THREADS or CONNECTIONS_PER_THREAD\n"); return 2; }
    // Connector/C: mysql_library_init before any thread starts.
    mysql_library_init(0, NULL, NULL);
    if (event) {
        pthread_t t[64];
        for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, run_loop, NULL);
        fprintf(stderr, "listening\n");
        for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
        return 0;
    }
    int lfd = listener(0);
    int one = 1;
    fprintf(stderr, "listening\n");
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0) continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t t;
        pthread_create(&t, NULL, serve_connection, (void *)(long)c);
        pthread_detach(t);
    }
}
