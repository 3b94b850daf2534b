/*
 * The emulated ports' kernel side: what netmap's generic adapter does in
 * the kernel, done in user space over a socket. RX: release the slots user
 * space handed back, then receive frames into the free slots. TX: transmit
 * the slots user space filled, then hand them back. Each kind reads and
 * writes its socket through its ops (eport.h), and may bring its own kernel
 * side (a packet socket's TPACKET rings).
 */
#include <errno.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "eport.h"

/* the most frames read off a socket at the stop: a sender that goes on cannot hold it */
#define NMB_STOP_DRAIN_MAX 65536u

/*
 * A socket kept for asking the kernel about interfaces: if_indextoname()
 * opens one per call, and under a descriptor shortage (EMFILE) every
 * interface would then look gone. Opened once, when the first bridge is
 * made (nmb_ctl_socket), in the process's network namespace.
 */
static int ctl_sock = -1;

int nmb_ctl_socket(void)
{
	int fd = __atomic_load_n(&ctl_sock, __ATOMIC_ACQUIRE), expected = -1;

	if (fd >= 0)
		return fd;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (!__atomic_compare_exchange_n(&ctl_sock, &expected, fd, 0, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE)) {
		close(fd); /* another thread's came first */
		fd = expected;
	}
	return fd;
}

/*
 * Whether interface ifindex exists. Only the kernel's "no such device" says
 * it is gone: any other failure (no socket to ask with) says nothing, and
 * the interface is taken to be there.
 */
int nmb_ifindex_exists(int ifindex)
{
	struct ifreq ifr;
	int fd = nmb_ctl_socket();

	if (fd < 0)
		return 1;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_ifindex = ifindex;
	if (ioctl(fd, SIOCGIFNAME, &ifr) == 0)
		return 1;
	return !(errno == ENODEV || errno == ENXIO);
}

int nmb_ifname_index(const char *name)
{
	return (int)if_nametoindex(name);
}

uint32_t nmb_eport_max_rx(const struct nmb_port *p)
{
	/* with headers, the kernel hands over super-frames whatever the MTU */
	uint32_t frame = p->hdr_len > 0 && p->max_frame < NMB_GSO_MAX_FRAME ? NMB_GSO_MAX_FRAME
									    : p->max_frame;

	return frame + p->hdr_len;
}

int nmb_eport_alloc_batch(struct nmb_port *p, uint32_t max_frame)
{
	uint32_t buf_size = p->region->buf_size;

	p->max_frame = max_frame;
	p->frags = (nmb_eport_max_rx(p) + buf_size - 1) / buf_size;
	if (p->frags == 0)
		p->frags = 1;
	if (p->frags > NETMAP_MAX_FRAGS || p->frags > p->region->num_slots / 2)
		return -EINVAL;
	p->msgs = calloc(NMB_BATCH, sizeof(*p->msgs));
	p->iovs = calloc((size_t)NMB_BATCH * (p->frags + 1), sizeof(*p->iovs));
	if (p->msgs == NULL || p->iovs == NULL)
		return -ENOMEM;
	return 0;
}

/* where the bytes of a frame longer than the ring's buffers go, to be discarded */
static uint8_t rx_overflow[64];

static uint32_t ring_add(uint32_t n, uint32_t i, uint32_t k)
{
	i += k;
	return i >= n ? i - n : i;
}

/* the buffer (*k) and offset in it (*off) of byte pos of a scattered frame */
static void iov_locate(const struct iovec *iov, uint32_t pos, uint32_t *k, uint32_t *off)
{
	uint32_t i = 0;

	while (pos >= iov[i].iov_len) {
		pos -= (uint32_t)iov[i].iov_len;
		i++;
	}
	*k = i;
	*off = pos;
}

/*
 * Open n bytes at offset at of a frame of len bytes scattered over iov (niov
 * buffers) and write ins there: what followed moves up by n. 0, or -1 when
 * the buffers cannot hold len + n bytes (nothing moved then).
 */
