/* churn.c: W workers per target, each repeating connect, request, reply,
 * close, as long as it is its target's turn.
 *
 * A cycle's latency runs from socket() to the return of close(). A worker
 * whose cycle failed starts a new one at the next loop turn; the run stops
 * early once more than --max-errors cycles have failed, so a dead server
 * costs a bounded number of attempts. */
#include "engine.h"

static void churn_reply(struct engine *e, unsigned i, uint64_t now)
{
	(void)now;
	unsigned t = e->cl[i].target;
	uint64_t t_cycle = e->cl[i].t_cycle;
	engine_close(e, i);
	uint64_t end = engine_now();
	engine_count(e, t, end - t_cycle);
	if (engine_may_send(e, t))
		engine_open(e, i, end);
}

/* Start the idle workers of the target whose turn it is: all of them when
 * its turn starts, and those whose last cycle failed later on. */
static void churn_turn(struct engine *e, unsigned t, uint64_t now)
{
	unsigned conns = e->o->conns;
	for (unsigned i = t * conns; i < (t + 1) * conns; i++)
		if (e->cl[i].state == CL_FREE && engine_may_send(e, t) &&
		    !engine_too_many_errors(e))
			engine_open(e, i, now);
}

static bool churn_loop(struct engine *e, uint64_t now)
{
	if (e->active < e->o->conns)
		churn_turn(e, e->cur, now);
	return false;
}

int churn_run(const struct lg_opts *o, struct lg_result *res)
{
	static const struct engine_mode mode = {
		.on_reply = churn_reply,
		.on_turn_start = churn_turn,
		.on_loop = churn_loop,
	};
	struct engine e;
	int r = engine_init(&e, o, res);
	if (r < 0)
		return r;
	r = engine_measure(&e, &mode);
	engine_fini(&e);
	return r;
}
