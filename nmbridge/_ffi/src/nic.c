#include <errno.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nic.h"

static int ethtool_call(const char *ifname, void *data)
{
	struct ifreq ifr;
	int s, rc;

	if (strlen(ifname) >= IFNAMSIZ)
		return -EINVAL;
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
	ifr.ifr_data = data;
	rc = ioctl(s, SIOCETHTOOL, &ifr);
	rc = rc < 0 ? -errno : rc;
	close(s);
	return rc;
}

/*
 * The names of the device's feature bits (ETH_SS_FEATURES), ETH_GSTRING_LEN
 * bytes each, up to room of them: the number there are, or -errno.
 */
int nmb_feature_names(const char *ifname, uint32_t room, char *names)
{
	struct {
		struct ethtool_sset_info info;
		uint32_t count;
	} sset;
	struct ethtool_gstrings *gs;
	uint32_t n;
	int rc;

	memset(&sset, 0, sizeof(sset));
	sset.info.cmd = ETHTOOL_GSSET_INFO;
	sset.info.sset_mask = 1ULL << ETH_SS_FEATURES;
	if ((rc = ethtool_call(ifname, &sset)) < 0)
		return rc;
	if (!(sset.info.sset_mask & (1ULL << ETH_SS_FEATURES)))
		return -EOPNOTSUPP;
	n = sset.count;
	if (n > room)
		return (int)n;
	gs = calloc(1, sizeof(*gs) + (size_t)n * ETH_GSTRING_LEN);
	if (gs == NULL)
		return -ENOMEM;
	gs->cmd = ETHTOOL_GSTRINGS;
	gs->string_set = ETH_SS_FEATURES;
	gs->len = n;
	rc = ethtool_call(ifname, gs);
	if (rc >= 0) {
		if (gs->len < n)
			n = gs->len;
		memcpy(names, gs->data, (size_t)n * ETH_GSTRING_LEN);
		rc = (int)n;
	}
	free(gs);
	return rc;
}

/* The feature bits, nblocks blocks of 32 (ETHTOOL_GFEATURES): 0 or -errno. */
int nmb_features_get(const char *ifname, uint32_t nblocks, uint32_t *available,
		     uint32_t *active)
{
	struct ethtool_gfeatures *gf = calloc(1, sizeof(*gf) + nblocks * sizeof(gf->features[0]));
	int rc;

	if (gf == NULL)
		return -ENOMEM;
	gf->cmd = ETHTOOL_GFEATURES;
	gf->size = nblocks;
	rc = ethtool_call(ifname, gf);
	if (rc >= 0) {
		for (uint32_t i = 0; i < nblocks; i++) {
			available[i] = gf->features[i].available;
			active[i] = gf->features[i].active;
		}
		rc = 0;
	}
	free(gf);
	return rc;
}

/* Set the bits in valid[] to requested[] (ETHTOOL_SFEATURES): 0 or -errno. */
int nmb_features_set(const char *ifname, uint32_t nblocks, const uint32_t *valid,
		     const uint32_t *requested)
{
	struct ethtool_sfeatures *sf = calloc(1, sizeof(*sf) + nblocks * sizeof(sf->features[0]));
	int rc;

	if (sf == NULL)
		return -ENOMEM;
	sf->cmd = ETHTOOL_SFEATURES;
	sf->size = nblocks;
	for (uint32_t i = 0; i < nblocks; i++) {
		sf->features[i].valid = valid[i];
		sf->features[i].requested = requested[i];
	}
	rc = ethtool_call(ifname, sf);
	free(sf);
	return rc < 0 ? rc : 0; /* > 0: done, not all as wished; the caller reads back */
}
