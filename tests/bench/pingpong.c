/* pingpong.c: N connections, each with exactly one request outstanding.
 *
 * Every connection sends, waits for the full reply, checks it and sends
 * again at once. After the warm-up the measured phase runs until the
 * request count or the duration is reached, whichever comes first; the
 * latency of a request is from its write() to the end of the epoll_wait()
 * that reported its reply. */
#include "engine.h"

static bool pingpong_reply(struct engine *e, unsigned i, uint64_t now)
{
	if (e->measuring) {
		hist_add(&e->res->hist, now - e->cl[i].t_op);
		if (++e->res->ops >= e->o->max_ops)
			return true;
	}
	engine_send(e, i, engine_now());
	return false;
}

int pingpong_run(const struct lg_opts *o, struct lg_result *res)
{
	static const struct engine_mode mode = { .on_reply = pingpong_reply };
	struct engine e;
	int r = engine_init(&e, o, res, o->conns);
	if (r < 0)
		return r;
	uint64_t start = engine_now();
	for (unsigned i = 0; i < o->conns; i++)
		engine_open(&e, i, start);
	r = engine_run(&e, &mode, start + engine_sec_to_ns(o->warmup_s));
	uint64_t now = engine_now();
	engine_measure_begin(&e, now);
	if (r == 0)
		r = engine_run(&e, &mode, now + engine_sec_to_ns(o->duration_s));
	engine_measure_end(&e, engine_now());
	engine_fini(&e);
	return r;
}
