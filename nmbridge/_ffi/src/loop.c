/*
 * The loop: import (emulated ports read their sockets), forward both ways,
 * push (emulated ports transmit), and when nothing moved, sleep in poll()
 * with a bounded timeout. Kernel ports sync inside poll(). A port whose
 * link is down is never entered: on netmap's generic adapter poll() and
 * the sync ioctls would block unkillably until the link returns.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "engine.h"
#include "loop.h"

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ms(void)
{
	return now_ns() / 1000000u;
}

static void plan_xlate(struct nmb_bridge *b, int from);

static int is_emulated(const struct nmb_port *p)
{
	return p->kind == NMB_PORT_PACKET || p->kind == NMB_PORT_TAP;
}

struct nmb_bridge *nmb_bridge_new(struct nmb_port *a, struct nmb_port *b, uint32_t burst)
{
	struct nmb_bridge *br;
	uint32_t n;

	if (a->nrx == 0 || a->ntx == 0 || b->nrx == 0 || b->ntx == 0 || burst == 0)
		return NULL;
	br = calloc(1, sizeof(*br));
	if (br == NULL)
		return NULL;
	br->port[0] = a;
	br->port[1] = b;
	br->burst = burst;
	br->poll_timeout_ms = 100;
	br->coalesce_after = NMB_COALESCE_AFTER;
	br->failed_port = -1;
	n = 0;
	for (int i = 0; i < 2; i++) {
		br->port[i]->stats_rx = n;
		n += br->port[i]->nrx;
		br->port[i]->stats_tx = n;
		n += br->port[i]->ntx;
	}
	br->nstats = n;
	br->stats = calloc(n, sizeof(*br->stats));
	br->rxstate = calloc(n, sizeof(*br->rxstate));
	if (br->stats == NULL || br->rxstate == NULL) {
		nmb_bridge_free(br);
		return NULL;
	}
	br->zerocopy = nmb_bridge_can_zerocopy(br);
	for (int from = 0; from < 2; from++)
		plan_xlate(br, from);
	/* now, not when an interface vanishes: then descriptors may have run out */
	(void)nmb_ctl_socket();
	return br;
}

void nmb_bridge_free(struct nmb_bridge *b)
{
	if (b == NULL)
		return;
	free(b->stats);
	free(b->rxstate);
	free(b);
}

/*
 * What the engine does to frames from port `from` to the other: nothing when
 * both carry the same header and the TX side takes every offload the RX side
 * may bring; else each frame is translated (engine.c, offload.h). A kernel
 * port's headers (a VALE port's) come unchecked from its other ports.
 */
static void plan_xlate(struct nmb_bridge *b, int from)
{
	const struct nmb_port *src = b->port[from], *dst = b->port[1 - from];
	struct nmb_xlate *x = &b->xlate[from];
	int check = src->hdr_len > 0 && src->kind == NMB_PORT_KERNEL;
	int same = src->hdr_len == dst->hdr_len &&
		   (src->hdr_len == 0 || (dst->offloads & NMB_OFL_ALL) == NMB_OFL_ALL);

	x->src_hdr = src->hdr_len;
	x->dst_hdr = dst->hdr_len;
	x->dst_offloads = dst->offloads;
	x->check = (uint32_t)check;
	x->dst_max_frame = dst->max_frame;
	for (uint32_t r = 0; r < src->nrx; r++) {
		b->rxstate[src->stats_rx + r].hdr = src->hdr_len;
		b->rxstate[src->stats_rx + r].xlate = same && !check ? NULL : x;
	}
}

/* The RX rings of port `from` look at each frame while it has a filter or the bridge a capture. */
static void point_hooks(struct nmb_bridge *b, int from)
{
	const struct nmb_port *src = b->port[from];
	struct nmb_frame_hooks *h = &b->hooks[from];

	h->dir = (uint32_t)from;
	for (uint32_t r = 0; r < src->nrx; r++)
		b->rxstate[src->stats_rx + r].hooks = h->match || h->capture ? h : NULL;
}

void nmb_bridge_set_filter(struct nmb_bridge *b, int from,
			   int (*match)(const void *, const uint8_t *, uint32_t, uint32_t),
			   const void *filter)
{
	b->hooks[from].match = match;
	b->hooks[from].filter = filter;
	point_hooks(b, from);
}

