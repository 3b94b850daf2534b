/*
 * The forwarding engine: moves frames from RX rings to TX rings under
 * netmap's head/cur/tail protocol. It touches only slots user space owns,
 * keeps order, moves NS_MOREFRAG chains whole, swaps buffers (zero-copy)
 * or copies them, and counts every frame it does not forward.
 */
#ifndef NMB_ENGINE_H
#define NMB_ENGINE_H

#include <stdint.h>
#include <sys/uio.h>

#include "abi.h"
#include "offload.h"
#include "stats.h"

/*
 * What the engine remembers of an RX ring between calls. A chain that can
 * never complete is dropped with the slots it has; discard then says that
 * the slots still to come up to its end belong to it and are dropped too.
 */
/*
 * What the engine asks of each frame besides moving it, when the bridge has a
 * filter or a capture (the loop sets them; engine.c calls only through these
 * pointers). A NULL function is not called.
 */
struct nmb_frame_hooks {
	/* whether the frame crosses (0: dropped, counted as filtered); pkt: its first
	 * buflen bytes (its first slot's, after the header), wirelen: all its bytes */
	int (*match)(const void *filter, const uint8_t *pkt, uint32_t buflen, uint32_t wirelen);
	const void *filter;
	/* a copy of a frame that crosses, for the capture's writer: 1 taken, 0 not
	 * (its ring full: counted as capture_dropped), -1 left out by its own filter;
	 * never blocks */
	int (*capture)(void *cap, uint32_t dir, const struct iovec *iov, int niov, uint32_t len);
	void *cap;
	uint32_t dir; /* the direction, as the capture names it: 0 from port 0, 1 from port 1 */
};

struct nmb_rx_state {
	uint32_t discard;
	uint32_t hdr;                  /* header bytes in front of each frame: not counted as bytes */
	const struct nmb_xlate *xlate; /* NULL: frames move untouched (offload.h) */
	const struct nmb_frame_hooks *hooks; /* NULL: no filter, no capture */
	uint32_t tx_need;              /* TX slots the translated frame at the RX head waits for */
};

/* Move up to limit frames from rx to tx; returns the frames forwarded. */
uint32_t nmb_ring_move(struct netmap_ring *rx, struct netmap_ring *tx, uint32_t limit,
		       int zerocopy, struct nmb_rx_state *st, struct nmb_ring_stats *rxs,
		       struct nmb_ring_stats *txs);

/*
 * Forward up to quota frames from RX ring number r (rx; st and rxs its own)
 * to the TX rings in tx[] (txs[] their stats): tx[r % ntx] first, then the
 * following ones while that one is full. nmb_forward and the loop's last
 * pass under --count both map rings so: a ring's frames must not take another
 * TX ring than the one its earlier frames wait on (they would leave first).
 * Returns the frames forwarded.
 */
static inline uint32_t nmb_forward_ring(struct netmap_ring *rx, uint32_t r,
					struct netmap_ring *const *tx, uint32_t ntx,
					uint32_t quota, int zerocopy, struct nmb_rx_state *st,
					struct nmb_ring_stats *rxs, struct nmb_ring_stats *txs)
{
	uint32_t left = quota;

	for (uint32_t j = 0; j < ntx && left > 0; j++) {
		uint32_t t = (r + j) % ntx;

		if (rx->head == rx->tail)
			break;
		left -= nmb_ring_move(rx, tx[t], left, zerocopy, st, rxs, &txs[t]);
		/* the TX ring took all it could: try the next one only if it is full */
		if (nmb_ring_space(tx[t]) != 0)
			break;
	}
	return quota - left;
}

/*
 * Forward from every RX ring in rx[] to the TX rings in tx[], fairly: each
 * RX ring gets up to burst frames per pass, starting from *next_rx, which
 * rotates so that no ring is always served first. RX ring i feeds TX ring
 * i % ntx, spilling to the following TX rings while that one is full.
 * Returns the frames forwarded.
 */
uint32_t nmb_forward(struct netmap_ring *const *rx, uint32_t nrx, struct netmap_ring *const *tx,
		     uint32_t ntx, uint32_t burst, int zerocopy, struct nmb_rx_state *st,
		     struct nmb_ring_stats *rxs, struct nmb_ring_stats *txs, uint32_t *next_rx);

/*
 * Frames the engine could not move yet (waiting for TX room or the count):
 * nonzero if an RX ring's cur is short of its tail. A chain that waits for
 * its last slots has cur at tail and does not count: it needs an rxsync.
 */
int nmb_rx_pending(struct netmap_ring *const *rx, uint32_t nrx);

/*
 * Nonzero if the frame at the head of an RX ring (a chain) needs more slots
 * than a TX ring has free, while that ring has some free (rx[r] feeds
 * tx[r % ntx] and spills to the next ones). A native NIC driver then reclaims
 * no finished TX slot in the
 * txsync of poll(), only in NIOCTXSYNC's (NAF_FORCE_RECLAIM) or once no slot
 * is free, so the frame waits for ever unless the caller forces a reclaim.
 * st (the RX rings' states, or NULL): a translated frame needs the slots its
 * translation said (a super-frame's segments take more than its chain).
 */
int nmb_tx_short(struct netmap_ring *const *rx, uint32_t nrx, struct netmap_ring *const *tx,
		 uint32_t ntx, const struct nmb_rx_state *st);

#endif
