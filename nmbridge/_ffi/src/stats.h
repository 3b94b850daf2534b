/*
 * Per-ring counters. Each ring of a bridge has one record; only the loop
 * writes it. Records are published to the shared stats file under a
 * sequence counter so that a reader in another process never sees a torn
 * snapshot (see counters.c and nmbridge/counters.py).
 */
#ifndef NMB_STATS_H
#define NMB_STATS_H

#include <stdint.h>

struct nmb_ring_stats {
	uint64_t frames;        /* frames moved through this ring */
	uint64_t bytes;         /* their bytes */
	uint64_t drop_oversize; /* frames dropped: a slot longer than the destination buffer, or truncated */
	uint64_t drop_chain;    /* frames dropped: a NS_MOREFRAG chain that is too long or never ends */
	uint64_t drop_rx;       /* frames the port lost before they reached the ring (socket or kernel drops),
				   or that were still on it, or in the port's socket, when the bridge stopped */
	uint64_t drop_tx;       /* frames the port failed to transmit, or could not before the stop */
	uint64_t txfull;        /* times the TX ring was full while frames waited on this RX ring */
	uint64_t syncs;         /* syncs of this ring */
	uint64_t errors;        /* ring errors recovered from (POLLERR, reinit) */
	uint64_t drop_header;   /* frames dropped: a virtio-net header that does not fit its frame */
	uint64_t drop_gso;      /* frames dropped: a super-frame the TX side cannot take and that cannot be segmented */
	uint64_t gso_frames;    /* RX: super-frames segmented in software for the TX side */
	uint64_t gso_segments;  /* TX: the segments made of them */
	uint64_t csum_sw;       /* TX: checksums finished in software for the TX side */
	uint64_t filtered;      /* RX: frames the filter did not let cross (dropped) */
	uint64_t captured;      /* RX: frames that crossed and were handed to the capture */
	uint64_t capture_dropped; /* RX: frames that crossed but the capture could not take (its ring full) */
	uint64_t spare[7];
};

/* The shared part: a header then one record per ring. */
struct nmb_stats_shared {
	uint64_t seq;           /* odd while the loop writes */
	uint64_t heartbeat_ns;  /* CLOCK_MONOTONIC of the last publish */
	uint64_t nrings;
	uint64_t state;         /* NMB_STATE_* */
	uint64_t spare[4];
	struct nmb_ring_stats ring[];
};

#define NMB_STATE_STARTING 0
#define NMB_STATE_RUNNING 1
#define NMB_STATE_LINK_WAIT 2
#define NMB_STATE_STOPPED 3

void nmb_stats_publish(struct nmb_stats_shared *shared, const struct nmb_ring_stats *rings,
		       uint32_t nrings, uint64_t state);

#endif