void nmb_bridge_set_capture(struct nmb_bridge *b,
			    int (*capture)(void *, uint32_t, const struct iovec *, int, uint32_t),
			    void *cap)
{
	for (int from = 0; from < 2; from++) {
		b->hooks[from].capture = capture;
		b->hooks[from].cap = cap;
		point_hooks(b, from);
	}
}

/* Zero-copy needs every ring of both ports to see one buffer pool. */
int nmb_bridge_can_zerocopy(const struct nmb_bridge *b)
{
	const struct netmap_ring *first = b->port[0]->rx[0];
	const char *pool = (const char *)first + first->buf_ofs;

	for (int i = 0; i < 2; i++) {
		const struct nmb_port *p = b->port[i];
		for (uint32_t r = 0; r < p->nrx + p->ntx; r++) {
			const struct netmap_ring *ring = r < p->nrx ? p->rx[r] : p->tx[r - p->nrx];
			if ((const char *)ring + ring->buf_ofs != pool ||
			    ring->nr_buf_size != first->nr_buf_size)
				return 0;
		}
	}
	return 1;
}

void nmb_bridge_request_stop(struct nmb_bridge *b)
{
	__atomic_store_n(&b->stop, 1, __ATOMIC_RELAXED);
}

void nmb_bridge_publish(struct nmb_bridge *b)
{
	if (b->shared)
		nmb_stats_publish(b->shared, b->stats, b->nstats, b->state);
}

static int fail(struct nmb_bridge *b, int port, int err)
{
	b->failed_port = port;
	b->failed_err = err;
	return -err;
}

static int link_down(const struct nmb_port *p)
{
	return __atomic_load_n(&p->link_down, __ATOMIC_RELAXED);
}

static uint32_t forward_dir(struct nmb_bridge *b, int from)
{
	struct nmb_port *src = b->port[from], *dst = b->port[1 - from];
	uint32_t burst = b->burst, moved = 0;
	/* --count N: not one frame past N, however many frames and RX rings wait */
	uint64_t left = b->count_limit > b->forwarded ? b->count_limit - b->forwarded : 0;

	if (!b->count_limit || left >= (uint64_t)burst * src->nrx)
		return nmb_forward(src->rx, src->nrx, dst->tx, dst->ntx, burst, b->zerocopy,
				   &b->rxstate[src->stats_rx], &b->stats[src->stats_rx],
				   &b->stats[dst->stats_tx], &b->next_rx[from]);
	/* the last pass: one RX ring at a time, each up to what is left */
	for (uint32_t k = 0; k < src->nrx && moved < left; k++) {
		uint32_t r = (b->next_rx[from] + k) % src->nrx;
		uint32_t quota = left - moved < burst ? (uint32_t)(left - moved) : burst;

		/* as its real index r: to the TX ring its earlier frames took */
		moved += nmb_forward_ring(src->rx[r], r, dst->tx, dst->ntx, quota, b->zerocopy,
					  &b->rxstate[src->stats_rx + r],
					  &b->stats[src->stats_rx + r], &b->stats[dst->stats_tx]);
	}
	b->next_rx[from] = (b->next_rx[from] + 1) % src->nrx;
	return moved;
}

/*
 * Coalescing (emulated ports): a socket wakes its reader for every frame, and
 * each wake-up costs a context switch and, on veth, an IPI per frame sent out.
 * Once NMB_COALESCE_AFTER wake-ups in a row came at a rate at which a sleep of
 * coalesce_us would gather NMB_COALESCE_GATHER frames or more (a sustained
 * load: a request and its answer, or a slow stream, never get there), the
 * loop sleeps coalesce_us in user space instead of poll(), then makes one
 * pass: frames gather in the socket rings, nobody is woken, and one pass and
 * one send take them all. A sleep that gathers too little ends it.
 */
static int may_coalesce(const struct nmb_bridge *b, const int *up)
{
	if (b->coalesce_streak < b->coalesce_after || b->busy || !b->coalesce_us ||
	    (b->count_limit && b->forwarded >= b->count_limit))
		return 0;
	for (int i = 0; i < 2; i++) {
		const struct nmb_port *p = b->port[i];
		/* frames left in a socket or on a ring (no room, a burst's worth, waiting
		 * for TX room) go first */
		if (!is_emulated(p) || !up[i] || p->rx_more || nmb_eport_tx_pending(p) ||
		    nmb_rx_pending(p->rx, p->nrx))
			return 0;
	}
	return 1;
}