int nmb_iov_insert(const struct iovec *iov, int niov, uint32_t len, uint32_t at,
		   const uint8_t *ins, uint32_t n)
{
	uint64_t room = 0;
	uint32_t end = len;

	for (int k = 0; k < niov; k++)
		room += iov[k].iov_len;
	if (at > len || len + (uint64_t)n > room)
		return -1;
	/* from the end down, in pieces that cross no buffer on either side */
	while (end > at) {
		uint32_t piece = end - at, sk, so, dk, doff;

		iov_locate(iov, end - 1, &sk, &so);
		iov_locate(iov, end - 1 + n, &dk, &doff);
		if (piece > so + 1)
			piece = so + 1;
		if (piece > doff + 1)
			piece = doff + 1;
		memmove((uint8_t *)iov[dk].iov_base + doff + 1 - piece,
			(uint8_t *)iov[sk].iov_base + so + 1 - piece, piece);
		end -= piece;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint32_t k, off;

		iov_locate(iov, at + i, &k, &off);
		((uint8_t *)iov[k].iov_base)[off] = ins[i];
	}
	return 0;
}

/*
 * What a frame's header (vh, its copy) says of the frame of len bytes (the
 * header included) without reading the frame: 1 it asks nothing and fits,
 * 0 dropped and counted, -1 it asks for offloads: nmb_eport_frame_ok walks it.
 */
int nmb_eport_hdr_ok(const struct nmb_port *p, const struct nmb_vnet_hdr *vh, uint32_t len,
		     uint32_t bs, struct nmb_ring_stats *rxs)
{
	uint32_t hdr = p->hdr_len;

	if (len < hdr + 14) {
		rxs->drop_header++;
		return 0;
	}
	/* only a super-frame may be longer than the interface's frames (in whole buffers) */
	if (vh->gso_type == NMB_VNET_GSO_NONE && len - hdr > (p->max_frame + bs - 1) / bs * bs) {
		rxs->drop_oversize++;
		return 0;
	}
	/* the usual case, a frame asking nothing */
	if (vh->flags == 0 && vh->gso_type == NMB_VNET_GSO_NONE && vh->hdr_len <= len - hdr)
		return 1;
	return -1;
}

/*
 * The frame of len bytes (its header included) laid over the slots of ring
 * from first on: whether its header fits it. Counts what it drops.
 */
int nmb_eport_frame_ok(const struct nmb_port *p, struct netmap_ring *ring, uint32_t first,
		       uint32_t len, struct nmb_ring_stats *rxs)
{
	struct nmb_vnet_hdr vh;
	uint32_t bs = ring->nr_buf_size, hdr = p->hdr_len;
	int quick;

	if (hdr == 0)
		return 1;
	if (len >= hdr + 14)
		memcpy(&vh, nmb_slot_buf(ring, ring->slot[first].buf_idx), sizeof(vh));
	else
		memset(&vh, 0, sizeof(vh));
	if ((quick = nmb_eport_hdr_ok(p, &vh, len, bs, rxs)) >= 0)
		return quick;
	return nmb_eport_frame_walk(p, ring, first, len, &vh, rxs);
}

/* The frame whose header (vh) asks for offloads: whether the frame is what it says. */
int nmb_eport_frame_walk(const struct nmb_port *p, struct netmap_ring *ring, uint32_t first,
			 uint32_t len, const struct nmb_vnet_hdr *vh, struct nmb_ring_stats *rxs)
{
	struct iovec iov[NETMAP_MAX_FRAGS];
	struct nmb_frame_in f;
	uint32_t bs = ring->nr_buf_size, hdr = p->hdr_len, n = (len + bs - 1) / bs;

	for (uint32_t k = 0; k < n; k++) {
		uint32_t piece = k + 1 < n ? bs : len - k * bs, skip = k == 0 ? hdr : 0;
		struct netmap_slot *s = &ring->slot[ring_add(ring->num_slots, first, k)];

		iov[k].iov_base = nmb_slot_buf(ring, s->buf_idx) + skip;
		iov[k].iov_len = piece - skip;
	}
	f.iov = iov;
	f.niov = (int)n;
	f.len = len - hdr;
	if (nmb_vnet_check(vh, &f) < 0) {
		rxs->drop_header++;
		return 0;
	}
	return 1;
}

int nmb_eport_rx_room(const struct nmb_port *p)
{
	const struct netmap_ring *ring = p->rx[0];
	const struct nmb_kring *kr = &p->krx[0];
	uint32_t busy = nmb_ring_dist(ring, ring->head, kr->hwtail);

	return ring->num_slots - 1 - busy >= p->frags;
}

/*
 * Point message m at the free slots from slot first on, a frame's worth (its
 * header lands at the start of the first).
 */
