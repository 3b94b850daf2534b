/*
 * The measured loops of benchmarks/engine.py, compiled at run time with the
 * C core's own compiler flags and loaded into the same process as the core.
 *
 * The engine is called through pointers to the functions of the installed
 * core (nmbridge._ffi._core), so what is measured is the engine users run.
 * The baselines run on the same rings: the plainest zero-copy swap loop,
 * the plainest copy loop, and memcpy of one block per burst. Between two
 * bursts C plays the kernel in O(1): every RX slot the kernel owns is
 * filled again, every TX slot handed over is sent. No Python runs between
 * bursts; each function times its whole loop with CLOCK_MONOTONIC.
 */
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "abi.h"
#include "stats.h"

/* the engine's per-RX-ring state: opaque here */
struct nmb_rx_state;

/* nmb_forward and nmb_ring_move, as engine.h declares them */
typedef uint32_t (*forward_fn)(struct netmap_ring *const *rx, uint32_t nrx,
			       struct netmap_ring *const *tx, uint32_t ntx, uint32_t burst,
			       int zerocopy, struct nmb_rx_state *st, struct nmb_ring_stats *rxs,
			       struct nmb_ring_stats *txs, uint32_t *next_rx);
typedef uint32_t (*move_fn)(struct netmap_ring *rx, struct netmap_ring *tx, uint32_t limit,
			    int zerocopy, struct nmb_rx_state *st, struct nmb_ring_stats *rxs,
			    struct nmb_ring_stats *txs);

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The kernel's side, as cheap as it gets: RX full again, TX all sent. */
static inline void kernel_sync(struct netmap_ring *rx, struct netmap_ring *tx)
{
	rx->tail = rx->head == 0 ? rx->num_slots - 1 : rx->head - 1;
	tx->tail = tx->head == 0 ? tx->num_slots - 1 : tx->head - 1;
}

/* Fresh rings: every RX slot holds a frame of len bytes, TX all free. */
void bench_prepare(struct netmap_ring *rx, struct netmap_ring *tx, uint16_t len)
{
	for (uint32_t i = 0; i < rx->num_slots; i++) {
		rx->slot[i].len = len;
		rx->slot[i].flags = 0;
		memset(nmb_slot_buf(rx, rx->slot[i].buf_idx), 0x5a, len);
	}
	for (uint32_t i = 0; i < tx->num_slots; i++) {
		tx->slot[i].len = 0;
		tx->slot[i].flags = 0;
	}
	rx->head = rx->cur = rx->tail = 0;
	tx->head = tx->cur = 0;
	tx->tail = tx->num_slots - 1;
}

/* The first n bytes of every buffer of both rings (zero-copy swaps them): frames with
 * real headers, for a filter to look at. */
void bench_stamp(struct netmap_ring *rx, struct netmap_ring *tx, const void *hdr, uint16_t n)
{
	for (uint32_t i = 0; i < rx->num_slots; i++)
		memcpy(nmb_slot_buf(rx, rx->slot[i].buf_idx), hdr, n);
	for (uint32_t i = 0; i < tx->num_slots; i++)
		memcpy(nmb_slot_buf(tx, tx->slot[i].buf_idx), hdr, n);
}

/* nmb_forward with one RX and one TX ring, as the loop calls it; returns ns. */
int64_t bench_forward(void *fn, struct netmap_ring *rx, struct netmap_ring *tx, uint32_t burst,
		      int zerocopy, uint64_t iters, struct nmb_rx_state *st,
		      struct nmb_ring_stats *rxs, struct nmb_ring_stats *txs, uint64_t *frames)
{
	forward_fn f = (forward_fn)fn;
	struct netmap_ring *rxv[1] = {rx}, *txv[1] = {tx};
	uint32_t next_rx = 0;
	uint64_t moved = 0;
	int64_t t0 = now_ns();

	for (uint64_t k = 0; k < iters; k++) {
		kernel_sync(rx, tx);
		moved += f(rxv, 1, txv, 1, burst, zerocopy, st, rxs, txs, &next_rx);
	}
	*frames = moved;
	return now_ns() - t0;
}

