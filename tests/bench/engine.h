/* engine.h: the client side of one connection cycle, driven by epoll.
 *
 * A slot holds one client connection: it is opened (socket, optional source
 * address, non-blocking connect), sends the request as soon as it can, and
 * reads until the complete expected reply has arrived. What happens after a
 * reply is the mode's business (struct engine_mode). Failures are counted
 * in the result, the first few are printed, and the slot is freed. */
#ifndef ENGINE_H
#define ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "loadgen.h"

enum client_state { CL_FREE, CL_CONNECTING, CL_AWAITING, CL_HELD };

struct client {
	int fd;
	uint16_t state;
	uint16_t got;     /* reply bytes received so far */
	uint64_t t_cycle; /* when the connection was opened */
	uint64_t t_op;    /* when the pending connect or request started */
};

/* CPU and scheduler figures at one instant; -1 where unknown. */
struct engine_sample {
	int64_t srv_cpu_us;
	int64_t srv_wait_ns;
	int64_t own_cpu_us;
	int64_t own_wait_ns;
};

struct engine {
	const struct lg_opts *o;
	struct lg_result *res;
	void *user;          /* the mode's own state */
	int epfd;
	struct client *cl;
	unsigned n;
	unsigned active;     /* slots not CL_FREE */
	unsigned pending;    /* slots CL_CONNECTING or CL_AWAITING */
	unsigned src_next;
	unsigned errors_shown;
	uint64_t next_scan;  /* next time to look for timed-out slots */
	bool measuring;
	uint64_t t_measure;
	struct engine_sample at_begin;
};

struct engine_mode {
	/* A slot got its full reply; return true to end the run. */
	bool (*on_reply)(struct engine *e, unsigned i, uint64_t now);
	/* Called once per loop turn (may be NULL); true ends the run. */
	bool (*on_turn)(struct engine *e, uint64_t now);
};

#define ENGINE_PENDING 0
#define ENGINE_REPLY 1

uint64_t engine_now(void);
uint64_t engine_sec_to_ns(double s);

int engine_init(struct engine *e, const struct lg_opts *o, struct lg_result *res,
		unsigned n);
void engine_fini(struct engine *e);

/* Open slot i and send the request as soon as connected. A failure is
 * counted and leaves the slot free. */
void engine_open(struct engine *e, unsigned i, uint64_t now);
/* Send the request again on an idle, connected slot i. */
void engine_send(struct engine *e, unsigned i, uint64_t now);
/* Mark slot i as held idle: any later event on it is a failure. */
void engine_hold(struct engine *e, unsigned i);
void engine_close(struct engine *e, unsigned i);
bool engine_too_many_errors(const struct engine *e);

/* Run the loop until `until` (monotonic ns), until a mode callback ends it,
 * no slot is left, or too many errors. 0 or -errno (epoll failure). */
int engine_run(struct engine *e, const struct engine_mode *m, uint64_t until);

/* Start and stop the measured phase: latency histogram, op count, wall
 * time, CPU time of the server and of this process, and how long each
 * waited for its CPU (a sign that something else ran there). */
void engine_measure_begin(struct engine *e, uint64_t now);
void engine_measure_end(struct engine *e, uint64_t now);

#endif
