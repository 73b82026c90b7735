/* engine.c: client connection slots, the epoll loop that drives them, and
 * the turns that targets take.
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

int engine_init(struct engine *e, const struct lg_opts *o, struct lg_result *res)
{
	memset(e, 0, sizeof(*e));
	e->o = o;
	e->res = res;
	e->n = o->conns * o->ntargets;
	e->turns = o->mode != LG_HOLD;
	e->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (e->epfd < 0) {
		int err = errno;
		fprintf(stderr, "loadgen: epoll_create1: %s\n", strerror(err));
		return -err;
	}
	e->cl = calloc(e->n, sizeof(*e->cl));
	if (!e->cl) {
		fprintf(stderr, "loadgen: cannot allocate %u slots\n", e->n);
		close(e->epfd);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < e->n; i++) {
		e->cl[i].fd = -1;
		e->cl[i].target = (uint8_t)(i / o->conns);
	}
	for (unsigned t = 0; t < o->ntargets; t++) {
		memset(&res[t], 0, sizeof(res[t]));
		res[t].srv_cpu_us = res[t].srv_run_ns = res[t].srv_wait_ns = -1;
		res[t].rss_before = res[t].rss_held = -1;
	}
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

static bool is_pending(unsigned state)
{
	return state == CL_CONNECTING || state == CL_AWAITING;
}

static void set_state(struct engine *e, struct client *c, enum client_state s)
{
	unsigned *pending = &e->pending[c->target];
	*pending += (unsigned)is_pending(s) - (unsigned)is_pending(c->state);
	e->active += (unsigned)(s != CL_FREE) - (unsigned)(c->state != CL_FREE);
	c->state = (uint8_t)s;
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
	unsigned t = e->cl[i].target;
	e->res[t].errors++;
	e->errors++;
	if (e->errors_shown < ERRORS_SHOWN) {
		e->errors_shown++;
		fprintf(stderr, "loadgen: target %u connection %u: %s: %s%s\n", t, i, what, why,
			e->errors_shown == ERRORS_SHOWN ? " (further errors not shown)" : "");
	}
	if (e->cl[i].state != CL_FREE)
		engine_close(e, i);
}

bool engine_too_many_errors(const struct engine *e)
{
	return e->errors > e->o->max_errors;
}

/* 1 sent, 0 not yet connected, -errno on failure. The request is tiny and
 * at most one is outstanding, so a short write means something is broken. */
