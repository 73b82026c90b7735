/* loadgen.c: command line, process setup and the result lines of the load
 * generator used by tests/bench/run.
 *
 *   loadgen pingpong|churn|hold --port P [options]   (see usage() below)
 *
 * Each --port names one target server (up to LG_MAX_TARGETS for pingpong
 * and churn, which then take turns). Whatever the mode, stdout ends with
 * one machine-readable "RESULT mode=... target=N port=P key=value ..." line
 * per target; human-readable notes go to stderr. The exit status is 0 when
 * the run completed without a single error. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "loadgen.h"

static void usage(FILE *f)
{
	fputs("usage: loadgen pingpong|churn|hold --port PORT [target options]\n"
	      "               [--port PORT [target options]]... [options]\n"
	      "Target options apply to the --port before them, or to every target\n"
	      "when given before the first --port:\n"
	      "  --host ADDR        server IPv4 address (127.0.0.1)\n"
	      "  --server-pid PID   measure the server's CPU time (and RSS for hold)\n"
	      "  --request STR      bytes to send, with \\r \\n \\t \\\\ \\xHH (ping)\n"
	      "  --reply STR        exact reply expected, same escapes (Hi!)\n"
	      "  --proxy-v2 ADDR    open each connection with a PROXY v2 header (TCP4,\n"
	      "                     client ADDR port 50000), written with the first\n"
	      "                     request in one write\n"
	      "Options:\n"
	      "  --conns N          per target: connections (pingpong), workers (churn),\n"
	      "                     connections to hold (hold) (64 / 64 / 1000)\n"
	      "  --slice SEC        length of a target's turn (0.1)\n"
	      "  --rest SEC         pause with no load after each turn (0.01); keeps\n"
	      "                     SCHED_FIFO use under the kernel's 95% RT limit\n"
	      "  --warmup SEC       unmeasured start (1)\n"
	      "  --duration SEC     measured time limit; hold: idle hold time (5)\n"
	      "  --requests N       measured requests or cycles per target (100000000)\n"
	      "  --inflight N       hold: connection attempts at once (256)\n"
	      "  --timeout SEC      limit per connect and per reply (5)\n"
	      "  --max-errors N     stop once more cycles than this failed (100)\n"
	      "  --cpu N            pin to CPU N\n"
	      "  --src-addrs K      bind to 127.0.0.2 .. 127.0.0.(K+1) in turn; default\n"
	      "                     16 for hold, and for churn without --rst; else 0\n"
	      "  --rst              close with RST (SO_LINGER {1,0}): no TIME_WAIT\n",
	      f);
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode \r \n \t \\ and \xHH (two hex digits); -1 if bad or empty. */
static int parse_escapes(const char *s, char *out, size_t *len)
{
	size_t n = 0;
	for (; *s; s++) {
		if (n == LG_MSG_MAX)
			return -1;
		if (*s != '\\') {
			out[n++] = *s;
			continue;
		}
		s++;
		switch (*s) {
		case 'r': out[n++] = '\r'; break;
		case 'n': out[n++] = '\n'; break;
		case 't': out[n++] = '\t'; break;
		case '\\': out[n++] = '\\'; break;
		case 'x': {
			int hi = hex_digit(s[1]), lo = hi < 0 ? -1 : hex_digit(s[2]);
			if (lo < 0)
				return -1;
			out[n++] = (char)(hi * 16 + lo);
			s += 2;
			break;
		}
		default:
			return -1;
		}
	}
	*len = n;
	return n > 0 ? 0 : -1;
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *v)
{
	char *end;
	errno = 0;
	unsigned long long x = strtoull(s, &end, 10);
	if (errno || end == s || *end || x > max || *s == '-')
		return -1;
	*v = x;
	return 0;
}

static int parse_secs(const char *s, double *v)
{
	char *end;
	double x = strtod(s, &end);
	if (end == s || *end || !(x >= 0 && x <= 86400))
		return -1;
	*v = x;
	return 0;
}

enum {
	OPT_HOST = 256, OPT_PORT, OPT_CONNS, OPT_WARMUP, OPT_DURATION, OPT_REQUESTS,
	OPT_INFLIGHT, OPT_TIMEOUT, OPT_MAX_ERRORS, OPT_REQUEST, OPT_REPLY, OPT_CPU,
	OPT_SRC_ADDRS, OPT_RST, OPT_SERVER_PID, OPT_SLICE, OPT_REST, OPT_PROXY_V2, OPT_HELP,
};

