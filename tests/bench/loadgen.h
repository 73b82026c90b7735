/* loadgen.h: options and results shared by the load generator's modes.
 *
 * The generator is one epoll loop on one (optionally pinned) CPU. Every
 * mode is the same client cycle -- connect, send the request, read the
 * whole expected reply -- followed by something different: pingpong sends
 * again, churn closes and reconnects, hold keeps the connection idle. */
#ifndef LOADGEN_H
#define LOADGEN_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "hist.h"

#define LG_MSG_MAX 256

enum lg_mode { LG_PINGPONG, LG_CHURN, LG_HOLD };

struct lg_opts {
	enum lg_mode mode;
	struct sockaddr_in dst;
	unsigned conns;       /* pingpong connections, churn workers, hold count */
	unsigned inflight;    /* hold: connection attempts in flight at once */
	double warmup_s;      /* pingpong, churn: unmeasured start */
	double duration_s;    /* measured time limit; hold: idle hold time */
	uint64_t max_ops;     /* measured requests or cycles limit */
	uint64_t max_errors;  /* stop early past this many errors */
	double timeout_s;     /* per connect or per reply */
	char request[LG_MSG_MAX];
	size_t request_len;
	char reply[LG_MSG_MAX];
	size_t reply_len;
	int cpu;              /* -1: not pinned */
	unsigned src_addrs;   /* 0: kernel's choice; else 127.0.0.2 .. */
	bool rst;             /* close with RST (SO_LINGER {1,0}) */
	pid_t server_pid;     /* 0: server not sampled */
};

struct lg_result {
	uint64_t ops;         /* measured requests (pingpong) or cycles (churn) */
	uint64_t errors;
	uint64_t ns;          /* measured wall time */
	int64_t srv_cpu_us;   /* server utime+stime over it; -1 if unknown */
	int64_t own_cpu_us;   /* the load generator's own utime+stime over it */
	int64_t srv_wait_ns;  /* server's time waiting for its CPU; -1 if unknown */
	int64_t own_wait_ns;  /* the same for the load generator */
	uint64_t held;        /* hold: connections still open at the end */
	int64_t rss_before;   /* hold: server VmRSS before / while holding */
	int64_t rss_held;
	struct hist hist;     /* latency in ns */
};

int pingpong_run(const struct lg_opts *o, struct lg_result *res);
int churn_run(const struct lg_opts *o, struct lg_result *res);
int hold_run(const struct lg_opts *o, struct lg_result *res);

#endif
