/* hold.c: open N connections, check each one's reply, then hold them idle.
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

static bool hold_reply(struct engine *e, unsigned i, uint64_t now)
{
	(void)now;
	engine_hold(e, i);
	return false;
}

/* Keep --inflight attempts going; done when every slot was tried. */
static bool hold_turn(struct engine *e, uint64_t now)
{
	struct hold *h = e->user;
	while (h->next < e->n && e->pending < e->o->inflight && !engine_too_many_errors(e))
		engine_open(e, h->next++, now);
	return (h->next == e->n || engine_too_many_errors(e)) && e->pending == 0;
}

static int64_t rss(const struct lg_opts *o)
{
	uint64_t bytes;
	if (o->server_pid == 0)
		return -1;
	int r = proc_rss_bytes(o->server_pid, &bytes);
	if (r < 0) {
		fprintf(stderr, "loadgen: reading VmRSS of pid %ld: %s\n",
			(long)o->server_pid, strerror(-r));
		return -1;
	}
	return (int64_t)bytes;
}

int hold_run(const struct lg_opts *o, struct lg_result *res)
{
	static const struct engine_mode setup = { .on_reply = hold_reply,
						  .on_turn = hold_turn };
	static const struct engine_mode idle = { .on_reply = NULL };
	struct hold h = { .next = 0 };
	struct engine e;
	int r = engine_init(&e, o, res, o->conns);
	if (r < 0)
		return r;
	e.user = &h;
	res->rss_before = rss(o);
	uint64_t start = engine_now();
	r = engine_run(&e, &setup, start + engine_sec_to_ns(SETUP_LIMIT_S));
	uint64_t held_at = engine_now();
	res->ns = held_at - start;
	if (r == 0)
		r = engine_run(&e, &idle, held_at + engine_sec_to_ns(o->duration_s));
	res->rss_held = rss(o);
	res->held = e.active - e.pending;
	engine_fini(&e);
	return r;
}
