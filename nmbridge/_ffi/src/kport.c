/* Kernel netmap ports: /dev/netmap, NIOCCTRL register, mmap, sync. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "port.h"

int nmb_kport_open(struct nmb_port *p, const char *dev)
{
	int fd = open(dev, O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	p->kind = NMB_PORT_KERNEL;
	p->fd = fd;
	return 0;
}

/* hdr->nr_body points at a struct nmreq_register; both come back filled in */
int nmb_kport_register(struct nmb_port *p, struct nmreq_header *hdr)
{
	if (ioctl(p->fd, NIOCCTRL, hdr) < 0)
		return -errno;
	return 0;
}

/*
 * Ask a kernel that does not know NIOCCTRL for its API version through the
 * legacy NIOCGINFO: it answers with its own version in nr_version.
 */
int nmb_kport_legacy_api(const char *dev, uint32_t *api_out)
{
	struct nmreq req;
	int fd = open(dev, O_RDWR | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	memset(&req, 0, sizeof(req));
	req.nr_version = NETMAP_API;
	if (ioctl(fd, NIOCGINFO, &req) < 0 && errno != EINVAL)
		rc = -errno;
	*api_out = req.nr_version;
	close(fd);
	return rc;
}

int nmb_mmap_region(int fd, uint64_t size, void **base_out)
{
	void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (base == MAP_FAILED)
		return -errno;
	*base_out = base;
	return 0;
}

int nmb_munmap_region(void *base, uint64_t size)
{
	return munmap(base, size) < 0 ? -errno : 0;
}

int nmb_kport_txsync(struct nmb_port *p)
{
	return ioctl(p->fd, NIOCTXSYNC, NULL) < 0 ? -errno : 0;
}

int nmb_kport_rxsync(struct nmb_port *p)
{
	return ioctl(p->fd, NIOCRXSYNC, NULL) < 0 ? -errno : 0;
}
