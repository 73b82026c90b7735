/* engine.c: client connection slots and the epoll loop that drives them.
 *
 * The loop is level-triggered and each slot has one interest at a time:
 * EPOLLOUT while a non-blocking connect is in progress, EPOLLIN after that.
 * On loopback the handshake has usually completed by the time connect()
 * returns EINPROGRESS, so the request is written at once and the EPOLLOUT
 * round trip (and its epoll_ctl) is skipped whenever possible: the client
 * should cost as little as the server it measures. */
#include "engine.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"

#define ENGINE_EVENTS 256
#define ERRORS_SHOWN 10
#define SCAN_INTERVAL_NS UINT64_C(100000000) /* timeout scan: 100 ms */
#define MAX_WAIT_MS 100

uint64_t engine_now(void)
{
	struct timespec ts;
	/* CLOCK_MONOTONIC cannot fail with a valid clock id and pointer. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

uint64_t engine_sec_to_ns(double s)
{
	return s <= 0 ? 0 : (uint64_t)(s * 1e9);
}

int engine_init(struct engine *e, const struct lg_opts *o, struct lg_result *res,
		unsigned n)
{
	memset(e, 0, sizeof(*e));
	e->o = o;
	e->res = res;
	e->n = n;
	e->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (e->epfd < 0) {
		int err = errno;
		fprintf(stderr, "loadgen: epoll_create1: %s\n", strerror(err));
		return -err;
	}
	e->cl = calloc(n, sizeof(*e->cl));
	if (!e->cl) {
		fprintf(stderr, "loadgen: cannot allocate %u slots\n", n);
		close(e->epfd);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++)
		e->cl[i].fd = -1;
	return 0;
}

void engine_fini(struct engine *e)
{
	for (unsigned i = 0; i < e->n; i++)
		if (e->cl[i].state != CL_FREE)
			engine_close(e, i);
	free(e->cl);
	e->cl = NULL;
	if (close(e->epfd) < 0)
		fprintf(stderr, "loadgen: close(epoll): %s\n", strerror(errno));
}

static void set_state(struct engine *e, struct client *c, enum client_state s)
{
	bool was = c->state == CL_CONNECTING || c->state == CL_AWAITING;
	bool is = s == CL_CONNECTING || s == CL_AWAITING;
	e->pending += (unsigned)is - (unsigned)was;
	e->active += (unsigned)(s != CL_FREE) - (unsigned)(c->state != CL_FREE);
	c->state = (uint16_t)s;
}

void engine_close(struct engine *e, unsigned i)
{
	struct client *c = &e->cl[i];
	/* close() also takes the fd out of the epoll set: it is never dup'ed. */
	if (close(c->fd) < 0 && e->errors_shown < ERRORS_SHOWN) {
		e->errors_shown++;
		fprintf(stderr, "loadgen: close: %s\n", strerror(errno));
	}
	c->fd = -1;
	c->got = 0;
	set_state(e, c, CL_FREE);
}

/* Count a failure, print the first few, and free the slot if it is open. */
static void fail(struct engine *e, unsigned i, const char *what, const char *why)
{
	e->res->errors++;
	if (e->errors_shown < ERRORS_SHOWN) {
		e->errors_shown++;
		fprintf(stderr, "loadgen: connection %u: %s: %s%s\n", i, what, why,
			e->errors_shown == ERRORS_SHOWN ? " (further errors not shown)" : "");
	}
	if (e->cl[i].state != CL_FREE)
		engine_close(e, i);
}

bool engine_too_many_errors(const struct engine *e)
{
	return e->res->errors > e->o->max_errors;
}

/* 1 sent, 0 not yet connected, -errno on failure. The request is tiny and
 * at most one is outstanding, so a short write means something is broken. */
static int try_send(struct engine *e, struct client *c)
{
	ssize_t n = write(c->fd, e->o->request, e->o->request_len);
	if (n < 0)
		return errno == EAGAIN ? 0 : -errno;
	return (size_t)n == e->o->request_len ? 1 : -EMSGSIZE;
}

