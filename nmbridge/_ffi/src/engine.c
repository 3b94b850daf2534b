#include <string.h>
#include <sys/uio.h>

#include "engine.h"

/*
 * Walk the chain that starts at slot i: returns its slot count, or 0 if
 * the chain is not complete before tail. *bytes gets its length and
 * *oversize whether any slot is longer than max_len.
 */
static uint32_t chain_at(const struct netmap_ring *rx, uint32_t i, uint32_t tail,
			 uint32_t max_len, uint64_t *bytes, int *oversize)
{
	uint32_t n = 0;

	*bytes = 0;
	*oversize = 0;
	while (i != tail) {
		const struct netmap_slot *s = &rx->slot[i];
		n++;
		*bytes += s->len;
		if (s->len > max_len)
			*oversize = 1;
		if (!(s->flags & NS_MOREFRAG))
			return n;
		i = nmb_ring_next(rx, i);
	}
	return 0;
}

static uint32_t advance(const struct netmap_ring *ring, uint32_t i, uint32_t n)
{
	i += n;
	return i >= ring->num_slots ? i - ring->num_slots : i;
}

/* Release the slots up to the end of a chain dropped earlier; returns the new head. */
static uint32_t discard_rest(const struct netmap_ring *rx, uint32_t i, uint32_t tail,
			     struct nmb_rx_state *st)
{
	while (st->discard && i != tail) {
		if (!(rx->slot[i].flags & NS_MOREFRAG))
			st->discard = 0;
		i = nmb_ring_next(rx, i);
	}
	return i;
}

/*
 * The common case, kept tight: single-slot frames that fit, up to n of
 * them (n no more than both rings have). Runs of slots that do not wrap are
 * walked without wrap checks, the ring geometry held in locals. Stops at
 * the first slot the general path must see (a chain, an oversize slot);
 * returns the frames moved and advances *rxh, *txh and *bytes.
 */
static uint32_t move_simple(struct netmap_ring *rx, struct netmap_ring *tx, uint32_t *rxh,
			    uint32_t *txh, uint32_t n, uint32_t max_len, int zerocopy,
			    uint64_t *bytes)
{
	const uint32_t rxn = rx->num_slots, txn = tx->num_slots;
	const uint32_t rbs = rx->nr_buf_size, tbs = tx->nr_buf_size;
	char *const rbase = (char *)rx + rx->buf_ofs, *const tbase = (char *)tx + tx->buf_ofs;
	uint32_t i = *rxh, j = *txh, done = 0;
	uint64_t b = 0;

	while (done < n) {
		struct netmap_slot *rs = &rx->slot[i], *ts = &tx->slot[j];
		uint32_t run = n - done, k;

		if (run > rxn - i)
			run = rxn - i;
		if (run > txn - j)
			run = txn - j;
		if (zerocopy) {
			for (k = 0; k < run; k++) {
				uint16_t len = rs[k].len, flags = rs[k].flags;
				uint32_t idx = ts[k].buf_idx;

				if ((flags & NS_MOREFRAG) || len > max_len)
					break;
				ts[k].buf_idx = rs[k].buf_idx;
				rs[k].buf_idx = idx;
				rs[k].flags = flags | NS_BUF_CHANGED;
				ts[k].flags = NS_BUF_CHANGED;
				ts[k].len = len;
				b += len;
			}
		} else {
			for (k = 0; k < run; k++) {
				uint16_t len = rs[k].len;

				if ((rs[k].flags & NS_MOREFRAG) || len > max_len)
					break;
				memcpy(tbase + (uint64_t)ts[k].buf_idx * tbs,
				       rbase + (uint64_t)rs[k].buf_idx * rbs, len);
				ts[k].flags = 0;
				ts[k].len = len;
				b += len;
			}
		}
		done += k;
		i += k;
		j += k;
		if (i == rxn)
			i = 0;
		if (j == txn)
			j = 0;
		if (k < run)
			break;
	}
	*rxh = i;
	*txh = j;
	*bytes += b;
	return done;
}

/*
 * A chain without its last slot at rxh: it waits for that slot (returns 1),
 * unless it can never complete (it fills the ring, or is longer than netmap
 * allows): then it is dropped and counted, its slots up to rxt released and
 * the rest marked for discard_rest (returns 0).
 */
