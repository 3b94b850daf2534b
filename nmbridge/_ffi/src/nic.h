/* NIC settings read and changed through the ethtool ioctl. */
#ifndef NMB_NIC_H
#define NMB_NIC_H

#include <linux/ethtool.h>
#include <stdint.h>

int nmb_ethtool_get(const char *ifname, uint32_t cmd, uint32_t *value);
int nmb_ethtool_set(const char *ifname, uint32_t cmd, uint32_t value);

#endif