static const struct option long_opts[] = {
	{ "host", required_argument, NULL, OPT_HOST },
	{ "port", required_argument, NULL, OPT_PORT },
	{ "conns", required_argument, NULL, OPT_CONNS },
	{ "warmup", required_argument, NULL, OPT_WARMUP },
	{ "duration", required_argument, NULL, OPT_DURATION },
	{ "requests", required_argument, NULL, OPT_REQUESTS },
	{ "inflight", required_argument, NULL, OPT_INFLIGHT },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "max-errors", required_argument, NULL, OPT_MAX_ERRORS },
	{ "request", required_argument, NULL, OPT_REQUEST },
	{ "reply", required_argument, NULL, OPT_REPLY },
	{ "cpu", required_argument, NULL, OPT_CPU },
	{ "src-addrs", required_argument, NULL, OPT_SRC_ADDRS },
	{ "rst", no_argument, NULL, OPT_RST },
	{ "server-pid", required_argument, NULL, OPT_SERVER_PID },
	{ "slice", required_argument, NULL, OPT_SLICE },
	{ "rest", required_argument, NULL, OPT_REST },
	{ "proxy-v2", required_argument, NULL, OPT_PROXY_V2 },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

/* While parsing: the target that target options apply to. */
struct parse_state {
	struct lg_target defaults; /* before the first --port */
	struct lg_target *cur;
	int src_addrs;             /* -1: not given */
};

static int add_target(struct lg_opts *o, struct parse_state *ps, unsigned port)
{
	if (o->ntargets == LG_MAX_TARGETS) {
		fprintf(stderr, "loadgen: at most %d targets\n", LG_MAX_TARGETS);
		return -1;
	}
	ps->cur = &o->target[o->ntargets++];
	*ps->cur = ps->defaults;
	ps->cur->dst.sin_port = htons((uint16_t)port);
	return 0;
}

static int apply_target_opt(struct lg_target *t, int c, const char *arg)
{
	unsigned long long v;
	switch (c) {
	case OPT_HOST: return inet_pton(AF_INET, arg, &t->dst.sin_addr) == 1 ? 0 : -1;
	case OPT_REQUEST: return parse_escapes(arg, t->request, &t->request_len);
	case OPT_REPLY: return parse_escapes(arg, t->reply, &t->reply_len);
	case OPT_PROXY_V2:
		return inet_pton(AF_INET, arg, &t->proxy_src) == 1 && t->proxy_src.s_addr ? 0 : -1;
	default:
		if (parse_uint(arg, INT_MAX, &v) || v == 0)
			return -1;
		t->pid = (pid_t)v;
		return 0;
	}
}

/* Apply one option; -1 (after a message) when its value is invalid. */
static int apply_opt(struct lg_opts *o, struct parse_state *ps, int c, const char *arg)
{
	unsigned long long v = 0;
	int bad = 0;
	switch (c) {
	case OPT_HOST: case OPT_REQUEST: case OPT_REPLY: case OPT_SERVER_PID: case OPT_PROXY_V2:
		bad = apply_target_opt(ps->cur ? ps->cur : &ps->defaults, c, arg); break;
	case OPT_PORT:
		if (parse_uint(arg, 65535, &v) || v == 0)
			bad = 1;
		else if (add_target(o, ps, (unsigned)v) < 0)
			return -1;
		break;
	case OPT_CONNS: bad = parse_uint(arg, 100000, &v) || v == 0; o->conns = (unsigned)v; break;
	case OPT_WARMUP: bad = parse_secs(arg, &o->warmup_s); break;
	case OPT_DURATION: bad = parse_secs(arg, &o->duration_s); break;
	case OPT_SLICE: bad = parse_secs(arg, &o->slice_s) || o->slice_s < 0.001; break;
	case OPT_REST: bad = parse_secs(arg, &o->rest_s); break;
	case OPT_REQUESTS: bad = parse_uint(arg, UINT64_MAX, &v) || v == 0; o->max_ops = v; break;
	case OPT_INFLIGHT: bad = parse_uint(arg, 1000000, &v) || v == 0; o->inflight = (unsigned)v; break;
	case OPT_TIMEOUT: bad = parse_secs(arg, &o->timeout_s); break;
	case OPT_MAX_ERRORS: bad = parse_uint(arg, UINT64_MAX, &v); o->max_errors = v; break;
	case OPT_CPU: bad = parse_uint(arg, CPU_SETSIZE - 1, &v); o->cpu = (int)v; break;
	case OPT_SRC_ADDRS: bad = parse_uint(arg, 250, &v); ps->src_addrs = (int)v; break;
	case OPT_RST: o->rst = true; break;
	default: return -1;
	}
	if (bad)
		fprintf(stderr, "loadgen: invalid value '%s'\n", arg);
	return bad ? -1 : 0;
}