/* the bytes that entered the bridge so far (its RX rings) */
static uint64_t rx_bytes(const struct nmb_bridge *b)
{
	uint64_t sum = 0;

	for (int i = 0; i < 2; i++)
		for (uint32_t r = 0; r < b->port[i]->nrx; r++)
			sum += b->stats[b->port[i]->stats_rx + r].bytes;
	return sum;
}

static int coalescing_applies(const struct nmb_bridge *b)
{
	return b->coalesce_us && is_emulated(b->port[0]) && is_emulated(b->port[1]);
}

/*
 * A wake-up from poll() ends an interval: the frames that arrived in it are
 * those the passes after the wake-up take in, not those the passes after the
 * wake-up before took in. Paired with the wrong interval, a wake-up that comes
 * late (the loop waits for a CPU on a busy machine) judged the few frames of
 * the interval before it by its own long one, and the many that gathered
 * meanwhile by the short one after: a sustained load looked as if it kept
 * stopping, and was not coalesced.
 */
void nmb_coalesce_woke(struct nmb_bridge *b, uint64_t now_ns)
{
	uint64_t gap = now_ns - b->last_wake_ns;

	/* one not judged yet (the loop judges each before it polls again): one interval */
	b->wake_gap_ns = b->woke ? b->wake_gap_ns + gap : gap;
	b->last_wake_ns = now_ns;
	b->woke = 1;
}

/*
 * The frames of the interval the last wake-up ended are in: was its rate a
 * load worth coalescing? Only of small frames: a TCP flow's super-frames
 * (64 KiB each, with offloads) already come dozens of segments a wake-up, and
 * holding its ACKs back would only slow the flow (measured: 4.7 against 17
 * Gbit/s).
 */
void nmb_coalesce_settled(struct nmb_bridge *b, uint64_t forwarded, uint64_t bytes)
{
	uint64_t frames = forwarded - b->forwarded_at_judged;

	/* frames / interval * coalesce_us >= NMB_COALESCE_GATHER, without dividing */
	if (frames * b->coalesce_us * 1000u >= NMB_COALESCE_GATHER * b->wake_gap_ns &&
	    bytes - b->bytes_at_judged <= frames * NMB_COALESCE_MAX_AVG)
		b->coalesce_streak += b->coalesce_streak < NMB_COALESCE_AFTER_MAX;
	else
		b->coalesce_streak = 0;
	b->forwarded_at_judged = forwarded;
	b->bytes_at_judged = bytes;
	b->woke = 0;
}

static void count_syncs(struct nmb_bridge *b, struct nmb_port *p)
{
	for (uint32_t r = 0; r < p->nrx; r++)
		b->stats[p->stats_rx + r].syncs++;
}

/*
 * A ring or socket error: resync the port and count it. Fatal only when the
 * port is gone, or errors persist for NMB_PERSISTENT_ERROR_MS.
 */
static int recover(struct nmb_bridge *b, int i)
{
	struct nmb_port *p = b->port[i];
	uint64_t now = now_ms();

	b->stats[p->stats_rx].errors++;
	if (p->pollerr_run++ == 0)
		p->pollerr_since_ms = now;
	else if (now - p->pollerr_since_ms >= NMB_PERSISTENT_ERROR_MS)
		return fail(b, i, EIO);
	if (p->kind == NMB_PORT_KERNEL) {
		int rc;

		/* netmap answers a NIC that is gone with POLLERR and EIO, not ENXIO */
		if (p->ifindex > 0 && !nmb_ifindex_exists(p->ifindex))
			return fail(b, i, ENODEV);
		rc = nmb_kport_txsync(p);
		if (rc == 0)
			rc = nmb_kport_rxsync(p);
		if (rc == -ENXIO || rc == -ENODEV)
			return fail(b, i, -rc);
	} else {
		int rc = nmb_eport_recover(p);

		if (rc < 0)
			return fail(b, i, -rc);
	}
	return 0;
}

