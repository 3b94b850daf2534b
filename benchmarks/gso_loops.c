/*
 * The measured loops of benchmarks/gso.py, compiled at run time with the C
 * core's own compiler flags and loaded into the same process as the core.
 *
 * nmb_gso_segment is called through a pointer to the installed core's
 * function; between two calls C hands the whole TX ring back (head 0, all
 * slots free), O(1). The baseline copies the same bytes the segmenter writes
 * with memcpy, buffer by buffer, and sums nothing. Each function times its
 * whole loop with CLOCK_MONOTONIC.
 */
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "abi.h"
#include "offload.h"

typedef int (*segment_fn)(const struct nmb_vnet_hdr *vh, const struct nmb_frame_in *f,
			  struct nmb_tx_out *out, uint32_t *need);

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* iters super-frames segmented; *segs gets the segments, -1 if a call failed */
int64_t bench_gso(void *fn, const struct nmb_vnet_hdr *vh, const struct nmb_frame_in *f,
		  struct netmap_ring *ring, uint64_t iters, uint64_t *segs)
{
	segment_fn seg = (segment_fn)fn;
	struct nmb_tx_out out;
	uint32_t need;
	int64_t t0 = now_ns();

	*segs = 0;
	for (uint64_t i = 0; i < iters; i++) {
		memset(&out, 0, sizeof(out));
		out.ring = ring;
		out.room = ring->num_slots - 1;
		int n = seg(vh, f, &out, &need);
		if (n <= 0)
			return -1;
		*segs += (uint64_t)n;
	}
	return now_ns() - t0;
}

/* iters times, bytes copied from src into consecutive slots' buffers, filled in full */
int64_t bench_copy(const uint8_t *src, uint32_t bytes, struct netmap_ring *ring, uint64_t iters)
{
	uint32_t bs = ring->nr_buf_size;
	int64_t t0 = now_ns();

	for (uint64_t i = 0; i < iters; i++) {
		uint32_t done = 0, s = 0;
		while (done < bytes) {
			uint32_t piece = bytes - done < bs ? bytes - done : bs;
			memcpy(nmb_slot_buf(ring, ring->slot[s].buf_idx), src + done, piece);
			ring->slot[s].len = (uint16_t)piece;
			done += piece;
			s++;
		}
	}
	return now_ns() - t0;
}
