/* The emulated host-stack port: a TAP device. */
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

static int tap_recv(struct nmb_port *p, struct mmsghdr *msgs, unsigned n)
{
	unsigned got = 0;

	while (got < n) {
		struct msghdr *h = &msgs[got].msg_hdr;
		ssize_t r = readv(p->fd, h->msg_iov, (int)h->msg_iovlen);

		if (r < 0) {
			if (got > 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			return got > 0 ? (int)got : -errno;
		}
		msgs[got].msg_len = (unsigned)r;
		h->msg_flags = 0;
		got++;
	}
	return (int)got;
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

/* readv/writev into the netmap buffers: the shared kernel side, nothing of its own */
static const struct nmb_eport_ops tap_ops = {
	.recv = tap_recv,
	.send = tap_send,
	.classify = tap_classify,
};

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
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0)
		return -errno;
	p->ifindex = nmb_ifname_index(ifr.ifr_name); /* to tell "gone" from "down" */
	if (bring_up) {
		rc = set_up(ifr.ifr_name);
		if (rc < 0)
			return rc;
	}
	return nmb_eport_alloc_batch(p, max_frame);
}