static int prepare_socket(struct engine *e, int fd)
{
	const struct lg_opts *o = e->o;
	if (o->rst) {
		struct linger l = { .l_onoff = 1, .l_linger = 0 };
		if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)) < 0)
			return -errno;
	}
	if (o->src_addrs == 0)
		return 0;
	/* Leave the port to connect(), which picks it per 4-tuple. */
	int one = 1;
	if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0)
		return -errno;
	struct sockaddr_in src = { .sin_family = AF_INET };
	src.sin_addr.s_addr = htonl(0x7f000002u + e->src_next++ % o->src_addrs);
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0)
		return -errno;
	return 0;
}

static int watch(struct engine *e, unsigned i, int op, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.u32 = i };
	return epoll_ctl(e->epfd, op, e->cl[i].fd, &ev) < 0 ? -errno : 0;
}

void engine_open(struct engine *e, unsigned i, uint64_t now)
{
	struct client *c = &e->cl[i];
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fail(e, i, "socket", strerror(errno));
		return;
	}
	c->fd = fd;
	c->got = 0;
	c->t_cycle = c->t_op = now;
	set_state(e, c, CL_CONNECTING);
	int r = prepare_socket(e, fd);
	if (r < 0) {
		fail(e, i, "setsockopt/bind", strerror(-r));
		return;
	}
	const struct sockaddr *dst = (const struct sockaddr *)&e->o->dst;
	if (connect(fd, dst, sizeof(e->o->dst)) < 0 && errno != EINPROGRESS) {
		fail(e, i, "connect", strerror(errno));
		return;
	}
	r = try_send(e, c);
	if (r < 0) {
		fail(e, i, "send", strerror(-r));
		return;
	}
	if (r > 0)
		set_state(e, c, CL_AWAITING);
	r = watch(e, i, EPOLL_CTL_ADD, r > 0 ? EPOLLIN : EPOLLOUT);
	if (r < 0)
		fail(e, i, "epoll_ctl", strerror(-r));
}

void engine_send(struct engine *e, unsigned i, uint64_t now)
{
	struct client *c = &e->cl[i];
	int r = try_send(e, c);
	if (r <= 0) {
		fail(e, i, "send", r ? strerror(-r) : "socket buffer full");
		return;
	}
	c->t_op = now;
	set_state(e, c, CL_AWAITING);
}

void engine_hold(struct engine *e, unsigned i)
{
	set_state(e, &e->cl[i], CL_HELD);
}

static int on_connected(struct engine *e, unsigned i, uint64_t now)
{
	struct client *c = &e->cl[i];
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		fail(e, i, "connect", strerror(err));
		return -1;
	}
	int r = watch(e, i, EPOLL_CTL_MOD, EPOLLIN);
	if (r < 0) {
		fail(e, i, "epoll_ctl", strerror(-r));
		return -1;
	}
	engine_send(e, i, now);
	return ENGINE_PENDING;
}

/* Read what has arrived and check it against the rest of the reply. */
static int on_readable(struct engine *e, unsigned i)
{
	struct client *c = &e->cl[i];
	const struct lg_opts *o = e->o;
	char buf[LG_MSG_MAX + 1];
	ssize_t n = read(c->fd, buf, sizeof(buf));
	if (n < 0) {
		if (errno == EAGAIN)
			return ENGINE_PENDING;
		fail(e, i, "read", strerror(errno));
		return -1;
	}
	if (n == 0) {
		fail(e, i, "read", c->state == CL_HELD ? "server closed a held connection"
						       : "server closed before the full reply");
		return -1;
	}
	if (c->state == CL_HELD || (size_t)n > o->reply_len - c->got ||
	    memcmp(buf, o->reply + c->got, (size_t)n) != 0) {
		fail(e, i, "read", "unexpected bytes from the server");
		return -1;
	}
	c->got = (uint16_t)(c->got + n);
	if (c->got < o->reply_len)
		return ENGINE_PENDING;
	c->got = 0;
	return ENGINE_REPLY;
}

static int on_event(struct engine *e, unsigned i, uint64_t now)
{
	if (e->cl[i].state == CL_CONNECTING)
		return on_connected(e, i, now);
	return on_readable(e, i);
}

