/*
 * The emulated wire port: AF_PACKET on one interface.
 *
 * Receive: a TPACKET_V2 ring (a status word per frame: each frame is user
 * space's, and wakes poll(), as soon as the kernel has written it) copied
 * into the netmap RX ring, its virtio-net header (PACKET_VNET_HDR) in front.
 * The ring's frames are sized for the MTU: a super-frame (GSO, up to 64 KiB)
 * arrives cut there, marked TP_STATUS_COPY, and whole in the socket's queue
 * (PACKET_COPY_THRESH), read from there into a chain of slots. Transmit: a
 * second socket with a TPACKET_V2 TX ring, qdisc bypass and PACKET_VNET_HDR
 * (the kernel then copies each frame once), one send() per batch; a
 * super-frame goes by sendmsg() on the first socket, through the qdisc
 * (where the kernel segments it for an interface without TSO), once the
 * frames before it are sent. Where the rings cannot be set up,
 * recvmmsg/sendmmsg into the netmap buffers serve.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "eport.h"

/*
 * TPACKET_V2, not V3: V3 hands frames over a block at a time, when the block
 * fills or its timer (1 ms at the least) fires, and a ping through the bridge
 * waited that long at each port (1.1 ms median RTT; 0.16 ms with V2). Full
 * speed holds (measured, issue 7); the price is a wake-up per frame when the
 * bridge sleeps, twice V3's CPU at a paced 80k frames/s. The ring is 8 MiB of
 * frames of one size, each big enough for the largest frame the port passes
 * (4096 frames of 2 KiB at an MTU of 1500; a frame never spans two blocks).
 */
#define RX_BLOCK_SIZE (1u << 16)
#define RX_BLOCKS 128
#define TX_FRAMES 1024

/* room for the tpacket_auxdata the kernel attaches to a frame received with recvmmsg */
#define AUX_SPACE CMSG_SPACE(sizeof(struct tpacket_auxdata))

struct nmb_packet_rings {
	/* RX: TPACKET_V2 */
	int rx_ring_on;             /* PACKET_RX_RING set on the socket */
	char *rx_map;
	size_t rx_map_size;
	uint32_t rx_frame_size;
	uint32_t rx_per_block;      /* frames in a block */
	uint32_t rx_frames;
	uint32_t rx_next;           /* the next RX ring frame to read */
	/* TX: TPACKET_V2 */
	char *tx_map;
	size_t tx_map_size;
	uint32_t tx_frame_size;
	uint32_t tx_next;           /* the next TX ring frame to fill */
	uint32_t tx_requested;      /* frames handed to the kernel and not yet seen back */
	uint32_t tx_unsent;         /* of those, frames no send() has taken yet (SEND_REQUEST) */
	uint32_t max_frame;
	/* without the rings: each received frame's auxdata (its VLAN tag, which the
	 * kernel took out of the frame) */
	unsigned char (*aux)[AUX_SPACE]; /* NMB_BATCH of them */
};

static int set_int(int fd, int level, int opt, int value)
{
	return setsockopt(fd, level, opt, &value, sizeof(value)) < 0 ? -errno : 0;
}

static int bind_to(int fd, int ifindex, int protocol)
{
	struct sockaddr_ll sll;

	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = (unsigned short)protocol;
	sll.sll_ifindex = ifindex;
	return bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0 ? -errno : 0;
}

static uint32_t align_up(uint32_t x, uint32_t a)
{
	return (x + a - 1) / a * a;
}

/* the bytes before a frame's MAC header: the tpacket2 header and sockaddr_ll
 * (aligned as the kernel aligns them), then the virtio_net_hdr */
static uint32_t rx_frame_room(void)
{
	return TPACKET_ALIGN(TPACKET2_HDRLEN + 16) + sizeof(struct nmb_vnet_hdr);
}

