/* engine.h: the client side of one connection cycle, driven by epoll.
 *
 * A slot holds one client connection to one target: it is opened (socket,
 * optional source address, non-blocking connect), sends the request as
 * soon as it can, and reads until the complete expected reply has arrived.
 * What happens after a reply is the mode's business (struct engine_mode).
 * Failures are counted in the target's result, the first few are printed,
 * and the slot is freed.
 *
 * Slots i*conns .. (i+1)*conns-1 belong to target i. Targets take turns
 * (with a single target too): during a turn the mode may start new requests
 * only for the current target (engine_may_send); when the turn is over, its
 * requests in flight are drained and a short rest follows before the next
 * target's turn starts, so that only one server is busy at a time. */
#ifndef ENGINE_H
#define ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "loadgen.h"

enum client_state {
	CL_FREE,
	CL_CONNECTING,
	CL_AWAITING, /* request sent, reply incomplete */
	CL_READY,    /* connected, nothing outstanding */
	CL_HELD,     /* hold mode: idle, any event is a failure */
};

struct client {
	int fd;
	uint8_t state;
	uint8_t target;
	bool fresh;       /* nothing sent yet: the next write is target's first */
	uint16_t got;     /* reply bytes received so far */
	uint64_t t_cycle; /* when the connection was opened */
	uint64_t t_op;    /* when the pending connect or request started */
};

/* Figures read at one instant; -1 where unknown. */
struct engine_sample {
	int64_t cpu_us;  /* utime+stime */
	int64_t run_ns;  /* on-CPU time, schedstat */
	int64_t wait_ns; /* waiting for a CPU, schedstat */
};

struct engine {
	const struct lg_opts *o;
	struct lg_result *res;  /* one per target */
	void *user;             /* the mode's own state */
	int epfd;
	struct client *cl;
	unsigned n;
	unsigned active;        /* slots not CL_FREE */
	unsigned pending[LG_MAX_TARGETS]; /* CL_CONNECTING or CL_AWAITING */
	unsigned src_next;
	unsigned errors_shown;
	uint64_t errors;        /* all targets */
	uint64_t next_scan;     /* next time to look for timed-out slots */
	/* turns */
	bool turns;             /* pingpong, churn: turns end (hold: never) */
	unsigned cur;           /* the target whose turn it is */
	bool draining;          /* its turn is over: no new requests */
	bool resting;           /* drained; nothing runs until rest_end */
	uint64_t rest_end;
	bool done[LG_MAX_TARGETS]; /* reached max_ops */
	uint64_t turn_start, turn_end;
	struct engine_sample own_at_turn;
	/* measured phase */
	bool measuring;
	struct engine_sample srv_at_begin[LG_MAX_TARGETS];
};

struct engine_mode {
	/* Slot i got its full reply. */
	void (*on_reply)(struct engine *e, unsigned i, uint64_t now);
	/* Target t's turn starts: set its slots going. */
	void (*on_turn_start)(struct engine *e, unsigned t, uint64_t now);
	/* Called once per loop turn (may be NULL); true ends the run. */
	bool (*on_loop)(struct engine *e, uint64_t now);
};

uint64_t engine_now(void);
uint64_t engine_sec_to_ns(double s);

int engine_init(struct engine *e, const struct lg_opts *o, struct lg_result *res);
void engine_fini(struct engine *e);

/* Open slot i and send the request as soon as connected. A failure is
 * counted and leaves the slot free. */
void engine_open(struct engine *e, unsigned i, uint64_t now);
/* Send the request again on a CL_READY slot. */
void engine_send(struct engine *e, unsigned i, uint64_t now);
/* After a reply: the slot stays connected with nothing outstanding. */
void engine_ready(struct engine *e, unsigned i);
/* Mark slot i as held idle: any later event on it is a failure. */
void engine_hold(struct engine *e, unsigned i);
void engine_close(struct engine *e, unsigned i);
bool engine_too_many_errors(const struct engine *e);

/* May the mode start a request or cycle for target t now? */
bool engine_may_send(const struct engine *e, unsigned t);
/* Count a measured request or cycle of target t taking `ns`; the target is
 * done once it reaches max_ops. */
void engine_count(struct engine *e, unsigned t, uint64_t ns);

/* Give target 0 the first turn. */
void engine_start(struct engine *e, const struct engine_mode *m, uint64_t now);
/* Run the loop until `until` (monotonic ns), until every target is done,
 * the mode ends it, no slot is left, or too many errors. 0 or -errno. */
int engine_run(struct engine *e, const struct engine_mode *m, uint64_t until);

/* Turns, warm-up and the measured phase, for pingpong and churn: 0 or
 * -errno. */
int engine_measure(struct engine *e, const struct engine_mode *m);

/* Start and stop the measured phase (see struct lg_result). */
void engine_measure_begin(struct engine *e, uint64_t now);
void engine_measure_end(struct engine *e, uint64_t now);

#endif