/* Why the run ends before this pass (NMB_RUN_*), or -1; *t gets the time. */
static int run_over(const struct nmb_bridge *b, uint64_t deadline, uint64_t *t)
{
	if (__atomic_load_n(&b->stop, __ATOMIC_RELAXED))
		return NMB_RUN_STOP;
	if (b->count_limit && b->forwarded >= b->count_limit)
		return NMB_RUN_LIMIT;
	*t = now_ms();
	if (*t >= deadline)
		return NMB_RUN_BUDGET;
	return -1;
}

/* Import: the emulated ports read their sockets. Returns the frames, or -errno. */
static int import(struct nmb_bridge *b, const int *up)
{
	int got = 0;

	for (int i = 0; i < 2; i++) {
		struct nmb_port *p = b->port[i];
		if (!is_emulated(p) || !up[i])
			continue;
		int r = nmb_eport_rxsync(p, &b->stats[p->stats_rx]);
		if (r < 0)
			return fail(b, i, -r);
		got += r;
	}
	return got;
}

/*
 * After a coalescing sleep: was it worth it? got: the frames it gathered,
 * moved and bytes: what the pass after it forwarded.
 */
static void judge_nap(struct nmb_bridge *b, int got, uint32_t moved, uint64_t bytes)
{
	/*
	 * A sleep that gathered less than two frames saved no wake-up: the
	 * traffic answers itself (a request and its response) or has ended.
	 * Large frames (super-frames) did not need it. Stop, and ask for a
	 * longer run of fast wake-ups before the next time.
	 */
	if ((uint32_t)got < NMB_COALESCE_MIN_FRAMES || bytes > (uint64_t)moved * NMB_COALESCE_MAX_AVG) {
		b->coalesce_streak = 0;
		if (b->coalesce_after < NMB_COALESCE_AFTER_MAX)
			b->coalesce_after *= 2;
	} else {
		b->coalesce_after = NMB_COALESCE_AFTER;
	}
}

/* Forward both ways; returns the frames moved. */
static uint32_t forward(struct nmb_bridge *b)
{
	uint32_t moved = 0;

	for (int from = 0; from < 2; from++) {
		uint32_t m = forward_dir(b, from);
		moved += m;
		b->forwarded += m; /* before the other direction: --count spans both */
	}
	return moved;
}

/* Push: the emulated ports transmit what their TX rings hold. Returns 0 or -errno. */
static int push(struct nmb_bridge *b, const int *up)
{
	for (int i = 0; i < 2; i++) {
		struct nmb_port *p = b->port[i];
		if (!is_emulated(p) || !up[i] || !nmb_eport_tx_pending(p))
			continue;
		int r = nmb_eport_txsync(p, &b->stats[p->stats_tx]);
		if (r < 0)
			return fail(b, i, -r);
	}
	return 0;
}

/* The coalescing sleep, in user space, within left_ms. Returns -1 if a signal ended it. */
static int nap(const struct nmb_bridge *b, uint64_t left_ms)
{
	uint64_t us = b->coalesce_us < 1000000u ? b->coalesce_us : 999999u;
	struct timespec ts;

	if (us > left_ms * 1000u)
		us = left_ms * 1000u; /* Python's turn comes first */
	ts.tv_sec = 0;
	ts.tv_nsec = (long)us * 1000L;
	if (nanosleep(&ts, NULL) < 0 && errno == EINTR)
		return -1;
	return 0;
}

/* The file descriptors a wait polls, each with its port. */
struct poll_set {
	struct pollfd pfd[4];
	int port[4];
	int nfds;
	int waiting; /* how many ask for an event */
};

static void poll_add(struct poll_set *ps, int fd, short ev, int port)
{
	ps->pfd[ps->nfds].fd = fd;
	ps->pfd[ps->nfds].events = ev;
	ps->pfd[ps->nfds].revents = 0;
	ps->port[ps->nfds++] = port;
	ps->waiting += ev != 0;
}

