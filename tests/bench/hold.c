/* hold.c: open N connections to one target, check each one's reply, then
 * hold them idle.
 *
 * At most --inflight attempts are under way at once so that the server's
 * listen backlog is not overrun. The server's VmRSS is read before the
 * first connection and at the end of the idle hold, while every held
 * connection is still open; a connection the server closes or writes to
 * during the hold counts as an error. */
#include <stdio.h>
#include <string.h>

#include "engine.h"
#include "proc.h"

#define SETUP_LIMIT_S 120.0 /* bound on opening all connections */

struct hold {
	unsigned next; /* next slot to open */
};

static void hold_reply(struct engine *e, unsigned i, uint64_t now)
{
	(void)now;
	engine_hold(e, i);
}

/* Keep --inflight attempts going; done when every slot was tried. */
static bool hold_loop(struct engine *e, uint64_t now)
{
	struct hold *h = e->user;
	while (h->next < e->n && e->pending[0] < e->o->inflight && !engine_too_many_errors(e))
		engine_open(e, h->next++, now);
	return (h->next == e->n || engine_too_many_errors(e)) && e->pending[0] == 0;
}

static int64_t rss(pid_t pid)
{
	uint64_t bytes;
	if (pid == 0)
		return -1;
	int r = proc_rss_bytes(pid, &bytes);
	if (r < 0) {
		fprintf(stderr, "loadgen: reading VmRSS of pid %ld: %s\n", (long)pid,
			strerror(-r));
		return -1;
	}
	return (int64_t)bytes;
}

int hold_run(const struct lg_opts *o, struct lg_result *res)
{
	static const struct engine_mode setup = { .on_reply = hold_reply,
						  .on_loop = hold_loop };
	static const struct engine_mode idle = { .on_reply = NULL };
	struct hold h = { .next = 0 };
	struct engine e;
	int r = engine_init(&e, o, res);
	if (r < 0)
		return r;
	e.user = &h;
	pid_t pid = o->target[0].pid;
	res->rss_before = rss(pid);
	uint64_t start = engine_now();
	engine_start(&e, &setup, start);
	r = engine_run(&e, &setup, start + engine_sec_to_ns(SETUP_LIMIT_S));
	uint64_t held_at = engine_now();
	res->ns = held_at - start;
	if (r == 0)
		r = engine_run(&e, &idle, held_at + engine_sec_to_ns(o->duration_s));
	res->rss_held = rss(pid);
	res->held = e.active - e.pending[0];
	engine_fini(&e);
	return r;
}
