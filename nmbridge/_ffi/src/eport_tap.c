/*
 * The emulated host-stack port: a TAP device, opened with a virtio-net header
 * in front of each frame (IFF_VNET_HDR) and the offloads on (TUNSETOFFLOAD),
 * so that the host stack hands over super-frames and frames whose checksum it
 * left to finish, and takes them: a TCP flow through it costs one read per
 * 64 KiB, not per segment.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "eport.h"

/* USO (Linux 6.2): not in every distribution's headers yet */
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

#define TAP_OFFLOADS (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)

static int set_up(const char *name)
{
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), rc = 0;

	if (s < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		rc = -errno;
	else if (!(ifr.ifr_flags & IFF_UP)) {
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
			rc = -errno;
	}
	close(s);
	return rc;
}

/*
 * A TAP has no batched read: one readv() a frame, each straight into the free
 * slots after the frame before, so that a super-frame's 33 slots are reserved
 * only while it is read (not a batch's worth of them for every frame).
 */
static int tap_rxsync(struct nmb_port *p, struct nmb_ring_stats *rxs)
{
	struct netmap_ring *ring = p->rx[0];
	struct nmb_kring *kr = &p->krx[0];
	uint32_t n = ring->num_slots, head = ring->head;
	int got = 0;

	if (head >= n)
		return -EINVAL;
	rxs->syncs++;
	kr->hwcur = head; /* the slots before head are released */
	p->rx_more = 0;
	while (got < NMB_BATCH) {
		struct msghdr *h = &p->msgs[0].msg_hdr;
		uint32_t len, used;
		ssize_t r;

		if (n - 1 - nmb_ring_dist(ring, kr->hwcur, kr->hwtail) < p->frags) {
			p->rx_more = 1; /* no room for the largest frame: the rest waits */
			break;
		}
		nmb_eport_rx_prepare(p, 0, kr->hwtail);
		r = readv(p->fd, h->msg_iov, (int)h->msg_iovlen);
		if (r < 0) {
			int e = errno;
			if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR)
				break;
			rxs->errors++;
			ring->tail = kr->hwtail;
			return p->ops->classify(p, e);
		}
		got++;
		p->msgs[0].msg_len = (unsigned)r;
		if (!nmb_eport_rx_frame_ok(p, rxs, 0, kr->hwtail, &len, &used))
			continue;
		for (uint32_t f = 0; f < used; f++) {
			struct netmap_slot *s = &ring->slot[kr->hwtail];

			s->len = (uint16_t)(f + 1 < used ? ring->nr_buf_size : len - f * ring->nr_buf_size);
			s->flags = f + 1 < used ? NS_MOREFRAG : 0;
			kr->hwtail = nmb_ring_next(ring, kr->hwtail);
		}
	}
	if (got == NMB_BATCH)
		p->rx_more = 1;
	ring->tail = kr->hwtail;
	return got;
}

static int tap_send(struct nmb_port *p, struct mmsghdr *msgs, unsigned n)
{
	unsigned sent = 0;

	while (sent < n) {
		struct msghdr *h = &msgs[sent].msg_hdr;
		if (writev(p->fd, h->msg_iov, (int)h->msg_iovlen) < 0)
			return sent > 0 ? (int)sent : -errno;
		sent++;
	}
	return (int)sent;
}

/* An error that may mean the device is gone: fatal if so, else transient. */
static int tap_classify(struct nmb_port *p, int err)
{
	if (err == EBADFD || err == ENODEV || err == ENXIO)
		return -err;
	return 0;
}

/* A TAP left as it was found: a later reader without headers must not get super-frames. */
static void tap_close(struct nmb_port *p)
{
	if (p->hdr_len > 0)
		ioctl(p->fd, TUNSETOFFLOAD, 0);
}

/* readv into the free slots, writev from the TX ring's: the shared TX side */
static const struct nmb_eport_ops tap_ops = {
	.send = tap_send,
	.classify = tap_classify,
	.close = tap_close,
	.rxsync = tap_rxsync,
};

/*
 * Headers and offloads on: 0, or -errno. A kernel without USO takes the rest;
 * one without IFF_VNET_HDR leaves the port without headers (then super-frames
 * are segmented by the host stack before they reach it).
 */
static int tap_offloads(struct nmb_port *p)
{
	int hdr = NMB_VNET_HDR_LEN;

	/* a persistent TAP keeps the header size its last user set */
	if (ioctl(p->fd, TUNSETVNETHDRSZ, &hdr) < 0)
		return -errno;
	if (ioctl(p->fd, TUNSETOFFLOAD, TAP_OFFLOADS | TUN_F_USO4 | TUN_F_USO6) < 0 &&
	    ioctl(p->fd, TUNSETOFFLOAD, TAP_OFFLOADS) < 0)
		return -errno;
	p->hdr_len = NMB_VNET_HDR_LEN;
	/* what it writes the kernel checks and segments itself where the stack needs it */
	p->offloads = NMB_OFL_ALL;
	return 0;
}

int nmb_tap_open(struct nmb_port *p, const char *name, uint32_t max_frame, int bring_up)
{
	struct ifreq ifr;
	int fd, rc;

	fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	p->kind = NMB_PORT_TAP;
	p->ops = &tap_ops;
	p->fd = fd;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
		if (errno != EINVAL || ioctl(fd, TUNSETIFF, &ifr) < 0)
			return -errno;
	}
	if ((ifr.ifr_flags & IFF_VNET_HDR) && (rc = tap_offloads(p)) < 0)
		return rc;
	p->ifindex = nmb_ifname_index(ifr.ifr_name); /* to tell "gone" from "down" */
	if (bring_up) {
		rc = set_up(ifr.ifr_name);
		if (rc < 0)
			return rc;
	}
	return nmb_eport_alloc_batch(p, max_frame);
}
