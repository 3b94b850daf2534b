#include <string.h>
#include <time.h>

#include "stats.h"

static uint64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A seqlock with one writer: readers retry while seq is odd or changed. */
void nmb_stats_publish(struct nmb_stats_shared *shared, const struct nmb_ring_stats *rings,
		       uint32_t nrings, uint64_t state)
{
	uint64_t seq = __atomic_load_n(&shared->seq, __ATOMIC_RELAXED);

	__atomic_store_n(&shared->seq, seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	memcpy(shared->ring, rings, sizeof(*rings) * nrings);
	shared->nrings = nrings;
	shared->state = state;
	shared->heartbeat_ns = monotonic_ns();
	__atomic_thread_fence(__ATOMIC_RELEASE);
	__atomic_store_n(&shared->seq, seq + 2, __ATOMIC_RELAXED);
}
