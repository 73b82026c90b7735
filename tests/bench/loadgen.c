/* loadgen.c: command line, process setup and the result lines of the load
 * generator used by tests/bench/run.
 *
 *   loadgen pingpong|churn|hold --port P [options]   (see usage() below)
 *
 * Whatever the mode, the last line printed on stdout is one machine-readable
 * "RESULT mode=... key=value ..." line; human-readable notes go to stderr.
 * The exit status is 0 when the run completed without a single error. */
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
	fputs("usage: loadgen pingpong|churn|hold --port PORT [options]\n"
	      "  --host ADDR        server IPv4 address (127.0.0.1)\n"
	      "  --port PORT        server port (required)\n"
	      "  --conns N          connections (pingpong), workers (churn),\n"
	      "                     connections to hold (hold) (64 / 64 / 1000)\n"
	      "  --warmup SEC       unmeasured start (1)\n"
	      "  --duration SEC     measured time limit; hold: idle hold time (5)\n"
	      "  --requests N       measured requests or cycles limit (100000000)\n"
	      "  --inflight N       hold: connection attempts at once (256)\n"
	      "  --timeout SEC      limit per connect and per reply (5)\n"
	      "  --max-errors N     stop once more cycles than this failed (100)\n"
	      "  --request STR      bytes to send, with \\r \\n \\t \\\\ \\xHH (ping)\n"
	      "  --reply STR        exact reply expected, same escapes (Hi!)\n"
	      "  --cpu N            pin to CPU N\n"
	      "  --src-addrs K      bind to 127.0.0.2 .. 127.0.0.(K+1) in turn; default\n"
	      "                     16 for hold, and for churn without --rst; else 0\n"
	      "  --rst              close with RST (SO_LINGER {1,0}): no TIME_WAIT\n"
	      "  --server-pid PID   measure the server's CPU time (and RSS for hold)\n",
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
	OPT_SRC_ADDRS, OPT_RST, OPT_SERVER_PID, OPT_HELP,
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
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

/* Apply one option; -1 (after a message) when its value is invalid. */
static int apply_opt(struct lg_opts *o, int c, const char *arg, int *port, int *src)
{
	unsigned long long v = 0;
	int bad = 0;
	switch (c) {
	case OPT_HOST: bad = inet_pton(AF_INET, arg, &o->dst.sin_addr) != 1; break;
	case OPT_PORT: bad = parse_uint(arg, 65535, &v) || v == 0; *port = (int)v; break;
	case OPT_CONNS: bad = parse_uint(arg, 1000000, &v) || v == 0; o->conns = (unsigned)v; break;
	case OPT_WARMUP: bad = parse_secs(arg, &o->warmup_s); break;
	case OPT_DURATION: bad = parse_secs(arg, &o->duration_s); break;
	case OPT_REQUESTS: bad = parse_uint(arg, UINT64_MAX, &v) || v == 0; o->max_ops = v; break;
	case OPT_INFLIGHT: bad = parse_uint(arg, 1000000, &v) || v == 0; o->inflight = (unsigned)v; break;
	case OPT_TIMEOUT: bad = parse_secs(arg, &o->timeout_s); break;
	case OPT_MAX_ERRORS: bad = parse_uint(arg, UINT64_MAX, &v); o->max_errors = v; break;
	case OPT_REQUEST: bad = parse_escapes(arg, o->request, &o->request_len); break;
	case OPT_REPLY: bad = parse_escapes(arg, o->reply, &o->reply_len); break;
	case OPT_CPU: bad = parse_uint(arg, CPU_SETSIZE - 1, &v); o->cpu = (int)v; break;
	case OPT_SRC_ADDRS: bad = parse_uint(arg, 250, &v); *src = (int)v; break;
	case OPT_RST: o->rst = true; break;
	case OPT_SERVER_PID: bad = parse_uint(arg, INT_MAX, &v) || v == 0; o->server_pid = (pid_t)v; break;
	default: return -1;
	}
	if (bad)
		fprintf(stderr, "loadgen: invalid value '%s'\n", arg);
	return bad ? -1 : 0;
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

static void set_defaults(struct lg_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->dst.sin_family = AF_INET;
	o->dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	o->inflight = 256;
	o->warmup_s = 1;
	o->duration_s = 5;
	o->max_ops = 100000000;
	o->max_errors = 100;
	o->timeout_s = 5;
	o->cpu = -1;
	parse_escapes("ping", o->request, &o->request_len);
	parse_escapes("Hi!", o->reply, &o->reply_len);
}

static int parse_args(int argc, char **argv, struct lg_opts *o)
{
	int port = 0, src = -1, c;
	set_defaults(o);
	while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
		if (c == OPT_HELP) {
			usage(stdout);
			exit(0);
		}
		if (apply_opt(o, c, optarg, &port, &src) < 0) {
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc - 1 || parse_mode(argv[optind], &o->mode) < 0 || port == 0) {
		usage(stderr);
		return -1;
	}
	o->dst.sin_port = htons((uint16_t)port);
	if (o->conns == 0)
		o->conns = o->mode == LG_HOLD ? 1000 : 64;
	bool spread = o->mode == LG_HOLD || (o->mode == LG_CHURN && !o->rst);
	o->src_addrs = src >= 0 ? (unsigned)src : spread ? 16 : 0;
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

static void print_cpu(const struct lg_result *r, const char *per)
{
	print_pct("lg_cpu_pct", r->own_cpu_us < 0 ? -1 : r->own_cpu_us * 1000, r->ns);
	print_pct("lg_wait_pct", r->own_wait_ns, r->ns);
	print_pct("srv_wait_pct", r->srv_wait_ns, r->ns);
	if (r->srv_cpu_us < 0)
		return;
	print_pct("srv_cpu_pct", r->srv_cpu_us * 1000, r->ns);
	double per_op = r->ops ? (double)r->srv_cpu_us / (double)r->ops : 0;
	printf(" srv_cpu_us=%lld cpu_us_per_%s=%.3f", (long long)r->srv_cpu_us, per, per_op);
}

static void print_cycles(const struct lg_opts *o, const struct lg_result *r)
{
	bool pp = o->mode == LG_PINGPONG;
	double secs = (double)r->ns / 1e9;
	double rate = secs > 0 ? (double)r->ops / secs : 0;
	printf("RESULT mode=%s conns=%u %s=%llu seconds=%.3f %s=%.0f", pp ? "pingpong" : "churn",
	       o->conns, pp ? "requests" : "cycles", (unsigned long long)r->ops, secs,
	       pp ? "rps" : "cps", rate);
	print_latency(&r->hist);
	print_cpu(r, pp ? "req" : "conn");
	printf(" errors=%llu\n", (unsigned long long)r->errors);
}

static void print_hold(const struct lg_opts *o, const struct lg_result *r)
{
	printf("RESULT mode=hold conns=%u held=%llu errors=%llu setup_seconds=%.3f",
	       o->conns, (unsigned long long)r->held, (unsigned long long)r->errors,
	       (double)r->ns / 1e9);
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
	static struct lg_result res; /* static: the histogram is 60 KB */
	struct lg_opts o;
	if (parse_args(argc, argv, &o) < 0)
		return 2;
	if (raise_nofile() < 0 || (o.cpu >= 0 && pin_cpu(o.cpu) < 0))
		return 1;
	int r;
	switch (o.mode) {
	case LG_PINGPONG: r = pingpong_run(&o, &res); break;
	case LG_CHURN: r = churn_run(&o, &res); break;
	default: r = hold_run(&o, &res); break;
	}
	if (o.mode == LG_HOLD)
		print_hold(&o, &res);
	else
		print_cycles(&o, &res);
	if (fflush(stdout) != 0) {
		fprintf(stderr, "loadgen: writing results: %s\n", strerror(errno));
		return 1;
	}
	return r == 0 && res.errors == 0 ? 0 : 1;
}
