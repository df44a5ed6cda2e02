/*
 * openloop.c — the open-loop generator of benchmarks/openloop.py, in C (Linux: epoll, timerfd).
 *
 * Same schedule, requests and JSON report as the Python generator: request i is due at
 * start + i / rate whatever happened before it; it goes out on an idle keep-alive connection
 * or waits in a FIFO queue for the next one to come free; latency runs from the intended send
 * time (corrected for coordinated omission), service time from the actual send, send lag is
 * the difference. Requests of the warm-up are sent but not counted.
 *
 * Why a C twin: on a 2-core machine the generator shares the cores with the service, and the
 * Python one used 17 % of a CPU at 3,000 requests/s (~57 µs a request); when the scheduler
 * preempts it, responses wait in its socket buffers and requests leave late, so its figures
 * include its own starvation. This one used 7.5-11 % at that rate, mostly in system calls,
 * and is rarely runnable for long, so the kernel wakes it promptly.
 *
 * Built by benchmarks/openloop.py (native_generator) with `cc -O2`; not meant to be run by hand:
 *   GATEWAY_TOKEN=... openloop HOST PORT PATH SKU RUN_ID RATE DURATION_S WARMUP_S CONNECTIONS
 * (HOST is an IPv4 address; the bearer token comes from the environment, not the command line,
 * which other users of the machine can read). Prints one JSON object on stdout; diagnostics on
 * stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define RESPONSE_WAIT_NS 10000000000LL /* after the last request is due: 10 s, as in openloop.py */
#define RECONNECT_DELAY_NS 100000000LL /* a refused reconnect is retried 100 ms later */
#define READ_CHUNK 65536
#define STATUS_MAX 600

typedef struct {
    int fd;
    int connected;    /* connect() completed */
    int busy;         /* a request is out */
    int64_t intended; /* its intended send time (ns, CLOCK_MONOTONIC) */
    int64_t sent;     /* its actual send time */
    char *wbuf;       /* unsent rest of the request (a partial write) */
    size_t wlen, woff, wcap;
    char *rbuf; /* response bytes received so far */
    size_t rlen, rcap;
    int64_t retry_at; /* 0, or when to reconnect after a refused connect */
} connection_t;

typedef struct {
    int64_t *values;
    size_t length, capacity;
} series_t;

static struct sockaddr_in address;
static const char *host, *path, *token, *sku, *run_id;
static int port, epoll_fd;
static connection_t *connections;
static int connection_count;
static int *idle; /* stack of idle connection indexes */
static int idle_count;
static int64_t queue_head, dispatched; /* requests [queue_head, dispatched) wait for a connection */
static int64_t start_ns, measure_from;
static double rate;
static int64_t in_flight, measured_scheduled, connection_errors;
static series_t latency, service, lag;
static int64_t statuses[STATUS_MAX];

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t intended_of(int64_t number) { return start_ns + (int64_t)((double)number * 1e9 / rate); }

