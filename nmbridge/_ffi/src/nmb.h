/* Everything the cffi module compiles against. */
#ifndef NMB_H
#define NMB_H

#include "abi.h"
#include "capture.h"
#include "engine.h"
#include "eport.h"
#include "filter.h"
#include "isolate.h"
#include "loop.h"
#include "nic.h"
#include "port.h"
#include "region.h"
#include "stats.h"

const char *nmb_version(void);
struct netmap_slot *nmb_ring_slots(struct netmap_ring *ring);
uint32_t nmb_ioctl_number(int which);

#endif
