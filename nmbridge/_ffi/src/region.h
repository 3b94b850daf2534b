/*
 * A netmap region laid out in user memory exactly as the kernel lays one
 * out: netmap_if structures, rings reachable through ring_ofs, one pool of
 * fixed-size buffers found through buf_ofs + index * size. Emulated ports
 * and the tests use it; two ports of one region share buffers.
 */
#ifndef NMB_REGION_H
#define NMB_REGION_H

#include <stddef.h>
#include <stdint.h>

#include "abi.h"

#define NMB_REGION_MAX_PORTS 8
#define NMB_MAX_RINGS 64

struct nmb_region {
	char *mem;
	size_t memsize;
	uint32_t num_slots;
	uint32_t buf_size;
	uint32_t num_bufs;      /* buffers in the pool, including the two reserved ones */
	uint64_t bufs_ofs;      /* offset of buffer 0 from mem */
	uint32_t nports;
	uint64_t if_ofs[NMB_REGION_MAX_PORTS];
};

/*
 * rings[4 * p + k]: for port p, k = 0 NIC TX, 1 host TX, 2 NIC RX, 3 host RX
 * ring counts. Every ring has num_slots slots, each with its own buffer.
 */
int nmb_region_new(uint32_t nports, const uint32_t *rings, uint32_t num_slots,
		   uint32_t buf_size, struct nmb_region **out);
void nmb_region_free(struct nmb_region *region);
struct netmap_if *nmb_region_if(struct nmb_region *region, uint32_t port);
char *nmb_region_buf(struct nmb_region *region, uint32_t buf_idx);

#endif
