/* churn.c: W workers, each repeating connect, request, reply, close.
 *
 * A cycle's latency runs from socket() to the return of close(). A worker
 * whose cycle failed starts a new one at the next loop turn; the run stops
 * early once more than --max-errors cycles have failed, so a dead server
 * costs a bounded number of attempts. */
#include "engine.h"

static bool churn_reply(struct engine *e, unsigned i, uint64_t now)
{
	(void)now;
	uint64_t t_cycle = e->cl[i].t_cycle;
	engine_close(e, i);
	uint64_t t = engine_now();
	if (e->measuring) {
		hist_add(&e->res->hist, t - t_cycle);
		if (++e->res->ops >= e->o->max_ops)
			return true;
	}
	engine_open(e, i, t);
	return false;
}

/* Restart the workers whose last cycle failed. */
static bool churn_turn(struct engine *e, uint64_t now)
{
	for (unsigned i = 0; i < e->n && e->active < e->n; i++)
		if (e->cl[i].state == CL_FREE && !engine_too_many_errors(e))
			engine_open(e, i, now);
	return false;
}

int churn_run(const struct lg_opts *o, struct lg_result *res)
{
	static const struct engine_mode mode = {
		.on_reply = churn_reply,
		.on_turn = churn_turn,
	};
	struct engine e;
	int r = engine_init(&e, o, res, o->conns);
	if (r < 0)
		return r;
	uint64_t start = engine_now();
	r = engine_run(&e, &mode, start + engine_sec_to_ns(o->warmup_s));
	uint64_t now = engine_now();
	engine_measure_begin(&e, now);
	if (r == 0)
		r = engine_run(&e, &mode, now + engine_sec_to_ns(o->duration_s));
	engine_measure_end(&e, engine_now());
	engine_fini(&e);
	return r;
}