/* The first write of a connection: with a PROXY v2 header (command PROXY,
 * TCP over IPv4, the fake client ADDR:50000 to the target) in front when
 * --proxy-v2 was given, else the request alone. */
static void build_first(struct lg_target *t)
{
	static const char sig[12] = "\r\n\r\n\0\r\nQUIT\n";
	unsigned char *h = (unsigned char *)t->first;
	size_t n = 0;
	if (t->proxy_src.s_addr != INADDR_ANY) {
		uint16_t len = htons(12), sport = htons(50000);
		memcpy(h, sig, sizeof(sig));
		h[12] = 0x21; /* version 2, PROXY */
		h[13] = 0x11; /* AF_INET, STREAM */
		memcpy(h + 14, &len, 2);
		memcpy(h + 16, &t->proxy_src, 4);
		memcpy(h + 20, &t->dst.sin_addr, 4);
		memcpy(h + 24, &sport, 2);
		memcpy(h + 26, &t->dst.sin_port, 2);
		n = LG_PROXY_V2_LEN;
	}
	memcpy(t->first + n, t->request, t->request_len);
	t->first_len = n + t->request_len;
}

static int parse_mode(const char *s, enum lg_mode *m)
{
	static const char *const names[] = { "pingpong", "churn", "hold" };
	for (int i = 0; i < 3; i++)
		if (strcmp(s, names[i]) == 0) {
			*m = (enum lg_mode)i;
			return 0;
		}
	fprintf(stderr, "loadgen: unknown mode '%s'\n", s);
	return -1;
}

static void set_defaults(struct lg_opts *o, struct parse_state *ps)
{
	memset(o, 0, sizeof(*o));
	memset(ps, 0, sizeof(*ps));
	ps->src_addrs = -1;
	ps->defaults.dst.sin_family = AF_INET;
	ps->defaults.dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	parse_escapes("ping", ps->defaults.request, &ps->defaults.request_len);
	parse_escapes("Hi!", ps->defaults.reply, &ps->defaults.reply_len);
	o->inflight = 256;
	o->warmup_s = 1;
	o->duration_s = 5;
	o->slice_s = 0.1;
	o->rest_s = 0.01;
	o->max_ops = 100000000;
	o->max_errors = 100;
	o->timeout_s = 5;
	o->cpu = -1;
}

static int parse_args(int argc, char **argv, struct lg_opts *o)
{
	struct parse_state ps;
	int c;
	set_defaults(o, &ps);
	while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
		if (c == OPT_HELP) {
			usage(stdout);
			exit(0);
		}
		if (apply_opt(o, &ps, c, optarg) < 0) {
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc - 1 || parse_mode(argv[optind], &o->mode) < 0 || o->ntargets == 0) {
		usage(stderr);
		return -1;
	}
	if (o->mode == LG_HOLD && o->ntargets > 1) {
		fprintf(stderr, "loadgen: hold takes a single --port\n");
		return -1;
	}
	if (o->conns == 0)
		o->conns = o->mode == LG_HOLD ? 1000 : 64;
	for (unsigned t = 0; t < o->ntargets; t++)
		build_first(&o->target[t]);
	bool spread = o->mode == LG_HOLD || (o->mode == LG_CHURN && !o->rst);
	o->src_addrs = ps.src_addrs >= 0 ? (unsigned)ps.src_addrs : spread ? 16 : 0;
	return 0;
}

/* Raise the soft fd limit to the hard one: hold mode needs thousands. */
static int raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		fprintf(stderr, "loadgen: getrlimit(NOFILE): %s\n", strerror(errno));
		return -1;
	}
	if (rl.rlim_cur == rl.rlim_max)
		return 0;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		fprintf(stderr, "loadgen: setrlimit(NOFILE): %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

static int pin_cpu(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0) {
		fprintf(stderr, "loadgen: pinning to CPU %d: %s\n", cpu, strerror(errno));
		return -1;
	}
	return 0;
}

static double us(uint64_t ns)
{
	return (double)ns / 1000.0;
}