static int chain_waits_at(const struct netmap_ring *rx, uint32_t *rxh, uint32_t rxt,
			  struct nmb_rx_state *st, struct nmb_ring_stats *rxs)
{
	uint32_t have = nmb_ring_dist(rx, *rxh, rxt);

	if (have >= rx->num_slots - 1 || have >= NETMAP_MAX_FRAGS) {
		rxs->drop_chain++;
		*rxh = rxt;
		st->discard = 1;
		return 0;
	}
	return 1;
}

/* Whether the whole frame of n slots at *rxh must be dropped: if so it is counted and skipped. */
static int drop_frame(const struct netmap_ring *rx, const struct netmap_ring *tx, uint32_t *rxh,
		      uint32_t n, int oversize, struct nmb_ring_stats *rxs)
{
	/* longer than netmap allows is a chain drop whatever it holds, as when it arrives cut */
	if (n <= NETMAP_MAX_FRAGS && oversize)
		rxs->drop_oversize++;
	else if (n > NETMAP_MAX_FRAGS || n > tx->num_slots - 1)
		rxs->drop_chain++;
	else
		return 0;
	*rxh = advance(rx, *rxh, n);
	return 1;
}

/* Move the n slots of one frame (a chain) from *rxh to *txh, NS_MOREFRAG kept. */
static void move_chain(struct netmap_ring *rx, struct netmap_ring *tx, uint32_t *rxh,
		       uint32_t *txh, uint32_t n, int zerocopy)
{
	for (uint32_t k = 0; k < n; k++) {
		struct netmap_slot *rs = &rx->slot[*rxh], *ts = &tx->slot[*txh];
		uint16_t more = rs->flags & NS_MOREFRAG;

		if (zerocopy) {
			uint32_t idx = ts->buf_idx;
			ts->buf_idx = rs->buf_idx;
			rs->buf_idx = idx;
			rs->flags |= NS_BUF_CHANGED;
			ts->flags = more | NS_BUF_CHANGED;
		} else {
			memcpy(nmb_slot_buf(tx, ts->buf_idx), nmb_slot_buf(rx, rs->buf_idx), rs->len);
			ts->flags = more;
		}
		ts->len = rs->len;
		*rxh = nmb_ring_next(rx, *rxh);
		*txh = nmb_ring_next(tx, *txh);
	}
}

/* a head and a tail that are slots of the ring */
static int in_ring(const struct netmap_ring *ring, uint32_t head, uint32_t tail)
{
	return head < ring->num_slots && tail < ring->num_slots;
}

/*
 * The end of a move: the RX slots up to rxh and the TX slots up to txh handed
 * over. cur is netmap's wakeup point: poll(POLLIN) returns while cur != tail.
 * A chain that waits for its last slots puts it at tail, so that the next
 * poll sleeps until the kernel brings them (and is asked at all).
 */
static void hand_back(struct netmap_ring *rx, struct netmap_ring *tx, uint32_t rxh, uint32_t rxt,
		      uint32_t txh, int chain_waits)
{
	rx->head = rxh;
	rx->cur = chain_waits ? rxt : rxh;
	tx->head = tx->cur = txh;
}

/* ------------------------------------------------------------ translation */

/*
 * Between ports whose frames differ (offload.h, struct nmb_xlate): each frame
 * is copied, its header taken off or put on, its checksum finished or the
 * super-frame segmented where the TX side cannot take them. One frame at a
 * time, never split: a frame whose output does not fit the TX ring's free
 * slots waits, as a chain does.
 */

/* the offload a header asks of the TX side (NMB_OFL_*), 0 for none, -1 for one nobody takes */
static int offload_needed(const struct nmb_vnet_hdr *vh)
{
	int need = (vh->flags & NMB_VNET_F_NEEDS_CSUM) ? NMB_OFL_CSUM : 0;

	switch (vh->gso_type & ~NMB_VNET_GSO_ECN) {
	case NMB_VNET_GSO_NONE:
		return need;
	case NMB_VNET_GSO_TCPV4:
		need |= NMB_OFL_TSO4;
		break;
	case NMB_VNET_GSO_TCPV6:
		need |= NMB_OFL_TSO6;
		break;
	case NMB_VNET_GSO_UDP_L4:
		need |= NMB_OFL_USO;
		break;
	default:
		return -1;
	}
	if (vh->gso_type & NMB_VNET_GSO_ECN)
		need |= NMB_OFL_TSO_ECN;
	return need;
}