void nmb_eport_rx_prepare(struct nmb_port *p, uint32_t m, uint32_t first)
{
	struct netmap_ring *ring = p->rx[0];
	struct iovec *iov = &p->iovs[m * (p->frags + 1)];
	uint32_t k = 0;

	for (uint32_t f = 0; f < p->frags; f++) {
		struct netmap_slot *s = &ring->slot[ring_add(ring->num_slots, first, f)];
		iov[k].iov_base = nmb_slot_buf(ring, s->buf_idx);
		iov[k++].iov_len = ring->nr_buf_size;
	}
	/*
	 * A read cuts a frame longer than the buffers (a TAP's MTU raised after
	 * the port opened) to their size and says nothing: a byte more of room
	 * shows it, and the frame is dropped as oversize instead of forwarded
	 * cut short.
	 */
	iov[k].iov_base = rx_overflow;
	iov[k++].iov_len = sizeof(rx_overflow);
	memset(&p->msgs[m].msg_hdr, 0, sizeof(p->msgs[m].msg_hdr));
	p->msgs[m].msg_hdr.msg_iov = iov;
	p->msgs[m].msg_hdr.msg_iovlen = k;
	p->msgs[m].msg_len = 0;
}

/*
 * Whether received message m, laid from slot src on, is a frame to forward:
 * not cut, its header sound. *len gets its length (its header included),
 * *used its slots. Counts what it drops.
 */
int nmb_eport_rx_frame_ok(struct nmb_port *p, struct nmb_ring_stats *rxs, int m, uint32_t src,
			  uint32_t *len, uint32_t *used)
{
	uint32_t bs = p->rx[0]->nr_buf_size;

	*len = p->msgs[m].msg_len;
	*used = (*len + bs - 1) / bs;
	if ((p->msgs[m].msg_hdr.msg_flags & MSG_TRUNC) || *len <= p->hdr_len || *used > p->frags) {
		rxs->drop_oversize++;
		return 0;
	}
	return nmb_eport_frame_ok(p, p->rx[0], src, *len, rxs);
}

/* Move a frame of used slots from src to dst (buffer swaps); returns the slot after it. */
static uint32_t rx_place_frame(struct netmap_ring *ring, uint32_t src, uint32_t dst, uint32_t len,
			       uint32_t used)
{
	uint32_t bs = ring->nr_buf_size;

	for (uint32_t f = 0; f < used; f++) {
		struct netmap_slot *s = &ring->slot[ring_add(ring->num_slots, src, f)];
		struct netmap_slot *d = &ring->slot[dst];
		uint32_t piece = f + 1 < used ? bs : len - f * bs;

		if (s != d) {
			uint32_t idx = d->buf_idx;
			d->buf_idx = s->buf_idx;
			s->buf_idx = idx;
		}
		d->len = (uint16_t)piece;
		d->flags = f + 1 < used ? NS_MOREFRAG : 0;
		dst = nmb_ring_next(ring, dst);
	}
	return dst;
}

/* The got frames received from hwtail on, into consecutive slots; returns the new tail. */
static uint32_t rx_place(struct nmb_port *p, struct nmb_ring_stats *rxs, int got)
{
	struct netmap_ring *ring = p->rx[0];
	uint32_t hwtail = p->krx[0].hwtail, dst = hwtail;

	/* a short frame leaves its spare slots behind */
	for (int m = 0; m < got; m++) {
		uint32_t src = ring_add(ring->num_slots, hwtail, (uint32_t)m * p->frags), len, used;

		if (nmb_eport_rx_frame_ok(p, rxs, m, src, &len, &used))
			dst = rx_place_frame(ring, src, dst, len, used);
	}
	return dst;
}

int nmb_eport_rxsync(struct nmb_port *p, struct nmb_ring_stats *rxs)
{
	struct netmap_ring *ring = p->rx[0];
	struct nmb_kring *kr = &p->krx[0];
	uint32_t head = ring->head, nmsg;
	int got;

	if (p->ops->rxsync)
		return p->ops->rxsync(p, rxs);
	if (head >= ring->num_slots)
		return -EINVAL;
	rxs->syncs++;
	kr->hwcur = head; /* the slots before head are released */
	nmsg = (ring->num_slots - 1 - nmb_ring_dist(ring, kr->hwcur, kr->hwtail)) / p->frags;
	if (nmsg > NMB_BATCH)
		nmsg = NMB_BATCH;
	p->rx_more = 1; /* until a read says otherwise */
	if (nmsg == 0)
		return 0;
	for (uint32_t m = 0; m < nmsg; m++)
		nmb_eport_rx_prepare(p, m, ring_add(ring->num_slots, kr->hwtail, m * p->frags));
	got = p->ops->recv(p, p->msgs, nmsg);
	p->rx_more = got == (int)nmsg; /* a full batch: there may be more */
	if (got < 0) {
		int e = -got;
		p->rx_more = 0;
		if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR)
			return 0;
		rxs->errors++;
		return p->ops->classify(p, e);
	}
	kr->hwtail = rx_place(p, rxs, got);
	ring->tail = kr->hwtail;
	return got;
}

