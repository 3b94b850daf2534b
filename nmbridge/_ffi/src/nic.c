#include <errno.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nic.h"

static int ethtool_value(const char *ifname, struct ethtool_value *ev)
{
	struct ifreq ifr;
	int s, rc = 0;

	if (strlen(ifname) >= IFNAMSIZ)
		return -EINVAL;
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
	ifr.ifr_data = (void *)ev;
	if (ioctl(s, SIOCETHTOOL, &ifr) < 0)
		rc = -errno;
	close(s);
	return rc;
}

/* one of the single-value ETHTOOL_G* commands (GTSO, GGSO, GGRO, GRXCSUM, ...) */
int nmb_ethtool_get(const char *ifname, uint32_t cmd, uint32_t *value)
{
	struct ethtool_value ev = {.cmd = cmd, .data = 0};
	int rc = ethtool_value(ifname, &ev);

	if (rc == 0)
		*value = ev.data;
	return rc;
}

int nmb_ethtool_set(const char *ifname, uint32_t cmd, uint32_t value)
{
	struct ethtool_value ev = {.cmd = cmd, .data = value};

	return ethtool_value(ifname, &ev);
}