/* The events kernel port i waits for (its peer is q). Returns 0 or -errno. */
static int kernel_events(struct nmb_bridge *b, int i, short *ev)
{
	struct nmb_port *p = b->port[i], *q = b->port[1 - i];

	/* frames of ours waiting for the peer's TX: don't ask for more
	 * (a chain waiting for its last slots is not: POLLIN brings them) */
	if (!nmb_rx_pending(p->rx, p->nrx))
		*ev |= POLLIN;
	if (nmb_rx_pending(q->rx, q->nrx))
		*ev |= POLLOUT;
	/*
	 * A frame that needs more TX slots than are free (a chain, a
	 * super-frame's segments), some being free: poll() would answer
	 * POLLOUT at once, and on a native NIC its txsync reclaims no
	 * finished slot while any is free (only NIOCTXSYNC forces it): the
	 * loop would spin for ever.
	 */
	if ((*ev & POLLOUT) &&
	    nmb_tx_short(q->rx, q->nrx, p->tx, p->ntx, &b->rxstate[q->stats_rx])) {
		int r = nmb_kport_txsync(p);

		for (uint32_t k = 0; k < p->ntx; k++)
			b->stats[p->stats_tx + k].syncs++;
		if (r < 0 && (r = recover(b, i)) < 0)
			return r;
	}
	return 0;
}

/* What to poll for: nothing on a port whose link is down. Returns 0 or -errno. */
static int build_poll_set(struct nmb_bridge *b, const int *up, int idle, struct poll_set *ps)
{
	for (int i = 0; i < 2; i++) {
		struct nmb_port *p = b->port[i];
		short ev = 0;

		if (!up[i])
			continue;
		if (p->kind == NMB_PORT_KERNEL) {
			int r = kernel_events(b, i, &ev);

			if (r < 0)
				return r;
		} else {
			if (!idle)
				continue;
			if (nmb_eport_rx_room(p))
				ev |= POLLIN;
			if (nmb_eport_tx_pending(p))
				ev |= POLLOUT;
		}
		/*
		 * A kernel port is polled even when it wants no event: poll()
		 * txsyncs the TX rings that hold frames (netmap's txpoll, as
		 * NR_NO_TX_POLL is not set). Without it, what the peer sent
		 * would wait for our RX to drain, for ever if the peer's TX never
		 * does (a pipe nobody reads).
		 */
		if (ev == 0 && p->kind != NMB_PORT_KERNEL)
			continue;
		if (p->txfd >= 0 && (ev & POLLOUT)) {
			/* a port that transmits on a socket of its own */
			poll_add(ps, p->txfd, POLLOUT, i);
			ev &= ~POLLOUT;
			if (ev == 0)
				continue;
		}
		poll_add(ps, p->fd, ev, i);
	}
	return 0;
}

/* What poll() answered: kernel ports synced, errors recovered from. Returns 0 or -errno. */
static int handle_revents(struct nmb_bridge *b, const struct poll_set *ps)
{
	for (int k = 0; k < ps->nfds; k++) {
		struct nmb_port *p = b->port[ps->port[k]];
		if (p->kind == NMB_PORT_KERNEL)
			count_syncs(b, p);
		if (ps->pfd[k].revents & (POLLERR | POLLNVAL)) {
			int r = recover(b, ps->port[k]);
			if (r < 0)
				return r;
		} else {
			p->pollerr_run = 0;
		}
	}
	return 0;
}

/*
 * Wait, or let the kernel ports sync without sleeping: poll() with a timeout
 * only when the pass moved nothing, within left_ms. Returns 0, NMB_RUN_SIGNAL,
 * or -errno.
 */
static int wait_events(struct nmb_bridge *b, const int *up, int idle, uint64_t left_ms)
{
	struct poll_set ps = {.nfds = 0, .waiting = 0};
	int r = build_poll_set(b, up, idle, &ps), timeout, n;

	if (r < 0)
		return r;
	if (!ps.waiting && idle) {
		/* links down, or nothing to wait for: wait in user space */
		struct timespec ts = {0, 5 * 1000000L};
		nanosleep(&ts, NULL);
	}
	if (ps.nfds == 0)
		return 0;
	timeout = (idle && !b->busy && ps.waiting) ? b->poll_timeout_ms : 0;
	if (timeout > 0 && (uint64_t)timeout > left_ms)
		timeout = (int)left_ms;
	n = poll(ps.pfd, (nfds_t)ps.nfds, timeout);
	if (n < 0) {
		if (errno == EINTR)
			return NMB_RUN_SIGNAL;
		return fail(b, ps.port[0], errno);
	}
	if (n > 0 && timeout > 0 && coalescing_applies(b))
		nmb_coalesce_woke(b, now_ns()); /* no clock read per wake-up otherwise */
	return handle_revents(b, &ps);
}