/*
 * The frame of n slots at slot i as iovs (its header, hdr bytes, left out and
 * copied to *vh, zero when there is none). Returns 0, -1 if a slot says it
 * holds more than its buffer, -2 if the first is shorter than the header.
 */
static int frame_iov(const struct netmap_ring *rx, uint32_t i, uint32_t n, uint32_t hdr,
		     struct iovec *iov, struct nmb_frame_in *f, struct nmb_vnet_hdr *vh)
{
	f->iov = iov;
	f->niov = (int)n;
	f->len = 0;
	memset(vh, 0, sizeof(*vh));
	for (uint32_t k = 0; k < n; k++, i = nmb_ring_next(rx, i)) {
		const struct netmap_slot *s = &rx->slot[i];
		char *buf = nmb_slot_buf(rx, s->buf_idx);
		uint32_t skip = k == 0 ? hdr : 0;

		if (s->len > rx->nr_buf_size)
			return -1;
		if (s->len < skip)
			return -2;
		if (k == 0 && hdr > 0)
			memcpy(vh, buf, hdr < sizeof(*vh) ? hdr : sizeof(*vh));
		iov[k].iov_base = buf + skip;
		iov[k].iov_len = s->len - skip;
		f->len += s->len - skip;
	}
	return 0;
}

/* Writes a frame's bytes into consecutive TX slots, each buffer filled before the next. */
struct slot_writer {
	struct netmap_ring *ring;
	uint32_t slot; /* the slot being filled */
	uint32_t off;  /* bytes in it so far */
};

static void write_bytes(struct slot_writer *w, const void *src, uint32_t len)
{
	const char *p = src;
	uint32_t bs = w->ring->nr_buf_size;

	while (len > 0) {
		struct netmap_slot *s = &w->ring->slot[w->slot];
		uint32_t piece = bs - w->off;

		if (piece == 0) {
			s->flags = NS_MOREFRAG;
			w->slot = nmb_ring_next(w->ring, w->slot);
			w->off = 0;
			continue;
		}
		if (piece > len)
			piece = len;
		memcpy(nmb_slot_buf(w->ring, w->ring->slot[w->slot].buf_idx) + w->off, p, piece);
		w->off += piece;
		s->len = (uint16_t)w->off;
		s->flags = 0;
		p += piece;
		len -= piece;
	}
}

/* the slots a frame of len bytes takes in buffers of bs */
static uint32_t slots_for(uint32_t len, uint32_t bs)
{
	return len == 0 ? 1 : (len + bs - 1) / bs;
}

enum xlate_result { XL_SENT, XL_WAIT, XL_DROPPED };

/*
 * Copy the frame f (its header vh) to the TX ring at *txh behind dst_hdr
 * bytes of header: the header as it is, less what the TX side does not take
 * (a checksum it cannot finish is finished here).
 */
static enum xlate_result copy_frame(const struct nmb_xlate *x, const struct nmb_frame_in *f,
				    struct nmb_vnet_hdr vh, struct netmap_ring *tx, uint32_t *txh,
				    uint32_t *tx_room, uint32_t *need, struct nmb_ring_stats *rxs,
				    struct nmb_ring_stats *txs)
{
	uint32_t bs = tx->nr_buf_size, total = x->dst_hdr + f->len;
	uint32_t n = slots_for(total, bs), first = *txh;
	struct slot_writer w = {tx, first, 0};
	int finish = (vh.flags & NMB_VNET_F_NEEDS_CSUM) && !(x->dst_offloads & NMB_OFL_CSUM);

