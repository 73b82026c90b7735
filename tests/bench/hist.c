/* hist.c: log-linear latency histogram; see hist.h for the bucket layout.
 *
 * A bucket index is found from the position of the value's top bit and the
 * HIST_SUB_BITS bits below it, so recording is a few instructions and the
 * memory is the same whether a run records ten samples or ten million. */
#include "hist.h"

#include <string.h>

void hist_reset(struct hist *h)
{
	memset(h, 0, sizeof(*h));
}

static unsigned bucket_of(uint64_t v)
{
	if (v < HIST_SUB)
		return (unsigned)v;
	if (v >> HIST_MAX_BITS)
		v = (UINT64_C(1) << HIST_MAX_BITS) - 1;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);
	unsigned shift = msb - HIST_SUB_BITS + 1; /* >= 1 */
	unsigned mant = (unsigned)(v >> shift);   /* in [HALF, SUB) */
	return HIST_SUB + (shift - 1) * HIST_HALF + (mant - HIST_HALF);
}

/* The middle of a bucket's range: the value reported for it. */
static uint64_t bucket_mid(unsigned idx)
{
	if (idx < HIST_SUB)
		return idx;
	unsigned k = idx - HIST_SUB;
	unsigned shift = k / HIST_HALF + 1;
	uint64_t low = (uint64_t)(HIST_HALF + k % HIST_HALF) << shift;
	return low + (UINT64_C(1) << shift) / 2;
}

void hist_add(struct hist *h, uint64_t ns)
{
	h->bucket[bucket_of(ns)]++;
	h->count++;
	if (ns > h->max)
		h->max = ns;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
	if (h->count == 0)
		return 0;
	uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank) {
			uint64_t v = bucket_mid(i);
			return v < h->max ? v : h->max;
		}
	}
	return h->max;
}