static int setup_rx_ring(struct nmb_port *p, struct nmb_packet_rings *pk)
{
	struct tpacket_req req;
	int rc = set_int(p->fd, SOL_PACKET, PACKET_VERSION, TPACKET_V2);

	if (rc < 0)
		return rc;
	pk->rx_frame_size = align_up(align_up(rx_frame_room() + pk->max_frame, TPACKET_ALIGNMENT),
				     2048);
	pk->rx_per_block = RX_BLOCK_SIZE / pk->rx_frame_size;
	pk->rx_frames = pk->rx_per_block * RX_BLOCKS;
	memset(&req, 0, sizeof(req));
	req.tp_block_size = RX_BLOCK_SIZE;
	req.tp_block_nr = RX_BLOCKS;
	req.tp_frame_size = pk->rx_frame_size;
	req.tp_frame_nr = pk->rx_frames;
	if (setsockopt(p->fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) < 0)
		return -errno;
	pk->rx_ring_on = 1;
	pk->rx_map_size = (size_t)RX_BLOCK_SIZE * RX_BLOCKS;
	pk->rx_map = mmap(NULL, pk->rx_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED,
			  p->fd, 0);
	if (pk->rx_map == MAP_FAILED)
		pk->rx_map = mmap(NULL, pk->rx_map_size, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd, 0);
	if (pk->rx_map == MAP_FAILED) {
		pk->rx_map = NULL;
		return -errno;
	}
	return 0;
}

