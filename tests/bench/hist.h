/* hist.h: a log-linear latency histogram (values in nanoseconds).
 *
 * Fixed size, no allocation while recording: values below 256 ns have a
 * bucket each; above that, each power of two is split into 128 buckets, so
 * a reported percentile is within 0.4% of the true value. The maximum is
 * kept exactly. */
#ifndef HIST_H
#define HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 8
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_HALF (HIST_SUB / 2)
#define HIST_MAX_BITS 40 /* values are clamped below 2^40 ns (~18 min) */
#define HIST_BUCKETS (HIST_SUB + (HIST_MAX_BITS - HIST_SUB_BITS) * HIST_HALF)

struct hist {
	uint64_t count;
	uint64_t max;
	uint64_t bucket[HIST_BUCKETS];
};

void hist_reset(struct hist *h);
void hist_add(struct hist *h, uint64_t ns);
/* The value at quantile q (0 < q <= 1), in ns; 0 for an empty histogram. */
uint64_t hist_quantile(const struct hist *h, double q);

#endif
