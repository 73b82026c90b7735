/* loadgen.h: options and results shared by the load generator's modes.
 *
 * The generator is one epoll loop on one (optionally pinned) CPU. Every
 * mode is the same client cycle -- connect, send the request, read the
 * whole expected reply -- followed by something different: pingpong sends
 * again, churn closes and reconnects, hold keeps the connection idle.
 *
 * Pingpong and churn can drive up to LG_MAX_TARGETS servers in one run,
 * taking turns in short slices (A B C A B C ...): only one server is loaded
 * at a time, and each sees the same moments of a noisy machine, so their
 * ratios are far steadier than those of runs made one after the other. */
#ifndef LOADGEN_H
#define LOADGEN_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "hist.h"

#define LG_MSG_MAX 256
#define LG_PROXY_V2_LEN 28 /* a v2 header for TCP over IPv4 */
#define LG_MAX_TARGETS 6

enum lg_mode { LG_PINGPONG, LG_CHURN, LG_HOLD };

struct lg_target {
	struct sockaddr_in dst;
	pid_t pid;            /* 0: server not sampled */
	char request[LG_MSG_MAX];
	size_t request_len;
	char reply[LG_MSG_MAX];
	size_t reply_len;
	/* A connection's first write: the request, or with --proxy-v2 a PROXY
	 * v2 header and the request, so that both go in one segment. */
	struct in_addr proxy_src; /* INADDR_ANY: no header */
	char first[LG_PROXY_V2_LEN + LG_MSG_MAX];
	size_t first_len;
};

struct lg_opts {
	enum lg_mode mode;
	struct lg_target target[LG_MAX_TARGETS];
	unsigned ntargets;
	unsigned conns;       /* per target: pingpong connections, churn
	                         workers, hold connections */
	unsigned inflight;    /* hold: connection attempts in flight at once */
	double warmup_s;      /* pingpong, churn: unmeasured start */
	double duration_s;    /* measured time limit; hold: idle hold time */
	double slice_s;       /* turn length */
	double rest_s;        /* pause with no load after each turn */
	uint64_t max_ops;     /* measured requests or cycles per target */
	uint64_t max_errors;  /* stop early past this many errors in all */
	double timeout_s;     /* per connect or per reply */
	int cpu;              /* -1: not pinned */
	unsigned src_addrs;   /* 0: kernel's choice; else 127.0.0.2 .. */
	bool rst;             /* close with RST (SO_LINGER {1,0}) */
};

/* One per target. Times and CPU figures cover the measured phase; for the
 * load generator's own CPU and the wall time, only the target's turns. */
struct lg_result {
	uint64_t ops;         /* measured requests (pingpong) or cycles (churn) */
	uint64_t errors;
	uint64_t ns;          /* measured wall time of the target's turns */
	int64_t srv_cpu_us;   /* server utime+stime (clock ticks); -1 if unknown */
	int64_t srv_run_ns;   /* the same to the ns, from schedstat; -1 if unknown */
	int64_t srv_wait_ns;  /* server's time waiting for its CPU; -1 if unknown */
	int64_t own_cpu_us;   /* the load generator's own utime+stime */
	int64_t own_wait_ns;  /* the same for the load generator */
	uint64_t held;        /* hold: connections still open at the end */
	int64_t rss_before;   /* hold: server VmRSS before / while holding */
	int64_t rss_held;
	struct hist hist;     /* latency in ns */
};

/* Each fills res[0 .. o->ntargets - 1]; 0 or -errno for a setup failure. */
int pingpong_run(const struct lg_opts *o, struct lg_result *res);
int churn_run(const struct lg_opts *o, struct lg_result *res);
int hold_run(const struct lg_opts *o, struct lg_result *res);

#endif