static void die(const char *what) {
    fprintf(stderr, "openloop: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void *grow(void *buffer, size_t *capacity, size_t needed, size_t item) {
    if (needed <= *capacity) return buffer;
    size_t next = *capacity ? *capacity : 1024;
    while (next < needed) next *= 2;
    void *grown = realloc(buffer, next * item);
    if (!grown) die("out of memory");
    *capacity = next;
    return grown;
}

static void append(series_t *series, int64_t value) {
    series->values = grow(series->values, &series->capacity, series->length + 1, sizeof(int64_t));
    series->values[series->length++] = value;
}

static void watch(int index, uint32_t events, int op) {
    struct epoll_event event = {.events = events, .data.u32 = (uint32_t)index};
    if (epoll_ctl(epoll_fd, op, connections[index].fd, &event) < 0) die("epoll_ctl");
}

static void connect_one(int index) {
    connection_t *c = &connections[index];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->connected = c->busy = 0;
    c->rlen = c->wlen = c->woff = 0;
    c->retry_at = 0;
    if (connect(c->fd, (struct sockaddr *)&address, sizeof address) < 0 && errno != EINPROGRESS) {
        close(c->fd); /* refused at once (loopback): try again a little later */
        c->fd = -1;
        c->retry_at = now_ns() + RECONNECT_DELAY_NS;
        return;
    }
    watch(index, EPOLLOUT, EPOLL_CTL_ADD);
}

static void flush(int index) {
    connection_t *c = &connections[index];
    while (c->woff < c->wlen) {
        ssize_t written = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (written < 0) {
            if (errno == EAGAIN) {
                watch(index, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
                return;
            }
            return; /* the read side sees the reset and reconnects */
        }
        c->woff += (size_t)written;
    }
}

static void send_request(int index, int64_t number) {
    connection_t *c = &connections[index];
    char body[512];
    int body_length = snprintf(body, sizeof body,
                               "{\"customer_id\":\"ol%s-%lld\",\"region\":\"eu\",\"order_type\":\"flash\","
                               "\"items\":[{\"sku\":\"%s\",\"qty\":1}]}",
                               run_id, (long long)number, sku);
    c->wbuf = grow(c->wbuf, &c->wcap, 2048 + (size_t)body_length, 1);
    int length = snprintf(c->wbuf, c->wcap,
                          "POST %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
                          "Content-Type: application/json\r\nIdempotency-Key: ol-%s-%lld\r\n"
                          "Content-Length: %d\r\n\r\n%s",
                          path, host, port, token, run_id, (long long)number, body_length, body);
    if (length < 0 || (size_t)length >= c->wcap) {
        fprintf(stderr, "openloop: request too long\n");
        exit(2);
    }
    c->busy = 1;
    c->intended = intended_of(number);
    c->wlen = (size_t)length;
    c->woff = 0;
    c->sent = now_ns();
    flush(index);
}

/* A connection came free (or up): it takes the oldest queued request, else waits idle. */
static void next(int index) {
    if (queue_head < dispatched) {
        send_request(index, queue_head++);
    } else {
        idle[idle_count++] = index;
    }
}

static void dispatch(int64_t number) {
    in_flight++;
    if (intended_of(number) >= measure_from) measured_scheduled++;
    dispatched = number + 1;
    if (idle_count > 0 && queue_head == number) {
        queue_head = number + 1;
        send_request(idle[--idle_count], number);
    }
}

static void drop_idle(int index) {
    for (int i = 0; i < idle_count; i++) {
        if (idle[i] == index) {
            idle[i] = idle[--idle_count];
            return;
        }
    }
}

static void lost(int index, int closing) {
    connection_t *c = &connections[index];
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    drop_idle(index);
    if (c->busy) {
        c->busy = 0;
        if (c->intended >= measure_from) connection_errors++; /* measured requests only, like responses */
        in_flight--;
    }
    if (!closing) connect_one(index);
}

/* One complete response in rbuf? Returns its status and consumes it, or 0 if incomplete, -1 if malformed. */
static int take_response(connection_t *c) {
    char *head_end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (!head_end) return 0;
    size_t head_length = (size_t)(head_end - c->rbuf) + 4;
    long content_length = -1;
    for (char *line = memchr(c->rbuf, '\n', head_length); line && line < head_end; line = memchr(line + 1, '\n', (size_t)(head_end - line))) {
        if (strncasecmp(line + 1, "content-length:", 15) == 0) content_length = strtol(line + 16, NULL, 10);
    }
    if (content_length < 0 || c->rlen < 12) return -1;
    if (c->rlen < head_length + (size_t)content_length) return 0;
    int status = atoi(c->rbuf + 9);
    size_t used = head_length + (size_t)content_length;
    memmove(c->rbuf, c->rbuf + used, c->rlen - used);
    c->rlen -= used;
    return status > 0 ? status : -1;
}

static void readable(int index, int closing) {
    connection_t *c = &connections[index];
    for (;;) {
        c->rbuf = grow(c->rbuf, &c->rcap, c->rlen + READ_CHUNK, 1);
        size_t room = c->rcap - c->rlen;
        ssize_t got = read(c->fd, c->rbuf + c->rlen, room);
        if (got < 0 && errno == EAGAIN) break;
        if (got <= 0) {
            lost(index, closing);
            return;
        }
        c->rlen += (size_t)got;
        if ((size_t)got < room) break; /* a short read drained the socket */
    }
    int status = take_response(c);
    if (status == 0) return;
    if (status < 0 || !c->busy) {
        fprintf(stderr, "openloop: malformed or unexpected response\n");
        lost(index, closing);
        return;
    }
    int64_t done = now_ns();
    if (c->intended >= measure_from) {
        append(&latency, done - c->intended);
        append(&service, done - c->sent);
        append(&lag, c->sent - c->intended);
        statuses[status < STATUS_MAX ? status : 0]++;
    }
    c->busy = 0;
    in_flight--;
    if (!closing) next(index);
}

static void writable(int index) {
    connection_t *c = &connections[index];
    if (!c->connected) {
        int error = 0;
        socklen_t size = sizeof error;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &size);
        if (error) {
            epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            c->fd = -1;
            c->retry_at = now_ns() + RECONNECT_DELAY_NS;
            return;
        }
        c->connected = 1;
        watch(index, EPOLLIN, EPOLL_CTL_MOD);
        next(index);
        return;
    }
    flush(index);
    if (c->woff >= c->wlen) watch(index, EPOLLIN, EPOLL_CTL_MOD);
}

static int compare(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void print_summary(const char *name, series_t *series) {
    printf("\"%s\":{", name);
    if (series->length == 0) {
        printf("\"p50\":NaN,\"p90\":NaN,\"p99\":NaN,\"p999\":NaN,\"max\":NaN,\"mean\":NaN}");
        return;
    }
    qsort(series->values, series->length, sizeof(int64_t), compare);
    static const char *names[] = {"p50", "p90", "p99", "p999"};
    static const double qs[] = {50.0, 90.0, 99.0, 99.9};
    for (int i = 0; i < 4; i++) {
        /* nearest rank; the epsilon keeps 99.9 % of 1000 at rank 999, not 1000 (binary floats) */
        size_t rank = (size_t)ceil(qs[i] * (double)series->length / 100.0 - 1e-9);
        if (rank < 1) rank = 1;
        if (rank > series->length) rank = series->length;
        printf("\"%s\":%.6f,", names[i], (double)series->values[rank - 1] / 1e6);
    }
    double sum = 0;
    for (size_t i = 0; i < series->length; i++) sum += (double)series->values[i];
    printf("\"max\":%.6f,\"mean\":%.6f}", (double)series->values[series->length - 1] / 1e6,
           sum / (double)series->length / 1e6);
}

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + (double)usage.ru_stime.tv_sec +
           usage.ru_stime.tv_usec / 1e6;
}

static void arm(int timer_fd, int64_t at) {
    struct itimerspec spec = {.it_value = {.tv_sec = at / 1000000000LL, .tv_nsec = at % 1000000000LL}};
    if (timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &spec, NULL) < 0) die("timerfd_settime");
}

