/* pingpong.c: N connections per target, each with one request outstanding.
 *
 * Every connection sends, waits for the full reply, checks it and sends
 * again at once, as long as it is its target's turn. All connections are
 * opened at the start and stay open. The latency of a request is from its
 * write() to the end of the epoll_wait() that reported its reply. */
#include "engine.h"

static void pingpong_reply(struct engine *e, unsigned i, uint64_t now)
{
	unsigned t = e->cl[i].target;
	engine_count(e, t, now - e->cl[i].t_op);
	if (engine_may_send(e, t))
		engine_send(e, i, engine_now());
	else
		engine_ready(e, i);
}

static void pingpong_turn(struct engine *e, unsigned t, uint64_t now)
{
	(void)now;
	unsigned conns = e->o->conns;
	for (unsigned i = t * conns; i < (t + 1) * conns; i++)
		if (e->cl[i].state == CL_READY)
			engine_send(e, i, engine_now());
}

int pingpong_run(const struct lg_opts *o, struct lg_result *res)
{
	static const struct engine_mode mode = {
		.on_reply = pingpong_reply,
		.on_turn_start = pingpong_turn,
	};
	struct engine e;
	int r = engine_init(&e, o, res);
	if (r < 0)
		return r;
	uint64_t now = engine_now();
	for (unsigned i = 0; i < e.n; i++)
		engine_open(&e, i, now);
	r = engine_measure(&e, &mode);
	engine_fini(&e);
	return r;
}