static int setup_tx_ring(struct nmb_port *p, struct nmb_packet_rings *pk, int ifindex)
{
	struct tpacket_req req;
	int fd, rc;

	fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	p->txfd = fd;
	if ((rc = set_int(fd, SOL_PACKET, PACKET_VERSION, TPACKET_V2)) < 0 ||
	    (rc = set_int(fd, SOL_PACKET, PACKET_VNET_HDR, 1)) < 0 ||
	    (rc = set_int(fd, SOL_PACKET, PACKET_QDISC_BYPASS, 1)) < 0 ||
	    (rc = set_int(fd, SOL_PACKET, PACKET_LOSS, 1)) < 0)
		return rc;
	/* a frame slot holds the tpacket2 header, the virtio_net_hdr and the largest frame */
	pk->tx_frame_size = align_up(TPACKET2_HDRLEN + sizeof(struct nmb_vnet_hdr) + pk->max_frame,
				     TPACKET_ALIGNMENT);
	pk->tx_frame_size = align_up(pk->tx_frame_size, 2048);
	memset(&req, 0, sizeof(req));
	req.tp_frame_size = pk->tx_frame_size;
	req.tp_block_size = align_up(pk->tx_frame_size * 16, 4096);
	req.tp_frame_nr = TX_FRAMES;
	req.tp_block_nr = TX_FRAMES / (req.tp_block_size / pk->tx_frame_size);
	req.tp_frame_nr = req.tp_block_nr * (req.tp_block_size / pk->tx_frame_size);
	if (setsockopt(fd, SOL_PACKET, PACKET_TX_RING, &req, sizeof(req)) < 0)
		return -errno;
	pk->tx_map_size = (size_t)req.tp_block_size * req.tp_block_nr;
	pk->tx_map = mmap(NULL, pk->tx_map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (pk->tx_map == MAP_FAILED) {
		pk->tx_map = NULL;
		return -errno;
	}
	/* protocol 0: this socket receives nothing */
	return bind_to(fd, ifindex, 0);
}

/*
 * A super-frame does not fit the RX ring's MTU-sized frames: the kernel then
 * queues it whole on the socket as well (PACKET_COPY_THRESH), with its VLAN
 * tag in the auxdata, for rx_copied to read.
 */
static int setup_copies(struct nmb_port *p, struct nmb_packet_rings *pk)
{
	int rc;

	pk->aux = calloc(1, sizeof(*pk->aux));
	if (pk->aux == NULL)
		return -ENOMEM;
	if ((rc = set_int(p->fd, SOL_PACKET, PACKET_AUXDATA, 1)) < 0 ||
	    (rc = set_int(p->fd, SOL_PACKET, PACKET_COPY_THRESH, 1)) < 0)
		return rc;
	return 0;
}

static void packet_close(struct nmb_port *p)
{
	struct nmb_packet_rings *pk = p->pk;

	if (pk == NULL)
		return;
	if (pk->rx_map)
		munmap(pk->rx_map, pk->rx_map_size);
	if (pk->tx_map)
		munmap(pk->tx_map, pk->tx_map_size);
	free(pk->aux);
	free(pk);
	p->pk = NULL;
}

/*
 * The TPACKET rings: 0 once they serve, 1 if they cannot be had (the
 * batched syscalls will serve), -errno if the socket is left unusable.
 */
static int open_rings(struct nmb_port *p, int ifindex, uint32_t max_frame)
{
	struct nmb_packet_rings *pk = calloc(1, sizeof(*pk));
	struct tpacket_req none;
	int on;

	if (pk == NULL)
		return -ENOMEM;
	pk->max_frame = max_frame;
	p->pk = pk;
	if (setup_rx_ring(p, pk) == 0 && setup_tx_ring(p, pk, ifindex) == 0 &&
	    setup_copies(p, pk) == 0)
		return 0;
	on = pk->rx_ring_on;
	packet_close(p); /* unmapped: the ring can be released */
	if (p->txfd >= 0) {
		close(p->txfd);
		p->txfd = -1;
	}
	/*
	 * An RX ring left on the socket takes every frame, and recvmmsg would
	 * find none: the port would open and never receive. Released (all zero),
	 * the socket receives as one without a ring.
	 */
	memset(&none, 0, sizeof(none));
	if (on && setsockopt(p->fd, SOL_PACKET, PACKET_RX_RING, &none, sizeof(none)) < 0)
		return -errno;
	return 1;
}

/* Without the rings: the batched syscalls, each frame's VLAN tag from its auxdata. */
static int open_batched(struct nmb_port *p)
{
	struct nmb_packet_rings *pk = calloc(1, sizeof(*pk));
	int rc;

	if (pk == NULL)
		return -ENOMEM;
	p->pk = pk;
	pk->aux = calloc(NMB_BATCH, sizeof(*pk->aux));
	if (pk->aux == NULL)
		return -ENOMEM;
	/* the kernel takes a VLAN tag out of the frames a packet socket reads; with
	 * no way to put it back, a tagged frame would cross untagged (another VLAN) */
	if ((rc = set_int(p->fd, SOL_PACKET, PACKET_AUXDATA, 1)) < 0)
		return rc;
	return 0;
}

/* The virtio-net header of a frame whose VLAN tag was put back: offsets move up with it. */
static void vnet_tag_moved(struct nmb_vnet_hdr *vh)
{
	if ((vh->flags & NMB_VNET_F_NEEDS_CSUM) && vh->csum_start >= 12)
		vh->csum_start += 4;
	if (vh->hdr_len >= 12)
		vh->hdr_len += 4;
}

/*
 * Put back the VLAN tag the kernel took out of received message m (its
 * auxdata says so), after the MAC addresses: what follows moves up 4 bytes,
 * and the header's offsets beyond the addresses with it. A frame with no room
 * for the tag is marked cut (MSG_TRUNC): dropped as oversize, never sent
 * untagged.
 */
static void restore_vlan(struct nmb_port *p, struct mmsghdr *msg)
{
	struct msghdr *h = &msg->msg_hdr;
	const struct tpacket_auxdata *aux = NULL;
	uint32_t skip = p->hdr_len, len;
	struct iovec iov[NETMAP_MAX_FRAGS + 1];
	int niov = (int)h->msg_iovlen;
	uint16_t tpid;
	uint8_t tag[4];

	for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c))
		if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA &&
		    c->cmsg_len >= CMSG_LEN(sizeof(*aux)))
			aux = (const struct tpacket_auxdata *)CMSG_DATA(c);
	if (aux == NULL || !(aux->tp_status & TP_STATUS_VLAN_VALID) ||
	    (h->msg_flags & MSG_TRUNC) || msg->msg_len < skip + 12)
		return;
	len = msg->msg_len - skip;
	tpid = (aux->tp_status & TP_STATUS_VLAN_TPID_VALID) && aux->tp_vlan_tpid
		       ? aux->tp_vlan_tpid : ETH_P_8021Q;
	tag[0] = (uint8_t)(tpid >> 8);
	tag[1] = (uint8_t)tpid;
	tag[2] = (uint8_t)(aux->tp_vlan_tci >> 8);
	tag[3] = (uint8_t)aux->tp_vlan_tci;
	/* the frame after its header: the first buffer less the header's bytes */
	if (niov > NETMAP_MAX_FRAGS + 1 || h->msg_iov[0].iov_len < skip) {
		h->msg_flags |= MSG_TRUNC;
		return;
	}
	memcpy(iov, h->msg_iov, sizeof(iov[0]) * (size_t)niov);
	iov[0].iov_base = (uint8_t *)iov[0].iov_base + skip;
	iov[0].iov_len -= skip;
	/* the last buffer is the overflow byte: a frame that reaches it is cut anyway */
	if (nmb_iov_insert(iov, niov - 1, len, 12, tag, 4) < 0) {
		h->msg_flags |= MSG_TRUNC;
		return;
	}
	msg->msg_len += 4;
	if (skip > 0)
		vnet_tag_moved((struct nmb_vnet_hdr *)h->msg_iov[0].iov_base);
}