/* The run ends with rc: what a port whose link is down hid, and the counters. */
static int end_run(struct nmb_bridge *b, int rc)
{
	for (int i = 0; i < 2; i++) {
		struct nmb_port *p = b->port[i];
		/* a port whose link is down is not entered, so it cannot fail by itself:
		 * its interface deleted (the link went down with it) must end the bridge */
		if (link_down(p) && p->ifindex > 0 && !nmb_ifindex_exists(p->ifindex))
			rc = fail(b, i, ENODEV);
		nmb_eport_collect_drops(p, &b->stats[p->stats_rx]);
	}
	nmb_bridge_publish(b);
	return rc;
}

/*
 * One pass: import, forward, push; then, when nothing moved, sleep: in user
 * space while coalescing, else in poll(). A port that fails ends the run at
 * once (-errno); NMB_RUN_* otherwise.
 */
int nmb_bridge_run(struct nmb_bridge *b, uint32_t budget_ms)
{
	uint64_t deadline = now_ms() + budget_ms, t = 0;
	int rc, napped = 0;

	b->state = NMB_STATE_RUNNING;
	while ((rc = run_over(b, deadline, &t)) < 0) {
		int up[2], got, idle, r;
		uint32_t moved;
		uint64_t bytes;

		for (int i = 0; i < 2; i++)
			up[i] = !link_down(b->port[i]);
		b->state = (up[0] && up[1]) ? NMB_STATE_RUNNING : NMB_STATE_LINK_WAIT;
		if ((got = import(b, up)) < 0)
			return got;
		bytes = napped ? rx_bytes(b) : 0;
		moved = forward(b);
		if (napped)
			judge_nap(b, got, moved, rx_bytes(b) - bytes);
		if ((r = push(b, up)) < 0)
			return r;
		idle = got == 0 && moved == 0;
		if (idle && b->woke)
			nmb_coalesce_settled(b, b->forwarded, rx_bytes(b));
		/* one pass a sleep: what arrives meanwhile waits for the next one */
		napped = (idle || napped) && may_coalesce(b, up);
		if (napped) {
			if (nap(b, deadline - t) < 0) {
				rc = NMB_RUN_SIGNAL;
				break;
			}
			continue;
		}
		r = wait_events(b, up, idle, deadline - t);
		if (r < 0)
			return r;
		if (r == NMB_RUN_SIGNAL) {
			rc = r;
			break;
		}
	}
	return end_run(b, rc);
}

/*
 * Frames on an RX ring the bridge stops with: counted as dropped and released.
 * Slots that finish a chain the engine already dropped (st->discard) were
 * counted with it; a chain without its last slot counts as one frame.
 */
static uint32_t drop_rx_leftovers(struct netmap_ring *rx, struct nmb_rx_state *st)
{
	uint32_t n = 0, open = 0;

	if (rx->head >= rx->num_slots || rx->tail >= rx->num_slots)
		return 0; /* a ring we cannot trust is left alone */
	for (uint32_t i = rx->head; i != rx->tail; i = nmb_ring_next(rx, i)) {
		int more = rx->slot[i].flags & NS_MOREFRAG;

		if (st->discard) {
			st->discard = more != 0;
			continue;
		}
		open = more != 0;
		if (!more)
			n++;
	}
	rx->head = rx->cur = rx->tail;
	return n + open;
}

/*
 * At the stop, what the sockets of the emulated ports already hold (a packet
 * socket's ring, a TAP's queue) comes in once more, as far as the RX ring has
 * room, to be forwarded with the rest. Not from a port that is blocked or
 * whose peer is: the frames would only wait. At most a ring's worth of frames
 * per port, so that a sender that goes on cannot hold the stop.
 */
