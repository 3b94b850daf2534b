/* NIC settings read and changed through the ethtool ioctl. */
#ifndef NMB_NIC_H
#define NMB_NIC_H

#include <linux/ethtool.h>
#include <stdint.h>

int nmb_feature_names(const char *ifname, uint32_t room, char *names);
int nmb_features_get(const char *ifname, uint32_t nblocks, uint32_t *available,
		     uint32_t *active);
int nmb_features_set(const char *ifname, uint32_t nblocks, const uint32_t *valid,
		     const uint32_t *requested);

#endif