	if (n > NETMAP_MAX_FRAGS || n > tx->num_slots - 1) {
		rxs->drop_chain++;
		return XL_DROPPED;
	}
	if (n > *tx_room) {
		*need = n;
		rxs->txfull++;
		return XL_WAIT;
	}
	if (finish)
		vh.flags &= (uint8_t)~NMB_VNET_F_NEEDS_CSUM;
	tx->slot[first].len = 0;
	tx->slot[first].flags = 0;
	if (x->dst_hdr > 0) {
		uint8_t head[NMB_VNET_HDR_MRG_LEN] = {0};

		memcpy(head, &vh, sizeof(vh));
		write_bytes(&w, head, x->dst_hdr);
	}
	for (int k = 0; k < f->niov; k++)
		write_bytes(&w, f->iov[k].iov_base, (uint32_t)f->iov[k].iov_len);
	if (finish) {
		if (nmb_csum_finish(tx, first, total, x->dst_hdr + vh.csum_start,
					    vh.csum_offset) < 0) {
			rxs->drop_header++; /* a header not checked that does not fit */
			return XL_DROPPED;
		}
		txs->csum_sw++;
	}
	*txh = (first + n) % tx->num_slots;
	*tx_room -= n;
	txs->frames++;
	txs->bytes += f->len;
	return XL_SENT;
}

/* One frame of n slots at rx slot i, as the TX side takes it (XL_WAIT: *tx_need TX slots). */
static enum xlate_result xlate_frame(const struct nmb_xlate *x, const struct netmap_ring *rx,
				     uint32_t i, uint32_t n, struct netmap_ring *tx, uint32_t *txh,
				     uint32_t *tx_room, uint32_t *tx_need, struct nmb_ring_stats *rxs,
				     struct nmb_ring_stats *txs)
{
	struct iovec iov[NETMAP_MAX_FRAGS];
	struct nmb_frame_in f;
	struct nmb_vnet_hdr vh;
	int need;

	int bad = frame_iov(rx, i, n, x->src_hdr, iov, &f, &vh);

	if (bad == -1) {
		rxs->drop_oversize++;
		return XL_DROPPED;
	}
	if (bad == -2 || (x->src_hdr > 0 && x->check && nmb_vnet_check(&vh, &f) < 0)) {
		rxs->drop_header++;
		return XL_DROPPED;
	}
	need = offload_needed(&vh);
	if (need < 0) {
		rxs->drop_gso++;
		return XL_DROPPED;
	}
	/* a super-frame the TX side cannot take whole is segmented here */
	if (vh.gso_type != NMB_VNET_GSO_NONE && (x->dst_hdr == 0 || (need & ~(int)x->dst_offloads))) {
		struct nmb_tx_out out = {tx, *txh, *tx_room, x->dst_hdr, 0, x->dst_max_frame};
		uint32_t want = 0;
		int segs;

		/* checked at import too; here as well, for its price is nothing beside the
		 * segmenting: the segmenter is never given a header it was not promised */
		if (!x->check && nmb_vnet_check(&vh, &f) < 0) {
			rxs->drop_header++;
			return XL_DROPPED;
		}
		segs = nmb_gso_segment(&vh, &f, &out, &want);

		if (segs == 0 && want <= tx->num_slots - 1) {
			*tx_need = want;
			rxs->txfull++;
			return XL_WAIT;
		}
		if (segs <= 0) {
			rxs->drop_gso++;
			return XL_DROPPED;
		}
		*txh = out.head;
		*tx_room = out.room;
		rxs->gso_frames++;
		txs->gso_segments += (uint64_t)segs;
		txs->frames += (uint64_t)segs;
		txs->bytes += out.bytes;
		return XL_SENT;
	}
	return copy_frame(x, &f, vh, tx, txh, tx_room, tx_need, rxs, txs);
}

/* ------------------------------------------------------------ one frame at a time */

/* Whether the filter lets the frame of n slots at slot i (hdr bytes of header) cross. */
static int frame_passes(const struct nmb_frame_hooks *h, const struct netmap_ring *rx,
			uint32_t i, uint32_t hdr, uint64_t len)
{
	const struct netmap_slot *s = &rx->slot[i];

	if (s->len > rx->nr_buf_size || s->len < hdr)
		return 0;
	return h->match(h->filter, (const uint8_t *)nmb_slot_buf(rx, s->buf_idx) + hdr,
			s->len - hdr, (uint32_t)(len - hdr));
}