static void import_at_stop(struct nmb_bridge *b, int *blocked)
{
	for (int i = 0; i < 2; i++) {
		struct nmb_port *p = b->port[i];
		uint32_t got = 0;
		int r;

		if (!is_emulated(p) || blocked[i] || blocked[1 - i])
			continue;
		do {
			r = nmb_eport_rxsync(p, &b->stats[p->stats_rx]);
			got += r > 0 ? (uint32_t)r : 0;
		} while (r > 0 && got < p->rx[0]->num_slots && nmb_eport_rx_room(p));
		if (r < 0) {
			blocked[i] = 1;
			if (b->failed_port < 0)
				fail(b, i, -r);
		}
	}
}

/*
 * Stop: import what the emulated ports' sockets already hold, move what the
 * RX rings hold (to ports that can take it, the count limit still applying),
 * push the TX rings out until they are empty or timeout_ms passes, then count
 * what is left as dropped: frames on RX rings, and those still in an emulated
 * port's socket (no room, link down, time up), as drop_rx; frames an emulated
 * port did not transmit (its link down, its interface gone, the time up) as
 * drop_tx. Nothing the bridge accepted is lost uncounted: what the kernel
 * queues for a socket after that was never ours. Never fails: a port that
 * fails here keeps its frames counted and is reported in
 * failed_port/failed_err if nothing failed before. Returns the frames dropped
 * at the stop.
 */
int nmb_bridge_flush(struct nmb_bridge *b, uint32_t timeout_ms)
{
	uint64_t deadline = now_ms() + timeout_ms;
	int blocked[2] = {0, 0};
	uint32_t dropped = 0;

	for (int i = 0; i < 2; i++)
		blocked[i] = link_down(b->port[i]);
	if (!b->count_limit || b->forwarded < b->count_limit)
		import_at_stop(b, blocked); /* at the count, what the sockets hold is counted there */
	for (;;) {
		int pending = 0;
		uint32_t moved = 0;

		for (int i = 0; i < 2; i++)
			blocked[i] = blocked[i] || link_down(b->port[i]);
		for (int i = 0; i < 2; i++)
			if (!blocked[1 - i])
				moved += forward_dir(b, i);
		b->forwarded += moved;
		for (int i = 0; i < 2; i++) {
			struct nmb_port *p = b->port[i];
			int rc = 0;

			if (blocked[i])
				continue;
			if (p->kind == NMB_PORT_KERNEL) {
				rc = nmb_kport_txsync(p);
				for (uint32_t r = 0; rc == 0 && r < p->ntx; r++) {
					struct netmap_ring *ring = p->tx[r];
					if (nmb_ring_next(ring, ring->tail) != ring->head)
						pending = 1;
				}
			} else if (nmb_eport_tx_pending(p)) {
				rc = nmb_eport_txsync(p, &b->stats[p->stats_tx]);
				if (rc == 0 && nmb_eport_tx_pending(p))
					pending = 1;
			}
			if (rc < 0) {
				blocked[i] = 1;
				if (b->failed_port < 0)
					fail(b, i, -rc);
			}
		}
		if ((!pending && !moved) || now_ms() >= deadline)
			break;
		if (!pending)
			continue; /* moved frames: push them */
		struct pollfd pfd[2];
		int nfds = 0;
		for (int i = 0; i < 2; i++)
			if (!blocked[i]) {
				struct nmb_port *p = b->port[i];
				pfd[nfds].fd = p->txfd >= 0 ? p->txfd : p->fd;
				pfd[nfds].events = POLLOUT;
				nfds++;
			}
		poll(pfd, (nfds_t)nfds, 10);
	}
	for (int i = 0; i < 2; i++) {
		struct nmb_port *p = b->port[i];

		for (uint32_t r = 0; r < p->nrx; r++) {
			uint32_t n = drop_rx_leftovers(p->rx[r], &b->rxstate[p->stats_rx + r]);
			b->stats[p->stats_rx + r].drop_rx += n;
			dropped += n;
		}
		if (is_emulated(p)) {
			int enter = !blocked[i] && !link_down(p);

			dropped += nmb_eport_rx_discard(p, &b->stats[p->stats_rx], enter);
			nmb_eport_collect_drops(p, &b->stats[p->stats_rx]);
			dropped += nmb_eport_tx_discard(p, &b->stats[p->stats_tx]);
		}
	}
	b->state = NMB_STATE_STOPPED;
	nmb_bridge_publish(b);
	return (int)(dropped > INT32_MAX ? INT32_MAX : dropped);
}