static void print_latency(const struct hist *h)
{
	printf(" p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f",
	       us(hist_quantile(h, 0.50)), us(hist_quantile(h, 0.90)),
	       us(hist_quantile(h, 0.99)), us(hist_quantile(h, 0.999)), us(h->max));
}

/* A share of the measured wall time, in percent: " name=12.3", or nothing
 * when the figure is unknown. */
static void print_pct(const char *name, int64_t part_ns, uint64_t wall_ns)
{
	if (part_ns >= 0 && wall_ns > 0)
		printf(" %s=%.1f", name, 100.0 * (double)part_ns / (double)wall_ns);
}

/* CPU per request or cycle uses the server's schedstat on-CPU time: the
 * same quantity as utime+stime but not rounded to 10 ms clock ticks, which
 * would be a 1% step in a 1-second run. */
static void print_cpu(const struct lg_result *r, const char *per)
{
	print_pct("lg_cpu_pct", r->own_cpu_us < 0 ? -1 : r->own_cpu_us * 1000, r->ns);
	print_pct("lg_wait_pct", r->own_wait_ns, r->ns);
	print_pct("srv_wait_pct", r->srv_wait_ns, r->ns);
	print_pct("srv_cpu_pct", r->srv_run_ns, r->ns);
	if (r->srv_cpu_us >= 0)
		printf(" srv_cpu_us=%lld", (long long)r->srv_cpu_us);
	if (r->srv_run_ns >= 0 && r->ops > 0)
		printf(" srv_run_us=%.0f cpu_us_per_%s=%.3f", (double)r->srv_run_ns / 1e3, per,
		       (double)r->srv_run_ns / 1e3 / (double)r->ops);
}

static void print_head(const struct lg_opts *o, unsigned t, const char *mode)
{
	printf("RESULT mode=%s target=%u port=%u conns=%u", mode, t,
	       (unsigned)ntohs(o->target[t].dst.sin_port), o->conns);
}

static void print_cycles(const struct lg_opts *o, unsigned t, const struct lg_result *r)
{
	bool pp = o->mode == LG_PINGPONG;
	double secs = (double)r->ns / 1e9;
	double rate = secs > 0 ? (double)r->ops / secs : 0;
	print_head(o, t, pp ? "pingpong" : "churn");
	printf(" %s=%llu seconds=%.3f %s=%.0f", pp ? "requests" : "cycles",
	       (unsigned long long)r->ops, secs, pp ? "rps" : "cps", rate);
	print_latency(&r->hist);
	print_cpu(r, pp ? "req" : "conn");
	printf(" errors=%llu\n", (unsigned long long)r->errors);
}

static void print_hold(const struct lg_opts *o, const struct lg_result *r)
{
	print_head(o, 0, "hold");
	printf(" held=%llu errors=%llu setup_seconds=%.3f", (unsigned long long)r->held,
	       (unsigned long long)r->errors, (double)r->ns / 1e9);
	if (r->rss_before >= 0 && r->rss_held >= 0) {
		long long grow = (long long)(r->rss_held - r->rss_before);
		printf(" rss_before=%lld rss_held=%lld rss_bytes_per_conn=%.1f",
		       (long long)r->rss_before, (long long)r->rss_held,
		       r->held ? (double)grow / (double)r->held : 0.0);
	}
	printf("\n");
}

int main(int argc, char **argv)
{
	static struct lg_result res[LG_MAX_TARGETS]; /* static: 60 KB histograms */
	struct lg_opts o;
	if (parse_args(argc, argv, &o) < 0)
		return 2;
	if (raise_nofile() < 0 || (o.cpu >= 0 && pin_cpu(o.cpu) < 0))
		return 1;
	int r;
	switch (o.mode) {
	case LG_PINGPONG: r = pingpong_run(&o, res); break;
	case LG_CHURN: r = churn_run(&o, res); break;
	default: r = hold_run(&o, res); break;
	}
	uint64_t errors = 0;
	for (unsigned t = 0; t < o.ntargets; t++) {
		errors += res[t].errors;
		if (o.mode == LG_HOLD)
			print_hold(&o, &res[t]);
		else
			print_cycles(&o, t, &res[t]);
	}
	if (fflush(stdout) != 0) {
		fprintf(stderr, "loadgen: writing results: %s\n", strerror(errno));
		return 1;
	}
	return r == 0 && errors == 0 ? 0 : 1;
}