/* nmb_ring_move on one ring pair; returns ns. */
int64_t bench_move(void *fn, struct netmap_ring *rx, struct netmap_ring *tx, uint32_t burst,
		   int zerocopy, uint64_t iters, struct nmb_rx_state *st,
		   struct nmb_ring_stats *rxs, struct nmb_ring_stats *txs, uint64_t *frames)
{
	move_fn f = (move_fn)fn;
	uint64_t moved = 0;
	int64_t t0 = now_ns();

	for (uint64_t k = 0; k < iters; k++) {
		kernel_sync(rx, tx);
		moved += f(rx, tx, burst, zerocopy, st, rxs, txs);
	}
	*frames = moved;
	return now_ns() - t0;
}

/* How many slots the plain loops may move now: the burst, capped by both rings. */
static inline uint32_t plain_count(const struct netmap_ring *rx, const struct netmap_ring *tx,
				   uint32_t burst)
{
	uint32_t have = nmb_ring_space(rx), room = nmb_ring_space(tx);
	uint32_t n = have < room ? have : room;

	return n < burst ? n : burst;
}

/*
 * The plainest zero-copy loop: swap buf_idx, copy len, mark both slots
 * NS_BUF_CHANGED (what netmap requires), advance head and cur. No chains,
 * no checks, no counters. The loop is kept out of line, as the engine is.
 */
__attribute__((noinline)) static uint32_t plain_swap(struct netmap_ring *rx,
						     struct netmap_ring *tx, uint32_t burst)
{
	uint32_t n = plain_count(rx, tx, burst), i = rx->head, j = tx->head;

	for (uint32_t k = 0; k < n; k++) {
		struct netmap_slot *rs = &rx->slot[i], *ts = &tx->slot[j];
		uint32_t idx = ts->buf_idx;

		ts->buf_idx = rs->buf_idx;
		rs->buf_idx = idx;
		ts->len = rs->len;
		ts->flags = NS_BUF_CHANGED;
		rs->flags |= NS_BUF_CHANGED;
		i = nmb_ring_next(rx, i);
		j = nmb_ring_next(tx, j);
	}
	rx->head = rx->cur = i;
	tx->head = tx->cur = j;
	return n;
}

/* The plainest copy loop: memcpy each frame into the TX slot's buffer. */
__attribute__((noinline)) static uint32_t plain_copy(struct netmap_ring *rx,
						     struct netmap_ring *tx, uint32_t burst)
{
	uint32_t n = plain_count(rx, tx, burst), i = rx->head, j = tx->head;

	for (uint32_t k = 0; k < n; k++) {
		struct netmap_slot *rs = &rx->slot[i], *ts = &tx->slot[j];

		memcpy(nmb_slot_buf(tx, ts->buf_idx), nmb_slot_buf(rx, rs->buf_idx), rs->len);
		ts->len = rs->len;
		ts->flags = 0;
		i = nmb_ring_next(rx, i);
		j = nmb_ring_next(tx, j);
	}
	rx->head = rx->cur = i;
	tx->head = tx->cur = j;
	return n;
}

int64_t bench_plain(int zerocopy, struct netmap_ring *rx, struct netmap_ring *tx, uint32_t burst,
		    uint64_t iters, uint64_t *frames)
{
	uint64_t moved = 0;
	int64_t t0 = now_ns();

	for (uint64_t k = 0; k < iters; k++) {
		kernel_sync(rx, tx);
		moved += zerocopy ? plain_swap(rx, tx, burst) : plain_copy(rx, tx, burst);
	}
	*frames = moved;
	return now_ns() - t0;
}

/*
 * memcpy bandwidth: one block of chunk bytes per burst, walking through
 * span bytes of source and destination (the size of the rings' buffers, so
 * that the caches see as much memory as the ring loops do); returns ns.
 */
int64_t bench_memcpy(char *dst, const char *src, uint64_t chunk, uint64_t span, uint64_t iters)
{
	uint64_t off = 0;
	int64_t t0 = now_ns();

	for (uint64_t k = 0; k < iters; k++) {
		if (off + chunk > span)
			off = 0;
		memcpy(dst + off, src + off, chunk);
		__asm__ __volatile__("" : : "r"(dst) : "memory");
		off += chunk;
	}
	return now_ns() - t0;
}