static void poll_once(int timer_fd, int closing) {
    struct epoll_event events[256];
    int ready = epoll_wait(epoll_fd, events, 256, -1);
    if (ready < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < ready; i++) {
        uint32_t index = events[i].data.u32;
        if (index == UINT32_MAX) {
            uint64_t expirations;
            if (read(timer_fd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) die("timerfd read");
            continue;
        }
        if (connections[index].fd < 0) continue;
        if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            if (connections[index].connected) {
                readable((int)index, closing);
                continue;
            }
        }
        if (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) writable((int)index);
    }
    int64_t now = now_ns();
    for (int i = 0; i < connection_count && !closing; i++) {
        if (connections[i].fd < 0 && connections[i].retry_at && connections[i].retry_at <= now) connect_one(i);
    }
}

int main(int argc, char **argv) {
    if (argc != 10) {
        fprintf(stderr, "usage: GATEWAY_TOKEN=... openloop HOST PORT PATH SKU RUN_ID RATE DURATION_S WARMUP_S "
                        "CONNECTIONS\n");
        return 2;
    }
    host = argv[1], port = atoi(argv[2]), path = argv[3], sku = argv[4], run_id = argv[5];
    token = getenv("GATEWAY_TOKEN");
    if (!token) token = "";
    rate = atof(argv[6]);
    double duration_s = atof(argv[7]), warmup_s = atof(argv[8]);
    connection_count = atoi(argv[9]);
    if (rate <= 0 || duration_s <= 0 || warmup_s < 0 || connection_count <= 0 || port <= 0) {
        fprintf(stderr, "openloop: rate, duration, connections and port must be positive\n");
        return 2;
    }
    address.sin_family = AF_INET;
    address.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &address.sin_addr) != 1) {
        fprintf(stderr, "openloop: HOST must be an IPv4 address, got %s\n", host);
        return 2;
    }
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    int timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (epoll_fd < 0 || timer_fd < 0) die("epoll/timerfd");
    struct epoll_event timer_event = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, timer_fd, &timer_event) < 0) die("epoll_ctl timer");
    connections = calloc((size_t)connection_count, sizeof *connections);
    idle = calloc((size_t)connection_count, sizeof *idle);
    if (!connections || !idle) die("out of memory");
    for (int i = 0; i < connection_count; i++) connect_one(i);
    int64_t connect_deadline = now_ns() + 10000000000LL;
    while (idle_count < connection_count) {
        if (now_ns() > connect_deadline) {
            fprintf(stderr, "openloop: only %d of %d connections up after 10 s\n", idle_count, connection_count);
            return 1;
        }
        arm(timer_fd, now_ns() + 100000000LL);
        poll_once(timer_fd, 0);
    }

    double cpu_started = cpu_seconds();
    start_ns = now_ns() + 50000000LL;
    measure_from = start_ns + (int64_t)(warmup_s * 1e9);
    int64_t total = (int64_t)(rate * (warmup_s + duration_s));
    int64_t number = 0;
    while (number < total) {
        int64_t now = now_ns();
        while (number < total && intended_of(number) <= now) dispatch(number++);
        if (number < total) {
            arm(timer_fd, intended_of(number));
            poll_once(timer_fd, 0);
        }
    }
    int64_t schedule_end = now_ns();
    double cpu_fraction = (cpu_seconds() - cpu_started) / ((double)(schedule_end - start_ns) / 1e9);
    int64_t wait_until = schedule_end + RESPONSE_WAIT_NS;
    while (in_flight > 0 && now_ns() < wait_until) {
        arm(timer_fd, now_ns() + 10000000LL);
        poll_once(timer_fd, 0);
    }
    int64_t unfinished = in_flight;
    for (int i = 0; i < connection_count; i++) {
        if (connections[i].fd >= 0) close(connections[i].fd);
    }

    int64_t completed = 0, non_2xx = 0;
    for (int status = 0; status < STATUS_MAX; status++) {
        completed += statuses[status];
        if (status < 200 || status > 299) non_2xx += statuses[status];
    }
    int64_t intended_end = measure_from + (int64_t)(duration_s * 1e9);
    double overrun_ms = schedule_end > intended_end ? (double)(schedule_end - intended_end) / 1e6 : 0.0;
    printf("{\"engine\":\"c\",\"rate_target\":%.3f,\"duration_s\":%.3f,\"warmup_s\":%.3f,\"connections\":%d,", rate,
           duration_s, warmup_s, connection_count);
    printf("\"requests_scheduled\":%lld,\"requests_completed\":%lld,\"rate_completed\":%.3f,\"unfinished\":%lld,",
           (long long)measured_scheduled, (long long)completed, (double)completed / duration_s, (long long)unfinished);
    printf("\"connection_errors\":%lld,\"non_2xx\":%lld,\"statuses\":{", (long long)connection_errors,
           (long long)non_2xx);
    int first = 1;
    for (int status = 0; status < STATUS_MAX; status++) {
        if (!statuses[status]) continue;
        printf("%s\"%d\":%lld", first ? "" : ",", status, (long long)statuses[status]);
        first = 0;
    }
    printf("},\"schedule_overrun_ms\":%.3f,\"generator_cpu_fraction\":%.4f,", overrun_ms, cpu_fraction);
    print_summary("latency_ms", &latency);
    printf(",");
    print_summary("service_time_ms", &service);
    printf(",");
    print_summary("send_lag_ms", &lag);
    printf("}\n");
    return 0;
}