/* Hand a copy of the frame of n slots at slot i to the capture, and count what it did. */
static void capture_frame(const struct nmb_frame_hooks *h, const struct netmap_ring *rx,
			  uint32_t i, uint32_t n, uint32_t hdr, struct nmb_ring_stats *rxs)
{
	struct iovec iov[NETMAP_MAX_FRAGS];
	struct nmb_frame_in f;
	struct nmb_vnet_hdr vh;
	int r;

	if (frame_iov(rx, i, n, hdr, iov, &f, &vh) < 0)
		return;
	r = h->capture(h->cap, h->dir, f.iov, f.niov, f.len);
	if (r > 0)
		rxs->captured++;
	else if (r == 0)
		rxs->capture_dropped++;
}

/*
 * The engine one frame at a time: what a filter, a capture or a translation
 * needs (nmb_ring_move's fast path moves runs of frames without looking at
 * them). A frame the filter refuses is released and counted; one that
 * crosses is captured before its buffers move (zero-copy gives them away).
 */
static uint32_t ring_frames(struct netmap_ring *rx, struct netmap_ring *tx, uint32_t limit,
			    int zerocopy, struct nmb_rx_state *st, struct nmb_ring_stats *rxs,
			    struct nmb_ring_stats *txs)
{
	const struct nmb_frame_hooks *h = st->hooks;
	uint32_t rxh = rx->head, rxt = rx->tail;
	uint32_t txh = tx->head, txt = tx->tail;
	uint32_t tx_room = nmb_ring_dist(tx, txh, txt), frames = 0, hdr = st->hdr;
	uint32_t max_len = tx->nr_buf_size < rx->nr_buf_size ? tx->nr_buf_size : rx->nr_buf_size;
	int chain_waits = 0;

	st->tx_need = 0;
	if (!in_ring(rx, rxh, rxt) || !in_ring(tx, txh, txt))
		return 0; /* a ring we cannot trust is left alone; the port resyncs it */
	rxh = discard_rest(rx, rxh, rxt, st);
	while (frames < limit && rxh != rxt) {
		uint64_t len;
		int oversize;
		uint32_t n = chain_at(rx, rxh, rxt, max_len, &len, &oversize), first = rxh;

		if (n == 0) {
			chain_waits = chain_waits_at(rx, &rxh, rxt, st, rxs);
			break;
		}
		if (n > NETMAP_MAX_FRAGS) {
			rxs->drop_chain++;
			rxh = advance(rx, rxh, n);
			continue;
		}
		if (h != NULL && h->match != NULL && !frame_passes(h, rx, rxh, hdr, len)) {
			rxs->filtered++;
			rxh = advance(rx, rxh, n);
			continue;
		}
		if (st->xlate != NULL) {
			enum xlate_result r = xlate_frame(st->xlate, rx, rxh, n, tx, &txh, &tx_room,
							  &st->tx_need, rxs, txs);
			if (r == XL_WAIT)
				break;
			rxh = advance(rx, rxh, n);
			if (r != XL_SENT)
				continue;
			/* copied: the RX slots still hold the frame */
			if (h != NULL && h->capture != NULL)
				capture_frame(h, rx, first, n, hdr, rxs);
		} else {
			if (drop_frame(rx, tx, &rxh, n, oversize, rxs))
				continue;
			if (n > tx_room) {
				rxs->txfull++;
				break;
			}
			if (h != NULL && h->capture != NULL)
				capture_frame(h, rx, rxh, n, hdr, rxs);
			move_chain(rx, tx, &rxh, &txh, n, zerocopy);
			tx_room -= n;
			txs->frames++;
			txs->bytes += len - hdr;
		}
		frames++;
		rxs->bytes += len - hdr;
	}
	hand_back(rx, tx, rxh, rxt, txh, chain_waits);
	rxs->frames += frames;
	return frames;
}

uint32_t nmb_ring_move(struct netmap_ring *rx, struct netmap_ring *tx, uint32_t limit,
		       int zerocopy, struct nmb_rx_state *st, struct nmb_ring_stats *rxs,
		       struct nmb_ring_stats *txs)
{
	uint32_t rxh = rx->head, rxt = rx->tail;
	uint32_t txh = tx->head, txt = tx->tail;
	uint32_t tx_room = nmb_ring_dist(tx, txh, txt);
	uint32_t max_len = tx->nr_buf_size < rx->nr_buf_size ? tx->nr_buf_size : rx->nr_buf_size;
	uint32_t frames = 0;
	uint64_t bytes = 0;
	int chain_waits = 0;