int nmb_eport_tx_pending(const struct nmb_port *p)
{
	if (p->ktx[0].hwcur != p->tx[0]->head)
		return 1;
	return p->ops->tx_busy != NULL && p->ops->tx_busy(p);
}

/*
 * At the stop: the frames on the TX ring the port did not transmit go with
 * it, counted as drop_tx (and those still in a packet socket's TX ring).
 */
uint32_t nmb_eport_tx_discard(struct nmb_port *p, struct nmb_ring_stats *txs)
{
	struct netmap_ring *ring = p->tx[0];
	struct nmb_kring *kr = &p->ktx[0];
	uint32_t n = 0, open = 0;

	if (ring->head >= ring->num_slots || kr->hwcur >= ring->num_slots)
		return 0;
	for (uint32_t i = kr->hwcur; i != ring->head; i = nmb_ring_next(ring, i)) {
		open = (ring->slot[i].flags & NS_MOREFRAG) != 0;
		if (!open)
			n++;
	}
	n += open;
	kr->hwcur = ring->head;
	if (p->ops->tx_discard)
		n += p->ops->tx_discard(p);
	txs->drop_tx += n;
	return n;
}

/*
 * At the stop, after the last import: the frames the kernel already queued for
 * the port (a packet socket's ring, a TAP's queue) that did not come in (no
 * room on the RX ring, the peer's link down, the time up) go with it, counted
 * as drop_rx. A port the loop must keep out of (may_enter 0: its link is down)
 * is only looked at where that takes no system call: a packet socket's ring is
 * in our memory. Returns how many.
 */
uint32_t nmb_eport_rx_discard(struct nmb_port *p, struct nmb_ring_stats *rxs, int may_enter)
{
	uint32_t n = 0;

	if (p->ops->rx_discard)
		n = p->ops->rx_discard(p);
	else if (may_enter)
		/* a frame longer than the buffer is cut to it and still taken off whole */
		while (n < NMB_STOP_DRAIN_MAX && read(p->fd, rx_overflow, sizeof(rx_overflow)) >= 0)
			n++;
	rxs->drop_rx += n;
	return n;
}

int nmb_eport_collect_drops(struct nmb_port *p, struct nmb_ring_stats *rxs)
{
	if (p->ops == NULL || p->ops->collect_drops == NULL)
		return 0;
	return p->ops->collect_drops(p, rxs);
}

int nmb_eport_recover(struct nmb_port *p)
{
	/* reading SO_ERROR clears it; ENETDOWN is a link going down, not a failure */
	int err = 0;
	socklen_t len = sizeof(err);

	getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
	if (p->txfd >= 0)
		getsockopt(p->txfd, SOL_SOCKET, SO_ERROR, &err, &len);
	return p->ops->classify(p, err);
}

void nmb_eport_close(struct nmb_port *p)
{
	if (p->ops->close)
		p->ops->close(p);
}

/*
 * Whether a frame of total bytes (its header included) in iov is one the
 * port may send: no shorter than an Ethernet header, no longer than its
 * interface passes (a super-frame: than the kernel segments).
 */
static int tx_frame_fits(const struct nmb_port *p, const struct iovec *iov, uint32_t total)
{
	uint32_t hdr = p->hdr_len, limit = p->max_frame;

	if (total < hdr + 14 || iov[0].iov_len < hdr)
		return 0;
	if (hdr > 0 && ((const struct nmb_vnet_hdr *)iov[0].iov_base)->gso_type != NMB_VNET_GSO_NONE)
		limit = NMB_GSO_MAX_FRAME;
	return total - hdr <= limit;
}

/*
 * The chain that starts at slot i of the TX ring, as far as head: its slots
 * into iov (a frame it cannot send is TX_CHAIN_BAD), TX_CHAIN_OPEN while its
 * last slot is not there yet. *end gets the slot after it, *cnt its slots and
 * *total its bytes.
 */
enum tx_chain nmb_eport_tx_chain(const struct nmb_port *p, uint32_t i, uint32_t head,
				 struct iovec *iov, uint32_t *end, uint32_t *cnt, uint32_t *total)
{
	const struct netmap_ring *ring = p->tx[0];
	int bad = 0;