static void expire(struct engine *e, uint64_t now)
{
	if (now < e->next_scan)
		return;
	e->next_scan = now + SCAN_INTERVAL_NS;
	uint64_t limit = engine_sec_to_ns(e->o->timeout_s);
	for (unsigned i = 0; i < e->n && e->pending > 0; i++) {
		const struct client *c = &e->cl[i];
		bool busy = c->state == CL_CONNECTING || c->state == CL_AWAITING;
		if (busy && now - c->t_op > limit)
			fail(e, i, c->state == CL_CONNECTING ? "connect" : "reply",
			     "timed out");
	}
}

static int wait_events(struct engine *e, struct epoll_event *ev, uint64_t now,
		       uint64_t until)
{
	uint64_t left_ms = until > now ? (until - now) / 1000000 + 1 : 0;
	int timeout = left_ms < MAX_WAIT_MS ? (int)left_ms : MAX_WAIT_MS;
	int n = epoll_wait(e->epfd, ev, ENGINE_EVENTS, timeout);
	if (n >= 0 || errno == EINTR)
		return n < 0 ? 0 : n;
	int err = errno;
	fprintf(stderr, "loadgen: epoll_wait: %s\n", strerror(err));
	return -err;
}

int engine_run(struct engine *e, const struct engine_mode *m, uint64_t until)
{
	struct epoll_event ev[ENGINE_EVENTS];
	for (;;) {
		uint64_t now = engine_now();
		expire(e, now);
		if (m->on_turn && m->on_turn(e, now))
			return 0;
		if (now >= until || e->active == 0 || engine_too_many_errors(e))
			return 0;
		int n = wait_events(e, ev, now, until);
		if (n < 0)
			return n;
		now = engine_now();
		for (int k = 0; k < n; k++) {
			unsigned i = ev[k].data.u32;
			if (on_event(e, i, now) == ENGINE_REPLY && m->on_reply &&
			    m->on_reply(e, i, now))
				return 0;
		}
	}
}

/* This process's CPU time: shows whether the client was the bottleneck. */
static int64_t own_cpu_us(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return -1; /* cannot fail with RUSAGE_SELF and a valid pointer */
	int64_t s = (int64_t)ru.ru_utime.tv_sec + (int64_t)ru.ru_stime.tv_sec;
	return s * 1000000 + (int64_t)ru.ru_utime.tv_usec + (int64_t)ru.ru_stime.tv_usec;
}

/* A /proc figure, or -1 after saying why it could not be read. */
static int64_t proc_value(int (*get)(pid_t, uint64_t *), pid_t pid, const char *what)
{
	uint64_t v;
	int r = get(pid, &v);
	if (r == 0)
		return (int64_t)v;
	fprintf(stderr, "loadgen: reading %s of pid %ld: %s\n", what, (long)pid, strerror(-r));
	return -1;
}

static void sample(const struct engine *e, struct engine_sample *s)
{
	pid_t pid = e->o->server_pid;
	s->own_cpu_us = own_cpu_us();
	s->own_wait_ns = proc_value(proc_wait_ns, 0, "scheduler wait");
	s->srv_cpu_us = pid ? proc_value(proc_cpu_us, pid, "CPU time") : -1;
	s->srv_wait_ns = pid ? proc_value(proc_wait_ns, pid, "scheduler wait") : -1;
}

static int64_t delta(int64_t before, int64_t after)
{
	return before < 0 || after < 0 ? -1 : after - before;
}

void engine_measure_begin(struct engine *e, uint64_t now)
{
	hist_reset(&e->res->hist);
	e->res->ops = 0;
	e->t_measure = now;
	e->measuring = true;
	sample(e, &e->at_begin);
}

void engine_measure_end(struct engine *e, uint64_t now)
{
	struct engine_sample end;
	sample(e, &end);
	e->measuring = false;
	e->res->ns = now - e->t_measure;
	e->res->srv_cpu_us = delta(e->at_begin.srv_cpu_us, end.srv_cpu_us);
	e->res->srv_wait_ns = delta(e->at_begin.srv_wait_ns, end.srv_wait_ns);
	e->res->own_cpu_us = delta(e->at_begin.own_cpu_us, end.own_cpu_us);
	e->res->own_wait_ns = delta(e->at_begin.own_wait_ns, end.own_wait_ns);
}
