#include "nmb.h"

#ifndef NMB_VERSION
#error "the builder passes NMB_VERSION"
#endif

/* the package version this core was built for: nmbridge refuses a stale build */
const char *nmb_version(void)
{
	return NMB_VERSION;
}

struct netmap_slot *nmb_ring_slots(struct netmap_ring *ring)
{
	return ring->slot;
}

uint32_t nmb_ioctl_number(int which)
{
	switch (which) {
	case 0: return (uint32_t)NIOCCTRL;
	case 1: return (uint32_t)NIOCTXSYNC;
	case 2: return (uint32_t)NIOCRXSYNC;
	case 3: return (uint32_t)NIOCREGIF;
	case 4: return (uint32_t)NIOCGINFO;
	default: return 0;
	}
}