	*cnt = *total = 0;
	*end = i;
	while (i != head) {
		const struct netmap_slot *s = &ring->slot[i];
		/* longer than the port sends, or a slot we cannot trust */
		if (*cnt >= p->frags || s->buf_idx >= p->region->num_bufs ||
		    s->len > ring->nr_buf_size)
			bad = 1;
		else {
			iov[*cnt].iov_base = nmb_slot_buf(ring, s->buf_idx);
			iov[*cnt].iov_len = s->len;
		}
		*total += s->len;
		(*cnt)++;
		i = nmb_ring_next(ring, i);
		*end = i;
		if (!(s->flags & NS_MOREFRAG))
			return bad || !tx_frame_fits(p, iov, *total) ? TX_CHAIN_BAD : TX_CHAIN_OK;
		if (*cnt > NETMAP_MAX_FRAGS)
			/* a chain that never ends: what there is goes, as the engine does */
			return TX_CHAIN_BAD;
	}
	return TX_CHAIN_OPEN;
}

/*
 * One message per complete chain in [hwcur, head), NMB_BATCH at the most;
 * slots_of[m] gets the slots of message m. Returns the messages.
 */
static uint32_t tx_gather(struct nmb_port *p, struct nmb_ring_stats *txs, uint32_t head,
			  uint32_t *slots_of)
{
	struct nmb_kring *kr = &p->ktx[0];
	uint32_t nmsg = 0, cur = kr->hwcur, iovi = 0;

	while (nmsg < NMB_BATCH && cur != head) {
		struct iovec *iov = &p->iovs[iovi];
		uint32_t end, cnt, total;
		enum tx_chain c = nmb_eport_tx_chain(p, cur, head, iov, &end, &cnt, &total);

		if (c == TX_CHAIN_OPEN)
			break; /* the rest of the chain is not there yet */
		if (c == TX_CHAIN_BAD) {
			/*
			 * Dropped whole, every slot of it, and counted once: a frame
			 * over the interface's MTU (a TAP would take it), or one it
			 * cannot send. Gathered frames go first; it is counted when
			 * it comes first.
			 */
			if (nmsg > 0)
				break;
			txs->drop_tx++;
			kr->hwcur = end;
			cur = end;
			continue;
		}
		memset(&p->msgs[nmsg].msg_hdr, 0, sizeof(p->msgs[nmsg].msg_hdr));
		p->msgs[nmsg].msg_hdr.msg_iov = iov;
		p->msgs[nmsg].msg_hdr.msg_iovlen = cnt;
		slots_of[nmsg] = cnt;
		iovi += cnt;
		nmsg++;
		cur = end;
	}
	return nmsg;
}

/*
 * Send the nmsg gathered messages. Returns how many are done with (sent, or
 * the first one counted as dropped), 0 to wait for POLLOUT, or -errno: the
 * port failed.
 */
static int tx_send(struct nmb_port *p, struct nmb_ring_stats *txs, uint32_t nmsg)
{
	int sent = p->ops->send(p, p->msgs, nmsg), rc;

	if (sent >= 0)
		return sent;
	if (sent == -EAGAIN || sent == -EWOULDBLOCK || sent == -EINTR)
		return 0; /* wait for POLLOUT */
	rc = p->ops->classify(p, -sent);
	if (rc < 0)
		return rc;
	/* this frame cannot be sent (link down, too big, no buffer): count it */
	txs->drop_tx++;
	return 1;
}

int nmb_eport_txsync(struct nmb_port *p, struct nmb_ring_stats *txs)
{
	struct netmap_ring *ring = p->tx[0];
	struct nmb_kring *kr = &p->ktx[0];
	uint32_t n = ring->num_slots, head = ring->head;
	int rc = 0;

	if (p->ops->txsync)
		return p->ops->txsync(p, txs);
	if (head >= n)
		return -EINVAL;
	txs->syncs++;
	while (kr->hwcur != head) {
		uint32_t slots_of[NMB_BATCH], nmsg = tx_gather(p, txs, head, slots_of);
		int done;

		if (nmsg == 0)
			break;
		done = tx_send(p, txs, nmsg);
		if (done <= 0) {
			rc = done;
			break;
		}
		for (int m = 0; m < done; m++)
			kr->hwcur = ring_add(n, kr->hwcur, slots_of[m]);
	}
	/* everything before hwcur is done: hand it back, keeping one slot as the kernel does */
	ring->tail = kr->hwcur == 0 ? n - 1 : kr->hwcur - 1;
	return rc;
}