	if (st->xlate != NULL || st->hooks != NULL)
		return ring_frames(rx, tx, limit, zerocopy, st, rxs, txs);
	if (!in_ring(rx, rxh, rxt) || !in_ring(tx, txh, txt))
		return 0; /* a ring we cannot trust is left alone; the port resyncs it */
	rxh = discard_rest(rx, rxh, rxt, st);

	while (frames < limit && rxh != rxt) {
		uint64_t len;
		int oversize;
		uint32_t n = nmb_ring_dist(rx, rxh, rxt);

		if (n > limit - frames)
			n = limit - frames;
		if (n > tx_room)
			n = tx_room;
		if (n > 0) {
			n = move_simple(rx, tx, &rxh, &txh, n, max_len, zerocopy, &bytes);
			frames += n;
			tx_room -= n;
			if (frames == limit || rxh == rxt)
				break;
		}
		/* a chain, an oversize slot, or no room in TX: one frame the general way */
		n = chain_at(rx, rxh, rxt, max_len, &len, &oversize);
		if (n == 0) {
			chain_waits = chain_waits_at(rx, &rxh, rxt, st, rxs);
			break;
		}
		if (drop_frame(rx, tx, &rxh, n, oversize, rxs))
			continue;
		if (n > tx_room) {
			rxs->txfull++;
			break;
		}
		move_chain(rx, tx, &rxh, &txh, n, zerocopy);
		tx_room -= n;
		frames++;
		bytes += len;
	}
	hand_back(rx, tx, rxh, rxt, txh, chain_waits);
	bytes -= (uint64_t)frames * st->hdr; /* Ethernet bytes: the headers are not counted */
	rxs->frames += frames;
	rxs->bytes += bytes;
	txs->frames += frames;
	txs->bytes += bytes;
	return frames;
}

uint32_t nmb_forward(struct netmap_ring *const *rx, uint32_t nrx, struct netmap_ring *const *tx,
		     uint32_t ntx, uint32_t burst, int zerocopy, struct nmb_rx_state *st,
		     struct nmb_ring_stats *rxs, struct nmb_ring_stats *txs, uint32_t *next_rx)
{
	uint32_t total = 0;

	if (nrx == 0 || ntx == 0)
		return 0;
	if (*next_rx >= nrx)
		*next_rx = 0;
	for (uint32_t k = 0; k < nrx; k++) {
		uint32_t r = *next_rx + k;

		if (r >= nrx)
			r -= nrx;
		total += nmb_forward_ring(rx[r], r, tx, ntx, burst, zerocopy, &st[r], &rxs[r], txs);
	}
	*next_rx = *next_rx + 1 >= nrx ? 0 : *next_rx + 1;
	return total;
}

int nmb_rx_pending(struct netmap_ring *const *rx, uint32_t nrx)
{
	for (uint32_t r = 0; r < nrx; r++)
		if (rx[r]->cur != rx[r]->tail)
			return 1;
	return 0;
}

int nmb_tx_short(struct netmap_ring *const *rx, uint32_t nrx, struct netmap_ring *const *tx,
		 uint32_t ntx, const struct nmb_rx_state *st)
{
	for (uint32_t r = 0; r < nrx && ntx > 0; r++) {
		const struct netmap_ring *ring = rx[r];
		uint64_t bytes;
		int oversize;
		uint32_t n;

		if (ring->cur == ring->tail || ring->head >= ring->num_slots ||
		    ring->tail >= ring->num_slots)
			continue;
		n = chain_at(ring, ring->head, ring->tail, UINT32_MAX, &bytes, &oversize);
		if (st != NULL && st[r].tx_need > n)
			n = st[r].tx_need; /* its segments, or its copy cut to other buffers */
		/* any TX ring: the engine spills to the next ones, and poll() reclaims none
		 * of them once one has room (it stops asking the others) */
		for (uint32_t j = 0; j < ntx; j++) {
			const struct netmap_ring *t = tx[j];
			uint32_t room;

			if (t->head >= t->num_slots || t->tail >= t->num_slots)
				continue;
			room = nmb_ring_space(t);
			if (room > 0 && room < n)
				return 1;
		}
	}
	return 0;
}