static int try_send(struct engine *e, struct client *c)
{
	const struct lg_target *t = &e->o->target[c->target];
	const char *msg = c->fresh ? t->first : t->request;
	size_t len = c->fresh ? t->first_len : t->request_len;
	ssize_t n = write(c->fd, msg, len);
	if (n < 0)
		return errno == EAGAIN ? 0 : -errno;
	c->fresh = false;
	return (size_t)n == len ? 1 : -EMSGSIZE;
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
	c->fresh = true;
	c->t_cycle = c->t_op = now;
	set_state(e, c, CL_CONNECTING);
	int r = prepare_socket(e, fd);
	if (r < 0) {
		fail(e, i, "setsockopt/bind", strerror(-r));
		return;
	}
	const struct sockaddr_in *dst = &e->o->target[c->target].dst;
	if (connect(fd, (const struct sockaddr *)dst, sizeof(*dst)) < 0 && errno != EINPROGRESS) {
		fail(e, i, "connect", strerror(errno));
		return;
	}
	r = try_send(e, c);
	if (r < 0) {
		fail(e, i, "connect/send", strerror(-r)); /* a refused connect shows here */
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

void engine_ready(struct engine *e, unsigned i)
{
	set_state(e, &e->cl[i], CL_READY);
}

void engine_hold(struct engine *e, unsigned i)
{
	set_state(e, &e->cl[i], CL_HELD);
}

static void on_connected(struct engine *e, unsigned i, uint64_t now)
{
	struct client *c = &e->cl[i];
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		fail(e, i, "connect", strerror(err));
		return;
	}
	int r = watch(e, i, EPOLL_CTL_MOD, EPOLLIN);
	if (r < 0) {
		fail(e, i, "epoll_ctl", strerror(-r));
		return;
	}
	engine_send(e, i, now);
}

/* Read what has arrived and check it against the rest of the reply;
 * true once the whole reply is in. */
static bool on_readable(struct engine *e, unsigned i)
{
	struct client *c = &e->cl[i];
	const struct lg_target *t = &e->o->target[c->target];
	char buf[LG_MSG_MAX + 1];
	ssize_t n = read(c->fd, buf, sizeof(buf));
	if (n < 0) {
		if (errno != EAGAIN)
			fail(e, i, "read", strerror(errno));
		return false;
	}
	if (n == 0) {
		fail(e, i, "read", c->state == CL_AWAITING ? "server closed before the full reply"
							   : "server closed an idle connection");
		return false;
	}
	if (c->state != CL_AWAITING || (size_t)n > t->reply_len - c->got ||
	    memcmp(buf, t->reply + c->got, (size_t)n) != 0) {
		fail(e, i, "read", "unexpected bytes from the server");
		return false;
	}
	c->got = (uint16_t)(c->got + n);
	if (c->got < t->reply_len)
		return false;
	c->got = 0;
	return true;
}

static void expire(struct engine *e, uint64_t now)
{
	if (now < e->next_scan)
		return;
	e->next_scan = now + SCAN_INTERVAL_NS;
	uint64_t limit = engine_sec_to_ns(e->o->timeout_s);
	for (unsigned i = 0; i < e->n; i++) {
		const struct client *c = &e->cl[i];
		if (is_pending(c->state) && now - c->t_op > limit)
			fail(e, i, c->state == CL_CONNECTING ? "connect" : "reply", "timed out");
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

/* This process: CPU time from getrusage, CPU wait from schedstat. */
static void sample_own(struct engine_sample *s)
{
	uint64_t us, run, wait;
	s->cpu_us = proc_self_cpu_us(&us) == 0 ? (int64_t)us : -1;
	int r = proc_sched_ns(0, &run, &wait);
	s->run_ns = r == 0 ? (int64_t)run : -1;
	s->wait_ns = r == 0 ? (int64_t)wait : -1;
}

static void sample_server(pid_t pid, struct engine_sample *s)
{
	uint64_t us, run, wait;
	int r1 = proc_cpu_us(pid, &us);
	int r2 = proc_sched_ns(pid, &run, &wait);
	s->cpu_us = r1 == 0 ? (int64_t)us : -1;
	s->run_ns = r2 == 0 ? (int64_t)run : -1;
	s->wait_ns = r2 == 0 ? (int64_t)wait : -1;
	if (r1 < 0 || r2 < 0)
		fprintf(stderr, "loadgen: reading /proc/%ld: %s\n", (long)pid,
			strerror(r1 < 0 ? -r1 : -r2));
}

static int64_t diff(int64_t before, int64_t after)
{
	return before < 0 || after < 0 ? -1 : after - before;
}

/* Add after - before to *sum, which stays -1 once anything was unknown. */
static void accumulate(int64_t *sum, int64_t before, int64_t after)
{
	if (*sum < 0 || before < 0 || after < 0)
		*sum = -1;
	else
		*sum += after - before;
}

/* The time since the turn (or the measured phase) started counts from now. */
static void turn_reset(struct engine *e, uint64_t now)
{
	e->turn_start = now;
	sample_own(&e->own_at_turn);
}

/* Charge the time since then to the current target: wall time and this
 * process's CPU and CPU wait. Rests are nobody's. */
static void turn_charge(struct engine *e, uint64_t now)
{
	struct lg_result *r = &e->res[e->cur];
	struct engine_sample own;
	if (!e->measuring || e->resting)
		return;
	sample_own(&own);
	r->ns += now - e->turn_start;
	accumulate(&r->own_cpu_us, e->own_at_turn.cpu_us, own.cpu_us);
	accumulate(&r->own_wait_ns, e->own_at_turn.wait_ns, own.wait_ns);
}

static void turn_begin(struct engine *e, const struct engine_mode *m, unsigned t,
		       uint64_t now)
{
	e->cur = t;
	e->draining = false;
	e->resting = false;
	e->turn_end = e->turns ? now + engine_sec_to_ns(e->o->slice_s) : UINT64_MAX;
	turn_reset(e, now);
	if (m->on_turn_start)
		m->on_turn_start(e, t, now);
}

void engine_start(struct engine *e, const struct engine_mode *m, uint64_t now)
{
	turn_begin(e, m, 0, now);
}

/* The target after the current one that is not done yet; -1 if none. */
static int next_target(const struct engine *e)
{
	unsigned nt = e->o->ntargets;
	for (unsigned k = 1; k <= nt; k++) {
		unsigned t = (e->cur + k) % nt;
		if (!e->done[t])
			return (int)t;
	}
	return -1;
}

/* A turn ends once it is over and its requests in flight are answered;
 * a rest with no load at all follows, then the next target's turn. The
 * rests keep each CPU's SCHED_FIFO use under the kernel's RT limit (95% of
 * every second), which would otherwise stop the busy process for 50 ms at
 * a random point of some target's turn. False when every target is done. */
static bool next_turn(struct engine *e, const struct engine_mode *m, uint64_t now)
{
	if (e->resting) {
		int t = now < e->rest_end ? (int)e->cur : next_target(e);
		if (t >= 0 && now >= e->rest_end)
			turn_begin(e, m, (unsigned)t, now);
		return t >= 0;
	}
	if (!e->draining && (now >= e->turn_end || e->done[e->cur]))
		e->draining = true;
	if (!e->draining || e->pending[e->cur] > 0)
		return true;
	turn_charge(e, now);
	e->resting = true;
	e->rest_end = now + engine_sec_to_ns(e->o->rest_s);
	return next_target(e) >= 0;
}

bool engine_may_send(const struct engine *e, unsigned t)
{
	return t == e->cur && !e->draining && !e->done[t];
}

void engine_count(struct engine *e, unsigned t, uint64_t ns)
{
	if (!e->measuring || e->done[t])
		return; /* late replies of a finished target are not counted */
	hist_add(&e->res[t].hist, ns);
	if (++e->res[t].ops >= e->o->max_ops)
		e->done[t] = true;
}

int engine_run(struct engine *e, const struct engine_mode *m, uint64_t until)
{
	struct epoll_event ev[ENGINE_EVENTS];
	for (;;) {
		uint64_t now = engine_now();
		expire(e, now);
		if (m->on_loop && m->on_loop(e, now))
			return 0;
		if (!next_turn(e, m, now))
			return 0;
		if (now >= until || (e->active == 0 && !e->resting) || engine_too_many_errors(e))
			return 0;
		int n = wait_events(e, ev, now, e->resting && e->rest_end < until ? e->rest_end : until);
		if (n < 0)
			return n;
		now = engine_now();
		for (int k = 0; k < n; k++) {
			unsigned i = ev[k].data.u32;
			if (e->cl[i].state == CL_CONNECTING)
				on_connected(e, i, now);
			else if (on_readable(e, i) && m->on_reply)
				m->on_reply(e, i, now);
		}
	}
}

void engine_measure_begin(struct engine *e, uint64_t now)
{
	for (unsigned t = 0; t < e->o->ntargets; t++) {
		struct lg_result *r = &e->res[t];
		hist_reset(&r->hist);
		r->ops = r->ns = 0;
		r->own_cpu_us = r->own_wait_ns = 0;
		if (e->o->target[t].pid)
			sample_server(e->o->target[t].pid, &e->srv_at_begin[t]);
	}
	turn_reset(e, now); /* the current turn counts from here */
	e->measuring = true;
}

void engine_measure_end(struct engine *e, uint64_t now)
{
	turn_charge(e, now);
	e->measuring = false;
	for (unsigned t = 0; t < e->o->ntargets; t++) {
		struct lg_result *r = &e->res[t];
		const struct engine_sample *s0 = &e->srv_at_begin[t];
		struct engine_sample s1;
		if (!e->o->target[t].pid)
			continue;
		sample_server(e->o->target[t].pid, &s1);
		r->srv_cpu_us = diff(s0->cpu_us, s1.cpu_us);
		r->srv_run_ns = diff(s0->run_ns, s1.run_ns);
		r->srv_wait_ns = diff(s0->wait_ns, s1.wait_ns);
	}
}

int engine_measure(struct engine *e, const struct engine_mode *m)
{
	uint64_t now = engine_now();
	engine_start(e, m, now);
	int r = engine_run(e, m, now + engine_sec_to_ns(e->o->warmup_s));
	engine_measure_begin(e, engine_now());
	if (r == 0)
		r = engine_run(e, m, engine_now() + engine_sec_to_ns(e->o->duration_s));
	engine_measure_end(e, engine_now());
	return r;
}
