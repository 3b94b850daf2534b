/* The emulated wire port: AF_PACKET on one interface, batched. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "eport.h"

int nmb_packet_open(struct nmb_port *p, int ifindex, uint32_t max_frame, int bufsize)
{
	struct sockaddr_ll sll;
	int one = 1, fd, rc;

	/* protocol 0: nothing is queued before the socket is bound to its interface */
	fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	p->kind = NMB_PORT_PACKET;
	p->fd = fd;
	p->ifindex = ifindex;
	/* our own transmissions, and what the host sends out, are not wire input */
	if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) < 0)
		return -errno;
	/* a virtio_net_hdr before each frame: partial checksums can be finished,
	 * GSO frames told apart, and each sent frame is copied only once */
	if (setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) == 0)
		p->vnet = 1;
	if (bufsize > 0) {
		if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bufsize, sizeof(bufsize)) < 0 &&
		    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof(bufsize)) < 0)
			return -errno;
		if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bufsize, sizeof(bufsize)) < 0 &&
		    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof(bufsize)) < 0)
			return -errno;
	}
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = ifindex;
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		return -errno;
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

int nmb_packet_recv(struct nmb_port *p, struct mmsghdr *msgs, unsigned n)
{
	int got = recvmmsg(p->fd, msgs, n, MSG_DONTWAIT | MSG_TRUNC, NULL);

	return got < 0 ? -errno : got;
}

int nmb_packet_send(struct nmb_port *p, struct mmsghdr *msgs, unsigned n)
{
	int sent = sendmmsg(p->fd, msgs, n, MSG_DONTWAIT);

	return sent < 0 ? -errno : sent;
}

int nmb_eport_collect_drops(struct nmb_port *p, struct nmb_ring_stats *rxs)
{
	struct tpacket_stats st;
	socklen_t len = sizeof(st);

	if (p->kind != NMB_PORT_PACKET)
		return 0;
	/* the kernel resets these counters on each read */
	if (getsockopt(p->fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) < 0)
		return -errno;
	rxs->drop_rx += st.tp_drops;
	p->kernel_drops += st.tp_drops;
	return 0;
}