static int packet_recv(struct nmb_port *p, struct mmsghdr *msgs, unsigned n)
{
	int got;

	for (unsigned m = 0; m < n; m++) {
		msgs[m].msg_hdr.msg_control = p->pk->aux[m];
		msgs[m].msg_hdr.msg_controllen = AUX_SPACE;
	}
	got = recvmmsg(p->fd, msgs, n, MSG_DONTWAIT | MSG_TRUNC, NULL);
	if (got < 0)
		return -errno;
	for (int m = 0; m < got; m++)
		restore_vlan(p, &msgs[m]);
	return got;
}

static int packet_send(struct nmb_port *p, struct mmsghdr *msgs, unsigned n)
{
	int sent = sendmmsg(p->fd, msgs, n, MSG_DONTWAIT);

	return sent < 0 ? -errno : sent;
}

/* An error that may mean the interface is gone: fatal if so, else transient. */
static int packet_classify(struct nmb_port *p, int err)
{
	if (!nmb_ifindex_exists(p->ifindex))
		return -ENODEV;
	return 0;
}

static int packet_collect_drops(struct nmb_port *p, struct nmb_ring_stats *rxs)
{
	struct tpacket_stats st;
	socklen_t len = sizeof(st);

	memset(&st, 0, sizeof(st));
	/* the kernel resets these counters on each read */
	if (getsockopt(p->fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) < 0)
		return -errno;
	rxs->drop_rx += st.tp_drops;
	p->kernel_drops += st.tp_drops;
	return 0;
}

/* ---------------------------------------------------------------- RX ring */

static struct tpacket2_hdr *rx_frame(const struct nmb_packet_rings *pk, uint32_t i)
{
	return (struct tpacket2_hdr *)(pk->rx_map + (size_t)(i / pk->rx_per_block) * RX_BLOCK_SIZE +
				       (size_t)(i % pk->rx_per_block) * pk->rx_frame_size);
}

/* the next received frame, or NULL when the kernel has handed over none */
static struct tpacket2_hdr *rx_next(struct nmb_packet_rings *pk)
{
	struct tpacket2_hdr *h = rx_frame(pk, pk->rx_next);

	if (!(__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
		return NULL;
	return h;
}

/* hand the frame back to the kernel */
static void rx_advance(struct nmb_packet_rings *pk)
{
	__atomic_store_n(&rx_frame(pk, pk->rx_next)->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
	pk->rx_next = pk->rx_next + 1 == pk->rx_frames ? 0 : pk->rx_next + 1;
}

/* At the stop: the frames the socket's RX ring still holds, handed back; returns how
 * many. One lap at the most: what the kernel writes behind us is its own. */
static uint32_t packet_rx_discard(struct nmb_port *p)
{
	struct nmb_packet_rings *pk = p->pk;
	uint32_t n = 0;

	while (n < pk->rx_frames && rx_next(pk) != NULL) {
		rx_advance(pk);
		n++;
	}
	return n;
}

/* A frame of len bytes read into the slots from first on: their lengths and flags. */
static uint32_t put_placed(struct netmap_ring *ring, uint32_t first, uint32_t len)
{
	uint32_t bs = ring->nr_buf_size, done = 0;

	while (done < len) {
		struct netmap_slot *s = &ring->slot[first];
		uint32_t piece = len - done < bs ? len - done : bs;

		s->len = (uint16_t)piece;
		done += piece;
		s->flags = done < len ? NS_MOREFRAG : 0;
		first = nmb_ring_next(ring, first);
	}
	return first;
}

/* copy len bytes into the slots from dst on, NS_MOREFRAG on all but the last */
static uint32_t put_frame(struct netmap_ring *ring, uint32_t dst, const uint8_t *head,
			  uint32_t head_len, const uint8_t *rest, uint32_t rest_len)
{
	uint32_t bs = ring->nr_buf_size, len = head_len + rest_len, done = 0;

	while (done < len) {
		struct netmap_slot *s = &ring->slot[dst];
		uint8_t *buf = (uint8_t *)nmb_slot_buf(ring, s->buf_idx);
		uint32_t piece = len - done < bs ? len - done : bs;

		for (uint32_t k = 0; k < piece;) {
			uint32_t at = done + k, n;
			if (at < head_len) {
				n = head_len - at < piece - k ? head_len - at : piece - k;
				memcpy(buf + k, head + at, n);
			} else {
				n = piece - k;
				memcpy(buf + k, rest + (at - head_len), n);
			}
			k += n;
		}
		s->len = (uint16_t)piece;
		done += piece;
		s->flags = done < len ? NS_MOREFRAG : 0;
		dst = nmb_ring_next(ring, dst);
	}
	return dst;
}

/*
 * A super-frame the ring holds cut (TP_STATUS_COPY): the whole of it is next
 * in the socket's queue. Read into the slots from hwtail on, its VLAN tag
 * put back; returns 0 (placed, or dropped and counted) or -errno.
 */
static int rx_copied(struct nmb_port *p, struct nmb_ring_stats *rxs)
{
	struct netmap_ring *ring = p->rx[0];
	struct nmb_kring *kr = &p->krx[0];
	struct mmsghdr *msg = &p->msgs[0];
	uint32_t len, used;
	ssize_t r;

	nmb_eport_rx_prepare(p, 0, kr->hwtail);
	msg->msg_hdr.msg_control = p->pk->aux[0];
	msg->msg_hdr.msg_controllen = AUX_SPACE;
	r = recvmsg(p->fd, &msg->msg_hdr, MSG_DONTWAIT | MSG_TRUNC);
	if (r < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return -errno;
		rxs->drop_oversize++; /* gone from the queue: only its cut copy came */
		return 0;
	}
	msg->msg_len = (unsigned)r;
	restore_vlan(p, msg);
	if (nmb_eport_rx_frame_ok(p, rxs, 0, kr->hwtail, &len, &used))
		kr->hwtail = put_placed(ring, kr->hwtail, len);
	return 0;
}

static int packet_rxsync(struct nmb_port *p, struct nmb_ring_stats *rxs)
{
	struct nmb_packet_rings *pk = p->pk;
	struct netmap_ring *ring = p->rx[0];
	struct nmb_kring *kr = &p->krx[0];
	uint32_t n = ring->num_slots, bs = ring->nr_buf_size, head = ring->head, got = 0;
	uint32_t hdr = p->hdr_len;
	struct tpacket2_hdr *h;

	if (head >= n)
		return -EINVAL;
	rxs->syncs++;
	kr->hwcur = head; /* the slots before head are released */
	p->rx_more = 0;
	while ((h = rx_next(pk)) != NULL) {
		uint32_t room = n - 1 - nmb_ring_dist(ring, kr->hwcur, kr->hwtail);
		uint32_t len = h->tp_snaplen, first = kr->hwtail, vlan = 0;
		int ok = 1;
		const uint8_t *frame = (const uint8_t *)h + h->tp_mac;
		struct nmb_vnet_hdr vh;
		uint8_t head_bytes[sizeof(vh) + 16];

		memcpy(&vh, frame - sizeof(vh), sizeof(vh));
		if (h->tp_status & TP_STATUS_VLAN_VALID)
			vlan = 4; /* the kernel took the tag out: put it back */
		if ((h->tp_len + hdr + vlan + bs - 1) / bs > room) {
			p->rx_more = 1; /* no room: the frame waits in the socket ring */
			break;
		}
		if (h->tp_status & TP_STATUS_COPY) {
			int rc = rx_copied(p, rxs);

			rx_advance(pk);
			if (rc < 0) {
				ring->tail = kr->hwtail;
				return rc;
			}
			got++;
			continue;
		}
		if (h->tp_len != h->tp_snaplen || len < 14 || len + vlan + hdr > p->frags * bs) {
			rxs->drop_oversize++;
			rx_advance(pk);
			continue;
		}
		if (vlan)
			vnet_tag_moved(&vh);
		/* judged on the copy of the header, not on the slot just written: reading
		 * that back would wait for the store's cache miss */
		if (hdr > 0 && (ok = nmb_eport_hdr_ok(p, &vh, hdr + len + vlan, bs, rxs)) == 0) {
			rx_advance(pk); /* dropped and counted, read all the same */
			got++;
			continue;
		}
		if (vlan) {
			uint16_t tpid = (h->tp_status & TP_STATUS_VLAN_TPID_VALID) && h->tp_vlan_tpid
						? h->tp_vlan_tpid : ETH_P_8021Q;
			uint8_t *tag = head_bytes + hdr;

			memcpy(head_bytes, &vh, hdr);
			memcpy(tag, frame, 12);
			tag[12] = (uint8_t)(tpid >> 8);
			tag[13] = (uint8_t)tpid;
			tag[14] = (uint8_t)(h->tp_vlan_tci >> 8);
			tag[15] = (uint8_t)h->tp_vlan_tci;
			kr->hwtail = put_frame(ring, first, head_bytes, hdr + 16, frame + 12, len - 12);
		} else {
			/* the kernel wrote the header just before the frame */
			kr->hwtail = put_frame(ring, first, frame - hdr, len + hdr, NULL, 0);
		}
		if (ok < 0 && !nmb_eport_frame_walk(p, ring, first, hdr + len + vlan, &vh, rxs))
			kr->hwtail = first;
		rx_advance(pk);
		got++;
	}
	ring->tail = kr->hwtail;
	return (int)got;
}

/* ---------------------------------------------------------------- TX ring */

static struct tpacket2_hdr *tx_frame(struct nmb_packet_rings *pk, uint32_t i)
{
	return (struct tpacket2_hdr *)(pk->tx_map + (size_t)i * pk->tx_frame_size);
}

static uint32_t tx_frames(const struct nmb_packet_rings *pk)
{
	return (uint32_t)(pk->tx_map_size / pk->tx_frame_size);
}

/*
 * Whether the socket's TX ring holds frames that need another send(): a
 * frame send() took (TP_STATUS_SENDING) is the kernel's until its skb is
 * freed, which on veth happens only once the peer has received it; waiting
 * on it would turn every pass into a send() with nothing to send.
 */
static int packet_tx_busy(const struct nmb_port *p)
{
	return p->pk->tx_unsent != 0;
}

/* At the stop: the frames handed to the socket's TX ring that no send() took (the
 * link went down first) go with the socket; returns how many. Those send() took
 * are on their way, as a NIC's frames are once it has them. */
static uint32_t packet_tx_discard(struct nmb_port *p)
{
	struct nmb_packet_rings *pk = p->pk;
	uint32_t nframes = tx_frames(pk), n = 0;

	for (uint32_t k = 0; k < pk->tx_requested; k++) {
		uint32_t i = (pk->tx_next + nframes - pk->tx_requested + k) % nframes;
		if (__atomic_load_n(&tx_frame(pk, i)->tp_status, __ATOMIC_ACQUIRE) ==
		    TP_STATUS_SEND_REQUEST)
			n++;
	}
	pk->tx_requested = pk->tx_unsent = 0;
	return n;
}

/* Hand the requested frames to the kernel; returns 0 or a fatal -errno. */
static int tx_kick(struct nmb_port *p, struct nmb_ring_stats *txs)
{
	struct nmb_packet_rings *pk = p->pk;
	uint32_t nframes = tx_frames(pk);

	if (pk->tx_requested == 0)
		return 0;
	if (pk->tx_unsent > 0 && send(p->txfd, NULL, 0, MSG_DONTWAIT) < 0) {
		int e = errno;
		if (e != EAGAIN && e != EWOULDBLOCK && e != EINTR && e != ENOBUFS) {
			int rc = packet_classify(p, e);
			if (rc < 0)
				return rc;
		}
	}
	/* collect what came back: sent, or refused (PACKET_LOSS marks those) */
	for (uint32_t k = 0, i = pk->tx_next + nframes - pk->tx_requested; k < pk->tx_requested; k++) {
		struct tpacket2_hdr *fh = tx_frame(pk, i % nframes);
		uint32_t st = __atomic_load_n(&fh->tp_status, __ATOMIC_ACQUIRE);

		if (st & TP_STATUS_WRONG_FORMAT) {
			txs->drop_tx++;
			__atomic_store_n(&fh->tp_status, TP_STATUS_AVAILABLE, __ATOMIC_RELEASE);
		}
		i++;
	}
	{
		/* frames not back yet stay requested; those send() did not take are unsent
		 * (it takes them in ring order, and nobody else does) */
		uint32_t still = 0, unsent = 0;
		for (uint32_t k = 0; k < pk->tx_requested; k++) {
			uint32_t i = (pk->tx_next + nframes - pk->tx_requested + k) % nframes;
			uint32_t st = __atomic_load_n(&tx_frame(pk, i)->tp_status, __ATOMIC_ACQUIRE);
			if (st != TP_STATUS_AVAILABLE && still == 0)
				still = pk->tx_requested - k;
			unsent += st == TP_STATUS_SEND_REQUEST;
		}
		pk->tx_requested = still;
		pk->tx_unsent = unsent;
	}
	return 0;
}

/*
 * A super-frame, once the frames before it are sent: by sendmsg() on the
 * receiving socket, which has no TX ring and no qdisc bypass. The bypass
 * (the TX ring's) drops whatever the interface cannot take as it is instead
 * of segmenting it (__dev_direct_xmit: a frame validate_xmit_skb changed is
 * dropped): through the qdisc path the kernel segments a super-frame in
 * software for an interface without TSO. Returns 1 if it is done with (sent,
 * or dropped and counted), 0 to wait (for the frames before it, or for
 * room), or a fatal -errno.
 */
static int tx_super(struct nmb_port *p, struct nmb_ring_stats *txs, struct iovec *iov,
		    uint32_t cnt)
{
	struct msghdr msg;
	int rc;

	if ((rc = tx_kick(p, txs)) < 0)
		return rc;
	if (p->pk->tx_unsent > 0)
		return 0; /* it must not leave before them */
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = iov;
	msg.msg_iovlen = cnt;
	if (sendmsg(p->fd, &msg, MSG_DONTWAIT) >= 0)
		return 1;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ENOBUFS)
		return 0;
	if ((rc = packet_classify(p, errno)) < 0)
		return rc;
	txs->drop_tx++; /* this frame cannot be sent (link down, refused) */
	return 1;
}

static int packet_txsync(struct nmb_port *p, struct nmb_ring_stats *txs)
{
	struct nmb_packet_rings *pk = p->pk;
	struct netmap_ring *ring = p->tx[0];
	struct nmb_kring *kr = &p->ktx[0];
	uint32_t n = ring->num_slots, head = ring->head, nframes = tx_frames(pk);
	uint32_t data_off = TPACKET2_HDRLEN - sizeof(struct sockaddr_ll), hdr = p->hdr_len;
	struct iovec *iov = p->iovs;
	int rc;

	if (head >= n)
		return -EINVAL;
	txs->syncs++;
	while (kr->hwcur != head) {
		uint32_t end, cnt, total;
		struct tpacket2_hdr *fh = tx_frame(pk, pk->tx_next);
		uint8_t *data = (uint8_t *)fh + data_off;
		enum tx_chain c = nmb_eport_tx_chain(p, kr->hwcur, head, iov, &end, &cnt, &total);

		if (c == TX_CHAIN_OPEN)
			break; /* the rest of the chain is not there yet */
		if (c == TX_CHAIN_BAD) {
			/* the kernel would skip it without a word (PACKET_LOSS) */
			txs->drop_tx++;
			kr->hwcur = end;
			continue;
		}
		if (total > hdr + pk->max_frame ||
		    (hdr > 0 && ((const struct nmb_vnet_hdr *)iov[0].iov_base)->gso_type !=
				       NMB_VNET_GSO_NONE)) {
			rc = tx_super(p, txs, iov, cnt);
			if (rc < 0)
				return rc;
			if (rc == 0)
				break;
			kr->hwcur = end;
			continue;
		}
		/* a frame is ours to fill when the kernel gave it back and it is not one
		 * the window of requested frames still holds (the whole ring requested) */
		if (pk->tx_requested >= nframes ||
		    __atomic_load_n(&fh->tp_status, __ATOMIC_ACQUIRE) != TP_STATUS_AVAILABLE) {
			if ((rc = tx_kick(p, txs)) < 0)
				return rc;
			if (pk->tx_requested >= nframes ||
			    __atomic_load_n(&fh->tp_status, __ATOMIC_ACQUIRE) != TP_STATUS_AVAILABLE)
				break; /* the socket ring is full: wait for POLLOUT */
		}
		kr->hwcur = end;
		for (uint32_t k = 0, at = 0; k < cnt; at += (uint32_t)iov[k].iov_len, k++)
			memcpy(data + at, iov[k].iov_base, iov[k].iov_len);
		if (hdr > 0) {
			struct nmb_vnet_hdr *vh = (struct nmb_vnet_hdr *)data;

			/* no super-frame: the kernel copies the whole frame at once, and the
			 * ring's frame is free again as soon as it is sent */
			if (vh->gso_type == NMB_VNET_GSO_NONE)
				vh->hdr_len = (uint16_t)(total - hdr);
		}
		fh->tp_len = total;
		__atomic_store_n(&fh->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
		pk->tx_next = pk->tx_next + 1 == nframes ? 0 : pk->tx_next + 1;
		pk->tx_requested++;
		pk->tx_unsent++;
	}
	rc = tx_kick(p, txs);
	/* everything before hwcur is in the socket ring: hand the slots back */
	ring->tail = kr->hwcur == 0 ? n - 1 : kr->hwcur - 1;
	return rc;
}

/* ---------------------------------------------------------------- the port */

/* recvmmsg/sendmmsg into the netmap buffers, the shared kernel side */
static const struct nmb_eport_ops packet_ops = {
	.recv = packet_recv,
	.send = packet_send,
	.classify = packet_classify,
	.close = packet_close,
	.collect_drops = packet_collect_drops,
};

/* the TPACKET rings: a kernel side of its own, which needs no recv or send */
static const struct nmb_eport_ops packet_ring_ops = {
	.classify = packet_classify,
	.close = packet_close,
	.rxsync = packet_rxsync,
	.txsync = packet_txsync,
	.tx_busy = packet_tx_busy,
	.tx_discard = packet_tx_discard,
	.rx_discard = packet_rx_discard,
	.collect_drops = packet_collect_drops,
};

int nmb_packet_open(struct nmb_port *p, int ifindex, uint32_t max_frame, int bufsize)
{
	int fd, rc, use_rings = rx_frame_room() + max_frame <= 2048 * 8;

	/* protocol 0: nothing is queued before the socket is bound to its interface */
	fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	p->kind = NMB_PORT_PACKET;
	p->ops = &packet_ops;
	p->fd = fd;
	p->ifindex = ifindex;
	/* our own transmissions, and what the host sends out, are not wire input */
	if ((rc = set_int(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)) < 0)
		return rc;
	/*
	 * A virtio-net header before each frame, both ways: super-frames and
	 * frames whose checksum is left to finish pass as they are, and the
	 * kernel segments and finishes what the interface cannot (software GSO);
	 * each sent frame is copied only once. The same socket sends the
	 * super-frames, through the qdisc path: only there does the kernel
	 * segment for an interface without TSO.
	 */
	if (set_int(fd, SOL_PACKET, PACKET_VNET_HDR, 1) == 0) {
		p->hdr_len = NMB_VNET_HDR_LEN;
		p->offloads = NMB_OFL_ALL;
	}
	if (bufsize > 0) {
		if (set_int(fd, SOL_SOCKET, SO_RCVBUFFORCE, bufsize) < 0 &&
		    (rc = set_int(fd, SOL_SOCKET, SO_RCVBUF, bufsize)) < 0)
			return rc;
		if (set_int(fd, SOL_SOCKET, SO_SNDBUFFORCE, bufsize) < 0 &&
		    (rc = set_int(fd, SOL_SOCKET, SO_SNDBUF, bufsize)) < 0)
			return rc;
	}
	rc = use_rings && p->hdr_len > 0 ? open_rings(p, ifindex, max_frame) : 1;
	if (rc < 0)
		return rc;
	if (rc == 0)
		p->ops = &packet_ring_ops;
	else if ((rc = open_batched(p)) < 0) /* the batched syscalls serve */
		return rc;
	if ((rc = bind_to(fd, ifindex, htons(ETH_P_ALL))) < 0)
		return rc;
	rc = nmb_eport_alloc_batch(p, max_frame);
	if (rc < 0)
		return rc;
	{
		/* start counting drops from now */
		struct tpacket_stats st;
		socklen_t len = sizeof(st);
		getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &len);
	}
	return 0;
}
